"""onnxruntime's com.microsoft quantized ops, as its quantizer and QDQ fusion emit them.

Each follows onnxruntime's CPU kernel arithmetic (float32 scales, round half to even,
saturation), so outputs match it bit for bit, but for QLinearAdd at exact halves on x86
(one step); see tests/runtime/kernels/test_quant_contrib.py.
"""

from __future__ import annotations

import math

import numpy as np

from edgerun.runtime.kernels import int8, qlinear
from edgerun.runtime.kernels.conv import window_pads
from edgerun.runtime.kernels.quant import dynamic_quantize_linear_11
from edgerun.runtime.registry import kernel

MS = "com.microsoft"
f32 = np.float32


def _zero(zero_point):
    return int(int8.scalar(zero_point)) if zero_point is not None else 0


def _out_type(zero_point, like):
    return np.dtype(zero_point.dtype) if zero_point is not None else np.dtype(like.dtype)


@kernel("QLinearAdd", since=1, domain=MS)
def q_linear_add_1(A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale, C_zero_point=None):
    # MLAS's portable kernel: ((A - za) * sa + (B - zb) * sb) / sc + zc, rounded, in float32
    # (onnxruntime's x86 build can differ from it by one at exact halves)
    a = int8.centered(A, _zero(A_zero_point))
    a *= f32(int8.scalar(A_scale))
    b = int8.centered(B, _zero(B_zero_point))
    b *= f32(int8.scalar(B_scale))
    same = a.shape == b.shape or a.shape == np.broadcast_shapes(a.shape, b.shape)
    c = np.add(a, b, out=a) if same else a + b
    c /= f32(int8.scalar(C_scale))
    c += f32(_zero(C_zero_point))
    return int8.round_saturate(c, 0, _out_type(C_zero_point, A))


@kernel("QLinearMul", since=1, domain=MS)
def q_linear_mul_1(A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale, C_zero_point=None):
    # the integer product (exact in float32) times one ratio sa * sb / sc
    a = int8.centered(A, _zero(A_zero_point))
    b = int8.centered(B, _zero(B_zero_point))
    ratio = f32(int8.scalar(A_scale)) * f32(int8.scalar(B_scale)) / f32(int8.scalar(C_scale))
    return int8.requantize(
        np.multiply(a, b), ratio, _zero(C_zero_point), _out_type(C_zero_point, A)
    )


def _activation(X, X_scale, X_zero_point, Y_scale, Y_zero_point, fn):
    out = _out_type(Y_zero_point, X)
    table = int8.lookup_table(
        fn,
        int8.scalar(X_scale),
        _zero(X_zero_point),
        int8.scalar(Y_scale),
        _zero(Y_zero_point),
        out,
    )
    return int8.apply_table(X, table)


@kernel("QLinearLookup", since=1, domain=MS)
def q_linear_lookup_1(X, table):
    """edgerun's own op (onnxruntime has none by this name), made by the QDQ fusion pass for
    an elementwise op between a DequantizeLinear and a QuantizeLinear: entry i of the
    256-entry ``table`` is the output for the 8-bit code whose bits read as unsigned are i."""
    return int8.apply_table(X, table)


def _sigmoid(x):
    return f32(1) / (f32(1) + np.exp(-x))


@kernel("QLinearSigmoid", since=1, domain=MS)
def q_linear_sigmoid_1(X, X_scale, X_zero_point, Y_scale, Y_zero_point=None):
    return _activation(X, X_scale, X_zero_point, Y_scale, Y_zero_point, _sigmoid)


@kernel("QLinearLeakyRelu", since=1, domain=MS)
def q_linear_leaky_relu_1(X, X_scale, X_zero_point, Y_scale, Y_zero_point=None, *, alpha=0.01):
    a = f32(alpha)
    return _activation(
        X, X_scale, X_zero_point, Y_scale, Y_zero_point, lambda x: np.where(x >= 0, x, x * a)
    )


def _softmax_table(x_scale: float, reduce_len: int, signed: bool) -> np.ndarray:
    # onnxruntime's table: exp((i - 255 + shift) * x_scale) in double, stored as float32,
    # with a shift that keeps the row sum finite; signed inputs index it as uint8(i - 128)
    shift = math.log(float(np.finfo(np.float32).max) / reduce_len)
    shift = max(0.0, shift - 5) / x_scale
    i = np.arange(256, dtype=np.float64)
    values = np.exp((i - 255 + shift) * x_scale).astype(f32)
    return np.roll(values, -128) if signed else values


