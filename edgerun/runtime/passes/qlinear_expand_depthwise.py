"""An int8 1x1 expansion and the depthwise QLinearConv that reads it, as one step.

Quantized MobileNet blocks (onnxruntime's QOperator format, or QDQ after the QDQ fusion
pass) expand with a 1x1 QLinearConv whose 8-bit output only a depthwise QLinearConv reads.
The pair becomes one QLinearExpandDepthwiseConv (edgerun's own op,
kernels/qlinear_expand.py), which requantizes the expansion straight into the depthwise
product's padded float32 buffer instead of storing it in 8 bits, reading it back and
copying it padded. Taken where the expansion is ungrouped, unpadded and of stride 1, the
depthwise layer has one input channel per group, every weight, scale and zero point is a
constant, and the depthwise layer's input scale and zero point are the expansion's output
ones (as they are when both name the same tensor's); an expansion whose output a graph
output or another step reads stays apart.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from edgerun.runtime import registry
from edgerun.runtime.passes.pairs import fusable_pairs, fused_pairs

if TYPE_CHECKING:
    from edgerun.runtime.plan import Step

DOMAIN = "com.microsoft"  # the domain of edgerun's own QLinearExpandDepthwiseConv
_PARAMS = (1, 2, 3, 4, 5, 6, 7)  # QLinearConv's scales, zero points and weights


def qlinear_expand_depthwise(
    steps: list[Step], constants: dict[str, np.ndarray], keep: Collection[str]
) -> list[Step]:
    """``steps`` with each 1x1 QLinearConv -> depthwise QLinearConv pair as one step."""
    info = registry.resolve(DOMAIN, "QLinearExpandDepthwiseConv", 1)
    if info is None:
        return steps
    pairs = fusable_pairs(
        steps, lambda s: _expansion(s, constants), lambda s: _depthwise(s, constants), keep
    )

    def fuse(first: Step, step: Step) -> Step | None:
        if not _joins(first, step, constants):
            return None
        bias = first.inputs[8] if len(first.inputs) > 8 else ""
        inputs = (*first.inputs[:8], bias, *step.inputs[3:6], *step.inputs[6:9])
        node = replace(
            step.node, op_type="QLinearExpandDepthwiseConv", domain=DOMAIN, inputs=list(inputs)
        )
        return replace(step, node=node, kernel=info, inputs=inputs)

    return fused_pairs(steps, pairs, fuse)


def _constant_weights(step: Step, constants: dict[str, np.ndarray]) -> np.ndarray | None:
    """A plain QLinearConv's 4-D 8-bit weights, where they and its scales and zero points
    are constants (an optional bias too)."""
    node = step.node
    if node.op_type != "QLinearConv" or node.domain not in ("", "ai.onnx"):
        return None
    names = [step.inputs[k] if k < len(step.inputs) else "" for k in _PARAMS]
    bias = step.inputs[8] if len(step.inputs) > 8 else ""
    if not all(n in constants for n in names) or (bias and bias not in constants):
        return None
    w = constants[step.inputs[3]]
    return w if w.ndim == 4 and w.dtype in (np.int8, np.uint8) else None


def _expansion(step: Step, constants: dict[str, np.ndarray]) -> bool:
    """A 1x1, ungrouped, unpadded QLinearConv of stride 1."""
    w = _constant_weights(step, constants)
    a = step.attributes
    return (
        w is not None
        and w.shape[2:] == (1, 1)
        and int(a.get("group", 1)) == 1
        and a.get("auto_pad", "NOTSET") in ("NOTSET", "VALID")
        and not any(a.get("pads") or ())
        and all(s == 1 for s in a.get("strides") or ())
    )


def _depthwise(step: Step, constants: dict[str, np.ndarray]) -> bool:
    """A QLinearConv with one input channel per group and no cropping pads."""
    w = _constant_weights(step, constants)
    group = int(step.attributes.get("group", 1))
    return (
        w is not None
        and group > 1
        and w.shape[:2] == (group, 1)
        and min(step.attributes.get("pads") or (0,)) >= 0
    )


def _joins(first: Step, step: Step, constants: dict[str, np.ndarray]) -> bool:
    """The expansion's output channels and quantization are the depthwise layer's input's."""
    if constants[first.inputs[3]].shape[0] != constants[step.inputs[3]].shape[0]:
        return False
    for made, read in ((first.inputs[6], step.inputs[1]), (first.inputs[7], step.inputs[2])):
        a, b = constants[made], constants[read]
        if a.dtype != b.dtype or a.size != 1 or not np.array_equal(a.reshape(-1), b.reshape(-1)):
            return False
    return True
