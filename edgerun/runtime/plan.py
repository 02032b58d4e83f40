"""From graph IR to a flat list of steps: checked once at load, run many times.

Building a plan does every lookup and check (topological order, opset resolution,
attribute names, constant folding, last use); ``Plan.run`` is then a loop over immutable
steps with a per-call dict of live tensors, which is the whole thread-safety story
(STYLE.md rule 3). Tensors are dropped right after their last use.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgerun.errors import ModelFormatError, ResourceLimitError, UnsupportedOpError
from edgerun.runtime import budget, registry
from edgerun.runtime.graph import (
    ATTR_GRAPH,
    ATTR_GRAPHS,
    ATTR_SPARSE_TENSOR,
    ATTR_STRING,
    ATTR_STRINGS,
    Attribute,
    Graph,
    Node,
    SparseTensor,
    subgraphs,
)
from edgerun.runtime.kernels.shape import constant_of_shape_view
from edgerun.runtime.passes.clip_into_depthwise import clip_into_depthwise
from edgerun.runtime.passes.fold_batchnorm import fold_batch_norm
from edgerun.runtime.passes.fuse_activation import DOMAIN as ACTIVATION_DOMAIN
from edgerun.runtime.passes.fuse_activation import fuse_activation
from edgerun.runtime.passes.fuse_softmax import fuse_softmax
from edgerun.runtime.passes.fuse_swish import fuse_swish
from edgerun.runtime.passes.inline_functions import inline_functions
from edgerun.runtime.passes.qdq_fusion import DOMAIN as QDQ_DOMAIN
from edgerun.runtime.passes.qdq_fusion import fuse_qdq
from edgerun.runtime.passes.qlinear_expand_depthwise import qlinear_expand_depthwise
from edgerun.runtime.passes.shape_inference import infer_shapes, output_shapes
from edgerun.runtime.passes.tflite_expand_depthwise import expand_depthwise
from edgerun.runtime.passes.winograd import winograd_convs

# Never folded at load: their results differ per run, or (Resize) may be far larger than
# their inputs.
NOT_FOLDED = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "Resize",
    "Upsample",
}
MAX_FOLDED_BYTES = 16 << 20
# Ops that make a tensor larger than their inputs are folded (weights that a model computes,
# masks, position ids) while all their folded results together stay under this: past it,
# they are made at run time and freed at last use, as before.
GROWING = {"ConstantOfShape", "Expand", "Tile", "Range", "EyeLike"}
MAX_GROWN_BYTES = 256 << 20

StepHook = Callable[["Step", float, tuple], None]  # (step, seconds, its results)


@dataclass(frozen=True)
class Step:
    node: Node
    kernel: registry.KernelInfo
    inputs: tuple[str, ...]  # "" where an optional input is absent
    outputs: tuple[str, ...]  # "" where an optional output is not wanted
    attributes: Mapping[str, Any]
    scope: tuple[str, ...]  # outer values the node's subgraphs read
    free_after: tuple[str, ...]  # values dead once this step has run


def densify(sparse: SparseTensor) -> np.ndarray:
    dense = np.zeros(sparse.dims, dtype=sparse.values.dtype)
    indices = np.asarray(sparse.indices, dtype=np.int64)
    if indices.ndim == 2:  # [nnz, rank] coordinates
        dense[tuple(indices.T)] = sparse.values
    else:  # [nnz] linear positions
        dense.reshape(-1)[indices] = sparse.values
    return dense


class Plan:
    """An executable graph; subgraphs of If/Loop/Scan become plans of their own."""

    def __init__(
        self,
        graph: Graph,
        opsets: Mapping[str, int],
        outer: frozenset[str] = frozenset(),
        functions: list | None = None,
    ) -> None:
        self.functions = functions or []
        self.graph = inline_functions(graph, self.functions)
        self.opsets = dict(opsets)
        fused = fuse_qdq(self.graph, self.opsets)  # QDQ groups -> integer kernels, 8-bit kept
        if fused is not self.graph:
            self.graph = fused
            self.opsets.setdefault(QDQ_DOMAIN, 1)
        # inferred once, and only if a pass asks: the passes below keep every name a later
        # pass looks up (a folded Conv's output is its BatchNormalization's, a FusedConv's
        # its activation's)
        shapes = functools.cache(functools.partial(infer_shapes, self.graph))
        self.input_names = [v.name for v in self.graph.real_inputs]
        self.output_names = [v.name for v in self.graph.outputs]
        self.constants: dict[str, np.ndarray] = dict(self.graph.initializers)
        self.constants.update({k: densify(s) for k, s in self.graph.sparse_initializers.items()})
        available = set(self.constants) | set(self.input_names) | set(outer)
        ordered = _topological(self.graph.nodes, available)
        visible = available | _all_outputs(ordered)  # once: per node it was quadratic
        steps = [self._step(node, visible) for node in ordered]
        steps = self._fold(steps)
        steps = fold_batch_norm(steps, self.constants, set(self.output_names))
        steps = self._fused_activations(steps, shapes, visible)
        steps = clip_into_depthwise(steps, self.constants, set(self.output_names))
        steps = qlinear_expand_depthwise(steps, self.constants, set(self.output_names))
        steps = expand_depthwise(steps, self.constants, set(self.output_names))
        steps = winograd_convs(steps, self.constants, set(self.output_names), shapes)
        steps = fuse_swish(steps, set(self.output_names))
        steps = fuse_softmax(steps, self.constants, set(self.output_names))
        self.free_names = sorted(_free_names(self.graph))  # outer values it reads
        read = {n for s in steps for n in (*s.inputs, *s.scope)} | set(self.output_names)
        _aligned(self.constants, read)
        self.steps = _with_last_use(steps, set(self.output_names), set(self.constants))

    # -- building -------------------------------------------------------------------------
    def _step(self, node: Node, visible: set[str]) -> Step:
        domain = "" if node.domain == "ai.onnx" else node.domain
        where = f"node {node.name!r} ({node.op_type})" if node.name else f"a {node.op_type} node"
        if domain not in self.opsets:
            raise ModelFormatError(
                f"{where} uses domain {domain!r}, which the model does not import"
            )
        opset = self.opsets[domain]
        info = registry.resolve(domain, node.op_type, opset)
        if info is None:
            raise UnsupportedOpError(
                f"unsupported operator {domain or 'ai.onnx'}::{node.op_type} at opset {opset} "
                f"({where}); the numpy runtime does not implement it"
            )
        attrs = {name: self._attribute(a, visible) for name, a in node.attributes.items()}
        unknown = set(attrs) - info.attributes
        if unknown and not info.variadic_attributes:
            raise UnsupportedOpError(
                f"{where}: attribute(s) {', '.join(sorted(unknown))} of "
                f"{node.op_type}-{info.since} are not supported"
            )
        scope = sorted(
            {name for a in attrs.values() for p in _plans_in(a) for name in p.free_names}
        )
        return Step(node, info, tuple(node.inputs), tuple(node.outputs), attrs, tuple(scope), ())

    def _fused_activations(
        self, steps: list[Step], shapes: Callable[[], Mapping], visible: set[str]
    ) -> list[Step]:
        """``steps`` with Conv -> Relu/Clip (and Conv -> Add -> Relu/Clip) as FusedConv.
        After BatchNormalization folding, so that Conv -> BatchNormalization -> Relu, as
        models that keep their BatchNormalization nodes have it, fuses too."""
        graph = replace(self.graph, nodes=[s.node for s in steps], initializers=self.constants)
        fused = fuse_activation(graph, shapes)
        if fused is graph:
            return steps
        self.opsets.setdefault(ACTIVATION_DOMAIN, 1)
        kept = {id(s.node): s for s in steps}
        return [kept.get(id(n)) or self._step(n, visible) for n in fused.nodes]

    def _attribute(self, a: Attribute, visible: set[str]) -> Any:
        if a.type == ATTR_STRING:
            return a.value.decode("utf-8", "replace")
        if a.type == ATTR_STRINGS:
            return [s.decode("utf-8", "replace") for s in a.value]
        if a.type == ATTR_GRAPH:
            return Plan(a.value, self.opsets, frozenset(visible), self.functions)
        if a.type == ATTR_GRAPHS:
            return [Plan(g, self.opsets, frozenset(visible), self.functions) for g in a.value]
        if a.type == ATTR_SPARSE_TENSOR:
            return densify(a.value)
        return a.value

    def _fold(self, steps: list[Step]) -> list[Step]:
        """Run, at load, every step whose inputs are all constants."""
        kept = []
        grown = 0
        for step in steps:
            foldable = (
                step.node.op_type not in NOT_FOLDED
                and not step.scope
                and not any(_plans_in(v) for v in step.attributes.values())
                and all(not n or n in self.constants for n in step.inputs)
            )
            if not foldable:
                kept.append(step)
                continue
            results = _fold_within_cap(step, self.constants)
            nbytes = sum(getattr(r, "nbytes", 0) for r in results or ())
            growing = step.node.op_type in GROWING
            if (
                results is None
                or nbytes > MAX_FOLDED_BYTES
                or (growing and grown + nbytes > MAX_GROWN_BYTES)
            ):
                kept.append(step)
                continue
            grown += nbytes if growing else 0
            for name, value in zip(step.outputs, results, strict=False):
                if name:
                    self.constants[name] = value
        return kept

    # -- running --------------------------------------------------------------------------
    def run(
        self,
        feeds: Mapping[str, np.ndarray],
        scope: Mapping[str, Any] | None = None,
        hook: StepHook | None = None,
    ) -> list[Any]:
        env: dict[str, Any] = dict(self.constants)
        if scope:
            env.update(scope)
        env.update(feeds)
        for step in self.steps:
            results = self._execute(step, env) if hook is None else _timed(self, step, env, hook)
            for name, value in zip(step.outputs, results, strict=False):
                if name:
                    env[name] = value
            for name in step.free_after:
                env.pop(name, None)
        return [env[name] for name in self.output_names]

    def call(self, args: list[Any], scope: Mapping[str, Any] | None = None) -> list[Any]:
        """Run as a subgraph: positional inputs, outer values in ``scope``."""
        names = [v.name for v in self.graph.inputs]
        return self.run(dict(zip(names, args, strict=False)), scope)

    @staticmethod
    def _execute(step: Step, env: Mapping[str, Any]) -> tuple:
        args = [env[n] if n else None for n in step.inputs]
        kwargs = dict(step.attributes)
        if step.kernel.needs_scope:
            kwargs["scope"] = {n: env[n] for n in step.scope if n in env}
        if step.kernel.needs_outputs:
            kwargs["outputs"] = tuple(bool(n) for n in step.outputs)
        try:
            result = step.kernel.fn(*args, **kwargs)
        except (ValueError, IndexError, TypeError) as exc:
            name = step.node.name or step.node.op_type
            raise ModelFormatError(f"node {name!r} ({step.node.op_type}) failed: {exc}") from exc
        except MemoryError as exc:  # under the budget, yet the OS refused it
            name = step.node.name or step.node.op_type
            raise ResourceLimitError(
                f"node {name!r} ({step.node.op_type}): out of memory, the allocation was refused"
            ) from exc
        if isinstance(result, tuple | list) and step.node.op_type not in _RETURNS_LIST:
            return tuple(_as_array(r) for r in result)
        return (_as_array(result),)


def _fold_within_cap(step: Step, constants: Mapping[str, Any]) -> tuple | None:
    """A step's results if folding them stays under the cap; None: leave it to run time."""
    args = [constants[n] if n else None for n in step.inputs]
    predicted = output_shapes(step.node, [a if isinstance(a, np.ndarray) else None for a in args])
    if step.node.op_type == "ConstantOfShape":  # its input is a shape; its value sets the type
        value = step.attributes.get("value")
        itemsize = value.dtype.itemsize if isinstance(value, np.ndarray) else 4
    else:
        itemsize = max((a.dtype.itemsize for a in args if isinstance(a, np.ndarray)), default=8)
    for shape in predicted:
        if shape is None or not all(isinstance(d, int) for d in shape):
            continue
        nbytes = math.prod(shape) * itemsize  # type: ignore[arg-type]
        if nbytes > budget.limit():  # constant inputs: it would fail at every run
            name = step.node.name or step.node.op_type
            what = f"node {name!r} ({step.node.op_type}): its result of shape {list(shape)}"
            budget.check_bytes(nbytes, what)
        if nbytes > MAX_FOLDED_BYTES:
            return None
    as_view = _FOLDED_AS_VIEWS.get(step.node.op_type)
    if as_view is not None and step.node.domain in ("", "ai.onnx"):
        step = replace(step, kernel=replace(step.kernel, fn=as_view))
    try:
        with budget.limited(MAX_FOLDED_BYTES):
            return Plan._execute(step, constants)
    except ModelFormatError as exc:
        if isinstance(exc.__cause__, ResourceLimitError):
            return None
        raise


