"""memo: derived once per owner, forgotten with it."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.runtime.kernels.derived import _MEMO, memo, memo_with, tiled


def test_memo_derives_once_per_owner_and_forgets_it() -> None:
    class Owner:  # like a node's quant attribute: weakly referenceable
        pass

    owner, calls = Owner(), []
    make = lambda: calls.append(1) or len(calls)  # noqa: E731
    assert memo(owner, "tag", make) == 1
    assert memo(owner, "tag", make) == 1  # the second run looks it up
    assert memo(owner, "other", make) == 2
    before = len(_MEMO)
    del owner
    assert len(_MEMO) == before - 2
    assert memo(3, "tag", make) == 3 and memo(3, "tag", make) == 4  # no weakref: every call


def test_memo_with_keys_on_the_second_object_too() -> None:
    class Thing:  # weakly referenceable, like a weight array or a node's quant attribute
        pass

    owner, first, second, calls = Thing(), Thing(), Thing(), []

    def make(tag: str):
        return lambda: calls.append(tag) or tag

    assert memo_with(owner, first, "t", make("a")) == "a"
    assert memo_with(owner, first, "t", make("again")) == "a"  # looked up
    assert memo_with(owner, second, "t", make("b")) == "b"  # another bias: its own value
    assert calls == ["a", "b"]


@pytest.mark.parametrize("shape", [(5,), (5, 1, 1), (1,), ()])
def test_tiled_repeats_the_values_along_one_row(shape: tuple[int, ...]) -> None:
    values = np.arange(1, 1 + int(np.prod(shape)), dtype=np.float32).reshape(shape)
    row = tiled(values, 3)
    assert row.dtype == values.dtype and np.array_equal(row, np.tile(values.reshape(-1), 3))
    assert tiled(values, 3) is row  # once per array
