"""fuse_swish: Sigmoid -> Mul of its input becomes one Swish; outputs still match
onnxruntime, and pairs that must stay apart do."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgerun.runtime.onnx_reader import parse_model
from edgerun.runtime.plan import Plan

ort = pytest.importorskip("onnxruntime")
rng = np.random.default_rng(0)


def _model(mul_inputs=("c", "s"), outputs=("y",), tail=()):
    """x -> Conv 3x3 -> c -> Sigmoid -> s -> Mul(``mul_inputs``) -> y."""
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c"], ["s"]),
        helper.make_node("Mul", list(mul_inputs), ["y"]),
        *tail,
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 20, 20])],
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _plan_and_check(model):
    parsed = parse_model(memoryview(model.SerializeToString()), None)
    plan = Plan(parsed.graph, parsed.opset_imports)
    x = (rng.standard_normal((1, 3, 20, 20)) * 4).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for got, want in zip(plan.run({"x": x}), sess.run(None, {"x": x}), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return [s.node.op_type for s in plan.steps]


@pytest.mark.parametrize("mul_inputs", [("c", "s"), ("s", "c")])
def test_taken(mul_inputs):
    assert _plan_and_check(_model(mul_inputs)) == ["Conv", "Swish"]


NOT_TAKEN = {
    "sigmoid output is a graph output": _model(outputs=("y", "s")),
    "sigmoid output read twice": _model(
        outputs=("z",), tail=[helper.make_node("Add", ["y", "s"], ["z"])]
    ),
    "Mul of the sigmoid with another tensor": _model(
        mul_inputs=("d", "s"), tail=[helper.make_node("Conv", ["x", "w"], ["d"], pads=[1] * 4)]
    ),
}


@pytest.mark.parametrize("model", NOT_TAKEN.values(), ids=NOT_TAKEN.keys())
def test_not_taken(model):
    assert "Swish" not in _plan_and_check(model)
