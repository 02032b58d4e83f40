"""``edgerun estimate``: how fast a model would run on a board, from the board's data sheet.

A roofline per step of the numpy runtime's plan (the graph the runtime executes, after
constant folding and QDQ fusion): an op takes the longer of its FLOPs over the profile's
peak (``perf.peak_gflops_fp32``, or ``perf.peak_gops_int8`` for an integer op) and the bytes
it moves (its inputs, weights included, and its outputs, each once) over the memory
bandwidth (``perf.memory_bandwidth_gbs``); the model takes the sum. FLOPs are 2 x the MACs
that ``edgerun inspect`` counts (Conv, ConvTranspose, Gemm, MatMul and their integer
forms), at batch 1 with symbolic dimensions taken as 1; a 3x3 Conv that the plan runs as
Winograd's F(2x2, 3x3) or F(4x4, 3x3) (``WinogradConv``) counts the multiplies it makes (16
per 2x2 block of outputs, 4/9 of a direct Conv's; 36 per 4x4 block and its transform
products) and its transforms' numpy passes (``WINOGRAD_PASSES``); a convolution fused with
the depthwise one it feeds (``ExpandDepthwiseConv``) counts both products, each at its rate.
Every other op is memory-bound by construction, but for the elementwise passes below. A
Gather reads only the rows it gathers. To that ideal the numpy runtime's own extra passes
are added where they are large (``SCRATCH``: a Conv's im2col columns, written and read
back; a channel-multiplier depthwise Conv's per-tap partial sums), at the same bandwidth.

A depthwise float Conv (group == input channels == output channels) does not go through
BLAS: the runtime sums its taps in one ``np.einsum`` over a strided view of the input, whose
multiply-adds run far below the BLAS peak yet are not memory-bound. Its FLOPs are priced at
the profile's ``perf.depthwise_gflops_fp32`` instead of the peak (``depthwise_gflops()``):
measured by calibration, or, for a data-sheet profile without it, derived from bandwidth as
if every multiply-add streamed its input element and its weight (``DEPTHWISE_MAC_BYTES``)
from main memory, capped at the peak.

BLAS runs small products below its peak (packing and loop overhead, and fewer threads to
split them over), so a float op's FLOPs are priced at ``blas_gflops()``: the rate of one
BLAS call of its size (FLOPs over ``_blas_calls()``: a batched MatMul makes one call per
matrix, an im2col Conv one per image and group), interpolated in log(FLOPs) between
calibrated square matmuls (``perf.matmul64_gflops_fp32``, ``perf.matmul256_gflops_fp32``)
and the peak at ``MATMUL_N``. A data-sheet profile without them prices every product at the
peak.

Elementwise and normalisation ops (``PASSES``) make several whole-array numpy calls each
(Gelu 22, LayerNormalization 7), over arrays that mostly stay in cache: their compute time is
that many passes over their largest tensor at ``perf.elementwise_gelems`` elements per
second (``elementwise_gelems()``), against their bytes at main-memory bandwidth as for any
op. Without the measured rate, a pass streams ``ELEMENTWISE_BYTES`` per element from main
memory. Not modelled: per-op interpreter overhead, caches for the other ops (their bytes
are priced at main-memory bandwidth), the depthwise kernel's zero-padded input copy, and
the differing costs of a pass (an exp or a row reduction counts as one add). The peaks are
the best of their calibration runs; the elementwise rate is their median (the best
sometimes read twice the usual rate).

``calibrate()`` measures this machine's own peak (a float32 BLAS matmul of ``MATMUL_N``),
small-product rates (``SMALL_MATMULS``), bandwidth (a large array copy), elementwise pass
rate (np.add on ``ELEMENTWISE_ELEMENTS``-element blocks) and depthwise rate (the runtime's
own FusedConv kernel on a MobileNet-style layer, ``DEPTHWISE_LAYER``) into a profile, so the
estimate can be checked against ``edgerun profile`` here (``--device this``);
``write_profile()`` saves it as a device profile TOML that ``--device PATH`` reads back.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import psutil

import edgerun
from edgerun.errors import InputError
from edgerun.inspection import INTEGER_OPS, batch_one_shapes, node_macs
from edgerun.profiles import DeviceProfile, Perf, load_profile, profile_from_dict
from edgerun.runtime import dtypes
from edgerun.runtime.allocator import keep_freed_memory
from edgerun.runtime.graph import Node
from edgerun.runtime.kernels.conv import conv_geometry
from edgerun.runtime.passes.shape_inference import ALIASES
from edgerun.runtime.plan import Plan

THIS_MACHINE = "this"  # --device this: calibrate here first
MATMUL_N = 1024  # 2 GFLOP per product; big enough for BLAS's blocked kernels
COPY_BYTES = 128 << 20  # far past any last-level cache
CALIBRATION_REPEATS = 7  # the best of these is the peak
# channels, height, width of a 3x3, pad 1, stride 1 depthwise layer (with bias and ReLU6):
# MobileNetV2's 28x28 stage, whose rate is near the model's average over its layers
DEPTHWISE_LAYER = (192, 28, 28)
DEPTHWISE_CALLS = 20  # per timed repeat: one call is ~0.5 ms at 3 GMAC/s
DEPTHWISE_MAC_BYTES = 8  # float32 input element + weight: the default rate's bytes per MAC
# the smaller square float32 matmuls calibrated besides MATMUL_N (the peak): BLAS runs small
# products below its peak (packing, loop overhead) and splits them over fewer threads
SMALL_MATMULS = (64, 256)
SMALL_MATMUL_FLOPS = 2 << 24  # per timed repeat of a small matmul: ~0.1-1 ms of calls
# one elementwise pass: np.add of two float32 blocks into a third, 3 x 256 KiB, all in L2
ELEMENTWISE_ELEMENTS = 1 << 16
ELEMENTWISE_CALLS = 50  # per timed repeat: ~10 us each
ELEMENTWISE_BYTES = 12  # the default pass rate's bytes per element: two float32 read, one written
# ops whose outputs are int64 indices or shapes, and comparisons (bool)
INT64_OUT = {"Shape", "Size", "NonZero", "ArgMax", "ArgMin", "TopK"}
BOOL_OUT = {"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or",
            "Xor", "IsNaN", "IsInf"}  # fmt: skip


@dataclass(frozen=True)
class OpEstimate:
    index: int
    name: str
    op_type: str
    flops: int
    bytes: int  # inputs (weights included) and outputs, each once
    integer: bool  # timed against the int8 peak
    compute_ms: float
    memory_ms: float
    scratch_bytes: int  # the numpy kernel's own passes over temporaries (see SCRATCH)
    scratch_ms: float
    ms: float  # the larger of compute and memory, plus scratch
    bound: str  # "compute" | "memory"
    shapes_known: bool  # False: some shape could not be inferred; counted as 0


@dataclass(frozen=True)
class OpTypeEstimate:
    op_type: str
    nodes: int
    flops: int
    bytes: int
    ms: float
    share: float


@dataclass
class Estimate:
    model: str
    device: str
    peak_gflops_fp32: float
    peak_gops_int8: float
    memory_bandwidth_gbs: float
    depthwise_gflops: float  # the rate depthwise Convs are priced at (depthwise_gflops())
    matmul_gflops: dict[str, float]  # BLAS rate by the side of a square product (blas_rates())
    elementwise_gelems: float  # G elements/s of one numpy pass (elementwise_gelems())
    total_ms: float
    flops: int
    bytes_moved: int
    weight_bytes: int  # constants the plan's steps read (initializers, folded values)
    peak_activation_bytes: int  # the largest set of live activations between steps
    ops: list[OpEstimate]
    op_types: list[OpTypeEstimate]
    unknown: list[str]  # ops whose shapes could not be inferred

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def estimate(path: str | os.PathLike[str], device: str | DeviceProfile) -> Estimate:
    """The roofline estimate of the model at ``path`` on ``device`` (a name, a TOML path,
    ``"this"`` to calibrate this machine first, or a profile)."""
    profile = device if isinstance(device, DeviceProfile) else resolve_device(device)
    session = edgerun.load(path, backend="numpy")
    plan = session.plan
    if plan is None:  # backend="numpy" always plans
        raise InputError(f"{path}: the numpy runtime did not plan this model")
    shapes = batch_one_shapes(plan.graph)
    # constants the plan made at load (a Conv's weights with a BatchNormalization folded in)
    shapes.update({k: v.shape for k, v in plan.constants.items() if isinstance(v, np.ndarray)})
    sizes = _itemsizes(plan, shapes)
    nbytes = {name: _bytes(shapes.get(name), sizes.get(name, 4)) for name in shapes}
    nbytes.update({k: int(getattr(v, "nbytes", 0)) for k, v in plan.constants.items()})
    perf = profile.perf
    ops = [_op(i, step.node, shapes, sizes, nbytes, perf) for i, step in enumerate(plan.steps)]
    total = sum(op.ms for op in ops)
    read = {n for step in plan.steps for n in step.inputs if n in plan.constants}
    return Estimate(
        model=str(path),
        device=profile.name,
        peak_gflops_fp32=perf.peak_gflops_fp32,
        peak_gops_int8=perf.peak_gops_int8,
        memory_bandwidth_gbs=perf.memory_bandwidth_gbs,
        depthwise_gflops=depthwise_gflops(perf),
        matmul_gflops={str(n): rate for n, rate in blas_rates(perf)},
        elementwise_gelems=elementwise_gelems(perf),
        total_ms=total,
        flops=sum(op.flops for op in ops),
        bytes_moved=sum(op.bytes for op in ops),
        weight_bytes=sum(nbytes[n] or 0 for n in read),
        peak_activation_bytes=_peak_live(plan, nbytes),
        ops=ops,
        op_types=_group(ops, total),
        unknown=[op.name for op in ops if not op.shapes_known],
    )


def resolve_device(device: str) -> DeviceProfile:
    return calibrate() if device == THIS_MACHINE else load_profile(device)


def depthwise_gflops(perf: Perf) -> float:
    """The FLOP/s of the numpy runtime's depthwise Conv on this profile: measured where the
    profile has it, else bandwidth over the bytes of one multiply-add's operands (2 FLOPs
    per DEPTHWISE_MAC_BYTES), never above the BLAS peak."""
    if perf.depthwise_gflops_fp32 is not None:
        return perf.depthwise_gflops_fp32
    return min(perf.peak_gflops_fp32, 2 * perf.memory_bandwidth_gbs / DEPTHWISE_MAC_BYTES)


def blas_rates(perf: Perf) -> list[tuple[int, float]]:
    """(side n, FLOP/s) of n x n x n float32 matmuls on this profile, smallest first: the
    calibrated SMALL_MATMULS where the profile has them, and the peak at MATMUL_N. A
    data-sheet profile has only the peak, so every product runs at it."""
    measured = {64: perf.matmul64_gflops_fp32, 256: perf.matmul256_gflops_fp32}
    points = [(n, rate) for n, rate in measured.items() if rate is not None]
    return [*points, (MATMUL_N, perf.peak_gflops_fp32)]


def blas_gflops(perf: Perf, call_flops: float) -> float:
    """The FLOP/s of one BLAS product of ``call_flops``: linear in log(FLOPs) between the
    calibrated squares (2 n^3 FLOPs each), held at the nearest one outside them."""
    points = blas_rates(perf)
    sizes = [math.log(2 * n**3) for n, _ in points]
    return float(np.interp(math.log(max(call_flops, 1.0)), sizes, [r for _, r in points]))


def elementwise_gelems(perf: Perf) -> float:
    """G elements per second of one numpy pass over cache-resident float32 arrays: measured
    where the profile has it, else as if every pass streamed ELEMENTWISE_BYTES per element
    from main memory."""
    if perf.elementwise_gelems is not None:
        return perf.elementwise_gelems
    return perf.memory_bandwidth_gbs / ELEMENTWISE_BYTES


def _op(
    index: int,
    node: Node,
    shapes: Mapping[str, Any],
    sizes: Mapping[str, int],
    nbytes: Mapping[str, int | None],
    perf: Perf,
) -> OpEstimate:
    winograd = _winograd(node, shapes) if (node.domain, node.op_type) == WINOGRAD else None
    fused = (node.domain, node.op_type) in (
        EXPAND_DEPTHWISE,
        TFLITE_EXPAND_DEPTHWISE,
        QLINEAR_EXPAND_DEPTHWISE,
    )
    parts = _expand_depthwise(node, shapes) if fused else None
    macs = node_macs(node, shapes) if winograd is None else winograd[0]
    if fused:
        macs = None if parts is None else sum(parts)
    names = [n for n in (*node.inputs, *node.outputs) if n]
    moved = [nbytes.get(n) for n in names]
    if node.op_type in GATHERS and len(moved) > 1:  # reads only the rows it gathers
        moved[0] = nbytes.get(node.outputs[0])
    known = macs is not None and all(b is not None for b in moved)
    integer = (node.domain or "", node.op_type) in INTEGER_OPS or (
        bool(macs) and sizes.get(node.inputs[0], 4) == 1
    )
    flops = 2 * (macs or 0)
    size = sum(b or 0 for b in moved)
    kind = ALIASES.get((node.domain, node.op_type), "" if node.domain else node.op_type)
    if integer:
        rate = perf.peak_gops_int8
    elif known and (
        (kind == "Conv" and _depthwise(node, shapes))
        or (node.domain, node.op_type) == TFLITE_DEPTHWISE  # the same einsum kernel
    ):
        rate = depthwise_gflops(perf)
    elif winograd is not None:  # 16 or 36 products per block of tiles
        rate = blas_gflops(perf, flops / shapes[node.inputs[1]][0])
    elif known and flops:
        rate = blas_gflops(perf, flops / _blas_calls(node, kind, shapes))
    else:
        rate = perf.peak_gflops_fp32
    compute_ms = flops / (rate * 1e6)
    if parts is not None and not integer:  # the first product at the BLAS rate, the
        # depthwise one at its own
        first, depthwise = (2 * n for n in parts)
        compute_ms = first / (blas_gflops(perf, first) * 1e6)
        compute_ms += depthwise / (depthwise_gflops(perf) * 1e6)
    if known and kind in PASSES:  # numpy's passes, not FLOPs, are what these ops cost
        elements = max(_elements(shapes.get(n)) for n in names)
        compute_ms = PASSES[kind] * elements / (elementwise_gelems(perf) * 1e6)
    if winograd is not None:  # the products, then the transforms' passes
        compute_ms += winograd[1] / (elementwise_gelems(perf) * 1e6)
    if known and (node.domain, node.op_type) == MATMUL_SOFTMAX:  # the product, then its passes
        elements = _elements(shapes.get(node.outputs[0]))
        compute_ms += MATMUL_SOFTMAX_PASSES * elements / (elementwise_gelems(perf) * 1e6)
    bandwidth_gbs = perf.memory_bandwidth_gbs
    memory_ms = size / (bandwidth_gbs * 1e6)
    scratch = SCRATCH[kind](node, shapes, sizes) if known and kind in SCRATCH else 0
    scratch_ms = scratch / (bandwidth_gbs * 1e6)
    return OpEstimate(
        index=index,
        name=node.name or f"{node.op_type}_{index}",
        op_type=node.op_type,
        flops=flops,
        bytes=size,
        integer=integer,
        compute_ms=compute_ms,
        memory_ms=memory_ms,
        scratch_bytes=scratch,
        scratch_ms=scratch_ms,
        ms=max(compute_ms, memory_ms) + scratch_ms,
        bound="compute" if compute_ms > memory_ms else "memory",
        shapes_known=known,
    )


def _blas_calls(node: Node, kind: str, shapes: Mapping[str, Any]) -> int:
    """How many BLAS products the numpy kernel splits the op into: numpy's matmul makes one
    per matrix of a batched MatMul (the output's leading dimensions); an im2col Conv one per
    image and group (conv.py's _im2col_matmul); anything else one."""
    if kind == "MatMul":
        return max(1, math.prod(shapes[node.outputs[0]][:-2]))
    if kind in ("Conv", "ConvTranspose"):
        return max(1, shapes[node.inputs[0]][0] * int(node.attr("group", 1)))
    return 1


# edgerun's own op for a 3x3 stride-1 Conv (runtime/passes/winograd.py). F(2x2, 3x3), a
# filter of 16 matrices: 16 (C, K) products per 2x2 block of outputs, and its transforms
# (kernels/winograd.py) are numpy passes: about 8 input-sized arrays written on the way in
# (the zeroed parity copy, the input into it, row then column transforms of 2 and 4 inputs'
# size) and 7 output-sized ones on the way out (column then row transforms of 4 and 2
# outputs' size, the placing). F(4x4, 3x3), a filter of 36: 36 products per 4x4 block, its
# transforms two more BLAS products (36 x 36 and 16 x 36 over the tiles) and its passes the
# padded input copy, the gathered tiles (36 values a block and channel) and the placing.
WINOGRAD = ("com.microsoft", "WinogradConv")
WINOGRAD_PASSES = (8, 7)  # F(2x2): per input element, per output element


def _winograd(node: Node, shapes: Mapping[str, Any]) -> tuple[int, int] | None:
    """(multiply-adds, elements of numpy passes) of a WinogradConv, or None where a shape is
    unknown."""
    x, u, y = (shapes.get(n) for n in (node.inputs[0], node.inputs[1], node.outputs[0]))
    if x is None or u is None or y is None or len(y) != 4:
        return None
    if not all(isinstance(d, int) for s in (x, u, y) for d in s):
        return None
    c, k = u[1], u[2]
    if u[0] == 36:  # F(4x4, 3x3)
        tiles = y[0] * -(-y[2] // 4) * -(-y[3] // 4)
        macs = 36 * tiles * c * k + 36 * 36 * tiles * c + 16 * 36 * tiles * k
        return macs, math.prod(x) + 36 * tiles * c + math.prod(y)
    tiles = y[0] * -(-y[2] // 2) * -(-y[3] // 2)
    passes = WINOGRAD_PASSES[0] * math.prod(x) + WINOGRAD_PASSES[1] * math.prod(y)
    return 16 * tiles * c * k, passes


# edgerun's own op for attention's scores (runtime/passes/fuse_softmax.py): the MatMul, one
# BLAS product per matrix, then numpy passes over the scores (kernels/attention.py): the
# scale, the mask, the max, its subtraction, exp and the division (the sum is a product)
MATMUL_SOFTMAX = ("com.microsoft", "MatMulSoftmax")
MATMUL_SOFTMAX_PASSES = 6


# edgerun's own ops for a convolution feeding a depthwise one (runtime/passes/
# clip_into_depthwise.py, and tflite_expand_depthwise.py for TFLite's 1x1 expansions):
# the first product at the BLAS rate, the depthwise one at the depthwise rate; the tensor
# between them is never stored apart
EXPAND_DEPTHWISE = ("com.microsoft", "ExpandDepthwiseConv")
TFLITE_EXPAND_DEPTHWISE = ("tflite", "EXPAND_DEPTHWISE_CONV_2D")
# and the int8 pair (runtime/passes/qlinear_expand_depthwise.py): both products at the int8
# rate, as QLinearConv's are priced
QLINEAR_EXPAND_DEPTHWISE = ("com.microsoft", "QLinearExpandDepthwiseConv")
TFLITE_DEPTHWISE = ("tflite", "DEPTHWISE_CONV_2D")


def _expand_depthwise(node: Node, shapes: Mapping[str, Any]) -> tuple[int, int] | None:
    """(multiply-adds of the first convolution, of the depthwise one) of an
    ExpandDepthwiseConv, an EXPAND_DEPTHWISE_CONV_2D or a QLinearExpandDepthwiseConv, or
    None where a shape is unknown."""
    integer = (node.domain, node.op_type) == QLINEAR_EXPAND_DEPTHWISE
    operands = (0, 3, 9) if integer else (0, 1, 3)  # x, the 1x1 weights, the depthwise ones
    known = [shapes.get(node.inputs[k]) for k in operands] + [shapes.get(node.outputs[0])]
    if any(s is None or not all(isinstance(d, int) for d in s) for s in known):
        return None
    x, w, wd, y = (tuple(s) for s in known if s is not None)
    if (node.domain, node.op_type) == TFLITE_EXPAND_DEPTHWISE:  # NHWC, a 1x1 OHWI filter
        return math.prod(x[:-1]) * w[0] * w[-1], math.prod(y) * wd[1] * wd[2]
    if integer:  # NCHW, a 1x1 filter
        return math.prod(x[2:]) * x[0] * w[0] * w[1], math.prod(y) * math.prod(wd[1:])
    first = conv_geometry(
        x, w, "NOTSET", None, node.attr("expand_kernel_shape"), node.attr("expand_pads"),
        node.attr("expand_strides"),
    )  # fmt: skip
    return math.prod(first[-1]) * w[0] * math.prod(w[1:]), math.prod(y) * math.prod(wd[1:])


def _elements(shape: Any) -> int:
    return math.prod(shape) if shape is not None else 0


def _depthwise(node: Node, shapes: Mapping[str, Any]) -> bool:
    """The runtime's einsum depthwise kernel runs it: one input channel per group, one
    output channel per input channel, no negative (cropping) pads."""
    x, w = shapes[node.inputs[0]], shapes[node.inputs[1]]
    group = int(node.attr("group", 1))
    return group > 1 and group == x[1] == w[0] and min(node.attr("pads", ()), default=0) >= 0


def _conv_scratch(node: Node, shapes: Mapping[str, Any], sizes: Mapping[str, int]) -> int:
    """The numpy runtime's Conv beyond its inputs and outputs: a pointwise one is one matmul
    and a depthwise one one einsum over its input in place (none; see _depthwise); one with a
    channel multiplier copies its input padded, then per tap multiplies into a temporary and
    adds that into the output (5 output-sized transfers); any other writes im2col columns
    and reads them back, after a padded copy of its input where it pads."""
    x, w = shapes[node.inputs[0]], shapes[node.inputs[1]]
    out = shapes[node.outputs[0]]
    item = sizes.get(node.inputs[0], 4)
    taps = math.prod(w[2:])
    group = int(node.attr("group", 1))
    auto_pad = node.attr("auto_pad", b"NOTSET")
    pads = any(node.attr("pads", ())) or auto_pad in (b"SAME_UPPER", b"SAME_LOWER")
    strided = any(s != 1 for s in node.attr("strides", ()))
    if (group == 1 and taps == 1 and not pads and not strided) or _depthwise(node, shapes):
        return 0
    padded = 2 * math.prod(x) if pads else 0
    if group > 1 and group == x[1] and w[1] == 1:
        return (padded + 5 * taps * math.prod(out)) * item
    columns = x[0] * x[1] * taps * math.prod(out[2:])
    return (2 * columns + padded) * item


Scratch = Callable[[Node, Mapping[str, Any], Mapping[str, int]], int]
SCRATCH: dict[str, Scratch] = {"Conv": _conv_scratch}
# Whole-array numpy calls the runtime's kernel makes per element of the op's largest tensor,
# each priced as one elementwise pass (elementwise_gelems()); read from the kernels in
# edgerun/runtime/kernels/. Reductions, exp and reciprocal count as one pass like an add.
PASSES: dict[str, int] = {
    # elementwise.py add_7/sub_7/mul_7/div_7: one ufunc (Div's astype is copy=False)
    "Add": 1, "Sub": 1, "Mul": 1, "Div": 1,
    # activation.py relu_1: one np.clip; elementwise.py's Clip likewise
    "Relu": 1, "Clip": 1,
    # activation.py _gelu32: abs, scale, minimum, t = 1 / (1 + p z) (3), exp(-z*z) * z (4),
    # Horner over 5 coefficients (8), two products and max(x, 0) - tail (4), on L2 blocks
    "Gelu": 22,
    # activation.py _sigmoid: negate, exp, add 1, divide (or scale, tanh, scale, add), and
    # Swish (fuse_swish's Sigmoid -> Mul) the same with x for the numerator
    "Sigmoid": 4, "Swish": 4,
    # activation.py _softmax: max, subtract, exp, sum, divide
    "Softmax": 5,
    # norm.py _standardize (row sums by BLAS, subtract, sums of squares, scale by 1/std)
    # then *= Scale, += B
    "LayerNormalization": 6,
}  # fmt: skip
GATHERS = {"Gather", "GatherElements", "GatherND"}


def _bytes(shape: Any, itemsize: int) -> int | None:
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    return math.prod(shape) * itemsize


def _itemsizes(plan: Plan, shapes: Mapping[str, Any]) -> dict[str, int]:
    """Bytes per element of every value: declared types, constants, then forward through
    the ops (an op's output is its first input's type unless the op says otherwise)."""
    graph = plan.graph
    sizes: dict[str, int] = {}
    for v in (*graph.inputs, *graph.value_info, *graph.outputs):
        if v.type is not None and v.type.kind == "tensor" and v.type.elem_type:
            sizes[v.name] = dtypes.element_type(v.type.elem_type).storage.itemsize
    sizes.update({k: int(getattr(v, "itemsize", 4)) for k, v in plan.constants.items()})
    for node in graph.nodes:
        first = next((sizes[n] for n in node.inputs if n in sizes), 4)
        out = _output_itemsize(node, first, sizes)
        for name in node.outputs:
            sizes.setdefault(name, out)
    return sizes


def _output_itemsize(node: Node, first: int, sizes: Mapping[str, int]) -> int:
    if node.op_type in INT64_OUT:
        return 8
    if node.op_type in BOOL_OUT:
        return 1
    if node.op_type == "Cast":
        return dtypes.element_type(int(node.attr("to", 1))).storage.itemsize
    if node.op_type in ("DequantizeLinear", "DynamicQuantizeLinear"):
        return 4 if node.op_type == "DequantizeLinear" else 1
    if node.op_type == "QuantizeLinear":
        zero_point = node.inputs[2] if len(node.inputs) > 2 else ""
        return sizes.get(zero_point, 1)
    return first


def _peak_live(plan: Plan, nbytes: Mapping[str, int | None]) -> int:
    """The largest sum of live activations after a step, outputs freed at their last use
    (views counted as copies, so an upper bound where ops like Reshape return views)."""
    live = {n: nbytes.get(n) or 0 for n in plan.input_names}
    peak = sum(live.values())
    for step in plan.steps:
        live.update({n: nbytes.get(n) or 0 for n in step.outputs if n})
        peak = max(peak, sum(live.values()))
        for name in step.free_after:
            live.pop(name, None)
    return peak


def _group(ops: list[OpEstimate], total: float) -> list[OpTypeEstimate]:
    groups: dict[str, list[OpEstimate]] = {}
    for op in ops:
        groups.setdefault(op.op_type, []).append(op)
    rows = [
        OpTypeEstimate(
            op_type=kind,
            nodes=len(members),
            flops=sum(m.flops for m in members),
            bytes=sum(m.bytes for m in members),
            ms=sum(m.ms for m in members),
            share=sum(m.ms for m in members) / total if total else 0.0,
        )
        for kind, members in groups.items()
    ]
    return sorted(rows, key=lambda r: -r.ms)


# --- calibration: this machine as a device profile ---------------------------------------


@dataclass(frozen=True)
class Calibration:
    gflops_fp32: float  # float32 matmul through numpy's BLAS, all its threads
    bandwidth_gbs: float  # bytes read + written per second by a large copy
    depthwise_gflops: float  # the runtime's depthwise Conv kernel on DEPTHWISE_LAYER
    blas_threads: int | None
    # float32 matmul FLOP/s by side n of SMALL_MATMULS; None: not measured (priced at peak)
    small_matmul_gflops: dict[int, float] | None = None
    elementwise_gelems: float | None = None  # G elements/s of np.add on L2-sized blocks


def measure(
    repeats: int = CALIBRATION_REPEATS, clock: Callable[[], float] = perf_counter
) -> Calibration:
    """This machine's peak float32 FLOP/s, memory bandwidth and depthwise Conv rate, as
    numpy and the runtime's kernels reach them.

    ``clock`` is wall time; ``time.thread_time`` with one BLAS thread measures a shared
    machine without counting the time other processes take from it.
    """
    keep_freed_memory()  # as the numpy backend runs: no page faults per kernel call
    rng = np.random.default_rng(0)
    a, b = (rng.random((MATMUL_N, MATMUL_N), dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)
    matmul = _best(lambda: np.matmul(a, b, out=out), repeats, clock)
    src = np.ones(COPY_BYTES // 4, np.float32)
    dst = np.empty_like(src)
    copy = _best(lambda: np.copyto(dst, src), repeats, clock)
    return Calibration(
        gflops_fp32=2 * MATMUL_N**3 / matmul / 1e9,
        bandwidth_gbs=2 * src.nbytes / copy / 1e9,
        depthwise_gflops=_depthwise_rate(repeats, clock),
        blas_threads=_blas_threads(),
        small_matmul_gflops={n: _matmul_rate(n, repeats, clock) for n in SMALL_MATMULS},
        elementwise_gelems=_elementwise_rate(repeats, clock),
    )


def _matmul_rate(n: int, repeats: int, clock: Callable[[], float]) -> float:
    """FLOP/s of an n x n float32 matmul, called enough times per repeat to time it."""
    rng = np.random.default_rng(0)
    a, b = (rng.random((n, n), dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)
    calls = max(1, SMALL_MATMUL_FLOPS // (2 * n**3))

    def run() -> None:
        for _ in range(calls):
            np.matmul(a, b, out=out)

    return 2 * n**3 * calls / _best(run, repeats, clock) / 1e9


def _elementwise_rate(repeats: int, clock: Callable[[], float]) -> float:
    """G elements/s of one numpy pass: np.add of two float32 blocks that stay in L2."""
    a, b, out = (np.ones(ELEMENTWISE_ELEMENTS, np.float32) for _ in range(3))

    def run() -> None:
        for _ in range(ELEMENTWISE_CALLS):
            np.add(a, b, out=out)

    # the median, not the best: one run in four or so read twice the usual rate here
    return ELEMENTWISE_ELEMENTS * ELEMENTWISE_CALLS / _median(run, repeats, clock) / 1e9


def _depthwise_rate(repeats: int, clock: Callable[[], float]) -> float:
    """FLOP/s of the runtime's registered FusedConv kernel (bias, ReLU6) on DEPTHWISE_LAYER,
    fed channels-last as a pointwise Conv before it leaves its output in a plan."""
    from edgerun.runtime.registry import resolve

    info = resolve("com.microsoft", "FusedConv", 1)
    if info is None:
        raise RuntimeError("no FusedConv kernel registered")
    c, h, w = DEPTHWISE_LAYER
    rng = np.random.default_rng(0)
    x = rng.random((1, h, w, c), dtype=np.float32).transpose(0, 3, 1, 2)
    weights = rng.random((c, 1, 3, 3), dtype=np.float32)
    bias = rng.random(c, dtype=np.float32)
    attrs = {"activation": "Clip", "activation_params": [0.0, 6.0], "group": c,
             "kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1]}  # fmt: skip

    def calls() -> None:
        for _ in range(DEPTHWISE_CALLS):
            info.fn(x, weights, bias, **attrs)

    seconds = _best(calls, repeats, clock) / DEPTHWISE_CALLS
    return 2 * c * h * w * 9 / seconds / 1e9


def _timings(fn: Callable[[], Any], repeats: int, clock: Callable[[], float]) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn``, after one untimed call."""
    fn()  # warm: page faults, BLAS thread start-up
    seconds = []
    for _ in range(repeats):
        start = clock()
        fn()
        seconds.append(clock() - start)
    return seconds


def _best(fn: Callable[[], Any], repeats: int, clock: Callable[[], float]) -> float:
    return min(_timings(fn, repeats, clock))


def _median(fn: Callable[[], Any], repeats: int, clock: Callable[[], float]) -> float:
    return statistics.median(_timings(fn, repeats, clock))


def _blas_threads() -> int | None:
    from edgerun.profiler import _blas_threads

    return _blas_threads()


def calibrate(name: str = THIS_MACHINE, calibration: Calibration | None = None) -> DeviceProfile:
    """A device profile of this machine with its measured peak and bandwidth."""
    return profile_from_dict(machine_profile(name, calibration or measure()), name)


def machine_profile(name: str, calibration: Calibration) -> dict[str, Any]:
    """This machine as profile data (the TOML's tables); the numpy runtime's integer GEMM
    goes through float BLAS, so its int8 peak is the float32 one."""
    from edgerun.doctor import cpu_info

    cpu = cpu_info()
    if cpu.arch not in ("aarch64", "armv7l", "x86_64"):
        raise InputError(f"cannot calibrate: device profiles do not cover {cpu.arch!r}")
    c, h, w = DEPTHWISE_LAYER
    how = (
        f"Measured by edgerun estimate on this machine: best of {CALIBRATION_REPEATS} "
        f"{MATMUL_N}x{MATMUL_N} float32 numpy matmuls ({calibration.blas_threads} BLAS "
        f"threads), of {CALIBRATION_REPEATS} {COPY_BYTES >> 20} MiB copies (read + write) "
        f"and of {CALIBRATION_REPEATS} x {DEPTHWISE_CALLS} calls of the numpy runtime's "
        f"depthwise Conv (3x3, {c} channels, {h}x{w}, bias and ReLU6)"
    )
    if calibration.small_matmul_gflops:
        sides = " and ".join(f"{n}x{n}" for n in calibration.small_matmul_gflops)
        how += f"; best of {sides} float32 matmuls"
    if calibration.elementwise_gelems is not None:
        how += (
            f"; median of {CALIBRATION_REPEATS} runs of np.add over two "
            f"{ELEMENTWISE_ELEMENTS}-element float32 blocks in cache"
        )
    how += "."
    cores = os.cpu_count() or cpu.cores
    return {
        "name": name,
        "title": f"this machine ({cpu.model})",
        "vendor": "unknown",
        "sources": ["edgerun estimate --device this (measured)"],
        "accelerators": [],
        "cpu": {
            "arch": cpu.arch,
            "model": cpu.model,
            "cores": cores,
            "clock_ghz": (cpu.max_mhz or 0.0) / 1e3,
            "features": list(cpu.features),
            "source": "/proc/cpuinfo or sysctl, read by edgerun doctor",
        },
        "memory": {
            "ram_mb": psutil.virtual_memory().total >> 20,
            "type": "unknown",
            "storage": "unknown",
            "source": "psutil.virtual_memory()",
        },
        "deploy": {
            "format": "onnx",
            "quantization": "none",
            "activation_dtype": "float32",
            "weight_dtype": "float32",
            "per_channel": False,
            "threads": cores,
            "backends": ["numpy"],
            "rationale": "A measured profile for estimates; deploy choices left at float32.",
        },
        "perf": {
            "peak_gflops_fp32": round(calibration.gflops_fp32, 3),
            "peak_gops_int8": round(calibration.gflops_fp32, 3),
            "memory_bandwidth_gbs": round(calibration.bandwidth_gbs, 3),
            "depthwise_gflops_fp32": round(calibration.depthwise_gflops, 3),
            **_optional_perf(calibration),
            "source": how,
        },
    }


def _optional_perf(calibration: Calibration) -> dict[str, float]:
    """The perf fields a calibration measured beyond the required ones, as profile keys."""
    fields = {
        f"matmul{n}_gflops_fp32": round(rate, 3)
        for n, rate in (calibration.small_matmul_gflops or {}).items()
    }
    if calibration.elementwise_gelems is not None:
        fields["elementwise_gelems"] = round(calibration.elementwise_gelems, 3)
    return fields


def write_profile(profile: DeviceProfile, path: str | os.PathLike[str]) -> DeviceProfile:
    """Save ``profile`` as a device profile TOML named after the file, written atomically;
    returns it as read back."""
    target = Path(path)
    if target.suffix != ".toml":
        raise InputError(f"{target}: a device profile file must end in .toml")
    data = {**profile.raw, "name": target.stem}
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(to_toml(data), encoding="utf-8")
    os.replace(tmp, target)
    return load_profile(target)


def to_toml(data: Mapping[str, Any]) -> str:
    """Profile data as TOML: top-level keys, then one [table] per dict, [[table]] per list
    of dicts. Strings go through JSON, whose escapes TOML's basic strings share."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not _is_table(v)]
    for key, value in data.items():
        if isinstance(value, dict):
            lines += ["", f"[{key}]", *(f"{k} = {_toml_value(v)}" for k, v in value.items())]
        elif _is_table(value):
            for item in value:
                lines += ["", f"[[{key}]]", *(f"{k} = {_toml_value(v)}" for k, v in item.items())]
    return "\n".join(lines) + "\n"


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")
