"""Normalizations: batch, instance, layer, group, RMS, LRN, Lp, mean-variance."""

from __future__ import annotations

import math

import numpy as np

from edgerun.runtime.kernels.linalg import last_axis_sums
from edgerun.runtime.registry import kernel


def _compute_dtype(dtype):
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float32)


def _stash_dtype(stash_type, dtype):
    # stash_type is an ONNX element type: 1 float32, 11 float64; others compute as the input
    return {1: np.dtype(np.float32), 11: np.dtype(np.float64)}.get(
        stash_type, _compute_dtype(dtype)
    )


def _per_channel(v, x, dt):
    """A (C,) parameter shaped to broadcast over (N, C, *spatial); (C, *spatial) as is."""
    v = np.asarray(v).astype(dt, copy=False)
    if v.ndim == 1 and v.shape[0] == x.shape[1]:
        return v.reshape((-1,) + (1,) * (x.ndim - 2))
    return v


def _batch_norm(X, scale, B, mean, var, epsilon):
    dt = _compute_dtype(X.dtype)
    x = X.astype(dt, copy=False)
    inv = _per_channel(scale, x, dt) / np.sqrt(_per_channel(var, x, dt) + dt.type(epsilon))
    y = (x - _per_channel(mean, x, dt)) * inv + _per_channel(B, x, dt)
    return y.astype(X.dtype, copy=False)


@kernel("BatchNormalization", since=1)
def batch_normalization_1(
    X,
    scale,
    B,
    mean,
    var,
    *,
    consumed_inputs=None,
    epsilon=1e-5,
    is_test=0,
    momentum=0.9,
    spatial=1,
):
    return _batch_norm(X, scale, B, mean, var, epsilon)


@kernel("BatchNormalization", since=6)
def batch_normalization_6(
    X, scale, B, mean, var, *, epsilon=1e-5, is_test=0, momentum=0.9, spatial=1
):
    return _batch_norm(X, scale, B, mean, var, epsilon)


@kernel("BatchNormalization", since=7)
def batch_normalization_7(X, scale, B, mean, var, *, epsilon=1e-5, momentum=0.9, spatial=1):
    return _batch_norm(X, scale, B, mean, var, epsilon)


@kernel("BatchNormalization", since=9)
def batch_normalization_9(X, scale, B, mean, var, *, epsilon=1e-5, momentum=0.9):
    return _batch_norm(X, scale, B, mean, var, epsilon)


@kernel("BatchNormalization", since=14)
def batch_normalization_14(
    X, scale, B, input_mean, input_var, *, epsilon=1e-5, momentum=0.9, training_mode=0
):
    if not training_mode:
        return _batch_norm(X, scale, B, input_mean, input_var, epsilon)
    dt = _compute_dtype(X.dtype)
    x = X.astype(dt, copy=False)
    axes = (0, *range(2, X.ndim))
    batch_mean = x.mean(axis=axes)
    batch_var = x.var(axis=axes)
    y = _batch_norm(X, scale, B, batch_mean, batch_var, epsilon)
    m = dt.type(momentum)
    running_mean = input_mean.astype(dt) * m + batch_mean * (1 - m)
    running_var = input_var.astype(dt) * m + batch_var * (1 - m)
    return y, running_mean.astype(input_mean.dtype), running_var.astype(input_var.dtype)


def _standardize(x, start, epsilon):
    """(x - mean) / sqrt(var + eps) over the axes from ``start`` on, with the mean and 1/std
    it used (keepdims shapes). Those axes are taken as rows: a row's sum is its product with
    a vector of ones (BLAS) and its sum of squares its dot product with itself (einsum, no
    temporary), where numpy's reductions over short rows cost twice the rest (MiniLM's
    LayerNormalization of 128x384: 111 -> 53 us). The variance is still taken about the
    mean, two passes, as onnxruntime's reference does."""
    shape = x.shape
    n = math.prod(shape[start:])
    rows = x.reshape(math.prod(shape[:start]), n)
    dtype = x.dtype.type
    mean = last_axis_sums(rows)
    mean /= dtype(n)
    diff = np.subtract(rows, mean[:, None])
    var = np.einsum("ij,ij->i", diff, diff)
    var /= dtype(n)
    var += dtype(epsilon)
    inv_std = np.sqrt(var, out=var)
    np.divide(dtype(1), inv_std, out=inv_std)
    diff *= inv_std[:, None]
    kept = shape[:start] + (1,) * (len(shape) - start)
    return diff.reshape(shape), mean.reshape(kept), inv_std.reshape(kept)


def _instance_norm(X, scale, B, epsilon):
    dt = _compute_dtype(X.dtype)
    x = X.astype(dt, copy=False)
    y, _, _ = _standardize(x, 2, epsilon)
    y = y * _per_channel(scale, x, dt) + _per_channel(B, x, dt)
    return y.astype(X.dtype, copy=False)


