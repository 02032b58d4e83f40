"""Static shape inference over the graph IR, one small rule per op type.

Shapes are tuples of dims: an int, a symbolic name (carried through unchanged where an op
only moves it), or None when unknown. An op without a rule, or with unknown inputs, leaves its
outputs unknown (falling back to the model's own value_info) instead of guessing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

import numpy as np

from edgerun.runtime.graph import Graph, Node, ValueInfo
from edgerun.specs import Dim

Shape = tuple[Dim, ...]


@dataclass(frozen=True)
class Known:
    """What inference knows about one value: its shape and, for small constants, its data."""

    shape: Shape | None
    value: np.ndarray | None = None  # constants and shape arithmetic (Shape -> Reshape)


Rule = Callable[[Node, list[Known | None]], list[Shape | None]]
RULES: dict[str, Rule] = {}


def rule(*op_types: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for op in op_types:
            if op in RULES:
                raise RuntimeError(f"duplicate shape rule for {op}")
            RULES[op] = fn
        return fn

    return register


def infer_shapes(graph: Graph, inputs: dict[str, Shape] | None = None) -> dict[str, Shape | None]:
    """Shapes of every value in ``graph``; ``inputs`` overrides the declared input shapes."""
    known: dict[str, Known] = {}
    for name, array in graph.initializers.items():
        known[name] = _known(array)
    for v in graph.real_inputs:
        shape = (inputs or {}).get(v.name, v.type.shape if v.type else None)
        known[v.name] = Known(shape)
    # the model's own annotations, read only where a rule leaves a shape unknown (a
    # reader may parse their types on demand): the last one with a type, outputs last
    annotated: dict[str, list[ValueInfo]] = {}
    for v in (*graph.value_info, *graph.outputs):
        annotated.setdefault(v.name, []).append(v)
    for node in graph.nodes:
        args = [known.get(name) if name else None for name in node.inputs]
        shapes, values = _apply(node, args)
        for i, out in enumerate(node.outputs):
            shape = shapes[i] if i < len(shapes) else None
            if shape is None:
                shape = _annotated_shape(annotated.get(out, ()))
            known[out] = Known(shape, values.get(i))
    return {name: k.shape for name, k in known.items()}


def _annotated_shape(infos: Iterable[ValueInfo]) -> Shape | None:
    typed = [v.type for v in infos if v.type]
    return typed[-1].shape if typed else None


def output_shapes(node: Node, inputs: list[np.ndarray | None]) -> list[Shape | None]:
    """The shapes a node's outputs will have given its actual inputs, where a rule knows."""
    args = [None if a is None else _known(a) for a in inputs]
    return _apply(node, args)[0]


def _known(array: np.ndarray) -> Known:
    # small integer tensors (shapes, axes, pads) and numeric scalars (Range's bounds)
    small = array if array.size <= 64 and array.dtype.kind in "iu" else None
    if array.size == 1 and array.dtype.kind == "f":
        small = array
    return Known(tuple(array.shape), small)


# contrib ops the plan's own passes create, shaped like the standard op they stand for
ALIASES = {
    ("com.microsoft", "FusedConv"): "Conv",
    ("com.microsoft", "ClippedInputConv"): "Conv",
    ("com.microsoft", "MatMulSoftmax"): "MatMul",  # passes/fuse_softmax.py: the same shape
}


def _apply(node: Node, args: list[Known | None]) -> tuple[list[Shape | None], dict]:
    alias = ALIASES.get((node.domain, node.op_type))
    if node.domain not in ("", "ai.onnx") and alias is None:
        return [], {}
    if node.op_type == "Shape" and args and args[0] is not None and args[0].shape is not None:
        dims = args[0].shape
        if all(isinstance(d, int) for d in dims):
            return [(len(dims),)], {0: np.array(dims, np.int64)}
        return [(len(dims),)], {}
    if node.op_type == "Constant" and node.attr("value") is not None:
        value = node.attr("value")
        return [tuple(value.shape)], {0: _known(value).value}
    fn = RULES.get(alias or node.op_type)
    if fn is None:
        return [], {}
    try:
        return fn(node, args), {}
    except (TypeError, ValueError, IndexError, KeyError, ArithmeticError, AttributeError):
        return [], {}  # inconsistent or unknown inputs: leave the outputs unknown


