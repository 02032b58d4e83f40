"""QDQ fusion: DequantizeLinear -> op -> QuantizeLinear groups become integer kernels.

A QDQ model (what onnxruntime's quantizer writes by default) says "compute this Conv in
float on dequantized values, then quantize"; run literally, every weight is dequantized to
float32 at load and every activation makes a float round trip. Like onnxruntime's own QDQ
transformer, this pass rewrites each group into the integer op it stands for, with the
8-bit tensors as inputs:

- Conv -> QLinearConv, MatMul -> QLinearMatMul, Gemm -> com.microsoft QGemm (int32 bias)
- Add, Mul -> QLinearAdd, QLinearMul; AveragePool, GlobalAveragePool, Sigmoid, LeakyRelu,
  Concat -> their com.microsoft QLinear ops
- MaxPool and data movement (Reshape, Flatten, Transpose, Squeeze, Unsqueeze, ...) between
  a DequantizeLinear and a QuantizeLinear with the same scale and zero point run on the
  8-bit values directly.
- Other one-input elementwise ops (Gelu, Tanh, Erf, ...), with at most one data movement op
  before the QuantizeLinear, become a 256-entry table lookup (QLinearLookup): the table is
  the float kernels' own answer for every 8-bit code, built here once, so each element
  gets the bits the float path would give, in one gather instead of three float passes.

Dynamic quantization's MatMulInteger -> Cast(float) -> Mul(scale) [-> Add(bias)] becomes
com.microsoft MatMulIntegerToFloat (as onnxruntime fuses it): the same float32 arithmetic
without the int32 round trip, and without a pass over the output per float op.

Results can differ from the float path by one quantization step where a value sits on a
rounding boundary (onnxruntime's optimised sessions differ the same way). A group whose
parameters are not constants, not 8-bit, or not per tensor where the integer op needs
that, is left as it is. DequantizeLinear nodes no longer read are dropped, so weights stay
8-bit in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np

from edgerun.runtime import registry
from edgerun.runtime.graph import Graph, Node
from edgerun.runtime.kernels import int8

DOMAIN = "com.microsoft"  # the domain of the contrib ops this pass may emit
_QDQ_DOMAINS = ("", "ai.onnx", DOMAIN)  # onnxruntime's contrib Q/DQ mean the same for 8 bits
_EIGHT_BIT = (np.dtype(np.uint8), np.dtype(np.int8))
_DIRECT = {
    "MaxPool",
    "Reshape",
    "Flatten",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Slice",
    "Gather",
    "DepthToSpace",
    "SpaceToDepth",
}
# one-input elementwise float ops whose 8-bit island becomes a table lookup
_LOOKUP = {
    "Gelu",
    "Erf",
    "Tanh",
    "Relu",
    "Exp",
    "Softplus",
    "Softsign",
    "Elu",
    "Selu",
    "Celu",
    "HardSigmoid",
    "HardSwish",
    "Mish",
    "Abs",
    "Neg",
}
_MOVES = {"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze"}  # may sit before the Q
_UNARY = {
    "Sigmoid": "QLinearSigmoid",
    "LeakyRelu": "QLinearLeakyRelu",
    "AveragePool": "QLinearAveragePool",
    "GlobalAveragePool": "QLinearGlobalAveragePool",
}


class _Groups:
    """The graph's producers and readers, and the constants of the DQ/Q nodes."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.const = graph.initializers
        self.producer = {o: n for n in graph.nodes for o in n.outputs if o}
        self.readers: dict[str, list[Node]] = {}
        for node in graph.nodes:
            for name in set(node.inputs):
                if name:
                    self.readers.setdefault(name, []).append(node)
        self.outputs = {v.name for v in graph.outputs}

    def dq(self, name: str, per_tensor: bool = True, bias: bool = False) -> Node | None:
        """The DequantizeLinear producing ``name``, if its parameters are constants and its
        values 8-bit (int32 for a ``bias``)."""
        node = self.producer.get(name)
        if node is None or node.op_type != "DequantizeLinear" or node.domain not in _QDQ_DOMAINS:
            return None
        if len(node.inputs) < 3 or not all(n in self.const for n in node.inputs[1:3]):
            return None
        if self.const[node.inputs[2]].dtype not in ((np.dtype(np.int32),) if bias else _EIGHT_BIT):
            return None
        if node.attr("block_size", 0) or self.const[node.inputs[1]].dtype != np.float32:
            return None
        if per_tensor and self.const[node.inputs[1]].size != 1:
            return None
        return node

    def q_after(self, node: Node) -> Node | None:
        """The one QuantizeLinear reading ``node``'s only output (8-bit, per tensor)."""
        out = node.outputs[0]
        readers = self.readers.get(out, [])
        if len(readers) != 1 or out in self.outputs:
            return None
        q = readers[0]
        if q.op_type != "QuantizeLinear" or q.domain not in _QDQ_DOMAINS or q.inputs[0] != out:
            return None
        if len(q.inputs) < 3 or not all(n in self.const for n in q.inputs[1:3]):
            return None
        if self.const[q.inputs[2]].dtype not in _EIGHT_BIT or self.const[q.inputs[1]].size != 1:
            return None
        return q

    def same_params(self, a: Node, b: Node) -> bool:
        return all(
            self.const[x].shape == self.const[y].shape
            and self.const[x].dtype == self.const[y].dtype
            and np.array_equal(self.const[x], self.const[y])
            for x, y in zip(a.inputs[1:3], b.inputs[1:3], strict=True)
        )

    def params(self, node: Node) -> list[str]:
        return [node.inputs[0], node.inputs[1], node.inputs[2]]


