"""3x3 stride-1 convolutions as Winograd F(2x2, 3x3) or F(4x4, 3x3) (kernels/winograd.py),
their filters transformed once at load.

The transformed filter replaces the original (16/9 of its size, 4x for F(4x4)) wherever
nothing else reads it. Taken only where it measured faster than im2col on this project's
benchmark machines: at least 32 input and output channels, where the transforms' adds are
small beside the products, and outputs of at least 8x8 where the input's shape is known
(fewer tiles leave BLAS too thin a product; ResNet-18's 7x7 layers were 10 % faster alone
but 7 % slower in the model, whose transformed filters, 16/9 the size, no longer stay in
cache, and the model's peak RSS grew by a third; on the later Intel machine, 6 % slower).
F(4x4, 3x3) from 16x16 outputs (_tile). Runs on the plan's steps after constant folding and
BatchNormalization folding, so the filter it transforms is the final one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from edgerun.runtime import registry
from edgerun.runtime.kernels.winograd import winograd_filter

if TYPE_CHECKING:
    from edgerun.runtime.passes.shape_inference import Shape
    from edgerun.runtime.plan import Step

DOMAIN = "com.microsoft"  # the domain of WinogradConv
_DEFAULT = ("", "ai.onnx")
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
MIN_CHANNELS = 32
MIN_OUTPUTS = 64  # output pixels per image
F4_OUTPUTS = 256  # output pixels per image from which F(4x4, 3x3) is taken
F4_BYTES = 8 << 20  # its filter at most this: 4x the weights (a 256 x 256 layer is 9.4 MB)


def winograd_convs(
    steps: list[Step],
    constants: dict[str, np.ndarray],
    keep: Collection[str],
    infer: Callable[[], Mapping[str, Shape | None]],
) -> list[Step]:
    """``steps`` with each suitable convolution as a WinogradConv reading its transformed
    filter from ``constants``; ``infer()`` gives the inferred shapes of values, where known
    (called only once some convolution's filter suits)."""
    info = registry.resolve(DOMAIN, "WinogradConv", 1)
    reads = Counter(name for s in steps for name in (*s.inputs, *s.scope) if name)
    shapes: Mapping[str, Shape | None] | None = None
    out = []
    for step in steps:
        w = constants.get(step.inputs[1]) if _is_conv(step) else None
        if info is None or w is None or not _filter_suits(step, w):
            out.append(step)
            continue
        shapes = infer() if shapes is None else shapes
        if not _outputs_suit(step, shapes.get(step.inputs[0])):
            out.append(step)
            continue
        name = f"{step.inputs[1]}::winograd"
        constants[name] = winograd_filter(w, _tile(step, w, shapes.get(step.inputs[0])))
        if reads[step.inputs[1]] == 1 and step.inputs[1] not in keep:
            del constants[step.inputs[1]]
        inputs = (step.inputs[0], name, *step.inputs[2:])
        attributes = {
            k: v
            for k, v in step.attributes.items()
            if k in ("activation", "activation_params", "auto_pad", "pads")
        }
        node = replace(step.node, op_type="WinogradConv", domain=DOMAIN, inputs=list(inputs))
        out.append(replace(step, node=node, kernel=info, inputs=inputs, attributes=attributes))
    return out


def _is_conv(step: Step) -> bool:
    node = step.node
    plain = node.op_type == "Conv" and node.domain in _DEFAULT
    return (plain or (node.op_type == "FusedConv" and node.domain == DOMAIN)) and len(
        step.inputs
    ) > 1


def _filter_suits(step: Step, w: np.ndarray) -> bool:
    a = step.attributes
    if w.dtype not in _FLOATS or w.ndim != 4 or w.shape[2:] != (3, 3):
        return False
    if a.get("group", 1) != 1 or min(w.shape[:2]) < MIN_CHANNELS:
        return False
    if any(v != 1 for v in (*(a.get("strides") or ()), *(a.get("dilations") or ()))):
        return False
    return list(a.get("kernel_shape") or (3, 3)) == [3, 3] and min(a.get("pads") or (0,)) >= 0


def _outputs_suit(step: Step, x_shape: Shape | None) -> bool:
    pixels = _output_pixels(step, x_shape)
    return pixels is None or pixels >= MIN_OUTPUTS  # not known: the channels decide


def _output_pixels(step: Step, x_shape: Shape | None) -> int | None:
    """Output pixels per image, where the input's spatial size is known."""
    a = step.attributes
    spatial = [d for d in (x_shape or ())[2:] if isinstance(d, int)]
    if x_shape is None or len(x_shape) != 4 or len(spatial) != 2:
        return None
    pads = a.get("pads") or (0, 0, 0, 0)
    out = [d + pads[i] + pads[i + 2] - 2 for i, d in enumerate(spatial)]
    if a.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        out = spatial
    return out[0] * out[1]


def _tile(step: Step, w: np.ndarray, x_shape: Shape | None) -> int:
    """4 (F(4x4, 3x3)) where it measured faster than F(2x2): outputs of at least 16x16,
    which make enough 6x6 tiles for its transform products, and a filter of at most
    F4_BYTES (4x the weights); where the input's size is not known, up to 128 channels
    (ResNet's 56x56 and 28x28 layers). 2 elsewhere. Single layers, 1 thread: 64 channels of
    56x56 2.43 -> 1.67 ms, 128 of 28x28 1.64 -> 1.05, 256 -> 128 of 28x28 3.00 -> 2.14, 128
    -> 64 of 16x16 0.35 -> 0.30; 128 of 14x14 0.43 -> 0.49, so those stay F(2x2)."""
    if w.size * 4 * w.itemsize > F4_BYTES:
        return 2
    pixels = _output_pixels(step, x_shape)
    if pixels is None:
        return 4 if max(w.shape[:2]) <= 128 else 2
    return 4 if pixels >= F4_OUTPUTS else 2
