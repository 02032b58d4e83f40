"""Sequences (Python lists of arrays) and optionals (a value, or None when empty)."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.registry import kernel


def _position(position, length: int, *, inserting: bool = False) -> int:
    pos = int(np.asarray(position).reshape(-1)[0])
    high = length if inserting else length - 1
    if not -length <= pos <= high:
        raise ValueError(f"position {pos} is out of range for a sequence of length {length}")
    return pos + length if pos < 0 else pos


@kernel("SequenceConstruct", since=11)
def sequence_construct_11(*inputs):
    return list(inputs)


@kernel("SequenceEmpty", since=11)
def sequence_empty_11(*, dtype=1):
    return []


@kernel("SequenceAt", since=11)
def sequence_at_11(input_sequence, position):
    return input_sequence[_position(position, len(input_sequence))]


@kernel("SequenceInsert", since=11)
def sequence_insert_11(input_sequence, tensor, position=None):
    n = len(input_sequence)
    pos = n if position is None else _position(position, n, inserting=True)
    return [*input_sequence[:pos], tensor, *input_sequence[pos:]]


@kernel("SequenceErase", since=11)
def sequence_erase_11(input_sequence, position=None):
    n = len(input_sequence)
    pos = n - 1 if position is None else _position(position, n)
    return [*input_sequence[:pos], *input_sequence[pos + 1 :]]


@kernel("SequenceLength", since=11)
def sequence_length_11(input_sequence):
    return np.array(len(input_sequence), dtype=np.int64)


@kernel("SplitToSequence", since=11)
def split_to_sequence_11(input, split=None, *, axis=0, keepdims=1):
    axis = axis % input.ndim
    dim = input.shape[axis]
    if split is None:
        parts = np.split(input, dim, axis=axis)
        return parts if keepdims else [np.squeeze(p, axis=axis) for p in parts]
    split = np.asarray(split)
    if split.ndim == 0:  # chunks of this size, the last one possibly shorter
        cuts = np.arange(int(split), dim, int(split))
    else:
        if split.sum() != dim:
            raise ValueError(f"split sizes {split.tolist()} do not add up to {dim}")
        cuts = np.cumsum(split)[:-1]
    return np.split(input, cuts, axis=axis)


@kernel("ConcatFromSequence", since=11)
def concat_from_sequence_11(input_sequence, *, axis=None, new_axis=0):
    if axis is None:
        raise ValueError("ConcatFromSequence needs the axis attribute")
    if not input_sequence:
        raise ValueError("ConcatFromSequence got an empty sequence")
    if new_axis:
        return np.stack(input_sequence, axis=axis)
    return np.concatenate(input_sequence, axis=axis)


@kernel("SequenceMap", since=17, scope=True)
def sequence_map_17(input_sequence, *additional_inputs, body=None, scope=None):
    outputs: list[list] = [[] for _ in body.output_names]
    for i in range(len(input_sequence)):
        args = [a[i] if isinstance(a, list) else a for a in additional_inputs]
        results = body.call([input_sequence[i], *args], scope)
        for values, value in zip(outputs, results, strict=True):
            values.append(value)
    return tuple(outputs)


@kernel("Optional", since=15)
def optional_15(input=None, *, type=None):
    return (input,)


@kernel("OptionalHasElement", since=15)
def optional_has_element_15(input=None):
    return np.array(input is not None)


@kernel("OptionalGetElement", since=15)
def optional_get_element_15(input):
    if input is None:
        raise ValueError("OptionalGetElement got an empty optional")
    return (input,)
