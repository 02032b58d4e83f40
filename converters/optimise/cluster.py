"""Weight clustering (palettization): each weight becomes a small codebook plus indices.

One-dimensional k-means over each Conv/Gemm/MatMul weight's values (quantile start, Lloyd
steps with sorted centroids, so assignment is a ``searchsorted`` on the midpoints). In the
graph the weight is replaced by ONNX ops any backend runs, and that constant folding
(the numpy runtime's at load, onnxruntime's at session start) turns back into the
clustered weight, exactly:

    indices (uint8; two per byte for <= 16 clusters) -> [unpack] -> Cast(int32)
        -> Gather(codebook, axis 0) -> the weight's old name

Unpacking 4-bit indices uses BitShift and BitwiseAnd (opset 18); older models get one
index per byte.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from converters.optimise import graph as g
from edgerun import _lazy
from edgerun.errors import ConversionError

DEFAULT_CLUSTERS = 16
CODEBOOK = "__cluster_codebook"  # the suffix of a codebook initializer's name
MIN_ELEMENTS = 256  # smaller weights cost more as codebook + ops than as floats
_MAX_ITERATIONS = 50


def kmeans(values: np.ndarray, clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """(codebook float32 [k], indices uint8 shaped like ``values``), k <= ``clusters``."""
    flat = values.ravel().astype(np.float64)
    distinct = np.unique(flat)
    if len(distinct) <= clusters:
        centroids = distinct
    else:
        centroids = np.unique(np.quantile(flat, (np.arange(clusters) + 0.5) / clusters))
        for _ in range(_MAX_ITERATIONS):
            index = _assign(flat, centroids)
            counts = np.bincount(index, minlength=len(centroids))
            sums = np.bincount(index, weights=flat, minlength=len(centroids))
            moved = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
            moved = np.sort(moved)
            if np.array_equal(moved, centroids):
                break
            centroids = moved
    codebook = centroids.astype(np.float32)
    index = _assign(flat, codebook.astype(np.float64))
    return codebook, index.astype(np.uint8).reshape(values.shape)


def _assign(flat: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The nearest centroid of each value (``centroids`` sorted)."""
    edges = (centroids[1:] + centroids[:-1]) / 2
    return np.searchsorted(edges, flat).astype(np.int64)


def cluster(
    model: Any, clusters: int = DEFAULT_CLUSTERS, min_elements: int = MIN_ELEMENTS
) -> tuple[Any, dict[str, Any]]:
    """Every large enough Conv/Gemm/MatMul weight palettized to ``clusters`` values."""
    if not 2 <= clusters <= 256:
        raise ConversionError(f"clusters must be between 2 and 256 (uint8 indices), not {clusters}")
    model = g.copy(model)
    bits = 4 if clusters <= 16 and _opset(model) >= 18 else 8
    report: dict[str, Any] = {"clusters": clusters, "index_bits": bits, "layers": {}}
    for node, name in g.weight_layers(model):
        weight = g.array(model, name)
        if weight.size < min_elements:
            continue
        codebook, indices = kmeans(weight, clusters)
        _replace(model, name, codebook, indices, bits)
        report["layers"][g.layer_name(node)] = len(codebook)
    return g.finish(model, "after weight clustering"), report


def decode(codebook: np.ndarray, indices: np.ndarray) -> np.ndarray:
    return codebook[indices.astype(np.int64)]


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _replace(model: Any, name: str, codebook: np.ndarray, indices: np.ndarray, bits: int) -> None:
    onnx = _lazy.require("onnx")
    from onnx import helper

    g.remove_initializer(model, name)
    stem = f"{name}__cluster"
    g.set_array(model, name + CODEBOOK, codebook)
    nodes = []
    flat = indices.ravel()
    if bits == 4:
        padded = np.concatenate([flat, np.zeros(len(flat) % 2, np.uint8)])
        g.set_array(model, f"{stem}_packed", (padded[0::2] << 4 | padded[1::2]).astype(np.uint8))
        g.set_array(model, f"{stem}_four", np.array(4, np.uint8))
        g.set_array(model, f"{stem}_mask", np.array(15, np.uint8))
        g.set_array(model, f"{stem}_pairs", np.array([-1, 1], np.int64))
        g.set_array(model, f"{stem}_length", np.array([len(flat)], np.int64))
        g.set_array(model, f"{stem}_zero", np.array([0], np.int64))
        nodes += [
            helper.make_node(
                "BitShift", [f"{stem}_packed", f"{stem}_four"], [f"{stem}_high"], direction="RIGHT"
            ),
            helper.make_node("BitwiseAnd", [f"{stem}_packed", f"{stem}_mask"], [f"{stem}_low"]),
            helper.make_node("Reshape", [f"{stem}_high", f"{stem}_pairs"], [f"{stem}_high2"]),
            helper.make_node("Reshape", [f"{stem}_low", f"{stem}_pairs"], [f"{stem}_low2"]),
            helper.make_node("Concat", [f"{stem}_high2", f"{stem}_low2"], [f"{stem}_both"], axis=1),
            helper.make_node("Reshape", [f"{stem}_both", f"{stem}_flat_shape"], [f"{stem}_all"]),
            helper.make_node(
                "Slice", [f"{stem}_all", f"{stem}_zero", f"{stem}_length"], [f"{stem}_flat"]
            ),
        ]
        g.set_array(model, f"{stem}_flat_shape", np.array([-1], np.int64))
        g.set_array(model, f"{stem}_shape", np.array(indices.shape, np.int64))
        nodes.append(helper.make_node("Reshape", [f"{stem}_flat", f"{stem}_shape"], [f"{stem}_u8"]))
        source = f"{stem}_u8"
    else:
        g.set_array(model, f"{stem}_indices", indices)
        source = f"{stem}_indices"
    nodes += [
        helper.make_node("Cast", [source], [f"{stem}_int"], to=onnx.TensorProto.INT32),
        helper.make_node("Gather", [name + CODEBOOK, f"{stem}_int"], [name], axis=0),
    ]
    for i, node in enumerate(nodes):
        node.name = f"{stem}/{node.op_type}_{i}"
    existing = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes + existing)
