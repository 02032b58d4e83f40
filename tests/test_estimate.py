"""The roofline estimate: its FLOPs are inspect's MACs, its bytes the runtime's own tensors,
its arithmetic the profile's peaks; calibration writes a profile that loads back.

No test asserts on how close an estimate is to a measured latency (bench/estimate_vs_measured.py
does, on a quiet machine): only on the model's inputs and arithmetic.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgerun
from edgerun.errors import InputError
from edgerun.estimate import (
    ELEMENTWISE_BYTES,
    PASSES,
    Calibration,
    Estimate,
    blas_gflops,
    calibrate,
    depthwise_gflops,
    elementwise_gelems,
    estimate,
    machine_profile,
    measure,
    to_toml,
    write_profile,
)
from edgerun.inference import random_feeds
from edgerun.inspection import inspect_model
from edgerun.profiler import LiveBytes
from edgerun.profiles import DeviceProfile, load_profile, profile_from_dict
from edgerun.runtime.passes.shape_inference import ALIASES


def synthetic(
    gflops: float,
    gops_int8: float,
    bandwidth_gbs: float,
    depthwise: float | None = None,
    small_matmuls: dict[int, float] | None = None,
    elementwise: float | None = None,
) -> DeviceProfile:
    """A measured-style profile; ``depthwise=None`` leaves the depthwise rate out, as a
    data-sheet profile does, and so do the other rates left None."""
    calibration = Calibration(
        gflops, bandwidth_gbs, depthwise or 0.0, 1, small_matmuls, elementwise
    )
    data = machine_profile("synthetic", calibration)
    data["perf"]["peak_gops_int8"] = gops_int8
    if depthwise is None:
        del data["perf"]["depthwise_gflops_fp32"]
    return profile_from_dict(data, "synthetic")


@pytest.fixture(scope="module")
def cnn(tiny_cnn_path: Path) -> Estimate:
    return estimate(tiny_cnn_path, synthetic(10.0, 20.0, 2.0))


def test_flops_are_twice_inspects_macs(cnn: Estimate, tiny_cnn_path: Path) -> None:
    macs = inspect_model(tiny_cnn_path).macs_by_op
    by_type: dict[str, int] = {}
    for t in cnn.op_types:  # the plan fuses Conv+Relu into FusedConv, which counts as Conv
        kind = ALIASES.get(("com.microsoft", t.op_type), t.op_type)
        by_type[kind] = by_type.get(kind, 0) + t.flops
    assert {k: v for k, v in by_type.items() if v} == {k: 2 * v for k, v in macs.items()}
    assert cnn.flops == 2 * sum(macs.values()) and not cnn.unknown


def test_bytes_are_the_runtimes_own_tensors(cnn: Estimate, tiny_cnn_path: Path) -> None:
    session = edgerun.load(tiny_cnn_path, backend="numpy")
    plan = session.plan
    assert plan is not None
    seen: dict[str, int] = {}
    feeds = random_feeds(session.inputs, {}, 0)  # symbolic dimensions as 1, as estimate does
    seen.update({k: v.nbytes for k, v in feeds.items()})
    seen.update({k: v.nbytes for k, v in plan.constants.items()})

    def hook(step: object, _seconds: float, results: tuple) -> None:
        seen.update({n: r.nbytes for n, r in zip(step.outputs, results, strict=False) if n})  # type: ignore[attr-defined]

    plan.run(feeds, hook=hook)
    actual = [sum(seen[n] for n in (*s.inputs, *s.outputs) if n) for s in plan.steps]
    assert [op.bytes for op in cnn.ops] == actual
    read = {n for s in plan.steps for n in s.inputs if n in plan.constants}
    assert cnn.weight_bytes == sum(plan.constants[n].nbytes for n in read)
    live = LiveBytes(plan, feeds)
    plan.run(feeds, hook=lambda step, _s, results: live.observe(step, results))
    assert cnn.peak_activation_bytes >= live.peak  # views counted as copies: an upper bound


def test_each_op_takes_the_longer_of_compute_and_memory(cnn: Estimate) -> None:
    for op in cnn.ops:
        if op.op_type not in PASSES:  # those: test_elementwise_ops_cost_their_numpy_passes
            assert op.compute_ms == pytest.approx(op.flops / 10e9 * 1e3)
        assert op.memory_ms == pytest.approx(op.bytes / 2e9 * 1e3)
        assert op.scratch_ms == pytest.approx(op.scratch_bytes / 2e9 * 1e3)
        assert op.ms == pytest.approx(max(op.compute_ms, op.memory_ms) + op.scratch_ms)
        assert op.bound == ("compute" if op.compute_ms > op.memory_ms else "memory")
    assert cnn.total_ms == pytest.approx(sum(op.ms for op in cnn.ops))
    assert sum(t.share for t in cnn.op_types) == pytest.approx(1.0)
    assert sum(t.nodes for t in cnn.op_types) == len(cnn.ops)


def test_conv_scratch_follows_the_numpy_kernels(cnn: Estimate) -> None:
    # conv1: 3x3, pad 1, 3 -> 16 channels on 32x32: im2col columns (3*9 x 32*32 floats)
    # written and read back, and the padded input copied
    conv1 = next(op for op in cnn.ops if op.name == "conv1")
    assert conv1.scratch_bytes == (2 * 3 * 9 * 32 * 32 + 2 * 3 * 32 * 32) * 4
    assert all(op.scratch_bytes == 0 for op in cnn.ops if op.op_type not in ("Conv", "FusedConv"))


def depthwise_model() -> onnx.ModelProto:
    """x (1, 8, 16, 16) -> a 3x3 depthwise Conv (pad 1) -> a 3x3 Conv with channel
    multiplier 2 (group 8, 16 outputs, no pads)."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.random((8, 1, 3, 3), dtype=np.float32), "w1")
    w2 = numpy_helper.from_array(rng.random((16, 1, 3, 3), dtype=np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], name="dw", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["h", "w2"], ["y"], name="mult", group=8),
    ]
    graph = helper.make_graph(
        nodes,
        "dw",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 14, 14])],
        [w1, w2],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="module")
