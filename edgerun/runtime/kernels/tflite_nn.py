"""TFLite convolutions, dense layers, pooling, softmax and resizing, NHWC.

Float paths call the ONNX kernels' math on NCHW views of the NHWC tensors; quantized paths
sum exactly in integers (through float BLAS) and requantize with TFLite's fixed-point
multipliers, as its reference kernels do.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgerun.runtime import budget
from edgerun.runtime.kernels.conv import (
    _conv,
    _integer_conv,
    conv_geometry,
    expand_depthwise_conv_1,
    pointwise_into_depthwise,
)
from edgerun.runtime.kernels.derived import memo, memo_with
from edgerun.runtime.kernels.int8 import FLOAT32_EXACT
from edgerun.runtime.kernels.linalg import _integer_matmul
from edgerun.runtime.kernels.pool import _average_pool, _max_pool, _sum_pool, _window_count
from edgerun.runtime.kernels.qlinear import (
    _centered_weights,
    folded_pointwise_weights,
    integer_conv,
    largest_filter_sum,
    uncentered_conv,
)
from edgerun.runtime.kernels.resize import _resize
from edgerun.runtime.kernels.tflite_common import (
    activation_range,
    centered_requantizer,
    dequantize,
    fused,
    is_quantized,
    nchw,
    nhwc,
    quant_of,
    quantize_multiplier,
    requantize,
    round_half_away,
    same_pad,
    via_float,
)
from edgerun.runtime.registry import kernel
from edgerun.runtime.tflite_reader import DOMAIN, QuantParams, TensorQuant


def _float_weights(w: np.ndarray, quant: TensorQuant | None, index: int) -> np.ndarray:
    # float16 models dequantize weights through DEQUANTIZE; a quantized weight of a float
    # op (dynamic-range models) is dequantized here (in TFLite's layout: its axis)
    q = quant_of(quant, index)
    if w.dtype.kind in "iu" and q is not None:
        return dequantize(w, q)
    return w.astype(np.float32, copy=False)


def _hybrid(x: np.ndarray, w: np.ndarray, quant: TensorQuant | None) -> bool:
    """Float activations with int8 weights: TFLite's hybrid kernels of dynamic-range models."""
    return x.dtype == np.float32 and w.dtype == np.int8 and quant_of(quant, 1) is not None


def _quantize_rows(x: np.ndarray, asymmetric: bool):
    """Each row of ``x`` as int8 the way TFLite's hybrid kernels quantize activations
    (SymmetricQuantizeFloats / AsymmetricQuantizeFloats): (values, scale, zero point)."""
    lo = np.minimum(x.min(axis=1), 0).astype(np.float64)
    hi = np.maximum(x.max(axis=1), 0).astype(np.float64)
    if asymmetric:
        scale = (hi - lo) / 255.0
        safe = np.where(scale == 0, 1.0, scale)
        from_min, from_max = -128.0 - lo / safe, 127.0 - hi / safe
        use_min = 128.0 + np.abs(lo / safe) < 127.0 + np.abs(hi / safe)
        zero = np.clip(round_half_away(np.where(use_min, from_min, from_max)), -128, 127)
        scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
        zero = np.where(hi == lo, 0, zero).astype(np.float32)
        inv = (np.float32(1) / scale).astype(np.float32)
        q = round_half_away(zero[:, None] + x * inv[:, None])
        return np.clip(q, -128, 127).astype(np.float32), scale, zero
    rng = np.maximum(-lo, hi).astype(np.float32)
    safe = np.where(rng == 0, np.float32(1), rng)
    q = round_half_away(x * (np.float32(127) / safe)[:, None])
    scale = np.where(rng == 0, np.float32(1), rng / np.float32(127)).astype(np.float32)
    return np.clip(q, -127, 127).astype(np.float32), scale, np.zeros_like(scale)


def _multipliers(qx: QuantParams, qw: QuantParams, qy: QuantParams, quant: TensorQuant):
    return memo(quant, "multipliers", lambda: _multipliers_of(qx, qw, qy))


def _multipliers_of(qx: QuantParams, qw: QuantParams, qy: QuantParams):
    real = np.float64(qx.scale[0]) * qw.scale.astype(np.float64) / np.float64(qy.scale[0])
    return quantize_multiplier(real)


