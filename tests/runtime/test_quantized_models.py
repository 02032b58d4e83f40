"""Real CNNs quantized by onnxruntime's quantizer, run by edgerun's numpy runtime.

The oracle is onnxruntime with graph optimisations off: QDQ models then run as written
(DequantizeLinear -> float op -> QuantizeLinear) and QOperator models through its integer
kernels. Where onnxruntime itself is wrong we do not compare with it: on AVX2 machines
without VNNI its uint8 x int8 GEMM kernels saturate int16 pair sums (its documented
reduce_range caveat; full-range uint8 activations made 99.99% of a test GEMM's outputs
wrong), so models with uint8 activations are quantized with ``reduce_range=True`` (7-bit
weights), which keeps those kernels exact.

edgerun fuses QDQ groups into integer kernels (as onnxruntime does when optimising), so an
output may sit one quantization step from the float path at a rounding boundary: the
acceptance is 99.9% of output elements within one step of the output's scale, and the same
top-1 class on every input. ``EDGERUN_QUANT_INPUTS=100`` runs the full 100-input check.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest

import edgerun
from edgerun.runtime.onnx_reader import read_onnx
from edgerun.runtime.plan import Plan

ort = pytest.importorskip("onnxruntime")
quantization = pytest.importorskip("onnxruntime.quantization")
pytest.importorskip("torch", reason="needs the [torch] extra")
zoo = pytest.importorskip("converters.zoo")

MODELS = ("resnet18", "mobilenet_v2")
FORMATS = ("qdq_u8", "qdq_s8", "qoperator", "dynamic")
INPUTS = int(os.environ.get("EDGERUN_QUANT_INPUTS", "6"))
SHAPE = (1, 3, 224, 224)


class _Calibration(quantization.CalibrationDataReader):
    def __init__(self, name: str, count: int = 4) -> None:
        rng = np.random.default_rng(0)
        self.feeds = iter(
            [{name: rng.standard_normal(SHAPE).astype(np.float32)} for _ in range(count)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def _quantize(source: Path, target: Path, fmt: str) -> None:
    q = quantization
    if fmt == "dynamic":
        q.quantize_dynamic(source, target, weight_type=q.QuantType.QInt8, reduce_range=True)
        return
    u8 = fmt in ("qdq_u8", "qoperator")
    q.quantize_static(
        source,
        target,
        _Calibration(onnx.load(source).graph.input[0].name),
        quant_format=q.QuantFormat.QOperator if fmt == "qoperator" else q.QuantFormat.QDQ,
        per_channel=True,
        activation_type=q.QuantType.QUInt8 if u8 else q.QuantType.QInt8,
        weight_type=q.QuantType.QInt8,
        reduce_range=u8,
    )


@pytest.fixture(scope="session")
def quantized_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder = tmp_path_factory.mktemp("quantized")
    paths = {}
    for name in MODELS:
        exported, prepared = folder / f"{name}.onnx", folder / f"{name}.pre.onnx"
        zoo.export(name, str(exported))
        paths[name, "float"] = exported
        quant_pre_process(str(exported), str(prepared), skip_symbolic_shape=True)
        for fmt in FORMATS:
            paths[name, fmt] = folder / f"{name}.{fmt}.onnx"
            _quantize(prepared, paths[name, fmt], fmt)
    return paths


def _output_step(model: onnx.ModelProto) -> float | None:
    """The scale of the DequantizeLinear that produces the graph output, if any."""
    output = model.graph.output[0].name
    consts = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.output[0] == output:
            return float(onnx.numpy_helper.to_array(consts[node.input[1]]))
    return None


# the ops each format must have produced (the quantizer's output, not float ops left alone)
EXPECTED_OPS = {
    "qdq_u8": {"QuantizeLinear", "DequantizeLinear", "Conv"},
    "qdq_s8": {"QuantizeLinear", "DequantizeLinear", "Conv"},
    "qoperator": {"QLinearConv", "QLinearAdd", "QGemm"},
    "dynamic": {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"},
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", MODELS)
def test_matches_onnxruntime(
    name: str, fmt: str, quantized_paths: dict[tuple[str, str], Path]
) -> None:
    path = quantized_paths[name, fmt]
    model = onnx.load(path)
    assert EXPECTED_OPS[fmt] <= {n.op_type for n in model.graph.node}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    oracle = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session = edgerun.load(path, backend="numpy")
    input_name = model.graph.input[0].name
    rng = np.random.default_rng(1)
    ours, theirs = [], []
    for _ in range(INPUTS):
        x = rng.standard_normal(SHAPE).astype(np.float32)
        ours.append(next(iter(session.run({input_name: x}).values())))
        theirs.append(oracle.run(None, {input_name: x})[0])
    got, want = np.stack(ours), np.stack(theirs)
    assert got.dtype == want.dtype and got.shape == want.shape
    step = _output_step(model)
    if step is None:  # dynamic: the same integer arithmetic, float32 rounding apart
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    else:
        within = np.abs(got - want) <= step * 1.001
        assert within.mean() >= 0.999, f"{within.mean():.5f} within one step ({step:.4g})"
    np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))


@pytest.mark.parametrize("fmt", ["qdq_u8", "qdq_s8"])
@pytest.mark.parametrize("name", MODELS)
def test_qdq_groups_run_as_integer_kernels(
    name: str, fmt: str, quantized_paths: dict[tuple[str, str], Path]
) -> None:
    def plan(path: Path) -> Plan:
        model = read_onnx(path)
        return Plan(model.graph, model.opset_imports, functions=model.functions)

    fused, float_plan = plan(quantized_paths[name, fmt]), plan(quantized_paths[name, "float"])
    ops = {s.node.op_type for s in fused.steps}
    assert {"QLinearConv", "QLinearAdd", "QGemm"} <= ops
    assert not ops & {"Conv", "Gemm", "Add"}  # nothing left in float but the head's ReduceMean
    # weights stay 8-bit: the constants are about a quarter of the float model's
    fused_bytes = sum(v.nbytes for v in fused.constants.values())
    float_bytes = sum(v.nbytes for v in float_plan.constants.values())
    assert fused_bytes < 0.3 * float_bytes
