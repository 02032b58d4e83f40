"""clip_into_depthwise: a Conv's Relu/Clip moves into the depthwise Conv reading it;
outputs still match onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgerun.runtime.onnx_reader import parse_model
from edgerun.runtime.plan import Plan

ort = pytest.importorskip("onnxruntime")
rng = np.random.default_rng(0)
C, M = 4, 12  # input channels, expanded channels


def _model(
    act="clip",
    dw_attrs=None,
    expand_kernel=1,
    multiplier=1,
    outputs=("y",),
    tail=(),
    expand_group=1,
    expand_dilations=None,
):
    """x -> Conv kxk (C -> M) -> ``act`` -> depthwise Conv 3x3 (M) -> Relu -> y."""
    k = expand_kernel
    inits = {
        "we": rng.standard_normal((M, C // expand_group, k, k)).astype(np.float32),
        "be": rng.standard_normal(M).astype(np.float32),
        "wd": rng.standard_normal((M * multiplier, 1, 3, 3)).astype(np.float32),
        "lo": np.array(0.0, np.float32),
        "hi": np.array(6.0, np.float32),
    }
    d = (expand_dilations or [1])[0]
    pad = d * (expand_kernel - 1) // 2
    first = {"group": expand_group, **({"dilations": expand_dilations} if expand_dilations else {})}
    nodes = [helper.make_node("Conv", ["x", "we", "be"], ["e"], pads=[pad] * 4, **first)]
    if act == "clip":
        nodes.append(helper.make_node("Clip", ["e", "lo", "hi"], ["a"]))
    else:
        nodes.append(helper.make_node("Relu", ["e"], ["a"]))
    attrs = {"group": M, "pads": [1, 1, 1, 1], **(dw_attrs or {})}
    nodes.append(helper.make_node("Conv", ["a", "wd"], ["d"], **attrs))
    nodes.append(helper.make_node("Relu", ["d"], ["y"]))
    graph = helper.make_graph(
        [*nodes, *tail],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, C, 9, 10])],
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _plan_and_check(model):
    parsed = parse_model(memoryview(model.SerializeToString()), None)
    plan = Plan(parsed.graph, parsed.opset_imports)
    x = (rng.standard_normal((1, C, 9, 10)) * 3).astype(np.float32)  # values the clip cuts
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for got, want in zip(plan.run({"x": x}), sess.run(None, {"x": x}), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    return [s.node.op_type for s in plan.steps]


@pytest.mark.parametrize("act", ["clip", "relu"])
@pytest.mark.parametrize("dw_attrs", [{}, {"strides": [2, 2]}, {"pads": [0, 1, 2, 0]}])
@pytest.mark.parametrize("expand_kernel", [1, 3])
def test_taken(act, dw_attrs, expand_kernel):
    model = _model(act, dw_attrs, expand_kernel=expand_kernel)
    # the expansion (1x1, or 3x3 as a stem) and its depthwise Conv become one step
    assert _plan_and_check(model) == ["ExpandDepthwiseConv"]


NOT_TAKEN = {
    "expand output is a graph output": _model(outputs=("y", "a")),
    "expand output read twice": _model(
        outputs=("z",), tail=[helper.make_node("Add", ["y", "a"], ["z"])]
    ),
    "channel multiplier": _model(multiplier=2),
}
CLIPPED_ONLY = {  # the clip moves, the two convolutions stay apart
    "grouped expansion": _model(expand_group=2),
    "dilated expansion": _model(expand_kernel=3, expand_dilations=[2, 2]),
}


@pytest.mark.parametrize("case", CLIPPED_ONLY)
def test_clip_moves_without_fusing(case):
    assert _plan_and_check(CLIPPED_ONLY[case]) == ["Conv", "ClippedInputConv"]


@pytest.mark.parametrize("case", NOT_TAKEN)
def test_not_taken(case):
    ops = _plan_and_check(NOT_TAKEN[case])
    assert "ClippedInputConv" not in ops and "ExpandDepthwiseConv" not in ops
