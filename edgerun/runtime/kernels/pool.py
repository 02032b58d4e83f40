"""Pooling: each kernel tap is one strided slice, folded with np.maximum / np.add (out=)."""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np

from edgerun.runtime.kernels.conv import (
    _channels_first,
    _channels_last,
    _is_channels_last,
    window_pads,
)
from edgerun.runtime.registry import kernel


def _geometry(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode):
    n_sp = x.ndim - 2
    if kernel_shape is None or len(kernel_shape) != n_sp:
        raise ValueError(f"kernel_shape {kernel_shape} does not fit input rank {x.ndim}")
    strides = list(strides or [1] * n_sp)
    dilations = list(dilations or [1] * n_sp)
    begin, end, out = window_pads(
        x.shape[2:], kernel_shape, strides, dilations, pads, auto_pad, ceil_mode
    )
    return strides, dilations, begin, end, out


def _padded(x, kernel_shape, strides, dilations, begin, out, value):
    """x padded with ``value`` so that every tap's strided slice of ``out`` fits."""
    width = [(0, 0), (0, 0)]
    for i, k, s, d, b, o in zip(
        x.shape[2:], kernel_shape, strides, dilations, begin, out, strict=True
    ):
        width.append((b, max(0, (o - 1) * s + (k - 1) * d + 1 - i - b)))
    if not any(a or b for a, b in width):
        return x
    return np.pad(x, width, constant_values=value)


def _taps(kernel_shape, strides, dilations, out):
    """(tap, slices) for each kernel position: its strided slice of the padded input."""
    for tap in itertools.product(*(range(k) for k in kernel_shape)):
        sl = tuple(
            slice(t * d, t * d + (o - 1) * s + 1, s)
            for t, d, o, s in zip(tap, dilations, out, strides, strict=True)
        )
        yield tap, (slice(None), slice(None), *sl)


def _lowest(dtype):
    if np.issubdtype(dtype, np.integer):
        return np.iinfo(dtype).min
    return -np.inf


def _max_pool(
    x,
    kernel_shape,
    strides,
    dilations,
    pads,
    auto_pad,
    ceil_mode,
    storage_order,
    want_indices,
):
    strides, dilations, begin, _, out = _geometry(
        x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode
    )
    if not want_indices:
        return _separable(
            x, np.maximum, _lowest(x.dtype), kernel_shape, strides, dilations, begin, out
        )
    xp = _padded(x, kernel_shape, strides, dilations, begin, out, _lowest(x.dtype))
    taps = list(_taps(kernel_shape, strides, dilations, out))
    y = xp[taps[0][1]].copy()
    # track the winning tap per output (first maximum wins), turn it into positions at the end
    best = np.zeros(y.shape, dtype=np.int32)
    better = np.empty(y.shape, dtype=bool)
    for t, (_, sl) in enumerate(taps[1:], start=1):
        v = xp[sl]
        np.greater(v, y, out=better)
        np.copyto(y, v, where=better)
        np.copyto(best, t, where=better)
    in_sp = x.shape[2:]
    if storage_order:
        place = [math.prod(in_sp[:d]) for d in range(len(in_sp))]
    else:
        place = [math.prod(in_sp[d + 1 :]) for d in range(len(in_sp))]
    tap_offset = np.array(
        [sum(t * d * p for t, d, p in zip(tap, dilations, place, strict=True)) for tap, _ in taps],
        dtype=np.int64,
    )
    window_start = sum(
        ((np.arange(o) * s - b) * p).reshape((-1,) + (1,) * (len(out) - 1 - i))
        for i, (o, s, b, p) in enumerate(zip(out, strides, begin, place, strict=True))
    )
    n, c = x.shape[:2]
    base = (np.arange(n * c, dtype=np.int64) * math.prod(in_sp)).reshape(n, c, *([1] * len(out)))
    return y, tap_offset[best] + window_start + base


def _separable(x, combine, empty, kernel_shape, strides, dilations, begin, out):
    # the max (or sum) over a box is the max (sum) over each axis in turn: k taps per axis
    # instead of prod(k), and each tap is clipped to the outputs that read the input (no
    # padded copy: a tap off the input would add the padding, -inf to a max or 0 to a sum).
    # A channels-last input is pooled as such: its strided taps then step over whole pixels
    # instead of single values (4-7x faster), and its output keeps its layout.
    if x.ndim > 2 and _is_channels_last(x):
        axes = range(1, x.ndim - 1)
        y = _separable_axes(
            _channels_last(x), axes, combine, empty, kernel_shape, strides, dilations, begin, out
        )
        return _channels_first(y)
    axes = range(2, x.ndim)
    return _separable_axes(x, axes, combine, empty, kernel_shape, strides, dilations, begin, out)