def depthwise_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dw") / "dw.onnx"
    onnx.save(depthwise_model(), path)
    return path


def test_depthwise_conv_is_priced_at_the_depthwise_rate(depthwise_path: Path) -> None:
    # the einsum kernel reads its input in place: no scratch, FLOPs at 3 GFLOP/s, not 100
    result = estimate(depthwise_path, synthetic(100.0, 100.0, 1000.0, depthwise=3.0))
    dw = next(op for op in result.ops if op.name == "dw")
    assert dw.flops == 2 * 8 * 16 * 16 * 9 and dw.scratch_bytes == 0
    assert dw.compute_ms == pytest.approx(dw.flops / 3e9 * 1e3) and dw.bound == "compute"
    assert result.depthwise_gflops == 3.0
    # a channel multiplier runs the per-tap kernel: 5 output-sized transfers per tap, at peak
    mult = next(op for op in result.ops if op.name == "mult")
    assert mult.scratch_bytes == 5 * 9 * 16 * 14 * 14 * 4
    assert mult.compute_ms == pytest.approx(mult.flops / 100e9 * 1e3)


def test_without_a_measured_depthwise_rate_it_follows_bandwidth(depthwise_path: Path) -> None:
    # 8 bytes per multiply-add at 16 GB/s: 2 G MAC/s = 4 GFLOP/s, capped at the peak
    assert depthwise_gflops(synthetic(100.0, 100.0, 16.0).perf) == 4.0
    assert depthwise_gflops(synthetic(2.0, 2.0, 16.0).perf) == 2.0
    assert depthwise_gflops(synthetic(100.0, 100.0, 16.0, depthwise=7.0).perf) == 7.0
    assert load_profile("rpi4").perf.depthwise_gflops_fp32 is None  # data-sheet boards
    result = estimate(depthwise_path, synthetic(100.0, 100.0, 16.0))
    dw = next(op for op in result.ops if op.name == "dw")
    assert dw.compute_ms == pytest.approx(dw.flops / 4e9 * 1e3)


