"""Winograd F(2x2, 3x3) and F(4x4, 3x3) against onnxruntime's Conv: pads, odd sizes,
batches, both product orientations, several row blocks, channels-last inputs, fused clip and
residual."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from edgerun.runtime.kernels import winograd
from edgerun.runtime.registry import resolve

ort = pytest.importorskip("onnxruntime")
rng = np.random.default_rng(0)

# x shape, output channels, pads [top, left, bottom, right]
CASES = [
    ((1, 8, 12, 10), 6, [1, 1, 1, 1]),
    ((2, 5, 7, 9), 7, [1, 1, 1, 1]),  # odd output sizes, batch 2
    ((1, 3, 6, 5), 4, [0, 0, 0, 0]),  # no padding
    ((1, 3, 6, 5), 4, [2, 1, 0, 2]),  # uneven padding
    ((1, 4, 9, 11), 3, [1, 2, 1, 0]),
    ((1, 4, 1, 1), 4, [1, 1, 1, 1]),  # one pixel: a single tile of padding around it
    ((3, 5, 10, 11), 7, [0, 2, 1, 0]),
    ((1, 40, 48, 9), 33, [1, 1, 1, 1]),  # many tiles: the tile-major product
    ((1, 64, 7, 7), 64, [1, 1, 1, 1]),  # 16 tiles: the channel-major product
]


def _ort_conv(x, w, b, z=None, **attrs):
    names = ["x", "w", "b"]
    nodes = [helper.make_node("Conv", names, ["c" if z is not None else "y"], **attrs)]
    feeds = {"x": np.ascontiguousarray(x), "w": w, "b": b}
    if z is not None:
        nodes.append(helper.make_node("Add", ["c", "z"], ["y"]))
        names.append("z")
        feeds["z"] = np.ascontiguousarray(z)
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, 1, feeds[n].shape) for n in names],
        [helper.make_tensor_value_info("y", 1, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def _case(xs, k, channels_last=False):
    x = rng.standard_normal(xs).astype(np.float32)
    if channels_last:
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
        x = np.moveaxis(x, -1, 1)
    w = (rng.standard_normal((k, xs[1], 3, 3)) / np.sqrt(9 * xs[1])).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    return x, w, b


# F(4x4)'s transforms (coefficients up to 5 and 8) round about ten times more than F(2x2)'s
ATOL = {2: 1e-5, 4: 5e-5}


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("block_values", [1, winograd._BLOCK_VALUES])  # a block per tile row
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("xs", "k", "pads"), CASES)
def test_conv3x3_matches_onnxruntime(monkeypatch, block_values, channels_last, xs, k, pads, tile):
    monkeypatch.setattr(winograd, "_BLOCK_VALUES", block_values)
    x, w, b = _case(xs, k, channels_last)
    got = resolve("com.microsoft", "WinogradConv", 1).fn(
        x, winograd.winograd_filter(w, tile), b, pads=pads
    )
    want = _ort_conv(x, w, b, pads=pads)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=ATOL[tile])


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_auto_pad(auto_pad, tile):
    x, w, b = _case((1, 6, 9, 8), 5)
    got = resolve("com.microsoft", "WinogradConv", 1).fn(
        x, winograd.winograd_filter(w, tile), b, auto_pad=auto_pad
    )
    want = _ort_conv(x, w, b, auto_pad=auto_pad)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=ATOL[tile])


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize(("activation", "params"), [("Relu", None), ("Clip", [-0.5, 0.25])])
@pytest.mark.parametrize("xs", [(1, 8, 12, 10), (1, 64, 7, 7)])
def test_fused_activation_and_residual(xs, activation, params, residual, tile):
    x, w, b = _case(xs, 8 if xs[1] == 8 else 64)
    z = rng.standard_normal((1, w.shape[0], *xs[2:])).astype(np.float32) if residual else None
    got = resolve("com.microsoft", "WinogradConv", 1).fn(
        x,
        winograd.winograd_filter(w, tile),
        b,
        z,
        activation=activation,
        activation_params=params,
        pads=[1, 1, 1, 1],
    )
    want = _ort_conv(x, w, b, z, pads=[1, 1, 1, 1])
    low, high = (0.0, np.inf) if activation == "Relu" else params
    np.testing.assert_allclose(got, np.clip(want, low, high), rtol=1e-4, atol=ATOL[tile])


@pytest.mark.parametrize("tile", [2, 4])
def test_float64_is_exact_to_its_precision(tile):
    x, w, b = (a.astype(np.float64) for a in _case((2, 6, 9, 7), 5))
    got = winograd.conv3x3(x, winograd.winograd_filter(w, tile), b, (1, 1), (9, 7))
    assert got.dtype == np.float64
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = sum(
        np.einsum("nchw,kc->nkhw", xp[:, :, i : i + 9, j : j + 7], w[:, :, i, j])
        for i in range(3)
        for j in range(3)
    ) + b.reshape(-1, 1, 1)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_wrong_channel_count_is_refused():
    x, w, b = _case((1, 6, 8, 8), 4)
    with pytest.raises(ValueError, match="input channels"):
        resolve("com.microsoft", "WinogradConv", 1).fn(x[:, :5], winograd.winograd_filter(w), b)
