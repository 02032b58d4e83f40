"""Expands calls to a model's local functions (FunctionProto) into plain nodes.

Each call gets its own prefix for the function's internal values, formal inputs and outputs
map to the caller's, and attributes that refer to the caller's (``ref_attr_name``) take the
caller's value or the function's default.
"""

from __future__ import annotations

from dataclasses import replace

from edgerun.errors import ModelFormatError
from edgerun.runtime.graph import Attribute, Function, Graph, Node

MAX_DEPTH = 32


def inline_functions(graph: Graph, functions: list[Function]) -> Graph:
    if not functions:
        return graph
    table = {(f.domain, f.name): f for f in functions}
    nodes: list[Node] = []
    for i, node in enumerate(graph.nodes):
        nodes.extend(_expand(node, table, f"{node.name or node.op_type}__{i}", 0))
    return replace(graph, nodes=nodes)


def _expand(node: Node, table: dict, prefix: str, depth: int) -> list[Node]:
    function = table.get((node.domain, node.op_type))
    if function is None:
        return [node]
    if depth > MAX_DEPTH:
        raise ModelFormatError(f"function {function.name!r} calls itself too deeply")
    rename = dict(zip(function.inputs, node.inputs, strict=False))
    rename.update(zip(function.outputs, node.outputs, strict=False))
    for formal in function.inputs[len(node.inputs) :]:
        rename[formal] = ""  # an optional input the caller left out
    expanded: list[Node] = []
    for j, inner in enumerate(function.nodes):
        body = Node(
            op_type=inner.op_type,
            inputs=[_name(n, rename, prefix) for n in inner.inputs],
            outputs=[_name(n, rename, prefix) for n in inner.outputs],
            name=f"{prefix}/{inner.name or j}",
            domain=inner.domain,
            attributes=_bind(inner.attributes, node.attributes, function.attribute_defaults),
        )
        expanded.extend(_expand(body, table, f"{prefix}/{j}", depth + 1))
    return expanded


def _name(name: str, rename: dict[str, str], prefix: str) -> str:
    if not name:
        return ""
    return rename.get(name, f"{prefix}/{name}")


def _bind(
    inner: dict[str, Attribute], caller: dict[str, Attribute], defaults: dict[str, Attribute]
) -> dict[str, Attribute]:
    bound: dict[str, Attribute] = {}
    for name, attr in inner.items():
        if not attr.ref_attr_name:
            bound[name] = attr
            continue
        source = caller.get(attr.ref_attr_name) or defaults.get(attr.ref_attr_name)
        if source is not None:  # unset and without default: the attribute is omitted
            bound[name] = replace(source, name=name)
    return bound