def _fused(
    op: Node, op_type: str, inputs: list[str], q: Node, domain: str = "", keep: tuple = ()
) -> Node:
    """The integer node for ``op``, writing ``q``'s output, with the attributes in ``keep``."""
    attributes = {k: v for k, v in op.attributes.items() if k in keep}
    return Node(op_type, inputs, [q.outputs[0]], op.name or q.name, domain, attributes)


_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


def _conv(g: _Groups, op: Node, q: Node) -> Node | None:
    x, w = g.dq(op.inputs[0]), g.dq(op.inputs[1], per_tensor=False)
    if x is None or w is None or w.inputs[0] not in g.const:
        return None
    if g.const[w.inputs[1]].size > 1 and w.attr("axis", 1) != 0:
        return None
    inputs = [*g.params(x), *g.params(w), *q.inputs[1:3]]
    if len(op.inputs) > 2 and op.inputs[2]:
        bias = _int32_bias(g, op.inputs[2], x, w)
        if bias is None:
            return None
        inputs.append(bias)
    return _fused(op, "QLinearConv", inputs, q, keep=_CONV_ATTRS)


def _int32_bias(g: _Groups, name: str, x: Node, w: Node) -> str | None:
    """The int32 bias behind a bias DequantizeLinear scaled by x_scale * w_scale."""
    b = g.dq(name, per_tensor=False, bias=True)
    if b is None or b.inputs[0] not in g.const:
        return None
    if np.any(g.const[b.inputs[2]]):
        return None
    expected = g.const[x.inputs[1]].reshape(-1)[0] * g.const[w.inputs[1]].reshape(-1)
    if not np.allclose(g.const[b.inputs[1]].reshape(-1), expected, rtol=1e-6, atol=0):
        return None
    return b.inputs[0]


def _matmul(g: _Groups, op: Node, q: Node) -> Node | None:
    a, b = g.dq(op.inputs[0]), g.dq(op.inputs[1], per_tensor=False)
    if a is None or b is None:
        return None
    b_scale = g.const[b.inputs[1]]
    if b_scale.size > 1 and (b.inputs[0] not in g.const or g.const[b.inputs[0]].ndim != 2):
        return None
    if b_scale.size > 1 and b.attr("axis", 1) not in (1, -1):
        return None
    return _fused(op, "QLinearMatMul", [*g.params(a), *g.params(b), *q.inputs[1:3]], q)


def _gemm(g: _Groups, op: Node, q: Node) -> Node | None:
    a, b = g.dq(op.inputs[0]), g.dq(op.inputs[1], per_tensor=False)
    if a is None or b is None or b.inputs[0] not in g.const or op.attr("beta", 1.0) != 1.0:
        return None
    trans_b = op.attr("transB", 0)
    if g.const[b.inputs[1]].size > 1 and b.attr("axis", 1) != (0 if trans_b else 1):
        return None
    bias = ""
    if len(op.inputs) > 2 and op.inputs[2]:
        found = _int32_bias(g, op.inputs[2], a, b)
        if found is None:
            return None
        bias = found
    inputs = [*g.params(a), *g.params(b), bias, *q.inputs[1:3]]
    return _fused(op, "QGemm", inputs, q, DOMAIN, keep=("alpha", "transA", "transB"))


