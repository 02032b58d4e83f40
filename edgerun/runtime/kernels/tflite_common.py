"""Shared by the TFLite kernels: fused activations, NHWC views, quantization parameters and
requantization with TFLite's fixed-point multipliers (from kernels/int8.py)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgerun.runtime.kernels.derived import memo, tiled
from edgerun.runtime.kernels.int8 import quantize_multiplier
from edgerun.runtime.tflite_reader import QuantParams, TensorQuant

__all__ = ["quantize_multiplier"]  # TFLite's QuantizeMultiplier, shared with kernels/int8.py


# -- float --------------------------------------------------------------------------------
def fused(y: np.ndarray, act: str) -> np.ndarray:
    """A float fused activation, in place where ``y`` is writable."""
    if act == "NONE":
        return y
    if not y.flags.writeable:
        y = y.copy()
    if act == "RELU":
        return np.maximum(y, 0, out=y)
    if act == "RELU6":
        return np.clip(y, 0, 6, out=y)
    if act == "RELU_N1_TO_1":
        return np.clip(y, -1, 1, out=y)
    if act == "TANH":
        return np.tanh(y, out=y)
    if act == "SIGN_BIT":
        return np.signbit(y).astype(y.dtype)
    raise ValueError(f"unknown fused activation {act!r}")


def nchw(x: np.ndarray) -> np.ndarray:
    """An NHWC tensor as an NCHW view (what the ONNX kernels take), no copy."""
    return x.transpose(0, 3, 1, 2)


def nhwc(y: np.ndarray) -> np.ndarray:
    return y.transpose(0, 2, 3, 1)


def same_pad(padding: str) -> str:
    # TFLite SAME puts the odd pixel at the end, as ONNX SAME_UPPER does
    if padding not in ("SAME", "VALID"):
        raise ValueError(f"unknown padding {padding!r}")
    return "SAME_UPPER" if padding == "SAME" else "VALID"


def axes_of(axis, rank: int) -> tuple[int, ...]:
    return tuple(sorted({int(a) % rank for a in np.asarray(axis).reshape(-1)}))


# -- quantization ----------------------------------------------------------------------------
def quant_of(quant: TensorQuant | None, i: int, output: bool = False) -> QuantParams | None:
    if quant is None:
        return None
    params = quant.outputs if output else quant.inputs
    return params[i] if i < len(params) else None


def is_quantized(x: np.ndarray, q: QuantParams | None) -> bool:
    return q is not None and x.dtype.kind in "iu"


def round_half_away(v):
    """C's std::round (TfLiteRound): halves away from zero, exact for float inputs."""
    t = np.trunc(v)
    return t + np.sign(v) * (np.abs(v - t) >= 0.5)


def broadcast_channel(values: np.ndarray, q: QuantParams, rank: int) -> np.ndarray:
    """Per-channel parameters shaped to broadcast along ``q.dimension`` of a rank-r tensor."""
    if values.size == 1:
        return values.reshape(())
    return values.reshape((-1,) + (1,) * (rank - 1 - q.dimension))


def dequantize(x: np.ndarray, q: QuantParams) -> np.ndarray:
    scale = broadcast_channel(q.scale, q, x.ndim)
    zero = broadcast_channel(q.zero_point, q, x.ndim).astype(np.float32)
    return ((x.astype(np.float32) - zero) * scale).astype(np.float32)


def quantize(f: np.ndarray, q: QuantParams) -> np.ndarray:
    # AffineQuantize: round(f / scale) + zero_point, saturated; the division is in float32
    scale = broadcast_channel(q.scale, q, np.ndim(f))
    v = round_half_away(np.asarray(f, np.float32) / scale)
    v = v + broadcast_channel(q.zero_point, q, np.ndim(f))
    info = np.iinfo(q.dtype)
    return np.clip(v, info.min, info.max).astype(q.dtype)


