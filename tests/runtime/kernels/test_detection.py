"""NonMaxSuppression against onnxruntime on random boxes (ties, thresholds, both formats)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from edgerun.runtime.registry import resolve

ort = pytest.importorskip("onnxruntime")


def run_ort(inputs, center_point_box):
    names = [f"i{k}" if v is not None else "" for k, v in enumerate(inputs)]
    node = helper.make_node("NonMaxSuppression", names, ["y"], center_point_box=center_point_box)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for n, v in zip(names, inputs, strict=True)
            if v is not None
        ],
        [helper.make_tensor_value_info("y", TensorProto.INT64, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {n: v for n, v in zip(names, inputs, strict=True) if v is not None}
    return sess.run(None, feeds)[0]


@pytest.mark.parametrize("trial", range(12))
def test_against_onnxruntime(trial):
    rng = np.random.default_rng(trial)
    n = int(rng.integers(1, 60))
    corner = rng.uniform(0, 10, (2, n, 2)).astype(np.float32)
    size = rng.uniform(0.5, 4, (2, n, 2)).astype(np.float32)
    center_point_box = trial % 2
    boxes = np.concatenate([corner, size if center_point_box else corner + size], -1)
    if trial % 3 == 0:
        boxes = np.round(boxes)  # exact IoU ties with the threshold
    scores = rng.uniform(0, 1, (2, 3, n)).astype(np.float32)
    if trial % 4 == 0:
        scores = np.round(scores, 1)  # score ties
    inputs = [
        boxes,
        scores,
        np.array([rng.integers(0, 8)], np.int64),
        np.array([rng.uniform(0, 0.7)], np.float32),
        np.array([0.3], np.float32) if trial % 2 else None,
    ]
    fn = resolve("", "NonMaxSuppression", 11).fn
    got = fn(*inputs, center_point_box=center_point_box)
    expected = run_ort(inputs, center_point_box)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
