"""Which steps a pass may fuse with the step that feeds them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgerun.runtime.plan import Step


def fusable_pairs(
    steps: list[Step],
    first: Callable[[Step], bool],
    second: Callable[[Step], bool],
    keep: Collection[str],
) -> list[tuple[int, int]]:
    """(j, i) for each step i that ``second`` accepts whose first input is the output of a
    step j that ``first`` accepts, where no other step reads that output and it is not
    kept (a graph output): the pairs a pass can run as one step."""
    reads = Counter(name for s in steps for name in (*s.inputs, *s.scope) if name)
    producer = {s.outputs[0]: j for j, s in enumerate(steps) if first(s)}
    pairs = []
    for i, step in enumerate(steps):
        j = producer.get(step.inputs[0]) if second(step) else None
        if j is not None and reads[step.inputs[0]] == 1 and step.inputs[0] not in keep:
            pairs.append((j, i))
    return pairs


def fused_pairs(
    steps: list[Step],
    pairs: list[tuple[int, int]],
    fuse: Callable[[Step, Step], Step | None],
) -> list[Step]:
    """``steps`` with each pair (j, i) of fusable_pairs run as the one step ``fuse(steps[j],
    steps[i])`` makes, in the second's place; a pair ``fuse`` declines (None) stays."""
    out = list(steps)
    dropped: set[int] = set()
    for j, i in pairs:
        fused = fuse(steps[j], steps[i])
        if fused is not None:
            out[i] = fused
            dropped.add(j)
    return [s for k, s in enumerate(out) if k not in dropped]


def joined_inputs(first: Step, second: Step) -> tuple[str, ...]:
    """The inputs of a fused pair's step: the first step's three (x, weights, bias; "" for
    an absent bias), then the second's after the one the first fed."""
    return (*_padded(first.inputs, 3), *_padded(second.inputs, 3)[1:])


def _padded(inputs: tuple[str, ...], length: int) -> tuple[str, ...]:
    """``inputs`` with "" for the absent optional ones, ``length`` long."""
    return (*inputs, *[""] * (length - len(inputs)))
