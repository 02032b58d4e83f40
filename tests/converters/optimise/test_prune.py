"""Pruning: magnitude sparsity and structured channel removal, against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

from converters.optimise import graph as g
from converters.optimise import prune
from edgerun.errors import ConversionError
from tests.converters.optimise import nets


@pytest.mark.parametrize("build", [nets.cnn, nets.mlp])
@pytest.mark.parametrize("step", ["magnitude", "channels"])
def test_zero_sparsity_is_the_identity(build, step) -> None:
    model = build()
    pruned, _ = getattr(prune, step)(model, 0.0)
    before, after = nets.weights(model), nets.weights(pruned)
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_magnitude_per_layer_reaches_the_target(sparsity: float) -> None:
    model = nets.cnn()
    pruned, report = prune.magnitude(model, sparsity)
    assert set(report["layers"]) == {"c1", "c2", "fc1", "fc2"}
    for name, w in nets.weights(pruned).items():
        if name.endswith(".w"):
            assert np.mean(w == 0) == pytest.approx(sparsity, abs=0.02)
            kept = nets.weights(model)[name][w != 0]
            assert np.array_equal(kept, w[w != 0])  # survivors untouched
            assert np.abs(kept).min() >= np.abs(nets.weights(model)[name][w == 0]).max()
    assert nets.run_ort(pruned, nets.inputs(model)).shape == (1, 10)


def test_magnitude_global_uses_one_threshold() -> None:
    model = nets.cnn()
    pruned, report = prune.magnitude(model, 0.5, scope="global")
    layers = [k for k in nets.weights(model) if k.endswith(".w")]
    before, after = nets.weights(model), nets.weights(pruned)
    zeroed = np.concatenate([np.abs(before[k][after[k] == 0]) for k in layers])
    kept = np.concatenate([np.abs(before[k][after[k] != 0]) for k in layers])
    assert zeroed.max() <= kept.min()
    total = sum(before[k].size for k in layers)
    assert len(zeroed) / total == pytest.approx(0.5, abs=0.01)
    assert len(set(report["layers"].values())) > 1  # layers end at different sparsities


def test_magnitude_per_layer_mapping_and_errors() -> None:
    pruned, report = prune.magnitude(nets.cnn(), {"fc1": 0.75})
    assert list(report["layers"]) == ["fc1"]
    assert np.mean(nets.weights(pruned)["fc1.w"] == 0) == pytest.approx(0.75, abs=0.01)
    with pytest.raises(ConversionError, match="no prunable layer named 'nope'"):
        prune.magnitude(nets.cnn(), {"nope": 0.5})
    with pytest.raises(ConversionError, match=r"must be in \[0, 1\), not 1"):
        prune.magnitude(nets.cnn(), 1.0)
    with pytest.raises(ConversionError, match="one sparsity"):
        prune.magnitude(nets.cnn(), {"fc1": 0.5}, scope="global")


def _dead_channels(model, layer: str, reader: str, channels: list[int], block: int = 1):
    """Zero ``channels`` of ``layer`` (weights, bias) and the reader's weights for them, so
    removing exactly them leaves the model's outputs unchanged."""
    w = nets.weights(model)
    out_axis = 1 if layer.startswith("m") else 0  # MatMul [K, N]; Conv and Gemm (transB) [N, K]
    weight = np.moveaxis(w[f"{layer}.w"], out_axis, 0).copy()
    weight[channels] = 0
    g.set_array(model, f"{layer}.w", np.moveaxis(weight, 0, out_axis))
    if f"{layer}.b" in w:
        bias = w[f"{layer}.b"].copy()
        bias[channels] = 0
        g.set_array(model, f"{layer}.b", bias)
    in_axis = 0 if reader.startswith("m") else 1
    rows = (np.array(channels)[:, None] * block + np.arange(block)).ravel()
    read = np.moveaxis(w[f"{reader}.w"], in_axis, 0).copy()
    read[rows] = 0
    g.set_array(model, f"{reader}.w", np.moveaxis(read, 0, in_axis))
    return model