def qlinear_matmul_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.integers(0, 255, (64, 32), dtype=np.uint8), "b")
    scalars = [
        numpy_helper.from_array(np.array(v, dtype=dt), name)
        for name, v, dt in (("sa", 0.1, np.float32), ("za", 128, np.uint8),
                            ("sb", 0.05, np.float32), ("zb", 128, np.uint8),
                            ("sy", 0.2, np.float32), ("zy", 128, np.uint8))
    ]  # fmt: skip
    node = helper.make_node(
        "QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"], name="qmm"
    )
    graph = helper.make_graph(
        [node],
        "q",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 32])],
        [b, *scalars],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_integer_ops_use_the_int8_peak(tmp_path: Path) -> None:
    path = tmp_path / "qmm.onnx"
    onnx.save(qlinear_matmul_model(), path)
    result = estimate(path, synthetic(1.0, 4.0, 1000.0))
    (op,) = result.ops
    assert op.integer and op.flops == 2 * 64 * 32 and op.bound == "compute"
    assert op.compute_ms == pytest.approx(2 * 64 * 32 / 4e9 * 1e3)
    assert op.bytes == 64 + 64 * 32 + 32 + 3 * 4 + 3  # uint8 activations and weights


def test_calibration_measures_this_machine_and_round_trips(tmp_path: Path) -> None:
    calibration = measure(repeats=1)
    assert calibration.gflops_fp32 > 0.1 and calibration.bandwidth_gbs > 0.1
    # the einsum depthwise kernel runs below the BLAS peak
    assert 0.01 < calibration.depthwise_gflops < calibration.gflops_fp32
    profile = write_profile(calibrate(calibration=calibration), tmp_path / "here.toml")
    assert profile.name == "here" and profile.deploy.backends == ("numpy",)
    assert profile.perf.peak_gflops_fp32 == round(calibration.gflops_fp32, 3)
    assert profile.perf.depthwise_gflops_fp32 == round(calibration.depthwise_gflops, 3)
    small = calibration.small_matmul_gflops
    assert small is not None and set(small) == {64, 256}
    assert profile.perf.matmul64_gflops_fp32 == round(small[64], 3)
    assert profile.perf.matmul256_gflops_fp32 == round(small[256], 3)
    assert calibration.elementwise_gelems is not None and calibration.elementwise_gelems > 0.01
    assert profile.perf.elementwise_gelems == round(calibration.elementwise_gelems, 3)
    again = load_profile(tmp_path / "here.toml")
    assert again.raw == tomllib.loads(to_toml(profile.raw)) == profile.raw


def test_write_profile_refuses_a_non_toml_name(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"must end in \.toml"):
        write_profile(load_profile("rpi4"), tmp_path / "rpi4.txt")


@pytest.mark.parametrize("device", ["rpi4", "rpi-zero-2w", "x86-64-avx2"])
def test_a_faster_board_is_estimated_faster(tiny_cnn_path: Path, device: str) -> None:
    board = estimate(tiny_cnn_path, device)
    halved = profile_from_dict(
        {**board_raw(device), "perf": {**board_raw(device)["perf"],
         "peak_gflops_fp32": load_profile(device).perf.peak_gflops_fp32 / 2,
         "memory_bandwidth_gbs": load_profile(device).perf.memory_bandwidth_gbs / 2}},
        device,
    )  # fmt: skip
    assert estimate(tiny_cnn_path, halved).total_ms == pytest.approx(2 * board.total_ms)


def board_raw(device: str) -> dict:
    return dict(load_profile(device).raw)