def _binary(g: _Groups, op: Node, q: Node) -> Node | None:
    a, b = g.dq(op.inputs[0]), g.dq(op.inputs[1])
    if a is None or b is None:
        return None
    inputs = [*g.params(a), *g.params(b), *q.inputs[1:3]]
    return _fused(op, f"QLinear{op.op_type}", inputs, q, DOMAIN)


def _unary(g: _Groups, op: Node, q: Node) -> Node | None:
    x = g.dq(op.inputs[0])
    if x is None:
        return None
    keep = (
        "alpha",
        "auto_pad",
        "ceil_mode",
        "count_include_pad",
        "kernel_shape",
        "pads",
        "strides",
    )
    if op.op_type == "AveragePool" and op.attr("dilations") not in (None, [1, 1], [1]):
        return None
    inputs = [*g.params(x), *q.inputs[1:3]]
    return _fused(op, _UNARY[op.op_type], inputs, q, DOMAIN, keep=keep)


def _concat(g: _Groups, op: Node, q: Node) -> Node | None:
    sources = [g.dq(name) for name in op.inputs]
    if any(s is None for s in sources):
        return None
    inputs = [*q.inputs[1:3]]
    for s in sources:
        assert s is not None
        inputs += g.params(s)
    return _fused(op, "QLinearConcat", inputs, q, DOMAIN, keep=("axis",))


def _direct(g: _Groups, op: Node, q: Node) -> Node | None:
    x = g.dq(op.inputs[0])
    if x is None or not g.same_params(x, q) or any(op.outputs[1:]):
        return None
    return Node(
        op.op_type,
        [x.inputs[0], *op.inputs[1:]],
        [q.outputs[0]],
        op.name,
        op.domain,
        dict(op.attributes),
    )


_RULES: dict[str, Callable[[_Groups, Node, Node], Node | None]] = {
    "Conv": _conv,
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Add": _binary,
    "Mul": _binary,
    "Concat": _concat,
    **{op: _unary for op in _UNARY},
    **{op: _direct for op in _DIRECT},
}


def fuse_qdq(graph: Graph, opsets: Mapping[str, int] | None = None) -> Graph:
    """The graph with its QDQ groups fused; ``graph`` itself when there are none.
    ``opsets`` (domain -> version) enables the table lookups, whose tables run the kernels."""
    groups = _Groups(graph)
    replaced: dict[int, Node] = {}  # id of the op node -> its fused node
    dropped: set[int] = set()  # ids of the QuantizeLinear nodes folded into one
    tables: dict[str, np.ndarray] = {}
    for node in graph.nodes:
        rule = _RULES.get(node.op_type)
        if node.domain not in ("", "ai.onnx") or not node.outputs or id(node) in replaced:
            continue
        if rule is None:
            if node.op_type in _LOOKUP and opsets is not None:
                _lookup(groups, node, opsets, replaced, dropped, tables)
            elif node.op_type == "MatMulInteger":
                _integer_to_float(groups, node, replaced, dropped, tables)
            continue
        q = groups.q_after(node)
        if q is None:
            continue
        fused = rule(groups, node, q)
        if fused is not None:
            replaced[id(node)] = fused
            dropped.add(id(q))
    if not replaced:
        return graph
    nodes = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in dropped]
    initializers = {**graph.initializers, **tables} if tables else graph.initializers
    return replace(graph, nodes=_without_dead_dequantize(nodes, graph), initializers=initializers)


def _lookup(
    g: _Groups,
    op: Node,
    opsets: Mapping[str, int],
    replaced: dict[int, Node],
    dropped: set[int],
    tables: dict[str, np.ndarray],
) -> None:
    """DequantizeLinear -> ``op`` -> [one data movement op] -> QuantizeLinear as a lookup in
    a table of ``op``'s quantized output for every 8-bit code (written to ``tables``)."""
    x = g.dq(op.inputs[0])
    if x is None or len(op.inputs) != 1 or len(op.outputs) != 1:
        return
    move, q = None, g.q_after(op)
    if q is None:
        move = _only_reader(g, op.outputs[0], _MOVES)
        if move is None or move.inputs[0] != op.outputs[0]:
            return
        q = g.q_after(move)
    if q is None or (move is not None and id(move) in replaced):
        return
    table = _table(g, op, x, q, opsets)
    if table is None:
        return
    name = f"{op.outputs[0]}::lookup"
    tables[name] = table
    out = op.outputs[0] if move is not None else q.outputs[0]
    replaced[id(op)] = Node("QLinearLookup", [x.inputs[0], name], [out], op.name, DOMAIN, {})
    if move is not None:
        replaced[id(move)] = replace(move, outputs=[q.outputs[0]])
    dropped.add(id(q))


