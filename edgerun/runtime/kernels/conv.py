"""Convolutions: im2col over strided views + one matmul; depthwise as one einsum of the taps."""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np

from edgerun.runtime.kernels.derived import memo, memo_with, tiled
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


def conv_geometry(x_shape, w_shape, auto_pad, dilations, kernel_shape, pads, strides):
    """A convolution's attributes with their defaults filled in, and its window geometry:
    (kernel_shape, strides, dilations, pads_begin, pads_end, out_shape), as tuples."""
    return _conv_geometry(
        tuple(x_shape),
        tuple(w_shape),
        auto_pad,
        *(None if v is None else tuple(v) for v in (dilations, kernel_shape, pads, strides)),
    )


@functools.lru_cache(maxsize=1024)
def _conv_geometry(x_shape, w_shape, auto_pad, dilations, kernel_shape, pads, strides):
    # worked out once per layer and input shape: a model's convolutions run the same shapes
    # every time, and this was a tenth of a small depthwise layer's time
    n_sp = len(x_shape) - 2
    kernel_shape = tuple(kernel_shape or w_shape[2:])
    strides = tuple(strides or (1,) * n_sp)
    dilations = tuple(dilations or (1,) * n_sp)
    begin, end, out_shape = window_pads(
        x_shape[2:], kernel_shape, strides, dilations, pads, auto_pad
    )
    return kernel_shape, strides, dilations, tuple(begin), tuple(end), tuple(out_shape)


def _compute_dtype(dtype):
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float32)


def _pad(x, begin, end, value=0, dtype=None):
    """x (N, C, *S) padded with ``value`` (cropped by negative pads), channels-first, in
    ``dtype`` (x's): one copy, or x itself where nothing changes."""
    dtype = x.dtype if dtype is None else np.dtype(dtype)
    if not any(begin) and not any(end):
        return x if dtype == x.dtype else x.astype(dtype)
    if min(min(begin), min(end)) < 0:  # negative pads crop
        crop = tuple(
            slice(None) if i < 2 else slice(max(0, -begin[i - 2]), x.shape[i] - max(0, -end[i - 2]))
            for i in range(x.ndim)
        )
        x = x[crop]
        begin, end = [max(0, v) for v in begin], [max(0, v) for v in end]
    shape = (*x.shape[:2], *(s + b + e for s, b, e in zip(x.shape[2:], begin, end, strict=True)))
    xp = np.full(shape, value, dtype=dtype)
    xp[
        (
            slice(None),
            slice(None),
            *(slice(b, b + s) for b, s in zip(begin, x.shape[2:], strict=True)),
        )
    ] = x
    return xp


def _tap_slices(kernel_shape, strides, dilations, out_shape):
    """Each kernel tap's strided slice (over the spatial axes) of the padded input."""
    for tap in itertools.product(*(range(k) for k in kernel_shape)):
        yield tuple(
            slice(i * d, i * d + (o - 1) * s + 1, s)
            for i, d, o, s in zip(tap, dilations, out_shape, strides, strict=True)
        )


def _view(base, shape, strides, offset=0):
    """A strided view of C-contiguous ``base`` (from ``offset`` bytes in); numpy's
    constructor checks that it stays inside (a quarter of as_strided's cost, which a small
    layer feels)."""
    return np.ndarray(shape, base.dtype, buffer=base, offset=offset, strides=strides)


def _channels_last(x):
    """x (N, C, *S) as an (N, *S, C) view: contiguous when x is channels-last in memory."""
    return x.transpose(0, *range(2, x.ndim), 1)


def _is_channels_last(x):
    """Whether x (N, C, *S) is stored with its channels adjacent (channels-last)."""
    return x.shape[1] > 1 and x.strides[1] == x.itemsize


def _channels_first(y):
    return y.transpose(0, y.ndim - 1, *range(1, y.ndim - 1))


def _conv(
    x, w, b, auto_pad, dilations, group, kernel_shape, pads, strides, clip=None, input_clip=None
):
    """Float convolution of any rank; ``x`` and ``w`` already in the compute dtype; ``clip``:
    (low, high) bounds applied to the result (a fused Relu or Clip); ``input_clip``: bounds
    applied to ``x`` first (a depthwise convolution applies them as it copies x padded)."""
    kernel_shape, strides, dilations, begin, end, out_shape = conv_geometry(
        x.shape, w.shape, auto_pad, dilations, kernel_shape, pads, strides
    )
    c = x.shape[1]
    m = w.shape[0]
    if c != w.shape[1] * group or m % group:
        raise ValueError(f"X {x.shape} and W {w.shape} do not match group={group}")
    b = None if b is None else b.astype(x.dtype, copy=False)
    no_pads = not any(begin) and not any(end)
    depthwise = group == c == m and group > 1 and min(begin + end) >= 0
    if depthwise:
        return _depthwise_cl(
            x, w, b, kernel_shape, strides, dilations, begin, out_shape, clip, input_clip
        )
    if input_clip is not None:
        x = np.clip(x, input_clip[0], input_clip[1])
    if no_pads and all(v == 1 for v in (*kernel_shape, *strides)):
        if group == 1:
            return _pointwise(x, w, b, clip)
        return _grouped_pointwise(x, w, b, group, clip)
    wide = math.prod(out_shape) >= _CL_FROM
    cl_columns = wide or max(strides) > 1  # strided channels-first columns copy slowly
    image = group == 1 and x.shape[0] == 1 and c <= _IMAGE_CHANNELS and wide
    # an image in either layout (TFLite's are NHWC) takes its phases, not C-long column runs
    by_phases = image and x.ndim == 4 and all(d == 1 for d in dilations)
    if (
        group == 1
        and _is_channels_last(x)
        and cl_columns
        and min(begin + end) >= 0
        and not by_phases
    ):
        y = _im2col_channels_last(x, w, b, kernel_shape, strides, dilations, begin, out_shape)
        _clip(y, clip)
        return _channels_first(y)
    xp = _pad(x, begin, end)
    if image:
        if by_phases:
            return _channels_first(
                _image_conv_rows(xp, w, b, kernel_shape, strides, out_shape, clip)
            )
        y = _image_conv(xp, w, b, kernel_shape, strides, dilations, out_shape)
        _clip(y, clip)
        return _channels_first(y)
    if group == c and w.shape[1] == 1 and group > 1:
        y = _depthwise(xp, w, kernel_shape, strides, dilations, out_shape)
    else:
        y = _im2col_matmul(xp, w, group, kernel_shape, strides, dilations, out_shape)
    _add_clip(y, None if b is None else b.reshape((m,) + (1,) * len(out_shape)), clip)
    return y


