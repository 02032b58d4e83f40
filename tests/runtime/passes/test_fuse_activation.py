"""fuse_activation: Conv -> Relu/Clip pairs become FusedConv; the plan still matches onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgerun.runtime.onnx_reader import parse_model
from edgerun.runtime.passes.fuse_activation import fuse_activation
from edgerun.runtime.plan import Plan

ort = pytest.importorskip("onnxruntime")
rng = np.random.default_rng(0)


def _model(act_nodes, extra_inits=(), opset=17, outputs=("y",), extra_inputs=()):
    """x -> Conv (c) -> the activation nodes, which write y."""
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    inits += [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in extra_inits]
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv")
    graph = helper.make_graph(
        [conv, *act_nodes],
        "g",
        [
            helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 6, 6]),
            *(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, []) for n in extra_inputs),
        ],
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in outputs],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


FUSED = {
    "relu": _model([helper.make_node("Relu", ["c"], ["y"])]),
    "clip inputs": _model(
        [helper.make_node("Clip", ["c", "lo", "hi"], ["y"])], [("lo", 0.0), ("hi", 6.0)]
    ),
    "clip min only": _model([helper.make_node("Clip", ["c", "lo"], ["y"])], [("lo", -0.5)]),
    "clip max only": _model([helper.make_node("Clip", ["c", "", "hi"], ["y"])], [("hi", 0.5)]),
    "clip attributes": _model([helper.make_node("Clip", ["c"], ["y"], min=-1.0, max=1.0)], opset=6),
}
NOT_FUSED = {
    "conv output is a graph output": _model(
        [helper.make_node("Relu", ["c"], ["y"])], outputs=("y", "c")
    ),
    "conv output read twice": _model(
        [helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Add", ["r", "c"], ["y"])]
    ),
    "clip bound not constant": _model(
        [helper.make_node("Clip", ["c", "lo"], ["y"])], extra_inputs=("lo",)
    ),
    "clip without bounds": _model([helper.make_node("Clip", ["c"], ["y"])]),
    "not an activation": _model([helper.make_node("Sigmoid", ["c"], ["y"])]),
}


def _residual(
    z_shape=(1, 4, 6, 6), conv_first=True, act="Relu", outputs=("y",), tail=(), add_op="Add"
):
    """x -> Conv (c) -> Add with input z -> ``act`` -> y: a residual block's end."""
    add = ["c", "z"] if conv_first else ["z", "c"]
    nodes = [helper.make_node(add_op, add, ["s"]), helper.make_node(act, ["s"], ["y"]), *tail]
    model = _model(nodes, outputs=outputs)
    z = helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, list(z_shape))
    model.graph.input.append(z)
    return model


RESIDUAL_FUSED = {
    "conv first": _residual(),
    "conv second": _residual(conv_first=False),
    "two-input sum": _residual(add_op="Sum"),
}
RESIDUAL_NOT_FUSED = {
    "z broadcasts": _residual(z_shape=(1, 4, 1, 1)),
    "sum is a graph output": _residual(outputs=("y", "s")),
    "sum read twice": _residual(outputs=("t",), tail=[helper.make_node("Add", ["y", "s"], ["t"])]),
    "not an activation": _residual(act="Sigmoid"),
}


def _batch_norm(model, after="c"):
    """``model`` with a BatchNormalization of constant parameters between its Conv and what
    read the Conv, as models exported with their BatchNormalization nodes have it."""
    params = [rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(4)]
    params.append(rng.uniform(0.5, 2.0, 4))
    names = [f"bn_{k}" for k in ("scale", "shift", "mean", "var")]
    for name, value in zip(names, params, strict=True):
        model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
    for node in model.graph.node:
        node.input[:] = ["bn" if n == after else n for n in node.input]
    model.graph.node.insert(1, helper.make_node("BatchNormalization", [after, *names], ["bn"]))
    return model


def _z_computed_after_the_conv(model):
    """``model`` whose residual operand z is computed by a node after the Conv."""
    model.graph.input[1].name = "z_in"
    model.graph.node.insert(1, helper.make_node("Sigmoid", ["z_in"], ["z"]))
    return model


# the plan fuses after folding BatchNormalization, on its steps in their running order
PLAN_FUSED = {
    "conv, batch norm, relu": _batch_norm(_model([helper.make_node("Relu", ["c"], ["y"])])),
    "conv, batch norm, clip": _batch_norm(
        _model([helper.make_node("Clip", ["c", "lo", "hi"], ["y"])], [("lo", 0.0), ("hi", 6.0)])
    ),
    "conv, batch norm, sum, relu": _batch_norm(_residual(add_op="Sum")),
    "residual computed after the conv": _z_computed_after_the_conv(_residual()),
}


def _parse(model):
    return parse_model(memoryview(model.SerializeToString()), None)


def _feeds(model):
    feeds = {"x": rng.standard_normal((1, 3, 6, 6)).astype(np.float32) * 2}
    for value in model.graph.input[1:]:
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        feeds[value.name] = (
            np.full(shape, -0.25, np.float32)
            if value.name == "lo"
            else (rng.standard_normal(shape).astype(np.float32))
        )
    return feeds


def _check_against_onnxruntime(model):
    feeds = _feeds(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    parsed = _parse(model)
    got = Plan(parsed.graph, parsed.opset_imports).run(feeds)
    for g, want in zip(got, sess.run(None, feeds), strict=True):
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", FUSED)
def test_pairs_fuse_into_fused_conv(name):
    graph = fuse_activation(_parse(FUSED[name]).graph)
    assert [(n.op_type, n.domain) for n in graph.nodes] == [("FusedConv", "com.microsoft")]
    assert graph.nodes[0].outputs == ["y"]
    _check_against_onnxruntime(FUSED[name])


@pytest.mark.parametrize("name", NOT_FUSED)
def test_pairs_that_cannot_fuse_are_left_alone(name):
    graph = _parse(NOT_FUSED[name]).graph
    assert fuse_activation(graph) is graph
    _check_against_onnxruntime(NOT_FUSED[name])


@pytest.mark.parametrize("name", RESIDUAL_FUSED)
def test_residual_ends_fuse_with_their_sum_as_z(name):
    graph = fuse_activation(_parse(RESIDUAL_FUSED[name]).graph)
    ((fused),) = graph.nodes
    assert (fused.op_type, fused.inputs, fused.outputs) == (
        "FusedConv",
        ["x", "w", "b", "z"],
        ["y"],
    )
    _check_against_onnxruntime(RESIDUAL_FUSED[name])


@pytest.mark.parametrize("name", RESIDUAL_NOT_FUSED)
def test_residual_ends_that_cannot_fuse_keep_their_add(name):
    graph = fuse_activation(_parse(RESIDUAL_NOT_FUSED[name]).graph)
    assert "Add" in [n.op_type for n in graph.nodes]
    _check_against_onnxruntime(RESIDUAL_NOT_FUSED[name])


@pytest.mark.parametrize("name", PLAN_FUSED)
def test_the_plan_fuses_after_folding_batch_norm(name):
    parsed = _parse(PLAN_FUSED[name])
    ops = [s.node.op_type for s in Plan(parsed.graph, parsed.opset_imports).steps]
    assert ops.count("FusedConv") == 1
    assert not {"Conv", "BatchNormalization", "Relu", "Clip", "Add", "Sum"} & set(ops)
    _check_against_onnxruntime(PLAN_FUSED[name])
