"""Convolutions: im2col over strided views + one batched matmul; depthwise as tap sums."""

from __future__ import annotations

import itertools
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edgerun.runtime.registry import kernel


def window_pads(in_shape, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode=0):
    """(pads_begin, pads_end, out_shape) of a sliding window over ``in_shape``."""
    n = len(in_shape)
    strides = list(strides or [1] * n)
    dilations = list(dilations or [1] * n)
    extent = [(k - 1) * d + 1 for k, d in zip(kernel_shape, dilations, strict=True)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-i // s) for i, s in zip(in_shape, strides, strict=True)]
        total = [
            max(0, (o - 1) * s + e - i)
            for o, s, e, i in zip(out, strides, extent, in_shape, strict=True)
        ]
        small, big = [t // 2 for t in total], [t - t // 2 for t in total]
        begin, end = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        return begin, end, out
    if auto_pad == "VALID":
        begin, end = [0] * n, [0] * n
    elif auto_pad in ("NOTSET", ""):
        pads = list(pads or [0] * (2 * n))
        begin, end = pads[:n], pads[n:]
    else:
        raise ValueError(f"unknown auto_pad {auto_pad!r}")
    out = []
    for i, b, e_, ext, s in zip(in_shape, begin, end, extent, strides, strict=True):
        span = i + b + e_ - ext
        if ceil_mode:
            o = -(-span // s) + 1
            if (o - 1) * s >= i + b:  # the last window must start inside input or left pad
                o -= 1
        else:
            o = span // s + 1
        out.append(max(o, 0))
    return begin, end, out


def _compute_dtype(dtype):
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float32)


def _pad(x, begin, end, value=0):
    if not any(begin) and not any(end):
        return x
    width = [(0, 0), (0, 0), *zip(begin, end, strict=True)]
    if min(min(begin), min(end)) < 0:  # negative pads crop
        crop = tuple(
            slice(None) if i < 2 else slice(max(0, -begin[i - 2]), x.shape[i] - max(0, -end[i - 2]))
            for i in range(x.ndim)
        )
        x = x[crop]
        width = [(max(0, a), max(0, b)) for a, b in width]
    return np.pad(x, width, constant_values=value)


def _windows(xp, kernel_shape, strides, dilations, out_shape):
    """(N, C, *out, *kernel) view of the padded input's sliding windows."""
    n = len(kernel_shape)
    extent = [(k - 1) * d + 1 for k, d in zip(kernel_shape, dilations, strict=True)]
    axes = tuple(range(2, 2 + n))
    view = sliding_window_view(xp, extent, axis=axes)
    index = (
        slice(None),
        slice(None),
        *(slice(0, (o - 1) * s + 1, s) for o, s in zip(out_shape, strides, strict=True)),
        *(slice(None, None, d) for d in dilations),
    )
    return view[index]


def _conv(x, w, b, auto_pad, dilations, group, kernel_shape, pads, strides):
    """Float convolution of any rank; ``x`` and ``w`` already in the compute dtype."""
    n_sp = x.ndim - 2
    kernel_shape = list(kernel_shape or w.shape[2:])
    strides = list(strides or [1] * n_sp)
    dilations = list(dilations or [1] * n_sp)
    begin, end, out_shape = window_pads(
        x.shape[2:], kernel_shape, strides, dilations, pads, auto_pad
    )
    c = x.shape[1]
    m = w.shape[0]
    if c != w.shape[1] * group or m % group:
        raise ValueError(f"X {x.shape} and W {w.shape} do not match group={group}")
    xp = _pad(x, begin, end)
    if group == c and w.shape[1] == 1 and group > 1:
        y = _depthwise(xp, w, kernel_shape, strides, dilations, out_shape)
    else:
        y = _im2col_matmul(xp, w, group, kernel_shape, strides, dilations, out_shape)
    if b is not None:
        y += b.astype(y.dtype, copy=False).reshape((m,) + (1,) * n_sp)
    return y


def _im2col_matmul(xp, w, group, kernel_shape, strides, dilations, out_shape):
    n, c = xp.shape[:2]
    m = w.shape[0]
    n_sp = len(kernel_shape)
    cg, mg = c // group, m // group
    k = math.prod(kernel_shape)
    o = math.prod(out_shape)
    pointwise = all(v == 1 for v in (*kernel_shape, *strides)) and list(xp.shape[2:]) == list(
        out_shape
    )
    if pointwise:
        cols = xp.reshape(n, group, cg, o)
    else:
        win = _windows(xp, kernel_shape, strides, dilations, out_shape)
        win = win.reshape(n, group, cg, *out_shape, *kernel_shape)
        # (N, G, Cg, *out, *k) -> (N, G, Cg, *k, *out): the one im2col copy
        order = (0, 1, 2, *range(3 + n_sp, 3 + 2 * n_sp), *range(3, 3 + n_sp))
        cols = win.transpose(order).reshape(n, group, cg * k, o)
    wg = w.reshape(group, mg, cg * k)
    y = np.matmul(wg, cols)  # (N, G, Mg, O): one BLAS call per (image, group)
    return y.reshape(n, m, *out_shape)


def _depthwise(xp, w, kernel_shape, strides, dilations, out_shape):
    n, c = xp.shape[:2]
    mult = w.shape[0] // c
    wr = w.reshape(c, mult, -1)
    y = np.zeros((n, c, mult, *out_shape), dtype=xp.dtype)
    tmp = np.empty_like(y)
    tail = (1,) * len(out_shape)
    for t, tap in enumerate(itertools.product(*(range(k) for k in kernel_shape))):
        sl = tuple(
            slice(i * d, i * d + (o - 1) * s + 1, s)
            for i, d, o, s in zip(tap, dilations, out_shape, strides, strict=True)
        )
        src = xp[(slice(None), slice(None), *sl)][:, :, None]
        np.multiply(src, wr[:, :, t].reshape(c, mult, *tail), out=tmp)
        y += tmp
    return y.reshape(n, c * mult, *out_shape)


@kernel("Conv", since=1)
def conv_1(
    X,
    W,
    B=None,
    *,
    auto_pad="NOTSET",
    dilations=None,
    group=1,
    kernel_shape=None,
    pads=None,
    strides=None,
):
    dt = _compute_dtype(X.dtype)
    x, w = X.astype(dt, copy=False), W.astype(dt, copy=False)
    y = _conv(x, w, B, auto_pad, dilations, group, kernel_shape, pads, strides)
    return y.astype(X.dtype, copy=False)


def _integer_conv(x, x_zero, w, w_zero, auto_pad, dilations, group, kernel_shape, pads, strides):
    """Exact int32 convolution of (x - x_zero) and (w - w_zero) through float BLAS."""
    k = w[0].size
    # products are < 2^16 in magnitude, so float32 sums stay exact while k * 2^16 < 2^24
    dt = np.float32 if k * 255 * 255 < 1 << 24 else np.float64
    xs = x.astype(dt) - (0 if x_zero is None else np.asarray(x_zero).astype(dt).reshape(-1)[0])
    ws = w.astype(dt)
    if w_zero is not None:
        wz = np.asarray(w_zero).astype(dt).reshape(-1)
        ws -= wz.reshape((-1,) + (1,) * (w.ndim - 1)) if wz.size > 1 else wz[0]
    # padding the shifted input with 0 is padding the raw input with its zero point
    y = _conv(xs, ws, None, auto_pad, dilations, group, kernel_shape, pads, strides)
    return np.rint(y).astype(np.int32)


@kernel("ConvInteger", since=10)
def conv_integer_10(
    x,
    w,
    x_zero_point=None,
    w_zero_point=None,
    *,
    auto_pad="NOTSET",
    dilations=None,
    group=1,
    kernel_shape=None,
    pads=None,
    strides=None,
):
    return _integer_conv(
        x, x_zero_point, w, w_zero_point, auto_pad, dilations, group, kernel_shape, pads, strides
    )


@kernel("QLinearConv", since=10)
def qlinear_conv_10(
    x,
    x_scale,
    x_zero_point,
    w,
    w_scale,
    w_zero_point,
    y_scale,
    y_zero_point,
    B=None,
    *,
    auto_pad="NOTSET",
    dilations=None,
    group=1,
    kernel_shape=None,
    pads=None,
    strides=None,
):
    acc = _integer_conv(
        x, x_zero_point, w, w_zero_point, auto_pad, dilations, group, kernel_shape, pads, strides
    )
    if B is not None:
        acc += B.astype(np.int32).reshape((-1,) + (1,) * (acc.ndim - 2))
    # onnxruntime's requantization: float32 multiplier, round half to even, saturate
    f32 = np.float32
    scale = np.asarray(x_scale, f32).reshape(-1)[0] * np.asarray(w_scale, f32).reshape(-1)
    scale = (scale / np.asarray(y_scale, f32).reshape(-1)[0]).astype(f32)
    scale = scale.reshape((-1,) + (1,) * (acc.ndim - 2)) if scale.size > 1 else scale[0]
    out_type = np.dtype(y_zero_point.dtype) if y_zero_point is not None else np.dtype(np.uint8)
    zero = 0 if y_zero_point is None else int(np.asarray(y_zero_point).reshape(-1)[0])
    y = np.rint(acc.astype(f32) * scale) + zero
    info = np.iinfo(out_type)
    return np.clip(y, info.min, info.max).astype(out_type)


def _transpose_pads(
    in_sp, kernel_shape, strides, dilations, output_padding, output_shape, pads, auto_pad
):
    n = len(in_sp)
    full = [
        s * (i - 1) + op + (k - 1) * d + 1
        for i, k, s, d, op in zip(
            in_sp, kernel_shape, strides, dilations, output_padding, strict=True
        )
    ]
    if output_shape is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        output_shape = [i * s for i, s in zip(in_sp, strides, strict=True)]
    if output_shape is None:
        pads = list(pads or [0] * (2 * n))
        return full, pads[:n], pads[n:]
    output_shape = list(output_shape)[-n:]
    begin, end = [], []
    for f, o in zip(full, output_shape, strict=True):
        total = f - o
        if total < 0:  # asked for more than the full result: zeros at the end
            begin.append(0)
            end.append(total)
        elif auto_pad == "SAME_UPPER":
            begin.append(total // 2)
            end.append(total - total // 2)
        else:
            begin.append(total - total // 2)
            end.append(total // 2)
    return full, begin, end


@kernel("ConvTranspose", since=1)
def conv_transpose_1(
    X,
    W,
    B=None,
    *,
    auto_pad="NOTSET",
    dilations=None,
    group=1,
    kernel_shape=None,
    output_padding=None,
    output_shape=None,
    pads=None,
    strides=None,
):
    dt = _compute_dtype(X.dtype)
    x, w = X.astype(dt, copy=False), W.astype(dt, copy=False)
    n, c = x.shape[:2]
    in_sp = list(x.shape[2:])
    n_sp = len(in_sp)
    kernel_shape = list(w.shape[2:])
    strides = list(strides or [1] * n_sp)
    dilations = list(dilations or [1] * n_sp)
    output_padding = list(output_padding or [0] * n_sp)
    full, begin, end = _transpose_pads(
        in_sp, kernel_shape, strides, dilations, output_padding, output_shape, pads, auto_pad
    )
    cg, mg = c // group, w.shape[1]
    m = mg * group
    # col = W^T x per group, in one batched matmul: (N, G, Mg*K, I)
    wg = w.reshape(group, cg, mg * math.prod(kernel_shape)).transpose(0, 2, 1)
    cols = np.matmul(wg, x.reshape(n, group, cg, -1))
    cols = cols.reshape(n, m, *kernel_shape, *in_sp)
    # col2im: scatter-add each kernel tap onto the output at its stride
    buf = np.zeros((n, m, *(max(f, f - e) for f, e in zip(full, end, strict=True))), dtype=dt)
    for tap in itertools.product(*(range(k) for k in kernel_shape)):
        sl = tuple(
            slice(t * d, t * d + (i - 1) * s + 1, s)
            for t, d, i, s in zip(tap, dilations, in_sp, strides, strict=True)
        )
        buf[(slice(None), slice(None), *sl)] += cols[(slice(None), slice(None), *tap)]
    crop = tuple(slice(b, f - max(e, 0)) for b, f, e in zip(begin, buf.shape[2:], end, strict=True))
    y = buf[(slice(None), slice(None), *crop)]
    if any(b < 0 for b in begin):
        y = np.pad(y, [(0, 0), (0, 0), *((max(0, -b), 0) for b in begin)])
    if B is not None:
        y = y + B.astype(dt).reshape((m,) + (1,) * n_sp)
    return np.ascontiguousarray(y).astype(X.dtype, copy=False)


def _bilinear_gather(x, coords):
    """Sample x (N, C, *S) at float positions coords (N, D, *P) -> (N, C, *P); zero outside."""
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    flat = x.reshape(n, c, -1)
    p_shape = coords.shape[2:]
    floor = np.floor(coords)
    frac = coords - floor
    floor = floor.astype(np.int64)
    out = np.zeros((n, c, math.prod(p_shape)), dtype=x.dtype)
    strides = [math.prod(spatial[i + 1 :]) for i in range(len(spatial))]
    batch = np.arange(n)[:, None]
    for corner in itertools.product((0, 1), repeat=len(spatial)):
        weight = np.ones((n, *p_shape), dtype=x.dtype)
        index = np.zeros((n, *p_shape), dtype=np.int64)
        valid = np.ones((n, *p_shape), dtype=bool)
        for dim, (bit, size, stride) in enumerate(zip(corner, spatial, strides, strict=True)):
            pos = floor[:, dim] + bit
            weight *= frac[:, dim] if bit else 1 - frac[:, dim]
            valid &= (pos >= 0) & (pos < size)
            index += np.clip(pos, 0, size - 1) * stride
        weight *= valid
        vals = flat[batch, :, index.reshape(n, -1)]  # (N, P, C)
        out += vals.transpose(0, 2, 1) * weight.reshape(n, 1, -1)
    return out.reshape(n, c, *p_shape)


@kernel("DeformConv", since=19)
def deform_conv_19(
    X,
    W,
    offset,
    B=None,
    mask=None,
    *,
    dilations=None,
    group=1,
    kernel_shape=None,
    offset_group=1,
    pads=None,
    strides=None,
):
    dt = _compute_dtype(X.dtype)
    x, w = X.astype(dt, copy=False), W.astype(dt, copy=False)
    n, c = x.shape[:2]
    n_sp = x.ndim - 2
    kernel_shape = list(w.shape[2:])
    strides = list(strides or [1] * n_sp)
    dilations = list(dilations or [1] * n_sp)
    pads = list(pads or [0] * (2 * n_sp))
    out_shape = list(offset.shape[2:])
    k = math.prod(kernel_shape)
    og = offset_group
    if offset.shape[1] != og * k * n_sp:
        raise ValueError(f"offset {offset.shape} does not match offset_group and kernel")
    off = offset.astype(dt).reshape(n, og, k, n_sp, *out_shape)
    # sampling position of each (tap, output position) before offsets: (D, K, *out)
    taps = np.array(list(itertools.product(*(range(kk) for kk in kernel_shape))), dtype=dt)
    grids = np.meshgrid(*(np.arange(o, dtype=dt) for o in out_shape), indexing="ij")
    base = np.stack(
        [
            taps[:, d].reshape(-1, *([1] * n_sp)) * dilations[d]
            + grids[d][None] * strides[d]
            - pads[d]
            for d in range(n_sp)
        ]
    )
    coords = base[None, None] + off.transpose(0, 1, 3, 2, *range(4, 4 + n_sp))  # N,og,D,K,*out
    cols = _bilinear_gather(
        x.reshape(n * og, c // og, *x.shape[2:]), coords.reshape(n * og, n_sp, k, *out_shape)
    )  # (N*og, C/og, K, *out)
    if mask is not None:
        cols = cols * mask.astype(dt).reshape(n * og, 1, k, *out_shape)
    cols = cols.reshape(n, group, (c // group) * k, -1)
    y = np.matmul(w.reshape(group, w.shape[0] // group, -1), cols)
    y = y.reshape(n, w.shape[0], *out_shape)
    if B is not None:
        y += B.astype(dt).reshape((-1,) + (1,) * n_sp)
    return y.astype(X.dtype, copy=False)


@kernel("CausalConvWithState", since=27)
def causal_conv_with_state_27(input, weight, bias=None, past_state=None, *, activation="none"):
    if activation not in ("none", "silu", "swish"):
        raise ValueError(f"unsupported activation {activation!r}")
    b, c, _ = input.shape
    k = weight.shape[2]
    if past_state is None:
        past_state = np.zeros((b, c, k - 1), dtype=input.dtype)
    padded = np.concatenate([past_state.astype(input.dtype, copy=False), input], axis=2)
    dt = _compute_dtype(input.dtype)
    xp = padded.astype(dt, copy=False)
    y = _depthwise(xp, weight.astype(dt, copy=False), [k], [1], [1], [input.shape[2]])
    if bias is not None:
        y += bias.astype(dt).reshape(-1, 1)
    if activation != "none":
        y = y / (1 + np.exp(-y))
    present = np.ascontiguousarray(padded[:, :, padded.shape[2] - (k - 1) :])
    return y.astype(input.dtype, copy=False), present
