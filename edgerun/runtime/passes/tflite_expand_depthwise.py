"""A TFLite 1x1 expansion and the depthwise convolution that reads it, as one step.

MobileNetV2-style blocks, as the TFLite converter writes them, expand with a 1x1 CONV_2D
(ReLU6 fused) whose output only a DEPTHWISE_CONV_2D reads. The ONNX plan runs such pairs
as ExpandDepthwiseConv (passes/clip_into_depthwise.py); this pass gives TFLite's float
pairs the same kernel, as EXPAND_DEPTHWISE_CONV_2D (edgerun's own op, kernels/tflite_nn.py):
the expansion is written straight into the depthwise product's padded buffer, where the
two steps stored it and then copied it padded. Quantized pairs (8-bit activations and
weights, the depthwise layer's input quantized as the expansion's output) are fused too:
their expansion is requantized into that buffer. Mixed pairs, other activations, dilated
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
from edgerun.runtime.kernels.tflite_common import quant_of
from edgerun.runtime.passes.pairs import fusable_pairs, fused_pairs, joined_inputs

if TYPE_CHECKING:
    from edgerun.runtime.plan import Step

DOMAIN = "tflite"
_CLIPPED = ("RELU", "RELU6", "RELU_N1_TO_1")  # fused activations the expansion may carry


def expand_depthwise(
    steps: list[Step], constants: dict[str, np.ndarray], keep: Collection[str]
) -> list[Step]:
    """``steps`` with each 1x1 CONV_2D -> DEPTHWISE_CONV_2D pair as one step."""
    info = registry.resolve(DOMAIN, "EXPAND_DEPTHWISE_CONV_2D", 1)
    if info is None:
        return steps
    pairs = fusable_pairs(
        steps, lambda s: _expansion(s, constants), lambda s: _depthwise(s, constants), keep
    )

    def fuse(first: Step, step: Step) -> Step | None:
        if constants[step.inputs[1]].shape[3] != constants[first.inputs[1]].shape[0]:
            return None
        if not _same_kind(first, step):
            return None
        inputs = joined_inputs(first, step)
        activation = first.attributes["fused_activation_function"]
        extra = {
            "expand_activation": Attribute("expand_activation", ATTR_STRING, activation.encode())
        }
        values = {"expand_activation": activation}
        if "quant" in first.attributes:
            quant = first.node.attributes["quant"]
            extra["expand_quant"] = Attribute("expand_quant", quant.type, quant.value)
            values["expand_quant"] = first.attributes["quant"]
        node = replace(
            step.node,
            op_type="EXPAND_DEPTHWISE_CONV_2D",
            inputs=list(inputs),
            attributes={**step.node.attributes, **extra},
        )
        attributes = {**step.attributes, **values}
        return replace(step, node=node, kernel=info, inputs=inputs, attributes=attributes)

    return fused_pairs(steps, pairs, fuse)


def _float_filter(step: Step, constants: dict[str, np.ndarray]) -> np.ndarray | None:
    """The step's constant 4-D filter: float32 for a float step (no ``quant``), 8-bit for
    a quantized one whose input, filter and output are all 8-bit."""
    if step.node.domain != DOMAIN or len(step.inputs) < 2:
        return None
    w = constants.get(step.inputs[1])
    if not isinstance(w, np.ndarray) or w.ndim != 4:
        return None
    quant = step.attributes.get("quant")
    if quant is None:
        return w if w.dtype == np.float32 else None
    params = (quant_of(quant, 0), quant_of(quant, 1), quant_of(quant, 0, output=True))
    eight_bit = all(q is not None and q.dtype in _EIGHT_BIT for q in params)
    return w if eight_bit and w.dtype in _EIGHT_BIT else None


_EIGHT_BIT = (np.dtype(np.int8), np.dtype(np.uint8))


def _same_kind(first: Step, second: Step) -> bool:
    """Both float, or both quantized with the depthwise input's parameters the expansion
    output's (one scale and zero point, of one type)."""
    a, b = first.attributes.get("quant"), second.attributes.get("quant")
    if a is None or b is None:
        return a is None and b is None
    made, read = quant_of(a, 0, output=True), quant_of(b, 0)
    return (
        made is not None
        and read is not None
        and made.dtype == read.dtype
        and made.scale.size == read.scale.size == 1
        and np.array_equal(made.scale, read.scale)
        and np.array_equal(made.zero_point, read.zero_point)
    )


def _expansion(step: Step, constants: dict[str, np.ndarray]) -> bool:
    """A 1x1 stride-1 CONV_2D with a clipping fused activation (a quantized one may have
    none: its output's range clips)."""
    w = _float_filter(step, constants) if step.node.op_type == "CONV_2D" else None
    a = step.attributes
    return (
        w is not None
        and w.shape[1:3] == (1, 1)
        and a.get("stride_w", 1) == a.get("stride_h", 1) == 1
        and (
            a.get("fused_activation_function") in _CLIPPED
            or ("quant" in a and a.get("fused_activation_function") == "NONE")
        )
        and _bias_ok(step, constants)
    )


def _depthwise(step: Step, constants: dict[str, np.ndarray]) -> bool:
    """An undilated DEPTHWISE_CONV_2D of multiplier 1."""
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
    """No bias, or a constant one: float32 for a float step, int32 for a quantized one."""
    if len(step.inputs) < 3 or not step.inputs[2]:
        return True
    b = constants.get(step.inputs[2])
    want = np.int32 if "quant" in step.attributes else np.float32
    return isinstance(b, np.ndarray) and b.dtype == want
