"""memo: derived once per owner, forgotten with it."""

from __future__ import annotations

from edgerun.runtime.kernels.derived import _MEMO, memo


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
