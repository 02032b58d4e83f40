"""A convolution's clip moved into the depthwise convolution that reads its output.

MobileNet-style blocks expand with a 1x1 Conv -> Relu/ReLU6 and then run a depthwise Conv,
whose kernel copies its input into a zero-padded channels-last buffer anyway (as their
stems run a 3x3 Conv -> ReLU6 into one). Clipping during that copy instead of after the
product saves one pass over the block's widest tensor. Only a FusedConv (Relu or Clip,
no residual) whose single reader is a depthwise Conv or FusedConv (one input channel per
group, non-negative pads), and whose output is not a graph output, is rewritten: the
FusedConv becomes a plain Conv, the depthwise one a
ClippedInputConv (edgerun's own op, kernels/conv.py) with ``input_clip`` set to the bounds.
Where the FusedConv is a 2-D, ungrouped, undilated convolution with explicit pads (a 1x1
expansion, or a stem), the pair becomes one ExpandDepthwiseConv (edgerun's own op too)
instead, whose kernel writes the first product straight into the depthwise product's
padded buffer (``expand_clip`` the bounds, ``expand_*`` the first convolution's shape). Runs on
the plan's steps after constant and BatchNormalization folding, which want the depthwise
Conv as it was.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from edgerun.runtime import registry
from edgerun.runtime.graph import ATTR_FLOATS, Attribute
from edgerun.runtime.kernels.conv import activation_clip
from edgerun.runtime.passes.pairs import fusable_pairs, joined_inputs

if TYPE_CHECKING:
    from edgerun.runtime.plan import Step

DOMAIN = "com.microsoft"  # the domain of FusedConv and ClippedInputConv
_DEFAULT = ("", "ai.onnx")
_FUSED_ONLY = ("activation", "activation_params")


def clip_into_depthwise(
    steps: list[Step], constants: dict[str, np.ndarray], keep: Collection[str]
) -> list[Step]:
    """``steps`` with each FusedConv -> depthwise Conv pair rewritten as above."""
    clipped = registry.resolve(DOMAIN, "ClippedInputConv", 1)
    plain = registry.resolve("", "Conv", 1)
    expand = registry.resolve(DOMAIN, "ExpandDepthwiseConv", 1)
    if clipped is None or plain is None or expand is None:
        return steps
    out = list(steps)
    dropped: set[int] = set()
    pairs = fusable_pairs(
        steps, lambda s: _clipped_conv(s, constants), lambda s: _depthwise(s, constants), keep
    )
    for j, i in pairs:
        step, first = steps[i], out[j]
        bounds = activation_clip(
            first.attributes["activation"], first.attributes.get("activation_params")
        )
        if _feeds_depthwise(first, constants):
            inputs = joined_inputs(first, step)
            clip = Attribute("expand_clip", ATTR_FLOATS, [float(v) for v in bounds])
            extra = {"expand_clip": clip}  # the node says what the step runs (estimate reads it)
            for name in _FIRST:
                if name in first.node.attributes:
                    a = first.node.attributes[name]
                    extra[f"expand_{name}"] = Attribute(f"expand_{name}", a.type, a.value)
            node = replace(
                step.node,
                op_type="ExpandDepthwiseConv",
                domain=DOMAIN,
                inputs=list(inputs),
                attributes={**step.node.attributes, **extra},
            )
            attributes = {**step.attributes, **{k: a.value for k, a in extra.items()}}
            out[i] = replace(step, node=node, kernel=expand, inputs=inputs, attributes=attributes)
            dropped.add(j)
            continue
        attributes = {k: v for k, v in first.attributes.items() if k not in _FUSED_ONLY}
        node = replace(first.node, op_type="Conv", domain="")
        out[j] = replace(first, node=node, kernel=plain, attributes=attributes)
        node = replace(step.node, op_type="ClippedInputConv", domain=DOMAIN)
        attributes = {**step.attributes, "input_clip": [float(v) for v in bounds]}
        out[i] = replace(step, node=node, kernel=clipped, attributes=attributes)
    return [s for k, s in enumerate(out) if k not in dropped]


_FIRST = ("kernel_shape", "pads", "strides")  # the first convolution's, as expand_*


def _feeds_depthwise(step: Step, constants: dict[str, np.ndarray]) -> bool:
    """An ungrouped, undilated 2-D convolution with explicit pads: a MobileNet block's 1x1
    expansion or its stem (ExpandDepthwiseConv's kernel decides at run time which it can
    write into the depthwise product's buffer)."""
    w = constants[step.inputs[1]]
    a = step.attributes
    return (
        w.ndim == 4
        and int(a.get("group", 1)) == 1
        and all(v == 1 for v in a.get("dilations") or ())
        and a.get("auto_pad", "NOTSET") == "NOTSET"
    )


def _clipped_conv(step: Step, constants: dict[str, np.ndarray]) -> bool:
    """A FusedConv with a clip for activation, constant weights and no residual."""
    node = step.node
    if node.op_type != "FusedConv" or node.domain != DOMAIN or len(step.inputs) > 3:
        return False
    w = constants.get(step.inputs[1])
    return w is not None and step.attributes.get("activation") in ("Relu", "Clip")


def _depthwise(step: Step, constants: dict[str, np.ndarray]) -> bool:
    """A Conv (or FusedConv without a residual) with one input channel per group."""
    node = step.node
    conv = node.op_type == "Conv" and node.domain in _DEFAULT
    fused = node.op_type == "FusedConv" and node.domain == DOMAIN and len(step.inputs) <= 3
    w = constants.get(step.inputs[1]) if (conv or fused) and len(step.inputs) > 1 else None
    group = int(step.attributes.get("group", 1))
    return (
        w is not None
        and group > 1
        and w.shape[0] == group
        and w.shape[1] == 1
        and min(step.attributes.get("pads") or (0,)) >= 0
    )