@kernel("InstanceNormalization", since=1)
def instance_normalization_1(input, scale, B, *, consumed_inputs=None, epsilon=1e-5):
    return _instance_norm(input, scale, B, epsilon)


@kernel("InstanceNormalization", since=6)
def instance_normalization_6(input, scale, B, *, epsilon=1e-5):
    return _instance_norm(input, scale, B, epsilon)


@kernel("LayerNormalization", since=17)
def layer_normalization_17(X, Scale, B=None, *, axis=-1, epsilon=1e-5, stash_type=1):
    dt = _stash_dtype(stash_type, X.dtype)
    axis = axis + X.ndim if axis < 0 else axis
    y, mean, inv_std = _standardize(X.astype(dt, copy=False), axis, epsilon)
    y = y.astype(X.dtype, copy=False)
    y *= Scale
    if B is not None:
        y += B
    return y, mean, inv_std


def _group_norm(X, scale, bias, epsilon, num_groups, dt):
    n, c = X.shape[:2]
    if num_groups <= 0 or c % num_groups:
        raise ValueError(f"{c} channels do not split into num_groups={num_groups}")
    x = X.astype(dt, copy=False).reshape(n, num_groups, -1)
    y, _, _ = _standardize(x, 2, epsilon)
    y = y.reshape(X.shape).astype(X.dtype, copy=False)
    return (y * _per_channel(scale, X, X.dtype) + _per_channel(bias, X, X.dtype)).astype(
        X.dtype, copy=False
    )


@kernel("GroupNormalization", since=18)
def group_normalization_18(X, scale, bias, *, epsilon=1e-5, num_groups=None):
    # opset 18: one scale and bias per group, shared by the group's channels
    per = X.shape[1] // num_groups if num_groups else 1
    scale, bias = np.repeat(scale, per), np.repeat(bias, per)
    return _group_norm(X, scale, bias, epsilon, num_groups or 0, _compute_dtype(X.dtype))


@kernel("GroupNormalization", since=21)
def group_normalization_21(X, scale, bias, *, epsilon=1e-5, num_groups=None, stash_type=1):
    return _group_norm(X, scale, bias, epsilon, num_groups or 0, _stash_dtype(stash_type, X.dtype))


@kernel("RMSNormalization", since=23)
def rms_normalization_23(X, scale, *, axis=-1, epsilon=1e-5, stash_type=1):
    dt = _stash_dtype(stash_type, X.dtype)
    axis = axis + X.ndim if axis < 0 else axis
    x = X.astype(dt, copy=False)
    ms = np.mean(x * x, axis=tuple(range(axis, X.ndim)), keepdims=True)
    y = (x / np.sqrt(ms + dt.type(epsilon))).astype(X.dtype, copy=False)
    return (y * scale).astype(X.dtype, copy=False)


@kernel("LRN", since=1)
def lrn_1(X, *, alpha=1e-4, beta=0.75, bias=1.0, size=None):
    if not size:
        raise ValueError("LRN needs size")
    dt = _compute_dtype(X.dtype)
    x = X.astype(dt, copy=False)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = np.pad(x * x, [(0, 0), (lo, hi)] + [(0, 0)] * (x.ndim - 2))
    c = x.shape[1]
    total = sq[:, 0:c].copy()
    for t in range(1, size):  # channel taps of the window
        total += sq[:, t : t + c]
    y = x / (dt.type(bias) + dt.type(alpha / size) * total) ** dt.type(beta)
    return y.astype(X.dtype, copy=False)


@kernel("LpNormalization", since=1)
def lp_normalization_1(input, *, axis=-1, p=2):
    if p not in (1, 2):
        raise ValueError(f"LpNormalization supports p=1 or 2, not {p}")
    dt = _compute_dtype(input.dtype)
    x = input.astype(dt, copy=False)
    norm = (
        np.abs(x).sum(axis=axis, keepdims=True)
        if p == 1
        else np.sqrt((x * x).sum(axis=axis, keepdims=True))
    )
    # a zero norm gives 0, not NaN
    y = np.divide(x, norm, out=np.zeros_like(x), where=norm != 0)
    return y.astype(input.dtype, copy=False)


@kernel("MeanVarianceNormalization", since=9)
def mean_variance_normalization_9(X, *, axes=(0, 2, 3)):
    dt = _compute_dtype(X.dtype)
    x = X.astype(dt, copy=False)
    axes = tuple(axes)
    diff = x - x.mean(axis=axes, keepdims=True)
    var = np.mean(diff * diff, axis=axes, keepdims=True)
    # as the spec's function body: 1e-9 added to the standard deviation, not the variance
    y = diff / (np.sqrt(var) + dt.type(1e-9))
    return y.astype(X.dtype, copy=False)