def _add_clip(y, b, clip):
    if b is not None:
        y += b
    _clip(y, clip)


def _add_clip_rows(y, b, clip, width):
    """_add_clip for a contiguous channels-last ``y`` whose last spatial axis is ``width``
    long: the bias is added tiled along that axis, so numpy's inner loop runs (width x C)
    long instead of C (the add 1.4-2x faster on MobileNetV2's layers)."""
    if b is not None:
        rows = y.reshape(-1, width * b.shape[0])
        rows += tiled(b, width)
    _clip(y, clip)


# Convolutions return channels-last results (the layout Winograd layers and depthwise
# convolutions produce, so that the adds and pools between them run over one layout) from
# an input in that layout or an image (whose product is then (out, C taps) @ ..., its long
# output axis suiting BLAS best: ResNet-18's first layer 8 % faster); not below _CL_FROM
# output pixels, where that product was up to 30 % slower (ResNet-18's 7x7 layers), and
# channels-last columns no faster for stride 1 (and they take a copy of the weights).
_IMAGE_CHANNELS = 4
_CL_FROM = 64


def _pointwise(x, w, b, clip=None):
    # a 1x1 convolution is one matmul over the channels, in whichever layout x is stored
    n, c = x.shape[:2]
    m = w.shape[0]
    w2 = w.reshape(m, c)
    xl = _channels_last(x)
    fold = b is not None and c * _FOLD_BIAS_FROM <= m
    if xl.flags.c_contiguous and not x.flags.c_contiguous:
        # (C [+ 1], M) weights stored in that order: OpenBLAS multiplies by a transposed
        # view up to 1.5x slower on the short products of small images (49 pixels)
        if fold:
            y = np.matmul(_with_ones(xl.reshape(-1, c), axis=1), _columns_weights(w, b))
            _clip(y, clip)
        else:
            y = np.matmul(xl.reshape(-1, c), _columns_weights(w, None))
            _add_clip_rows(y, b, clip, x.shape[-1])
        return _channels_first(y.reshape(*xl.shape[:-1], m))
    if fold:
        y = np.matmul(_with_bias(w, b), _with_ones(x.reshape(n, c, -1), axis=1))
        _clip(y, clip)
    else:
        y = np.matmul(w2, x.reshape(n, c, -1))
        _add_clip(y, None if b is None else b.reshape(m, 1), clip)
    return y.reshape(n, m, *x.shape[2:])


def _grouped_pointwise(x, w, b, group, clip=None):
    """A grouped 1x1 convolution (ShuffleNet's) as one batched matmul over the groups,
    reading ``x`` where it lies: channels-last, each group's rows are a strided matrix
    BLAS takes as it is, and the result is written channels-last the same way (136
    channels of 28x28, group 4: 214 us through channels-first columns, 134 us so; 272 of
    14x14: 133 -> 100 us); channels-first, the groups are slices of the planes."""
    n, c = x.shape[:2]
    m = w.shape[0]
    cg, mg = c // group, m // group
    pixels = math.prod(x.shape[2:])
    xl = _channels_last(x)
    if xl.flags.c_contiguous and not x.flags.c_contiguous:
        wt = memo(
            w,
            "grouped columns",
            lambda: np.ascontiguousarray(w.reshape(group, mg, cg).transpose(0, 2, 1)),
        )
        y = np.empty((*xl.shape[:-1], m), dtype=x.dtype)
        rows = xl.reshape(n, pixels, group, cg).transpose(0, 2, 1, 3)
        np.matmul(rows, wt, out=y.reshape(n, pixels, group, mg).transpose(0, 2, 1, 3))
        _add_clip_rows(y, b, clip, x.shape[-1])
        return _channels_first(y)
    planes = np.ascontiguousarray(x).reshape(n, group, cg, pixels)
    y = np.matmul(w.reshape(group, mg, cg), planes)
    _add_clip(y, None if b is None else b.reshape(group, mg, 1), clip)
    return y.reshape(n, m, *x.shape[2:])


# A 1x1 convolution with at least this many times more outputs than inputs takes its bias
# in the product: the input gets a channel of ones (a copy of the input) and the weights a
# column of biases, which saves a pass over the larger output (MobileNets' expansions).
_FOLD_BIAS_FROM = 2


def _with_ones(a, axis):
    """``a`` with one more entry along ``axis`` (the channels), set to one."""
    shape = list(a.shape)
    shape[axis] += 1
    out = np.empty(shape, dtype=a.dtype)
    lead = (slice(None),) * axis
    out[(*lead, slice(0, a.shape[axis]))] = a
    out[(*lead, a.shape[axis])] = 1
    return out


def _with_bias(w, b):
    """``w`` as (M, C) with the bias as column C: made once per weight and bias."""
    m = w.shape[0]
    return memo_with(w, b, "bias column", lambda: np.hstack([w.reshape(m, -1), b.reshape(m, 1)]))


