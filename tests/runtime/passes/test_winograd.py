"""winograd_convs: which convolutions become WinogradConv, what happens to their weights,
and that the plan's outputs still match onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgerun.runtime.onnx_reader import parse_model
from edgerun.runtime.passes import winograd
from edgerun.runtime.plan import Plan

ort = pytest.importorskip("onnxruntime")
rng = np.random.default_rng(0)
C = winograd.MIN_CHANNELS


def _model(convs, x_shape=(1, C, 10, 10), tail=(), outputs=("y",)):
    """x -> the ``convs`` (Conv node attributes, weight name, output name) in a chain."""
    inits, nodes, src = {}, [], "x"
    for i, (attrs, w_name) in enumerate(convs):
        channels = x_shape[1] // attrs.get("group", 1)
        if w_name not in inits:
            shape = (C, channels, *attrs.pop("kernel", (3, 3)))
            inits[w_name] = (rng.standard_normal(shape) / np.sqrt(9 * C)).astype(np.float32)
        else:
            attrs.pop("kernel", None)
        out = "y" if i == len(convs) - 1 and not tail else f"c{i}"
        nodes.append(helper.make_node("Conv", [src, w_name], [out], **attrs))
        src = out
    graph = helper.make_graph(
        [*nodes, *tail],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(w, n) for n, w in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _plan_and_check(model, x_shape):
    parsed = parse_model(memoryview(model.SerializeToString()), None)
    plan = Plan(parsed.graph, parsed.opset_imports)
    x = rng.standard_normal(x_shape).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})
    got = plan.run({"x": x})
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
    return plan


def _ops(plan):
    return [s.node.op_type for s in plan.steps]


PADDED = {"pads": [1, 1, 1, 1]}
TAKEN = {
    "padded": [(dict(PADDED), "w")],
    "unpadded": [({}, "w")],
    "same upper": [({"auto_pad": "SAME_UPPER"}, "w")],
    "explicit unit strides": [({**PADDED, "strides": [1, 1], "dilations": [1, 1]}, "w")],
    "relu fused first": [(dict(PADDED), "w")],
}
NOT_TAKEN = {
    "stride 2": [({**PADDED, "strides": [2, 2]}, "w")],
    "dilated": [({"pads": [2, 2, 2, 2], "dilations": [2, 2]}, "w")],
    "grouped": [({**PADDED, "group": 2}, "w")],
    "5x5": [({"pads": [2, 2, 2, 2], "kernel": (5, 5)}, "w")],
    "1x1": [({"kernel": (1, 1)}, "w")],
}


@pytest.mark.parametrize("case", TAKEN)
def test_taken(case):
    tail = [helper.make_node("Relu", ["c0"], ["y"])] if case == "relu fused first" else ()
    plan = _plan_and_check(_model(TAKEN[case], tail=tail), (1, C, 10, 10))
    assert _ops(plan) == ["WinogradConv"]
    assert "w" not in plan.constants  # the transformed filter replaced it
    assert plan.constants["w::winograd"].shape == (16, C, C)


@pytest.mark.parametrize("case", NOT_TAKEN)
def test_not_taken(case):
    plan = _plan_and_check(_model(NOT_TAKEN[case]), (1, C, 10, 10))
    assert _ops(plan) == ["Conv"]


@pytest.mark.parametrize(("x_shape", "taken"), [((1, C, 8, 8), True), ((1, C, 7, 7), False)])
def test_small_outputs_stay_direct(x_shape, taken):
    plan = _plan_and_check(_model([(dict(PADDED), "w")], x_shape), x_shape)
    assert (_ops(plan) == ["WinogradConv"]) == taken


@pytest.mark.parametrize(
    ("x_shape", "transformed"),
    [
        ((1, C, 16, 16), 36),  # F(4x4) from 16x16 outputs
        ((1, C, 15, 15), 16),  # F(2x2) below
        ((1, C, "h", "w"), 36),  # size unknown: up to 128 channels, F(4x4)
    ],
)
def test_large_outputs_take_f4x4(x_shape, transformed):
    run_shape = (1, C, 17, 19) if "h" in x_shape else x_shape
    plan = _plan_and_check(_model([(dict(PADDED), "w")], x_shape), run_shape)
    assert _ops(plan) == ["WinogradConv"]
    assert plan.constants["w::winograd"].shape == (transformed, C, C)


def test_f4x4_filters_past_their_cap_take_f2x2(monkeypatch):
    monkeypatch.setattr(winograd, "F4_BYTES", 4 * C * C * 9 * 4 - 1)
    plan = _plan_and_check(_model([(dict(PADDED), "w")], (1, C, 16, 16)), (1, C, 16, 16))
    assert plan.constants["w::winograd"].shape == (16, C, C)


def test_few_channels_stay_direct():
    plan = _plan_and_check(_model([(dict(PADDED), "w")], (1, C - 1, 10, 10)), (1, C - 1, 10, 10))
    assert _ops(plan) == ["Conv"]


def test_shared_weight_is_kept_for_its_other_reader():
    # the same weight read by a Winograd convolution and by a strided one
    model = _model([(dict(PADDED), "w"), ({**PADDED, "strides": [2, 2]}, "w")])
    plan = _plan_and_check(model, (1, C, 10, 10))
    assert _ops(plan) == ["WinogradConv", "Conv"]
    assert "w" in plan.constants and "w::winograd" in plan.constants


def test_residual_chain_matches_onnxruntime():
    # Winograd output (channels-last) feeding an Add with the input and a second Winograd
    model = _model(
        [(dict(PADDED), "w1"), (dict(PADDED), "w2")],
        (1, C, 12, 12),
        tail=[helper.make_node("Add", ["c1", "x"], ["y"])],
    )
    plan = _plan_and_check(model, (1, C, 12, 12))
    assert _ops(plan) == ["WinogradConv", "WinogradConv", "Add"]


@pytest.mark.parametrize(("case", "inferred"), [("stride 2", 0), ("padded", 1)])
def test_shapes_are_inferred_only_for_a_suitable_filter(monkeypatch, case, inferred):
    from edgerun.runtime import plan as plan_module

    calls = []
    real = plan_module.infer_shapes
    monkeypatch.setattr(plan_module, "infer_shapes", lambda g: calls.append(1) or real(g))
    convs = (NOT_TAKEN | TAKEN)[case]
    _plan_and_check(_model([(dict(a), w) for a, w in convs] * 2), (1, C, 10, 10))
    assert len(calls) == inferred  # once per plan, however many convolutions suit


def test_shapes_are_inferred_once_for_the_residual_fusion_and_winograd(monkeypatch):
    from edgerun.runtime import plan as plan_module
    from edgerun.runtime.passes import fuse_activation

    calls = []
    real = plan_module.infer_shapes
    for module in (plan_module, fuse_activation):  # wherever a pass could call it
        monkeypatch.setattr(module, "infer_shapes", lambda g: calls.append(1) or real(g))
    tail = [helper.make_node("Add", ["c1", "x"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    model = _model([(dict(PADDED), "w1"), (dict(PADDED), "w2")], tail=tail)
    plan = _plan_and_check(model, (1, C, 10, 10))
    assert _ops(plan) == ["WinogradConv", "WinogradConv"]  # the second with Z and the Relu
    assert len(calls) == 1