def _shape(args: list[Known | None], i: int) -> Shape:
    known = args[i] if i < len(args) else None
    if known is None or known.shape is None:
        raise ValueError("unknown input shape")
    return known.shape


def _value(args: list[Known | None], i: int) -> np.ndarray:
    known = args[i] if i < len(args) else None
    if known is None or known.value is None:
        raise ValueError("input value unknown")
    return known.value


def broadcast(*shapes: Shape) -> Shape:
    rank = max(len(s) for s in shapes)
    out: list[Dim] = []
    for dims in zip(*[(1,) * (rank - len(s)) + tuple(s) for s in shapes], strict=True):
        concrete = {d for d in dims if isinstance(d, int) and d != 1}
        symbolic = {d for d in dims if not isinstance(d, int)}
        if len(concrete) > 1:
            raise ValueError("shapes do not broadcast")
        out.append(
            concrete.pop()
            if concrete
            else (symbolic.pop() if len(symbolic) == 1 else (1 if not symbolic else None))
        )
    return tuple(out)


UNARY = [
    "Abs",
    "Acos",
    "Acosh",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "BitwiseNot",
    "Cast",
    "CastLike",
    "Ceil",
    "Celu",
    "Clip",
    "Cos",
    "Cosh",
    "Elu",
    "Erf",
    "Exp",
    "Floor",
    "Gelu",
    "HardSigmoid",
    "HardSwish",
    "Hardmax",
    "Identity",
    "IsInf",
    "IsNaN",
    "LRN",
    "LeakyRelu",
    "Log",
    "LogSoftmax",
    "Mish",
    "Neg",
    "Not",
    "PRelu",
    "Reciprocal",
    "Relu",
    "Round",
    "Selu",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Softmax",
    "Softplus",
    "Softsign",
    "Sqrt",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Dropout",
    "BatchNormalization",
    "InstanceNormalization",
    "LayerNormalization",
    "MeanVarianceNormalization",
    "LpNormalization",
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
]
BINARY = [
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Mod",
    "And",
    "Or",
    "Xor",
    "Equal",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "BitShift",
    "BitwiseAnd",
    "BitwiseOr",
    "BitwiseXor",
    "Max",
    "Min",
    "Mean",
    "Sum",
    "Where",
]


@rule(*UNARY)
def _same(node: Node, args: list[Known | None]) -> list[Shape | None]:
    shape = _shape(args, 0)
    return (
        [shape] * len(node.outputs) if node.op_type != "DynamicQuantizeLinear" else [shape, (), ()]
    )


@rule(*BINARY)
def _broadcast(node: Node, args: list[Known | None]) -> list[Shape | None]:
    return [broadcast(*(_shape(args, i) for i in range(len(args)) if args[i] is not None))]


def _spatial_out(size: Dim, kernel: int, stride: int, dilation: int, pads: int, ceil: bool) -> Dim:
    if not isinstance(size, int):
        return None
    effective = dilation * (kernel - 1) + 1
    span = (size + pads - effective) / stride
    return int(math.ceil(span) if ceil else math.floor(span)) + 1


