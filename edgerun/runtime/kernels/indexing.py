import numpy as np

from edgerun.runtime.registry import kernel

_REDUCE = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


def _wrapped(indices, dims):
    """Indices with negatives wrapped, in numpy's own index type (``np.take`` on 32-bit ARM
    refuses int64); ``dims`` broadcasts against them."""
    idx = np.asarray(indices).astype(np.int64, copy=False)
    dims = np.asarray(dims, dtype=np.int64)
    if idx.size and ((idx < -dims).any() or (idx >= dims).any()):
        raise ValueError(f"indices out of range for dimension(s) {dims.tolist()}")
    return np.where(idx < 0, idx + dims, idx).astype(np.intp, copy=False)


def _check_along(indices, data, axis: int) -> None:
    if indices.ndim != data.ndim or any(
        i > d for a, (i, d) in enumerate(zip(indices.shape, data.shape, strict=True)) if a != axis
    ):
        raise ValueError(f"indices {indices.shape} do not fit data {data.shape} off axis {axis}")


def _along(idx, axis: int) -> tuple:
    """Advanced index placing ``idx`` on ``axis``; other axes index themselves (indices may
    be smaller than the data there, which take/put_along_axis would reject)."""
    grid = list(np.indices(idx.shape, sparse=True))
    grid[axis] = idx
    return tuple(grid)


def _scalar(value) -> int:
    return int(np.asarray(value).reshape(-1)[0])


# -- gathers ----------------------------------------------------------------------------


@kernel("Gather", since=1)
def gather_1(data, indices, *, axis=0):
    axis = _axis(axis, data.ndim)
    return np.take(data, _wrapped(indices, data.shape[axis]), axis=axis)


@kernel("GatherElements", since=11)
def gather_elements_11(data, indices, *, axis=0):
    axis = _axis(axis, data.ndim)
    _check_along(indices, data, axis)
    return data[_along(_wrapped(indices, data.shape[axis]), axis)]


def _nd_index(data_shape, indices, batch_dims: int):
    """(batch index, per-axis index arrays) addressing data flattened over its batch axes."""
    k = indices.shape[-1]
    if data_shape[:batch_dims] != indices.shape[:batch_dims] or batch_dims + k > len(data_shape):
        raise ValueError(f"indices {indices.shape} do not fit data {data_shape}")
    idx = _wrapped(indices, data_shape[batch_dims : batch_dims + k])
    batches = int(np.prod(data_shape[:batch_dims], dtype=np.int64))
    idx = idx.reshape(batches, -1, k)
    return (np.arange(batches)[:, None], *np.moveaxis(idx, -1, 0))


def _gather_nd(data, indices, batch_dims: int):
    index = _nd_index(data.shape, indices, batch_dims)
    k = indices.shape[-1]
    flat = data.reshape(-1, *data.shape[batch_dims:])
    return flat[index].reshape(*indices.shape[:-1], *data.shape[batch_dims + k :])


@kernel("GatherND", since=11)
def gather_nd_11(data, indices):
    return _gather_nd(data, indices, 0)


@kernel("GatherND", since=12)
def gather_nd_12(data, indices, *, batch_dims=0):
    return _gather_nd(data, indices, batch_dims)


# -- scatters ---------------------------------------------------------------------------


def _scattered(data, index, updates, reduction: str):
    """A copy of ``data`` with ``updates`` written or reduced into ``index``."""
    out = data.copy()
    if reduction == "none":
        out[index] = updates
    elif reduction in _REDUCE:
        _REDUCE[reduction].at(out, index, updates)
    else:
        raise ValueError(f"unknown reduction {reduction!r}")
    return out


def _scatter_elements(data, indices, updates, axis: int, reduction: str):
    axis = _axis(axis, data.ndim)
    _check_along(indices, data, axis)
    if indices.shape != updates.shape:
        raise ValueError("ScatterElements: indices and updates must match in shape")
    index = _along(_wrapped(indices, data.shape[axis]), axis)
    return _scattered(data, index, updates, reduction)


@kernel("Scatter", since=9)
def scatter_9(data, indices, updates, *, axis=0):
    return _scatter_elements(data, indices, updates, axis, "none")


@kernel("ScatterElements", since=11)
def scatter_elements_11(data, indices, updates, *, axis=0):
    return _scatter_elements(data, indices, updates, axis, "none")