def _only_reader(g: _Groups, name: str, op_types: str | set[str]) -> Node | None:
    """The one node reading ``name`` (not a graph output), if it is a default-domain op of
    ``op_types`` (one op type or a set of them)."""
    readers = g.readers.get(name, [])
    if len(readers) != 1 or name in g.outputs:
        return None
    node = readers[0]
    wanted = {op_types} if isinstance(op_types, str) else op_types
    return node if node.op_type in wanted and node.domain in ("", "ai.onnx") else None


def _integer_to_float(
    g: _Groups,
    op: Node,
    replaced: dict[int, Node],
    dropped: set[int],
    tables: dict[str, np.ndarray],
) -> None:
    """MatMulInteger -> Cast(float) -> Mul(s) [-> Add(1-D float bias)] as one
    MatMulIntegerToFloat(a, b, s, 1.0, za, zb[, bias]): it computes float32(acc) * (s * 1),
    then + bias, the graph's own operations in its order (a product commutes exactly)."""
    cast = _only_reader(g, op.outputs[0], "Cast")
    if cast is None or cast.attr("to") != 1 or len(op.inputs) < 2:
        return
    mul = _only_reader(g, cast.outputs[0], "Mul")
    if mul is None or len(mul.inputs) != 2 or mul.inputs[0] == mul.inputs[1]:
        return
    scale = mul.inputs[1] if mul.inputs[0] == cast.outputs[0] else mul.inputs[0]
    last, bias = mul, ""
    add = _only_reader(g, mul.outputs[0], "Add")
    b = g.const.get(op.inputs[1])
    if add is not None and b is not None and b.ndim == 2:
        other = add.inputs[1] if add.inputs[0] == mul.outputs[0] else add.inputs[0]
        c = g.const.get(other)
        if c is not None and c.dtype == np.float32 and c.shape == (b.shape[1],):
            last, bias = add, other
    one = f"{op.outputs[0]}::one"
    tables[one] = np.array(1.0, np.float32)
    zeros = [*op.inputs[2:4], "", ""][:2]
    inputs = [op.inputs[0], op.inputs[1], scale, one, *zeros]
    if bias:
        inputs.append(bias)
    fused = Node("MatMulIntegerToFloat", inputs, [last.outputs[0]], op.name, DOMAIN, {})
    replaced[id(op)] = fused
    dropped.update(id(n) for n in (cast, mul, last))


def _table(g: _Groups, op: Node, x: Node, q: Node, opsets: Mapping[str, int]) -> np.ndarray | None:
    """``op``'s kernel on every dequantized 8-bit code, quantized as ``q`` does: entry i is
    the code whose bits read as unsigned are i. None where the kernel cannot be called so."""
    opset = opsets.get("")
    info = registry.resolve("", op.op_type, opset) if opset is not None else None
    if info is None or info.needs_scope or info.needs_outputs:
        return None
    attrs = {k: _plain(a.value) for k, a in op.attributes.items()}
    if set(attrs) - info.attributes or any(v is None for v in attrs.values()):
        return None
    zero = g.const[x.inputs[2]]
    codes = np.arange(256, dtype=np.uint8).view(zero.dtype)
    values = int8.dequantize(codes, float(g.const[x.inputs[1]].reshape(-1)[0]), int(zero.item()))
    y = np.asarray(info.fn(values, **attrs))
    if y.shape != codes.shape or y.dtype != np.float32:
        return None
    q_zero, q_scale = g.const[q.inputs[2]], g.const[q.inputs[1]]
    if q_scale.dtype != np.float32:
        return None
    scale = float(q_scale.reshape(-1)[0])
    return int8.quantize(y, scale, int(q_zero.item()), q_zero.dtype)


def _plain(value: object) -> object:
    """A number, string (decoded as the plan decodes them) or list of numbers; None for
    anything else (graphs, tensors), which no elementwise op takes."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (int, float)) or (
        isinstance(value, list) and all(isinstance(v, (int, float)) for v in value)
    ):
        return value
    return None


def _without_dead_dequantize(nodes: list[Node], graph: Graph) -> list[Node]:
    read = {name for n in nodes for name in n.inputs if name}
    read |= {v.name for v in graph.outputs}
    return [n for n in nodes if n.op_type != "DequantizeLinear" or n.outputs[0] in read]
