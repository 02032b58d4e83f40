"""Low-rank factorisation: a Gemm/MatMul weight or a 1x1 convolution as two thinner layers.

The weight, as the matrix ``W`` [K, N] of ``y = x W``, is cut by SVD to ``A B`` with
``A = U_r sqrt(S_r)`` [K, r] and ``B = sqrt(S_r) V_r^T`` [r, N]. The rank is the smallest
that keeps ``energy`` of the squared singular values, or, given ``size``, the largest whose
two layers hold at most that share of the original's parameters. A layer is factorised only
when the two layers are smaller than the one (r (K + N) < K N); the others are reported.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from converters.optimise import graph as g
from edgerun.errors import ConversionError


def factorise(
    model: Any, energy: float | None = None, size: float | None = None
) -> tuple[Any, dict[str, Any]]:
    """Each eligible layer split in two; exactly one of ``energy`` and ``size`` in (0, 1]."""
    if (energy is None) == (size is None):
        raise ConversionError("low-rank factorisation takes an energy threshold or a size target")
    limit = energy if energy is not None else size
    if not 0.0 < float(limit) <= 1.0:  # type: ignore[arg-type]
        what = "energy" if energy is not None else "size"
        raise ConversionError(f"low-rank {what} must be in (0, 1], not {limit:g}")
    model = g.copy(model)
    before = g.parameters(model)
    report: dict[str, Any] = {"layers": {}, "skipped": {}}
    heads: dict[str, Any] = {}  # a factorised layer's output -> the layer to put before it
    for node, weight in g.weight_layers(model):
        name = g.layer_name(node)
        matrix = _matrix(model, node, weight)
        if isinstance(matrix, str):
            report["skipped"][name] = matrix
            continue
        k, n = matrix.shape
        u, s, vt = np.linalg.svd(matrix.astype(np.float64), full_matrices=False)
        rank = _rank(s, k, n, energy, size)
        if rank * (k + n) >= k * n:
            report["skipped"][name] = f"rank {rank} of {k}x{n} would not be smaller"
            continue
        root = np.sqrt(s[:rank])
        a = (u[:, :rank] * root).astype(np.float32)
        b = (root[:, None] * vt[:rank]).astype(np.float32)
        heads[node.output[0]] = _split(model, node, weight, a, b)
        kept = float(np.sum(s[:rank] ** 2) / max(np.sum(s**2), 1e-30))
        report["layers"][name] = {"shape": [k, n], "rank": rank, "energy": round(kept, 4)}
    nodes = []
    for node in model.graph.node:
        if node.output[0] in heads:
            nodes.append(heads[node.output[0]])
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model = g.finish(model, "after low-rank factorisation")
    report["parameters"] = [before, g.parameters(model)]
    return model, report


def _rank(s: np.ndarray, k: int, n: int, energy: float | None, size: float | None) -> int:
    if energy is not None:
        share = np.cumsum(s**2) / max(float(np.sum(s**2)), 1e-30)
        return min(int(np.searchsorted(share, energy - 1e-12)) + 1, len(s))
    return max(1, int(np.floor(size * k * n / (k + n))))  # type: ignore[operator]


def _matrix(model: Any, node: Any, weight: str) -> np.ndarray | str:
    """The layer's weight as W [K, N] of y = x W, or why it is not factorised."""
    w = g.array(model, weight)
    if node.op_type == "Gemm":
        if g.attribute(node, "transA", 0):
            return "Gemm with transA"
        return w.T if g.attribute(node, "transB", 0) else w
    if node.op_type == "MatMul":
        return w if w.ndim == 2 else "MatMul with a batched weight"
    if w.shape[2:] != (1, 1) or g.attribute(node, "group", 1) != 1:
        return "not a 1x1 convolution"
    return w[:, :, 0, 0].T


def _split(model: Any, node: Any, weight: str, a: np.ndarray, b: np.ndarray) -> Any:
    """The new first layer (weight ``a``); ``node`` becomes the second (``b``), reading it."""
    from onnx import helper

    first, second = f"{weight}__lowrank_a", f"{weight}__lowrank_b"
    middle = f"{node.output[0]}__lowrank"
    if node.op_type == "Conv":
        g.set_array(model, first, a.T[:, :, None, None])
        g.set_array(model, second, b.T[:, :, None, None])
        attributes = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        head = helper.make_node("Conv", [node.input[0], first], [middle], **attributes)
        for name in ("strides", "pads", "auto_pad", "dilations"):  # the first conv did those
            for i, attribute in enumerate(node.attribute):
                if attribute.name == name:
                    del node.attribute[i]
                    break
    else:
        g.set_array(model, first, a)
        transposed = node.op_type == "Gemm" and g.attribute(node, "transB", 0)
        g.set_array(model, second, b.T if transposed else b)
        head = helper.make_node("MatMul", [node.input[0], first], [middle])
    head.name = f"{node.name or weight}/lowrank_a"
    g.remove_initializer(model, weight)
    node.input[0], node.input[1] = middle, second
    return head
