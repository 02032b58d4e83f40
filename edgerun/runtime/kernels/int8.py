"""Integer arithmetic shared by the quantized kernels (ONNX QLinear*, com.microsoft, TFLite).

Integer products go through float BLAS: a product of two 8-bit values is exact in float32
and so is a sum of them while it stays below 2^24, so a dot product over K terms is exact
when K * max|a| * max|b| < 2^24; longer sums are split into such chunks (each exact in
float32) that are added in float64, which is exact far past the int32 range.

Requantization follows onnxruntime's MlasRequantizeOutput: one float32 multiplier per
tensor or channel, round half to even, then the zero point, then saturate. The fixed-point
helpers (``quantize_multiplier``, ``multiply_by_quantized_multiplier``) are TFLite's
integer-only scheme, for readers of models that carry it.
"""

from __future__ import annotations

import functools

import numpy as np

FLOAT32_EXACT = 1 << 24  # every integer below this is exact in float32

_RANGES: dict[np.dtype, tuple[int, int]] = {
    np.dtype(t): (int(np.iinfo(t).min), int(np.iinfo(t).max))
    for t in (np.uint8, np.int8, np.uint16, np.int16, np.int32)
}


def int_range(dtype: np.dtype) -> tuple[int, int]:
    """(lowest, highest) value of an integer quantized type."""
    try:
        return _RANGES[np.dtype(dtype)]
    except KeyError:
        raise ValueError(f"{np.dtype(dtype)} is not an integer quantized type") from None


def scalar(v: np.ndarray | float | int | None, default: float = 0) -> float:
    """The one value of a per-tensor scale or zero point (shape () or [1])."""
    if v is None:
        return default
    a = v if isinstance(v, np.ndarray) else np.asarray(v)
    if a.size != 1:
        raise ValueError(f"expected a per-tensor (one-value) parameter, got shape {a.shape}")
    return a.item()  # any rank: a kernel reads these several times a call


def centered(x: np.ndarray, zero_point: float, dtype: type = np.float32) -> np.ndarray:
    """x - zero_point in a float type (exact for 8- and 16-bit integers): a cast, then a
    subtraction in place. One mixed-type subtraction casts through numpy's buffers and ran
    15-25 % slower than the two passes (1.2 M int8 values: 290-330 us against 200-230)."""
    y: np.ndarray = x.astype(dtype)
    if zero_point != 0:
        y -= dtype(zero_point)
    return y


def exact_dtype(k: int, a_bound: int, b_bound: int) -> type:
    """float32 when every K-term sum of a*b products is exact in it, else float64."""
    return np.float32 if k * a_bound * b_bound < FLOAT32_EXACT else np.float64


def fits_float32(a_squares: np.ndarray, b_squares: np.ndarray, terms: int) -> bool:
    """Whether every partial sum of a dot product between integer vectors whose squared
    norms are at most ``a_squares`` and ``b_squares`` (arrays that broadcast together) is
    exact in float32, in whatever order BLAS adds. By Cauchy-Schwarz any partial sum is at
    most ||a|| ||b||, so this holds while that stays below 2^24: a bound from the operands'
    actual values, far tighter than max|a| * sum|b| over all values ``a`` could take.
    Both may be sums of ``terms`` squares taken in float32: their roundings (each below
    terms * 2^-24 relative) are allowed for, four times over."""
    margin = (1.0 + terms * 2.0**-22) ** 2
    squares = np.asarray(a_squares, np.float64) * np.asarray(b_squares, np.float64)
    return bool(squares.max(initial=0.0) * margin < float(FLOAT32_EXACT) ** 2)


