"""Matrix products (MatMul, Gemm, Einsum, the integer and quantized MatMuls) and Det."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.registry import kernel

# Integer products are summed exactly in float32 while every partial sum stays below 2^24.
_FLOAT32_EXACT = 1 << 24


def _compute_dtype(dtype):
    # float16 and the ml_dtypes floats (bfloat16...) go through float32 BLAS
    if dtype.kind in "iu" or dtype in (np.float32, np.float64):
        return dtype
    return np.dtype(np.float32)


def _matmul(a, b):
    dt = np.result_type(_compute_dtype(a.dtype), _compute_dtype(b.dtype))
    y = np.matmul(a.astype(dt, copy=False), b.astype(dt, copy=False))
    return y.astype(a.dtype, copy=False)


@kernel("MatMul", since=1)
def mat_mul_1(A, B):
    return _matmul(A, B)


def _gemm(A, B, C, alpha, beta, transA, transB):
    dt = _compute_dtype(A.dtype)
    a = A.astype(dt, copy=False)
    b = B.astype(dt, copy=False)
    y = np.matmul(a.T if transA else a, b.T if transB else b)
    if dt.kind in "iu":
        if alpha != 1.0:
            y = y * alpha
        if C is not None and beta != 0.0:
            y = y + (C * beta if beta != 1.0 else C)
        return np.asarray(y).astype(A.dtype, copy=False)
    # y is a fresh array from matmul: scale it and add the bias in place
    if alpha != 1.0:
        y *= dt.type(alpha)
    if C is not None and beta != 0.0:
        c = C.astype(dt, copy=False)
        c = c * dt.type(beta) if beta != 1.0 else c
        if np.broadcast_shapes(y.shape, c.shape) == y.shape:
            y += c
        else:
            y = y + c
    return np.asarray(y).astype(A.dtype, copy=False)


@kernel("Gemm", since=1)
def gemm_1(A, B, C=None, *, alpha=1.0, beta=1.0, broadcast=0, transA=0, transB=0):
    return _gemm(A, B, C, alpha, beta, transA, transB)


@kernel("Gemm", since=7)
def gemm_7(A, B, C=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    return _gemm(A, B, C, alpha, beta, transA, transB)


@kernel("Einsum", since=12)
def einsum_12(*Inputs, equation=None):
    if equation is None:
        raise ValueError("Einsum needs the equation attribute")
    dt = np.result_type(*(_compute_dtype(x.dtype) for x in Inputs))
    operands = [x.astype(dt, copy=False) for x in Inputs]
    y = np.einsum(equation.replace(" ", ""), *operands, optimize=True)
    return np.asarray(y).astype(Inputs[0].dtype, copy=False)


@kernel("Det", since=11)
def det_11(X):
    dt = np.float64 if X.dtype == np.float64 else np.float32
    return np.asarray(np.linalg.det(X.astype(dt, copy=False))).astype(X.dtype, copy=False)


# -- integer products -----------------------------------------------------------------------


def _row_param(v, a):
    # per-row zero point / scale of ``a`` [..., M, K]: an [M] vector becomes [M, 1]
    v = np.asarray(v)
    if v.ndim == 1 and a.ndim >= 2 and v.size > 1:
        return v.reshape(-1, 1)
    return v


def _centered(x, zero_point, per_row):
    # x - zero_point, exact in int32; a vector zero point is per row of a, per column of b
    x = x.astype(np.int32)
    if zero_point is None:
        return x
    zero_point = _row_param(zero_point, x) if per_row else np.asarray(zero_point)
    return x - zero_point.astype(np.int32)


def _integer_matmul(a, b):
    # int32 operands whose products are exact in float; the dot products stay exact in
    # float32 while K * max|a| * max|b| < 2^24, else in float64 (exact far beyond int32)
    k = a.shape[-1]
    bound = k * int(np.abs(a).max(initial=0)) * int(np.abs(b).max(initial=0))
    dt = np.float32 if bound < _FLOAT32_EXACT else np.float64
    return np.matmul(a.astype(dt), b.astype(dt))


@kernel("MatMulInteger", since=10)
def mat_mul_integer_10(A, B, a_zero_point=None, b_zero_point=None):
    acc = _integer_matmul(_centered(A, a_zero_point, True), _centered(B, b_zero_point, False))
    return acc.astype(np.int32)


@kernel("QLinearMatMul", since=10)
def q_linear_mat_mul_10(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    acc = _integer_matmul(_centered(a, a_zero_point, True), _centered(b, b_zero_point, False))
    # requantize as onnxruntime does: one float32 multiplier, round half to even, saturate
    scale = (
        _row_param(a_scale, a).astype(np.float32)
        * np.asarray(b_scale).astype(np.float32)
        / np.asarray(y_scale).astype(np.float32)
    )
    out = y_zero_point.dtype if y_zero_point is not None else a.dtype
    if out.kind not in "iu":
        raise ValueError(f"QLinearMatMul to {out} is not supported (int8 and uint8 are)")
    y = np.rint(acc.astype(np.float32) * scale)
    if y_zero_point is not None:
        y = y + np.asarray(y_zero_point).astype(np.float32)
    info = np.iinfo(out)
    return np.clip(y, info.min, info.max).astype(out)
