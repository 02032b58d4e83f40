"""QDQ fusion on small hand-built QDQ graphs: what fuses, what must not, and the numbers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgerun.runtime.graph import Model
from edgerun.runtime.onnx_reader import parse_model
from edgerun.runtime.passes.qdq_fusion import fuse_qdq
from edgerun.runtime.plan import Plan

ort = pytest.importorskip("onnxruntime")
rng = np.random.default_rng(0)
S8 = TensorProto.INT8


def _init(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(value, name)


def _qdq_model(
    bias_scale_factor: float = 1.0, add_pool: bool = True, domain: str = ""
) -> onnx.ModelProto:
    """x -> Q -> DQ -> Conv(DQ(w), DQ(b)) -> Q -> DQ -> [Add with itself, MaxPool] -> Q -> DQ."""
    xs, ys, zs = np.float32(0.05), np.float32(0.1), np.float32(0.2)
    ws = (rng.random(8) * 0.01 + 0.002).astype(np.float32)
    inits = [
        _init("xs", np.array(xs)),
        _init("xz", np.array(3, np.int8)),
        _init("w", rng.integers(-127, 127, (8, 4, 3, 3)).astype(np.int8)),
        _init("ws", ws),
        _init("wz", np.zeros(8, np.int8)),
        _init("b", rng.integers(-500, 500, 8).astype(np.int32)),
        _init("bs", (xs * ws * np.float32(bias_scale_factor)).astype(np.float32)),
        _init("bz", np.zeros(8, np.int32)),
        _init("ys", np.array(ys)),
        _init("yz", np.array(-5, np.int8)),
        _init("zs", np.array(zs)),
        _init("zz", np.array(0, np.int8)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xf"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], axis=0),
        helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["bf"], axis=0),
        helper.make_node("Conv", ["xf", "wf", "bf"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["cq"]),
        helper.make_node("DequantizeLinear", ["cq", "ys", "yz"], ["cf"]),
    ]
    out = "cf"
    if add_pool:
        nodes += [
            helper.make_node("Add", ["cf", "cf"], ["s"]),
            helper.make_node("QuantizeLinear", ["s", "zs", "zz"], ["sq"]),
            helper.make_node("DequantizeLinear", ["sq", "zs", "zz"], ["sf"]),
            helper.make_node("MaxPool", ["sf"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("QuantizeLinear", ["p", "zs", "zz"], ["pq"]),
            helper.make_node("DequantizeLinear", ["pq", "zs", "zz"], ["y"]),
        ]
        out = "y"
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        initializer=inits,
    )
    for node in nodes:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            node.domain = domain
    opsets = [helper.make_opsetid("", 19), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 9
    return model


def _parse(model: onnx.ModelProto) -> Model:
    return parse_model(memoryview(model.SerializeToString()), None)


def _ops(model: onnx.ModelProto) -> list[str]:
    parsed = _parse(model)
    return [n.op_type for n in fuse_qdq(parsed.graph).nodes]


@pytest.mark.parametrize("domain", ["", "com.microsoft"])  # onnxruntime's contrib Q/DQ too
def test_groups_fuse_into_integer_ops(domain):
    ops = _ops(_qdq_model(domain=domain))
    assert ops == [
        "QuantizeLinear",
        "QLinearConv",
        "QLinearAdd",
        "MaxPool",  # same scale and zero point on both sides: runs on the int8 values
        "DequantizeLinear",
    ]


def test_a_bias_not_scaled_by_x_and_w_scales_stays_float():
    assert "Conv" in _ops(_qdq_model(bias_scale_factor=1.5, add_pool=False))


def test_a_graph_without_groups_is_returned_as_is():
    parsed = _parse(_qdq_model(bias_scale_factor=1.5, add_pool=False))
    assert fuse_qdq(parsed.graph) is parsed.graph


def test_fused_plan_matches_onnxruntime_within_one_step():
    model = _qdq_model()
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32) * 3
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    parsed = _parse(model)
    got = Plan(parsed.graph, parsed.opset_imports).run({"x": x})[0]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 0.2 * 1.001  # the output's scale
    assert np.mean(got == want) > 0.9


def _lookup_model(op: str, move: bool, **attrs) -> onnx.ModelProto:
    """x -> Q -> DQ -> op -> [Reshape] -> Q -> DQ: an elementwise island in a QDQ model."""
    inits = [
        _init("xs", np.array(0.04, np.float32)),
        _init("xz", np.array(-3, np.int8)),
        _init("ys", np.array(0.03, np.float32)),
        _init("yz", np.array(7, np.int8)),
        _init("shape", np.array([1, -1], np.int64)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xf"]),
        helper.make_node(op, ["xf"], ["a"], **attrs),
    ]
    if move:
        nodes.append(helper.make_node("Reshape", ["a", "shape"], ["r"]))
    nodes += [
        helper.make_node("QuantizeLinear", ["r" if move else "a", "ys", "yz"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "ys", "yz"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "lookup",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    return model


@pytest.mark.parametrize(
    ("op", "attrs"),
    [("Gelu", {}), ("Gelu", {"approximate": "tanh"}), ("Tanh", {}), ("Elu", {"alpha": 0.5})],
)
@pytest.mark.parametrize("move", [False, True])
def test_elementwise_islands_become_a_lookup_with_the_float_paths_bits(op, attrs, move):
    model = _lookup_model(op, move, **attrs)
    parsed = _parse(model)
    fused = fuse_qdq(parsed.graph, parsed.opset_imports)
    ops = [n.op_type for n in fused.nodes]
    moves = ["Reshape"] if move else []
    assert ops == ["QuantizeLinear", "QLinearLookup", *moves, "DequantizeLinear"]
    # every int8 code (and past the range), against onnxruntime running the float ops
    x = ((np.arange(512, dtype=np.float32) - 256) * np.float32(0.02)).reshape(2, 256)
    got = Plan(parsed.graph, parsed.opset_imports).run({"x": x})[0]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    np.testing.assert_array_equal(got.reshape(want.shape), want)


def test_without_opsets_no_lookup_is_made():
    parsed = _parse(_lookup_model("Gelu", True))
    assert fuse_qdq(parsed.graph) is parsed.graph


@pytest.mark.parametrize("with_bias", [False, True])
def test_dynamic_matmul_integer_chain_becomes_matmul_integer_to_float(with_bias):
    # dynamic quantization's MatMulInteger -> Cast -> Mul(scale) [-> Add(bias)]: one
    # MatMulIntegerToFloat with the graph's own float32 arithmetic, so the same bits.
    # 7-bit weights: onnxruntime's u8 x s8 kernels saturate int16 pair sums on AVX2 without
    # VNNI (an AMD EPYC, Zen 3) against full-range ones
    w = rng.integers(-64, 63, (16, 8), endpoint=True).astype(np.int8)
    inits = [
        _init("w", w),
        _init("wz", np.array(0, np.int8)),
        _init("ws", np.array(0.01, np.float32)),
        _init("bias", rng.standard_normal(8).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
        helper.make_node("Mul", ["xs", "ws"], ["s"]),
        helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["acc"]),
        helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["accf", "s"], ["y0" if with_bias else "y"]),
    ]
    if with_bias:
        nodes.append(helper.make_node("Add", ["bias", "y0"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "dynamic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    parsed = _parse(model)
    ops = [n.op_type for n in fuse_qdq(parsed.graph).nodes]
    assert ops == ["DynamicQuantizeLinear", "Mul", "MatMulIntegerToFloat"]
    x = rng.standard_normal((3, 5, 16)).astype(np.float32)
    got = Plan(parsed.graph, parsed.opset_imports).run({"x": x})[0]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    np.testing.assert_array_equal(got, sess.run(None, {"x": x})[0])