@kernel("QLinearSoftmax", since=1, domain=MS)
def q_linear_softmax_1(
    X, X_scale, x_zero_point, y_scale, y_zero_point=None, *, axis=None, opset=13
):
    signed = X.dtype == np.int8
    axis = (1 if opset < 13 else -1) if axis is None else axis
    axis %= X.ndim
    # before opset 13 the axes from ``axis`` on are one row, as in Softmax-1/11
    rows = X.reshape(math.prod(X.shape[:axis]), -1) if opset < 13 else np.moveaxis(X, axis, -1)
    d = rows.shape[-1]
    table = _softmax_table(int8.scalar(X_scale), d, signed)
    top = rows.max(axis=-1, keepdims=True).astype(np.int32)
    # shift each row so that its maximum reads the table's last entry
    if signed:
        index = (rows.astype(np.int32) + (127 - top)).astype(np.uint8)
    else:
        index = rows.astype(np.int32) + (255 - top)
    e = table[index]
    total = np.cumsum(e, axis=-1, dtype=f32)[..., -1:]  # a running float32 sum, as it adds
    y = np.rint((e * f32(math.floor(1.0 / f32(int8.scalar(y_scale))))) / total)
    y = y.astype(np.int32) + _zero(y_zero_point)
    y = np.clip(y, *int8.int_range(X.dtype)).astype(X.dtype)
    if opset < 13:
        return y.reshape(X.shape)
    return np.moveaxis(y, -1, axis)


@kernel("QLinearGlobalAveragePool", since=1, domain=MS)
def q_linear_global_average_pool_1(
    X, x_scale, x_zero_point, y_scale, y_zero_point=None, *, channels_last=0
):
    axes = tuple(range(1, X.ndim - 1)) if channels_last else tuple(range(2, X.ndim))
    size = math.prod(X.shape[a] for a in axes)
    # integer sum (exact in float64), then one multiplier x_scale / (y_scale * size)
    acc = X.sum(axis=axes, keepdims=True, dtype=np.float64)
    acc -= _zero(x_zero_point) * size
    scale = f32(int8.scalar(x_scale)) / (f32(int8.scalar(y_scale)) * f32(size))
    return int8.requantize(acc, scale, _zero(y_zero_point), _out_type(y_zero_point, X))


@kernel("QLinearAveragePool", since=1, domain=MS)
def q_linear_average_pool_1(
    X,
    x_scale,
    x_zero_point,
    y_scale,
    y_zero_point=None,
    *,
    auto_pad="NOTSET",
    ceil_mode=0,
    channels_last=0,
    count_include_pad=0,
    kernel_shape=None,
    pads=None,
    strides=None,
):
    x = np.moveaxis(X, -1, 1) if channels_last else X
    n_sp = x.ndim - 2
    strides = list(strides or [1] * n_sp)
    begin, end, out = window_pads(
        x.shape[2:], kernel_shape, strides, None, pads, auto_pad, ceil_mode
    )
    # onnxruntime dequantizes, sums the window in row-major order in float32 (a padded zero
    # adds nothing), divides by the count and quantizes with the zero point before rounding
    xf = int8.dequantize(x, int8.scalar(x_scale), _zero(x_zero_point))
    padded = np.zeros(
        (
            *x.shape[:2],
            *(
                max(i + b + e, (o - 1) * s + k)
                for i, b, e, o, s, k in zip(
                    x.shape[2:], begin, end, out, strides, kernel_shape, strict=True
                )
            ),
        ),
        f32,
    )
    padded[
        (
            slice(None),
            slice(None),
            *(slice(b, b + i) for b, i in zip(begin, x.shape[2:], strict=True)),
        )
    ] = xf
    y = np.zeros((*x.shape[:2], *out), f32)
    for tap in np.ndindex(*kernel_shape):
        sl = tuple(
            slice(t, t + (o - 1) * s + 1, s) for t, o, s in zip(tap, out, strides, strict=True)
        )
        y += padded[(slice(None), slice(None), *sl)]
    y /= _pool_count(x.shape[2:], kernel_shape, strides, begin, out, count_include_pad)
    y /= f32(int8.scalar(y_scale))
    zero = _zero(y_zero_point)
    y += f32(zero)
    y = int8.round_saturate(y, 0, _out_type(y_zero_point, X))
    return np.moveaxis(y, 1, -1) if channels_last else y


