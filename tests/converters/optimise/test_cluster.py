"""Weight clustering: codebook + indices in the graph, decoded exactly by every backend."""

from __future__ import annotations

import numpy as np
import pytest

from converters.layout import externalize
from converters.optimise import graph as g
from converters.optimise.cluster import cluster, decode, kmeans
from edgerun.errors import ConversionError
from tests.converters.optimise import nets


@pytest.mark.parametrize("clusters", [2, 16, 100])
def test_kmeans_assigns_each_value_its_nearest_centroid(clusters: int) -> None:
    values = np.random.default_rng(0).standard_normal((37, 11)).astype(np.float32)
    codebook, indices = kmeans(values, clusters)
    assert len(codebook) == clusters and indices.dtype == np.uint8 and indices.shape == values.shape
    distances = np.abs(values[..., None] - codebook)
    np.testing.assert_array_equal(indices, distances.argmin(axis=-1))
    # Lloyd's fixed point: each centroid is the mean of its members
    for k in range(clusters):
        members = values[indices == k]
        if len(members):
            assert codebook[k] == pytest.approx(members.mean(), rel=1e-5, abs=1e-6)


def test_kmeans_keeps_few_distinct_values_exactly() -> None:
    values = np.array([0.5, -1.0, 0.5, 2.0], np.float32)
    codebook, indices = kmeans(values, 16)
    np.testing.assert_array_equal(decode(codebook, indices), values)


def _snapped(model, clustered):
    """The unclustered model with each clustered weight replaced by its decoded values."""
    reference = g.copy(model)
    ws = nets.weights(clustered)
    for name in nets.weights(model):
        stem = f"{name}__cluster"
        if f"{stem}_codebook" in ws:
            codebook = ws[f"{stem}_codebook"]
            values = nets.weights(model)[name]
            index = np.abs(values[..., None] - codebook).argmin(axis=-1)
            g.set_array(reference, name, decode(codebook, index))
    return reference


@pytest.mark.parametrize(("opset", "bits"), [(18, 4), (13, 8)])
@pytest.mark.parametrize("clusters", [4, 16])
def test_decode_is_exact_on_every_backend(opset: int, bits: int, clusters: int, tmp_path) -> None:
    model = nets.cnn(opset=opset)
    clustered, report = cluster(model, clusters, min_elements=100)
    assert report["index_bits"] == bits
    assert set(report["layers"]) == {"c2", "fc1", "fc2"}  # c1 has 72 weights
    reference = _snapped(model, clustered)
    feeds = nets.inputs(model)
    expected = nets.run_ort(reference, feeds)
    np.testing.assert_array_equal(nets.run_ort(clustered, feeds), expected)
    np.testing.assert_allclose(
        nets.run_numpy(clustered, feeds, tmp_path), expected, rtol=1e-5, atol=1e-6
    )


def test_the_numpy_runtime_decodes_at_load(tmp_path) -> None:
    import edgerun

    model = nets.cnn()
    clustered, _ = cluster(model, 16, min_elements=64)
    (tmp_path / "c.onnx").write_bytes(clustered.SerializeToString())
    plan = edgerun.load(tmp_path / "c.onnx", backend="numpy")._impl.plan
    ops = {s.node.op_type for s in plan.steps}
    assert ops.isdisjoint({"Gather", "Cast", "BitShift", "BitwiseAnd", "Reshape", "Concat"}), ops
    reference = nets.weights(_snapped(model, clustered))
    for name in ("c2.w", "fc1.w"):
        np.testing.assert_array_equal(plan.constants[name], reference[name])


@pytest.mark.parametrize("clusters", [16, 64])
def test_the_stored_model_shrinks(clusters: int) -> None:
    model = nets.cnn()
    clustered, report = cluster(model, clusters, min_elements=64)
    size = sum(len(b or b"") for b in externalize(model))
    smaller = sum(len(b or b"") for b in externalize(clustered))
    fc1 = 32 * 256
    saved = fc1 * 4 - fc1 * report["index_bits"] / 8
    assert smaller < size - 0.9 * saved


def test_odd_sizes_pack_and_unpack() -> None:
    model = nets.mlp(hidden=47)
    clustered, report = cluster(model, 16, min_elements=1)
    assert report["index_bits"] == 4
    feeds = nets.inputs(model)
    np.testing.assert_array_equal(
        nets.run_ort(clustered, feeds), nets.run_ort(_snapped(model, clustered), feeds)
    )


@pytest.mark.parametrize("clusters", [1, 257])
def test_cluster_count_is_checked(clusters: int) -> None:
    with pytest.raises(ConversionError, match="clusters must be between 2 and 256"):
        cluster(nets.cnn(), clusters)
