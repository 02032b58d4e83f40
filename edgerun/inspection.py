"""What is inside a model: the report behind ``edgerun inspect``.

MACs count multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul for one inference,
with every symbolic or unknown input dimension taken as 1 (batch 1), from shapes edgerun
infers itself so that the report needs no onnx package on the board.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from edgerun.modelfile import ModelFile, open_model
from edgerun.runtime import dtypes
from edgerun.runtime.graph import Graph, Node
from edgerun.runtime.passes.shape_inference import ALIASES, Shape, infer_shapes


@dataclass
class ModelReport:
    path: str
    format: str
    file_bytes: int
    ir_version: int
    producer: str
    opsets: dict[str, int]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    nodes: int
    op_histogram: dict[str, int]
    parameters: int
    parameter_bytes: int
    macs: int
    macs_by_op: dict[str, int]
    macs_unknown: list[str]  # nodes whose MACs could not be counted (shapes unknown)
    manifest: dict[str, Any] | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def inspect_model(path: str | os.PathLike[str]) -> ModelReport:
    model_file = open_model(path)
    model = model_file.model
    graph = model.graph
    macs_by_op, unknown = count_macs(graph)
    count, nbytes = parameter_totals(graph)
    return ModelReport(
        path=str(path),
        format=model_file.format,
        file_bytes=Path(path).stat().st_size,
        ir_version=model.ir_version,
        producer=" ".join(p for p in (model.producer_name, model.producer_version) if p),
        opsets={(d or "ai.onnx"): v for d, v in sorted(model.opset_imports.items())},
        inputs=[s.to_json() for s in model.inputs],
        outputs=[s.to_json() for s in model.outputs],
        nodes=len(graph.walk()),
        op_histogram=op_histogram(graph),
        parameters=count,
        parameter_bytes=nbytes,
        macs=sum(macs_by_op.values()),
        macs_by_op=macs_by_op,
        macs_unknown=unknown,
        manifest=_manifest_summary(model_file),
    )


def op_histogram(graph: Graph) -> dict[str, int]:
    """Op counts over the graph and its subgraphs; other domains' ops are 'domain::Op'."""
    counts = Counter(
        f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
        for n in graph.walk()
    )
    return dict(counts.most_common())


