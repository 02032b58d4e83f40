"""Matrix products (MatMul, Gemm, Einsum) and Det; the integer MatMuls are in qlinear.py."""

from __future__ import annotations

import functools

import numpy as np

from edgerun.runtime.registry import kernel

# Integer products are summed exactly in float32 while every partial sum stays below 2^24.
_FLOAT32_EXACT = 1 << 24


def _compute_dtype(dtype):
    # float16 and the ml_dtypes floats (bfloat16...) go through float32 BLAS
    if dtype.kind in "iu" or dtype in (np.float32, np.float64):
        return dtype
    return np.dtype(np.float32)


@functools.lru_cache(maxsize=64)
def ones(n: int, dtype: np.dtype) -> np.ndarray:
    """A read-only vector of ``n`` ones, shared by every call: BLAS sums rows with it."""
    vector = np.ones(n, dtype)
    vector.flags.writeable = False
    return vector


def last_axis_sums(x: np.ndarray) -> np.ndarray:
    """The sums over ``x``'s last axis (float32 or float64) as one BLAS product with ones:
    numpy's reductions cost about 70 ns a row over short rows (MiniLM's LayerNormalization
    means of 128x384: 111 -> 53 us with the rest of the step; its Softmax sums over 12
    heads of 128x128: 58 -> 13 us)."""
    return np.matmul(x, ones(x.shape[-1], x.dtype))


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


def _integer_matmul(a, b):
    # int32 operands whose products are exact in float; the dot products stay exact in
    # float32 while K * max|a| * max|b| < 2^24, else in float64 (exact far beyond int32)
    k = a.shape[-1]
    bound = k * int(np.abs(a).max(initial=0)) * int(np.abs(b).max(initial=0))
    dt = np.float32 if bound < _FLOAT32_EXACT else np.float64
    return np.matmul(a.astype(dt), b.astype(dt))
