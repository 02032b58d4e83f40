"""Reductions over axes (Reduce*) and ArgMax / ArgMin."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.registry import kernel

# -- axes -----------------------------------------------------------------------------------
# A reducer takes ``axes`` as numpy does: None reduces every axis, () none of them (the
# "noop" case, where the reduction of a single element is applied element-wise).


def _attribute_axes(axes):
    return tuple(axes) if axes else None


def _input_axes(axes, noop_with_empty_axes):
    if axes is None or np.size(axes) == 0:
        return () if noop_with_empty_axes else None
    return tuple(int(a) for a in np.asarray(axes).reshape(-1))


def _wide(dtype):
    # Half-precision floats (float16, and ml_dtypes types numpy sees as kind "V") accumulate
    # in float32; every other type accumulates in itself, as onnxruntime does.
    if dtype.kind in "biu" or dtype in (np.float32, np.float64):
        return dtype
    return np.dtype(np.float32)


def _floating(dtype):
    # log/sqrt reductions of integers compute in float64 and truncate back
    return np.dtype(np.float64) if dtype.kind in "biu" else _wide(dtype)


def _out(result, dtype):
    return np.asarray(result).astype(dtype, copy=False)


def _lowest(dtype):
    if dtype.kind == "b":
        return False
    if dtype.kind in "iu":
        return np.iinfo(dtype).min
    return -np.inf


def _highest(dtype):
    if dtype.kind == "b":
        return True
    if dtype.kind in "iu":
        return np.iinfo(dtype).max
    return np.inf


# -- reducers -------------------------------------------------------------------------------


def _sum(x, axes, keepdims):
    dt = _wide(x.dtype)
    return _out(np.sum(x, axis=axes, keepdims=bool(keepdims), dtype=dt), x.dtype)


def _mean(x, axes, keepdims):
    dt = _floating(x.dtype)
    total = np.sum(x, axis=axes, keepdims=bool(keepdims), dtype=dt)
    count = x.size // max(total.size, 1) if x.size else 0
    # the mean of an empty set is 0, as onnxruntime gives (the spec leaves it undefined)
    return _out(total / dt.type(max(count, 1)), x.dtype)


def _max(x, axes, keepdims):
    w = x.astype(_wide(x.dtype), copy=False)
    initial = {"initial": _lowest(w.dtype)} if x.size == 0 else {}
    return _out(np.max(w, axis=axes, keepdims=bool(keepdims), **initial), x.dtype)


def _min(x, axes, keepdims):
    w = x.astype(_wide(x.dtype), copy=False)
    initial = {"initial": _highest(w.dtype)} if x.size == 0 else {}
    return _out(np.min(w, axis=axes, keepdims=bool(keepdims), **initial), x.dtype)


def _prod(x, axes, keepdims):
    dt = _wide(x.dtype)
    return _out(np.prod(x, axis=axes, keepdims=bool(keepdims), dtype=dt), x.dtype)


def _l1(x, axes, keepdims):
    w = x.astype(_wide(x.dtype), copy=False)
    return _out(np.sum(np.abs(w), axis=axes, keepdims=bool(keepdims)), x.dtype)


def _l2(x, axes, keepdims):
    w = x.astype(_floating(x.dtype), copy=False)
    return _out(np.sqrt(np.sum(w * w, axis=axes, keepdims=bool(keepdims))), x.dtype)


def _sum_square(x, axes, keepdims):
    w = x.astype(_wide(x.dtype), copy=False)
    return _out(np.sum(w * w, axis=axes, keepdims=bool(keepdims)), x.dtype)


def _log_sum(x, axes, keepdims):
    w = x.astype(_floating(x.dtype), copy=False)
    with np.errstate(divide="ignore"):  # log(0) = -inf: the empty set's value
        return _out(np.log(np.sum(w, axis=axes, keepdims=bool(keepdims))), x.dtype)


def _log_sum_exp(x, axes, keepdims):
    w = x.astype(_floating(x.dtype), copy=False)
    # stable: log(sum(exp(x - m))) + m, with m = 0 where the max is not finite (empty, -inf)
    m = np.max(w, axis=axes, keepdims=True, initial=-np.inf)
    m = np.where(np.isfinite(m), m, w.dtype.type(0))
    with np.errstate(divide="ignore"):
        s = np.log(np.sum(np.exp(w - m), axis=axes, keepdims=bool(keepdims)))
    return _out(s + m.reshape(s.shape), x.dtype)


# -- the ops: axes as an attribute (opset 1), as an input (ReduceSum 13, the others 18) -------


@kernel("ReduceSum", since=1)
def reduce_sum_1(data, *, axes=None, keepdims=1):
    return _sum(data, _attribute_axes(axes), keepdims)


@kernel("ReduceSum", since=13)
def reduce_sum_13(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    return _sum(data, _input_axes(axes, noop_with_empty_axes), keepdims)


@kernel("ReduceMean", since=1)
def reduce_mean_1(data, *, axes=None, keepdims=1):
    return _mean(data, _attribute_axes(axes), keepdims)


@kernel("ReduceMean", since=18)
def reduce_mean_18(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    return _mean(data, _input_axes(axes, noop_with_empty_axes), keepdims)


@kernel("ReduceMax", since=1)
def reduce_max_1(data, *, axes=None, keepdims=1):
    return _max(data, _attribute_axes(axes), keepdims)


@kernel("ReduceMax", since=18)
def reduce_max_18(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    return _max(data, _input_axes(axes, noop_with_empty_axes), keepdims)


@kernel("ReduceMin", since=1)
def reduce_min_1(data, *, axes=None, keepdims=1):
    return _min(data, _attribute_axes(axes), keepdims)


@kernel("ReduceMin", since=18)
def reduce_min_18(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    return _min(data, _input_axes(axes, noop_with_empty_axes), keepdims)


@kernel("ReduceProd", since=1)
def reduce_prod_1(data, *, axes=None, keepdims=1):
    return _prod(data, _attribute_axes(axes), keepdims)


@kernel("ReduceProd", since=18)
def reduce_prod_18(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    return _prod(data, _input_axes(axes, noop_with_empty_axes), keepdims)


@kernel("ReduceL1", since=1)
def reduce_l1_1(data, *, axes=None, keepdims=1):
    return _l1(data, _attribute_axes(axes), keepdims)


@kernel("ReduceL1", since=18)
def reduce_l1_18(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    return _l1(data, _input_axes(axes, noop_with_empty_axes), keepdims)


@kernel("ReduceL2", since=1)
def reduce_l2_1(data, *, axes=None, keepdims=1):
    return _l2(data, _attribute_axes(axes), keepdims)


@kernel("ReduceL2", since=18)
def reduce_l2_18(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    return _l2(data, _input_axes(axes, noop_with_empty_axes), keepdims)


@kernel("ReduceLogSum", since=1)
def reduce_log_sum_1(data, *, axes=None, keepdims=1):
    return _log_sum(data, _attribute_axes(axes), keepdims)


@kernel("ReduceLogSum", since=18)
def reduce_log_sum_18(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    return _log_sum(data, _input_axes(axes, noop_with_empty_axes), keepdims)


@kernel("ReduceLogSumExp", since=1)
def reduce_log_sum_exp_1(data, *, axes=None, keepdims=1):
    return _log_sum_exp(data, _attribute_axes(axes), keepdims)


@kernel("ReduceLogSumExp", since=18)
def reduce_log_sum_exp_18(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    return _log_sum_exp(data, _input_axes(axes, noop_with_empty_axes), keepdims)


@kernel("ReduceSumSquare", since=1)
def reduce_sum_square_1(data, *, axes=None, keepdims=1):
    return _sum_square(data, _attribute_axes(axes), keepdims)


@kernel("ReduceSumSquare", since=18)
def reduce_sum_square_18(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    return _sum_square(data, _input_axes(axes, noop_with_empty_axes), keepdims)


# -- ArgMax / ArgMin ------------------------------------------------------------------------


def _arg(find, data, axis, keepdims, select_last_index):
    if data.ndim == 0:
        raise ValueError("ArgMax/ArgMin need an input of rank >= 1")
    w = data.astype(_wide(data.dtype), copy=False)
    if select_last_index:
        # the first hit in the reversed axis is the last one in the original
        index = data.shape[axis] - 1 - find(np.flip(w, axis), axis=axis, keepdims=bool(keepdims))
    else:
        index = find(w, axis=axis, keepdims=bool(keepdims))
    return np.asarray(index, dtype=np.int64)


@kernel("ArgMax", since=1)
def arg_max_1(data, *, axis=0, keepdims=1):
    return _arg(np.argmax, data, axis, keepdims, 0)


@kernel("ArgMax", since=12)
def arg_max_12(data, *, axis=0, keepdims=1, select_last_index=0):
    return _arg(np.argmax, data, axis, keepdims, select_last_index)


@kernel("ArgMin", since=1)
def arg_min_1(data, *, axis=0, keepdims=1):
    return _arg(np.argmin, data, axis, keepdims, 0)


@kernel("ArgMin", since=12)
def arg_min_12(data, *, axis=0, keepdims=1, select_last_index=0):
    return _arg(np.argmin, data, axis, keepdims, select_last_index)