@kernel("ScatterElements", since=16)
def scatter_elements_16(data, indices, updates, *, axis=0, reduction="none"):
    return _scatter_elements(data, indices, updates, axis, reduction)


def _scatter_nd(data, indices, updates, reduction: str):
    k = indices.shape[-1]
    if k > data.ndim or updates.shape != indices.shape[:-1] + data.shape[k:]:
        raise ValueError(f"ScatterND: updates {updates.shape} do not fit indices/data")
    index = tuple(np.moveaxis(_wrapped(indices, data.shape[:k]), -1, 0))
    return _scattered(data, index, updates, reduction)


@kernel("ScatterND", since=11)
def scatter_nd_11(data, indices, updates):
    return _scatter_nd(data, indices, updates, "none")


@kernel("ScatterND", since=16)
def scatter_nd_16(data, indices, updates, *, reduction="none"):
    return _scatter_nd(data, indices, updates, reduction)


@kernel("TensorScatter", since=24)
def tensor_scatter_24(past_cache, update, write_indices=None, *, mode="linear", axis=-2):
    axis = _axis(axis, past_cache.ndim)
    if axis == 0:
        raise ValueError("TensorScatter: axis cannot be the batch axis")
    batch, length, steps = past_cache.shape[0], past_cache.shape[axis], update.shape[axis]
    starts = np.zeros(batch, np.int64) if write_indices is None else write_indices.astype(np.int64)
    shape = [1] * past_cache.ndim
    shape[0], shape[axis] = batch, steps
    positions = (starts[:, None] + np.arange(steps)).reshape(shape)
    if mode == "circular":
        positions = positions % length
    elif mode != "linear":
        raise ValueError(f"unknown TensorScatter mode {mode!r}")
    if positions.size and (positions.min() < 0 or positions.max() >= length):
        raise ValueError("TensorScatter: the update runs past the cache")
    out = past_cache.copy()
    np.put_along_axis(out, np.broadcast_to(positions, update.shape), update, axis=axis)
    return out


# -- encodings and selections -----------------------------------------------------------


@kernel("OneHot", since=9)
def one_hot_9(indices, depth, values, *, axis=-1):
    depth = _scalar(depth)
    if depth < 1:
        raise ValueError(f"OneHot depth must be positive, got {depth}")
    values = values.reshape(-1)
    if values.size != 2:
        raise ValueError("OneHot values must hold [off_value, on_value]")
    axis = _axis(axis, indices.ndim + 1)
    idx = np.asarray(indices).astype(np.int64)
    idx = np.where(idx < 0, idx + depth, idx)  # still out of range: an all-off row
    hot = np.expand_dims(idx, axis) == np.arange(depth).reshape((-1,) + (1,) * (idx.ndim - axis))
    return np.where(hot, values[1], values[0])


@kernel("Compress", since=9)
def compress_9(input, condition, *, axis=None):
    condition = np.asarray(condition).astype(bool).reshape(-1)
    length = input.size if axis is None else input.shape[_axis(axis, input.ndim)]
    if condition.size > length:
        if condition[length:].any():
            raise ValueError("Compress: condition selects beyond the axis")
        condition = condition[:length]
    if axis is None:
        return np.compress(condition, input.reshape(-1))
    return np.compress(condition, input, axis=_axis(axis, input.ndim))


@kernel("NonZero", since=9)
def non_zero_9(X):
    if X.ndim == 0:
        return np.zeros((0, int(bool(X))), dtype=np.int64)
    return np.array(np.nonzero(X), dtype=np.int64).reshape(X.ndim, -1)


@kernel("Unique", since=11)
def unique_11(X, *, axis=None, sorted=1):
    data = X.reshape(-1) if axis is None else X
    axis_ = 0 if axis is None else _axis(axis, X.ndim)
    y, first, inverse, counts = np.unique(
        data, return_index=True, return_inverse=True, return_counts=True, axis=axis_
    )
    inverse = inverse.reshape(-1)
    if not sorted:  # order of first occurrence
        order = np.argsort(first, kind="stable")
        y = np.take(y, order, axis=axis_)
        first, counts = first[order], counts[order]
        inverse = np.argsort(order)[inverse]
    as64 = [a.astype(np.int64, copy=False) for a in (first, inverse, counts)]
    return (y, *as64)