def _window(node: Node, x: Shape, kernel: list[int]) -> list[Dim]:
    n = len(kernel)
    strides = node.attr("strides") or [1] * n
    dilations = node.attr("dilations") or [1] * n
    pads = node.attr("pads") or [0] * (2 * n)
    auto_pad = (node.attr("auto_pad") or b"NOTSET").decode()
    ceil = bool(node.attr("ceil_mode", 0))
    out: list[Dim] = []
    for i in range(n):
        size = x[2 + i]
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out.append(-(-size // strides[i]) if isinstance(size, int) else None)
        elif auto_pad == "VALID":
            out.append(_spatial_out(size, kernel[i], strides[i], dilations[i], 0, False))
        else:
            out.append(
                _spatial_out(size, kernel[i], strides[i], dilations[i], pads[i] + pads[i + n], ceil)
            )
    return out


@rule("Conv", "ConvInteger", "QLinearConv")
def _conv(node: Node, args: list[Known | None]) -> list[Shape | None]:
    w_index = 3 if node.op_type == "QLinearConv" else 1
    x, w = _shape(args, 0), _shape(args, w_index)
    kernel = node.attr("kernel_shape") or list(w[2:])
    return [(x[0], w[0], *_window(node, x, kernel))]


@rule("ConvTranspose")
def _conv_transpose(node: Node, args: list[Known | None]) -> list[Shape | None]:
    x, w = _shape(args, 0), _shape(args, 1)
    group = node.attr("group", 1)
    kernel = node.attr("kernel_shape") or list(w[2:])
    n = len(kernel)
    if node.attr("output_shape"):
        return [(x[0], w[1] * group, *node.attr("output_shape")[-n:])]
    strides = node.attr("strides") or [1] * n
    dilations = node.attr("dilations") or [1] * n
    pads = node.attr("pads") or [0] * (2 * n)
    extra = node.attr("output_padding") or [0] * n
    sizes = x[2:]
    if not all(isinstance(d, int) for d in sizes):
        return [(x[0], w[1] * group, *([None] * n))]
    spatial = [
        strides[i] * (cast(int, sizes[i]) - 1)
        + extra[i]
        + (kernel[i] - 1) * dilations[i]
        + 1
        - pads[i]
        - pads[i + n]
        for i in range(n)
    ]
    return [(x[0], w[1] * group, *spatial)]


@rule("MaxPool", "AveragePool", "LpPool")
def _pool(node: Node, args: list[Known | None]) -> list[Shape | None]:
    x = _shape(args, 0)
    out: Shape | None = (x[0], x[1], *_window(node, x, node.attr("kernel_shape")))
    return [out, out][: len(node.outputs)]


@rule("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def _global_pool(node: Node, args: list[Known | None]) -> list[Shape | None]:
    x = _shape(args, 0)
    return [(x[0], x[1], *([1] * (len(x) - 2)))]


@rule("Gemm")
def _gemm(node: Node, args: list[Known | None]) -> list[Shape | None]:
    a, b = _shape(args, 0), _shape(args, 1)
    m = a[1] if node.attr("transA", 0) else a[0]
    n = b[0] if node.attr("transB", 0) else b[1]
    return [(m, n)]


@rule("MatMul", "MatMulInteger", "QLinearMatMul")
def _matmul(node: Node, args: list[Known | None]) -> list[Shape | None]:
    a = _shape(args, 0)
    b = _shape(args, 3 if node.op_type == "QLinearMatMul" else 1)
    if len(a) == 1 and len(b) == 1:
        return [()]
    if len(a) == 1:
        return [(*b[:-2], b[-1])]
    if len(b) == 1:
        return [a[:-1]]
    return [(*broadcast(a[:-2], b[:-2]), a[-2], b[-1])]


@rule("Flatten")
def _flatten(node: Node, args: list[Known | None]) -> list[Shape | None]:
    x = _shape(args, 0)
    axis = node.attr("axis", 1) % (len(x) + 1) if x else 0
    return [(_product(x[:axis]), _product(x[axis:]))]


def _product(dims: Shape) -> Dim:
    if len(dims) == 1:
        return dims[0]  # a lone symbolic dim keeps its name
    return math.prod(dims) if all(isinstance(d, int) for d in dims) else None  # type: ignore[arg-type]


@rule("Reshape")
def _reshape(node: Node, args: list[Known | None]) -> list[Shape | None]:
    x, target = _shape(args, 0), [int(v) for v in _value(args, 1)]
    allowzero = node.attr("allowzero", 0)
    dims: list[Dim] = [x[i] if (d == 0 and not allowzero) else d for i, d in enumerate(target)]
    if -1 in dims:
        known = [d for d in dims if d != -1]
        total, rest = _product(x), _product(tuple(known))
        exact = isinstance(total, int) and isinstance(rest, int) and rest
        dims[dims.index(-1)] = total // rest if exact else None  # type: ignore[operator]
    return [tuple(dims)]


@rule("Transpose")
def _transpose(node: Node, args: list[Known | None]) -> list[Shape | None]:
    x = _shape(args, 0)
    perm = node.attr("perm") or list(range(len(x)))[::-1]
    return [tuple(x[p] for p in perm)]


@rule("Concat")
def _concat(node: Node, args: list[Known | None]) -> list[Shape | None]:
    shapes = [_shape(args, i) for i in range(len(args))]
    axis = node.attr("axis") % len(shapes[0])
    sizes = [s[axis] for s in shapes]
    total = sum(sizes) if all(isinstance(d, int) for d in sizes) else None  # type: ignore[arg-type]
    return [(*shapes[0][:axis], total, *shapes[0][axis + 1 :])]


def _axes(node: Node, args: list[Known | None], index: int) -> list[int] | None:
    if node.attr("axes") is not None:
        return list(node.attr("axes"))
    if index < len(args) and args[index] is not None:
        return [int(v) for v in _value(args, index)]
    return None


@rule("Unsqueeze")
def _unsqueeze(node: Node, args: list[Known | None]) -> list[Shape | None]:
    x, axes = _shape(args, 0), _axes(node, args, 1)
    rank = len(x) + len(axes)  # type: ignore[arg-type]
    positions = sorted(a % rank for a in axes)  # type: ignore[union-attr]
    out = list(x)
    for a in positions:
        out.insert(a, 1)
    return [tuple(out)]


@rule("Squeeze")
def _squeeze(node: Node, args: list[Known | None]) -> list[Shape | None]:
    x, axes = _shape(args, 0), _axes(node, args, 1)
    drop = {a % len(x) for a in axes} if axes else {i for i, d in enumerate(x) if d == 1}
    return [tuple(d for i, d in enumerate(x) if i not in drop)]


REDUCE = [
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
    "ArgMax",
    "ArgMin",
]


@rule(*REDUCE)
def _reduce(node: Node, args: list[Known | None]) -> list[Shape | None]:
    x = _shape(args, 0)
    if node.op_type in ("ArgMax", "ArgMin"):
        axes: list[int] | None = [node.attr("axis", 0)]
    else:
        axes = _axes(node, args, 1)
    if not axes:
        if node.attr("noop_with_empty_axes", 0):
            return [x]
        axes = list(range(len(x)))
    chosen = {a % len(x) for a in axes}
    keep = node.attr("keepdims", 1)
    return [tuple(1 if i in chosen else d for i, d in enumerate(x) if keep or i not in chosen)]


@rule("Gather")
def _gather(node: Node, args: list[Known | None]) -> list[Shape | None]:
    x, idx = _shape(args, 0), _shape(args, 1)
    axis = node.attr("axis", 0) % len(x)
    return [(*x[:axis], *idx, *x[axis + 1 :])]


# Ops whose output size comes from their inputs' values: the sizes a hostile model inflates.


@rule("ConstantOfShape")
def _constant_of_shape(node: Node, args: list[Known | None]) -> list[Shape | None]:
    return [tuple(int(d) for d in _value(args, 0))]


@rule("Expand")
def _expand(node: Node, args: list[Known | None]) -> list[Shape | None]:
    return [broadcast(_shape(args, 0), tuple(int(d) for d in _value(args, 1)))]


@rule("Tile")
def _tile(node: Node, args: list[Known | None]) -> list[Shape | None]:
    x, repeats = _shape(args, 0), [int(r) for r in _value(args, 1)]
    if len(repeats) != len(x):
        raise ValueError("repeats must match the rank")
    return [tuple(d * r if isinstance(d, int) else None for d, r in zip(x, repeats, strict=True))]


@rule("Range")
def _range(node: Node, args: list[Known | None]) -> list[Shape | None]:
    start, limit, delta = (float(_value(args, i).reshape(())) for i in range(3))
    if delta == 0 or not all(math.isfinite(v) for v in (start, limit, delta)):
        raise ValueError("Range never ends")
    return [(max(math.ceil((limit - start) / delta), 0),)]


@rule("Pad")
def _pad(node: Node, args: list[Known | None]) -> list[Shape | None]:
    x = _shape(args, 0)
    pads = [int(p) for p in (node.attr("pads") or _value(args, 1))]
    axes = list(range(len(x)))
    if len(args) > 3 and args[3] is not None:
        axes = [int(a) % len(x) for a in _value(args, 3)]
    if len(pads) != 2 * len(axes):
        raise ValueError("pads must hold a begin and an end per axis")
    dims = list(x)
    for i, axis in enumerate(axes):
        d = dims[axis]
        dims[axis] = d + pads[i] + pads[i + len(axes)] if isinstance(d, int) else None
    return [tuple(dims)]