def parameter_totals(graph: Graph) -> tuple[int, int]:
    """(element count, bytes as stored on disk) of the initializers, dense and sparse."""
    count = bits = 0
    for name, array in graph.initializers.items():
        count += array.size
        bits += array.size * _bits(graph.initializer_types.get(name, 1), array)
    for sparse in graph.sparse_initializers.values():
        count += sparse.values.size
        bits += sparse.values.size * dtypes.element_type(sparse.values_type).bits
        bits += sparse.indices.nbytes * 8
    return count, -(-bits // 8)


def _bits(code: int, array: Any) -> int:
    etype = dtypes.element_type(code)
    return etype.bits if etype.bits else array.dtype.itemsize * 8


def count_macs(graph: Graph) -> tuple[dict[str, int], list[str]]:
    shapes = batch_one_shapes(graph)
    by_op: Counter[str] = Counter()
    unknown: list[str] = []
    for node in graph.nodes:
        macs = node_macs(node, shapes)
        if macs is None:
            unknown.append(node.name or node.outputs[0])
        elif macs:
            by_op[node.op_type] += macs
    return dict(by_op), unknown


def batch_one_shapes(graph: Graph) -> dict[str, Shape | None]:
    """Every value's inferred shape, symbolic or unknown input dimensions taken as 1."""
    batch_one = {
        v.name: _concrete(v.type.shape)
        for v in graph.real_inputs
        if v.type and v.type.shape is not None
    }
    shapes = infer_shapes(graph, batch_one)
    shapes.update(_declared_shapes(graph))
    return shapes


def node_macs(node: Node, shapes: Mapping[str, Shape | None]) -> int | None:
    """One node's multiply-accumulates: 0 for an op without MACs, None where shapes are
    unknown. Integer ops count like the float op they stand for."""
    domain = "" if node.domain == "ai.onnx" else node.domain
    op_type, operands = INTEGER_OPS.get((domain, node.op_type), (node.op_type, (0, 1)))
    if (domain, node.op_type) in ALIASES:
        op_type = ALIASES[(domain, node.op_type)]
    if (domain, node.op_type) in INTEGER_OPS or (domain, node.op_type) in ALIASES:
        domain = ""
    counter = {"": MAC_RULES, "tflite": TFLITE_MAC_RULES}.get(domain, {}).get(op_type)
    if counter is None:
        return 0
    ins = [shapes.get(n) for n in node.inputs]
    ins = [ins[i] if i < len(ins) else None for i in operands] + ins[max(operands) + 1 :]
    out = shapes.get(node.outputs[0])
    if out is None or any(s is None for s in ins[:2]) or not _all_int(out, *ins[:2]):
        return None
    return counter(node, ins, cast(tuple[int, ...], out))


def _concrete(shape: Shape) -> Shape:
    return tuple(d if isinstance(d, int) else 1 for d in shape)


def _all_int(*shapes: Any) -> bool:
    return all(all(isinstance(d, int) for d in s) for s in shapes)


def _conv_macs(node: Node, ins: list, out: tuple[int, ...]) -> int:
    weight = ins[1]  # (M, C/group, k...)
    return math.prod(out) * math.prod(weight[1:])


def _conv_transpose_macs(node: Node, ins: list, out: tuple[int, ...]) -> int:
    x, weight = ins[0], ins[1]  # weight (C, M/group, k...)
    return math.prod(x) * math.prod(weight[1:])


def _gemm_macs(node: Node, ins: list, out: tuple[int, ...]) -> int:
    a = ins[0]
    k = a[0] if node.attr("transA", 0) else a[1]
    return math.prod(out) * k


def _matmul_macs(node: Node, ins: list, out: tuple[int, ...]) -> int:
    a = ins[0]
    return math.prod(out) * a[-1]


MAC_RULES = {
    "Conv": _conv_macs,
    "ConvTranspose": _conv_transpose_macs,
    "Gemm": _gemm_macs,
    "MatMul": _matmul_macs,
}
# (domain, integer op) -> (the float op it computes, indices of its two operands)
INTEGER_OPS = {
    ("", "ConvInteger"): ("Conv", (0, 1)),
    ("", "MatMulInteger"): ("MatMul", (0, 1)),
    ("", "QLinearConv"): ("Conv", (0, 3)),
    ("", "QLinearMatMul"): ("MatMul", (0, 3)),
    ("com.microsoft", "QGemm"): ("Gemm", (0, 3)),
}
# TFLite keeps NHWC activations and OHWI / 1HWC / OI weights; TRANSPOSE_CONV's inputs are
# (output shape, weights, input)
TFLITE_MAC_RULES = {
    "CONV_2D": lambda node, ins, out: math.prod(out) * math.prod(ins[1][1:]),
    "DEPTHWISE_CONV_2D": lambda node, ins, out: math.prod(out) * math.prod(ins[1][1:3]),
    "FULLY_CONNECTED": lambda node, ins, out: math.prod(out) * ins[1][1],
    "TRANSPOSE_CONV": lambda node, ins, out: math.prod(ins[2]) * math.prod(ins[1][:3]),
    "BATCH_MATMUL": lambda node, ins, out: (
        math.prod(out) * ins[0][-2 if node.attr("adj_x", 0) else -1]
    ),
}


def _declared_shapes(graph: Graph) -> dict[str, Shape]:
    """TFLite files declare every tensor's shape (batch taken as 1 where it is free)."""
    if not any(n.domain == "tflite" for n in graph.nodes):
        return {}
    declared = {n: a.shape for n, a in graph.initializers.items()}
    for v in (*graph.inputs, *graph.outputs, *graph.value_info):
        if v.type is not None and v.type.shape is not None:
            declared[v.name] = _concrete(v.type.shape)
    return declared


def _manifest_summary(model_file: ModelFile) -> dict[str, Any] | None:
    manifest = model_file.manifest
    if manifest is None:
        return None
    return {
        "format_version": manifest.format_version,
        "device": (manifest.profile or {}).get("name"),
        "applied": manifest.applied,
        "accuracy": manifest.accuracy,
        "source": manifest.source,
        "edgerun_version": manifest.edgerun_version,
    }
