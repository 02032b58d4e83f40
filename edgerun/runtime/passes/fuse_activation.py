"""Activation fusion: Conv -> Relu / Clip becomes onnxruntime's com.microsoft FusedConv.

The convolution kernel then clips each block of its output while it is still in cache,
instead of a separate Clip node reading and writing the whole tensor again (MobileNets
spend a tenth of their time there). Only a Conv whose single reader is the activation, and
whose output is not a graph output, is fused; Clip bounds must be constants (inputs that
are initializers, or the attributes of opset < 11).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgerun.runtime.graph import ATTR_FLOATS, ATTR_STRING, Attribute, Graph, Node

DOMAIN = "com.microsoft"  # the domain of FusedConv
_DEFAULT = ("", "ai.onnx")
_FLOAT_MAX = float(np.finfo(np.float32).max)  # Clip-6's default bounds


def fuse_activation(graph: Graph) -> Graph:
    """``graph`` with each Conv -> Relu/Clip pair as one FusedConv; ``graph`` itself when
    there is none."""
    producer = {n.outputs[0]: n for n in graph.nodes if n.op_type == "Conv" and n.outputs}
    reads: dict[str, int] = {}
    for node in graph.walk():  # subgraph reads of an outer value count too
        for name in node.inputs:
            reads[name] = reads.get(name, 0) + 1
    kept = {v.name for v in graph.outputs}
    replaced: dict[int, Node] = {}
    dropped: set[int] = set()
    for act in graph.nodes:
        conv = producer.get(act.inputs[0]) if act.inputs else None
        if conv is None or conv.domain not in _DEFAULT or act.domain not in _DEFAULT:
            continue
        if reads.get(conv.outputs[0]) != 1 or conv.outputs[0] in kept:
            continue
        params = _activation_params(graph, act)
        if params is None:
            continue
        attributes = dict(conv.attributes)
        attributes["activation"] = Attribute("activation", ATTR_STRING, act.op_type.encode())
        if params:
            attributes["activation_params"] = Attribute("activation_params", ATTR_FLOATS, params)
        fused = Node(
            "FusedConv", list(conv.inputs), [act.outputs[0]], conv.name, DOMAIN, attributes
        )
        replaced[id(conv)] = fused
        dropped.add(id(act))
    if not replaced:
        return graph
    nodes = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in dropped]
    return replace(graph, nodes=nodes)


def _activation_params(graph: Graph, act: Node) -> list[float] | None:
    """FusedConv's activation_params for ``act``: [] for Relu, [min, max] for a Clip with
    constant bounds, None where it cannot be fused."""
    if act.op_type == "Relu":
        return []
    if act.op_type != "Clip":
        return None
    if "min" in act.attributes or "max" in act.attributes:
        return [float(act.attr("min", -_FLOAT_MAX)), float(act.attr("max", _FLOAT_MAX))]
    if len(act.inputs) == 1:  # no bounds (or Clip-6's defaults): nothing worth fusing
        return None
    bounds = []
    for i, default in ((1, -np.inf), (2, np.inf)):
        name = act.inputs[i] if len(act.inputs) > i else ""
        if not name:
            bounds.append(default)
        elif name in graph.initializers and graph.initializers[name].size == 1:
            bounds.append(float(graph.initializers[name].reshape(())))
        else:
            return None
    return bounds
