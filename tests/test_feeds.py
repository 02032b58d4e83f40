"""check_feeds: whatever a caller passes, a fitting array or one InputError naming the input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgerun.errors import InputError
from edgerun.feeds import check_feeds
from edgerun.specs import TensorSpec

SPECS = [TensorSpec("x", (1, "n"), "float32"), TensorSpec("ids", (3,), "int64")]
IDS = np.arange(3, dtype=np.int64)

REFUSED: dict[str, tuple[Any, str]] = {
    "ragged list": ({"x": [[1.0, 2.0], [3.0]], "ids": IDS}, "input 'x' is not an array"),
    "string": ({"x": "1.0", "ids": IDS}, "input 'x' must be float32, got <U3"),
    "object": ({"x": object(), "ids": IDS}, "input 'x' must be float32, got object"),
    "structured": (
        {"x": np.zeros((1, 2), [("a", "<f4")]), "ids": IDS},
        "input 'x' must be float32",
    ),
    "float64 scalar list": ({"x": [[1.0, 2.0]], "ids": IDS}, "must be float32, got float64"),
    "rank": ({"x": np.zeros(2, np.float32), "ids": IDS}, "input 'x' must have rank 2"),
    "fixed dim": ({"x": np.zeros((2, 2), np.float32), "ids": IDS}, "size 1 on axis 0"),
    "int32 ids": ({"x": np.zeros((1, 2), np.float32), "ids": IDS.astype(np.int32)}, "'ids'"),
    "unknown name": ({"x": np.zeros((1, 2), np.float32), "ids": IDS, "y": 1}, "unknown input"),
    "missing name": ({"x": np.zeros((1, 2), np.float32)}, "missing input.*'ids'"),
    "not a mapping": ([np.zeros((1, 2), np.float32), IDS], "feeds must be a dict"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_feeds_are_refused_naming_the_input(case: str) -> None:
    feeds, message = REFUSED[case]
    with pytest.raises(InputError, match=message):
        check_feeds(SPECS, feeds)


def test_subclasses_become_plain_arrays_without_a_copy() -> None:
    x = np.ma.masked_array(np.ones((1, 3), np.float32))
    checked = check_feeds(SPECS, {"x": x, "ids": IDS})
    assert type(checked["x"]) is np.ndarray and np.shares_memory(checked["x"], x)
    assert checked["ids"] is IDS