def _separable_axes(x, axes, combine, empty, kernel_shape, strides, dilations, begin, out):
    if all(o == 1 and d == 1 for o, d in zip(out, dilations, strict=True)):
        # one window (a global pool, as classifiers end): one reduction over its span
        spans = tuple(
            slice(max(0, -b), max(0, min(x.shape[axis], k - b)))
            for axis, k, b in zip(axes, kernel_shape, begin, strict=True)
        )
        pre = (slice(None),) * axes[0]
        window = x[(*pre, *spans)]
        if not window.size:
            return np.full((*x.shape[: axes[0]], *out, *x.shape[axes[-1] + 1 :]), empty, x.dtype)
        return combine.reduce(window, axis=tuple(axes), keepdims=True)
    y = x
    for axis, k, s, d, b, o in zip(axes, kernel_shape, strides, dilations, begin, out, strict=True):
        pre = (slice(None),) * axis
        taps = []  # (first output, end output, input slice) of each tap that reads the input
        for i in range(k):
            lo = max(0, -((i * d - b) // s))
            hi = min(o, (y.shape[axis] - 1 - i * d + b) // s + 1)
            if lo < hi:
                start = lo * s + i * d - b
                taps.append((lo, hi, y[(*pre, slice(start, start + (hi - lo - 1) * s + 1, s))]))
        taps.sort(key=lambda t: t[0] != 0 or t[1] != o)  # taps that cover every output first
        res = np.empty((*y.shape[:axis], o, *y.shape[axis + 1 :]), dtype=y.dtype)
        whole = [t[2] for t in taps if (t[0], t[1]) == (0, o)]
        if len(whole) >= 2:  # the first pass combines two taps instead of a copy
            combine(whole[0], whole[1], out=res)
        elif whole:
            res[...] = whole[0]
        else:
            res.fill(empty)
        for lo, hi, src in taps[min(len(whole), 2) :]:
            dst = res[(*pre, slice(lo, hi))]
            combine(dst, src, out=dst)
        y = res
    return y


@kernel("MaxPool", since=1)
def max_pool_1(X, *, auto_pad="NOTSET", kernel_shape=None, pads=None, strides=None):
    return _max_pool(X, kernel_shape, strides, None, pads, auto_pad, 0, 0, False)


@kernel("MaxPool", since=8, outputs=True)
def max_pool_8(
    X, *, auto_pad="NOTSET", kernel_shape=None, pads=None, storage_order=0, strides=None, outputs=()
):
    indices = _wanted(outputs, 1)
    return _max_pool(X, kernel_shape, strides, None, pads, auto_pad, 0, storage_order, indices)


@kernel("MaxPool", since=10, outputs=True)
def max_pool_10(
    X,
    *,
    auto_pad="NOTSET",
    ceil_mode=0,
    dilations=None,
    kernel_shape=None,
    pads=None,
    storage_order=0,
    strides=None,
    outputs=(),
):
    indices = _wanted(outputs, 1)
    return _max_pool(
        X, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, storage_order, indices
    )


def _wanted(outputs, i):
    return len(outputs) > i and outputs[i]


def _window_count(in_sp, kernel_shape, strides, dilations, begin, end, out, include_pad):
    """How many taps of each window fall inside the input (or input + explicit pads)."""
    count = np.ones((), dtype=np.int64)
    for i, k, s, d, b, e, o in zip(
        in_sp, kernel_shape, strides, dilations, begin, end, out, strict=True
    ):
        pos = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d - b
        lo, hi = (-b, i + e) if include_pad else (0, i)
        per_axis = ((pos >= lo) & (pos < hi)).sum(axis=1)
        count = count[..., None] * per_axis
    return count


def _sum_pool(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, fn=None):
    strides, dilations, begin, end, out = _geometry(
        x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode
    )
    xf = x if fn is None else fn(x)
    y = _separable(xf, np.add, 0, kernel_shape, strides, dilations, begin, out)
    return y, (strides, dilations, begin, end, out)


def _average_pool(
    x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, count_include_pad
):
    dt = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float32)
    y, (strides, dilations, begin, end, out) = _sum_pool(
        x.astype(dt, copy=False), kernel_shape, strides, dilations, pads, auto_pad, ceil_mode
    )
    geometry = (x.shape[2:], kernel_shape, strides, dilations, begin, end, out)
    divisor = _window_divisor(*(tuple(g) for g in geometry), bool(count_include_pad), dt)
    y /= divisor  # over the spatial axes, whatever y's layout
    return y.astype(x.dtype, copy=False)


@functools.lru_cache(maxsize=256)
def _window_divisor(in_sp, kernel_shape, strides, dilations, begin, end, out, include_pad, dt):
    """max(1, window count) in ``dt``: one number where every window counts the same (none
    meets the padding), else one per output; worked out once per geometry."""
    count = np.maximum(
        _window_count(in_sp, kernel_shape, strides, dilations, begin, end, out, include_pad), 1
    )
    if count.size and count.min() == count.max():
        return dt.type(count.flat[0])
    divisor = count.astype(dt)
    divisor.flags.writeable = False
    return divisor


@kernel("AveragePool", since=1)
def average_pool_1(X, *, auto_pad="NOTSET", kernel_shape=None, pads=None, strides=None):
    return _average_pool(X, kernel_shape, strides, None, pads, auto_pad, 0, 0)


@kernel("AveragePool", since=7)
def average_pool_7(
    X, *, auto_pad="NOTSET", count_include_pad=0, kernel_shape=None, pads=None, strides=None
):
    return _average_pool(X, kernel_shape, strides, None, pads, auto_pad, 0, count_include_pad)


@kernel("AveragePool", since=10)
def average_pool_10(
    X,
    *,
    auto_pad="NOTSET",
    ceil_mode=0,
    count_include_pad=0,
    kernel_shape=None,
    pads=None,
    strides=None,
):
    return _average_pool(
        X, kernel_shape, strides, None, pads, auto_pad, ceil_mode, count_include_pad
    )


@kernel("AveragePool", since=19)
def average_pool_19(
    X,
    *,
    auto_pad="NOTSET",
    ceil_mode=0,
    count_include_pad=0,
    dilations=None,
    kernel_shape=None,
    pads=None,
    strides=None,
):
    return _average_pool(
        X, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, count_include_pad
    )


def _lp_pool(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, p):
    dt = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float32)
    p = dt.type(p)
    y, _ = _sum_pool(
        x.astype(dt, copy=False),
        kernel_shape,
        strides,
        dilations,
        pads,
        auto_pad,
        ceil_mode,
        fn=lambda v: np.abs(v) ** p,
    )
    return (y ** (1 / p)).astype(x.dtype, copy=False)


@kernel("LpPool", since=1)
def lp_pool_1(X, *, auto_pad="NOTSET", kernel_shape=None, p=2.0, pads=None, strides=None):
    return _lp_pool(X, kernel_shape, strides, None, pads, auto_pad, 0, p)


@kernel("LpPool", since=2)
def lp_pool_2(X, *, auto_pad="NOTSET", kernel_shape=None, p=2, pads=None, strides=None):
    return _lp_pool(X, kernel_shape, strides, None, pads, auto_pad, 0, p)


@kernel("LpPool", since=18)
def lp_pool_18(
    X,
    *,
    auto_pad="NOTSET",
    ceil_mode=0,
    dilations=None,
    kernel_shape=None,
    p=2,
    pads=None,
    strides=None,
):
    return _lp_pool(X, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, p)


def _spatial_axes(x):
    return tuple(range(2, x.ndim))


@kernel("GlobalAveragePool", since=1)
def global_average_pool_1(X):
    dt = X.dtype if X.dtype in (np.float32, np.float64) else np.dtype(np.float32)
    return X.mean(axis=_spatial_axes(X), keepdims=True, dtype=dt).astype(X.dtype, copy=False)


@kernel("GlobalMaxPool", since=1)
def global_max_pool_1(X):
    return X.max(axis=_spatial_axes(X), keepdims=True)


def _global_lp_pool(x, p):
    dt = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float32)
    p = dt.type(p)
    s = (np.abs(x.astype(dt, copy=False)) ** p).sum(axis=_spatial_axes(x), keepdims=True)
    return (s ** (1 / p)).astype(x.dtype, copy=False)