def via_float(quant: TensorQuant, fn: Callable[..., np.ndarray], *args, out: int = 0):
    """Run a quantized op as float: dequantize the quantized inputs, quantize the result.

    For ops whose TFLite integer kernels use lookup tables or other schemes this does not
    reproduce bit for bit; results land within one quantization step of the interpreter.
    """
    params = (*quant.inputs, *([None] * len(args)))
    floats = [
        dequantize(a, q) if a is not None and q is not None and is_quantized(a, q) else a
        for a, q in zip(args, params, strict=False)
    ]
    result = fn(*floats)
    q_out = quant.outputs[out] if out < len(quant.outputs) else None
    if q_out is None or q_out.dtype.kind not in "iu":
        return result
    if isinstance(result, tuple | list):
        return type(result)(quantize(r, q) for r, q in zip(result, quant.outputs, strict=True))
    return quantize(result, q_out)


def multiply_by_quantized_multiplier(x, m, shift, offset=None) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier of ``x + offset``, bit for bit, as int64 (``x``
    integers, or floats holding exact integers; ``offset``: a bias broadcast like ``m``)."""
    return _double_rounding(m, shift, offset)(x)


def quantized_multiplier(m, shift) -> Callable[[np.ndarray], np.ndarray]:
    """multiply_by_quantized_multiplier with ``m`` and ``shift`` fixed, for a kernel to keep
    (its constants cost more than the multiply on a small tensor)."""
    return _double_rounding(m, shift)


def _double_rounding(m, shift, offset=None) -> Callable[[np.ndarray], np.ndarray]:
    """MultiplyByQuantizedMultiplier with its constants worked out once, for many blocks.

    kernels/int8.py spells out TFLite's steps; this is the form fast on large tensors. Its
    high multiply rounds x * m / 2^31 with ties up (the nudge and C's truncating division
    come to one floor), and its rounding right shift by r rounds ties away from zero, that
    is floor((high + 2^(r-1) - [high < 0]) / 2^r). A floor of a floor is one floor, so both
    steps are one: (x * m + 2^30 + 2^(30+r) - [x * m + 2^30 < 0] * 2^31) >> (31 + r), seven
    passes over the tensor instead of fifteen; the offset enters as offset * m.
    """
    m = np.asarray(m, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0) if np.any(shift > 0) else None  # a multiplier above 1: rare
    right = np.maximum(-shift, 0)
    base = np.int64(1 << 30) if offset is None else np.asarray(offset, np.int64) * m + (1 << 30)
    if left is not None:
        base, bias = np.int64(1 << 30), 0 if offset is None else np.asarray(offset, np.int64)
    half = np.where(right > 0, np.int64(1) << (right + 30), 0)
    some = np.where(right > 0, np.int64(-1), np.int64(0))  # where the sign correction applies
    total = right + 31

    def apply(x: np.ndarray) -> np.ndarray:
        p = np.asarray(x).astype(np.int64)  # a fresh array, changed in place below
        if left is not None:
            p += bias
            p = np.clip(p << left, -(1 << 31), (1 << 31) - 1)
        p *= m
        p += base
        if right.any():
            # high < 0 exactly where x * m + base < 0: p >> 63 is -1 there, else 0
            sign = p >> 63
            sign <<= 31
            if not some.all():
                sign &= some
            p += sign
            p += half
        p >>= total
        return p

    return apply


def _single_rounding(m, shift, offset=None) -> Callable[[np.ndarray], np.ndarray]:
    """The single-rounding form (TFLITE_SINGLE_ROUNDING): (x + offset) * m / 2^(31 - shift)
    rounded once, ties up. TFLite 2.21's FULLY_CONNECTED requantizes this way (its reference
    and builtin kernels both), its other int8 kernels with the double rounding above."""
    m = np.asarray(m, dtype=np.int64)
    total = 31 - np.asarray(shift, dtype=np.int64)
    if np.any(total < 1):
        raise ValueError("a fixed-point multiplier's shift is above 30")
    bump = np.int64(1) << (total - 1)
    if offset is not None:
        bump = bump + np.asarray(offset, np.int64) * m

    def apply(x: np.ndarray) -> np.ndarray:
        y = np.asarray(x).astype(np.int64)
        y *= m
        y += bump
        y >>= total
        return y

    return apply


def multiply_single_rounding(x, m, shift, offset=None) -> np.ndarray:
    return _single_rounding(m, shift, offset)(x)


def via_table(quant: TensorQuant, fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray):
    """An 8-bit unary op as TFLite's LUTPopulate builds it: every code dequantized in
    float32, ``fn`` applied, times the inverse output scale, rounded, then the zero point."""
    qx, qy = quant.inputs[0], quant.outputs[0]
    if qx is None or qy is None or x.dtype not in (np.int8, np.uint8) or qy.dtype != x.dtype:
        return via_float(quant, fn, x)
    info = np.iinfo(x.dtype)
    codes = np.arange(info.min, info.max + 1, dtype=np.int64)
    real = np.float32(qx.scale[0]) * (codes - int(qx.zero_point[0])).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        scaled = np.asarray(fn(real), np.float32) * (np.float32(1) / np.float32(qy.scale[0]))
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=info.max, neginf=info.min)
    table = np.clip(round_half_away(scaled) + int(qy.zero_point[0]), info.min, info.max)
    return table.astype(x.dtype)[x.astype(np.int64) - info.min]


def activation_range(act: str, q: QuantParams) -> tuple[int, int]:
    """CalculateActivationRangeQuantized: the fused activation as integer bounds (worked
    out once per tensor's parameters and activation)."""
    return memo(q, ("activation range", act), lambda: _activation_range(act, q))


def _activation_range(act: str, q: QuantParams) -> tuple[int, int]:
    info = np.iinfo(q.dtype)
    lo, hi = int(info.min), int(info.max)
    scale, zero = np.float32(q.scale[0]), int(q.zero_point[0])

    def at(f: float) -> int:
        return zero + int(round_half_away(np.float32(f) / scale))

    if act == "NONE":
        return lo, hi
    if act == "RELU":
        return max(lo, zero), hi
    if act == "RELU6":
        return max(lo, zero), min(hi, at(6.0))
    if act == "RELU_N1_TO_1":
        return max(lo, at(-1.0)), min(hi, at(1.0))
    raise ValueError(f"fused activation {act} is not supported on quantized tensors")


def _double_elements(x, m, shift, bias) -> np.ndarray:
    # MultiplyByQuantizedMultiplier of x + bias, elementwise with shift <= 0: the few
    # elements _float_scaler redoes, in a handful of small operations
    right = -shift
    high = ((x.astype(np.int64) + bias) * m + (1 << 30)) >> 31
    return (high + ((np.int64(1) << right) >> 1) - ((high < 0) & (right > 0))) >> right


def _single_elements(x, m, shift, bias) -> np.ndarray:
    total = 31 - shift
    return ((x.astype(np.int64) + bias) * m + (np.int64(1) << (total - 1))) >> total


def _exact_scaler(m, shift, bias, single: bool, bound) -> Callable[[np.ndarray], np.ndarray]:
    return (_single_rounding if single else _double_rounding)(m, shift, bias)


def _memo_scaler(make, m, shift, bias, single: bool, owner, bound):
    if owner is None:
        return make(m, shift, bias, single, bound)
    # the entry holds m, shift and bias (never the owner: no cycle keeps it alive), so their
    # ids cannot be reused while it lives
    tag = (make.__name__, id(m), id(shift), id(bias), single, bound)
    m_, shift_, bias_, fn = memo(
        owner, tag, lambda: (m, shift, bias, make(m, shift, bias, single, bound))
    )
    return (
        fn if m_ is m and shift_ is shift and bias_ is bias else make(m, shift, bias, single, bound)
    )


def _float_scaler(m, shift, bias, single: bool, bound: int):
    """The scaling of float32 accumulators (exact integers, |acc| <= ``bound``) in float32,
    exact where it is safe and by the integer steps for the few elements where it is not:
    float32 passes move half the bytes of int64 ones (a 112x112x64 layer: 2.5 -> 1.2 ms).

    With w = (acc + bias) * m / 2^(31 + r), the exact result is round(w) except within
    2^-(r+1) of a half-integer (the first rounding, of x * m / 2^31, moves w by at most
    that), or, with one rounding (``single``), exactly at one. float32 adds an error below
    ``err``. Elements whose w lies within that gap plus ``err`` of a half-integer (about
    2^-r of them) are redone exactly. None where the error could reach a tenth of a step.
    """
    m = np.asarray(m, np.int64)
    shift = np.asarray(shift, np.int64)
    if np.any(shift > 0) or np.any(m < 0):
        return None
    step = np.ldexp(m.astype(np.float64), -(31 - shift))  # m / 2^(31 + r), exact
    offset = step * (0 if bias is None else np.asarray(bias, np.float64))
    gap = 0.0 if single else np.where(shift < 0, np.ldexp(1.0, shift - 1), 0.0)
    err = (2.0 * bound * step + np.abs(offset) + 512.0) * 2.0**-23
    if np.max(gap + err) > 0.1:
        return None
    s32, c32 = step.astype(np.float32), offset.astype(np.float32)
    offsets = bool(np.any(c32))  # a bias taken in the sums already: no pass to add zeros
    # |w - round(w)| from this up: redo exactly (lowered past float32's rounding of it)
    limit = (0.5 - gap - err - 2.0**-23).astype(np.float32)
    b = np.zeros((), np.int64) if bias is None else np.asarray(bias, np.int64)
    shape = np.broadcast_shapes(m.shape, shift.shape, b.shape)
    mm, ss, bb = (np.broadcast_to(v, shape).reshape(-1) for v in (m, shift, b))

    def approx(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """round(w) for a block, and the flat indices of its elements to redo. Rows longer
        than the per-channel constants take them tiled, so the inner loops run whole rows
        (W x C) long instead of C (1.6x faster on a MobileNetV2's layers)."""
        n = x.shape[-1]
        scale, offset, bound = (
            tiled(v, n // v.size) if 1 < v.size < n else v for v in (s32, c32, limit)
        )
        w = np.multiply(x, scale)
        if offsets:
            w += offset
        z = np.rint(w)
        w -= z
        np.abs(w, out=w)
        return z, np.flatnonzero(np.greater_equal(w, bound))

    def redo(values: np.ndarray, flat: np.ndarray) -> np.ndarray:
        ch = flat % mm.size  # per-channel constants run along the last axis
        return exact(values, mm[ch], ss[ch], bb[ch])

    exact = _single_elements if single else _double_elements

    return approx, redo


_BLOCK = 1 << 16  # elements requantized at a time: int64 temporaries stay in L2 cache
_BLOCK_F32 = 1 << 17  # the same bytes in float32


def requantize(
    acc,
    m,
    shift,
    q: QuantParams,
    act: str,
    single: bool = False,
    bias=None,
    owner=None,
    bound: int | None = None,
) -> np.ndarray:
    """int32 accumulators (+ ``bias``, per output channel) -> the output's integers: scale,
    add its zero point, clamp. Given an ``owner`` (the node's ``quant``), the scaling's
    constants are worked out once for it (see ``memo``). ``acc`` may hold its integers in
    a float array (an exact float BLAS sum). Large tensors go in blocks of rows: the int64
    passes over a block stay in cache, where whole-tensor temporaries ran at memory speed
    and took page faults (a 112x112x64 layer: 4.4 ms whole, 2.5 ms in blocks). Given a
    ``bound`` on |acc| of a float32 ``acc``, most of the scaling runs in float32."""
    lo, hi = activation_range(act, q)
    zero = int(q.zero_point[0])
    acc = np.asarray(acc)
    acc = acc if acc.flags.c_contiguous else np.ascontiguousarray(acc)  # (keeps 0-d as 0-d)
    fast = None
    if bound is not None and acc.dtype == np.float32 and acc.ndim:
        fast = _memo_scaler(_float_scaler, m, shift, bias, single, owner, bound)
    out = np.empty(acc.shape, q.dtype)
    info = np.iinfo(q.dtype)
    if fast is not None and info.min <= zero <= info.max:
        return _requantize_float32(acc, fast, lo - zero, hi - zero, zero, out)
    scale = _memo_scaler(_exact_scaler, m, shift, bias, single, owner, None)
    rows, dst = _blocks(acc, out, _BLOCK)
    small = info.min <= zero <= info.max  # else a damaged file's: added in int64
    for a, o in zip(rows, dst, strict=True):
        y = scale(a)
        if small:  # the zero point added after, in 8 bits: one int64 pass fewer
            np.clip(y, lo - zero, hi - zero, out=y)
        else:
            y += zero
            np.clip(y, lo, hi, out=y)
        o[...] = y
    if zero and small:
        out += out.dtype.type(zero)
    return out


def centered_requantizer(
    m, shift, q: QuantParams, act: str, owner, bound: int
) -> Callable[[np.ndarray], None] | None:
    """``requantize`` for float32 accumulators (exact integers, |acc| <= ``bound``, the bias
    already in them) that stay in their buffer: a function that overwrites rows of
    accumulators (whole lines of a channels-last tensor, C-contiguous) with the outputs
    less their zero point, as floats, where the next kernel wants them centered; None where
    the float32 scaling (_float_scaler) is not exact enough to take."""
    fast = _memo_scaler(_float_scaler, m, shift, None, False, owner, bound)
    if fast is None:
        return None
    approx, redo = fast
    lo, hi = activation_range(act, q)
    zero = int(q.zero_point[0])
    lo, hi = lo - zero, hi - zero

    def apply(rows: np.ndarray) -> None:
        for a in _blocks(rows, rows, _BLOCK_F32)[0]:
            z, near = approx(a)
            flat = a.reshape(-1)
            exact = redo(flat[near], near) if near.size else None  # before a is overwritten
            np.clip(z, lo, hi, out=a)
            if exact is not None:
                flat[near] = np.clip(exact, lo, hi)

    return apply


def _blocks(acc: np.ndarray, out: np.ndarray, size: int) -> tuple[list, list]:
    """Row blocks of about ``size`` elements of ``acc`` and ``out`` (per-channel constants
    broadcast along the last axis, which blocks keep whole)."""
    if acc.ndim == 0 or acc.size <= size:
        return [acc], [out]
    flat, dst = acc.reshape(-1, acc.shape[-1]), out.reshape(-1, acc.shape[-1])
    step = max(1, size // acc.shape[-1])
    starts = range(0, len(flat), step)
    return [flat[i : i + step] for i in starts], [dst[i : i + step] for i in starts]


def _requantize_float32(acc, fast, lo: int, hi: int, zero: int, out: np.ndarray) -> np.ndarray:
    """``requantize`` through ``_float_scaler``: blocks in float32, then the elements near a
    rounding boundary redone exactly, all in one call."""
    approx, redo = fast
    if acc.ndim > 2:  # rows of the last two axes: per-channel constants tile along them
        row = acc.shape[-2] * acc.shape[-1]
        rows, dst = _blocks(acc.reshape(-1, row), out.reshape(-1, row), _BLOCK_F32)
    else:
        rows, dst = _blocks(acc, out, _BLOCK_F32)
    redone, start = [], 0
    for a, o in zip(rows, dst, strict=True):
        z, near = approx(a)
        np.clip(z, lo, hi, out=z)
        o[...] = z
        if near.size:
            redone.append(near + start)
        start += a.size
    if redone:
        flat = np.concatenate(redone)
        out.reshape(-1)[flat] = np.clip(redo(acc.reshape(-1)[flat], flat), lo, hi)
    if zero:
        out += out.dtype.type(zero)
    return out
