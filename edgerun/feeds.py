"""Checks feeds against a model's input specs once, before any compute, for every backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgerun.errors import InputError
from edgerun.runtime import dtypes
from edgerun.specs import TensorSpec


def check_feeds(specs: Sequence[TensorSpec], feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The feeds as arrays, or an InputError naming the first input that does not fit."""
    if not isinstance(feeds, Mapping):
        raise InputError(
            f"feeds must be a dict of input name -> numpy array, got {type(feeds).__name__}"
        )
    expected = {s.name for s in specs}
    unknown = sorted(set(feeds) - expected)
    if unknown:
        raise InputError(
            f"unknown input(s) {', '.join(map(repr, unknown))}; "
            f"the model's inputs are {_names(specs)}"
        )
    missing = [s.name for s in specs if s.name not in feeds]
    if missing:
        raise InputError(
            f"missing input(s) {', '.join(map(repr, missing))}; "
            f"the model's inputs are {_names(specs)}"
        )
    return {s.name: _check(s, feeds[s.name]) for s in specs}


def _names(specs: Sequence[TensorSpec]) -> str:
    return ", ".join(repr(s.name) for s in specs)


def feed_dtype(spec: TensorSpec) -> np.dtype | None:
    """The numpy dtype a feed must have (for types numpy lacks, see dtypes.runtime_dtype)."""
    etype = dtypes.BY_NAME.get(spec.dtype)
    return None if etype is None else dtypes.runtime_dtype(etype.code)


def _check(spec: TensorSpec, value: Any) -> np.ndarray:
    try:  # a plain ndarray of any subclass (np.matrix, masked arrays), never a copy
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise InputError(f"input {spec.name!r} is not an array: {exc}") from None
    want = feed_dtype(spec)
    if want is not None and array.dtype != want:
        raise InputError(f"input {spec.name!r} must be {spec.dtype}, got {array.dtype}")
    if spec.shape is None:
        return array
    if array.ndim != len(spec.shape):
        raise InputError(
            f"input {spec.name!r} must have rank {len(spec.shape)} {spec.shape_text()}, "
            f"got shape {list(array.shape)}"
        )
    for axis, (want_dim, got) in enumerate(zip(spec.shape, array.shape, strict=True)):
        if isinstance(want_dim, int) and want_dim != got:
            raise InputError(
                f"input {spec.name!r} must have size {want_dim} on axis {axis} "
                f"{spec.shape_text()}, got shape {list(array.shape)}"
            )
    return array
