"""Linear quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear."""

from __future__ import annotations

import functools

import numpy as np

from edgerun.runtime.dtypes import ELEMENT_TYPES, runtime_dtype
from edgerun.runtime.kernels import int8
from edgerun.runtime.registry import kernel

# ONNX element type -> the integer range QuantizeLinear saturates to
_INT_RANGES = {
    2: (0, 255),
    3: (-128, 127),
    4: (0, 65535),
    5: (-32768, 32767),
    21: (0, 15),
    22: (-8, 7),
    25: (0, 3),
    26: (-2, 1),
}
# float targets -> their largest finite value (saturate clips to it)
_FLOAT_MAX = {17: 448.0, 18: 240.0, 19: 57344.0, 20: 57344.0, 23: 6.0, 27: 7.5, 28: 28.0}
_UINT8 = 2
_SMALL_INTS = (2, 3, 4, 5)  # uint8, int8, uint16, int16


@functools.cache
def _code_of(dtype: np.dtype) -> int:
    for code in ELEMENT_TYPES:
        if code != 8 and runtime_dtype(code) == dtype:
            return code
    raise ValueError(f"no ONNX element type for dtype {dtype}")


def _target(code: int) -> np.dtype:
    dtype = runtime_dtype(code)
    if code in _FLOAT_MAX and not ELEMENT_TYPES[code].native and dtype.kind == "u":
        raise ValueError(f"quantizing to {ELEMENT_TYPES[code].name} needs ml_dtypes installed")
    return dtype


def _broadcast(p, shape, axis, block_size):
    """A per-tensor, per-axis (1-D) or blocked scale/zero point shaped to broadcast on x."""
    p = np.asarray(p)
    if block_size:
        axis = axis % len(shape)
        if p.ndim != len(shape):
            raise ValueError(f"blocked quantization needs a rank-{len(shape)} scale, got {p.shape}")
        return np.repeat(p, block_size, axis=axis)[(slice(None),) * axis + (slice(shape[axis]),)]
    if p.size == 1 and p.ndim <= 1:
        return p.reshape(())
    if p.ndim != 1:
        raise ValueError(f"scale must be a scalar or 1-D for per-axis quantization, got {p.shape}")
    axis = axis % len(shape)
    if p.shape[0] != shape[axis]:
        raise ValueError(f"scale has {p.shape[0]} values but axis {axis} has {shape[axis]}")
    return p.reshape((-1,) + (1,) * (len(shape) - axis - 1))


def _as_float(a, dtype=np.float32):
    return np.asarray(a).astype(dtype, copy=False)


def _quantize(x, scale, zero_point, axis, saturate, block_size, output_dtype, precision):
    if zero_point is not None:
        code = _code_of(zero_point.dtype)
        if output_dtype and output_dtype != code:
            raise ValueError(f"output_dtype {output_dtype} differs from y_zero_point's type {code}")
    else:
        code = output_dtype or _UINT8
    if code not in _INT_RANGES and code not in _FLOAT_MAX:
        raise ValueError(f"{ELEMENT_TYPES[code].name} is not a quantized type")
    target = _target(code)
    if precision:
        dt = runtime_dtype(precision)
    else:
        dt = np.float64 if np.float64 in (x.dtype, scale.dtype) else np.float32
    q = _as_float(x, dt) / _broadcast(_as_float(scale, dt), x.shape, axis, block_size)
    q = q.astype(np.float64 if dt == np.float64 else np.float32, copy=False)
    zp = 0 if zero_point is None else _broadcast(_as_float(zero_point), x.shape, axis, block_size)
    if code in _SMALL_INTS and q.dtype == np.float32 and np.ndim(zp) == 0:
        return int8.round_saturate(np.asarray(q), int(zp), target)  # per tensor: 3 passes
    if code in _INT_RANGES:
        low, high = _INT_RANGES[code]
        # round half to even before adding the zero point, then saturate (as onnxruntime);
        # q is a fresh array, so each step works in place
        q = np.asarray(q)  # a 0-d division gives a numpy scalar
        np.rint(q, out=q)
        q += zp
        np.clip(q, low, high, out=q)
        return q.astype(target)
    q = q + zp
    if saturate:
        limit = _FLOAT_MAX[code]
        q = np.clip(q, -limit, limit)
    return q.astype(target)


@kernel("QuantizeLinear", since=10)
def quantize_linear_10(x, y_scale, y_zero_point=None):
    if np.ndim(y_scale) != 0 and np.size(y_scale) != 1:
        raise ValueError("QuantizeLinear-10 takes a per-tensor (scalar) scale")
    return _quantize(x, y_scale, y_zero_point, 0, True, 0, 0, 0)


