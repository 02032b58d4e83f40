"""An int8 1x1 expansion and the depthwise QLinearConv that reads it, as one step.

The float plan writes a MobileNet block's expansion straight into the depthwise product's
padded buffer (ExpandDepthwiseConv, kernels/conv.py); this is the same for the QLinearConv
pair that onnxruntime's quantizer (or the QDQ fusion pass) leaves. The expansion's exact
sums are requantized in that float32 buffer (scaled, rounded, saturated) and kept there
less their zero point, which is the centered input the depthwise product wants: the 8-bit
tensor between the two is never stored, nor read back and copied padded. Outputs are the
two steps' bit for bit.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels import int8
from edgerun.runtime.kernels.conv import conv_geometry, pointwise_into_depthwise
from edgerun.runtime.kernels.derived import memo, memo_with, tiled
from edgerun.runtime.kernels.qlinear import (
    _centered_weights,
    _conv_multiplier,
    folded_pointwise_weights,
    largest_filter_sum,
    qlinear_conv_10,
    requantized,
)
from edgerun.runtime.registry import kernel

f32 = np.float32


@kernel("QLinearExpandDepthwiseConv", since=1, domain="com.microsoft")
def q_linear_expand_depthwise_conv_1(
    x,
    x_scale,
    x_zero_point,
    w,
    w_scale,
    w_zero_point,
    mid_scale,
    mid_zero_point,
    B,
    w_depthwise,
    w_depthwise_scale,
    w_depthwise_zero_point,
    y_scale,
    y_zero_point,
    B_depthwise=None,
    *,
    auto_pad="NOTSET",
    dilations=None,
    group=1,
    kernel_shape=None,
    pads=None,
    strides=None,
):
    """edgerun's own op (onnxruntime has none by this name), made by
    passes/qlinear_expand_depthwise.py from a 1x1 QLinearConv (x ... mid_zero_point, B)
    and the depthwise QLinearConv that alone reads its output (the rest; the attributes
    are its own; its input's scale and zero point are mid_*). Where a sum could pass
    float32's exact integers, or the shapes are not a single image's, it runs as the two
    steps."""
    depthwise = (auto_pad, dilations, group, kernel_shape, pads, strides)
    low, high = int8.int_range(mid_zero_point.dtype)
    zero = int(int8.scalar(mid_zero_point))
    bounds = (low - zero, high - zero)  # saturated, less the zero point
    first = _fused_terms(x, x_zero_point, w, w_zero_point, B, w_depthwise, depthwise)
    second = first and _depthwise_terms(w_depthwise, w_depthwise_zero_point, B_depthwise, bounds)
    if not first or not second:
        mid = qlinear_conv_10(
            x, x_scale, x_zero_point, w, w_scale, w_zero_point, mid_scale, mid_zero_point, B
        )
        return qlinear_conv_10(
            mid,
            mid_scale,
            mid_zero_point,
            w_depthwise,
            w_depthwise_scale,
            w_depthwise_zero_point,
            y_scale,
            y_zero_point,
            B_depthwise,
            auto_pad=auto_pad,
            dilations=dilations,
            group=group,
            kernel_shape=kernel_shape,
            pads=pads,
            strides=strides,
        )
    (wb, geometry), (ws, b) = first, second
    multiplier = _conv_multiplier(x_scale, w_scale, mid_scale, 0)

    def expand(rows, slab):
        _requantized_expansion(rows, wb, multiplier, bounds, slab)

    xl = x[0].transpose(1, 2, 0)
    y = pointwise_into_depthwise(xl, w.shape[0], True, expand, ws, b, geometry, dtype=f32)
    acc = y.transpose(0, 3, 1, 2)
    return requantized(acc, mid_scale, w_depthwise_scale, y_scale, y_zero_point)


def _requantized_expansion(rows, wb, multiplier, bounds, slab):
    """The expansion of ``rows`` (uncentered 8-bit values in float32, then a column of
    ones) requantized into ``slab``, whole rows of the depthwise buffer, less its zero
    point: rint(sum * multiplier) saturated, as onnxruntime requantizes, in float32."""
    m = wb.shape[1]
    flat = slab.reshape(-1, m)  # contiguous: whole rows of the buffer
    np.matmul(rows.reshape(-1, rows.shape[-1]), wb, out=flat)
    lines = slab.reshape(slab.shape[0], -1)
    if np.ndim(multiplier):  # per channel, tiled along the rows: (width x M)-long loops
        lines *= tiled(multiplier, lines.shape[1] // m)
    else:
        lines *= multiplier
    np.rint(flat, out=flat)  # half to even, as onnxruntime rounds
    np.clip(flat, bounds[0], bounds[1], out=flat)


def _fused_terms(x, x_zero_point, w, w_zero_point, B, w_depthwise, depthwise):
    """((C + 1, M) float32 weights taking the bias and the input's zero point, the depthwise
    geometry), or None where the pair runs as two steps: not one 2-D image of 8-bit
    values, padding that crops, or expansion sums that could pass 2^24."""
    if x.ndim != 4 or x.shape[0] != 1 or x.dtype not in (np.uint8, np.int8):
        return None
    if w.ndim != 4 or w.shape[1:] != (x.shape[1], 1, 1):  # the two steps say what is wrong
        return None
    m = w.shape[0]
    auto_pad, dilations, group, kernel_shape, pads, strides = depthwise
    kernel_shape, strides, dilations, begin, _, out_shape = conv_geometry(
        (1, m, *x.shape[2:]), w_depthwise.shape, auto_pad, dilations, kernel_shape, pads, strides
    )
    if group != m or w_depthwise.shape[:2] != (m, 1) or min(begin) < 0:
        return None
    xz = float(int8.scalar(x_zero_point))
    wb, bound = memo_with(
        w,
        B,
        ("expansion rows", xz, x.dtype.str),
        lambda: folded_pointwise_weights(w, w_zero_point, B, xz, x.dtype),
    )
    if bound >= int8.FLOAT32_EXACT:
        return None
    return wb, (kernel_shape, strides, dilations, begin, tuple(x.shape[2:]), out_shape)


def _depthwise_terms(w_depthwise, w_zero_point, B, bounds):
    """(centered float32 depthwise weights, their float32 bias), or None where a sum of
    the centered input's products (within ``bounds``) and the bias could pass 2^24."""
    ws = memo_with(
        w_depthwise, w_zero_point, "centered", lambda: _centered_weights(w_depthwise, w_zero_point)
    )
    reach = max(-bounds[0], bounds[1]) * largest_filter_sum(ws)
    b = None
    if B is not None:
        b, largest = memo(B, "float32 and largest", lambda: _float_bias(B))
        reach += largest
    return None if reach >= int8.FLOAT32_EXACT else (ws, b)


def _float_bias(B):
    """The int32 bias in float32 (exact where it is used: below 2^24) and its largest |b|."""
    return B.reshape(-1).astype(f32), int(np.abs(B.astype(np.int64)).max(initial=0))
