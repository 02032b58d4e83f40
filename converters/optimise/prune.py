"""Pruning on ONNX graphs: magnitude (unstructured) and structured channel pruning.

``magnitude`` zeroes the smallest weights of each Conv/Gemm/MatMul, to a sparsity per layer
or one global threshold; the graph keeps its shape (the bundle only compresses better).
``channels`` removes whole output channels (filters, Gemm/MatMul columns) with the smallest
L1 norm, and fixes what reads them: the layer's bias, a BatchNormalization or per-channel
Add/Mul still present, activations and pooling passed through, and the next layer's input
channels (a Conv's, or a Gemm/MatMul's rows, also behind Flatten/Reshape to 2-D). A layer
whose output goes anywhere else (a residual Add, Concat, a graph output) is left whole and
reported with the reason, so the result always computes what the kept channels computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from converters.optimise import graph as g
from edgerun.errors import ConversionError

Sparsity = float | Mapping[str, float]  # one target, or per layer name

# Channel-wise ops that pass channels through unchanged (no parameters)
_PASS_THROUGH = {
    "Relu",
    "LeakyRelu",
    "PRelu",  # only with a scalar slope, checked below
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "Elu",
    "Selu",
    "Softplus",
    "Identity",
    "Dropout",
    "Clip",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
}
_POOLS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"}


def magnitude(model: Any, sparsity: Sparsity, scope: str = "layer") -> tuple[Any, dict[str, Any]]:
    """Zero the smallest-magnitude weights; ``scope`` "layer" (each layer to its target) or
    "global" (one threshold over all layers, ``sparsity`` a single number)."""
    if scope not in ("layer", "global"):
        raise ConversionError(f"pruning scope must be 'layer' or 'global', not {scope!r}")
    if scope == "global" and not isinstance(sparsity, float | int):
        raise ConversionError("global magnitude pruning takes one sparsity, not one per layer")
    model = g.copy(model)
    layers = g.weight_layers(model)
    targets = _targets(sparsity, [g.layer_name(n) for n, _ in layers])
    weights = {name: g.array(model, name) for _, name in layers}
    threshold = None
    if scope == "global" and weights and not isinstance(sparsity, Mapping):
        magnitudes = np.concatenate([np.abs(w).ravel() for w in weights.values()])
        threshold = _kth_magnitude(magnitudes, float(sparsity))
    report: dict[str, Any] = {"scope": scope, "layers": {}}
    for node, name in layers:
        w = weights[name]
        target = targets.get(g.layer_name(node), 0.0)
        cut = threshold if threshold is not None else _kth_magnitude(np.abs(w).ravel(), target)
        if cut is None:
            continue
        pruned = np.where(np.abs(w) <= cut, np.zeros_like(w), w)
        g.set_array(model, name, pruned)
        report["layers"][g.layer_name(node)] = round(float(np.mean(pruned == 0)), 4)
    return g.finish(model, "after magnitude pruning"), report


def _kth_magnitude(magnitudes: np.ndarray, sparsity: float) -> float | None:
    """The magnitude at or below which ``sparsity`` of the values lie; None: prune nothing."""
    k = int(np.floor(sparsity * magnitudes.size))
    if k <= 0:
        return None
    return float(np.partition(magnitudes, k - 1)[k - 1])


def _targets(sparsity: Sparsity, names: list[str]) -> dict[str, float]:
    if isinstance(sparsity, Mapping):
        unknown = sorted(set(sparsity) - set(names))
        if unknown:
            raise ConversionError(
                f"no prunable layer named {unknown[0]!r}; layers: {', '.join(names) or 'none'}"
            )
        targets = {k: float(v) for k, v in sparsity.items()}
    else:
        targets = dict.fromkeys(names, float(sparsity))
    for name, value in targets.items():
        if not 0.0 <= value < 1.0:
            raise ConversionError(f"sparsity for {name!r} must be in [0, 1), not {value:g}")
    return targets


# ---- structured ------------------------------------------------------------------------


@dataclass
class _Plan:
    """What removing output channels of one layer touches."""

    axis: int  # the output-channel axis of the layer's weight
    channels: int
    params: list[tuple[str, int]] = field(default_factory=list)  # (initializer, axis) to slice
    reader: tuple[str, int] | None = None  # the next layer's weight and its input axis
    block: int = 1  # input features per channel in the reader (after Flatten: H*W)
    reshapes: list[str] = field(default_factory=list)  # Reshape targets [N, C*block] to fix


def channels(model: Any, sparsity: Sparsity) -> tuple[Any, dict[str, Any]]:
    """Remove the lowest-L1 output channels of every layer whose readers can follow."""
    model = g.copy(model)
    layers = g.weight_layers(model)
    targets = _targets(sparsity, [g.layer_name(n) for n, _ in layers])
    before = g.parameters(model)
    report: dict[str, Any] = {"layers": {}, "skipped": {}}
    for node, weight in layers:
        name = g.layer_name(node)
        target = targets.get(name, 0.0)
        if target == 0.0:
            continue
        plan = _plan(model, node, weight)
        if isinstance(plan, str):
            report["skipped"][name] = plan
            continue
        keep = _keep(g.array(model, weight), plan.axis, target)
        _apply(model, weight, plan, keep)
        report["layers"][name] = [plan.channels, len(keep)]
    model = g.finish(model, "after channel pruning")
    report["parameters"] = [before, g.parameters(model)]
    return model, report


def _keep(weight: np.ndarray, axis: int, sparsity: float) -> np.ndarray:
    count = weight.shape[axis]
    kept = max(1, round(count * (1.0 - sparsity)))
    norms = np.abs(np.moveaxis(weight, axis, 0)).reshape(count, -1).sum(axis=1)
    return np.sort(np.argsort(-norms, kind="stable")[:kept])


def _plan(model: Any, node: Any, weight: str) -> _Plan | str:
    """The layer's pruning plan, or why it cannot be pruned."""
    inits = g.initializers(model)
    w = inits[weight].dims
    if node.op_type == "Conv":
        if g.attribute(node, "group", 1) != 1:
            return "grouped convolution"
        plan = _Plan(axis=0, channels=w[0])
    elif node.op_type == "Gemm":
        if g.attribute(node, "transA", 0) or len(w) != 2:
            return "Gemm with transA"
        plan = _Plan(axis=0 if g.attribute(node, "transB", 0) else 1, channels=0)
        plan.channels = w[plan.axis]
    else:
        if len(w) != 2:
            return "MatMul with a batched weight"
        plan = _Plan(axis=1, channels=w[1])
    if len(node.input) > 2 and node.input[2]:
        if not _per_channel(model, node.input[2], plan.channels, inits):
            return "its bias is shared or not per channel"
        plan.params.append((node.input[2], _last_axis(inits[node.input[2]])))
    why = _follow(model, node.output[0], plan, conv=node.op_type == "Conv")
    return why or plan