def _weight_zero(qw: QuantParams):
    return memo(qw, "weight zero", lambda: None if not np.any(qw.zero_point) else qw.zero_point)


def _oihw(filter: np.ndarray, quant, view: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The filter as the view ``_conv`` takes, the same object on every run: conv.py and
    qlinear key what they derive from weights (layouts, exact-sum plans) by the weights'
    identity, so a fresh view each run re-derived them all (a float MobileNetV2-style model
    7.5 -> 7.0 ms). Kept on a quantized node's ``quant``; on a float filter itself where the
    view does not hold it (numpy points a view at the memory's owner: a mapped file's
    buffer, not the filter), so that the entry still goes with the model."""
    if quant is not None:
        return memo_with(quant, filter, "oihw", lambda: view(filter))
    oihw = view(filter)
    if oihw.base is filter:  # a filter that owns its memory: the entry would keep it alive
        return oihw
    return memo(filter, ("oihw", oihw.shape, oihw.strides), lambda: oihw)


def _conv_nhwc(x, w, bias, padding, strides, dilations, group, act, quant):
    """x NHWC, w as ONNX wants it (M, C/group, kh, kw) but still integer when quantized."""
    qx, qw, qy = quant_of(quant, 0), quant_of(quant, 1), quant_of(quant, 0, output=True)
    kernel_shape = list(w.shape[2:])
    _check_window(x.shape[1:3], kernel_shape, dilations)
    if is_quantized(x, qx) and qw is not None and qy is not None:
        # exact integers in float (requantize converts them once): uncentered where one
        # float32 product holds them (qlinear.uncentered_conv), else integer_conv's chunks
        conv_args = (
            nchw(x),
            qx.zero_point[0],
            w,
            _weight_zero(qw),
            same_pad(padding),
            dilations,
            group,
            kernel_shape,
            None,
            strides,
        )
        found = uncentered_conv(*conv_args[:4], None, *conv_args[4:])
        acc, bound = found if found is not None else integer_conv(*conv_args)
        m, shift = _multipliers(qx, qw, qy, quant)
        return requantize(nhwc(acc), m, shift, qy, act, bias=bias, owner=quant, bound=bound)
    if qw is not None and _hybrid(x, w, quant):
        return _hybrid_conv(x, w, bias, padding, strides, dilations, group, act, qw)
    if qw is None:
        wf = w.astype(np.float32, copy=False)
    else:  # quantized weights of a float convolution: dequantized once
        wf = memo_with(quant, w, "float weights", lambda: dequantize_oihw(w, qw))
    b = None if bias is None else bias.astype(np.float32, copy=False)
    xf = x.astype(np.float32, copy=False)
    clip = _CLIPS.get(act)  # applied inside the convolution, on blocks still in cache
    pad = same_pad(padding)
    y = _conv(nchw(xf), wf, b, pad, dilations, group, kernel_shape, None, strides, clip)
    return fused(np.ascontiguousarray(nhwc(y)), "NONE" if clip else act)


_CLIPS = {"RELU": (0.0, np.inf), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}


def dequantize_oihw(w: np.ndarray, qw: QuantParams) -> np.ndarray:
    # conv weights reach _conv_nhwc as OIHW views; their scales run along the output channel
    scale = qw.scale.reshape((-1, 1, 1, 1)) if qw.per_channel else qw.scale.reshape(())
    zero = qw.zero_point.reshape(scale.shape).astype(np.float32)
    return ((w.astype(np.float32) - zero) * scale).astype(np.float32)


def _hybrid_conv(x, w, bias, padding, strides, dilations, group, act, qw):
    # each image quantized asymmetrically on the fly, an exact integer convolution, then
    # scaled back by the image's scale times each channel's weight scale
    out = []
    for image in x:
        q, scale, zero = _quantize_rows(image.reshape(1, -1), asymmetric=True)
        acc = _integer_conv(
            nchw(q.astype(np.int8).reshape((1, *image.shape))),
            int(zero[0]),
            w,
            None,
            same_pad(padding),
            dilations,
            group,
            list(w.shape[2:]),
            None,
            strides,
        )
        out.append(nhwc(acc)[0].astype(np.float32) * (scale[0] * qw.scale.astype(np.float32)))
    y = np.stack(out)
    if bias is not None:
        y += bias.astype(np.float32)
    return fused(y, act)


@kernel("CONV_2D", since=1, domain=DOMAIN)
def conv_2d(
    input,
    filter,
    bias=None,
    *,
    padding="SAME",
    stride_w=1,
    stride_h=1,
    fused_activation_function="NONE",
    dilation_w_factor=1,
    dilation_h_factor=1,
    quantized_bias_type=0,
    quant=None,
):
    if input.shape[3] % filter.shape[3]:
        raise ValueError(f"input {input.shape} and filter {filter.shape} channels do not match")
    w = _oihw(filter, quant, lambda f: f.transpose(0, 3, 1, 2))  # OHWI -> OIHW
    return _conv_nhwc(
        input,
        w,
        bias,
        padding,
        [stride_h, stride_w],
        [dilation_h_factor, dilation_w_factor],
        input.shape[3] // filter.shape[3],
        fused_activation_function,
        quant,
    )


@kernel("DEPTHWISE_CONV_2D", since=1, domain=DOMAIN)
def depthwise_conv_2d(
    input,
    filter,
    bias=None,
    *,
    padding="SAME",
    stride_w=1,
    stride_h=1,
    depth_multiplier=1,
    fused_activation_function="NONE",
    dilation_w_factor=1,
    dilation_h_factor=1,
    quant=None,
):
    channels = input.shape[3]
    if filter.shape[3] % channels:
        raise ValueError(f"filter {filter.shape} does not fit {channels} input channels")
    # (1, kh, kw, C*mult) -> (C*mult, 1, kh, kw)
    w = _oihw(filter, quant, lambda f: f[0].transpose(2, 0, 1)[:, None])
    return _conv_nhwc(
        input,
        w,
        bias,
        padding,
        [stride_h, stride_w],
        [dilation_h_factor, dilation_w_factor],
        channels,
        fused_activation_function,
        quant,
    )


@kernel("EXPAND_DEPTHWISE_CONV_2D", since=1, domain=DOMAIN)
def expand_depthwise_conv_2d(
    input,
    filter,
    bias,
    depthwise_filter,
    depthwise_bias=None,
    *,
    expand_activation="RELU6",
    padding="SAME",
    stride_w=1,
    stride_h=1,
    depth_multiplier=1,
    fused_activation_function="NONE",
    dilation_w_factor=1,
    dilation_h_factor=1,
    expand_quant=None,
    quant=None,
):
    """edgerun's own op (TFLite has none by this name), made by
    passes/tflite_expand_depthwise.py from a 1x1 CONV_2D (``filter``, ``bias``, its fused
    activation ``expand_activation``, its ``quant`` as ``expand_quant``) and the
    DEPTHWISE_CONV_2D that alone reads its output (the rest). Float pairs run as ONNX's
    ExpandDepthwiseConv (kernels/conv.py), which writes the expansion straight into the
    depthwise product's padded buffer instead of storing it and copying it padded
    (MobileNetV2's blocks of 16 -> 64 channels of 112x112, stride 2: 1.87 -> 1.45 ms; 24 ->
    96 of 56x56: 1.01 -> 0.95). Quantized pairs requantize the expansion into that buffer,
    less its zero point (_quantized_pair)."""
    if depthwise_filter.shape[3] != filter.shape[0] or depth_multiplier != 1:
        raise ValueError(f"depthwise filter {depthwise_filter.shape} does not fit {filter.shape}")
    depthwise = {
        "padding": padding,
        "stride_w": stride_w,
        "stride_h": stride_h,
        "fused_activation_function": fused_activation_function,
        "dilation_w_factor": dilation_w_factor,
        "dilation_h_factor": dilation_h_factor,
    }
    if quant is not None:
        y = _quantized_pair(
            input, filter, bias, depthwise_filter, depthwise_bias, expand_activation,
            expand_quant, depthwise, quant,
        )  # fmt: skip
        if y is not None:
            return y
        mid = conv_2d(
            input, filter, bias, padding="VALID", fused_activation_function=expand_activation,
            quant=expand_quant,
        )  # fmt: skip
        return depthwise_conv_2d(mid, depthwise_filter, depthwise_bias, quant=quant, **depthwise)
    w = _oihw(filter, None, lambda f: f.transpose(0, 3, 1, 2))  # OHWI -> OIHW
    wd = _oihw(depthwise_filter, None, lambda f: f[0].transpose(2, 0, 1)[:, None])
    clip = _CLIPS.get(fused_activation_function)
    y = expand_depthwise_conv_1(
        nchw(input.astype(np.float32, copy=False)),
        w,
        None if bias is None else bias.astype(np.float32, copy=False),
        wd,
        None if depthwise_bias is None else depthwise_bias.astype(np.float32, copy=False),
        expand_clip=list(_CLIPS[expand_activation]),
        expand_kernel_shape=[1, 1],
        expand_pads=[0, 0, 0, 0],
        expand_strides=[1, 1],
        activation="Clip" if clip else "",
        activation_params=list(clip) if clip else None,
        auto_pad=same_pad(padding),
        dilations=[dilation_h_factor, dilation_w_factor],
        group=filter.shape[0],
        kernel_shape=list(depthwise_filter.shape[1:3]),
        strides=[stride_h, stride_w],
    )
    return fused(np.ascontiguousarray(nhwc(y)), "NONE" if clip else fused_activation_function)


def _quantized_pair(
    x, filter, bias, depthwise_filter, depthwise_bias, expand_activation, expand_quant,
    depthwise, quant,
):  # fmt: skip
    """EXPAND_DEPTHWISE_CONV_2D of 8-bit tensors, bit for bit the two steps: the exact sums
    of the expansion (its bias and the input's zero point taken in the product, through a
    channel of ones) requantized with TFLite's multipliers straight into the depthwise
    product's padded float32 buffer, less the zero point, which is the centered input the
    depthwise sums want; its 8-bit tensor is never stored, read back and copied padded.
    None where a sum could pass 2^24, the float32 scaling is not exact enough to take
    (tflite_common.centered_requantizer), or the input is not one image."""
    qx, qw, qm = quant_of(expand_quant, 0), quant_of(expand_quant, 1), quant_of(quant, 0)
    qd, qy = quant_of(quant, 1), quant_of(quant, 0, output=True)
    if x.shape[0] != 1 or not is_quantized(x, qx) or None in (qw, qm, qd, qy):
        return None
    if filter.shape[1:] != (1, 1, x.shape[3]):  # the two steps say what is wrong
        return None
    if depthwise["dilation_w_factor"] != 1 or depthwise["dilation_h_factor"] != 1:
        return None
    m, c = filter.shape[0], filter.shape[3]
    xz = float(qx.zero_point[0])
    wb, reach = memo_with(
        expand_quant,
        filter,
        ("expansion rows", xz, x.dtype.str),
        lambda: folded_pointwise_weights(filter, _weight_zero(qw), bias, xz, x.dtype),
    )
    if reach >= FLOAT32_EXACT:
        return None
    scale_e = centered_requantizer(
        *_multipliers(qx, qw, qm, expand_quant), qm, expand_activation, expand_quant, reach
    )
    if scale_e is None:
        return None
    wd = _oihw(depthwise_filter, quant, lambda f: f[0].transpose(2, 0, 1)[:, None])
    ws = memo_with(quant, wd, "centered taps", lambda: _centered_weights(wd, _weight_zero(qd)))
    largest = largest_filter_sum(ws)
    lo, hi = activation_range(expand_activation, qm)
    zero = int(qm.zero_point[0])
    bound = max(zero - lo, hi - zero) * largest
    strides = (depthwise["stride_h"], depthwise["stride_w"])
    kernel_shape, strides, dilations, begin, _, out_shape = conv_geometry(
        (1, m, *x.shape[1:3]), wd.shape, same_pad(depthwise["padding"]), None, None, None, strides
    )
    if bound >= FLOAT32_EXACT or min(begin) < 0:
        return None

    def expand(rows, slab):
        np.matmul(rows.reshape(-1, c + 1), wb, out=slab.reshape(-1, m))
        scale_e(slab.reshape(slab.shape[0], -1))

    geometry = (kernel_shape, strides, dilations, begin, tuple(x.shape[1:3]), out_shape)
    y = pointwise_into_depthwise(x[0], m, True, expand, ws, None, geometry, dtype=np.float32)
    multiplier, shift = _multipliers(qm, qd, qy, quant)
    act = depthwise["fused_activation_function"]
    return requantize(y, multiplier, shift, qy, act, bias=depthwise_bias, owner=quant, bound=bound)


def _tap_range(tap, pad, stride, in_size, out_size):
    """(first input, last input + 1, first output) of one tap: the inputs whose output
    position r * stride + tap - pad lands inside the output."""
    first = max(0, -(-(pad - tap) // stride))
    stop = min(in_size, (out_size - 1 + pad - tap) // stride + 1)
    return first, stop, first * stride + tap - pad


def _transpose_conv_sum(x, w, out_hw, pads, strides, dtype):
    # every input pixel adds its (kh, kw, co) patch of x @ w into the output, one strided
    # slice per tap, clipped to the output (pads crop the start, as TFLite's kernel does)
    n, h, wd, ci = x.shape
    co, kh, kw, _ = w.shape
    (sh, sw), (oh, ow) = strides, out_hw
    cols = np.matmul(x.reshape(-1, ci).astype(dtype), w.reshape(-1, ci).T.astype(dtype))
    cols = cols.reshape(n, h, wd, co, kh, kw)
    y = np.zeros((n, oh, ow, co), dtype=dtype)
    for i in range(kh):
        r0, r1, o0 = _tap_range(i, pads[0], sh, h, oh)
        for j in range(kw):
            c0, c1, p0 = _tap_range(j, pads[1], sw, wd, ow)
            if r1 > r0 and c1 > c0:
                rows = slice(o0, o0 + (r1 - r0 - 1) * sh + 1, sh)
                columns = slice(p0, p0 + (c1 - c0 - 1) * sw + 1, sw)
                y[:, rows, columns] += cols[:, r0:r1, c0:c1, :, i, j]
    return y


def _transpose_pad(padding, out_size, kernel_size, stride):
    if padding == "VALID":
        return 0
    if padding != "SAME":
        raise ValueError(f"unknown padding {padding!r}")
    # as ComputePaddingHeightWidth from the output's side: ceil(out / stride) windows
    windows = -(-out_size // stride)
    return max(0, (windows - 1) * stride + kernel_size - out_size) // 2


@kernel("TRANSPOSE_CONV", since=1, domain=DOMAIN)
def transpose_conv(
    output_shape,
    weights,
    input,
    bias=None,
    *,
    padding="SAME",
    stride_w=1,
    stride_h=1,
    fused_activation_function="NONE",
    quantized_bias_type=0,
    quant=None,
):
    shape = [int(v) for v in np.asarray(output_shape).reshape(-1)]
    if len(shape) != 4 or input.ndim != 4 or weights.ndim != 4:
        raise ValueError("TRANSPOSE_CONV needs 4-D input, weights and output_shape")
    out_hw = shape[1:3]
    budget.check([input.shape[0], *out_hw, weights.shape[0]], np.float64, "TRANSPOSE_CONV output")
    pads = [
        _transpose_pad(padding, out_hw[0], weights.shape[1], stride_h),
        _transpose_pad(padding, out_hw[1], weights.shape[2], stride_w),
    ]
    qx, qw, qy = quant_of(quant, 2), quant_of(quant, 1), quant_of(quant, 0, output=True)
    if is_quantized(input, qx) and qw is not None and qy is not None:
        x = input.astype(np.int64) - int(qx.zero_point[0])
        w = weights.astype(np.int64)
        if _weight_zero(qw) is not None:
            w = w - qw.zero_point.reshape(-1, 1, 1, 1)
        acc = _transpose_conv_sum(x, w, out_hw, pads, [stride_h, stride_w], np.float64)
        acc = np.rint(acc).astype(np.int64)
        if bias is not None:
            acc += bias.astype(np.int64)
        m, shift = _multipliers(qx, qw, qy, quant)
        return requantize(acc, m, shift, qy, fused_activation_function)
    wf = _float_weights(weights, quant, 1)
    y = _transpose_conv_sum(input, wf, out_hw, pads, [stride_h, stride_w], np.float32)
    y = np.ascontiguousarray(y)
    if bias is not None:
        y += bias.astype(np.float32)
    return fused(y, fused_activation_function)


@kernel("FULLY_CONNECTED", since=1, domain=DOMAIN)
def fully_connected(
    input,
    weights,
    bias=None,
    *,
    fused_activation_function="NONE",
    weights_format=0,
    keep_num_dims=0,
    asymmetric_quantize_inputs=0,
    quantized_bias_type=0,
    quant=None,
):
    if weights_format != 0:
        raise ValueError("only the DEFAULT weights format of FULLY_CONNECTED is supported")
    k = weights.shape[1]
    x = input.reshape(-1, k)
    qx, qw, qy = quant_of(quant, 0), quant_of(quant, 1), quant_of(quant, 0, output=True)
    if is_quantized(input, qx) and qw is not None and qy is not None:
        xs = x.astype(np.int32) - np.int32(qx.zero_point[0])
        ws = weights.astype(np.int32)
        if _weight_zero(qw) is not None:
            ws = ws - qw.zero_point.astype(np.int32).reshape(-1, 1)
        acc = _integer_matmul(xs, ws.T)  # exact integers, in float
        m, shift = _multipliers(qx, qw, qy, quant)
        y = requantize(
            acc, m, shift, qy, fused_activation_function, single=True, bias=bias, owner=quant
        )
    elif qw is not None and _hybrid(x, weights, quant):
        q, scale, zero = _quantize_rows(x.astype(np.float32), bool(asymmetric_quantize_inputs))
        acc = _integer_matmul(q - zero[:, None], weights.astype(np.float32).T)
        y = acc.astype(np.float32) * scale[:, None] * qw.scale.astype(np.float32)
        if bias is not None:
            y += bias.astype(np.float32)
        y = fused(y, fused_activation_function)
    else:
        y = np.matmul(x.astype(np.float32, copy=False), _float_weights(weights, quant, 1).T)
        if bias is not None:
            y += bias.astype(np.float32)
        y = fused(y, fused_activation_function)
    return y.reshape(*input.shape[:-1], -1) if keep_num_dims else y


@kernel("BATCH_MATMUL", since=1, domain=DOMAIN)
def batch_matmul(x, y, *, adj_x=0, adj_y=0, asymmetric_quantize_inputs=0, quant=None):
    a = np.swapaxes(x, -1, -2) if adj_x else x
    b = np.swapaxes(y, -1, -2) if adj_y else y
    qa, qb, qy = quant_of(quant, 0), quant_of(quant, 1), quant_of(quant, 0, output=True)
    if is_quantized(a, qa) and is_quantized(b, qb) and qy is not None:
        acc = _integer_matmul(
            a.astype(np.int32) - np.int32(qa.zero_point[0]),
            b.astype(np.int32) - np.int32(qb.zero_point[0]),
        )
        m, shift = _multipliers(qa, qb, qy, quant)
        return requantize(np.rint(acc).astype(np.int64), m, shift, qy, "NONE")
    return np.matmul(a.astype(np.float32, copy=False), _float_weights(b, quant, 1))


def _pool_args(x, padding, stride_w, stride_h, filter_width, filter_height):
    if x.ndim != 4:
        raise ValueError(f"pooling needs a 4-D NHWC input, got shape {x.shape}")
    _check_window(x.shape[1:3], [filter_height, filter_width], [1, 1])
    return [filter_height, filter_width], [stride_h, stride_w], same_pad(padding)


def _check_window(in_hw, kernel_hw, dilations) -> None:
    # a window far wider than its input is no model's, only a damaged file's; its padding
    # would be materialised at that size
    for size, k, d in zip(in_hw, kernel_hw, dilations, strict=True):
        if (k - 1) * d + 1 > 4 * size + 64:
            raise ValueError(f"a window of {k} (dilation {d}) over an input of {size}")


@kernel("MAX_POOL_2D", since=1, domain=DOMAIN)
def max_pool_2d(
    input,
    *,
    padding="VALID",
    stride_w=1,
    stride_h=1,
    filter_width=1,
    filter_height=1,
    fused_activation_function="NONE",
    quant=None,
):
    k, s, pad = _pool_args(input, padding, stride_w, stride_h, filter_width, filter_height)
    y = np.ascontiguousarray(nhwc(_max_pool(nchw(input), k, s, None, None, pad, 0, 0, False)))
    qy = quant_of(quant, 0, output=True)
    if is_quantized(y, qy):
        lo, hi = activation_range(fused_activation_function, qy)
        return np.clip(y, lo, hi).astype(y.dtype)
    return fused(y, fused_activation_function)


@kernel("AVERAGE_POOL_2D", since=1, domain=DOMAIN)
def average_pool_2d(
    input,
    *,
    padding="VALID",
    stride_w=1,
    stride_h=1,
    filter_width=1,
    filter_height=1,
    fused_activation_function="NONE",
    quant=None,
):
    k, s, pad = _pool_args(input, padding, stride_w, stride_h, filter_width, filter_height)
    qy = quant_of(quant, 0, output=True)
    if is_quantized(input, qy):
        # integer sum over the window's valid taps, divided rounding halves away from zero
        acc, (s_, d_, begin, end, out) = _sum_pool(
            nchw(input).astype(np.int64), k, s, None, None, pad, 0
        )
        count = _window_count(input.shape[1:3], k, s_, d_, begin, end, out, 0)
        count = np.maximum(count, 1)
        num = acc + np.where(acc > 0, count // 2, -(count // 2))
        avg = np.where(num >= 0, num // count, -((-num) // count))
        lo, hi = activation_range(fused_activation_function, qy)
        return np.ascontiguousarray(nhwc(np.clip(avg, lo, hi).astype(input.dtype)))
    y = _average_pool(nchw(input.astype(np.float32, copy=False)), k, s, None, None, pad, 0, 0)
    return fused(np.ascontiguousarray(nhwc(y)), fused_activation_function)


def _softmax(x, beta):
    y = x.astype(np.float32) * np.float32(beta)
    y -= y.max(axis=-1, keepdims=True)
    np.exp(y, out=y)
    y /= y.sum(axis=-1, keepdims=True)
    return y


@kernel("SOFTMAX", since=1, domain=DOMAIN)
def softmax(input, *, beta=1.0, quant=None):
    if quant is not None and is_quantized(input, quant_of(quant, 0)):
        return via_float(quant, lambda x: _softmax(x, beta), input)
    return _softmax(input, beta)


@kernel("LOG_SOFTMAX", since=1, domain=DOMAIN)
def log_softmax(input, *, quant=None):
    def run(x):
        y = x.astype(np.float32)
        y = y - y.max(axis=-1, keepdims=True)
        return y - np.log(np.exp(y).sum(axis=-1, keepdims=True))

    return via_float(quant, run, input) if quant is not None else run(input)


def _resize_nhwc(x, size, mode, align_corners, half_pixel_centers):
    size = [int(v) for v in np.asarray(size).reshape(-1)]
    if x.ndim != 4 or len(size) != 2:
        raise ValueError("resizing needs a 4-D NHWC input and a size of two values")
    budget.check([x.shape[0], *size, x.shape[3]], np.float32, "resized output")
    if align_corners:
        ctm = "align_corners"
    elif half_pixel_centers:
        ctm = "half_pixel"
    else:
        ctm = "asymmetric"
    return _resize(
        x,
        None,
        size,
        None,
        [1, 2],
        mode=mode,
        coordinate_transformation_mode=ctm,
        nearest_mode="floor",
    )


def _integer_taps(out_size, in_size, align_corners, half_pixel_centers):
    # ComputeInterpolationValuesInteger: positions in 1/1024ths; C division truncates, and
    # a half-pixel position left of 0 keeps its negative weight (TFLite's own extrapolation)
    if align_corners and out_size > 1:
        scale = ((1 << 10) * (in_size - 1) + (out_size - 1) // 2) // (out_size - 1)
    else:
        scale = ((1 << 10) * in_size + out_size // 2) // out_size
    pos = np.arange(out_size, dtype=np.int64) * scale
    if half_pixel_centers:
        pos += scale // 2 - (1 << 9)
    low = np.maximum(np.trunc(pos / (1 << 10)).astype(np.int64), 0)
    high = np.minimum((pos + (1 << 10) - 1) // (1 << 10), in_size - 1)
    return low, high, pos - (low << 10)


def _resize_bilinear_integer(x, size, align_corners, half_pixel_centers):
    # ResizeBilinearInteger: weights in 1/1024ths per axis, the 2^20 sum rounded once,
    # halves away from zero
    h, w = size
    y0, y1, wy = _integer_taps(h, x.shape[1], align_corners, half_pixel_centers)
    x0, x1, wx = _integer_taps(w, x.shape[2], align_corners, half_pixel_centers)
    v = x.astype(np.int64)
    top, bottom = v[:, y0], v[:, y1]
    wy, wx = wy[:, None, None], wx[:, None]
    total = (top[:, :, x0] * (1024 - wx) + top[:, :, x1] * wx) * (1024 - wy)
    total += (bottom[:, :, x0] * (1024 - wx) + bottom[:, :, x1] * wx) * wy
    rounded = np.where(total >= 0, (total + (1 << 19)) >> 20, -((-total + (1 << 19)) >> 20))
    return rounded.astype(x.dtype)


@kernel("RESIZE_BILINEAR", since=1, domain=DOMAIN)
def resize_bilinear(input, size, *, align_corners=0, half_pixel_centers=0, quant=None):
    if quant is not None and is_quantized(input, quant_of(quant, 0)):
        hw = [int(v) for v in np.asarray(size).reshape(-1)]
        if input.ndim != 4 or len(hw) != 2:
            raise ValueError("resizing needs a 4-D NHWC input and a size of two values")
        budget.check([input.shape[0], *hw, input.shape[3]], np.int64, "resized output")
        return _resize_bilinear_integer(input, hw, align_corners, half_pixel_centers)
    x = input.astype(np.float32, copy=False)
    return _resize_nhwc(x, size, "linear", align_corners, half_pixel_centers)


def _nearest_index(out_size, in_size, align_corners, half_pixel_centers):
    # as TFLite's reference kernel, in float32: the source pixel of each output pixel
    if align_corners and out_size > 1:
        scale = np.float32(in_size - 1) / np.float32(out_size - 1)
    else:
        scale = np.float32(in_size) / np.float32(out_size)
    pos = np.arange(out_size, dtype=np.float32)
    if half_pixel_centers:
        pos = pos + np.float32(0.5)
    src = pos * scale
    src = round_half_away(src) if align_corners else np.floor(src)
    return np.clip(src.astype(np.int64), 0, in_size - 1)


@kernel("RESIZE_NEAREST_NEIGHBOR", since=1, domain=DOMAIN)
def resize_nearest_neighbor(input, size, *, align_corners=0, half_pixel_centers=0, quant=None):
    # picks elements: exact on quantized tensors too (TFLite keeps the scale)
    h, w = [int(v) for v in np.asarray(size).reshape(-1)]
    budget.check([input.shape[0], h, w, input.shape[3]], input.dtype, "resized output")
    rows = _nearest_index(h, input.shape[1], align_corners, half_pixel_centers)
    cols = _nearest_index(w, input.shape[2], align_corners, half_pixel_centers)
    return input[:, rows][:, :, cols]


@kernel("DEPTH_TO_SPACE", since=1, domain=DOMAIN)
def depth_to_space(input, *, block_size=2, quant=None):
    n, h, w, c = input.shape
    b = block_size
    if b < 1 or c % (b * b):
        raise ValueError(f"depth {c} is not a multiple of block_size^2 ({b * b})")
    y = input.reshape(n, h, w, b, b, c // (b * b)).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, h * b, w * b, c // (b * b))


@kernel("SPACE_TO_DEPTH", since=1, domain=DOMAIN)
def space_to_depth(input, *, block_size=2, quant=None):
    n, h, w, c = input.shape
    b = block_size
    if b < 1 or h % b or w % b:
        raise ValueError(f"height and width must be multiples of block_size {b}")
    y = input.reshape(n, h // b, b, w // b, b, c).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, h // b, w // b, b * b * c)