@kernel("GlobalLpPool", since=1)
def global_lp_pool_1(X, *, p=2.0):
    return _global_lp_pool(X, p)


@kernel("GlobalLpPool", since=2)
def global_lp_pool_2(X, *, p=2):
    return _global_lp_pool(X, p)


@kernel("MaxUnpool", since=9)
def max_unpool_9(
    X,
    I,  # noqa: E741 (the spec's input name)
    output_shape=None,
    *,
    kernel_shape=None,
    pads=None,
    strides=None,
):
    n_sp = X.ndim - 2
    if kernel_shape is None:
        raise ValueError("MaxUnpool needs kernel_shape")
    strides = list(strides or [1] * n_sp)
    pads = list(pads or [0] * (2 * n_sp))
    inferred = [
        (i - 1) * s - (pads[d] + pads[d + n_sp]) + k
        for d, (i, s, k) in enumerate(zip(X.shape[2:], strides, kernel_shape, strict=True))
    ]
    inferred = [*X.shape[:2], *inferred]
    flat = np.zeros(math.prod(inferred), dtype=X.dtype)
    flat[I.reshape(-1)] = X.reshape(-1)
    y = flat.reshape(inferred)
    if output_shape is None:
        return y
    # as onnx's reference: indices address the inferred shape, placed at the output's origin
    res = np.zeros([int(v) for v in output_shape], dtype=X.dtype)
    res[tuple(slice(0, min(a, b)) for a, b in zip(inferred, res.shape, strict=True))] = y[
        tuple(slice(0, min(a, b)) for a, b in zip(inferred, res.shape, strict=True))
    ]
    return res


