"""Sigmoid -> Mul as one Swish: the SiLU of YOLO-style detectors and EfficientNets.

torch exports ``nn.SiLU`` (and ``x * torch.sigmoid(x)``) as a Sigmoid and a Mul of its
output with its input: two steps, the Mul one more pass over the tensor and one more
tensor of its size alive. ONNX's Swish (opset 24; alpha 1 is SiLU) computes the same
x * sigmoid(x) in one step, with the product folded into the sigmoid's last pass
(kernels/activation.py). Only a Sigmoid whose single reader is such a Mul, and whose output
is not a graph output, is rewritten; the Swish takes the Mul's place and output. Runs on
the plan's steps, so it needs no Swish in the model's opset.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import replace
from typing import TYPE_CHECKING

from edgerun.runtime import registry

if TYPE_CHECKING:
    from edgerun.runtime.plan import Step

_DEFAULT = ("", "ai.onnx")


def fuse_swish(steps: list[Step], keep: Collection[str]) -> list[Step]:
    """``steps`` with each Sigmoid(x) -> Mul(x, sigmoid) pair (either operand order) as one
    Swish step; ``keep`` names the values that must stay (graph outputs)."""
    swish = registry.resolve("", "Swish", 24)
    if swish is None:
        return steps
    reads = Counter(name for s in steps for name in (*s.inputs, *s.scope) if name)
    sigmoids = {s.outputs[0]: s for s in steps if _is_op(s, "Sigmoid") and len(s.outputs) == 1}
    fused: list[Step] = []
    dropped: set[int] = set()
    for step in steps:
        pair = _swish_input(step, sigmoids)
        if pair is not None and reads[pair[1]] == 1 and pair[1] not in keep:
            x, sigmoid = pair
            node = replace(step.node, op_type="Swish", domain="", inputs=[x], attributes={})
            step = replace(step, node=node, kernel=swish, inputs=(x,), attributes={})
            dropped.add(id(sigmoids[sigmoid]))
        fused.append(step)
    return [s for s in fused if id(s) not in dropped]


def _swish_input(step: Step, sigmoids: dict[str, Step]) -> tuple[str, str] | None:
    """(x, the sigmoid's output) where ``step`` is Mul(x, Sigmoid(x)) or Mul(Sigmoid(x), x)."""
    if not _is_op(step, "Mul") or len(step.inputs) != 2:
        return None
    for sigmoid, x in (step.inputs, step.inputs[::-1]):
        found = sigmoids.get(sigmoid)
        if found is not None and found.inputs[0] == x:
            return x, sigmoid
    return None


def _is_op(step: Step, op_type: str) -> bool:
    return step.node.op_type == op_type and step.node.domain in _DEFAULT
