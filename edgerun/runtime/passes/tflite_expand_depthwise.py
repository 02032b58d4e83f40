"""A TFLite 1x1 expansion and the depthwise convolution that reads it, as one step.

MobileNetV2-style blocks, as the TFLite converter writes them, expand with a 1x1 CONV_2D
(ReLU6 fused) whose output only a DEPTHWISE_CONV_2D reads. The ONNX plan runs such pairs
as ExpandDepthwiseConv (passes/clip_into_depthwise.py); this pass gives TFLite's float
pairs the same kernel, as EXPAND_DEPTHWISE_CONV_2D (edgerun's own op, kernels/tflite_nn.py):
the expansion is written straight into the depthwise product's padded buffer, where the
two steps stored it and then copied it padded. Quantized pairs, other activations, dilated
or multiplied depthwise layers, and expansions whose output a graph output or another step
reads stay as they are.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from edgerun.runtime import registry
from edgerun.runtime.graph import ATTR_STRING, Attribute
from edgerun.runtime.passes.pairs import fusable_pairs, joined_inputs

if TYPE_CHECKING:
    from edgerun.runtime.plan import Step

DOMAIN = "tflite"
_CLIPPED = ("RELU", "RELU6", "RELU_N1_TO_1")  # fused activations the expansion may carry


def expand_depthwise(
    steps: list[Step], constants: dict[str, np.ndarray], keep: Collection[str]
) -> list[Step]:
    """``steps`` with each float 1x1 CONV_2D -> DEPTHWISE_CONV_2D pair as one step."""
    info = registry.resolve(DOMAIN, "EXPAND_DEPTHWISE_CONV_2D", 1)
    if info is None:
        return steps
    out = list(steps)
    dropped: set[int] = set()
    pairs = fusable_pairs(
        steps, lambda s: _expansion(s, constants), lambda s: _depthwise(s, constants), keep
    )
    for j, i in pairs:
        step, first = steps[i], steps[j]
        if constants[step.inputs[1]].shape[3] != constants[first.inputs[1]].shape[0]:
            continue
        inputs = joined_inputs(first, step)
        activation = first.attributes["fused_activation_function"]
        extra = {
            "expand_activation": Attribute("expand_activation", ATTR_STRING, activation.encode())
        }
        node = replace(
            step.node,
            op_type="EXPAND_DEPTHWISE_CONV_2D",
            inputs=list(inputs),
            attributes={**step.node.attributes, **extra},
        )
        attributes = {**step.attributes, "expand_activation": activation}
        out[i] = replace(step, node=node, kernel=info, inputs=inputs, attributes=attributes)
        dropped.add(j)
    return [s for k, s in enumerate(out) if k not in dropped]


def _float_filter(step: Step, constants: dict[str, np.ndarray]) -> np.ndarray | None:
    """The step's constant float32 filter, if it is a float step (no ``quant``)."""
    if step.node.domain != DOMAIN or "quant" in step.attributes or len(step.inputs) < 2:
        return None
    w = constants.get(step.inputs[1])
    return w if isinstance(w, np.ndarray) and w.dtype == np.float32 and w.ndim == 4 else None


def _expansion(step: Step, constants: dict[str, np.ndarray]) -> bool:
    """A float 1x1 stride-1 CONV_2D with a clipping fused activation."""
    w = _float_filter(step, constants) if step.node.op_type == "CONV_2D" else None
    a = step.attributes
    return (
        w is not None
        and w.shape[1:3] == (1, 1)
        and a.get("stride_w", 1) == a.get("stride_h", 1) == 1
        and a.get("fused_activation_function") in _CLIPPED
        and _bias_ok(step, constants)
    )


def _depthwise(step: Step, constants: dict[str, np.ndarray]) -> bool:
    """A float, undilated DEPTHWISE_CONV_2D of multiplier 1."""
    w = _float_filter(step, constants) if step.node.op_type == "DEPTHWISE_CONV_2D" else None
    a = step.attributes
    return (
        w is not None
        and w.shape[0] == 1
        and a.get("depth_multiplier", 1) == 1
        and a.get("dilation_w_factor", 1) == a.get("dilation_h_factor", 1) == 1
        and _bias_ok(step, constants)
    )


def _bias_ok(step: Step, constants: dict[str, np.ndarray]) -> bool:
    """No bias, or a constant float32 one."""
    if len(step.inputs) < 3 or not step.inputs[2]:
        return True
    b = constants.get(step.inputs[2])
    return isinstance(b, np.ndarray) and b.dtype == np.float32