def _order(x, largest: int):
    """Argsort along the last axis, best first, ties toward the lower index."""
    if not largest:
        return np.argsort(x, axis=-1, kind="stable")
    # stable sort of the reversed axis, read backwards: descending, ties to lower index
    return x.shape[-1] - 1 - np.argsort(x[..., ::-1], axis=-1, kind="stable")[..., ::-1]


def _top_k(X, k, axis: int, largest: int):
    axis = _axis(axis, X.ndim)
    n = X.shape[axis]
    if not 0 <= k <= n:
        raise ValueError(f"TopK: k={k} is outside [0, {n}]")
    x = np.moveaxis(X, axis, -1)
    if 0 < k <= n // 8 and X.dtype.kind in "iuf" and not np.isnan(x).any():
        # Partial path: keep every value at least as good as the k-th best (ties included),
        # gathered in index order, and sort only those.
        kth = np.partition(x, n - k if largest else k - 1, axis=-1)
        kth = kth[..., n - k : n - k + 1] if largest else kth[..., k - 1 : k]
        good = x >= kth if largest else x <= kth
        keep = int(good.sum(axis=-1).max())
        candidates = np.argsort(~good, axis=-1, kind="stable")[..., :keep]
        best = _order(np.take_along_axis(x, candidates, axis=-1), largest)[..., :k]
        order = np.take_along_axis(candidates, best, axis=-1)
    else:
        order = _order(x, largest)[..., :k]
    order = order.astype(np.int64, copy=False)
    values = np.take_along_axis(x, order, axis=-1)
    return np.moveaxis(values, -1, axis), np.moveaxis(order, -1, axis)


@kernel("TopK", since=1)
def top_k_1(X, *, axis=-1, k=None):
    if k is None:
        raise ValueError("TopK-1 needs the k attribute")
    return _top_k(X, k, axis, 1)


@kernel("TopK", since=10)
def top_k_10(X, K, *, axis=-1):
    return _top_k(X, _scalar(K), axis, 1)


@kernel("TopK", since=11)
def top_k_11(X, K, *, axis=-1, largest=1, sorted=1):
    return _top_k(X, _scalar(K), axis, largest)


@kernel("ReverseSequence", since=10)
def reverse_sequence_10(input, sequence_lens, *, batch_axis=1, time_axis=0):
    batch_axis, time_axis = _axis(batch_axis, input.ndim), _axis(time_axis, input.ndim)
    if batch_axis == time_axis or batch_axis > 1 or time_axis > 1:
        raise ValueError("ReverseSequence: batch_axis and time_axis must be 0 and 1")
    lens = sequence_lens.astype(np.int64)
    steps = input.shape[time_axis]
    if lens.shape != (input.shape[batch_axis],) or (lens < 0).any() or (lens > steps).any():
        raise ValueError("ReverseSequence: bad sequence_lens")
    shape = [1] * input.ndim
    shape[batch_axis] = lens.size
    lens = lens.reshape(shape)
    t = np.arange(steps).reshape([-1 if a == time_axis else 1 for a in range(input.ndim)])
    source = np.where(t < lens, lens - 1 - t, t)
    source = np.broadcast_to(source, [*source.shape[:2], *input.shape[2:]])
    return np.take_along_axis(input, source, axis=time_axis)


# -- scans ------------------------------------------------------------------------------


def _cumulate(ufunc, x, axis, exclusive: int, reverse: int):
    axis = _axis(_scalar(axis), x.ndim)
    y = np.flip(x, axis) if reverse else x
    out = ufunc.accumulate(y, axis=axis, dtype=x.dtype)
    if exclusive:
        before = (slice(None),) * axis
        shifted = np.empty_like(out)
        shifted[(*before, slice(0, 1))] = ufunc.identity
        shifted[(*before, slice(1, None))] = out[(*before, slice(0, -1))]
        out = shifted
    return np.flip(out, axis) if reverse else out


@kernel("CumSum", since=11)
def cum_sum_11(x, axis, *, exclusive=0, reverse=0):
    return _cumulate(np.add, x, axis, exclusive, reverse)


@kernel("CumProd", since=26)
def cum_prod_26(x, axis, *, exclusive=0, reverse=0):
    return _cumulate(np.multiply, x, axis, exclusive, reverse)
