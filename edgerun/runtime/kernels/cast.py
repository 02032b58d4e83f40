"""Cast, CastLike and BitCast, including strings and the float8 / sub-byte types."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.dtypes import runtime_dtype
from edgerun.runtime.registry import kernel

# Cast-1 names its target type as a string
_OPSET1_TYPES = {
    "FLOAT": 1, "UINT8": 2, "INT8": 3, "UINT16": 4, "INT16": 5, "INT32": 6, "INT64": 7,
    "STRING": 8, "BOOL": 9, "FLOAT16": 10, "DOUBLE": 11, "UINT32": 12, "UINT64": 13,
    "COMPLEX64": 14, "COMPLEX128": 15, "BFLOAT16": 16,
}  # fmt: skip
_FLOAT8 = {"float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz"}
_E8M0 = "float8_e8m0fnu"
_E8M0_MAX, _E8M0_NAN = 0xFE, 0xFF
_SUB_BYTE_BITS = {"int4": 4, "uint4": 4, "float4_e2m1fn": 4, "int2": 2, "uint2": 2}


def _target(to):
    if to is None:
        raise ValueError("Cast needs the 'to' attribute")
    return runtime_dtype(int(to))


def _as_float(x):
    # ml_dtypes floats (kind "V") and integers widen losslessly enough for rounding
    return x if x.dtype.kind == "f" else x.astype(np.float32)


def _to_string(x):
    if x.dtype.kind == "O":
        return x.copy()
    if x.dtype.kind == "V":
        x = x.astype(np.float32)
    out = x.astype(str).astype(object)
    if x.dtype.kind == "f":
        out[np.isposinf(x)] = "INF"
        out[np.isneginf(x)] = "-INF"
        out[np.isnan(x)] = "NaN"
    return out


def _from_string(x, target, saturate, round_mode):
    text = np.asarray(x, dtype=str)
    if target.kind in "iu":
        try:
            return text.astype(target)
        except ValueError:
            pass  # "100.5" -> 100: through float64
    # numpy parses "INF", "+INF", "-inf", "NaN" in any case, and scientific notation
    return _cast(text.astype(np.float64), target, saturate, round_mode)


def _to_float8(x, target, saturate):
    if not saturate:
        return x.astype(target)  # ml_dtypes: overflow -> NaN (Inf for e5m2), as the spec says
    import ml_dtypes

    top = ml_dtypes.finfo(target).max
    f = _as_float(x)
    return np.clip(f, f.dtype.type(-top), f.dtype.type(top)).astype(target)


def _to_e8m0(x, target, saturate, round_mode):
    # The value is 2**(exponent - 127): keep float32's exponent field and round on its mantissa
    bits = x.astype(np.float32).view(np.uint32)
    exponent = ((bits >> 23) & 0xFF).astype(np.uint16)
    mantissa = bits & 0x7FFFFF
    if round_mode == "up":
        up = mantissa > 0
    elif round_mode == "nearest":
        up = ((mantissa & 0x400000) > 0) & (((mantissa & 0x3FFFFF) > 0) | (exponent > 0))
    elif round_mode == "down":
        up = np.zeros(bits.shape, dtype=bool)
    else:
        raise ValueError(f"Cast round_mode must be up, down or nearest, not {round_mode!r}")
    special = exponent == 0xFF
    infinite = special & (mantissa == 0)
    result = exponent + (up & ~special)
    if saturate:
        result = np.minimum(result, _E8M0_MAX)
        result[infinite] = _E8M0_MAX
    else:
        result[(bits & 0x7FFFFFFF) == 0] = _E8M0_NAN  # zero is below E8M0_MIN
    result[special & ~(infinite & bool(saturate))] = _E8M0_NAN
    return np.minimum(result, _E8M0_NAN).astype(np.uint8).view(target)


def _cast(x, target, saturate=1, round_mode="up"):
    if target.kind == "O":
        return _to_string(x)
    if x.dtype.kind in "OU":
        return _from_string(x, target, saturate, round_mode)
    if target.name in _FLOAT8 and x.dtype != target:
        return _to_float8(x, target, saturate)
    if target.name == _E8M0 and x.dtype != target:
        return _to_e8m0(x, target, saturate, round_mode)
    return x.astype(target)


@kernel("Cast", since=1)
def cast_1(input, *, to=None):
    if isinstance(to, str):
        if to.upper() not in _OPSET1_TYPES:
            raise ValueError(f"Cast: unknown type name {to!r}")
        to = _OPSET1_TYPES[to.upper()]
    return _cast(input, _target(to))


@kernel("Cast", since=6)
def cast_6(input, *, to=None):
    return _cast(input, _target(to))


@kernel("Cast", since=19)
def cast_19(input, *, saturate=1, to=None):
    return _cast(input, _target(to), saturate)


@kernel("Cast", since=24)
def cast_24(input, *, round_mode="up", saturate=1, to=None):
    return _cast(input, _target(to), saturate, round_mode)


@kernel("CastLike", since=15)
def cast_like_15(input, target_type):
    return _cast(input, target_type.dtype)


@kernel("CastLike", since=19)
def cast_like_19(input, target_type, *, saturate=1):
    return _cast(input, target_type.dtype, saturate)


@kernel("CastLike", since=24)
def cast_like_24(input, target_type, *, round_mode="up", saturate=1):
    return _cast(input, target_type.dtype, saturate, round_mode)


@kernel("BitCast", since=26)
def bit_cast_26(input, *, to=None):
    target = _target(to)
    if target.kind == "O" or input.dtype.kind in "OU":
        raise ValueError("BitCast does not take or make strings")
    bits = _SUB_BYTE_BITS.get(input.dtype.name, input.dtype.itemsize * 8)
    if bits != _SUB_BYTE_BITS.get(target.name, target.itemsize * 8):
        raise ValueError(f"BitCast needs types of the same width: {input.dtype} -> {target}")
    if bits >= 8:
        return input.view(target)
    # sub-byte values are held one per byte: keep the low bits, sign-extend signed targets
    code = input.view(np.uint8) & np.uint8((1 << bits) - 1)
    if target.name.startswith("int"):
        sign = 1 << (bits - 1)
        code = ((code.astype(np.int16) ^ sign) - sign).astype(np.int8)
    return code.view(target)
