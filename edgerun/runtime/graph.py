"""The graph IR every reader produces and every pass and backend consumes.

It mirrors ONNX closely (so the reader can be checked against ``onnx.load`` field by field)
while holding tensors as numpy arrays, usually views over a memory-mapped file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgerun.runtime.dtypes import dtype_name
from edgerun.specs import Dim, TensorSpec


@dataclass(frozen=True)
class ValueType:
    """TypeProto: a tensor (elem_type, shape), or a sequence/optional/map of other types."""

    kind: str  # "tensor" | "sparse_tensor" | "sequence" | "optional" | "map" | "opaque" | "none"
    elem_type: int = 0  # tensors and sparse tensors; map key type
    shape: tuple[Dim, ...] | None = None  # None: rank unknown
    elem: ValueType | None = None  # sequence/optional element type; map value type
    denotation: str = ""


@dataclass(frozen=True)
class ValueInfo:
    name: str
    type: ValueType | None
    doc_string: str = ""

    def spec(self) -> TensorSpec:
        t = self.type
        if t is None or t.kind not in ("tensor", "sparse_tensor"):
            return TensorSpec(self.name, None, t.kind if t else "undefined")
        return TensorSpec(self.name, t.shape, dtype_name(t.elem_type))


@dataclass(frozen=True)
class SparseTensor:
    values: np.ndarray
    indices: np.ndarray
    dims: tuple[int, ...]
    values_type: int
    name: str = ""


# Attribute type codes (AttributeProto.AttributeType)
ATTR_FLOAT, ATTR_INT, ATTR_STRING, ATTR_TENSOR, ATTR_GRAPH = 1, 2, 3, 4, 5
ATTR_FLOATS, ATTR_INTS, ATTR_STRINGS, ATTR_TENSORS, ATTR_GRAPHS = 6, 7, 8, 9, 10
ATTR_SPARSE_TENSOR, ATTR_SPARSE_TENSORS, ATTR_TYPE_PROTO, ATTR_TYPE_PROTOS = 11, 12, 13, 14


@dataclass(frozen=True)
class Attribute:
    """One node attribute; ``value`` is float, int, bytes, ndarray, Graph, ... or a list."""

    name: str
    type: int
    value: Any
    ref_attr_name: str = ""  # inside a function body: the caller's attribute it refers to
    tensor_type: tuple[int, ...] = ()  # element type code of each tensor in a tensor attribute


@dataclass
class Node:
    op_type: str
    inputs: list[str]
    outputs: list[str]
    name: str = ""
    domain: str = ""  # "" and "ai.onnx" both mean the default domain
    attributes: dict[str, Attribute] = field(default_factory=dict)
    doc_string: str = ""
    overload: str = ""

    def attr(self, name: str, default: Any = None) -> Any:
        a = self.attributes.get(name)
        return default if a is None else a.value


@dataclass
class Graph:
    name: str
    nodes: list[Node]
    inputs: list[ValueInfo]
    outputs: list[ValueInfo]
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    initializer_types: dict[str, int] = field(default_factory=dict)  # name -> elem type code
    sparse_initializers: dict[str, SparseTensor] = field(default_factory=dict)
    value_info: list[ValueInfo] = field(default_factory=list)
    doc_string: str = ""

    @property
    def real_inputs(self) -> list[ValueInfo]:
        """Inputs a caller feeds: before IR 4 initializers were listed as inputs too."""
        constants = self.initializers.keys() | self.sparse_initializers.keys()
        return [v for v in self.inputs if v.name not in constants]

    def walk(self) -> list[Node]:
        """Every node, including those in subgraphs (If/Loop/Scan bodies), depth first."""
        found: list[Node] = []
        for node in self.nodes:
            found.append(node)
            for sub in subgraphs(node):
                found.extend(sub.walk())
        return found


def subgraphs(node: Node) -> list[Graph]:
    out: list[Graph] = []
    for a in node.attributes.values():
        if a.type == ATTR_GRAPH:
            out.append(a.value)
        elif a.type == ATTR_GRAPHS:
            out.extend(a.value)
    return out


@dataclass
class Function:
    name: str
    domain: str
    inputs: list[str]
    outputs: list[str]
    attributes: list[str]  # attribute names without defaults
    attribute_defaults: dict[str, Attribute]
    nodes: list[Node]
    opset_imports: dict[str, int]
    value_info: list[ValueInfo] = field(default_factory=list)
    overload: str = ""
    doc_string: str = ""


@dataclass
class Model:
    graph: Graph
    opset_imports: dict[str, int]  # domain ("" for the default) -> version
    ir_version: int = 0
    producer_name: str = ""
    producer_version: str = ""
    domain: str = ""
    model_version: int = 0
    doc_string: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    functions: list[Function] = field(default_factory=list)

    @property
    def inputs(self) -> list[TensorSpec]:
        return [v.spec() for v in self.graph.real_inputs]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [v.spec() for v in self.graph.outputs]

    def opset(self, domain: str) -> int | None:
        return self.opset_imports.get("" if domain == "ai.onnx" else domain)
