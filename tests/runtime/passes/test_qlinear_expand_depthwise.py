"""qlinear_expand_depthwise: a 1x1 QLinearConv and the depthwise QLinearConv reading it run
as one step; outputs still match onnxruntime's."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

from edgerun.runtime import plan as plan_module
from edgerun.runtime.onnx_reader import parse_model
from edgerun.runtime.plan import Plan

ort = pytest.importorskip("onnxruntime")
f32 = np.float32
C, M = 8, 24  # input channels, expanded channels


def _model(outputs=("y",), expand_attrs=None, mid_zero=3, tail=(), x_type=np.int8):
    """x -> QLinearConv 1x1 (C -> M) -> mid -> depthwise QLinearConv 3x3 -> y, int8
    activations (onnxruntime's uint8 x int8 kernels saturate on AVX2 without VNNI)."""
    rng = np.random.default_rng(0)
    inits = {
        "xs": np.array(0.05, f32),
        "xz": np.array(-7 if x_type == np.int8 else 121, x_type),
        "w": rng.integers(-127, 127, (M, C, 1, 1), endpoint=True).astype(np.int8),
        "ws": rng.uniform(0.002, 0.02, M).astype(f32),
        "wz": np.zeros(M, np.int8),
        "ms": np.array(0.08, f32),
        "mz": np.array(3, x_type),
        "mz_read": np.array(mid_zero, x_type),
        "b": rng.integers(-1000, 1000, M).astype(np.int32),
        "wd": rng.integers(-127, 127, (M, 1, 3, 3), endpoint=True).astype(np.int8),
        "wds": rng.uniform(0.002, 0.02, M).astype(f32),
        "wdz": np.zeros(M, np.int8),
        "ys": np.array(0.1, f32),
        "yz": np.array(5, x_type),
        "bd": rng.integers(-1000, 1000, M).astype(np.int32),
    }
    nodes = [
        helper.make_node(
            "QLinearConv",
            ["x", "xs", "xz", "w", "ws", "wz", "ms", "mz", "b"],
            ["mid"],
            **(expand_attrs or {}),
        ),
        helper.make_node(
            "QLinearConv",
            ["mid", "ms", "mz_read", "wd", "wds", "wdz", "ys", "yz", "bd"],
            ["y"],
            group=M,
            pads=[1, 1, 1, 1],
        ),
        *tail,
    ]
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(x_type))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", elem, [1, C, 10, 12])],
        [helper.make_tensor_value_info(n, elem, None) for n in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _plan_and_check(model):
    parsed = parse_model(memoryview(model.SerializeToString()), None)
    plan = Plan(parsed.graph, parsed.opset_imports)
    x = np.random.default_rng(1).integers(-128, 127, (1, C, 10, 12), endpoint=True)
    x = x.astype(np.int8)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    for got, want in zip(plan.run({"x": x}), sess.run(None, {"x": x}), strict=True):
        np.testing.assert_array_equal(got, want)
    return [s.node.op_type for s in plan.steps]


def test_taken():
    assert _plan_and_check(_model()) == ["QLinearExpandDepthwiseConv"]


NOT_TAKEN = {
    "the expansion's output is a graph output": _model(outputs=("y", "mid")),
    "the expansion's output read twice": _model(
        tail=[helper.make_node("Identity", ["mid"], ["z"])], outputs=("y", "z")
    ),
    "the depthwise input's zero point differs": _model(mid_zero=4),
    "a strided expansion": _model(expand_attrs={"strides": [2, 2]}),
}


@pytest.mark.parametrize("why", NOT_TAKEN)
def test_not_taken(why):
    ops = _plan_and_check(NOT_TAKEN[why])
    assert "QLinearExpandDepthwiseConv" not in ops
    assert ops.count("QLinearConv") == 2


def test_uint8_pair_is_taken_and_runs_as_the_two_steps(monkeypatch):
    # onnxruntime's uint8 x int8 kernels are no oracle on every machine: the unfused plan is
    model = _model(x_type=np.uint8).SerializeToString()
    x = np.random.default_rng(2).integers(0, 255, (1, C, 10, 12), endpoint=True).astype(np.uint8)

    def run():
        parsed = parse_model(memoryview(model), None)
        plan = Plan(parsed.graph, parsed.opset_imports)
        return [s.node.op_type for s in plan.steps], plan.run({"x": x})[0]

    ops, fused = run()
    monkeypatch.setattr(plan_module, "qlinear_expand_depthwise", lambda steps, *args: steps)
    two_ops, two_steps = run()
    assert ops == ["QLinearExpandDepthwiseConv"] and two_ops == ["QLinearConv"] * 2
    np.testing.assert_array_equal(fused, two_steps)
