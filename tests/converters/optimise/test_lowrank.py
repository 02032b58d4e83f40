"""Low-rank factorisation: two thinner layers computing the same thing, against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

from converters.optimise import graph as g
from converters.optimise.lowrank import factorise
from edgerun.errors import ConversionError
from tests.converters.optimise import nets


def _low_rank_dense(model, layer: str, rank: int):
    """Replace ``layer``'s weight by a rank-``rank`` matrix of the same shape."""
    w = nets.weights(model)[f"{layer}.w"]
    rng = np.random.default_rng(3)
    left = rng.standard_normal((w.shape[0], rank))
    g.set_array(
        model, f"{layer}.w", (left @ rng.standard_normal((rank, w.shape[1]))).astype(np.float32)
    )
    return model


@pytest.mark.parametrize(
    ("build", "layer", "op"),
    [(nets.cnn, "fc1", "Gemm"), (nets.mlp, "m1", "MatMul"), (nets.pointwise, "pw", "Conv")],
)
def test_exact_rank_is_found_and_outputs_agree(build, layer: str, op: str, tmp_path) -> None:
    model = build() if op == "Conv" else _low_rank_dense(build(), layer, 3)
    factored, report = factorise(model, energy=1.0 - 1e-9)
    assert report["layers"][layer]["rank"] == 3
    ops = [n.op_type for n in factored.graph.node]
    assert ops.count(op) + ops.count("MatMul") > [n.op_type for n in model.graph.node].count(op)
    assert report["parameters"][1] == g.parameters(factored) < report["parameters"][0]
    feeds = nets.inputs(model)
    expected = nets.run_ort(model, feeds)
    np.testing.assert_allclose(nets.run_ort(factored, feeds), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        nets.run_numpy(factored, feeds, tmp_path), expected, rtol=1e-4, atol=1e-4
    )


def test_gemm_without_transb() -> None:
    model = _low_rank_dense(nets.cnn(), "fc1", 2)
    w = nets.weights(model)["fc1.w"]
    for node in model.graph.node:
        if node.name == "fc1":
            del node.attribute[:]
    g.set_array(model, "fc1.w", np.ascontiguousarray(w.T))
    factored, report = factorise(model, energy=0.999999)
    assert report["layers"]["fc1"]["rank"] == 2
    feeds = nets.inputs(model)
    np.testing.assert_allclose(
        nets.run_ort(factored, feeds), nets.run_ort(model, feeds), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("size", [0.1, 0.25, 0.5])
def test_size_target_bounds_each_layer(size: float) -> None:
    model = nets.cnn()
    factored, report = factorise(model, size=size)
    assert "fc1" in report["layers"]
    for layer in report["layers"].values():
        k, n = layer["shape"]
        assert layer["rank"] == 1 or layer["rank"] * (k + n) <= size * k * n
    shapes = {t.name: list(t.dims) for t in factored.graph.initializer}
    rank = report["layers"]["fc1"]["rank"]
    assert shapes["fc1.w__lowrank_a"] == [256, rank] and shapes["fc1.w__lowrank_b"] == [32, rank]


def test_energy_keeps_at_least_the_threshold() -> None:
    model = nets.cnn()
    _, report = factorise(model, energy=0.8)
    w = numpy_helper.to_array(g.initializers(model)["fc1.w"])
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    share = np.cumsum(s**2) / np.sum(s**2)
    rank = report["layers"]["fc1"]["rank"]
    assert share[rank - 1] >= 0.8 > share[rank - 2]


def test_layers_that_would_not_shrink_are_reported() -> None:
    model = nets.cnn()
    factored, report = factorise(model, energy=1.0)
    assert report["layers"] == {}
    assert "would not be smaller" in report["skipped"]["fc1"]
    assert report["skipped"]["c1"] == "not a 1x1 convolution"
    assert g.parameters(factored) == g.parameters(model)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "an energy threshold or a size target"),
        ({"energy": 0.9, "size": 0.5}, "or a size"),
        ({"energy": 1.5}, r"energy must be in \(0, 1\], not 1.5"),
        ({"size": 0.0}, "size must be"),
    ],
)
def test_bad_arguments(kwargs, message: str) -> None:
    with pytest.raises(ConversionError, match=message):
        factorise(nets.cnn(), **kwargs)