@pytest.mark.parametrize("reshape", [False, True])
def test_channels_removes_conv_filters_and_fixes_the_readers(reshape: bool) -> None:
    model = nets.cnn(reshape=reshape)
    model = _dead_channels(model, "c2", "fc1", [1, 4, 6, 9, 10, 11, 13, 15], block=16)
    pruned, report = prune.channels(model, {"c2": 0.5})
    assert report["layers"] == {"c2": [16, 8]}
    w = nets.weights(pruned)
    assert w["c2.w"].shape == (8, 8, 3, 3) and w["c2.b"].shape == (8,)
    assert w["fc1.w"].shape == (32, 8 * 16)
    if reshape:
        assert w["flat.shape"].tolist() == [1, 128]
    feeds = nets.inputs(model)
    np.testing.assert_allclose(nets.run_ort(pruned, feeds), nets.run_ort(model, feeds), atol=1e-5)
    assert report["parameters"][1] == g.parameters(pruned) < report["parameters"][0]


def test_channels_through_batchnorm_and_into_a_conv() -> None:
    model = _dead_channels(nets.cnn(), "c1", "c2", [0, 3, 5, 6])
    # BatchNormalization makes a zero filter's output its shift; zero that too for exactness
    bias = nets.weights(model)["bn.bias"].copy()
    mean = nets.weights(model)["bn.mean"].copy()
    bias[[0, 3, 5, 6]] = 0
    mean[[0, 3, 5, 6]] = 0
    g.set_array(model, "bn.bias", bias)
    g.set_array(model, "bn.mean", mean)
    pruned, _ = prune.channels(model, {"c1": 0.5})
    w = nets.weights(pruned)
    assert w["c1.w"].shape == (4, 1, 3, 3) and w["c2.w"].shape == (16, 4, 3, 3)
    assert all(w[f"bn.{k}"].shape == (4,) for k in ("scale", "bias", "mean", "var"))
    feeds = nets.inputs(model)
    np.testing.assert_allclose(nets.run_ort(pruned, feeds), nets.run_ort(model, feeds), atol=1e-5)


def test_channels_on_matmul_with_bias_and_clip() -> None:
    model = _dead_channels(nets.mlp(), "m1", "m2", list(range(0, 48, 2)))
    pruned, report = prune.channels(model, 0.5)
    assert report["layers"] == {"m1": [48, 24]}
    assert report["skipped"] == {"m2": "its output is a graph output"}
    w = nets.weights(pruned)
    assert w["m1.w"].shape == (24, 24) and w["m1.b"].shape == (24,) and w["m2.w"].shape == (24, 12)
    feeds = nets.inputs(model)
    np.testing.assert_allclose(nets.run_ort(pruned, feeds), nets.run_ort(model, feeds), atol=1e-5)


def test_channels_everywhere_keeps_the_model_running(tmp_path) -> None:
    model = nets.cnn()
    pruned, report = prune.channels(model, 0.5)
    assert report["layers"] == {"c1": [8, 4], "c2": [16, 8], "fc1": [32, 16]}
    assert report["skipped"] == {"fc2": "its output is a graph output"}
    assert g.parameters(pruned) < 0.4 * g.parameters(model)
    feeds = nets.inputs(model)
    ours = nets.run_numpy(pruned, feeds, tmp_path)
    np.testing.assert_allclose(ours, nets.run_ort(pruned, feeds), rtol=1e-4, atol=1e-5)


def test_channels_leaves_a_residual_layer_whole() -> None:
    pruned, report = prune.channels(nets.residual(), 0.5)
    assert report["layers"] == {"c1": [4, 2]}
    assert report["skipped"] == {"c2": "its output goes to Add ''"}
    assert nets.weights(pruned)["c2.w"].shape == (4, 2, 3, 3)
