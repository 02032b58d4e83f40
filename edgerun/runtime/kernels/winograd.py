"""3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3) and F(4x4, 3x3).

Each 2x2 block of outputs comes from the 4x4 input tile under it. The tile is transformed
(B^T d B, adds only), multiplied by the transformed filter (G g G^T, made once at load by
passes/winograd.py) and summed over input channels, and the 16 products are transformed
back (A^T m A, adds only). Over all tiles at once the middle step is 16 matrix products
[tiles, C] @ [C, K]: 2.25x fewer multiplies than im2col's one product [K, 9C] @ [9C, HW],
and no 9x column copy. Its rounding error is that of the direct sum (the transforms'
coefficients are 0, +-1 and +-1/2).

In numpy the products run at BLAS speed; the transforms are whole-array adds, which are
only fast over long contiguous rows. So the input is laid out channels-last with its rows
and its columns each split into even and odd, which makes every tap of a transform a plain
slice whose rows run (tiles across) x C long, and the work is cut into blocks of tile rows
that stay in cache. The result is channels-last, the layout the next layer reads fastest.

F(4x4, 3x3) takes 6x6 tiles (stride 4) to 4x4 outputs: 36 products for 16 outputs, 2.25
multiplies an output against F(2x2)'s 4, so layers of up to 128 channels (passes/winograd.py
chooses) spend less in BLAS. Its transforms have coefficients up to 5 and 8, which numpy's
adds would take some 40 passes over the tiles for, so they run as two small BLAS products
too: the Kronecker product of B^T with itself (36 x 36) times the gathered tiles, and that of
A^T (16 x 36) times the products. Its rounding error is larger, about 1e-5 of the outputs'
magnitude on ResNet-18's layers against 1e-6 for F(2x2) and the direct sum.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.conv import (
    _channels_first,
    _channels_last,
    _padded_channels_last,
    _parity_span,
    _view,
    activation_clip,
    conv_geometry,
    copy_channels_last,
    planes_alias,
)
from edgerun.runtime.kernels.int8 import FLOAT32_EXACT, fits_float32
from edgerun.runtime.registry import kernel

# F(2x2, 3x3) from Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2015)
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
# F(4x4, 3x3), the same paper's points 0, +-1, +-2
_G4 = np.array([[6, 0, 0], [-4, -4, -4], [-4, 4, -4], [1, 2, 4], [1, -2, 4], [0, 0, 24]]) / 24
_BT4 = np.array(
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ]
)
_AT4 = np.array(
    [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
)
_INPUT4 = np.kron(_BT4, _BT4).astype(np.float32)  # exact: integers up to 25
_OUTPUT4 = np.kron(_AT4, _AT4).astype(np.float32)  # exact: integers up to 64
_ONES4 = 7  # column (1, 1) of A^T kron A^T is all ones: a bias added to it reaches every output

# OpenBLAS multiplies without packing when M*N*K <= 100**3 (its "small matrix" kernels on
# x86-64); for 64-channel layers that path ran at 205 GFLOP/s against 145 for the packed
# one. Blocks of tile rows are cut below that limit, and below what keeps a block's tiles,
# products and transforms (16 x tiles x channels each) within a core's L2 cache.
_SMALL_GEMM = 100**3
_BLOCK_VALUES = 1 << 15  # tiles x channels per block: 16 x 4 bytes x this = 2 MiB, an L2
_MIN_SMALL = 112  # tiles; fewer per product and the calls cost more than the path gains
FEW_TILES = 32  # below this many tiles the channel-major product is the faster one


def winograd_filter(w: np.ndarray, tile: int = 2) -> np.ndarray:
    """(K, C, 3, 3) weights as the transformed (C, K) matrices of F(tile x tile, 3x3): shape
    (16, C, K) for tile 2, (36, C, K) for tile 4; conv3x3 tells them apart by that."""
    k, c = w.shape[:2]
    # G g G^T for every (K, C) filter at once: vec(G g G^T) = (G kron G) vec(g), one product
    # in the weights' own precision (F(2x2): each entry a sum of at most 9 exact products, an
    # ulp; F(4x4)'s sixths and twenty-fourths round in the coefficients too, a few ulps,
    # far below its transforms' rounding)
    taps = np.ascontiguousarray(w.transpose(2, 3, 1, 0)).reshape(9, c * k)
    if tile == 4:
        return (np.kron(_G4, _G4).astype(w.dtype) @ taps).reshape(36, c, k)
    return (np.kron(_G, _G).astype(w.dtype) @ taps).reshape(16, c, k)


def conv3x3(x, u, b, begin, out_shape, clip=None):
    """The convolution of ``x`` (N, C, H, W) with the filter ``u`` from winograd_filter,
    padded by ``begin`` (top, left) zeros and as many at the far sides as ``out_shape``
    needs, plus bias ``b``, then clipped to ``clip``. The result is an (N, K, *out_shape)
    view of a channels-last array, or channels-first when there are few tiles."""
    if u.shape[0] == 36:
        return _conv4x4(x, u, b, begin, out_shape, clip)
    n, k = x.shape[0], u.shape[2]
    th, tw = (out_shape[0] + 1) // 2, (out_shape[1] + 1) // 2
    xq = _parity_padded(x, begin, th, tw)
    if n * th * tw < FEW_TILES:
        return _channel_major(xq, u, b, out_shape, clip)
    y = np.empty((n, th, 2, tw, 2, k), dtype=x.dtype)
    for v, place in _tile_blocks(xq, u.shape[1:], y):
        m = np.matmul(v, u)
        if b is not None:  # A's row 1 is all ones: added to m[5] it reaches every output
            m[5] += b
        _output_tiles(m.reshape(4, 4, -1, tw, k), place, clip)
    return _channels_first(y.reshape(n, 2 * th, 2 * tw, k)[:, : out_shape[0], : out_shape[1]])


def _conv4x4(x, u, b, begin, out_shape, clip=None):
    """conv3x3 by F(4x4, 3x3): the input padded channels-last to whole 6x6 tiles (stride 4),
    the tiles gathered (36, tiles x C), transformed by one product, multiplied by the filter
    over the channels (36 products [tiles, C] @ [C, K]) and transformed back by another."""
    n, c, k = x.shape[0], x.shape[1], u.shape[2]
    th, tw = (out_shape[0] + 3) // 4, (out_shape[1] + 3) // 4
    size = (4 * th + 2, 4 * tw + 2)
    inside = [min(d, s - bg) for d, s, bg in zip(x.shape[2:], size, begin, strict=True)]
    x = x[:, :, : inside[0], : inside[1]]  # what reaches past the last tile reads nothing
    xp = _padded_channels_last(x, begin, size)  # (N, 4 th + 2, 4 tw + 2, C)
    sn, sh, sw, sc = xp.strides
    tiles = _view(xp, (6, 6, n, th, tw, c), (sh, sw, sn, 4 * sh, 4 * sw, sc))
    v = _INPUT4 @ np.ascontiguousarray(tiles).reshape(36, -1)
    m = np.matmul(v.reshape(36, n * th * tw, c), u)
    if b is not None:
        m[_ONES4] += b
    out = (_OUTPUT4 @ m.reshape(36, -1)).reshape(4, 4, n, th, tw, k)
    y = np.empty((n, th, 4, tw, 4, k), dtype=x.dtype)
    _place(out.transpose(2, 3, 0, 4, 1, 5), y, clip)
    return _channels_first(y.reshape(n, 4 * th, 4 * tw, k)[:, : out_shape[0], : out_shape[1]])


# the largest |entry| of integer_filter for centered 8-bit weights (|w| <= 255): a row of
# 2G sums to at most 3 in magnitude
INTEGER_FILTER_BOUND = 9 * 255


def integer_filter(w: np.ndarray) -> np.ndarray:
    """winograd_filter times 4 for integer-valued weights: (2G) g (2G)^T has integer
    coefficients, so the transformed filter is exact integers (|u| <= 9 * max |w|)."""
    k, c = w.shape[:2]
    # float32 is exact: each entry sums 9 products of a weight by at most 4, far below 2^24
    taps = np.ascontiguousarray(w.transpose(2, 3, 1, 0), dtype=np.float32).reshape(9, c * k)
    return (np.kron(2 * _G, 2 * _G).astype(np.float32) @ taps).reshape(16, c, k)


def integer_spans(below: int, above: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """How far below and above zero the transformed tiles B^T d B reach for d in [-below,
    above]: at (1, 1), the sum of the tile's middle four, and at the other 15 tap pairs,
    differences (B^T's rows are d0 - d2, d1 + d2, d2 - d1 and d1 - d3)."""
    return (4 * below, 4 * above), (2 * (below + above), 2 * (below + above))


def integer_conv3x3(x, u4, u_squares, starts, b, begin, out_shape):
    """The convolution of integer-valued float32 ``x`` (N, C, H, W) with the weights whose
    integer_filter is ``u4``, plus integer bias ``b`` (float64, or None), exact up to its
    final rounding to float32 (as onnxruntime converts its int32 accumulator). A block of
    tiles whose actual values keep every partial sum below 2^24 (int8.fits_float32, from
    ``u_squares`` (16,), the largest squared norm of a column of u4 at each tap pair) takes
    one float32 product over the channels: with ResNet-18's activations every block does
    (``u_squares`` None: every block fits whatever the input, unchecked).
    Any other block runs in float32 between the chunk starts that ``starts()`` plans for
    the worst input, summed in float64; where it gives None (too many chunks to gain on
    im2col) this returns None. The output transform runs in float64 unless float32 is
    exact."""
    n, (c, k) = x.shape[0], u4.shape[1:]
    th, tw = (out_shape[0] + 1) // 2, (out_shape[1] + 1) // 2
    xq = _parity_padded(x, begin, th, tw)
    y = np.empty((n, th, 2, tw, 2, k), dtype=np.float32)
    b4 = None if b is None else 4 * b  # joins the products, which are 4x the sums
    b4_bound = 0.0 if b4 is None else float(np.abs(b4).max(initial=0))
    for v, place in _tile_blocks(xq, (c, k), y):
        if u_squares is None or _tiles_fit(v, u_squares):
            m = np.matmul(v, u4)
        else:
            chunk_starts = starts()
            if chunk_starts is None:
                return None
            m = _chunked_products(v, u4, chunk_starts)
        dtype = _transform_dtype(m, b4_bound)
        _exact_output_tiles(m.reshape(4, 4, -1, tw, k), place, b4, dtype)
    return _channels_first(y.reshape(n, 2 * th, 2 * tw, k)[:, : out_shape[0], : out_shape[1]])


def _chunked_products(v, u4, starts):
    """v @ u4 as float32 products between the channel ``starts``, summed in float64."""
    ends = (*starts[1:], u4.shape[1])
    m = np.matmul(v[:, :, : ends[0]], u4[:, : ends[0]])
    for i, (lo, hi) in enumerate(zip(starts[1:], ends[1:], strict=True)):
        part = np.matmul(v[:, :, lo:hi], u4[:, lo:hi])
        m = np.add(m, part, dtype=np.float64, out=None if i == 0 else m)
    return m


def _tiles_fit(v, u_squares) -> bool:
    """Whether the transformed tiles ``v`` (16, tiles, C) times filter columns of squared
    norms ``u_squares`` (16,) keep every partial sum exact in float32; one pass over v."""
    return fits_float32(np.einsum("ptc,ptc->pt", v, v).max(axis=1), u_squares, v.shape[-1])


def _tile_blocks(xq, ck, y):
    """(transformed tiles (16, tiles, C), where the block's outputs go) for every block of
    tile rows of the parity-split input ``xq``; ``y`` is (N, th, 2, tw, 2, K)."""
    n, th, tw = y.shape[0], y.shape[1], y.shape[3]
    rows = _block_rows(tw, *ck)
    for i in range(n):
        for top in range(0, th, rows):
            end = min(th, top + rows)
            block = y[i, top:end]  # (rows, 2, tw, 2, K)
            yield (
                _input_tiles(xq[i, :, top : end + 1], tw),
                lambda j, block=block: block[:, :, :, j].swapaxes(0, 1),
            )


def _block_rows(tw, c, k):
    """Tile rows per block (see _SMALL_GEMM)."""
    tiles = _BLOCK_VALUES // max(c, k)
    if _SMALL_GEMM // (c * k) >= _MIN_SMALL:
        tiles = min(tiles, _SMALL_GEMM // (c * k))
    return max(1, tiles // tw)


def _channel_major(xq, u, b, out_shape, clip):
    # few tiles, many channels: (K, C) @ (C, tiles) keeps BLAS's long axis the channels
    n, k = xq.shape[0], u.shape[2]
    th, tw = (out_shape[0] + 1) // 2, (out_shape[1] + 1) // 2
    v = np.concatenate([_input_tiles(xq[i], tw) for i in range(n)], axis=1)
    m = np.matmul(u.transpose(0, 2, 1), v.transpose(0, 2, 1))  # (16, K, N th tw)
    if b is not None:
        m[5] += b.reshape(-1, 1)
    y = np.empty((n, k, th, 2, tw, 2), dtype=xq.dtype)
    _output_tiles(m.reshape(4, 4, k, n, th, tw), lambda j: y[..., j].transpose(3, 1, 0, 2, 4), clip)
    return y.reshape(n, k, 2 * th, 2 * tw)[:, :, : out_shape[0], : out_shape[1]]


def _input_tiles(xq, tw):
    """B^T d B for every 4x4 tile d (stride 2) of one image's parity-split padded rows
    ``xq`` (2, rows + 1, 2, tw + 1, C), as (16, rows x tw, C)."""
    th, c = xq.shape[1] - 1, xq.shape[-1]
    e0, o0, e1, o1 = xq[:, :, 0, :tw], xq[:, :, 1, :tw], xq[:, :, 0, 1:], xq[:, :, 1, 1:]
    t = np.empty((4, 2, th + 1, tw, c), dtype=xq.dtype)  # B^T along the rows, per column
    np.subtract(e0, e1, out=t[0])
    np.add(o0, e1, out=t[1])
    np.subtract(e1, o0, out=t[2])
    np.subtract(o0, o1, out=t[3])
    d0, d1, d2, d3 = t[:, 0, :th], t[:, 1, :th], t[:, 0, 1:], t[:, 1, 1:]  # tile rows 0-3
    v = np.empty((4, 4, th, tw, c), dtype=xq.dtype)
    np.subtract(d0, d2, out=v[0])
    np.add(d1, d2, out=v[1])
    np.subtract(d2, d1, out=v[2])
    np.subtract(d1, d3, out=v[3])
    return v.reshape(16, th * tw, c)


def _parity_padded(x, begin, th, tw):
    """x (N, C, H, W) zero-padded to (2 th + 2, 2 tw + 2) and laid out channels-last with
    its rows and its columns each split into even and odd: padded pixel (2 q + p, 2 r + s)
    is at [:, p, q, s, r], shape (N, 2, th + 1, 2, tw + 1, C). Every tap of the transforms
    is then a slice whose rows run whole tile rows long."""
    n, c = x.shape[:2]
    xq = np.zeros((n, 2, th + 1, 2, tw + 1, c), dtype=x.dtype)
    xl = _channels_last(x)  # (N, H, W, C)
    if planes_alias(xl):  # one blocked copy channels-last first, then contiguous slices
        xl = np.empty(xl.shape, dtype=x.dtype)
        copy_channels_last(_channels_last(x), xl)
    for p in (0, 1):
        rows = _parity_span(begin[0], x.shape[2], th + 1, p)
        for s in (0, 1):
            cols = _parity_span(begin[1], x.shape[3], tw + 1, s)
            xq[:, p, rows[1], s, cols[1]] = xl[:, rows[0]][:, :, cols[0]]
    return xq


def _output_tiles(m, place, clip):
    """A^T m A for every tile of ``m`` (4, 4, ...): output column j of every tile goes to
    ``place(j)``, a view shaped (2, ...) whose first axis is the output row."""
    r = np.empty((2, *m.shape[1:]), dtype=m.dtype)  # A^T m: two rows, four columns
    np.add(m[0], m[1], out=r[0])
    r[0] += m[2]
    np.subtract(m[1], m[2], out=r[1])
    r[1] -= m[3]
    out = np.empty((2, *m.shape[2:]), dtype=m.dtype)
    np.add(r[:, 0], r[:, 1], out=out)
    out += r[:, 2]
    _place(out, place(0), clip)
    np.subtract(r[:, 1], r[:, 2], out=out)
    out -= r[:, 3]
    _place(out, place(1), clip)


def _transform_dtype(m, b4_bound: float) -> type:
    """float32 where the output transform of the products ``m`` stays exact in it, else
    float64. Every value the transform makes is a sum of at most nine of m's entries, with
    signs, plus 4x the bias: integers below 2^24 when 9 max|m| + max|4 b| is. The chunk
    plan only bounds m below 2^24 (ResNet-18's 64-channel layers reach 2^23 at worst), but
    a real layer's products stay far below that, so this looks at their actual extremes
    (two reductions, 36 us a block against the 185 us that float64 costs over float32)."""
    if m.dtype != np.float32:
        return np.float64
    reach = max(float(m.max(initial=0)), -float(m.min(initial=0)))
    return np.float32 if 9 * reach + b4_bound < FLOAT32_EXACT else np.float64


def _exact_output_tiles(m, place, b4, dtype=np.float64):
    """_output_tiles in ``dtype`` (float64: exact for integer products; float32 where
    _transform_dtype found it exact), plus ``b4`` (4x the bias), divided by 4 as it is
    written to ``place(j)``. A float32 ``m`` is widened as it is read for float64."""
    r = np.empty((2, *m.shape[1:]), dtype=dtype)
    np.add(m[0], m[1], out=r[0], dtype=dtype)
    r[0] += m[2]
    np.subtract(m[1], m[2], out=r[1], dtype=dtype)
    r[1] -= m[3]
    if b4 is not None:  # column 1 of A^T m reaches every output, as m[5] does in conv3x3
        r[:, 1] += b4
    out = np.empty((2, *m.shape[2:]), dtype=dtype)
    np.add(r[:, 0], r[:, 1], out=out)
    out += r[:, 2]
    np.multiply(out, 0.25, out=place(0))
    np.subtract(r[:, 1], r[:, 2], out=out)
    out -= r[:, 3]
    np.multiply(out, 0.25, out=place(1))


def _place(src, dest, clip):
    if clip is None:
        dest[...] = src
    else:
        np.clip(src, clip[0], clip[1], out=dest)


@kernel("WinogradConv", since=1, domain="com.microsoft")
def winograd_conv_1(
    X, U, B=None, Z=None, *, activation="", activation_params=None, auto_pad="NOTSET", pads=None
):
    """edgerun's own op (onnxruntime has none by this name), made by passes/winograd.py from
    a 3x3 stride-1 Conv or FusedConv: ``U`` is its filter as winograd_filter lays it out;
    ``Z``, ``activation`` and ``activation_params`` are FusedConv's."""
    c, k = U.shape[1:]
    if X.ndim != 4 or X.shape[1] != c:
        raise ValueError(f"X {X.shape} does not have the filter's {c} input channels")
    _, _, _, begin, _, out_shape = conv_geometry(
        X.shape, (k, c, 3, 3), auto_pad, None, [3, 3], pads, None
    )
    clip = activation_clip(activation, activation_params) if activation else None
    x = X.astype(U.dtype, copy=False)
    b = None if B is None else B.astype(U.dtype, copy=False)
    if Z is None:
        return conv3x3(x, U, b, begin, out_shape, clip).astype(X.dtype, copy=False)
    y = conv3x3(x, U, b, begin, out_shape)
    y += Z.astype(U.dtype, copy=False)
    if clip is not None:
        np.clip(y, clip[0], clip[1], out=y)
    return y.astype(X.dtype, copy=False)
