"""fold_batch_norm: Conv -> BatchNormalization folds into the Conv; outputs match onnxruntime."""

from __future__ import annotations

import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgerun.runtime.graph import Node
from edgerun.runtime.onnx_reader import parse_model
from edgerun.runtime.passes.fold_batchnorm import _folded
from edgerun.runtime.plan import Plan, Step

ort = pytest.importorskip("onnxruntime")
rng = np.random.default_rng(0)
M = 4  # output channels


def _model(tail, opset=15, bias=True, outputs=("y",), bn_attrs=None, computed=False):
    """x -> Conv (c) -> BatchNormalization (n) -> ``tail`` nodes, which write y.

    ``computed``: the BatchNormalization's mean comes from a ConstantOfShape node, as in
    onnx's light_* models, so it is a constant only after constant folding.
    """
    w = rng.standard_normal((M, 3, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(M).astype(np.float32), "b"))
    params = {
        "scale": rng.uniform(0.5, 2, M),
        "shift": rng.standard_normal(M),
        "mean": rng.standard_normal(M),
        "var": rng.uniform(0.1, 3, M),
    }
    nodes = [helper.make_node("Conv", ["x", "w", "b" if bias else ""], ["c"], pads=[1, 1, 1, 1])]
    if computed:
        del params["mean"]
        inits.append(numpy_helper.from_array(np.array([M], np.int64), "mean_shape"))
        value = helper.make_tensor("v", onnx.TensorProto.FLOAT, [1], [0.25])
        nodes.append(helper.make_node("ConstantOfShape", ["mean_shape"], ["mean"], value=value))
    inits += [numpy_helper.from_array(v.astype(np.float32), k) for k, v in params.items()]
    bn = helper.make_node(
        "BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["n"], **(bn_attrs or {})
    )
    graph = helper.make_graph(
        [*nodes, bn, *tail],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3, 7, 6])],
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in outputs],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


RELU = [helper.make_node("Relu", ["n"], ["y"])]
FOLDED = {
    "with bias": _model(RELU),
    "without bias": _model(RELU, bias=False),
    "epsilon": _model(RELU, bn_attrs={"epsilon": 0.1}),
    "opset 9": _model(RELU, opset=9),
    "opset 7 spatial": _model(RELU, opset=7, bn_attrs={"spatial": 1}),
    "bn is the output": _model([], outputs=("n",)),
    "computed parameters": _model(RELU, computed=True),
}
NOT_FOLDED = {
    "conv output is a graph output": _model(RELU, outputs=("y", "c")),
    "conv output read twice": _model([helper.make_node("Add", ["n", "c"], ["y"])], outputs=("y",)),
}


def _plan(model):
    parsed = parse_model(memoryview(model.SerializeToString()), None)
    return Plan(parsed.graph, parsed.opset_imports)


def _check(model):
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    plan = _plan(model)
    got = plan.run({"x": x})
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})
    for value, expected in zip(got, want, strict=True):
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-5)
    return [s.node.op_type for s in plan.steps]


@pytest.mark.parametrize("name", FOLDED)
def test_batch_norm_folds_into_the_conv(name):
    ops = _check(FOLDED[name])
    assert "BatchNormalization" not in ops
    assert "ConstantOfShape" not in ops


@pytest.mark.parametrize("name", NOT_FOLDED)
def test_batch_norm_stays_where_folding_would_change_a_value(name):
    assert "BatchNormalization" in _check(NOT_FOLDED[name])


def test_the_unfolded_weights_are_released():
    plan = _plan(FOLDED["with bias"])
    assert "w" not in plan.constants and "b" not in plan.constants


def test_folding_takes_no_float64_copy_of_the_weights():
    # a weight-sized float64 product, then its float32 copy, tripled the weights' memory at
    # load (onnx's light_resnet50: 98 MB of weights, about 20 ms of it)
    w = np.ones((256, 256, 3, 3), np.float32)
    params = ["scale", "shift", "mean", "var"]
    constants = {"w": w} | {p: np.full(256, 0.5, np.float32) for p in params}
    conv = Step(Node("Conv", ["x", "w"], ["c"]), None, ("x", "w"), ("c",), {}, (), ())
    bn = Step(
        Node("BatchNormalization", ["c", *params], ["n"]), None, ("c", *params), ("n",), {}, (), ()
    )
    tracemalloc.start()
    try:
        weight, _ = _folded(conv, bn, constants)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert weight.dtype == np.float32
    np.testing.assert_array_equal(weight, np.float32(0.5 / np.sqrt(0.5 + 1e-5)))
    assert peak < 1.5 * w.nbytes


def test_a_broadcast_weight_folds_into_a_broadcast():
    # a folded ConstantOfShape (onnx's light_* models' weights) is one value: the folded
    # weight is one per output channel, kept broadcast instead of written out
    w = np.broadcast_to(np.float32(0.02), (256, 64, 3, 3))
    params = ["scale", "shift", "mean", "var"]
    constants = {"w": w} | {p: rng.uniform(0.5, 2, 256).astype(np.float32) for p in params}
    conv = Step(Node("Conv", ["x", "w"], ["c"]), None, ("x", "w"), ("c",), {}, (), ())
    bn = Step(
        Node("BatchNormalization", ["c", *params], ["n"]), None, ("c", *params), ("n",), {}, (), ()
    )
    weight, bias = _folded(conv, bn, constants)
    assert weight.shape == w.shape and weight.strides[1:] == (0, 0, 0)
    want_weight, want_bias = _folded(conv, bn, constants | {"w": np.ascontiguousarray(w)})
    np.testing.assert_array_equal(weight, want_weight)
    np.testing.assert_array_equal(bias, want_bias)
