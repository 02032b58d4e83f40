import itertools
import math

import numpy as np

from edgerun.runtime import budget
from edgerun.runtime.dtypes import runtime_dtype
from edgerun.runtime.registry import kernel


def _ints(values) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


def _axes(axes, rank: int) -> list[int]:
    out = [_axis(a, rank) for a in _ints(axes)]
    if len(set(out)) != len(out):
        raise ValueError(f"axes {list(axes)} repeat an axis")
    return out


# -- shape queries ----------------------------------------------------------------------


@kernel("Shape", since=1)
def shape_1(data):
    return np.array(data.shape, dtype=np.int64)


@kernel("Shape", since=15)
def shape_15(data, *, start=0, end=None):
    # Python slicing clamps start/end exactly as the spec does
    return np.array(data.shape[start:end], dtype=np.int64)


@kernel("Size", since=1)
def size_1(data):
    return np.array(data.size, dtype=np.int64)


# -- reshaping views --------------------------------------------------------------------


def _reshape(data, shape, allowzero: int):
    dims = _ints(shape)
    if not allowzero:
        if any(d == 0 and i >= data.ndim for i, d in enumerate(dims)):
            raise ValueError(f"shape {dims} copies a dimension the input (rank {data.ndim}) lacks")
        dims = [data.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    if dims.count(-1) > 1 or any(d < -1 for d in dims):
        raise ValueError(f"invalid reshape target {dims}")
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        if known == 0 or data.size % known:
            raise ValueError(f"cannot reshape {data.shape} to {dims}")
        dims[dims.index(-1)] = data.size // known
    if math.prod(dims) != data.size:
        raise ValueError(f"cannot reshape {data.shape} to {dims}")
    regrouped = _regrouped_channels(data, dims)
    return data.reshape(dims) if regrouped is None else regrouped


def _regrouped_channels(data, dims):
    """The reshape of a channels-last tensor (N, A, B, H, W), each pixel's channels together
    with A the faster in memory, to (N, *channels, H, W): ShuffleNet's channel shuffle, whose
    (N, C/g, g, H, W) transposed view goes back to (N, C, H, W). numpy copies into C order,
    transposing the whole tensor, and the next convolution transposes it back; this copies
    pixel by pixel into a channels-last result, B runs of A contiguous values a pixel (as
    fast as numpy's copy: numpy's own order for it ran runs of B, 1.6x slower). None where
    the pattern does not hold."""
    if data.ndim != 5 or len(dims) < 4:
        return None
    n, a, b, h, w = data.shape
    item = data.itemsize
    pixel_major = (item, item * a, item * a * b * w, item * a * b)  # strides of A, B, H, W
    if dims[0] != n or tuple(dims[-2:]) != (h, w) or data.strides[1:] != pixel_major:
        return None
    pixels = np.empty((n, h, w, a, b), data.dtype)
    moved = np.moveaxis(data, (-2, -1), (1, 2))
    for j in range(b):
        pixels[..., j] = moved[..., j]
    return np.moveaxis(pixels.reshape(n, h, w, *dims[1:-2]), (1, 2), (-2, -1))


@kernel("Reshape", since=1)
def reshape_1(data, *, shape=None, consumed_inputs=None):
    if shape is None:
        raise ValueError("Reshape-1 needs the shape attribute")
    return _reshape(data, shape, 0)


@kernel("Reshape", since=5)
def reshape_5(data, shape):
    return _reshape(data, shape, 0)


@kernel("Reshape", since=14)
def reshape_14(data, shape, *, allowzero=0):
    return _reshape(data, shape, allowzero)


@kernel("Flatten", since=1)
def flatten_1(input, *, axis=1):
    rank = input.ndim
    if not -rank <= axis <= rank:
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    axis = axis + rank if axis < 0 else axis
    return input.reshape(math.prod(input.shape[:axis]), math.prod(input.shape[axis:]))


def _squeeze(data, axes):
    if axes is None:
        return data.reshape([d for d in data.shape if d != 1])
    axes = _axes(axes, data.ndim)
    if any(data.shape[a] != 1 for a in axes):
        raise ValueError(f"cannot squeeze axes {axes} of shape {data.shape}: not all are 1")
    return np.squeeze(data, axis=tuple(axes))


@kernel("Squeeze", since=1)
def squeeze_1(data, *, axes=None):
    return _squeeze(data, axes)


@kernel("Squeeze", since=13)
def squeeze_13(data, axes=None):
    return _squeeze(data, axes)


def _unsqueeze(data, axes):
    if axes is None:
        raise ValueError("Unsqueeze needs axes")
    axes = _axes(axes, data.ndim + len(_ints(axes)))
    return np.expand_dims(data, tuple(axes))


@kernel("Unsqueeze", since=1)
def unsqueeze_1(data, *, axes=None):
    return _unsqueeze(data, axes)


@kernel("Unsqueeze", since=13)
def unsqueeze_13(data, axes):
    return _unsqueeze(data, axes)


@kernel("Transpose", since=1)
def transpose_1(data, *, perm=None):
    if perm is not None and sorted(perm) != list(range(data.ndim)):
        raise ValueError(f"perm {perm} is not a permutation of the {data.ndim} axes")
    return np.transpose(data, perm)


# -- joining and splitting --------------------------------------------------------------


@kernel("Concat", since=1)
def concat_1(*inputs, axis=1):
    return concat_4(*inputs, axis=axis)


@kernel("Concat", since=4)
def concat_4(*inputs, axis=None):
    if axis is None:
        raise ValueError("Concat needs the axis attribute")
    if not inputs:
        raise ValueError("Concat needs at least one input")
    return np.concatenate(inputs, axis=_axis(axis, inputs[0].ndim))


def _split(input, axis: int, sizes: list[int]):
    axis = _axis(axis, input.ndim)
    if any(s < 0 for s in sizes) or sum(sizes) != input.shape[axis]:
        raise ValueError(f"split {sizes} does not add up to dimension {input.shape[axis]}")
    return tuple(np.split(input, list(itertools.accumulate(sizes))[:-1], axis=axis))


def _equal_parts(input, axis: int, outputs):
    if not outputs:
        raise ValueError("Split without split sizes needs the node's output count")
    parts = len(outputs)
    dim = input.shape[_axis(axis, input.ndim)]
    if dim % parts:
        raise ValueError(f"dimension {dim} does not split into {parts} equal parts")
    return [dim // parts] * parts


@kernel("Split", since=1, outputs=True)
def split_1(input, split_input=None, *, axis=0, split=None, outputs=None):
    sizes = split if split is not None else split_input
    if sizes is None:
        sizes = _equal_parts(input, axis, outputs)
    return _split(input, axis, _ints(sizes))


@kernel("Split", since=2, outputs=True)
def split_2(input, *, axis=0, split=None, outputs=None):
    sizes = _ints(split) if split is not None else _equal_parts(input, axis, outputs)
    return _split(input, axis, sizes)


@kernel("Split", since=13, outputs=True)
def split_13(input, split=None, *, axis=0, outputs=None):
    sizes = _ints(split) if split is not None else _equal_parts(input, axis, outputs)
    return _split(input, axis, sizes)


@kernel("Split", since=18, outputs=True)
def split_18(input, split=None, *, axis=0, num_outputs=None, outputs=None):
    if split is not None and num_outputs is not None:
        raise ValueError("Split takes either the split input or num_outputs, not both")
    if split is not None:
        return _split(input, axis, _ints(split))
    if num_outputs is None:
        return _split(input, axis, _equal_parts(input, axis, outputs))
    if num_outputs < 1:
        raise ValueError(f"num_outputs must be positive, got {num_outputs}")
    dim = input.shape[_axis(axis, input.ndim)]
    chunk = -(-dim // num_outputs)  # the last part takes what is left
    sizes = [min(chunk, max(dim - i * chunk, 0)) for i in range(num_outputs)]
    return _split(input, axis, sizes)


def _slice(data, starts, ends, axes, steps):
    starts, ends = _ints(starts), _ints(ends)
    axes = list(range(len(starts))) if axes is None else _axes(axes, data.ndim)
    steps = [1] * len(starts) if steps is None else _ints(steps)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ValueError("Slice: starts, ends, axes and steps differ in length")
    if 0 in steps:
        raise ValueError("Slice: a step is 0")
    index = [slice(None)] * data.ndim
    # Python's slice clamps starts/ends (negative steps included) exactly as the spec does
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        index[axis] = slice(start, end, step)
    return data[tuple(index)]


@kernel("Slice", since=1)
def slice_1(data, *, starts=None, ends=None, axes=None):
    if starts is None or ends is None:
        raise ValueError("Slice-1 needs the starts and ends attributes")
    return _slice(data, starts, ends, axes, None)


@kernel("Slice", since=10)
def slice_10(data, starts, ends, axes=None, steps=None):
    return _slice(data, starts, ends, axes, steps)


# -- repeating --------------------------------------------------------------------------


@kernel("Expand", since=8)
def expand_8(input, shape):
    target = _broadcast_shape(input.shape, tuple(_ints(shape)))
    budget.check(target, input.dtype, "Expand output")  # a view, but users of it copy
    return np.broadcast_to(input, target)


def _broadcast_shape(a: tuple, b: tuple) -> tuple:
    # in Python ints: np.broadcast_shapes refuses sizes it could never allocate
    rank = max(len(a), len(b))
    out = []
    for x, y in zip((1,) * (rank - len(a)) + a, (1,) * (rank - len(b)) + b, strict=True):
        if x != y and 1 not in (x, y):
            raise ValueError(f"cannot expand {a} to {list(b)}")
        out.append(y if x == 1 else x)
    return tuple(out)


@kernel("Tile", since=1)
def tile_1(input, tiles, axis):
    reps = [1] * input.ndim
    reps[_axis(int(np.asarray(axis).reshape(-1)[0]), input.ndim)] = _ints(tiles)[0]
    return _tile(input, reps)


def _tile(input, reps: list[int]):
    budget.check(
        [d * r for d, r in zip(input.shape, reps, strict=True)], input.dtype, "Tile output"
    )
    return np.tile(input, reps)


@kernel("Tile", since=6)
def tile_6(input, repeats):
    reps = _ints(repeats)
    if len(reps) != input.ndim or any(r < 0 for r in reps):
        raise ValueError(f"repeats {reps} do not fit an input of rank {input.ndim}")
    return _tile(input, reps)


@kernel("Identity", since=1)
def identity_1(input):
    return (input,)  # one output, even when the value is a sequence (a list)


# -- constants --------------------------------------------------------------------------


@kernel("Constant", since=1)
def constant_1(*, value=None):
    if value is None:
        raise ValueError("Constant needs a value")
    return value


@kernel("Constant", since=11)
def constant_11(*, value=None, sparse_value=None):
    return constant_1(value=value if sparse_value is None else sparse_value)


@kernel("Constant", since=12)
def constant_12(
    *,
    value=None,
    sparse_value=None,
    value_float=None,
    value_floats=None,
    value_int=None,
    value_ints=None,
    value_string=None,
    value_strings=None,
):
    given = {
        "value": value,
        "sparse_value": sparse_value,
        "value_float": None if value_float is None else np.array(value_float, np.float32),
        "value_floats": None if value_floats is None else np.array(value_floats, np.float32),
        "value_int": None if value_int is None else np.array(value_int, np.int64),
        "value_ints": None if value_ints is None else np.array(value_ints, np.int64),
        "value_string": None if value_string is None else np.array(value_string, object),
        "value_strings": None if value_strings is None else np.array(value_strings, object),
    }
    values = [v for v in given.values() if v is not None]
    if len(values) != 1:
        raise ValueError("Constant needs exactly one value attribute")
    return values[0]


@kernel("ConstantOfShape", since=9)
def constant_of_shape_9(input, *, value=None):
    dims = _constant_dims(input, value)
    if value is None:
        return np.zeros(dims, dtype=np.float32)
    return np.full(dims, value.reshape(-1)[0], dtype=value.dtype)


def constant_of_shape_view(input, *, value=None) -> np.ndarray:
    """ConstantOfShape's result as a read-only broadcast of its one value, for the plan to
    fold at load: no memory until a step reads it, when the plan lays it out once
    (plan._aligned). onnx's light_* models make every weight so, and BatchNormalization
    folding then wrote each a second time."""
    dims = _constant_dims(input, value)
    one = np.zeros((), np.float32) if value is None else value.reshape(-1)[:1].reshape(())
    return np.broadcast_to(one, dims)


def _constant_dims(input, value) -> list[int]:
    dims = _ints(input)
    if any(d < 0 for d in dims):
        raise ValueError(f"ConstantOfShape: negative dimension in {dims}")
    budget.check(dims, np.float32 if value is None else value.dtype, "ConstantOfShape output")
    return dims


def _range(start, limit, delta, stash):
    start, limit, delta = (np.asarray(v).reshape(()).item() for v in (start, limit, delta))
    if delta == 0:
        raise ValueError("Range: delta is 0")
    if not all(math.isfinite(v) for v in (start, limit, delta)):
        raise ValueError(f"Range: start {start}, limit {limit} and delta {delta} must be finite")
    count = max(math.ceil((limit - start) / delta), 0)
    budget.check([count], np.float64, "Range output")
    if isinstance(start, int):
        return start + np.arange(count, dtype=np.int64) * delta
    # start + i * delta as the spec writes it, not a running sum
    return np.asarray(start, stash) + np.arange(count, dtype=stash) * np.asarray(delta, stash)


@kernel("Range", since=11)
def range_11(start, limit, delta):
    return _range(start, limit, delta, np.float64).astype(start.dtype)


@kernel("Range", since=27)
def range_27(start, limit, delta, *, stash_type=1):
    low_precision = start.dtype.itemsize == 2 and start.dtype.kind not in "iu"
    stash = runtime_dtype(stash_type) if low_precision else np.float64
    return _range(start, limit, delta, stash).astype(start.dtype)


# -- padding and cropping ---------------------------------------------------------------


def _pad(data, pads, mode, value, axes=None):
    pads = _ints(pads)
    axes = list(range(data.ndim)) if axes is None else _axes(axes, data.ndim)
    if len(pads) != 2 * len(axes):
        raise ValueError(f"pads {pads} do not fit {len(axes)} axes")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise ValueError(f"unknown Pad mode {mode!r}")
    begin, end = [0] * data.ndim, [0] * data.ndim
    for i, axis in enumerate(axes):
        begin[axis], end[axis] = pads[i], pads[i + len(axes)]
    # negative pads crop first; np.pad then adds the positive ones
    crop = tuple(
        slice(-min(b, 0), d + min(e, 0)) for b, e, d in zip(begin, end, data.shape, strict=True)
    )
    widths = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end, strict=True)]
    cropped = data[crop]
    grown = [d + b + e for d, (b, e) in zip(cropped.shape, widths, strict=True)]
    budget.check(grown, data.dtype, "Pad output")
    if mode == "constant":
        return np.pad(cropped, widths, constant_values=value)
    if any(cropped.shape[a] == 0 and w != (0, 0) for a, w in enumerate(widths)):
        raise ValueError(f"Pad mode {mode!r} cannot pad an empty axis")
    return np.pad(cropped, widths, mode=mode)


def _constant(data, value):
    if value is None:
        return np.zeros((), dtype=data.dtype)
    return np.asarray(value).reshape(-1)[0] if np.ndim(value) else value


@kernel("Pad", since=1)
def pad_1(data, *, paddings=None, mode="constant", value=0.0):
    return _pad(data, paddings, mode, np.asarray(value, data.dtype))


@kernel("Pad", since=2)
def pad_2(data, *, pads=None, mode="constant", value=0.0):
    return _pad(data, pads, mode, np.asarray(value, data.dtype))


@kernel("Pad", since=11)
def pad_11(data, pads, constant_value=None, *, mode="constant"):
    return _pad(data, pads, mode, _constant(data, constant_value))


@kernel("Pad", since=18)
def pad_18(data, pads, constant_value=None, axes=None, *, mode="constant"):
    return _pad(data, pads, mode, _constant(data, constant_value), axes)


@kernel("CenterCropPad", since=18)
def center_crop_pad_18(input_data, shape, *, axes=None):
    axes = list(range(input_data.ndim)) if axes is None else _axes(axes, input_data.ndim)
    target = _ints(shape)
    if len(target) != len(axes):
        raise ValueError(f"shape {target} does not fit axes {axes}")
    grown = list(input_data.shape)
    for axis, want in zip(axes, target, strict=True):
        grown[axis] = want
    budget.check(grown, input_data.dtype, "CenterCropPad output")
    crop = [slice(None)] * input_data.ndim
    widths = [(0, 0)] * input_data.ndim
    for axis, want in zip(axes, target, strict=True):
        have = input_data.shape[axis]
        if want < have:  # the window starts rounded down
            crop[axis] = slice((have - want) // 2, (have - want) // 2 + want)
        elif want > have:  # the odd pixel goes to the end
            widths[axis] = ((want - have) // 2, want - have - (want - have) // 2)
    return np.pad(input_data[tuple(crop)], widths)


# -- block rearrangements ---------------------------------------------------------------


def _depth_to_space(input, blocksize, mode: str):
    if blocksize is None or blocksize < 1:
        raise ValueError("DepthToSpace needs a positive blocksize")
    n, c, h, w = input.shape
    b = blocksize
    if c % (b * b):
        raise ValueError(f"channels {c} are not divisible by blocksize² {b * b}")
    if mode == "DCR":
        x = input.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    elif mode == "CRD":
        x = input.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    else:
        raise ValueError(f"unknown DepthToSpace mode {mode!r}")
    return x.reshape(n, c // (b * b), h * b, w * b)


@kernel("DepthToSpace", since=1)
def depth_to_space_1(input, *, blocksize=None):
    return _depth_to_space(input, blocksize, "DCR")


@kernel("DepthToSpace", since=11)
def depth_to_space_11(input, *, blocksize=None, mode="DCR"):
    return _depth_to_space(input, blocksize, mode)


def _space_to_depth(input, blocksize, mode: str):
    if blocksize is None or blocksize < 1:
        raise ValueError("SpaceToDepth needs a positive blocksize")
    n, c, h, w = input.shape
    b = blocksize
    if h % b or w % b:
        raise ValueError(f"spatial size {(h, w)} is not divisible by blocksize {b}")
    x = input.reshape(n, c, h // b, b, w // b, b)
    if mode == "DCR":
        x = x.transpose(0, 3, 5, 1, 2, 4)
    elif mode == "CRD":
        x = x.transpose(0, 1, 3, 5, 2, 4)
    else:
        raise ValueError(f"unknown SpaceToDepth mode {mode!r}")
    return x.reshape(n, c * b * b, h // b, w // b)


@kernel("SpaceToDepth", since=1)
def space_to_depth_1(input, *, blocksize=None):
    return _space_to_depth(input, blocksize, "DCR")


@kernel("SpaceToDepth", since=28)
def space_to_depth_28(input, *, blocksize=None, mode="DCR"):
    return _space_to_depth(input, blocksize, mode)


# -- matrices ---------------------------------------------------------------------------


@kernel("Trilu", since=14)
def trilu_14(input, k=None, *, upper=1):
    if input.ndim < 2:
        raise ValueError("Trilu needs a tensor of rank 2 or more")
    k = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    rows, cols = input.shape[-2:]
    keep = np.arange(cols) - np.arange(rows)[:, None]
    keep = keep >= k if upper else keep <= k
    return np.where(keep, input, np.zeros((), dtype=input.dtype))


@kernel("EyeLike", since=9)
def eye_like_9(input, *, dtype=None, k=0):
    if input.ndim != 2:
        raise ValueError("EyeLike needs a 2-D input")
    out = input.dtype if dtype is None else runtime_dtype(dtype)
    return np.eye(*input.shape, k=k, dtype=out)


# -- dropout: inference is the identity -------------------------------------------------


def _ones_mask(data, dtype):
    return np.broadcast_to(np.ones((), dtype=dtype), data.shape)


@kernel("Dropout", since=1)
def dropout_1(data, *, is_test=0, consumed_inputs=None, ratio=0.5):
    return data, _ones_mask(data, data.dtype)


@kernel("Dropout", since=6)
def dropout_6(data, *, is_test=0, ratio=0.5):
    return data, _ones_mask(data, data.dtype)


@kernel("Dropout", since=7)
def dropout_7(data, *, ratio=0.5):
    return data, _ones_mask(data, data.dtype)


@kernel("Dropout", since=10)
def dropout_10(data, *, ratio=0.5):
    return data, _ones_mask(data, np.bool_)


@kernel("Dropout", since=12)
def dropout_12(data, ratio=None, training_mode=None, *, seed=None):
    ratio = 0.5 if ratio is None else float(np.asarray(ratio).reshape(()))
    if training_mode is None or not bool(training_mode) or ratio == 0:
        return data, _ones_mask(data, np.bool_)
    if not 0 <= ratio < 1:
        raise ValueError(f"Dropout ratio {ratio} is outside [0, 1)")
    # a fresh generator per call: no state kept between runs; seeded like onnx's reference
    keep = np.random.RandomState(seed).uniform(0.0, 1.0, data.shape) >= ratio
    scale = data.dtype.type(1.0 / (1.0 - ratio))
    return np.where(keep, data * scale, np.zeros((), data.dtype)), keep


# -- Col2Im -----------------------------------------------------------------------------


@kernel("Col2Im", since=18)
def col2im_18(input, image_shape, block_shape, *, strides=None, pads=None, dilations=None):
    image, block = _ints(image_shape), _ints(block_shape)
    nd = len(image)
    strides = strides or [1] * nd
    dilations = dilations or [1] * nd
    pads = pads or [0] * (2 * nd)
    n, ck, length = input.shape
    taps = math.prod(block)
    if ck % taps:
        raise ValueError(f"input channels {ck} are not divisible by the block size {taps}")
    padded = [i + pads[d] + pads[d + nd] for d, i in enumerate(image)]
    blocks = [
        (p - dil * (k - 1) - 1) // s + 1
        for p, dil, k, s in zip(padded, dilations, block, strides, strict=True)
    ]
    if math.prod(blocks) != length or min(blocks) < 1:
        raise ValueError(f"input length {length} does not match the {blocks} sliding blocks")
    cols = input.reshape(n, ck // taps, taps, *blocks)
    budget.check([n, ck // taps, *padded], input.dtype, "Col2Im output")
    out = np.zeros((n, ck // taps, *padded), dtype=input.dtype)
    # one strided accumulate per block tap
    for t, tap in enumerate(itertools.product(*(range(k) for k in block))):
        window = tuple(
            slice(k * dil, k * dil + s * (b - 1) + 1, s)
            for k, dil, s, b in zip(tap, dilations, strides, blocks, strict=True)
        )
        out[(slice(None), slice(None), *window)] += cols[:, :, t]
    crop = tuple(slice(pads[d], pads[d] + image[d]) for d in range(nd))
    return out[(slice(None), slice(None), *crop)]