def integer_matmul(a: np.ndarray, b: np.ndarray, a_bound: int, b_bound: int) -> np.ndarray:
    """Exact a @ b of integer-valued float arrays with |a| <= a_bound, |b| <= b_bound.

    The result is float32 when exact in it, else float64 summed from float32 chunks of K.
    """
    k = a.shape[-1]
    if exact_dtype(k, a_bound, b_bound) is np.float32:
        return np.matmul(a.astype(np.float32, copy=False), b.astype(np.float32, copy=False))
    chunk = max(1, (FLOAT32_EXACT - 1) // max(1, a_bound * b_bound))
    a32, b32 = a.astype(np.float32, copy=False), b.astype(np.float32, copy=False)
    total = None
    for start in range(0, k, chunk):
        part = np.matmul(a32[..., start : start + chunk], b32[..., start : start + chunk, :])
        total = part.astype(np.float64) if total is None else total + part
    assert total is not None
    return total


def requantize(
    acc: np.ndarray, multiplier: np.ndarray | float, zero_point: int, dtype: np.dtype
) -> np.ndarray:
    """onnxruntime's requantization: rint(acc * multiplier) + zero point, saturated.

    ``acc`` (float, integer-valued) is overwritten when it is a float32 array.
    """
    y = acc if acc.dtype == np.float32 else acc.astype(np.float32)
    np.multiply(y, np.asarray(multiplier, np.float32), out=y)
    return round_saturate(y, zero_point, dtype)


# 1.5 * 2^23: for |v| < 2^22, float32 v + _MAGIC lands in [2^23, 2^24), where the spacing is
# 1, so the sum is rint(v) + _MAGIC (round half to even, as _MAGIC is even), and its bits,
# read as an int32, are _MAGIC_BITS + rint(v). Bits of positive floats grow with the value
# and negative floats read as negative ints, so clipping the bits clips the value.
_MAGIC = 12582912
_MAGIC_BITS = 0x4B400000


def round_saturate(y: np.ndarray, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """rint(y) + zero point, saturated to ``dtype``; float32 ``y`` is overwritten.

    Two float passes and a narrowing one instead of five (rint, add, clip, convert): one
    add rounds and shifts by the zero point's even part, then a clip of the bits writes the
    8- or 16-bit result, which is their low bits (an odd zero point adds its last 1 in the
    narrow type, where wrapping is exact as the result is in range).
    """
    low, high = int_range(dtype)
    if np.dtype(dtype).itemsize > 2:
        return _round_saturate_wide(y, zero_point, low, high, dtype)
    y = np.asarray(y)
    if y.dtype != np.float32 or not y.flags.writeable:
        y = y.astype(np.float32)
    shift, lowest, highest, odd = _rounding(int(zero_point), np.dtype(dtype))
    y += shift
    out = np.empty_like(y, dtype=dtype)
    np.clip(y.view(np.int32), lowest, highest, out=out, casting="unsafe")
    if odd:
        out += out.dtype.type(1)
    return out


@functools.lru_cache(maxsize=1024)
def _rounding(zero_point: int, dtype: np.dtype) -> tuple[np.float32, np.ndarray, np.ndarray, int]:
    """round_saturate's constants: the float shift, the int32 bounds of the shifted bits
    (0-d arrays: np.clip checks Python int bounds against the type, ~3 us a call) and
    whether the zero point is odd."""
    low, high = int_range(dtype)
    odd = zero_point & 1
    base = _MAGIC_BITS - odd
    bounds = np.array(base + low, np.int32), np.array(base + high, np.int32)
    return np.float32(_MAGIC + zero_point - odd), *bounds, odd


def _round_saturate_wide(
    y: np.ndarray, zero_point: int, low: int, high: int, dtype: np.dtype
) -> np.ndarray:
    """round_saturate for int32, which the low bits of a float cannot hold."""
    np.rint(y, out=y)
    if zero_point:
        y += np.float32(zero_point)
    np.clip(y, low, high, out=y)
    return y.astype(dtype)


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """QuantizeLinear per tensor in float32: rint(x / scale) + zero point, saturated."""
    return round_saturate(np.divide(x, np.float32(scale), dtype=np.float32), zero_point, dtype)


def dequantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """DequantizeLinear per tensor: (x - zero point) * scale in float32."""
    y = centered(x, zero_point)
    y *= np.float32(scale)
    return y


def lookup_table(
    fn: object, x_scale: float, x_zero: int, y_scale: float, y_zero: int, dtype: np.dtype
) -> np.ndarray:
    """Every 8-bit input's output through float ``fn``, as onnxruntime's QLinear
    activations build it: dequantize, apply, quantize. Index with x.view(uint8)."""
    low, high = int_range(dtype)
    codes = np.arange(low, high + 1).astype(dtype)
    y = fn(dequantize(codes, x_scale, x_zero))  # type: ignore[operator]
    table = quantize(np.asarray(y, np.float32), y_scale, y_zero, dtype)
    return np.roll(table, low)  # entry i is code i as unsigned (int8 -128 sits at 128)


def apply_table(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """table[x] for 8-bit ``x`` read as unsigned; np.take, 2-3x faster than indexing."""
    return np.take(table, x.view(np.uint8))


# -- TFLite's fixed-point requantization ----------------------------------------------------


def quantize_multiplier(real: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """(int32 multiplier in [2^30, 2^31), shift) with real = multiplier * 2^(shift - 31),
    as TFLite's QuantizeMultiplier; a zero real gives (0, 0)."""
    r = np.asarray(real, np.float64)
    mantissa, shift = np.frexp(r)
    q = np.round(mantissa * (1 << 31)).astype(np.int64)
    full = q == 1 << 31
    q = np.where(full, q // 2, q)
    shift = np.where(full, shift + 1, shift).astype(np.int64)
    shift = np.where(shift < -31, 0, shift)
    q = np.where(r == 0, 0, q)
    return q.astype(np.int32), np.where(r == 0, 0, shift).astype(np.int32)


def multiply_by_quantized_multiplier(
    acc: np.ndarray, multiplier: np.ndarray | int, shift: np.ndarray | int
) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier on int32 ``acc``: a left shift, the saturating
    rounding doubling high multiply, then a rounding right shift (ties away from zero)."""
    x = np.asarray(acc, np.int64)
    m = np.asarray(multiplier, np.int64)
    s = np.asarray(shift, np.int64)
    left = np.maximum(s, 0)
    right = np.maximum(-s, 0)
    x = np.clip(x << left, -(1 << 31), (1 << 31) - 1)
    # SaturatingRoundingDoublingHighMul: (x * m + nudge) / 2^31, rounded half away from zero
    prod = x * m
    nudge = np.where(prod >= 0, 1 << 30, 1 - (1 << 30))
    high = (prod + nudge) // (1 << 31)
    high = np.where((prod + nudge) < 0, -((-(prod + nudge)) // (1 << 31)), high)
    saturated = (x == -(1 << 31)) & (m == -(1 << 31))
    high = np.where(saturated, (1 << 31) - 1, high)
    # RoundingDivideByPOT: round half away from zero
    mask = (np.int64(1) << right) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (high < 0)
    out = (high >> right) + (remainder > threshold)
    return out.astype(np.int32)