def edgerun_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgerun.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_json_and_table(tiny_cnn_path: Path) -> None:
    result = edgerun_cli("estimate", str(tiny_cnn_path), "--device", "rpi4", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["device"] == "rpi4" and data["total_ms"] > 0 and data["ops"]
    table = edgerun_cli("estimate", str(tiny_cnn_path), "--device", "rpi4")
    assert table.returncode == 0 and "estimated latency" in table.stdout


def test_cli_calibrates_this_machine_into_a_profile(tiny_cnn_path: Path, tmp_path: Path) -> None:
    saved = tmp_path / "bench-box.toml"
    result = edgerun_cli(
        "estimate", str(tiny_cnn_path), "--device", "this", "--save-profile", str(saved)
    )
    assert result.returncode == 0, result.stderr
    assert load_profile(saved).name == "bench-box"
    again = edgerun_cli("estimate", str(tiny_cnn_path), "--device", str(saved), "--json")
    assert json.loads(again.stdout)["device"] == "bench-box"


def test_cli_unknown_device_is_a_user_error(tiny_cnn_path: Path) -> None:
    result = edgerun_cli("estimate", str(tiny_cnn_path), "--device", "no-such-board")
    assert result.returncode == 2 and "unknown device 'no-such-board'" in result.stderr


def matmul_model() -> onnx.ModelProto:
    """A batched per-head product (12 x [128, 32] x [32, 128]) and one [128, 384] x [384, 384]
    product, as in MiniLM's attention."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.random((384, 384), dtype=np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["q", "k"], ["scores"], name="heads"),
        helper.make_node("MatMul", ["x", "w"], ["y"], name="dense"),
    ]
    inputs = [("q", [1, 12, 128, 32]), ("k", [1, 12, 32, 128]), ("x", [1, 128, 384])]
    graph = helper.make_graph(
        nodes,
        "mm",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 12, 128, 128]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 128, 384])],
        [w],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_blas_rate_follows_the_size_of_each_call(tmp_path: Path) -> None:
    small = {64: 10.0, 256: 50.0}
    perf = synthetic(100.0, 100.0, 1e6, small_matmuls=small).perf
    assert blas_gflops(perf, 2 * 64**3) == pytest.approx(10.0)
    assert blas_gflops(perf, 2 * 256**3) == pytest.approx(50.0)
    assert blas_gflops(perf, 2 * 1024**3) == pytest.approx(100.0)
    assert blas_gflops(perf, 2 * 128**3) == pytest.approx(30.0)  # halfway in log(FLOPs)
    assert blas_gflops(perf, 10.0) == 10.0 and blas_gflops(perf, 1e15) == 100.0
    path = tmp_path / "mm.onnx"
    onnx.save(matmul_model(), path)
    result = estimate(path, synthetic(100.0, 100.0, 1e6, small_matmuls=small))
    heads, dense = result.ops
    # 12 calls of 2 x 128 x 32 x 128 FLOPs each (1 MFLOP: between the 64^3 and 256^3 points)
    per_call = 2 * 128 * 32 * 128
    assert heads.flops == 12 * per_call
    assert heads.compute_ms == pytest.approx(heads.flops / blas_gflops(perf, per_call) / 1e6)
    assert dense.compute_ms == pytest.approx(dense.flops / blas_gflops(perf, dense.flops) / 1e6)
    assert 10.0 < blas_gflops(perf, per_call) < 50.0 < blas_gflops(perf, dense.flops) < 100.0
    # a data-sheet profile: every product at the peak, as before
    peak = estimate(path, synthetic(100.0, 100.0, 1e6))
    assert [op.compute_ms for op in peak.ops] == pytest.approx(
        [op.flops / 100e6 for op in peak.ops]
    )


def elementwise_model() -> onnx.ModelProto:
    """x [1, 128, 384] -> LayerNormalization -> Gelu -> Softmax -> Add x -> Transpose."""
    ones = numpy_helper.from_array(np.ones(384, np.float32), "ones")
    zeros = numpy_helper.from_array(np.zeros(384, np.float32), "zeros")
    nodes = [
        helper.make_node("LayerNormalization", ["x", "ones", "zeros"], ["n"], name="ln"),
        helper.make_node("Gelu", ["n"], ["g"], name="gelu"),
        helper.make_node("Softmax", ["g"], ["s"], name="softmax"),
        helper.make_node("Add", ["s", "x"], ["a"], name="add"),
        helper.make_node("Transpose", ["a"], ["y"], name="transpose", perm=[0, 2, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "ew",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 128, 384])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 384, 128])],
        [ones, zeros],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def test_elementwise_ops_cost_their_numpy_passes(tmp_path: Path) -> None:
    path = tmp_path / "ew.onnx"
    onnx.save(elementwise_model(), path)
    # 2 G elements/s per pass, against 1000 GB/s of memory: the passes dominate
    result = estimate(path, synthetic(100.0, 100.0, 1000.0, elementwise=2.0))
    assert result.elementwise_gelems == 2.0
    elements = 128 * 384
    by_name = {op.name: op for op in result.ops}
    for name, kind in (("ln", "LayerNormalization"), ("gelu", "Gelu"), ("softmax", "Softmax"),
                       ("add", "Add")):  # fmt: skip
        op = by_name[name]
        assert op.compute_ms == pytest.approx(PASSES[kind] * elements / 2e6)
        assert op.bound == "compute" and op.ms == pytest.approx(op.compute_ms)
    assert PASSES["Gelu"] == 22 and PASSES["LayerNormalization"] == 6
    assert by_name["transpose"].compute_ms == 0.0  # a view: not an elementwise pass
    # without the measured rate, each pass streams ELEMENTWISE_BYTES per element from memory
    perf = synthetic(100.0, 100.0, 24.0).perf
    assert perf.elementwise_gelems is None
    assert elementwise_gelems(perf) == 24.0 / ELEMENTWISE_BYTES


def _winograd_model(tmp_path: Path, c: int, k: int, side: int) -> Path:
    """One 3x3 stride-1 padded Conv "wino" (c -> k channels, side x side), which the plan
    runs as WinogradConv."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((k, c, 3, 3)).astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="wino", pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node],
        "w",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, k, side, side])],
        [w],
    )
    path = tmp_path / f"wino{side}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_winograd_conv_is_priced_as_its_products_and_passes(tmp_path: Path) -> None:
    # a 3x3 stride-1 Conv that the plan runs as WinogradConv: 16 (C, K) products per 2x2
    # block of outputs, at the BLAS rate of one of them, plus the transforms' passes
    c, k, side = 32, 32, 10
    board = synthetic(100.0, 100.0, 1000.0)
    result = estimate(_winograd_model(tmp_path, c, k, side), board)
    (op,) = result.ops
    assert op.op_type == "WinogradConv" and not result.unknown
    assert op.flops == 2 * 16 * 25 * c * k  # 5x5 tiles, against 2 * 9 * 100 * c * k direct
    products_ms = op.flops / (blas_gflops(board.perf, op.flops / 16) * 1e6)
    passes_ms = (8 + 7) * c * side * side / (elementwise_gelems(board.perf) * 1e6)
    assert op.compute_ms == pytest.approx(products_ms + passes_ms)