def _pool_count(in_sp, kernel_shape, strides, begin, out, include_pad):
    if include_pad:
        return f32(math.prod(kernel_shape))
    count = np.ones((), np.float32)
    for i, k, s, b, o in zip(in_sp, kernel_shape, strides, begin, out, strict=True):
        start = np.arange(o) * s - b
        per_axis = np.minimum(start + k, i) - np.maximum(start, 0)
        count = count[..., None] * per_axis.astype(np.float32)
    return count


@kernel("QLinearConcat", since=1, domain=MS)
def q_linear_concat_1(Y_scale, Y_zero_point, *inputs, axis=0):
    if len(inputs) % 3:
        raise ValueError("QLinearConcat takes (X, X_scale, X_zero_point) triples after Y's")
    y_scale, y_zero = int8.scalar(Y_scale), int(int8.scalar(Y_zero_point))
    out = np.dtype(Y_zero_point.dtype)
    parts = []
    for x, scale, zero in zip(inputs[0::3], inputs[1::3], inputs[2::3], strict=True):
        s, z = int8.scalar(scale), int(int8.scalar(zero))
        if s == y_scale and z == y_zero:
            parts.append(x)
        else:  # requantized through a table, as onnxruntime does
            table = int8.lookup_table(lambda v: v, s, z, y_scale, y_zero, out)
            parts.append(int8.apply_table(x, table))
    return np.concatenate(parts, axis=axis)


@kernel("QGemm", since=1, domain=MS)
def q_gemm_1(
    A,
    a_scale,
    a_zero_point,
    B,
    b_scale,
    b_zero_point,
    C=None,
    y_scale=None,
    y_zero_point=None,
    *,
    alpha=1.0,
    transA=0,
    transB=0,
):
    a, b = A.T if transA else A, B.T if transB else B
    bias = C if C is not None and C.size == b.shape[-1] else None  # one value per column
    acc = qlinear.folded_matmul(a, a_zero_point, b, b_zero_point, bias, key=B)
    if acc is None:
        acc, bound = qlinear.centered_matmul(a, a_zero_point, b, b_zero_point, key=B)
        if C is not None:
            acc = _add_exact(acc, C, bound)
    elif C is not None and bias is None:  # a bias of another shape: added exactly after
        acc = _add_exact(acc, C, int8.FLOAT32_EXACT)
    scale = f32(alpha) * f32(int8.scalar(a_scale)) * np.asarray(b_scale, f32).reshape(-1)
    if y_scale is not None:
        scale = scale / f32(int8.scalar(y_scale))
    if y_zero_point is None:
        return (acc * scale.astype(f32)).astype(f32)
    return int8.requantize(acc, scale, _zero(y_zero_point), _out_type(y_zero_point, A))


def _add_exact(acc, c, bound):
    # an int32 bias on an exact integer accumulator (|acc| <= bound): float64 when needed
    if acc.dtype == np.float32 and bound + np.abs(c).max(initial=0) < int8.FLOAT32_EXACT:
        return acc + c.astype(f32)
    return acc + c.astype(np.float64)


def _matmul_to_float(a, a_zero_point, B, b_zero_point, multiplier, bias):
    # (A - za)(B - zb) exactly, times a float32 multiplier per tensor or column, plus bias
    acc = qlinear.folded_matmul(a, a_zero_point, B, b_zero_point)
    if acc is None:
        acc, _ = qlinear.centered_matmul(a, a_zero_point, B, b_zero_point)
    y = acc.astype(f32, copy=False)
    if np.broadcast_shapes(y.shape, np.shape(multiplier)) == y.shape:
        y *= multiplier  # a fresh accumulator: scaled in place
    else:
        y = y * multiplier
    if bias is not None:
        y += bias.astype(f32, copy=False)
    return y


@kernel("DynamicQuantizeMatMul", since=1, domain=MS)
def dynamic_quantize_mat_mul_1(A, B, b_scale, b_zero_point=None, bias=None):
    q, a_scale, a_zero = dynamic_quantize_linear_11(A)
    multiplier = f32(a_scale) * np.asarray(b_scale, f32)
    return _matmul_to_float(q, a_zero, B, b_zero_point, multiplier, bias)


@kernel("MatMulIntegerToFloat", since=1, domain=MS)
def mat_mul_integer_to_float_1(
    A, B, a_scale, b_scale, a_zero_point=None, b_zero_point=None, bias=None
):
    multiplier = np.asarray(a_scale, f32) * np.asarray(b_scale, f32)
    return _matmul_to_float(A, a_zero_point, B, b_zero_point, multiplier, bias)