def _clip(y, clip):
    # on the contiguous result: np.clip on a transposed view of it runs several times slower
    if clip is not None:
        np.clip(y, clip[0], clip[1], out=y)


def im2col(xp, kernel_shape, strides, dilations, out_shape, out=None):
    """Columns (N, C, taps, *out) of padded ``xp``: rows ordered (channel, tap) as W is;
    written into ``out`` when given."""
    n, c = xp.shape[:2]
    cols = np.empty((n, c, math.prod(kernel_shape), *out_shape), xp.dtype) if out is None else out
    if math.prod(strides) == 1 or math.prod(kernel_shape) <= math.prod(strides):
        for t, sl in enumerate(_tap_slices(kernel_shape, strides, dilations, out_shape)):
            cols[:, :, t] = xp[(slice(None), slice(None), *sl)]
        return cols
    # strided: each tap reads one phase of the input (positions of one residue modulo the
    # stride on every axis), and the phases are copied out once, so that every tap is a
    # slice with unit steps (ResNet-18's 7x7/2 layer: 0.69 -> 0.48 ms)
    phases: dict[tuple[int, ...], np.ndarray] = {}
    for t, tap in enumerate(itertools.product(*(range(k) for k in kernel_shape))):
        offsets = [i * d for i, d in zip(tap, dilations, strict=True)]
        residue = tuple(o % s for o, s in zip(offsets, strides, strict=True))
        if residue not in phases:
            steps = (slice(r, None, s) for r, s in zip(residue, strides, strict=True))
            phases[residue] = np.ascontiguousarray(xp[(slice(None), slice(None), *steps)])
        window = (
            slice(o // s, o // s + size)
            for o, s, size in zip(offsets, strides, out_shape, strict=True)
        )
        cols[:, :, t] = phases[residue][(slice(None), slice(None), *window)]
    return cols


def _im2col_matmul(xp, w, group, kernel_shape, strides, dilations, out_shape):
    n, c = xp.shape[:2]
    m = w.shape[0]
    cg, mg = c // group, m // group
    k = math.prod(kernel_shape)
    o = math.prod(out_shape)
    cols = im2col(xp, kernel_shape, strides, dilations, out_shape)
    y = np.empty((n, m, *out_shape), dtype=xp.dtype)
    if group == 1 and n == 1:
        np.matmul(w.reshape(m, c * k), cols.reshape(c * k, o), out=y.reshape(m, o))
    else:
        wg = w.reshape(group, mg, cg * k)
        np.matmul(wg, cols.reshape(n, group, cg * k, o), out=y.reshape(n, group, mg, o))
    return y


def _image_conv(xp, w, b, kernel_shape, strides, dilations, out_shape):
    # an image (few channels): (out, C taps) @ (C taps, M), channels-last (1, *out, M), with
    # the bias taken in the product through a row of ones under the columns
    c, m = xp.shape[1], w.shape[0]
    rows = c * math.prod(kernel_shape)
    cols = np.empty((rows + (b is not None), math.prod(out_shape)), dtype=xp.dtype)
    im2col(
        xp,
        kernel_shape,
        strides,
        dilations,
        out_shape,
        out=cols[:rows].reshape(1, c, -1, *out_shape),
    )
    if b is None:
        return np.matmul(cols.T, w.reshape(m, rows).T).reshape(1, *out_shape, m)
    cols[rows] = 1
    return np.matmul(cols.T, _with_bias(w, b).T).reshape(1, *out_shape, m)


# output values (rows x columns of an image convolution's block) whose columns make one
# block: about 1 MB of float32 columns for a 7x7 stem, which stays in L2 with its results
_IMAGE_BLOCK = 1 << 18


def _image_conv_rows(xp, w, b, kernel_shape, strides, out_shape, clip=None, out=None, left=0):
    """_image_conv of a 2-D image (undilated), clipped: its columns made a block of output
    rows at a time, each block's product and clip run while the block is in cache. The
    padded image is split once into its stride phases (rows and columns by residue modulo
    the stride), where the taps of one phase are a strided view (C, taps down, taps across,
    rows, columns) copied in one go, so a block takes one copy per phase instead of one per
    tap; the weights are laid out in that (phase, C, tap) order once. ResNet-18's 7x7/2
    stem: 3.55 -> 3.0 ms, and with the caches cold, as in a model, 4.4 -> 3.1 ms. The
    result (1, *out_shape, M) is written into ``out`` where given: whole rows (1, rows,
    width, M) of a padded buffer, the image ``left`` columns in, whose other columns get
    zero products (the caller sets its borders). Each block is then one product over whole
    rows: numpy runs a product with a 3-D operand row by row, which took up to 1.8x as long
    (a 224x224 stem of 64 channels: 1.08 -> 0.74 ms)."""
    (sh, sw), (kh, kw), (oh, ow) = strides, kernel_shape, out_shape
    c, m = xp.shape[1], w.shape[0]
    phases = [
        (p, q, np.ascontiguousarray(xp[0, :, p::sh, q::sw]))
        for p in range(min(sh, kh))
        for q in range(min(sw, kw))
    ]
    wp = memo_with(w, b, ("phase columns", sh, sw), lambda: _phase_weights(w, b, sh, sw))
    y = np.empty((1, oh, ow, m), dtype=xp.dtype) if out is None else out
    width = y.shape[2]
    rows = max(1, _IMAGE_BLOCK // (wp.shape[0] * width))
    padded = width != ow
    cols = (np.zeros if padded else np.empty)((wp.shape[0], rows * width), dtype=xp.dtype)
    if b is not None:
        cols[-1].reshape(rows, width)[:, left : left + ow] = 1
    for top in range(0, oh, rows):
        n = min(rows, oh - top)
        at = 0
        for p, q, ph in phases:
            ka, kb = len(range(p, kh, sh)), len(range(q, kw, sw))
            s0, s1, s2 = ph.strides
            taps = np.ndarray((c, ka, kb, n, ow), ph.dtype, ph, top * s1, (s0, s1, s2, s1, s2))
            block_cols = cols[at : at + c * ka * kb, : n * width].reshape(c, ka, kb, n, width)
            block_cols[..., left : left + ow] = taps
            at += c * ka * kb
        block = y[0, top : top + n].reshape(n * width, m)  # whole rows: contiguous
        np.matmul(cols[:, : n * width].T, wp, out=block)
        if clip is not None:
            np.clip(block, clip[0], clip[1], out=block)
    return y


def _phase_weights(w, b, sh, sw):
    """(K [+ 1], M) weights in _image_conv_rows's column order, the bias as the last row."""
    m = w.shape[0]
    parts = [
        w[:, :, p::sh, q::sw].reshape(m, -1)
        for p in range(min(sh, w.shape[2]))
        for q in range(min(sw, w.shape[3]))
    ]
    if b is not None:
        parts.append(b.reshape(m, 1))
    return np.ascontiguousarray(np.concatenate(parts, axis=1).T)


def _im2col_channels_last(x, w, b, kernel_shape, strides, dilations, begin, out_shape):
    # a channels-last input: columns (N out, taps C) copied from a strided view of its
    # padded copy, each run C long, times the weights laid out (taps C, M) once, with the
    # bias taken in the product through a column of ones. Against channels-first columns
    # of the same input: ResNet-18's strided layers 35-40 % faster.
    n, c, m = x.shape[0], x.shape[1], w.shape[0]
    size = _padded_size(x.shape[2:], begin, kernel_shape, strides, dilations, out_shape)
    xp = _padded_channels_last(x, begin, size)
    space = xp.strides[1:-1]
    taps = _view(
        xp,
        (n, *out_shape, *kernel_shape, c),
        (
            xp.strides[0],
            *(s * st for s, st in zip(strides, space, strict=True)),
            *(d * st for d, st in zip(dilations, space, strict=True)),
            xp.strides[-1],
        ),
    )
    rows, width = n * math.prod(out_shape), math.prod(kernel_shape) * c
    wc = _columns_weights(w, b)
    line = math.prod(out_shape[1:])  # rows per step of the first output axis
    lines = max(1, _COLUMN_BYTES // ((width + 1) * x.itemsize * line))
    if n * out_shape[0] <= lines:
        cols = np.empty((rows, width + (b is not None)), dtype=x.dtype)
        cols[:, :width].reshape(taps.shape)[...] = taps
        if b is not None:
            cols[:, width] = 1
        return np.matmul(cols, wc).reshape(n, *out_shape, m)
    # many rows: the columns go in blocks of output lines through one buffer, instead of
    # a kernel-size copy of the input: no faster once warm, but a first run faults in a
    # fraction of the memory (tiny_yolo's columns took 2.4 MB)
    y = np.empty((n, *out_shape, m), dtype=x.dtype)
    buf = np.empty((lines * line, width + (b is not None)), dtype=x.dtype)
    if b is not None:
        buf[:, width] = 1
    for i in range(n):
        for top in range(0, out_shape[0], lines):
            part = taps[i, top : top + lines]
            cols = buf[: part.shape[0] * line]
            cols[:, :width].reshape(part.shape)[...] = part
            np.matmul(cols, wc, out=y[i, top : top + lines].reshape(len(cols), m))
    return y


_COLUMN_BYTES = 1 << 19  # a block of channels-last columns


def _columns_weights(w, b):
    """``w`` as (taps C [+ 1], M) for channels-last columns, the bias as the last row:
    copied once into place (three copies through moveaxis and vstack took 70 ms of a fresh
    process's first run on a 512-channel 3x3 layer, faulting in memory twice over), a few
    outputs at a time where a 1x1 layer's rows lie 4 KB apart (2048 x 1024: 15 -> 4 ms)."""
    m, k = w.shape[0], w[0].size

    def make():
        wc = np.empty((k + (b is not None), m), dtype=w.dtype)
        taps_c = w.transpose(*range(2, w.ndim), 1, 0)
        copy_channels_last(taps_c, wc[:k].reshape(taps_c.shape))
        if b is not None:
            wc[k] = b
        return wc

    return memo_with(w, b, "channels-last columns", make)


_TILE_BELOW = 256  # channels; from there the C-long inner loops are long enough
_SPLIT_BELOW = _TILE_BELOW  # channels; the same for stride 2 along the last axis (see below)


def _depthwise_cl(
    x, w, b, kernel_shape, strides, dilations, begin, out_shape, clip=None, input_clip=None
):
    # channels-last: the taps are one einsum over a strided view of the zero-padded input,
    # with axes (*taps, N, *out, C), so numpy sums all taps of an output in one pass
    # instead of a multiply and an add per tap (2-3x faster on MobileNetV2's layers). The
    # padded copy costs one pass over the input; computing the border slabs apart instead
    # was 3-11 % slower over MobileNets (five einsums per layer). Below _TILE_BELOW
    # channels, with stride 1 along the last axis, that axis merges with C and the weights
    # are tiled along it, so the inner loop runs W*C long instead of C. With stride 2 there
    # and below _SPLIT_BELOW channels, the padded copy stores even and odd columns apart
    # (see _depthwise_split_columns) to the same end.
    c = x.shape[1]
    if _splits_columns(c, strides, dilations):
        y = _depthwise_split_columns(
            x, w, kernel_shape, strides, dilations, begin, out_shape, input_clip
        )
        _add_clip_rows(y, b, clip, out_shape[-1])
        return _channels_first(y)
    size = _padded_size(x.shape[2:], begin, kernel_shape, strides, dilations, out_shape)
    xp = _padded_channels_last(x, begin, size, input_clip)
    return _channels_first(
        _depthwise_padded(xp, w, b, kernel_shape, strides, dilations, out_shape, clip)
    )


def _depthwise_padded(xp, w, b, kernel_shape, strides, dilations, out_shape, clip=None):
    """_depthwise_cl's product on its zero-padded channels-last input ``xp`` (N, *size, C):
    the channels-last result (N, *out, C), bias added and clipped."""
    c = xp.shape[-1]
    tiled = c < _TILE_BELOW and strides[-1] == 1
    width = out_shape[-1] if tiled else 1
    wl = memo(
        w, ("taps last", tuple(kernel_shape), width), lambda: _taps_last(w, kernel_shape, width)
    )
    y = np.empty((xp.shape[0], *out_shape, c), dtype=xp.dtype)
    _tap_einsum(xp, wl, y, strides, dilations, tiled)
    _add_clip_rows(y, b, clip, out_shape[-1])
    return y


def _splits_columns(channels, strides, dilations) -> bool:
    """Whether a depthwise layer takes the parity-split layout (_depthwise_split_columns)."""
    return strides[-1] == 2 and dilations[-1] == 1 and channels < _SPLIT_BELOW


def _depthwise_split_columns(x, w, kernel_shape, strides, dilations, begin, out_shape, clip=None):
    # stride 2 along the last axis: tap k of output column o reads padded column 2 o + k,
    # which is column o + k // 2 of the padded columns of parity k % 2. With the two
    # parities stored apart, each tap is a slice whose rows run (out columns) x C long, as
    # at stride 1, and the weights are tiled to match (see _split_product).
    size = _split_size(x.shape[2:], begin, kernel_shape, strides, dilations, out_shape)
    xs = _split_columns(x, begin, size, clip)
    return _split_product(xs, w, kernel_shape, strides, dilations, out_shape)


def _split_size(spatial, begin, kernel_shape, strides, dilations, out_shape):
    """_padded_size for the parity-split layout: its last entry the length of each
    parity's half (the out columns and the parity's taps past the first)."""
    size = _padded_size(spatial, begin, kernel_shape, strides, dilations, out_shape)
    return [*size[:-1], out_shape[-1] + (kernel_shape[-1] + 1) // 2 - 1]


def _split_product(xs, w, kernel_shape, strides, dilations, out_shape):
    """The depthwise product (N, *out, C) of parity-split ``xs`` (see _split_columns): one
    einsum over each parity's taps (the even columns' ceil(k / 2), the odd's floor(k / 2)),
    whose rows run (out columns) x C long, and their sum. Against C-long rows: 96 channels
    of 112x112, MobileNetV2's, 1.14 -> 0.57 ms; 144 of 56x56 0.36 -> 0.20; 64 of 112x112
    0.57 -> 0.53 against one einsum over both parities, whose odd side weighed 0 in its
    last tap (12 products an output where 9 are needed)."""
    n, c = xs.shape[0], xs.shape[-1]
    lead = len(kernel_shape) - 1
    space = xs.strides[1 : 1 + lead]
    width = out_shape[-1]
    y = np.empty((n, *out_shape, c), dtype=xs.dtype)
    merged = y.reshape(n, *out_shape[:-1], width * c)
    for parity in (0, 1):
        count = len(range(parity, kernel_shape[-1], 2))
        if not count:  # a 1-wide kernel has no odd taps
            continue
        wl = memo(
            w,
            ("split taps", tuple(kernel_shape), width, parity),
            lambda parity=parity: _split_weights(w, kernel_shape, width, parity),
        )
        shape = [*kernel_shape[:-1], count, n, *out_shape[:-1], width * c]
        step = [
            *(d * st for d, st in zip(dilations[:-1], space, strict=True)),
            xs.strides[-2],
            xs.strides[0],
            *(s * st for s, st in zip(strides[:-1], space, strict=True)),
            xs.strides[-1],
        ]
        taps = _view(xs, shape, step, offset=parity * xs.strides[-3])
        axes = list(range(len(shape)))
        part = np.empty_like(merged) if parity else merged
        np.einsum(taps, axes, wl, [*axes[: lead + 1], axes[-1]], axes[lead + 1 :], out=part)
        if parity:
            merged += part
    return y


def _split_columns(x, begin, size, clip=None, dtype=None, fill=0):
    """x (N, C, *S) padded with ``fill`` (zeros) as _padded_channels_last pads it, in
    ``dtype`` (x's), its last axis stored by parity: padded position 2 j + p of that axis
    is at [..., p, j, :], for j < size[-1]; shape (N, *size[:-1], 2, size[-1], C). Clipped
    to ``clip`` on the way, where given."""
    n, c = x.shape[:2]
    lead = x.shape[2:-1]
    xs = np.empty((n, *size[:-1], 2, size[-1], c), dtype=x.dtype if dtype is None else dtype)
    fill_borders(xs, begin[:-1], lead, fill)
    inside = tuple(slice(bg, bg + k) for bg, k in zip(begin[:-1], lead, strict=True))
    xl = _channels_last(x)
    for parity in (0, 1):
        taken, at = _parity_span(begin[-1], x.shape[-1], size[-1], parity)
        plane = xs[(slice(None), *inside, parity)]  # (N, *lead, size[-1], C)
        plane[..., : at.start, :] = fill
        plane[..., at.stop :, :] = fill
        plane[..., at, :] = xl[..., taken, :]
        if clip is not None:  # in place, where the rows run (columns x C) long: 2x faster
            np.clip(plane[..., at, :], clip[0], clip[1], out=plane[..., at, :])
    return xs


def _split_weights(w, kernel_shape, width, parity):
    """Depthwise weights for _split_product: the taps 2 j + ``parity`` of the last axis,
    (*kernel[:-1], taps, width * C), tiled ``width`` times."""
    wl = np.moveaxis(w.reshape(w.shape[0], *kernel_shape), 0, -1)  # (*kernel, C)
    return np.ascontiguousarray(_tiled(wl[..., parity::2, :], width))


def _parity_span(before, size, half, parity):
    """(input slice, slice of the half) of the input positions that land on ``parity``
    when ``before`` zeros precede ``size`` positions and ``2 half`` positions are kept."""
    first = (parity - before) % 2  # the first input position of that parity
    at = (first + before) // 2
    count = max(0, min((size - first + 1) // 2, half - at))
    taken = slice(first, first + 2 * count - 1, 2) if count else slice(0, 0)
    return taken, slice(at, at + count)


def _taps_last(w, kernel_shape, width):
    """Depthwise weights (C, 1, *kernel) as (*kernel, width * C): channels last, tiled."""
    wl = np.moveaxis(w.reshape(w.shape[0], *kernel_shape), 0, -1)
    return np.ascontiguousarray(_tiled(wl, width))


def _tiled(wl, width):
    """(*kernel, C) weights repeated ``width`` times along C: (*kernel, width * C)."""
    wide = np.broadcast_to(wl[..., None, :], (*wl.shape[:-1], width, wl.shape[-1]))
    return wide.reshape(*wl.shape[:-1], width * wl.shape[-1])


def _padded_size(spatial, begin, kernel_shape, strides, dilations, out_shape):
    """Padded spatial sizes in which every window lies: ``begin`` zeros before each axis,
    as many after as the last window needs."""
    return [
        max((o - 1) * s + (k - 1) * d + 1, bg + n)
        for o, s, k, d, bg, n in zip(
            out_shape, strides, kernel_shape, dilations, begin, spatial, strict=True
        )
    ]


def _padded_channels_last(x, begin, size, clip=None, dtype=None, fill=0):
    """x (N, C, *S) padded with ``fill`` (zeros) to the spatial ``size`` (see _padded_size),
    channels-last, in ``dtype`` (x's); clipped to ``clip`` (low, high) on the way, where
    given (the padding is not)."""
    xl = _channels_last(x)
    spatial = x.shape[2:]
    dtype = x.dtype if dtype is None else np.dtype(dtype)
    if not any(begin) and list(size) == list(spatial):
        if clip is None and xl.flags.c_contiguous and dtype == x.dtype:
            return xl
        xp = np.empty(xl.shape, dtype=dtype)
        copy_channels_last(xl, xp, clip)
        return xp
    xp = np.empty((x.shape[0], *size, x.shape[1]), dtype=dtype)
    fill_borders(xp, begin, spatial, fill)
    inside = xp[(slice(None), *(slice(bg, bg + n) for bg, n in zip(begin, spatial, strict=True)))]
    copy_channels_last(xl, inside, clip)
    return xp


def copy_channels_last(src, dest, clip=None):
    """dest[...] = src (clipped to ``clip`` where given) for a channels-last ``dest`` and a
    ``src`` that may be a channels-last view of a channels-first array. There, where the
    planes lie a multiple of 4 KB apart (power-of-two images: 32x32, 64x64...), a plain copy
    reads C addresses of one cache set for every pixel and ran 3x slower (128 channels of
    32x32: 399 -> 130 us), so it goes _CHANNEL_BLOCK channels at a time."""
    c = src.shape[-1]
    step = _CHANNEL_BLOCK if c > _CHANNEL_BLOCK and planes_alias(src) else c
    for c0 in range(0, c, step):
        part, out = src[..., c0 : c0 + step], dest[..., c0 : c0 + step]
        if clip is None:
            out[...] = part
        else:
            np.clip(part, clip[0], clip[1], out=out)


_CHANNEL_BLOCK = 8


def planes_alias(src) -> bool:
    """Whether the channels of channels-last view ``src`` lie a multiple of 4 KB apart (a
    channels-first array of a power-of-two image), where reading across them thrashes one
    cache set (see copy_channels_last)."""
    return not src.flags.c_contiguous and src.strides[-1] % 4096 == 0


def fill_borders(xp, begin, spatial, value=0):
    """Set the cells of channels-last ``xp`` outside [begin, begin + spatial) on each axis
    to ``value`` (zeros: a convolution's padding)."""
    for axis, (bg, n) in enumerate(zip(begin, spatial, strict=True), 1):
        lead = (slice(None),) * axis
        xp[(*lead, slice(0, bg))] = value
        xp[(*lead, slice(bg + n, None))] = value


def _tap_einsum(src, wl, out, strides, dilations, tiled):
    """out[n, *o, c] = sum over taps t of src[n, *(o * stride + t * dilation), c] * w[*t, c]."""
    k = len(strides)
    space = src.strides[1:-1]
    item = src.strides[-1]
    shape = [*wl.shape[:k], *out.shape]
    step = [
        *(d * st for d, st in zip(dilations, space, strict=True)),
        src.strides[0],
        *(s * st for s, st in zip(strides, space, strict=True)),
        item,
    ]
    weights = wl
    if tiled:  # merge the last spatial axis into C (whose stride it then is)
        width = out.shape[-2] * out.shape[-1]
        shape, step = [*shape[:-2], width], [*step[:-2], item]
        out = out.reshape(*out.shape[:-2], width)  # out is contiguous: a view
        weights = wl[..., :width]
    taps = _view(src, shape, step)
    axes = list(range(len(shape)))
    np.einsum(taps, axes, weights, [*axes[:k], axes[-1]], axes[k:], out=out)


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
    return _conv_as(X, W, B, auto_pad, dilations, group, kernel_shape, pads, strides)


def _conv_as(X, W, B, *conv_attributes, clip=None, input_clip=None, Z=None):
    """_conv in the compute dtype, its result in X's; ``Z`` added before ``clip``."""
    dt = _compute_dtype(X.dtype)
    x, w = X.astype(dt, copy=False), W.astype(dt, copy=False)
    if Z is None:
        y = _conv(x, w, B, *conv_attributes, clip, input_clip)
    else:
        y = _conv(x, w, B, *conv_attributes, None, input_clip)
        y += Z.astype(dt, copy=False)
        _clip(y, clip)
    return y.astype(X.dtype, copy=False)


# onnxruntime's FusedConv (what its graph optimiser and edgerun's fuse_activation pass make
# of Conv -> activation): the activations that are a clip run inside the convolution
_CLIPS = {"Relu": lambda p: (0.0, np.inf), "Clip": lambda p: (p[0], p[1])}


def activation_clip(activation: str, activation_params) -> tuple[float, float]:
    """FusedConv's activation as the (low, high) bounds the convolution clips to."""
    if activation not in _CLIPS:
        raise ValueError(f"FusedConv activation {activation!r} is not supported")
    return _CLIPS[activation](list(activation_params or ()))


@kernel("FusedConv", since=1, domain="com.microsoft")
def fused_conv_1(
    X,
    W,
    B=None,
    Z=None,
    *,
    activation="",
    activation_params=None,
    auto_pad="NOTSET",
    dilations=None,
    group=1,
    kernel_shape=None,
    pads=None,
    strides=None,
):
    clip = activation_clip(activation, activation_params)
    attributes = (auto_pad, dilations, group, kernel_shape, pads, strides)
    return _conv_as(X, W, B, *attributes, clip=clip, Z=Z)


@kernel("ClippedInputConv", since=1, domain="com.microsoft")
def clipped_input_conv_1(
    X,
    W,
    B=None,
    *,
    input_clip=None,
    activation="",
    activation_params=None,
    auto_pad="NOTSET",
    dilations=None,
    group=1,
    kernel_shape=None,
    pads=None,
    strides=None,
):
    """edgerun's own op (onnxruntime has none by this name), made by
    passes/clip_into_depthwise.py: a Conv of ``X`` clipped to ``input_clip`` (low, high),
    the activation of the 1x1 FusedConv before it; ``activation`` and ``activation_params``
    are FusedConv's own, for the output."""
    clip = activation_clip(activation, activation_params) if activation else None
    bounds = None if input_clip is None else (float(input_clip[0]), float(input_clip[1]))
    attributes = (auto_pad, dilations, group, kernel_shape, pads, strides)
    return _conv_as(X, W, B, *attributes, clip=clip, input_clip=bounds)


@kernel("ExpandDepthwiseConv", since=1, domain="com.microsoft")
def expand_depthwise_conv_1(
    X,
    W,
    B,
    W_depthwise,
    B_depthwise=None,
    *,
    expand_clip=None,
    expand_kernel_shape=None,
    expand_pads=None,
    expand_strides=None,
    activation="",
    activation_params=None,
    auto_pad="NOTSET",
    dilations=None,
    group=1,
    kernel_shape=None,
    pads=None,
    strides=None,
):
    """edgerun's own op (onnxruntime has none by this name), made by
    passes/clip_into_depthwise.py from the convolution that feeds a depthwise one in a
    MobileNet (W, B and the expand_ attributes; its output clipped to ``expand_clip``): a
    block's 1x1 expansion, or the stem, an image convolution; and the depthwise Conv
    (W_depthwise and the rest, ``activation`` its own). The first product is written
    straight into the zero-padded channels-last buffer the depthwise product reads, and
    clipped there: one write and read of the widest tensor of the block less than the two
    steps (the block of 16 -> 96 channels at 112x112, stride 2: 2.17 -> 1.72 ms with cold
    caches). Images under _EXPAND_FROM pixels, batches, and what either kernel would read
    in another layout run as the two steps did."""
    clip = activation_clip(activation, activation_params) if activation else None
    bounds = (float(expand_clip[0]), float(expand_clip[1]))
    first = ("NOTSET", None, 1, expand_kernel_shape, expand_pads, expand_strides)
    n, c, m = X.shape[0], X.shape[1], W.shape[0]
    first_kernel, first_strides, _, first_begin, first_end, spatial = conv_geometry(
        X.shape, W.shape, "NOTSET", None, expand_kernel_shape, expand_pads, expand_strides
    )
    kernel_shape, strides, dilations, begin, _, out_shape = conv_geometry(
        (n, m, *spatial), W_depthwise.shape, auto_pad, dilations, kernel_shape, pads, strides
    )
    xl = _channels_last(X)
    pointwise = max(first_kernel + first_strides) == 1 and not any(first_begin + first_end)
    image = X.ndim == 4 and c <= _IMAGE_CHANNELS and min(first_begin + first_end) >= 0
    if (
        X.ndim != 4
        or n != 1
        or X.dtype != _compute_dtype(X.dtype)
        or W.dtype != X.dtype
        or not ((pointwise and xl.flags.c_contiguous and m >= 2 * c) or image)
        or math.prod(spatial) < _EXPAND_FROM
        or min(begin) < 0
        or (_splits_columns(m, strides, dilations) and not pointwise)
        or group != m
    ):
        y = _conv_as(X, W, B, *first)
        depthwise = (auto_pad, dilations, group, kernel_shape, pads, strides)
        return _conv_as(y, W_depthwise, B_depthwise, *depthwise, clip=clip, input_clip=bounds)
    geometry = (kernel_shape, strides, dilations, begin, tuple(spatial), out_shape)
    if pointwise:
        y = pointwise_into_depthwise(
            xl[0],
            m,
            B is not None,
            lambda rows, slab: _expand_into(rows, W, B, slab, bounds),
            W_depthwise,
            B_depthwise,
            geometry,
            clip,
        )
        return _channels_first(y)
    size = _padded_size(spatial, begin, kernel_shape, strides, dilations, out_shape)
    xp = np.empty((1, *size, m), dtype=X.dtype)
    slab = xp[:, begin[0] : begin[0] + spatial[0]]
    padded = _pad(X, first_begin, first_end)
    _image_conv_rows(padded, W, B, first_kernel, first_strides, spatial, bounds, slab, begin[1])
    fill_borders(xp, begin, spatial)
    y = _depthwise_padded(
        xp, W_depthwise, B_depthwise, kernel_shape, strides, dilations, out_shape, clip
    )
    return _channels_first(y)


def pointwise_into_depthwise(
    xl, m, ones, expand, w_depthwise, b_depthwise, geometry, clip=None, dtype=None
):
    """The depthwise product (1, *out, M), channels-last, of a 1x1 expansion to ``m``
    channels of the image ``xl`` (H, W, C) that ``expand(rows, slab)`` writes straight into
    the product's zero-padded buffer: ``rows`` are xl's pixels laid out as the buffer's
    whole rows (_padded_rows, or _split_rows where the columns are stored by parity; a
    channel of ones for a bias where ``ones``; zero rows where the padding is), ``slab``
    the buffer's rows they fill. ``geometry``: the depthwise layer's (kernel_shape,
    strides, dilations, pads_begin, spatial input shape, out_shape); ``dtype``: the
    buffer's (xl's)."""
    kernel_shape, strides, dilations, begin, spatial, out_shape = geometry
    dtype = xl.dtype if dtype is None else np.dtype(dtype)
    inside = slice(begin[0], begin[0] + spatial[0])
    if _splits_columns(m, strides, dilations):  # the expansion written parity-split
        rows_size, half = _split_size(spatial, begin, kernel_shape, strides, dilations, out_shape)
        xs = np.empty((1, rows_size, 2, half, m), dtype=dtype)
        expand(_split_rows(xl, ones, begin[1], half, dtype), xs[0, inside])
        fill_borders(xs, begin[:-1], spatial[:-1])  # the rows above and below
        for parity in (0, 1):  # the columns' zeros
            _, at = _parity_span(begin[1], spatial[1], half, parity)
            xs[:, inside, parity, : at.start] = 0
            xs[:, inside, parity, at.stop :] = 0
        y = _split_product(xs, w_depthwise, kernel_shape, strides, dilations, out_shape)
        _add_clip_rows(y, b_depthwise, clip, out_shape[-1])
        return y
    size = _padded_size(spatial, begin, kernel_shape, strides, dilations, out_shape)
    xp = np.empty((1, *size, m), dtype=dtype)
    expand(_padded_rows(xl, ones, begin[1], size[1], dtype), xp[0, inside])
    fill_borders(xp, begin, spatial)  # the rows above and below, the columns' zeros
    return _depthwise_padded(
        xp, w_depthwise, b_depthwise, kernel_shape, strides, dilations, out_shape, clip
    )


def _expand_into(rows, w, b, slab, bounds):
    """ExpandDepthwiseConv's 1x1 expansion of ``rows`` (the input's pixels laid out as the
    depthwise buffer's, see _padded_rows and _split_rows), clipped to ``bounds``, written
    into ``slab``, whole rows of that buffer, in one product: numpy runs one with a 3-D
    operand row by row, and that took 1.4-2.7x as long over MobileNetV2's expansions (16
    -> 96 channels of 112x112: 1.01 -> 0.50 ms). The padding's pixels are zero rows, whose
    products the caller zeroes again with the borders."""
    flat = slab.reshape(-1, slab.shape[-1])  # contiguous: whole rows of the buffer
    np.matmul(rows.reshape(-1, rows.shape[-1]), _columns_weights(w, b), out=flat)
    np.clip(flat, bounds[0], bounds[1], out=flat)


def _padded_rows(xl, ones, left, width, dtype=None):
    """Channels-last ``xl`` (H, W, C) at the padded ``width``, the image ``left`` columns
    in, zeros around it; with a channel of ones (for a bias) where ``ones``; in ``dtype``
    (xl's)."""
    h, w, c = xl.shape
    rows = np.empty((h, width, c + ones), dtype=xl.dtype if dtype is None else dtype)
    rows[:, :left] = 0
    rows[:, left + w :] = 0
    rows[:, left : left + w, :c] = xl
    if ones:
        rows[:, left : left + w, c] = 1
    return rows


def _split_rows(xl, ones, left, half, dtype=None):
    """_padded_rows with the columns stored by parity, as _split_columns stores them:
    (H, 2, half, C [+ 1])."""
    h, w, c = xl.shape
    rows = np.zeros((h, 2, half, c + ones), dtype=xl.dtype if dtype is None else dtype)
    for parity in (0, 1):
        taken, at = _parity_span(left, w, half, parity)
        rows[:, parity, at, :c] = xl[:, taken]
        if ones:
            rows[:, parity, at, c] = 1
    return rows


# pixels from which ExpandDepthwiseConv writes the expansion into the depthwise's buffer:
# at 7x7 the row-by-row products it once made cost more than it saved; as one product it
# is no faster there either (MobileNetV2 and V3-Small alike, fused from 1 pixel)
_EXPAND_FROM = 196


def _integer_conv(x, x_zero, w, w_zero, auto_pad, dilations, group, kernel_shape, pads, strides):
    """Exact int32 convolution of (x - x_zero) and (w - w_zero); see qlinear.integer_conv."""
    from edgerun.runtime.kernels.qlinear import integer_conv  # qlinear builds on this module

    acc, _ = integer_conv(
        x, x_zero, w, w_zero, auto_pad, dilations, group, kernel_shape, pads, strides
    )
    return acc.astype(np.int32)


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
