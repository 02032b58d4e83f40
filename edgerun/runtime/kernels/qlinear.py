"""Integer convolutions (ConvInteger, QLinearConv), exact through float32 BLAS.

The input and weights are shifted by their zero points into float32 (exact for 8-bit
values) and convolved with conv.py's im2col or depthwise machinery. Every partial sum of
an output's dot product, in whatever order BLAS adds, is at most max|x - zx| * sum|w - zw|
over that output channel's weights, so float32 is exact while that stays below 2^24; past
it, K is split into chunks that each stay below (planned once per weight tensor) and the
chunks are summed in float64. Weights stay int8 in memory and are widened per call, but
for what is derived from them once: the float32 Winograd filters of 3x3 stride-1 layers
(16/9 of their weights, four bytes each: ResNet-18's 2.4 MB of such weights take 16.8 MB,
and the model runs 13 % faster), other layers' float32 weights up to _KEPT_WEIGHTS a layer
(a depthwise layer's taps, a strided 3x3's columns), and a 1x1 layer's int8 weights
transposed for channels-last input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np

from edgerun.runtime.kernels import int8
from edgerun.runtime.kernels.conv import (
    _add_clip_rows,
    _channels_first,
    _conv,
    _is_channels_last,
    _pad,
    _padded_channels_last,
    _padded_size,
    _split_columns,
    _split_product,
    _split_size,
    _splits_columns,
    conv_geometry,
    im2col,
)
from edgerun.runtime.kernels.derived import memo, memo_with, tiled
from edgerun.runtime.kernels.linalg import ones
from edgerun.runtime.kernels.winograd import (
    FEW_TILES,
    INTEGER_FILTER_BOUND,
    integer_conv3x3,
    integer_filter,
    integer_spans,
)
from edgerun.runtime.passes.winograd import MIN_CHANNELS, MIN_OUTPUTS
from edgerun.runtime.registry import kernel

f32 = np.float32


def _span(dtype: np.dtype, zero: float | np.ndarray) -> tuple[int, int]:
    """How far below and above zero ``v - zero`` reaches over the values of ``dtype``."""
    low, high = int8.int_range(dtype)
    z = np.asarray(zero)
    return int(max(0.0, float(z.max(initial=low)) - low)), int(
        max(0.0, high - float(z.min(initial=high)))
    )


def _bound(dtype: np.dtype, zero: float | np.ndarray) -> int:
    """The largest |v - zero| over the values of integer ``dtype`` and the zero point(s)."""
    return max(_span(dtype, zero))


def _centered_weights(w, w_zero):
    """``w`` less its zero point (one, or one per output channel), in float32."""
    return _CenteredRows(w.reshape(w.shape[0], -1), w_zero)[:].reshape(w.shape)


# columns summed at once while looking for where a chunk must end: by BLAS, as _row_sums
# sums (numpy's reduceat over 64 columns took 6-7 ms of a 512-channel 3x3 layer's plan)
_PLAN_BLOCK = 256
_PLAN_ELEMENTS = 1 << 18  # weights taken at once while summing blocks (1 MB of float32)
# weights folded_matmul widens at once (4 MB of float32): fewer, and MiniLM's 1536 x 384
# product split into three of 128 columns ran 25 % slower
_WIDENED_ELEMENTS = 1 << 20
# weights a chunked convolution widens at once (1 MB of float32, the L2 cache of this
# machine's Zen 4 and of a Raspberry Pi 4): ResNet-18's 512-channel layers in blocks of 128
# output channels; blocks of 64 were slower, of 256 gained less
_WIDENED_BLOCK = 1 << 18
# more chunks than this, and the float64 sums of Winograd's products cost more than it saves
_WINOGRAD_CHUNKS = 5
# a layer's float32 Winograd filter at most this (28x its int8 weights): a 384-channel layer
_WINOGRAD_BYTES = 8 << 20


def _chunk_plan(
    key: np.ndarray, rows: Callable[[], np.ndarray], x_span: tuple[int, int]
) -> tuple[tuple[int, ...], int]:
    """Starts of the K chunks whose partial sums stay exact in float32, and a bound on the
    accumulator. ``rows()`` gives the centered weights as (outputs, K); with x - zx in
    [-below, above], a partial sum over any part of a chunk is at most
    max(above * P + below * N, below * P + above * N), P and N the chunk's positive and
    negative weight sums (so nonnegative activations, as after ReLU, need half the room).
    Planned once per weight tensor (``key``) and span, where the whole K could pass 2^24
    (_weight_reach), from the block sums that bound took."""
    reach = _weight_reach(key, rows, x_span)
    if reach < int8.FLOAT32_EXACT:
        return (0,), reach
    blocks = memo(key, "block sums", lambda: _block_sums(rows()))
    return memo(key, ("chunk plan", x_span), lambda: _plan_chunks(rows(), x_span, blocks))


def _weight_reach(key: np.ndarray, rows: Callable[[], np.ndarray], x_span: tuple[int, int]) -> int:
    """The bound _chunk_plan puts on every partial sum over the whole K, from the sums of
    each row's positive and negative weights (worked out once per weight tensor ``key``,
    by blocks of columns that a chunk plan reuses, and shared by the spans a layer is tried
    with: uncentered, then centered)."""

    def whole() -> tuple[np.ndarray, np.ndarray]:
        blocks = memo(key, "block sums", lambda: _block_sums(rows()))
        return blocks[0].sum(axis=1), blocks[1].sum(axis=1)

    positive, negative = memo(key, "row sums", whole)
    return int(_reach(positive, negative, x_span).max(initial=0))


def _block_sums(rows, largest: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """_row_sums of every _PLAN_BLOCK columns of 2-D ``rows``: (rows, blocks) in float64,
    whose sums along rows are exact."""
    k = rows.shape[-1]
    edges = range(0, k, _PLAN_BLOCK)
    positive, negative = np.empty((2, rows.shape[0], len(edges)))
    for j, lo in enumerate(edges):
        positive[:, j], negative[:, j] = _row_sums(rows[:, lo : lo + _PLAN_BLOCK], largest)
    return positive, negative


def _reach(positive: np.ndarray, negative: np.ndarray, x_span: tuple[int, int]) -> np.ndarray:
    """The largest |partial sum| of dot products with weights whose positive and negative
    parts sum to ``positive`` and ``negative``, for inputs in [-below, above]."""
    below, above = x_span
    return np.maximum(above * positive + below * negative, below * positive + above * negative)


def _row_sums(rows, largest: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """(sum of the positive entries, sum of minus the negative ones) along each row of 2-D
    integer-valued ``rows`` (|w| <= ``largest``: 255 for centered 8-bit weights; an array
    or _CenteredRows): as products with a column of ones, which BLAS streams 4-6x faster than
    numpy reduces rows (in float32 while K * largest is exact in it), _PLAN_ELEMENTS at a
    time, so that no weight-sized temporary is made (a 512-channel 3x3 layer's were two
    of 9.4 MB, the most int8 ResNet-18's first run held at once)."""
    stored = rows.w if isinstance(rows, _CenteredRows) else rows
    if not stored.flags.c_contiguous and stored.T.flags.c_contiguous:
        # rows stored as columns (a MatMul's weights, one row per output column)
        return _sums_down(stored.T, getattr(rows, "zero", None), largest)
    count, k = rows.shape
    dtype: type = np.float32 if k * largest < int8.FLOAT32_EXACT else np.float64
    column = ones(k, np.dtype(dtype))
    step = max(1, _PLAN_ELEMENTS // k)
    scratch = np.empty((min(step, count), k), dtype)
    sums, magnitudes = np.empty(count), np.empty(count)
    for r in range(0, count, step):
        # a view where it is dtype already
        block: np.ndarray = np.asarray(rows[r : r + step], dtype)
        sums[r : r + step] = np.matmul(block, column)
        magnitudes[r : r + step] = np.matmul(np.abs(block, out=scratch[: len(block)]), column)
    return (magnitudes + sums) / 2, (magnitudes - sums) / 2


def _sums_down(matrix, zero=None, largest: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """_row_sums of the columns of (K, N) ``matrix`` less ``zero`` (None, one, or one per
    column): BLAS down blocks of its contiguous rows (ones @ block), each block's sums
    exact in float32 and added in float64. Read across, as rows of its transpose, the
    strided widening of dynamic MiniLM's 36 weight matrices took 18 ms of its first run."""
    k, n = matrix.shape
    step = max(1, min(_PLAN_ELEMENTS // max(n, 1), (int8.FLOAT32_EXACT - 1) // largest))
    scratch = np.empty((min(step, k), n), f32)
    sums, magnitudes = np.zeros(n), np.zeros(n)
    for r in range(0, k, step):
        part = matrix[r : r + step]
        block = scratch[: len(part)]
        if zero is not None:
            np.subtract(part, zero, out=block, dtype=f32)
        elif part.dtype != f32:
            np.copyto(block, part, casting="unsafe")
        else:
            block = part  # summed as it is; its magnitudes go to the scratch
        row = ones(len(part), np.dtype(f32))
        sums += row @ block
        magnitudes += row @ np.abs(block, out=scratch[: len(part)])
    return (magnitudes + sums) / 2, (magnitudes - sums) / 2


class _CenteredRows:
    """Integer weights ``w`` (rows, K) less their zero points (one per row, or one for
    all), read in float32 a slice at a time: what _row_sums and _plan_chunks sum, without
    a float32 copy of the whole layer alive at once. Indexed as they index arrays: rows by
    a slice or an index array, then optionally columns by a slice."""

    def __init__(self, w: np.ndarray, zero) -> None:
        self.w = w
        self.shape = w.shape
        self.zero = None if zero is None or not np.any(zero) else np.asarray(zero, f32).ravel()

    def __getitem__(self, index):
        return self.into(index)

    def into(self, index, out: np.ndarray | None = None) -> np.ndarray:
        """The centered ``w[index]`` in float32, written into ``out`` where given."""
        part = self.w[index]
        out = np.empty(part.shape, f32) if out is None else out
        if self.zero is None:
            np.copyto(out, part, casting="unsafe")
        elif self.zero.size == 1:
            np.subtract(part, self.zero[0], out=out)
        else:
            rows = index[0] if isinstance(index, tuple) else index
            np.subtract(part, self.zero[rows].reshape(-1, 1), out=out)
        return out


def _plan_chunks(w, x_span: tuple[int, int], blocks=None, largest: int = 255):
    """_chunk_plan's starts and bound, from ``blocks`` (_block_sums of ``w``, taken here
    where not given). The chunks are as long as they can be: scanned block by block, then
    column by column inside the block where a bound is crossed."""
    k = w.shape[-1]
    positive, negative = _block_sums(w, largest) if blocks is None else blocks
    # the positive and negative sums before every _PLAN_BLOCK-th column (exact in float64)
    pos_at = np.zeros((positive.shape[0], positive.shape[1] + 1))
    neg_at = np.zeros_like(pos_at)
    np.cumsum(positive, axis=1, out=pos_at[:, 1:])
    np.cumsum(negative, axis=1, out=neg_at[:, 1:])

    def at(column: int, rows: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]:
        # the positive and negative sums of ``rows`` before ``column``
        block = column // _PLAN_BLOCK
        part = w[rows, block * _PLAN_BLOCK : column]
        pos = np.maximum(part, 0).sum(axis=1)
        return pos_at[rows, block] + pos, neg_at[rows, block] + pos - part.sum(axis=1)

    def first_over(s: int) -> int:
        # the first column whose sum from column s no longer fits (the sums grow along K)
        block = s // _PLAN_BLOCK
        p0, n0 = at(s, slice(None))
        ends = _reach(
            pos_at[:, block + 1 :] - p0[:, None], neg_at[:, block + 1 :] - n0[:, None], x_span
        )
        over = np.flatnonzero(ends.max(axis=0) >= int8.FLOAT32_EXACT)
        if not over.size:
            return k
        lo = max(s, (block + int(over[0])) * _PLAN_BLOCK)  # the block where it is crossed
        hi = min(k, (block + int(over[0]) + 1) * _PLAN_BLOCK)
        # only the rows past the bound by that block's end can cross inside it: the column
        # by column sums run over those alone (a Winograd plan has 15 K rows)
        rows = np.flatnonzero(ends[:, over[0]] >= int8.FLOAT32_EXACT)
        p1, n1 = at(lo, rows)
        part = w[rows, lo:hi]
        pos = np.cumsum(np.maximum(part, 0), axis=1)
        neg = pos - np.cumsum(part, axis=1)
        grown = _reach((p1 - p0[rows])[:, None] + pos, (n1 - n0[rows])[:, None] + neg, x_span)
        grown = grown.max(axis=0)
        return max(s + 1, lo + int(np.flatnonzero(grown >= int8.FLOAT32_EXACT)[0]))

    total = int(_reach(pos_at[:, -1], neg_at[:, -1], x_span).max(initial=0))
    starts = [0]
    while total >= int8.FLOAT32_EXACT and (end := first_over(starts[-1])) < k:
        starts.append(end)
    return tuple(starts), total


def exact_matmul(
    a: np.ndarray, b: np.ndarray, a_span: tuple[int, int], b_bound: int, key: np.ndarray
) -> tuple[np.ndarray, int]:
    """a @ b of integer-valued float32 arrays (a in [-a_span[0], a_span[1]], |b| <= b_bound):
    float32 when every partial sum provably stays below 2^24, else float32 chunks of K
    summed in float64. ``key``, the raw weight tensor, keys the chunk plan."""
    k = a.shape[-1]
    if k * max(a_span) * b_bound < int8.FLOAT32_EXACT:
        return np.matmul(a, b), k * max(a_span) * b_bound
    starts, bound = _chunk_plan(key, lambda: np.swapaxes(b, -1, -2).reshape(-1, k), a_span)
    if len(starts) == 1:
        return np.matmul(a, b), bound
    acc = None
    for lo, hi in zip(starts, (*starts[1:], k), strict=True):
        part = np.matmul(a[..., lo:hi], b[..., lo:hi, :])
        acc = part.astype(np.float64) if acc is None else np.add(acc, part, out=acc)
    assert acc is not None
    return acc, bound


def integer_conv(x, x_zero, w, w_zero, auto_pad, dilations, group, kernel_shape, pads, strides):
    """The exact convolution of (x - x_zero) and (w - w_zero): float32, or float64 when the
    sums needed chunking. Returns (accumulator, bound on |accumulator|). Chunked, each
    chunk's weights are widened to float32 as they are multiplied, _WIDENED_BLOCK of them
    at a time (a block of output channels of an ungrouped layer) into one buffer, which
    BLAS then reads from cache: widened a third of the layer at a time (3 MB of a
    512-channel 3x3 layer), they went to memory and back, and int8 ResNet-18's three such
    layers took 0.25-0.45 ms longer each."""
    xz = int8.scalar(x_zero)
    xs = int8.centered(x, xz)
    n, c = x.shape[:2]
    m = w.shape[0]
    k = w[0].size
    if c != w.shape[1] * group or m % group:
        raise ValueError(f"x {x.shape} and w {w.shape} do not match group={group}")
    centered = _CenteredRows(w.reshape(m, k), w_zero)
    starts, bound = _chunk_plan(w, lambda: centered, _span(x.dtype, xz))
    # padding the shifted input with 0 is padding the raw input with its zero point
    if len(starts) == 1:
        ws = _centered_weights(w, w_zero)
        acc = _conv(xs, ws, None, auto_pad, dilations, group, kernel_shape, pads, strides)
        return acc, bound
    kernel_shape, strides, dilations, begin, end, out_shape = conv_geometry(
        x.shape, w.shape, auto_pad, dilations, kernel_shape, pads, strides
    )
    cols = im2col(_pad(xs, begin, end), kernel_shape, strides, dilations, out_shape)
    cols = cols.reshape(n, group, k, math.prod(out_shape))
    acc = np.zeros((n, group, m // group, cols.shape[-1]), np.float64)
    chunks = list(zip(starts, (*starts[1:], k), strict=True))
    if group == 1:
        widest = max(hi - lo for lo, hi in chunks)
        rows = max(1, min(m, _WIDENED_BLOCK // widest))
        buffer = np.empty((rows, widest), f32)
        for r0 in range(0, m, rows):
            r1 = min(m, r0 + rows)
            for lo, hi in chunks:
                block = centered.into((slice(r0, r1), slice(lo, hi)), buffer[: r1 - r0, : hi - lo])
                acc[:, 0, r0:r1] += np.matmul(block, cols[:, 0, lo:hi])
        return acc.reshape(n, m, *out_shape), bound
    for lo, hi in chunks:
        chunk = centered[:, lo:hi].reshape(group, m // group, hi - lo)
        acc += np.matmul(chunk, cols[:, :, lo:hi])
    return acc.reshape(n, m, *out_shape), bound


def _winograd_conv(x, x_zero, w, w_zero, B, auto_pad, dilations, group, pads, strides):
    """(x - zx) conv (w - zw) + B by Winograd F(2x2, 3x3) (kernels/winograd.py), in float32
    rounded from the exact sum as onnxruntime converts its int32 accumulator, where the
    float plan would take it (passes/winograd.py: 3x3, stride 1, ungrouped, enough channels
    and outputs) and a block of tiles too large for one exact float32 product needs at most
    _WINOGRAD_CHUNKS of them (_winograd_starts); None elsewhere. Its filter is 4x the exact
    one, so every product is an integer."""
    if w.ndim != 4 or w.shape[2:] != (3, 3) or group != 1 or min(w.shape[:2]) < MIN_CHANNELS:
        return None
    if x.ndim != 4 or x.shape[1] != w.shape[1]:
        return None
    if any(v != 1 for v in (*(strides or ()), *(dilations or ()))):
        return None
    *_, begin, end, out_shape = conv_geometry(
        x.shape, w.shape, auto_pad, None, [3, 3], pads, strides
    )
    tiles = x.shape[0] * ((out_shape[0] + 1) // 2) * ((out_shape[1] + 1) // 2)
    if min(begin + end) < 0 or out_shape[0] * out_shape[1] < MIN_OUTPUTS or tiles < FEW_TILES:
        return None
    u4, u_squares = memo_with(w, w_zero, "winograd", lambda: _winograd_filter(w, w_zero))
    if u4 is None:
        return None
    xz = int8.scalar(x_zero)
    x_span = _span(x.dtype, xz)
    b = None if B is None else B.reshape(-1).astype(np.float64)
    if memo(u4, ("fits any input", x_span), lambda: _fits_any_input(u4, x_span)):
        u_squares = None  # no block needs checking
    starts = partial(_winograd_starts, u4, x_span)
    return integer_conv3x3(int8.centered(x, xz), u4, u_squares, starts, b, begin, out_shape)


def _winograd_filter(w, w_zero):
    """(transformed filter, the largest squared norm of its columns at each of the 16 tap
    pairs), or (None, None) where the filter would pass _WINOGRAD_BYTES."""
    if w.size * 16 // 9 * 4 > _WINOGRAD_BYTES:
        return None, None
    u4 = integer_filter(_centered_weights(w, w_zero))
    # float32 sums of squares: fits_float32's margin allows for their rounding too
    u_squares = np.einsum("pck,pck->pk", u4, u4).max(axis=1)
    return u4, u_squares


def _fits_any_input(u4, x_span) -> bool:
    """Whether every partial sum of the products stays below 2^24 for any input in
    ``x_span``: the largest reach of a column of u4 (as _plan_chunks bounds it, with the
    transformed tiles' spans) over all channels at once."""
    middle, others = integer_spans(*x_span)
    positive, negative = memo(u4, "column sums", lambda: _column_sums(u4))
    for taps, span in ((slice(5, 6), middle), (np.arange(16) != 5, others)):
        if _reach(positive[taps], negative[taps], span).max(initial=0) >= int8.FLOAT32_EXACT:
            return False
    return True


def _column_sums(u4) -> tuple[np.ndarray, np.ndarray]:
    """_sums_down each tap pair's (C, K) plane of u4: (16, K) each, BLAS down the
    contiguous planes, where _row_sums across a transposed view of them took 12 ms over
    int8 ResNet-18's ten Winograd layers."""
    planes = [_sums_down(plane, None, INTEGER_FILTER_BOUND) for plane in u4]
    return np.stack([p for p, _ in planes]), np.stack([n for _, n in planes])


def _winograd_starts(u4, x_span) -> tuple[int, ...] | None:
    """Chunk starts over channels that keep every partial sum of the products exact for
    any input in ``x_span``, or None where more than _WINOGRAD_CHUNKS would be needed (the
    layer then convolves otherwise). The transformed tiles reach further than the input
    (integer_spans), so they need chunks sooner. Planned only when a block of actual tiles
    does not fit in one product (winograd.integer_conv3x3): ResNet-18's never do, and its
    first run no longer takes the 75 ms this plan costs over its 3x3 layers."""
    return memo(u4, ("chunk starts", x_span), lambda: _plan_winograd_chunks(u4, x_span))


def _plan_winograd_chunks(u4, x_span) -> tuple[int, ...] | None:
    middle, others = integer_spans(*x_span)
    c = u4.shape[1]
    rest = np.delete(u4, 5, axis=0).transpose(0, 2, 1).reshape(-1, c)
    starts = sorted(
        {
            *_plan_chunks(rest, others, largest=INTEGER_FILTER_BOUND)[0],
            *_plan_chunks(u4[5].T, middle, largest=INTEGER_FILTER_BOUND)[0],  # summed down u4[5]
        }
    )
    return tuple(starts) if len(starts) <= _WINOGRAD_CHUNKS else None


def _fold_terms(key, wc, x_zero, x_dtype, bias) -> tuple[np.ndarray, float]:
    """The extra weight column of a product on the uncentered input: bias - zx * (row sums
    of the centered weights ``wc``, one row per output: an array or _CenteredRows), and a
    bound on every partial sum of a dot product with it (the largest |x| times the row's
    absolute sum, plus |column|). Derived once per weight tensor (``key``, the weights as
    stored), bias and zero point."""
    return memo_with(
        key, bias, ("folded", x_zero, x_dtype), lambda: _folded_terms(wc, x_zero, x_dtype, bias)
    )


def _folded_terms(wc, x_zero, x_dtype, bias) -> tuple[np.ndarray, float]:
    positive, negative = _row_sums(wc)
    column = -x_zero * (positive - negative)
    if bias is not None:
        column += bias.reshape(-1).astype(np.float64)
    low, high = int8.int_range(x_dtype)
    reach = max(-low, high) * (positive + negative) + np.abs(column)
    return column, float(reach.max(initial=0))


def _is_pointwise(x, w, auto_pad, group, pads) -> bool:
    """A 1x1, unpadded, ungrouped convolution: any strides (and dilations, which a 1x1
    kernel never uses) take every stride-th pixel, a view of the input."""
    return (
        x.ndim == 4
        and group == 1
        and w.shape[2:] == (1, 1)
        and auto_pad in ("NOTSET", "", "VALID")
        and not any(pads or [])
    )


def pointwise_conv(x, x_zero, w, w_zero, bias):
    """(x - zx) conv (w - zw) + bias for a 1x1, stride-1, unpadded, ungrouped convolution
    as one float32 matmul: x enters uncentered (a cast instead of a subtraction) next to a
    row of ones, and the weights' extra column carries the bias less zx times their row
    sums, so neither the bias nor the zero point costs a pass over the output. None where
    some partial sum could pass 2^24 (then integer_conv's chunks are needed). ``x`` may be
    a strided view (a strided 1x1 convolution's pixels): it is read once, as it is cast."""
    n, c, h, width = x.shape
    m = w.shape[0]
    xl = x.transpose(0, 2, 3, 1)
    channels_last = c > 1 and x.strides[1] == x.itemsize
    # channels-last rows multiply (C + 1, M) weights laid out in that order: OpenBLAS ran
    # the transposed view of (M, C + 1) ones up to 1.5x slower on small images (conv.py).
    # Widening a transposed view costs 4x a contiguous one, so the int8 weights are kept
    # transposed too (their size again, in int8)
    if channels_last:
        wb = np.empty((c + 1, m), f32)
        wi, wc = memo(w, "transposed", lambda: np.ascontiguousarray(w.reshape(m, c).T)), wb[:c]
        zero_shape = (1, -1)
    else:
        wb = np.empty((m, c + 1), f32)
        wi, wc = w.reshape(m, c), wb[:, :c]
        zero_shape = (-1, 1)
    if w_zero is None or not np.any(w_zero):
        np.copyto(wc, wi, casting="unsafe")
    else:
        np.subtract(wi, np.asarray(w_zero, f32).reshape(zero_shape), out=wc)
    if channels_last:
        wc = wc.T  # (M, C) as _fold_terms reads it
    column, bound = _fold_terms(w, wc, float(int8.scalar(x_zero)), x.dtype, bias)
    if bound >= int8.FLOAT32_EXACT:
        return None
    if channels_last:
        wb[c] = column
        rows = np.empty((n * h * width, c + 1), f32)
        np.copyto(rows.reshape(n, h, width, c + 1)[..., :c], xl, casting="unsafe")
        rows[:, c] = 1
        return np.matmul(rows, wb).reshape(n, h, width, m).transpose(0, 3, 1, 2)
    wb[:, c] = column
    cols = np.empty((n, c + 1, h * width), f32)
    np.copyto(cols.reshape(n, c + 1, h, width)[:, :c], x, casting="unsafe")
    cols[:, c] = 1
    return np.matmul(wb, cols).reshape(n, m, h, width)


def folded_pointwise_weights(w, w_zero, bias, x_zero: float, x_dtype):
    """A 1x1 layer's weights (M outputs of C weights, any layout that reshapes to (M, C))
    as (C + 1, M) float32 for rows of uncentered input values and a one: the weights less
    their zero points, channels in rows, and a last row of the bias less x_zero times each
    filter's sum (_fold_terms); with a bound on every partial sum of those products."""
    m = w.shape[0]
    c = w.size // m
    centered = _CenteredRows(w.reshape(m, c), w_zero)
    column, bound = _fold_terms(w, centered, x_zero, x_dtype, bias)
    wb = np.empty((c + 1, m), f32)
    wb[:c] = centered[:].T
    wb[c] = column
    return wb, bound


def largest_filter_sum(ws) -> int:
    """The largest sum of |weights| over one output channel of integer-valued float32
    weights ``ws`` (exact), worked out once per array: a bound on a depthwise layer's sums."""
    return memo(
        ws, "largest row sum", lambda: int(np.abs(ws).reshape(len(ws), -1).sum(axis=1).max())
    )


def _shifted_bias(ws, bias, xz):
    """(bias - xz * each filter's sum, in float32, or None; a bound on its magnitude)."""
    if bias is None and not xz:
        return None, 0
    total = -xz * ws.reshape(ws.shape[0], -1).sum(axis=1, dtype=np.float64)
    if bias is not None:
        total += bias.reshape(-1)
    return total.astype(f32), int(np.abs(total).max(initial=0))


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
    acc, _ = integer_conv(
        x, x_zero_point, w, w_zero_point, auto_pad, dilations, group, kernel_shape, pads, strides
    )
    return acc.astype(np.int32)


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
    acc = None
    if _is_pointwise(x, w, auto_pad, group, pads):
        step = (slice(None), slice(None), *(slice(None, None, s) for s in strides or (1, 1)))
        acc = pointwise_conv(x[step], x_zero_point, w, w_zero_point, B)
    if acc is None:
        acc = _biased_conv(
            x,
            x_zero_point,
            w,
            w_zero_point,
            B,
            auto_pad,
            dilations,
            group,
            kernel_shape,
            pads,
            strides,
        )
    return requantized(acc, x_scale, w_scale, y_scale, y_zero_point)


def requantized(acc, x_scale, w_scale, y_scale, y_zero_point):
    """A convolution's exact accumulator (N, M, ...) requantized as onnxruntime does: times
    x_scale * w_scale / y_scale per output channel, rounded, the zero point added,
    saturated; a float32 ``acc`` is overwritten."""
    multiplier = _conv_multiplier(x_scale, w_scale, y_scale, acc.ndim - 2)
    out = np.dtype(y_zero_point.dtype) if y_zero_point is not None else np.dtype(np.uint8)
    y = acc if acc.dtype == f32 else acc.astype(f32)  # in the accumulator's layout
    _scale_channels(y, multiplier)
    return int8.round_saturate(y, int(int8.scalar(y_zero_point)), out)


def _scale_channels(y, multiplier):
    """y *= multiplier (one per channel, or one), in place; on a channels-last ``y`` the
    multipliers are tiled along its last spatial axis, so the inner loop runs (width x C)
    long rows instead of C-long ones (about 1.6x faster on MobileNetV2's layers)."""
    yl = y.transpose(0, *range(2, y.ndim), 1)
    if np.ndim(multiplier) and y.ndim > 2 and y.shape[1] > 1 and yl.flags.c_contiguous:
        width = y.shape[-1]
        rows = yl.reshape(-1, width * y.shape[1])
        rows *= tiled(multiplier, width)
    else:
        np.multiply(y, multiplier, out=y)


# (ids of x_scale, w_scale, y_scale, spatial rank) -> (the three, multiplier): the scales are
# the plan's constants, so each convolution computes its multiplier once; holding the three
# keeps their ids from being reused while cached
_MULTIPLIERS: dict[tuple, tuple[tuple, np.ndarray | np.float32]] = {}


def _conv_multiplier(x_scale, w_scale, y_scale, rank: int) -> np.ndarray | np.float32:
    """onnxruntime's multiplier per output channel, x_scale * w_scale / y_scale in float32,
    shaped (channels, 1, ...) to broadcast over the accumulator (a scalar when per tensor)."""
    key = (id(x_scale), id(w_scale), id(y_scale), rank)
    hit = _MULTIPLIERS.get(key)
    if hit is not None:  # the entry holds the three, so their ids name them still
        return hit[1]
    scale = f32(int8.scalar(x_scale)) * np.asarray(w_scale, f32).reshape(-1)
    scale = (scale / f32(int8.scalar(y_scale))).astype(f32)
    multiplier = scale.reshape((-1,) + (1,) * rank) if scale.size > 1 else scale[0]
    if len(_MULTIPLIERS) > 4096:  # scales made per call (not a plan's constants)
        _MULTIPLIERS.clear()
    _MULTIPLIERS[key] = ((x_scale, w_scale, y_scale), multiplier)
    return multiplier


def _biased_conv(x, x_zero, w, w_zero, B, auto_pad, dilations, group, kernel_shape, pads, strides):
    """integer_conv plus the int32 bias, exactly (float64 where float32 could not hold it;
    Winograd's float32 is rounded from the exact sum, as onnxruntime converts its int32)."""
    y = _winograd_conv(x, x_zero, w, w_zero, B, auto_pad, dilations, group, pads, strides)
    if y is not None:
        return y
    found = uncentered_conv(
        x, x_zero, w, w_zero, B, auto_pad, dilations, group, kernel_shape, pads, strides
    )
    if found is not None:
        return found[0]  # the bias is in
    acc, bound = integer_conv(
        x, x_zero, w, w_zero, auto_pad, dilations, group, kernel_shape, pads, strides
    )
    tail = (1,) * (acc.ndim - 2)
    if B is not None:  # the int32 bias joins the exact accumulator before requantization
        b = B.reshape((-1, *tail))
        if acc.dtype == np.float32 and bound + int(np.abs(b).max(initial=0)) < int8.FLOAT32_EXACT:
            acc += b.astype(f32)
        else:
            acc = acc + b.astype(np.float64)
    return acc


# int8 weights a general convolution keeps float32 copies of (two: centered, and conv.py's
# columns layout): 8 MB a layer at most, as _WINOGRAD_BYTES caps Winograd's filters
_KEPT_WEIGHTS = 1 << 20


def uncentered_conv(
    x, x_zero, w, w_zero, B, auto_pad, dilations, group, kernel_shape, pads, strides
):
    """integer_conv plus the int32 bias ``B`` (or none: the exact centered sums), and a
    bound on them: the input cast to float32 as it is copied padded with its zero point,
    uncentered, and zx times each filter's sum taken off through the bias (sum (x - zx) w
    + b = sum x w + (b - zx sum w)), which conv.py then takes into its product (a row of
    ones under the columns) or, for a depthwise layer, adds tiled along its channels-last
    rows; one pass over the input and none over the result, where centering, padding and
    the bias took four. None where some partial sum could pass 2^24 in one float32
    product (uncentered 8-bit values reach further: integer_conv chunks). The float32
    weights (and conv.py's layout of them) are kept up to _KEPT_WEIGHTS weights a layer,
    as Winograd's filters are capped; larger layers widen theirs per call, as before."""
    if x.ndim < 3:
        return None
    xz = int8.scalar(x_zero)
    m = w.shape[0]
    low, high = int8.int_range(x.dtype)
    span = (max(0, -low), max(0, high))
    reach = _weight_reach(w, lambda: _CenteredRows(w.reshape(m, -1), w_zero), span)
    if reach >= int8.FLOAT32_EXACT:
        return None
    if w.size <= _KEPT_WEIGHTS:
        ws = memo_with(w, w_zero, "centered", lambda: _centered_weights(w, w_zero))
    else:
        ws = _centered_weights(w, w_zero)
    b, b_bound = memo_with(ws, B, ("less zero point", xz), lambda: _shifted_bias(ws, B, xz))
    if reach + b_bound >= int8.FLOAT32_EXACT:
        return None
    kernel_shape, strides, dilations, begin, end, out_shape = conv_geometry(
        x.shape, w.shape, auto_pad, dilations, kernel_shape, pads, strides
    )
    if min(begin + end) < 0:
        return None
    depthwise = group == x.shape[1] == m and group > 1
    if depthwise and _splits_columns(m, strides, dilations):  # parity-split, as conv.py would
        size = _split_size(x.shape[2:], begin, kernel_shape, strides, dilations, out_shape)
        xs = _split_columns(x, begin, size, dtype=f32, fill=xz)
        y = _split_product(xs, ws, kernel_shape, strides, dilations, out_shape)
        _add_clip_rows(y, b, None, out_shape[-1])
        return _channels_first(y), reach + b_bound
    if _is_channels_last(x) or depthwise:  # padded in the layout conv.py reads it in
        size = _padded_size(x.shape[2:], begin, kernel_shape, strides, dilations, out_shape)
        xp = _channels_first(_padded_channels_last(x, begin, size, dtype=f32, fill=xz))
    else:  # an image, channels-first: its few channels are copied plane by plane
        xp = _pad(x, begin, end, value=xz, dtype=f32)
    no_pads = [0] * (2 * len(out_shape))
    y = _conv(xp, ws, b, "NOTSET", dilations, group, kernel_shape, no_pads, strides)
    return y[(slice(None), slice(None), *(slice(0, o) for o in out_shape))], reach + b_bound


def _row_param(v, a):
    # per-row zero point / scale of ``a`` [..., M, K]: an [M] vector becomes [M, 1]
    v = np.asarray(v)
    return v.reshape(-1, 1) if v.ndim == 1 and a.ndim >= 2 and v.size > 1 else v


def centered_matmul(a, a_zero_point, b, b_zero_point, key=None):
    """(a - za) @ (b - zb) exactly (a zero point vector is per row of a, per column of b),
    and a bound on the result; ``key`` (default ``b``) is the weight tensor as stored."""
    az = 0 if a_zero_point is None else _row_param(a_zero_point, a)
    bz = 0 if b_zero_point is None else np.asarray(b_zero_point)
    a_span, b_bound = _span(a.dtype, az), _bound(b.dtype, bz)
    ac = np.subtract(a, np.asarray(az, f32), dtype=f32) if np.any(az) else a.astype(f32)
    bc = np.subtract(b, np.asarray(bz, f32), dtype=f32) if np.any(bz) else b.astype(f32)
    return exact_matmul(ac, bc, a_span, b_bound, b if key is None else key)


def folded_matmul(a, a_zero_point, b, b_zero_point, bias=None, key=None):
    """(a - za) @ (b - zb) + bias for a 2-D ``b`` (weights) and a per-tensor za, as one
    float32 matmul on the uncentered ``a`` next to a column of ones, the bias less za times
    the column sums of b - zb riding in an extra row of b: no centering pass over ``a`` and
    no bias pass over the result. None where a per-row za or some partial sum past 2^24
    needs centered_matmul's general path. ``key`` (default ``b``): the weights as stored.
    The int8 weights are widened up to _WIDENED_ELEMENTS at a time, each block of output
    columns multiplied as it is widened, so that a large classifier (VGG-16's 25088 x 4096:
    411 MB in float32) takes a bounded temporary."""
    if b.ndim != 2 or a.ndim < 1 or (a_zero_point is not None and np.size(a_zero_point) != 1):
        return None
    k, n = b.shape
    key = b if key is None else key
    za = float(int8.scalar(a_zero_point))
    columns = _CenteredRows(b.T, b_zero_point)  # one row per output column
    column, bound = _fold_terms(key, columns, za, a.dtype, bias)
    if bound >= int8.FLOAT32_EXACT:
        return None
    rows = np.empty((*a.shape[:-1], k + 1), f32)
    np.copyto(rows[..., :k], a, casting="unsafe")
    rows[..., k] = 1
    out = np.empty((*a.shape[:-1], n), f32)
    blocks = max(1, -(-(k + 1) * n // _WIDENED_ELEMENTS))
    step = -(-n // blocks)
    # laid out as b is stored (a transposed b, as Gemm's transB gives, copies row by row)
    by_rows = b.T.flags.c_contiguous
    scratch = np.empty((step, k + 1) if by_rows else (k + 1, step), f32)
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        wb = scratch[: hi - lo].T if by_rows else scratch[:, : hi - lo]
        columns.into(slice(lo, hi), wb[:k].T)
        wb[k] = column[lo:hi]
        np.matmul(rows, wb, out=out[..., lo:hi])
    return out


@kernel("MatMulInteger", since=10)
def mat_mul_integer_10(A, B, a_zero_point=None, b_zero_point=None):
    acc, _ = centered_matmul(A, a_zero_point, B, b_zero_point)
    return acc.astype(np.int32)


@kernel("QLinearMatMul", since=10)
def q_linear_mat_mul_10(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    out = np.dtype(y_zero_point.dtype) if y_zero_point is not None else np.dtype(a.dtype)
    if out.kind not in "iu":
        raise ValueError(f"QLinearMatMul to {out} is not supported (int8 and uint8 are)")
    acc = folded_matmul(a, a_zero_point, b, b_zero_point)
    if acc is None:
        acc, _ = centered_matmul(a, a_zero_point, b, b_zero_point)
    # onnxruntime's multiplier: a_scale * b_scale / y_scale in float32 (per row / column)
    scale = _row_param(a_scale, a).astype(f32) * np.asarray(b_scale, f32)
    scale = (scale / np.asarray(y_scale, f32)).astype(f32)
    zero = 0 if y_zero_point is None else int(int8.scalar(y_zero_point))
    return int8.requantize(acc, scale, zero, out)
