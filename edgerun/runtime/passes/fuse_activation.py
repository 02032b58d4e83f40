"""Activation fusion: Conv -> Relu / Clip becomes onnxruntime's com.microsoft FusedConv.

The convolution kernel then clips each block of its output while it is still in cache,
instead of a separate Clip node reading and writing the whole tensor again (MobileNets
spend a tenth of their time there). Only a Conv whose single reader is the activation, and
whose output is not a graph output, is fused; Clip bounds must be constants (inputs that
are initializers, or the attributes of opset < 11). A residual block's end, Conv -> Add ->
Relu/Clip, becomes FusedConv with the Add's other operand as its Z, as onnxruntime's own
optimiser does, where shape inference shows that operand has the Conv output's shape (so
the Add does not broadcast) and nothing else reads the Conv or the Add. The plan runs it
after constant and BatchNormalization folding, so Conv -> BatchNormalization -> Relu fuses
as well (models that keep their BatchNormalization nodes), and a two-input Sum counts as an
Add.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np

from edgerun.runtime.graph import ATTR_FLOATS, ATTR_STRING, Attribute, Graph, Node
from edgerun.runtime.passes.shape_inference import Shape, infer_shapes

DOMAIN = "com.microsoft"  # the domain of FusedConv
_DEFAULT = ("", "ai.onnx")
_ADDS = ("Add", "Sum")  # a two-input Sum is an Add (older exports write residuals so)
_FLOAT_MAX = float(np.finfo(np.float32).max)  # Clip-6's default bounds


def fuse_activation(
    graph: Graph, infer: Callable[[], Mapping[str, Shape | None]] | None = None
) -> Graph:
    """``graph`` with each Conv -> Relu/Clip pair, and each Conv -> Add -> Relu/Clip chain
    (a residual block's end), as one FusedConv; ``graph`` itself when there is none.
    ``infer()`` gives ``graph``'s inferred shapes (by default infer_shapes, called only for
    a residual candidate)."""
    producer = {n.outputs[0]: n for n in graph.nodes if n.outputs}
    reads: dict[str, int] = {}
    for node in graph.walk():  # subgraph reads of an outer value count too
        for name in node.inputs:
            reads[name] = reads.get(name, 0) + 1
    kept = {v.name for v in graph.outputs}
    shapes: Mapping[str, Shape | None] | None = None
    replaced: dict[int, Node] = {}
    dropped: set[int] = set()

    def only_reader(name: str) -> bool:
        return reads.get(name) == 1 and name not in kept

    for act in graph.nodes:
        src = producer.get(act.inputs[0]) if act.inputs and act.domain in _DEFAULT else None
        conv, residual = _conv_of(src), ""
        if src is not None and src.op_type in _ADDS and conv is None:
            conv, residual = _residual(src, producer)
            if conv is not None:
                if shapes is None:
                    shapes = infer() if infer is not None else infer_shapes(graph)
                if not only_reader(src.outputs[0]) or not _same_shape(
                    shapes, conv.outputs[0], residual
                ):
                    conv = None
        if conv is None or not only_reader(conv.outputs[0]) or id(conv) in dropped:
            continue
        params = _activation_params(graph, act)
        if params is None:
            continue
        attributes = dict(conv.attributes)
        attributes["activation"] = Attribute("activation", ATTR_STRING, act.op_type.encode())
        if params:
            attributes["activation_params"] = Attribute("activation_params", ATTR_FLOATS, params)
        inputs = list(conv.inputs)
        if residual:  # FusedConv's Z: added before the activation
            inputs = [*inputs, *[""] * (3 - len(inputs)), residual]
            dropped.add(id(src))
        fused = Node("FusedConv", inputs, [act.outputs[0]], conv.name, DOMAIN, attributes)
        # in the activation's place, after the residual whatever order the nodes are in
        replaced[id(act)] = fused
        dropped.add(id(conv))
    if not replaced:
        return graph
    nodes = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in dropped]
    return replace(graph, nodes=nodes)


def _conv_of(node: Node | None) -> Node | None:
    """``node`` itself when it is a plain Conv."""
    if node is None or node.op_type != "Conv" or node.domain not in _DEFAULT:
        return None
    return node


def _residual(add: Node, producer: dict[str, Node]) -> tuple[Node | None, str]:
    """(the Conv one operand of ``add`` comes from, the other operand), or (None, "")."""
    if add.domain not in _DEFAULT or len(add.inputs) != 2:
        return None, ""
    for mine, other in ((0, 1), (1, 0)):
        conv = _conv_of(producer.get(add.inputs[mine]))
        if conv is not None and add.inputs[other] != add.inputs[mine]:
            return conv, add.inputs[other]
    return None, ""


def _same_shape(shapes: Mapping[str, Shape | None], a: str, b: str) -> bool:
    """Both values' inferred shapes are known, with the same integer dims (no broadcast)."""
    sa, sb = shapes.get(a), shapes.get(b)
    return sa is not None and sa == sb and all(isinstance(d, int) for d in sa)


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
