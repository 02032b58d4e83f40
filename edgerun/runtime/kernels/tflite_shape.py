"""TFLite shape, layout and indexing ops, plus DENSIFY, IF and WHILE.

Moving elements does not change their quantization, so these take ``quant`` and, apart
from CONCATENATION of differently scaled inputs and the pad value, ignore it.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime import budget
from edgerun.runtime.dtypes import runtime_dtype
from edgerun.runtime.kernels.control import _truth
from edgerun.runtime.kernels.tflite_common import axes_of, fused, quant_of, round_half_away
from edgerun.runtime.registry import kernel
from edgerun.runtime.tflite_reader import DOMAIN


def _ints(v) -> list[int]:
    return [int(i) for i in np.asarray(v).reshape(-1)]


@kernel("RESHAPE", since=1, domain=DOMAIN)
def reshape(input, shape=None, *, new_shape=(), quant=None):
    target = _ints(shape) if shape is not None and np.size(shape) else list(new_shape)
    return input.reshape(target)


@kernel("TRANSPOSE", since=1, domain=DOMAIN)
def transpose(input, perm, *, quant=None):
    return np.transpose(input, _ints(perm))


@kernel("SQUEEZE", since=1, domain=DOMAIN)
def squeeze(input, *, squeeze_dims=(), quant=None):
    if not len(squeeze_dims):
        return np.squeeze(input)
    return np.squeeze(input, axis=axes_of(squeeze_dims, input.ndim))


@kernel("EXPAND_DIMS", since=1, domain=DOMAIN)
def expand_dims(input, axis, *, quant=None):
    a = int(np.asarray(axis).reshape(-1)[0])
    return np.expand_dims(input, a if a >= 0 else a + input.ndim + 1)


@kernel("CONCATENATION", since=1, domain=DOMAIN)
def concatenation(*values, axis=0, fused_activation_function="NONE", quant=None):
    qy = quant_of(quant, 0, output=True)
    if qy is not None and values[0].dtype.kind in "iu":
        values = tuple(_rescaled(v, quant_of(quant, i), qy) for i, v in enumerate(values))
        return np.concatenate(values, axis=axis)
    return fused(np.concatenate(values, axis=axis), fused_activation_function)


def _rescaled(v, q, qy):
    # ConcatenationWithScaling: inputs of another scale are requantized in float32
    if q is None or (q.scale[0] == qy.scale[0] and q.zero_point[0] == qy.zero_point[0]):
        return v
    scale = np.float32(q.scale[0]) * (np.float32(1) / np.float32(qy.scale[0]))
    bias = np.float32(-q.zero_point[0]) * scale
    y = round_half_away(v.astype(np.float32) * scale + bias) + int(qy.zero_point[0])
    info = np.iinfo(qy.dtype)
    return np.clip(y, info.min, info.max).astype(qy.dtype)


def _widths(input, paddings) -> list[list[int]]:
    widths = np.asarray(paddings).reshape(-1, 2).tolist()
    if len(widths) != input.ndim or min((min(w) for w in widths), default=0) < 0:
        raise ValueError(f"paddings {widths} do not fit an input of rank {input.ndim}")
    grown = [d + a + b for d, (a, b) in zip(input.shape, widths, strict=True)]
    budget.check(grown, input.dtype, "padded output")
    return widths


def _pad(input, paddings, value):
    return np.pad(input, _widths(input, paddings), constant_values=value)


@kernel("PAD", since=1, domain=DOMAIN)
def pad(input, paddings, *, quant=None):
    q = quant_of(quant, 0)
    # a quantized zero is the zero point
    value = int(q.zero_point[0]) if q is not None and input.dtype.kind in "iu" else 0
    return _pad(input, paddings, value)


@kernel("PADV2", since=1, domain=DOMAIN)
def padv2(input, paddings, constant_values=None, *, quant=None):
    value = 0 if constant_values is None else np.asarray(constant_values).reshape(-1)[0]
    return _pad(input, paddings, value)


@kernel("MIRROR_PAD", since=1, domain=DOMAIN)
def mirror_pad(input, paddings, *, mode=0, quant=None):
    mirror = "reflect" if mode == 0 else "symmetric"
    return np.pad(input, _widths(input, paddings), mode=mirror)


def _bit(mask: int, i: int) -> bool:
    return bool(mask >> i & 1)


@kernel("STRIDED_SLICE", since=1, domain=DOMAIN)
def strided_slice(
    input,
    begin,
    end,
    strides=None,
    *,
    begin_mask=0,
    end_mask=0,
    ellipsis_mask=0,
    new_axis_mask=0,
    shrink_axis_mask=0,
    offset=0,
    quant=None,
):
    b, e = _ints(begin), _ints(end)
    s = _ints(strides) if strides is not None else [1] * len(b)
    if not len(b) == len(e) == len(s) or 0 in s:
        raise ValueError("STRIDED_SLICE needs begin, end and nonzero strides of one length")
    index: list = []
    for i, (lo, hi, step) in enumerate(zip(b, e, s, strict=True)):
        if _bit(ellipsis_mask, i):
            index.append(Ellipsis)
        elif _bit(new_axis_mask, i):
            index.append(None)
        elif _bit(shrink_axis_mask, i):
            index.append(lo)
        else:
            hi = lo + hi if offset else hi
            index.append(
                slice(None if _bit(begin_mask, i) else lo, None if _bit(end_mask, i) else hi, step)
            )
    return np.ascontiguousarray(input[tuple(index)])


@kernel("SLICE", since=1, domain=DOMAIN)
def slice_(input, begin, size, *, quant=None):
    b, n = _ints(begin), _ints(size)
    if len(b) != input.ndim or len(n) != input.ndim:
        raise ValueError(f"SLICE needs begin and size of rank {input.ndim}")
    index = tuple(
        slice(lo, dim if k == -1 else lo + k) for lo, k, dim in zip(b, n, input.shape, strict=True)
    )
    return input[index]


@kernel("GATHER", since=1, domain=DOMAIN)
def gather(params, indices, *, axis=0, batch_dims=0, quant=None):
    if batch_dims:
        raise ValueError("GATHER with batch_dims is not supported")
    axis = axis % params.ndim
    idx = np.asarray(indices).astype(np.intp)
    if np.any(idx < 0) or np.any(idx >= params.shape[axis]):
        raise ValueError(f"GATHER indices out of range for axis of size {params.shape[axis]}")
    return np.take(params, idx, axis=axis)


@kernel("GATHER_ND", since=1, domain=DOMAIN)
def gather_nd(params, indices, *, quant=None):
    idx = np.asarray(indices).astype(np.intp)
    return params[tuple(np.moveaxis(idx, -1, 0))]


@kernel("SPLIT", since=1, domain=DOMAIN)
def split(axis, input, *, num_splits=1, quant=None):
    a = int(np.asarray(axis).reshape(-1)[0])
    return tuple(np.split(input, num_splits, axis=a))


@kernel("SPLIT_V", since=1, domain=DOMAIN)
def split_v(input, size_splits, axis, *, num_splits=1, quant=None):
    a = int(np.asarray(axis).reshape(-1)[0]) % input.ndim
    sizes = _ints(size_splits)
    if sizes.count(-1) == 1:
        sizes[sizes.index(-1)] = input.shape[a] - (sum(sizes) + 1)
    if sum(sizes) != input.shape[a] or min(sizes) < 0:
        raise ValueError(f"SPLIT_V sizes {sizes} do not add up to {input.shape[a]}")
    return tuple(np.split(input, np.cumsum(sizes)[:-1], axis=a))


@kernel("PACK", since=1, domain=DOMAIN)
def pack(*values, values_count=0, axis=0, quant=None):
    return np.stack(values, axis=axis)


@kernel("UNPACK", since=1, domain=DOMAIN)
def unpack(input, *, num=0, axis=0, quant=None):
    return tuple(np.take(input, i, axis=axis) for i in range(input.shape[axis]))


@kernel("SHAPE", since=1, domain=DOMAIN)
def shape(input, *, out_dtype=6, quant=None):
    return np.array(input.shape, dtype=runtime_dtype(out_dtype))


@kernel("RANK", since=1, domain=DOMAIN)
def rank(input, *, quant=None):
    return np.array(input.ndim, dtype=np.int32)


def _arg(fn, input, axis, out_dtype):
    a = int(np.asarray(axis).reshape(-1)[0])
    return fn(input, axis=a).astype(runtime_dtype(out_dtype))


@kernel("ARG_MAX", since=1, domain=DOMAIN)
def arg_max(input, axis, *, output_type=0, out_dtype=7, quant=None):
    return _arg(np.argmax, input, axis, out_dtype)


@kernel("ARG_MIN", since=1, domain=DOMAIN)
def arg_min(input, axis, *, output_type=0, out_dtype=7, quant=None):
    return _arg(np.argmin, input, axis, out_dtype)


@kernel("CAST", since=1, domain=DOMAIN)
def cast(input, *, out_dtype=1, quant=None):
    return input.astype(runtime_dtype(out_dtype))


@kernel("TILE", since=1, domain=DOMAIN)
def tile(input, multiples, *, quant=None):
    times = _ints(multiples)
    if len(times) != input.ndim or min(times, default=1) < 0:
        raise ValueError(f"multiples {times} do not fit an input of rank {input.ndim}")
    budget.check([d * t for d, t in zip(input.shape, times, strict=True)], input.dtype, "TILE")
    return np.tile(input, times)


@kernel("BROADCAST_TO", since=1, domain=DOMAIN)
def broadcast_to(input, shape, *, quant=None):
    budget.check(_ints(shape), input.dtype, "BROADCAST_TO output")
    return np.broadcast_to(input, _ints(shape)).copy()


@kernel("FILL", since=1, domain=DOMAIN)
def fill(dims, value, *, quant=None):
    budget.check(_ints(dims), np.asarray(value).dtype, "FILL output")
    return np.full(_ints(dims), np.asarray(value).reshape(()), dtype=np.asarray(value).dtype)


@kernel("ZEROS_LIKE", since=1, domain=DOMAIN)
def zeros_like(input, *, quant=None):
    return np.zeros_like(input)


@kernel("RANGE", since=1, domain=DOMAIN)
def range_(start, limit, delta, *, quant=None):
    first, stop, step = (float(np.asarray(v).reshape(())) for v in (start, limit, delta))
    if step == 0:
        raise ValueError("RANGE with a zero delta")
    budget.check([max(0, int(np.ceil((stop - first) / step)))], start.dtype, "RANGE output")
    return np.arange(start.reshape(()), limit.reshape(()), delta.reshape(()), dtype=start.dtype)


@kernel("REVERSE_V2", since=1, domain=DOMAIN)
def reverse_v2(input, axis, *, quant=None):
    return np.flip(input, axis=axes_of(axis, input.ndim)).copy()


@kernel("DENSIFY", since=1, domain=DOMAIN)
def densify(input, *, quant=None):
    # the reader turns sparse constants into dense ones when the plan is built
    return input


@kernel("IF", since=1, domain=DOMAIN, scope=True)
def if_(cond, *inputs, then_branch=None, else_branch=None, scope=None, quant=None):
    branch = then_branch if _truth(cond) else else_branch
    return tuple(branch.call(list(inputs), scope))


@kernel("WHILE", since=1, domain=DOMAIN, scope=True)
def while_(*inputs, cond=None, body=None, scope=None, quant=None):
    values = list(inputs)
    while _truth(cond.call(values, scope)[0]):
        values = body.call(values, scope)
    return tuple(values)