# ops folded at load into a read-only view that takes no memory until a step reads it
_FOLDED_AS_VIEWS = {"ConstantOfShape": constant_of_shape_view}

_RETURNS_LIST = {
    "SequenceConstruct",
    "SplitToSequence",
    "SequenceInsert",
    "SequenceErase",
    "SequenceEmpty",
}


def _as_array(value: Any) -> Any:
    if value is None or isinstance(value, np.ndarray | list):
        return value
    return np.asarray(value)


def _timed(plan: Plan, step: Step, env: Mapping[str, Any], hook: StepHook) -> tuple:
    from time import perf_counter

    start = perf_counter()
    results = plan._execute(step, env)
    hook(step, perf_counter() - start, results)
    return results


def _plans_in(value: Any) -> list[Plan]:
    if isinstance(value, Plan):
        return [value]
    if isinstance(value, list) and value and isinstance(value[0], Plan):
        return value
    return []


def _all_outputs(nodes: list[Node]) -> set[str]:
    return {o for n in nodes for o in n.outputs if o}


def _topological(nodes: list[Node], available: set[str]) -> list[Node]:
    """Nodes in an order where every input exists before use (Kahn's algorithm)."""
    producer = {o: i for i, n in enumerate(nodes) for o in n.outputs if o}
    for node in nodes:
        for name in _node_reads(node):
            if name not in available and name not in producer:
                raise ModelFormatError(
                    f"input {name!r} of node {node.name or node.op_type!r} is not a graph input, "
                    "an initializer, or any node's output"
                )
    waiting = [sum(1 for n in _node_reads(node) if n in producer) for node in nodes]
    users: dict[int, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in _node_reads(node):
            if name in producer:
                users.setdefault(producer[name], []).append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]  # a heap: keeps file order where free
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for user in users.get(i, []):
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    if len(order) != len(nodes):
        stuck = next(nodes[i] for i, w in enumerate(waiting) if w > 0)
        raise ModelFormatError(
            f"the graph has a cycle through node {stuck.name or stuck.op_type!r}"
        )
    return [nodes[i] for i in order]