def _follow(model: Any, tensor: str, plan: _Plan, conv: bool) -> str | None:
    """Walk from the layer's output to the next layer, filling ``plan``; None when done."""
    inits = g.initializers(model)
    users = g.consumers(model)
    outputs = {o.name for o in model.graph.output}
    flattened = False
    while True:
        if tensor in outputs:
            return "its output is a graph output"
        readers = users.get(tensor, [])
        if len(readers) != 1:
            return f"its output has {len(readers)} readers"
        node = readers[0]
        op = node.op_type
        if node.input[0] != tensor:
            return f"it feeds {op} {node.name!r} as a parameter"
        if op in _PASS_THROUGH and not (flattened and op in _POOLS):
            if op == "PRelu" and not _scalar(inits.get(node.input[1])):
                return "PRelu with per-channel slopes"
            if op in _POOLS and not conv:
                return f"{op} after a dense layer"
            if op == "Clip" and any(n and n not in inits for n in node.input[1:]):
                return "Clip with computed bounds"
        elif op == "BatchNormalization" and not flattened:
            if not all(_per_channel(model, n, plan.channels, inits) for n in node.input[1:5]):
                return "BatchNormalization with computed or shared statistics"
            plan.params.extend((n, 0) for n in node.input[1:5])
        elif op in ("Add", "Mul") and not flattened and node.input[1] in inits:
            axis = _broadcast_axis(inits[node.input[1]], plan.channels, conv)
            if axis is None or len(users.get(node.input[1], [])) != 1:
                return f"{op} with a constant that is not per channel"
            if axis >= 0:
                plan.params.append((node.input[1], axis))
        elif op in ("Flatten", "Reshape") and conv and not flattened:
            why = _flatten(model, node, plan, inits)
            if why:
                return why
            flattened = True
        elif op == "Conv" and not flattened:
            if g.attribute(node, "group", 1) != 1:
                return "the next layer is a grouped convolution"
            return _reader(model, node, 1, plan, users)
        elif op == "Gemm" and (flattened or not conv):
            if g.attribute(node, "transA", 0):
                return "the next Gemm has transA"
            return _reader(model, node, 1 if g.attribute(node, "transB", 0) else 0, plan, users)
        elif op == "MatMul" and (flattened or not conv):
            return _reader(model, node, 0, plan, users)
        else:
            return f"its output goes to {op} {node.name!r}"
        tensor = node.output[0]