def _block(tmp_path: Path, first: dict, side: int = 16) -> Path:
    """x (4 channels) -> Conv (``first``) -> Relu -> depthwise 3x3 Conv "dw" (8 channels)."""
    rng = np.random.default_rng(0)
    kernel = first.get("kernel_shape", [1, 1])
    group = first.get("group", 1)
    inits = [
        numpy_helper.from_array(
            rng.standard_normal((8, 4 // group, *kernel)).astype(np.float32), "we"
        ),
        numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "wd"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "we"], ["e"], **first),
        helper.make_node("Relu", ["e"], ["a"]),
        helper.make_node("Conv", ["a", "wd"], ["y"], name="dw", group=8, pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "b",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    path = tmp_path / "block.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_winograd_f4x4_is_priced_as_its_products_and_passes(tmp_path: Path) -> None:
    # outputs of 16x16 and more: F(4x4, 3x3), 36 products per 4x4 block of outputs plus its
    # two transform products, at the BLAS rate of one of the 36, and its three passes
    c, k, side = 32, 32, 16
    board = synthetic(100.0, 100.0, 1000.0)
    (op,) = estimate(_winograd_model(tmp_path, c, k, side), board).ops
    tiles = 16  # 4x4 blocks of 4x4 outputs
    assert op.op_type == "WinogradConv"
    assert op.flops == 2 * (36 * tiles * c * k + 36 * 36 * tiles * c + 16 * 36 * tiles * k)
    products_ms = op.flops / (blas_gflops(board.perf, op.flops / 36) * 1e6)
    passes = c * side * side + 36 * tiles * c + k * side * side
    assert op.compute_ms == pytest.approx(
        products_ms + passes / (elementwise_gelems(board.perf) * 1e6)
    )


def test_a_depthwise_conv_taking_the_clip_is_still_priced_as_depthwise(tmp_path: Path) -> None:
    # grouped Conv -> Relu -> depthwise Conv: the plan runs the pair as Conv + ClippedInputConv
    path = _block(tmp_path, {"group": 2})
    result = estimate(path, synthetic(100.0, 100.0, 1000.0, depthwise=3.0))
    dw = next(op for op in result.ops if op.name == "dw")
    assert dw.op_type == "ClippedInputConv" and not result.unknown
    assert dw.flops == 2 * 8 * 16 * 16 * 9
    assert dw.compute_ms == pytest.approx(dw.flops / 3e9 * 1e3)


@pytest.mark.parametrize(
    ("first", "side", "pixels"),
    [
        ({}, 16, 16 * 16),  # a 1x1 expansion
        ({"kernel_shape": [3, 3], "pads": [0, 0, 1, 1], "strides": [2, 2]}, 32, 16 * 16),  # a stem
    ],
)
def test_a_convolution_fused_with_its_depthwise_one_prices_both(
    tmp_path: Path, first: dict, side: int, pixels: int
) -> None:
    # the plan runs the pair as one ExpandDepthwiseConv: the first product at the BLAS rate,
    # the depthwise one at the depthwise rate
    board = synthetic(100.0, 100.0, 1000.0, depthwise=3.0)
    result = estimate(_block(tmp_path, first, side), board)
    (op,) = result.ops
    assert op.op_type == "ExpandDepthwiseConv" and not result.unknown
    first_macs = pixels * 8 * 4 * math.prod(first.get("kernel_shape", [1, 1]))
    depthwise_macs = pixels * 8 * 9
    assert op.flops == 2 * (first_macs + depthwise_macs)
    want = 2 * first_macs / (blas_gflops(board.perf, 2 * first_macs) * 1e6)
    want += 2 * depthwise_macs / 3e9 * 1e3
    assert op.compute_ms == pytest.approx(want)


def test_an_int8_expansion_fused_with_its_depthwise_one_prices_both_as_integer(
    tmp_path: Path,
) -> None:
    # 1x1 QLinearConv (8 -> 24 channels of 10x12) -> depthwise QLinearConv, which the plan
    # runs as one QLinearExpandDepthwiseConv: both products at the int8 rate
    from tests.runtime.passes.test_qlinear_expand_depthwise import _model

    path = tmp_path / "qblock.onnx"
    onnx.save(_model(), path)
    result = estimate(path, synthetic(100.0, 40.0, 1000.0, depthwise=3.0))
    (op,) = result.ops
    assert op.op_type == "QLinearExpandDepthwiseConv" and op.integer and not result.unknown
    macs = 10 * 12 * 8 * 24 + 10 * 12 * 24 * 9
    assert op.flops == 2 * macs
    assert op.compute_ms == pytest.approx(2 * macs / 40e9 * 1e3)


def test_attention_scores_fused_with_their_softmax_price_the_product_and_passes(
    tmp_path: Path,
) -> None:
    # MatMul -> Mul -> Add -> Softmax, which the plan runs as one MatMulSoftmax: two heads'
    # (8, 4) @ (4, 8) products at the BLAS rate of one of them, then six passes over the scores
    from tests.runtime.passes.test_fuse_softmax import _model

    heads, seq, size = 3, 10, 8  # test_fuse_softmax's
    path = tmp_path / "scores.onnx"
    model = _model(mask=(seq,))
    del model.graph.node[-1]  # keep the softmax's output as the graph's
    model.graph.output[0].name = "p"
    onnx.save(model, path)
    board = synthetic(100.0, 100.0, 1000.0, elementwise=2.0)
    result = estimate(path, board)
    (op,) = result.ops
    assert op.op_type == "MatMulSoftmax" and not result.unknown
    assert op.flops == 2 * heads * seq * seq * size
    want = op.flops / (blas_gflops(board.perf, op.flops / heads) * 1e6)
    want += 6 * heads * seq * seq / (elementwise_gelems(board.perf) * 1e6)
    assert op.compute_ms == pytest.approx(want)


def _tflite_block(tmp_path: Path, also_read: bool = False, mode: str = "float") -> Path:
    """TFLite's 1x1 CONV_2D -> DEPTHWISE_CONV_2D (8 -> 48 channels of 16x16), converted
    (``mode`` as test_tflite_ops.convert takes it); ``also_read``: the expansion is an
    output too, so the plan keeps two steps."""
    pytest.importorskip("tensorflow")
    from tests.runtime.kernels.test_tflite_ops import convert
    from tests.runtime.passes.test_tflite_expand_depthwise import _block

    path = tmp_path / "block.tflite"
    path.write_bytes(convert(_block(48, 1, "SAME", also_read), [(1, 16, 16, 8)], mode=mode))
    return path


def test_an_int8_tflite_expansion_fused_with_its_depthwise_one_prices_both_as_integer(
    tmp_path: Path,
) -> None:
    board = synthetic(100.0, 40.0, 1000.0, depthwise=3.0)
    result = estimate(_tflite_block(tmp_path, mode="int8"), board)
    fused = [op for op in result.ops if op.op_type == "EXPAND_DEPTHWISE_CONV_2D"]
    assert len(fused) == 1 and fused[0].integer and not result.unknown
    macs = 16 * 16 * 8 * 48 + 16 * 16 * 48 * 9
    assert fused[0].flops == 2 * macs
    assert fused[0].compute_ms == pytest.approx(2 * macs / 40e9 * 1e3)


def test_tflite_expansion_fused_with_its_depthwise_one_prices_both(tmp_path: Path) -> None:
    # the plan runs the pair as one EXPAND_DEPTHWISE_CONV_2D step
    board = synthetic(100.0, 100.0, 1000.0, depthwise=3.0)
    result = estimate(_tflite_block(tmp_path), board)
    (op,) = result.ops
    assert op.op_type == "EXPAND_DEPTHWISE_CONV_2D" and not result.unknown
    first_macs, depthwise_macs = 16 * 16 * 8 * 48, 16 * 16 * 48 * 9
    assert op.flops == 2 * (first_macs + depthwise_macs)
    want = 2 * first_macs / (blas_gflops(board.perf, 2 * first_macs) * 1e6)
    want += 2 * depthwise_macs / 3e9 * 1e3
    assert op.compute_ms == pytest.approx(want)


def test_a_tflite_depthwise_conv_is_priced_at_the_depthwise_rate(tmp_path: Path) -> None:
    path = _tflite_block(tmp_path, also_read=True)
    result = estimate(path, synthetic(100.0, 100.0, 1000.0, depthwise=3.0))
    dw = next(op for op in result.ops if op.op_type == "DEPTHWISE_CONV_2D")
    assert dw.flops == 2 * 16 * 16 * 48 * 9
    assert dw.compute_ms == pytest.approx(dw.flops / 3e9 * 1e3)
