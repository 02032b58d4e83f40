"""Depthwise (both einsum layouts) and FusedConv (Conv + Relu/Clip) against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from edgerun.runtime.kernels import conv
from edgerun.runtime.registry import resolve

ort = pytest.importorskip("onnxruntime")
rng = np.random.default_rng(0)

DEPTHWISE = [
    ((1, 8, 9, 11), (8, 1, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 8, 10, 9), (8, 1, 3, 3), {"pads": [1, 0, 1, 1], "strides": [2, 2]}),
    ((1, 6, 9, 9), (6, 1, 3, 3), {"pads": [2, 2, 2, 2], "dilations": [2, 2]}),
    ((1, 6, 8, 8), (6, 1, 5, 5), {"pads": [3, 1, 0, 2], "strides": [3, 2]}),
    ((1, 4, 2, 7), (4, 1, 3, 3), {"pads": [4, 1, 4, 1]}),  # rows that read only padding
    ((1, 5, 12), (5, 1, 3), {"pads": [1, 1], "strides": [2]}),
    ((1, 16, 11, 13), (16, 1, 4, 4), {"pads": [1, 2, 2, 1], "strides": [1, 2]}),  # even kernel
    ((1, 3, 4, 5, 9), (3, 1, 3, 2, 3), {"pads": [1, 0, 1, 1, 1, 1], "strides": [2, 1, 2]}),
]
# activation, activation_params, the plain onnx activation node's inputs or attributes
ACTIVATIONS = [("Relu", None), ("Clip", [0.0, 6.0]), ("Clip", [-0.5, 0.25])]


def _run_ort(nodes, inputs, domain_opsets=(("", 17),)):
    names = [f"i{k}" for k in range(len(inputs))]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, 1, a.shape) for n, a in zip(names, inputs, strict=True)],
        [helper.make_tensor_value_info("y", 1, None)],
    )
    opsets = [helper.make_opsetid(d, v) for d, v in domain_opsets]
    model = helper.make_model(graph, opset_imports=opsets)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, dict(zip(names, inputs, strict=True)))[0]


def _case(xs, ws, channels_last=False):
    x = rng.standard_normal(xs).astype(np.float32)
    if channels_last:  # stored channels-last, as the depthwise and 1x1 paths return it
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
        x = np.moveaxis(x, -1, 1)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    return x, w, b


@pytest.mark.parametrize("below", [0, 1 << 10])  # C-long inner loops; W*C-long ones
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize(("xs", "ws", "attrs"), DEPTHWISE)
def test_depthwise_matches_onnxruntime(monkeypatch, below, channels_last, xs, ws, attrs):
    # W*C-long rows: weights tiled at stride 1, columns split by parity at stride 2
    monkeypatch.setattr(conv, "_TILE_BELOW", below)
    monkeypatch.setattr(conv, "_SPLIT_BELOW", below)
    x, w, b = _case(xs, ws, channels_last=channels_last)
    attrs = {**attrs, "group": ws[0]}
    got = resolve("", "Conv", 17).fn(x, w, b, **attrs)
    node = helper.make_node("Conv", ["i0", "i1", "i2"], ["y"], **attrs)
    want = _run_ort([node], [np.ascontiguousarray(x), w, b])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


FUSED = [
    *DEPTHWISE[:4],
    ((1, 3, 12, 12), (8, 3, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),  # image input
    ((1, 16, 5, 5), (8, 16, 1, 1), {}),  # 1x1
    ((2, 6, 5, 4), (4, 3, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),
]


@pytest.mark.parametrize(("activation", "params"), ACTIVATIONS)
@pytest.mark.parametrize(("xs", "ws", "attrs"), FUSED)
def test_fused_conv_matches_onnxruntime(activation, params, xs, ws, attrs):
    x, w, b = _case(xs, ws)
    if "group" not in attrs and ws[1] == 1:
        attrs = {**attrs, "group": ws[0]}
    fused = {**attrs, "activation": activation}
    if params is not None:
        fused["activation_params"] = params
    got = resolve("com.microsoft", "FusedConv", 1).fn(x, w, b, **fused)
    node = helper.make_node("FusedConv", ["i0", "i1", "i2"], ["y"], domain="com.microsoft", **fused)
    want = _run_ort([node], [x, w, b], (("", 17), ("com.microsoft", 1)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_fused_conv_adds_z_before_the_activation():
    x, w, b = _case((1, 4, 6, 6), (4, 4, 3, 3))
    z = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    attrs = {"pads": [1, 1, 1, 1], "activation": "Relu"}
    got = resolve("com.microsoft", "FusedConv", 1).fn(x, w, b, z, **attrs)
    node = helper.make_node(
        "FusedConv", ["i0", "i1", "i2", "i3"], ["y"], domain="com.microsoft", **attrs
    )
    want = _run_ort([node], [x, w, b, z], (("", 17), ("com.microsoft", 1)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_fused_conv_rejects_an_activation_it_does_not_clip():
    x, w, b = _case((1, 2, 4, 4), (2, 2, 1, 1))
    with pytest.raises(ValueError, match="Tanh"):
        resolve("com.microsoft", "FusedConv", 1).fn(x, w, b, activation="Tanh")


@pytest.mark.parametrize("group", [1, 8])  # the clip on x first; in the padded copy
@pytest.mark.parametrize("pads", [[1, 1, 1, 1], [-1, 0, 1, 1]])  # cropping: x clipped first
@pytest.mark.parametrize("strides", [[1, 1], [2, 2]])  # depthwise: padded; split by parity
def test_clipped_input_conv_clips_its_input(group, pads, strides):
    x = (rng.standard_normal((1, 8, 7, 6)) * 3).astype(np.float32)
    w = rng.standard_normal((8, 8 // group, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    attrs = {"group": group, "pads": pads, "strides": strides}
    got = resolve("com.microsoft", "ClippedInputConv", 1).fn(x, w, b, input_clip=[-1, 2], **attrs)
    want = resolve("", "Conv", 13).fn(np.clip(x, -1, 2), w, b, **attrs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
