"""BatchNormalization folded into the Conv before it, once its parameters are constants.

In inference mode a BatchNormalization is a per-channel scale and shift, so after a Conv it
folds into that Conv's weights and bias at load (as onnxruntime's optimiser and torch's
exporter do): one full read and write of the activation less per BatchNormalization. It
runs on the plan's steps after constant folding, because some models compute their
parameters (onnx's light_* models build every weight with ConstantOfShape) instead of
storing them. Only a Conv whose single reader is the BatchNormalization, and whose output
is not a graph output, is folded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edgerun.runtime.plan import Step

_DEFAULT = ("", "ai.onnx")
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def fold_batch_norm(
    steps: list[Step], constants: dict[str, np.ndarray], keep: Collection[str]
) -> list[Step]:
    """``steps`` without the foldable BatchNormalizations; their Convs read new weights and
    biases added to ``constants`` (and the old ones leave it once nothing else reads them)."""
    reads = Counter(name for s in steps for name in (*s.inputs, *s.scope) if name)
    convs = {
        s.outputs[0]: i
        for i, s in enumerate(steps)
        if s.node.op_type == "Conv" and s.node.domain in _DEFAULT and s.outputs
    }
    out = list(steps)
    dropped = set()
    for i, bn in enumerate(steps):
        j = convs.get(bn.inputs[0]) if _foldable(bn) else None
        if j is None or reads[bn.inputs[0]] != 1 or bn.inputs[0] in keep:
            continue
        conv = out[j]
        folded = _folded(conv, bn, constants)
        if folded is None:
            continue
        names = (f"{bn.outputs[0]}::conv_weight", f"{bn.outputs[0]}::conv_bias")
        for old in conv.inputs[1:3]:
            if old and reads[old] == 1 and old not in keep:
                constants.pop(old, None)
        constants.update(zip(names, folded, strict=True))
        inputs, outputs = (conv.inputs[0], *names), (bn.outputs[0],)
        node = replace(conv.node, inputs=list(inputs), outputs=list(outputs))
        out[j] = replace(conv, node=node, inputs=inputs, outputs=outputs)
        dropped.add(i)
    return [s for k, s in enumerate(out) if k not in dropped]


def _foldable(bn: Step) -> bool:
    """An inference-mode BatchNormalization with per-channel parameters and one output."""
    return (
        bn.node.op_type == "BatchNormalization"
        and bn.node.domain in _DEFAULT
        and not any(bn.outputs[1:])
        and not bn.attributes.get("training_mode", 0)
        and bn.attributes.get("spatial", 1) == 1
        and len(bn.inputs) == 5
    )


def _folded(conv: Step, bn: Step, constants: dict[str, np.ndarray]):
    """(weight, bias) of ``conv`` with ``bn`` applied, or None when not all are constants."""
    w = constants.get(conv.inputs[1]) if len(conv.inputs) > 1 else None
    bias_name = conv.inputs[2] if len(conv.inputs) > 2 else ""
    b = constants.get(bias_name) if bias_name else None
    params = [constants[n] for n in bn.inputs[1:] if n in constants]
    if w is None or (bias_name and b is None) or len(params) != 4:
        return None
    m = w.shape[0]
    if w.dtype not in _FLOATS or any(np.shape(p) != (m,) for p in params):
        return None
    scale, shift, mean, var = (np.asarray(p, dtype=np.float64) for p in params)
    factor = scale / np.sqrt(var + float(bn.attributes.get("epsilon", 1e-5)))
    # the product in float64, rounded once into the weights' type block by block as numpy's
    # ufunc buffers go: no float64 copy of the weights. A broadcast weight (a folded
    # ConstantOfShape) is multiplied once per output channel and stays a broadcast, laid out
    # only if a step reads it as it is (plan._aligned)
    compact = w[tuple(slice(0, 1) if st == 0 else slice(None) for st in w.strides)]
    factor = factor.reshape(m, *(1,) * (w.ndim - 1))
    shape = np.broadcast_shapes(compact.shape, factor.shape)
    out = np.empty_like(w) if shape == w.shape else np.empty(shape, w.dtype)
    weight = np.multiply(compact, factor, out=out)
    bias = ((0.0 if b is None else b.astype(np.float64)) - mean) * factor.reshape(m) + shift
    return np.broadcast_to(weight, w.shape) if shape != w.shape else weight, bias.astype(w.dtype)