def _node_reads(node: Node) -> list[str]:
    """Names a node reads: its inputs, plus outer values its subgraphs use."""
    names = [n for n in node.inputs if n]
    for sub in subgraphs(node):
        names.extend(_free_names(sub))
    return names


def _free_names(graph: Graph) -> set[str]:
    """Values ``graph`` (or its subgraphs) reads but does not define itself."""
    defined = (
        {v.name for v in graph.inputs} | set(graph.initializers) | set(graph.sparse_initializers)
    )
    defined |= {o for n in graph.nodes for o in n.outputs}
    read: set[str] = set()
    for node in graph.nodes:
        read.update(n for n in node.inputs if n)
        for sub in subgraphs(node):
            read |= _free_names(sub)
    read |= {v.name for v in graph.outputs}
    return read - defined


def _aligned(constants: dict[str, Any], used: set[str]) -> None:
    """Replace the misaligned arrays among the ``used`` constants by aligned read-only
    copies, all in one block: numpy runs misaligned arrays through its slower unaligned
    loops (an elementwise multiply 2x slower here), and protobuf puts raw_data at any
    offset. Broadcast views (folded ConstantOfShape) are laid out there too: BLAS takes no
    zero strides. One block: where the system has transparent huge pages, numpy asks for
    them on large arrays, and 90 MB then faulted in 6x faster than 4 KB pages (MiniLM's
    weights); the copies live as long as the plan's constants anyway."""
    names = sorted(
        n
        for n in used
        if isinstance(constants.get(n), np.ndarray)
        and (not constants[n].flags.aligned or _broadcast(constants[n]))
        and constants[n].dtype != object
    )
    if not names:
        return
    offsets = np.cumsum([0] + [-(-constants[n].nbytes // _ALIGN) * _ALIGN for n in names])
    block = np.empty(int(offsets[-1]), np.uint8)
    for name, start in zip(names, offsets.tolist(), strict=False):
        array = constants[name]
        # in the array's own axis order (a folded Transpose of a weight stays transposed)
        order = sorted(range(array.ndim), key=lambda axis: -abs(array.strides[axis]))
        stored = block[start : start + array.nbytes].view(array.dtype)
        copy = stored.reshape([array.shape[a] for a in order]).transpose(np.argsort(order))
        copy[...] = array
        copy.flags.writeable = False  # as the mapped constants are
        constants[name] = copy


_ALIGN = 64  # bytes between the copies in _aligned's block: every dtype's alignment


def _broadcast(array: np.ndarray) -> bool:
    """Whether some elements of ``array`` share memory (a zero stride on a longer axis)."""
    return any(s == 0 and d > 1 for s, d in zip(array.strides, array.shape, strict=True))


def _with_last_use(steps: list[Step], keep: set[str], constants: set[str]) -> list[Step]:
    """Give each step the list of values that die after it (never outputs or constants)."""
    last: dict[str, int] = {}
    for i, step in enumerate(steps):
        for name in (*step.inputs, *step.scope, *step.outputs):
            if name:
                last[name] = i
    dying: dict[int, list[str]] = {}
    for name, i in last.items():
        if name not in keep and name not in constants:
            dying.setdefault(i, []).append(name)
    return [
        Step(s.node, s.kernel, s.inputs, s.outputs, s.attributes, s.scope, tuple(dying.get(i, ())))
        for i, s in enumerate(steps)
    ]
