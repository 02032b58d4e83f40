"""QLinearExpandDepthwiseConv: the fused int8 expansion and depthwise layer gives the two
QLinearConv steps' outputs bit for bit, and onnxruntime's."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

from edgerun.runtime.kernels import qlinear_expand
from edgerun.runtime.kernels.qlinear import qlinear_conv_10

ort = pytest.importorskip("onnxruntime")
f32 = np.float32
fused = qlinear_expand.q_linear_expand_depthwise_conv_1


def _layers(seed, dtype, c, m, per_channel, bias_bits=10, w_zero=0):
    """Inputs of a 1x1 QLinearConv (C -> M) and a 3x3 depthwise one: (x, expansion's
    eight inputs after x, depthwise's six after its x), the expansion's output quantized
    as the depthwise layer's input."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    wtype = np.int8 if w_zero == 0 else np.uint8
    winfo = np.iinfo(wtype)
    channels = m if per_channel else 1
    scale = (
        (lambda n: rng.uniform(0.002, 0.02, n).astype(f32))
        if per_channel
        else (lambda n: np.array(rng.uniform(0.002, 0.02), f32))
    )
    zero = np.array(rng.integers(info.min, info.max, endpoint=True), dtype)
    mid_zero = np.array(rng.integers(info.min, info.max, endpoint=True), dtype)
    wz = np.full(channels, w_zero, wtype) if per_channel else np.array(w_zero, wtype)
    expansion = [
        np.array(0.05, f32),
        zero,
        rng.integers(winfo.min, winfo.max, (m, c, 1, 1), endpoint=True).astype(wtype),
        scale(m),
        wz,
        np.array(0.08, f32),
        mid_zero,
        rng.integers(-(1 << bias_bits), 1 << bias_bits, m).astype(np.int32),
    ]
    depthwise = [
        rng.integers(winfo.min, winfo.max, (m, 1, 3, 3), endpoint=True).astype(wtype),
        scale(m),
        wz.copy(),
        np.array(0.1, f32),
        np.array(rng.integers(info.min, info.max, endpoint=True), dtype),
        rng.integers(-(1 << bias_bits), 1 << bias_bits, m).astype(np.int32),
    ]
    return expansion, depthwise


def _image(seed, dtype, c, h, w, channels_last):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed + 100)
    x = rng.integers(info.min, info.max, (1, h, w, c), endpoint=True).astype(dtype)
    return (
        x.transpose(0, 3, 1, 2) if channels_last else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    )


def _two_steps(x, expansion, depthwise, attrs):
    mid = qlinear_conv_10(x, *expansion)
    return qlinear_conv_10(mid, *expansion[5:7], *depthwise, **attrs)


CASES = {
    "stride 1, same pads": ((1, 1), (1, 1, 1, 1)),
    "stride 2 (columns split by parity)": ((2, 2), (1, 1, 1, 1)),
    "stride 2, pads after only": ((2, 2), (0, 0, 1, 1)),
    "asymmetric pads": ((1, 1), (0, 1, 2, 0)),
    "no pads": ((1, 1), (0, 0, 0, 0)),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("channels_last", [True, False])
def test_fused_is_the_two_steps_bit_for_bit(case, dtype, per_channel, channels_last):
    strides, pads = CASES[case]
    expansion, depthwise = _layers(1, dtype, 6, 20, per_channel)
    x = _image(1, dtype, 6, 11, 14, channels_last)
    attrs = {"group": 20, "kernel_shape": [3, 3], "pads": list(pads), "strides": list(strides)}
    got = fused(x, *expansion, *depthwise, **attrs)
    want = _two_steps(x, expansion, depthwise, attrs)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("strides", [(1, 1), (2, 2)])
def test_wide_layers_and_uint8_weights_with_a_zero_point(strides):
    # 260 channels: past the parity-split and tiled-weights thresholds (256)
    expansion, depthwise = _layers(2, np.uint8, 24, 260, True, w_zero=131)
    x = _image(2, np.uint8, 24, 9, 9, True)
    attrs = {"group": 260, "pads": [1, 1, 1, 1], "strides": list(strides)}
    np.testing.assert_array_equal(
        fused(x, *expansion, *depthwise, **attrs), _two_steps(x, expansion, depthwise, attrs)
    )


@pytest.mark.parametrize("why", ["bias past 2^24", "a batch of two", "long expansion sums"])
def test_falls_back_to_the_two_steps(monkeypatch, why):
    expansion, depthwise = _layers(3, np.uint8, 6, 12, True, bias_bits=10)
    x = _image(3, np.uint8, 6, 8, 8, True)
    if why == "bias past 2^24":
        depthwise[5] = np.full(12, 1 << 24, np.int32)
    elif why == "a batch of two":
        x = np.concatenate([x, x[:, :, ::-1]])
    else:
        monkeypatch.setattr(qlinear_expand.int8, "FLOAT32_EXACT", 1 << 10)
    calls = []
    real = qlinear_expand.qlinear_conv_10
    monkeypatch.setattr(
        qlinear_expand, "qlinear_conv_10", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    attrs = {"group": 12, "pads": [1, 1, 1, 1]}
    got = fused(x, *expansion, *depthwise, **attrs)
    assert len(calls) == 2
    np.testing.assert_array_equal(got, _two_steps(x, expansion, depthwise, attrs))


def test_mismatched_channels_fail_as_the_two_steps_do():
    expansion, depthwise = _layers(5, np.uint8, 6, 12, False)
    x = _image(5, np.uint8, 5, 8, 8, True)  # 5 channels for 6-channel weights
    attrs = {"group": 12, "pads": [1, 1, 1, 1]}
    with pytest.raises(ValueError) as fused_error:
        fused(x, *expansion, *depthwise, **attrs)
    with pytest.raises(ValueError) as two_steps_error:
        _two_steps(x, expansion, depthwise, attrs)
    assert str(fused_error.value) == str(two_steps_error.value)


def _ort_pair(x, expansion, depthwise, attrs):
    names = ["xs", "xz", "w", "ws", "wz", "ms", "mz", "b", "wd", "wds", "wdz", "ys", "yz", "bd"]
    values = dict(zip(names, [*expansion, *depthwise], strict=True))
    first = helper.make_node("QLinearConv", ["x", *names[:8]], ["mid"])
    second = helper.make_node("QLinearConv", ["mid", "ms", "mz", *names[8:]], ["y"], **attrs)
    out = helper.np_dtype_to_tensor_dtype(x.dtype)
    graph = helper.make_graph(
        [first, second],
        "g",
        [helper.make_tensor_value_info("x", out, x.shape)],
        [helper.make_tensor_value_info("y", out, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in values.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return sess.run(None, {"x": np.ascontiguousarray(x)})[0]


@pytest.mark.parametrize("strides", [(1, 1), (2, 2)])
@pytest.mark.parametrize("per_channel", [False, True])
def test_matches_onnxruntime(strides, per_channel):
    # int8 activations: onnxruntime's uint8 x int8 kernels saturate on AVX2 without VNNI
    expansion, depthwise = _layers(4, np.int8, 8, 32, per_channel)
    x = _image(4, np.int8, 8, 15, 15, True)
    attrs = {"group": 32, "pads": [1, 1, 1, 1], "strides": list(strides)}
    got = fused(x, *expansion, *depthwise, **attrs)
    np.testing.assert_array_equal(got, _ort_pair(x, expansion, depthwise, attrs))