def _roi_axis(start, bin_size, pooled, grid, size):
    """Per-axis bilinear taps of RoiAlign's sampling points: (low, high, w_low, w_high)."""
    pos = (
        start
        + np.arange(pooled)[:, None] * bin_size
        + (np.arange(grid)[None, :] + 0.5) * (bin_size / grid)
    )
    outside = (pos < -1.0) | (pos > size)
    pos = np.maximum(pos, 0.0)
    low = pos.astype(np.int64)
    edge = low >= size - 1
    low = np.where(edge, size - 1, low)
    high = np.where(edge, size - 1, low + 1)
    pos = np.where(edge, low, pos)
    frac = pos - low
    w_low, w_high = 1.0 - frac, frac
    w_low[outside] = 0
    w_high[outside] = 0
    return low, high, w_low, w_high


def _roi_align(
    X,
    rois,
    batch_indices,
    half_pixel,
    mode,
    output_height,
    output_width,
    sampling_ratio,
    spatial_scale,
):
    n_rois = rois.shape[0]
    _, c, h, w = X.shape
    y = np.zeros((n_rois, c, output_height, output_width), dtype=X.dtype)
    offset = 0.5 if half_pixel else 0.0
    for r in range(n_rois):  # each ROI has its own sampling grid
        x1, y1, x2, y2 = (float(v) * spatial_scale - offset for v in rois[r])
        roi_w, roi_h = x2 - x1, y2 - y1
        if not half_pixel:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / output_height, roi_w / output_width
        gh = int(sampling_ratio) if sampling_ratio > 0 else math.ceil(roi_h / output_height)
        gw = int(sampling_ratio) if sampling_ratio > 0 else math.ceil(roi_w / output_width)
        if gh <= 0 or gw <= 0:
            continue
        yl, yh, wyl, wyh = _roi_axis(y1, bin_h, output_height, gh, h)
        xl, xh, wxl, wxh = _roi_axis(x1, bin_w, output_width, gw, w)
        img = X[int(batch_indices[r])].astype(np.float64)
        # corners as (C, PH, GH, PW, GW)
        ylo, yhi = img[:, yl][..., xl], img[:, yl][..., xh]
        yhl, yhh = img[:, yh][..., xl], img[:, yh][..., xh]
        a, b = wyl[:, :, None, None], wyh[:, :, None, None]
        terms = (ylo * (a * wxl), yhi * (a * wxh), yhl * (b * wxl), yhh * (b * wxh))
        if mode == "avg":
            val = sum(terms).sum(axis=(2, 4)) / max(gh * gw, 1)
        elif mode == "max":
            val = np.maximum.reduce(terms).max(axis=(2, 4))
        else:
            raise ValueError(f"unknown RoiAlign mode {mode!r}")
        y[r] = val
    return y


@kernel("RoiAlign", since=10)
def roi_align_10(
    X,
    rois,
    batch_indices,
    *,
    mode="avg",
    output_height=1,
    output_width=1,
    sampling_ratio=0,
    spatial_scale=1.0,
):
    return _roi_align(
        X,
        rois,
        batch_indices,
        False,
        mode,
        output_height,
        output_width,
        sampling_ratio,
        spatial_scale,
    )


@kernel("RoiAlign", since=16)
def roi_align_16(
    X,
    rois,
    batch_indices,
    *,
    coordinate_transformation_mode="half_pixel",
    mode="avg",
    output_height=1,
    output_width=1,
    sampling_ratio=0,
    spatial_scale=1.0,
):
    if coordinate_transformation_mode not in ("half_pixel", "output_half_pixel"):
        raise ValueError(
            f"unknown coordinate_transformation_mode {coordinate_transformation_mode!r}"
        )
    half_pixel = coordinate_transformation_mode == "half_pixel"
    return _roi_align(
        X,
        rois,
        batch_indices,
        half_pixel,
        mode,
        output_height,
        output_width,
        sampling_ratio,
        spatial_scale,
    )
