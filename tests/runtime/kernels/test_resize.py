"""Resize's nearest upsampling by whole factors (a repeat in the input's memory order)
against onnxruntime, next to the gather it replaces."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgerun.runtime.kernels import resize
from edgerun.runtime.registry import resolve

ort = pytest.importorskip("onnxruntime")
rng = np.random.default_rng(0)


def run_ort(x, scales, attrs):
    graph = helper.make_graph(
        [helper.make_node("Resize", ["x", "", "scales"], ["y"], **attrs)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(scales, "scales")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": np.ascontiguousarray(x)})[0]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("factors", [(2, 2), (3, 1), (2, 1.5)])  # 1.5: a gather on that axis
@pytest.mark.parametrize(
    "attrs",
    [
        {},
        {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
        {"coordinate_transformation_mode": "align_corners"},  # not a repeat: gathers
    ],
)
def test_nearest_upsampling_matches_onnxruntime(channels_last, factors, attrs):
    x = rng.standard_normal((2, 5, 4, 6)).astype(np.float32)
    if channels_last:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    scales = np.array([1, 1, *factors], np.float32)
    got = resolve("", "Resize", 19).fn(x, None, scales, mode="nearest", **attrs)
    np.testing.assert_array_equal(got, run_ort(x, scales, {"mode": "nearest", **attrs}))
    if channels_last and factors == (2, 2) and not attrs:
        assert got.transpose(0, 2, 3, 1).flags.c_contiguous  # the input's layout, kept


def test_repeated_keeps_memory_order_for_any_layout():
    y = rng.standard_normal((3, 4, 5)).astype(np.float32).transpose(2, 0, 1)
    got = resize._repeated(y, [1, 2, 3])
    np.testing.assert_array_equal(got, np.repeat(np.repeat(y, 2, axis=1), 3, axis=2))
    assert got.transpose(1, 2, 0).flags.c_contiguous