def _reader(
    model: Any, node: Any, axis: int, plan: _Plan, users: dict[str, list[Any]]
) -> str | None:
    inits = g.initializers(model)
    weight = node.input[1]
    tensor = inits.get(weight)
    if tensor is None or len(users.get(weight, [])) != 1 or len(tensor.dims) < 2:
        return f"the next layer {node.op_type} {node.name!r} has no weight of its own"
    if plan.block == 0 and tensor.dims[axis] % plan.channels == 0:
        plan.block = tensor.dims[axis] // plan.channels
    if tensor.dims[axis] != plan.channels * plan.block:
        return f"the next layer {node.op_type} {node.name!r} reads {tensor.dims[axis]} features"
    plan.reader = (weight, axis)
    return None


def _flatten(model: Any, node: Any, plan: _Plan, inits: dict[str, Any]) -> str | None:
    """A Flatten (axis 1) or Reshape to [N, C*H*W]: channels become blocks of features."""
    if node.op_type == "Flatten":
        if g.attribute(node, "axis", 1) != 1:
            return "Flatten with axis != 1"
        plan.block = 0  # known from the reader's width
        return None
    shape = node.input[1] if len(node.input) > 1 else ""
    if shape not in inits:
        return "Reshape to a computed shape"
    if len(g.consumers(model).get(shape, [])) != 1:
        return "Reshape with a shared shape constant"
    target = g.array(model, shape)
    if target.ndim != 1 or len(target) != 2 or target[1] == 0:
        return "Reshape to anything but [N, features]"
    if target[1] > 0:
        if target[1] % plan.channels:
            return "Reshape that splits channels"
        plan.block = int(target[1]) // plan.channels
        plan.reshapes.append(shape)
    return None


def _per_channel(model: Any, name: str, channels: int, inits: dict[str, Any]) -> bool:
    """A 1-D (or [1, C]) constant of one value per channel, read by one node only."""
    tensor = inits.get(name)
    users = g.consumers(model).get(name, [])
    return (
        tensor is not None
        and len(users) == 1
        and int(np.prod(tensor.dims)) == channels
        and tensor.dims[-1] == channels
        and len(tensor.dims) <= 2
    )


def _last_axis(tensor: Any) -> int:
    return len(tensor.dims) - 1


def _scalar(tensor: Any) -> bool:
    return tensor is not None and int(np.prod(tensor.dims)) == 1


def _broadcast_axis(tensor: Any, channels: int, conv: bool) -> int | None:
    """The axis of a constant that lines up with the channels; -1 for a scalar; None: neither."""
    dims = list(tensor.dims)
    if int(np.prod(dims)) == 1:
        return -1
    if conv:  # NCHW: [C, 1, 1] or [1, C, 1, 1]
        if len(dims) in (3, 4) and dims[-3] == channels and int(np.prod(dims)) == channels:
            return len(dims) - 3
        return None
    if dims[-1] == channels and int(np.prod(dims)) == channels:
        return len(dims) - 1
    return None


def _apply(model: Any, weight: str, plan: _Plan, keep: np.ndarray) -> None:
    g.set_array(model, weight, np.take(g.array(model, weight), keep, axis=plan.axis))
    for name, axis in plan.params:
        g.set_array(model, name, np.take(g.array(model, name), keep, axis=axis))
    if plan.reader is not None:
        reader, axis = plan.reader
        rows = (keep[:, None] * plan.block + np.arange(plan.block)[None, :]).ravel()
        g.set_array(model, reader, np.take(g.array(model, reader), rows, axis=axis))
    for shape in plan.reshapes:
        target = g.array(model, shape).copy()
        target[1] = len(keep) * plan.block
        g.set_array(model, shape, target)