@kernel("QuantizeLinear", since=13)
def quantize_linear_13(x, y_scale, y_zero_point=None, *, axis=1):
    return _quantize(x, y_scale, y_zero_point, axis, True, 0, 0, 0)


@kernel("QuantizeLinear", since=19)
def quantize_linear_19(x, y_scale, y_zero_point=None, *, axis=1, saturate=1):
    return _quantize(x, y_scale, y_zero_point, axis, saturate, 0, 0, 0)


@kernel("QuantizeLinear", since=21)
def quantize_linear_21(
    x, y_scale, y_zero_point=None, *, axis=1, block_size=0, output_dtype=0, saturate=1
):
    return _quantize(x, y_scale, y_zero_point, axis, saturate, block_size, output_dtype, 0)


@kernel("QuantizeLinear", since=23)
def quantize_linear_23(
    x, y_scale, y_zero_point=None, *, axis=1, block_size=0, output_dtype=0, precision=0, saturate=1
):
    return _quantize(x, y_scale, y_zero_point, axis, saturate, block_size, output_dtype, precision)


def _dequantize(x, scale, zero_point, axis, block_size, output_dtype):
    code = _code_of(x.dtype)
    if code in _SMALL_INTS and np.dtype(scale.dtype) == np.float32 and not output_dtype:
        # 8- and 16-bit values minus their zero point are exact in float32: two passes
        zp = 0 if zero_point is None else _broadcast(zero_point, x.shape, axis, block_size)
        y = np.asarray(np.subtract(x, np.asarray(zp, np.float32), dtype=np.float32))
        return np.multiply(y, _broadcast(scale, x.shape, axis, block_size), out=y)
    if code in _INT_RANGES or code in (6, 7):
        # subtract in integers (exact), then scale in float32 as onnxruntime does
        dx = x.astype(np.int64)
        if zero_point is not None:
            dx = dx - _broadcast(zero_point.astype(np.int64), x.shape, axis, block_size)
    else:
        dx = x.astype(np.float32)
        if zero_point is not None:
            dx = dx - _broadcast(_as_float(zero_point), x.shape, axis, block_size)
    y = dx.astype(np.float32) * _broadcast(_as_float(scale), x.shape, axis, block_size)
    out = runtime_dtype(output_dtype) if output_dtype else scale.dtype
    return y.astype(out, copy=False)


@kernel("DequantizeLinear", since=10)
def dequantize_linear_10(x, x_scale, x_zero_point=None):
    if np.ndim(x_scale) != 0 and np.size(x_scale) != 1:
        raise ValueError("DequantizeLinear-10 takes a per-tensor (scalar) scale")
    return _dequantize(x, x_scale, x_zero_point, 0, 0, 0)


@kernel("DequantizeLinear", since=13)
def dequantize_linear_13(x, x_scale, x_zero_point=None, *, axis=1):
    return _dequantize(x, x_scale, x_zero_point, axis, 0, 0)


@kernel("DequantizeLinear", since=21)
def dequantize_linear_21(x, x_scale, x_zero_point=None, *, axis=1, block_size=0):
    return _dequantize(x, x_scale, x_zero_point, axis, block_size, 0)


@kernel("DequantizeLinear", since=23)
def dequantize_linear_23(x, x_scale, x_zero_point=None, *, axis=1, block_size=0, output_dtype=0):
    return _dequantize(x, x_scale, x_zero_point, axis, block_size, output_dtype)


@kernel("DynamicQuantizeLinear", since=11)
def dynamic_quantize_linear_11(x):
    xf = x.astype(np.float32, copy=False)
    low = np.float32(min(0.0, xf.min())) if xf.size else np.float32(0)
    high = np.float32(max(0.0, xf.max())) if xf.size else np.float32(0)
    scale = np.float32(1.0) if high == low else (high - low) / np.float32(255)
    zero_point = np.rint(np.clip(np.float32(0) - low / scale, 0, 255))
    y = np.asarray(xf / scale, np.float32)  # fresh: rounded, shifted and saturated in place
    q = int8.round_saturate(y, int(zero_point), np.dtype(np.uint8))
    return q, np.array(scale, dtype=x.dtype), np.array(zero_point, np.uint8)


# onnxruntime's own versions (its quantizer writes them with use_qdq_contrib_ops, and for
# 16-bit and 4-bit types before opset 21): the opset-13 semantics
@kernel("QuantizeLinear", since=1, domain="com.microsoft")
def quantize_linear_ms_1(x, y_scale, y_zero_point=None, *, axis=1):
    return _quantize(x, y_scale, y_zero_point, axis, True, 0, 0, 0)


@kernel("DequantizeLinear", since=1, domain="com.microsoft")
def dequantize_linear_ms_1(x, x_scale, x_zero_point=None, *, axis=1):
    return _dequantize(x, x_scale, x_zero_point, axis, 0, 0)
