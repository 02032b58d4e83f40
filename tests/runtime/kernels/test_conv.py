"""Conv family kernels against onnxruntime on cases the node suite does not cover."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from edgerun.runtime.kernels import conv
from edgerun.runtime.registry import resolve

ort = pytest.importorskip("onnxruntime")
rng = np.random.default_rng(0)


def run_ort(op, inputs, attrs, opset=19, out_dtype=None):
    names = [f"i{k}" for k in range(len(inputs))]
    node = helper.make_node(op, names, ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for n, a in zip(names, inputs, strict=True)
        ],
        [
            helper.make_tensor_value_info(
                "y", helper.np_dtype_to_tensor_dtype(np.dtype(out_dtype or inputs[0].dtype)), None
            )
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, dict(zip(names, inputs, strict=True)))[0]


def ours(op, inputs, attrs, opset=19):
    return resolve("", op, opset).fn(*inputs, **attrs)


CONV_CASES = [
    ((2, 4, 9, 9), (6, 4, 3, 3), {"pads": [1, 0, 2, 1], "strides": [2, 1]}),
    ((1, 6, 10, 8), (6, 3, 3, 2), {"group": 2, "dilations": [2, 1]}),
    ((1, 8, 7, 7), (8, 1, 3, 3), {"group": 8, "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 4, 7, 7), (8, 1, 3, 3), {"group": 4, "auto_pad": "SAME_LOWER"}),  # multiplier 2
    ((1, 3, 5, 6, 7), (4, 3, 2, 3, 2), {"strides": [1, 2, 1], "pads": [1, 1, 0, 0, 1, 1]}),
    ((2, 3, 11), (5, 3, 4), {"auto_pad": "VALID", "strides": [3]}),
    ((1, 16, 5, 5), (8, 16, 1, 1), {}),
    ((2, 6, 5, 4), (4, 3, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),  # grouped, batch 2
    # depthwise, wide enough for the channels-last path
    ((1, 64, 9, 8), (64, 1, 3, 3), {"group": 64, "pads": [1, 0, 2, 1], "strides": [2, 1]}),
    ((2, 64, 7, 7), (64, 1, 3, 3), {"group": 64, "dilations": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 96, 6, 6), (96, 1, 5, 5), {"group": 96, "pads": [3, 3, 0, 0], "strides": [3, 2]}),
]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("m", [8, 48])  # as many outputs as inputs; 6x (bias in the product)
@pytest.mark.parametrize("group", [1, 4])  # grouped: ShuffleNet's 1x1 layers
def test_pointwise_bias(channels_last, m, group):
    x = rng.standard_normal((1, 8, 7, 9)).astype(np.float32)
    stored = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1) if channels_last else x
    w = rng.standard_normal((m, 8 // group, 1, 1)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    attrs = {"group": group}
    for _ in range(2):  # the second run takes the weights-with-bias the first one made
        got = ours("Conv", [stored, w, b], attrs)
        want = run_ort("Conv", [x, w, b], attrs)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        assert (got.strides[1] == got.itemsize) == channels_last  # in the input's layout


def test_image_conv_returns_channels_last():
    # a few-channel input (an image): the product runs output-major, the result channels-last
    x = rng.standard_normal((1, 3, 32, 30)).astype(np.float32)
    w = rng.standard_normal((16, 3, 7, 7)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    attrs = {"pads": [3, 3, 3, 3], "strides": [2, 2]}
    got = ours("Conv", [x, w, b], attrs)
    assert got.strides[1] == got.itemsize
    np.testing.assert_allclose(got, run_ort("Conv", [x, w, b], attrs), rtol=1e-4, atol=1e-4)


_image_conv_rows = conv._image_conv_rows
IMAGE_CASES = {  # (x shape, w shape, attributes): images, which take their stride phases
    "7x7/2 stem": ((1, 3, 33, 30), (16, 3, 7, 7), {"pads": [3, 3, 3, 3], "strides": [2, 2]}),
    "3x3/2 stem": ((1, 3, 32, 32), (8, 3, 3, 3), {"pads": [0, 0, 1, 1], "strides": [2, 2]}),
    "stride 1": ((1, 2, 12, 11), (5, 2, 3, 3), {"pads": [1, 1, 1, 1]}),
    "stride past the kernel": ((1, 4, 40, 37), (6, 4, 2, 3), {"strides": [3, 4]}),
    "uneven strides, no bias": ((1, 1, 30, 25), (4, 1, 5, 4), {"strides": [2, 1]}),
}


@pytest.mark.parametrize("channels_last", [False, True])  # TFLite's images are NHWC
@pytest.mark.parametrize("block", [1, conv._IMAGE_BLOCK])  # one output row a block; many
@pytest.mark.parametrize("case", IMAGE_CASES)
def test_image_conv_by_phases_matches_onnxruntime(monkeypatch, case, block, channels_last):
    monkeypatch.setattr(conv, "_IMAGE_BLOCK", block)
    taken = []
    monkeypatch.setattr(
        conv, "_image_conv_rows", lambda *a, **k: taken.append(1) or _image_conv_rows(*a, **k)
    )
    xs, ws, attrs = IMAGE_CASES[case]
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    inputs = [x, w] if "no bias" in case else [x, w, rng.standard_normal(ws[0]).astype(np.float32)]
    want = run_ort("Conv", inputs, attrs)
    if channels_last:
        inputs[0] = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1)
    assert np.prod(want.shape[2:]) >= conv._CL_FROM  # wide enough to be taken as an image
    got = ours("Conv", inputs, attrs)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    clipped = resolve("com.microsoft", "FusedConv", 1).fn(*inputs, **attrs, activation="Relu")
    np.testing.assert_allclose(clipped, np.maximum(want, 0), rtol=1e-4, atol=1e-4)
    assert len(taken) == 2  # both by the stride phases


@pytest.mark.parametrize("group", [1, 64])
@pytest.mark.parametrize("shape", [(1, 6, 7), (2, 11, 9)])  # few outputs; many, batch 2
@pytest.mark.parametrize("column_bytes", [None, 4096])  # 4 KB: the columns line by line
def test_conv_channels_last_input(monkeypatch, group, shape, column_bytes):
    # x stored channels-last in memory (as Winograd, depthwise and pointwise layers return
    # it): strided or wide convolutions take channels-last columns and return that layout
    if column_bytes is not None:
        monkeypatch.setattr(conv, "_COLUMN_BYTES", column_bytes)
    n, h, wd = shape
    x = rng.standard_normal((n, h, wd, 64)).astype(np.float32).transpose(0, 3, 1, 2)
    cases = [
        (1, {}),
        (3, {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
        (3, {"pads": [2, 0, 1, 1]}),
        (1, {"strides": [2, 2]}),
        (5, {"pads": [2, 2, 2, 2], "dilations": [2, 1]}),
    ]
    for ks, attrs in cases:
        w = rng.standard_normal((64, 64 // group, ks, ks)).astype(np.float32)
        b = rng.standard_normal(64).astype(np.float32)
        attrs = {**attrs, "group": group}
        for _ in range(2):  # the second run takes the weights laid out by the first
            got = ours("Conv", [x, w, b], attrs)
            want = run_ort("Conv", [np.ascontiguousarray(x), w, b], attrs)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel", [(3,), (3, 2), (2, 3, 1)])
@pytest.mark.parametrize("bias", [False, True])
def test_columns_weights_are_taps_then_channels(kernel, bias):
    # row (taps, channel) of the channels-last columns meets weight w[:, channel, *taps]
    w = rng.standard_normal((5, 4, *kernel)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32) if bias else None
    want = np.moveaxis(w, 1, -1).reshape(5, -1).T
    if bias:
        want = np.vstack([want, b[None]])
    np.testing.assert_array_equal(conv._columns_weights(w, b), want)


@pytest.mark.parametrize(("xs", "ws", "attrs"), CONV_CASES)
def test_conv(xs, ws, attrs):
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    np.testing.assert_allclose(
        ours("Conv", [x, w, b], attrs), run_ort("Conv", [x, w, b], attrs), rtol=1e-4, atol=1e-4
    )


TRANSPOSE_CASES = [
    (
        (1, 4, 5, 5),
        (4, 3, 3, 3),
        {"strides": [2, 2], "pads": [1, 0, 0, 1], "output_padding": [1, 1]},
    ),
    ((2, 4, 4, 6), (4, 2, 3, 2), {"group": 2, "dilations": [2, 1], "strides": [1, 2]}),
    ((1, 2, 4, 4), (2, 3, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 4, 4), (2, 3, 3, 3), {"strides": [2, 2], "output_shape": [9, 10]}),
    ((1, 2, 6), (2, 2, 3), {"strides": [3], "pads": [2, 1]}),
]


@pytest.mark.parametrize(("xs", "ws", "attrs"), TRANSPOSE_CASES)
def test_conv_transpose(xs, ws, attrs):
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    got = ours("ConvTranspose", [x, w], attrs)
    np.testing.assert_allclose(got, run_ort("ConvTranspose", [x, w], attrs), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("xt", [np.uint8, np.int8])
@pytest.mark.parametrize("channels", [3, 40])  # 40*9 taps: K*255*255 >= 2^24, the float64 path
def test_conv_integer(xt, channels):
    info = np.iinfo(xt)
    x = rng.integers(info.min, info.max, (1, channels, 6, 6), endpoint=True).astype(xt)
    # onnxruntime's mixed-sign (u8 x s8) kernels saturate int16 pair sums on AVX2; 7-bit
    # weights keep its answer exact (ours is exact either way)
    top = 127 if xt == np.int8 else 255
    w = rng.integers(0, top, (4, channels, 3, 3), endpoint=True).astype(np.uint8)
    xz, wz = np.array(7, xt), np.array(top // 2, np.uint8)
    attrs = {"pads": [1, 1, 1, 1]}
    got = ours("ConvInteger", [x, w, xz, wz], attrs)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(
        got, run_ort("ConvInteger", [x, w, xz, wz], attrs, out_dtype=np.int32)
    )


@pytest.mark.parametrize(
    ("xt", "wt", "yt"),
    [(np.uint8, np.uint8, np.uint8), (np.int8, np.int8, np.int8), (np.uint8, np.int8, np.uint8)],
)
@pytest.mark.parametrize("per_channel", [False, True])
def test_qlinear_conv(xt, wt, yt, per_channel):
    m = 6
    x = rng.integers(np.iinfo(xt).min, np.iinfo(xt).max, (2, 4, 7, 7), endpoint=True).astype(xt)
    lo, hi = (np.iinfo(wt).min, np.iinfo(wt).max) if xt == wt else (-64, 63)  # see above
    w = rng.integers(lo, hi, (m, 2, 3, 3), endpoint=True).astype(wt)
    ws = (rng.random(m if per_channel else 1) * 0.02 + 0.001).astype(np.float32)
    wz = (
        np.zeros(m if per_channel else 1, wt)
        if wt == np.int8
        else np.full(m if per_channel else 1, 120, wt)
    )
    if not per_channel:
        ws, wz = ws.reshape(()), wz.reshape(())
    b = rng.integers(-5000, 5000, m).astype(np.int32)
    inputs = [
        x,
        np.array(0.05, np.float32),
        np.array(3, xt),
        w,
        ws,
        wz,
        np.array(0.17, np.float32),
        np.array(5, yt),
        b,
    ]
    attrs = {"group": 2, "strides": [2, 1], "pads": [1, 1, 0, 2]}
    got = ours("QLinearConv", inputs, attrs)
    assert got.dtype == yt
    np.testing.assert_array_equal(got, run_ort("QLinearConv", inputs, attrs, out_dtype=yt))


@pytest.mark.parametrize("spatial", [(32, 32), (5, 7)])  # planes 4 KB apart, and not
@pytest.mark.parametrize("clip", [None, (-0.5, 0.5)])
def test_copy_channels_last_of_a_channels_first_array(spatial, clip):
    # 20 channels: two blocks of 8 and a part-block, where the planes alias in the cache
    x = rng.standard_normal((2, 20, *spatial)).astype(np.float32)
    src = x.transpose(0, 2, 3, 1)
    dest = np.empty(src.shape, np.float32)
    conv.copy_channels_last(src, dest, clip)
    np.testing.assert_array_equal(dest, src if clip is None else np.clip(src, *clip))


def _expand_depthwise_model(first_attrs, dw_attrs, activation):
    """x -> Conv (the first: 1x1 expansion or a stem) -> Clip(0, 6) -> depthwise 3x3 Conv ->
    ``activation``."""
    nodes = [
        helper.make_node("Conv", ["x", "we", "be"], ["e"], **first_attrs),
        helper.make_node("Clip", ["e", "lo", "hi"], ["a"]),
        helper.make_node("Conv", ["a", "wd", "bd"], ["d" if activation else "y"], **dw_attrs),
    ]
    if activation:
        nodes.append(helper.make_node(activation, ["d"], ["y"]))
    return nodes


STEM = {"kernel_shape": [3, 3], "pads": [0, 0, 1, 1], "strides": [2, 2]}  # MobileNetV2's


@pytest.mark.parametrize("activation", ["", "Relu"])
@pytest.mark.parametrize("channels_last", [True, False])  # channels-first: 1x1 as two steps
@pytest.mark.parametrize(
    ("xs", "m", "first", "dw_attrs", "fused"),
    [
        ((1, 8, 16, 15), 48, {}, {"pads": [1, 1, 1, 1]}, True),
        ((1, 8, 17, 16), 72, {}, {"pads": [1, 1, 1, 1], "strides": [2, 2]}, True),
        ((1, 8, 16, 16), 48, {}, {"pads": [0, 1, 2, 0], "strides": [2, 1]}, True),
        ((1, 3, 32, 30), 16, STEM, {"pads": [1, 1, 1, 1]}, True),  # a stem, either layout
        ((1, 3, 33, 33), 72, {**STEM, "pads": [1, 1, 1, 1]}, {"pads": [1, 1, 1, 1]}, True),
        ((1, 8, 16, 16), 48, {}, {"pads": [1, 1, 1, 1], "strides": [2, 2]}, True),  # split
        ((1, 8, 15, 17), 40, {}, {"pads": [1, 0, 1, 2], "strides": [1, 2]}, True),  # split
        ((1, 128, 14, 14), 256, {}, {"pads": [1, 1, 1, 1], "strides": [2, 2]}, True),  # C-long
        ((1, 8, 13, 15), 48, {}, {"pads": [1, 1, 1, 1]}, False),  # under _EXPAND_FROM pixels
        ((2, 8, 16, 15), 48, {}, {"pads": [1, 1, 1, 1]}, False),  # a batch
        ((1, 32, 16, 15), 48, {}, {"pads": [1, 1, 1, 1]}, False),  # not an expansion
        ((1, 8, 32, 30), 16, STEM, {"pads": [1, 1, 1, 1]}, False),  # a 3x3 on 8 channels
    ],
)
def test_expand_depthwise_matches_onnxruntime(
    monkeypatch, xs, m, first, dw_attrs, fused, channels_last, activation
):
    calls = []
    real = conv._conv_as
    monkeypatch.setattr(conv, "_conv_as", lambda *a, **k: calls.append(1) or real(*a, **k))
    c = xs[1]
    kernel = first.get("kernel_shape", [1, 1])
    x = rng.standard_normal(xs).astype(np.float32) * 3  # values the clip cuts
    consts = {
        "we": (rng.standard_normal((m, c, *kernel)) / np.sqrt(c)).astype(np.float32),
        "be": rng.standard_normal(m).astype(np.float32),
        "wd": rng.standard_normal((m, 1, 3, 3)).astype(np.float32),
        "bd": rng.standard_normal(m).astype(np.float32),
        "lo": np.array(0.0, np.float32),
        "hi": np.array(6.0, np.float32),
    }
    attrs = {"group": m, "kernel_shape": [3, 3], **dw_attrs}
    graph = helper.make_graph(
        _expand_depthwise_model(first, attrs, activation),
        "g",
        [helper.make_tensor_value_info("x", 1, xs)],
        [helper.make_tensor_value_info("y", 1, None)],
        [helper.make_tensor(k, 1, v.shape, v.reshape(-1)) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    stored = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1) if channels_last else x
    got = resolve("com.microsoft", "ExpandDepthwiseConv", 1).fn(
        stored,
        consts["we"],
        consts["be"],
        consts["wd"],
        consts["bd"],
        expand_clip=[0.0, 6.0],
        **{f"expand_{k}": v for k, v in first.items()},
        activation=activation,
        **attrs,
    )
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    stem = "strides" in first  # an image: fused in either layout
    assert (not calls) == (fused and (channels_last or stem))  # two steps: _conv_as twice
