"""Gather/scatter, selection and scan kernels against onnxruntime: negative indices,
duplicate scatter targets under every reduction, ties in TopK, unsorted Unique."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.errors import ModelFormatError
from tests.runtime.kernels.test_shape import both, i64


def ints(nested):
    return np.array(nested, np.int64)


pytest.importorskip("onnxruntime")
rng = np.random.default_rng(1)
X = rng.standard_normal((3, 4, 5)).astype(np.float32)


@pytest.mark.parametrize("axis", [0, -1, 1])
def test_gather(axis):
    both("Gather", {"x": X, "i": ints([[-1, 0], [2, -2]])}, axis=axis)
    both("Gather", {"x": X, "i": np.array(-3, np.int32)}, axis=axis)


def test_gather_out_of_range_raises():
    from onnx import TensorProto, helper

    from tests.runtime.onnx_backend import EdgerunBackend

    node = helper.make_node("Gather", ["x", "i"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("i", TensorProto.INT64, [1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    rep = EdgerunBackend.prepare(helper.make_model(graph))
    with pytest.raises(ModelFormatError, match="out of range"):
        rep.run([np.zeros(3, np.float32), i64(3)])


def test_gather_elements():
    idx = rng.integers(-4, 4, (3, 2, 5))
    both("GatherElements", {"x": X, "i": idx}, axis=1)


@pytest.mark.parametrize("batch_dims", [0, 1, 2])
def test_gather_nd(batch_dims):
    k = 3 - batch_dims if batch_dims < 2 else 1
    shape = (*(3, 4)[:batch_dims], 2, k)
    dims = np.array(X.shape[batch_dims : batch_dims + k])
    idx = rng.integers(0, 100, shape) % dims - dims * rng.integers(0, 2, shape)
    both("GatherND", {"x": X, "i": idx}, batch_dims=batch_dims)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_elements(reduction):
    idx = ints([[1, -1, 1], [0, 0, 2]])
    upd = rng.standard_normal((2, 3)).astype(np.float32)
    data = rng.standard_normal((3, 4)).astype(np.float32)
    if reduction == "none":
        idx = ints([[1, -1, 0], [0, 2, 2]])
    both("ScatterElements", {"x": data, "i": idx, "u": upd}, axis=1, reduction=reduction)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_nd(reduction):
    idx = ints([[[0, -1]], [[2, 1]]]) if reduction == "none" else ints([[[0, -1]], [[0, 3]]])
    upd = rng.standard_normal((2, 1, 5)).astype(np.float32)
    both("ScatterND", {"x": X, "i": idx, "u": upd}, reduction=reduction)


def test_one_hot():
    values = np.array([-1, 5], np.int32)
    both(
        "OneHot",
        {"i": ints([[0, -1], [3, 7]]), "d": np.array(4.0, np.float32), "v": values},
        axis=1,
    )


def test_compress_nonzero():
    both("Compress", {"x": X, "c": np.array([True, False, True])}, axis=-1)
    both("Compress", {"x": X, "c": np.array([False, True] * 20)})
    both("NonZero", {"x": (X > 0.5)})


@pytest.mark.parametrize("axis", [None, 0, -1])
@pytest.mark.parametrize("sorted_", [0, 1])
def test_unique(axis, sorted_):
    x = rng.integers(0, 3, (6, 2)).astype(np.float32)
    attrs = {} if axis is None else {"axis": axis}
    both("Unique", {"x": x}, n_outputs=4, sorted=sorted_, **attrs)


@pytest.mark.parametrize("largest", [0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64])
def test_top_k_ties(largest, dtype):
    x = rng.integers(0, 4, (3, 9)).astype(dtype)
    both("TopK", {"x": x, "k": i64(5)}, n_outputs=2, axis=-1, largest=largest)
    both("TopK", {"x": x.T.copy(), "k": i64(2)}, n_outputs=2, axis=0, largest=largest)
    wide = rng.integers(0, 50, (4, 300)).astype(dtype)  # k << n: the partial-sort path
    both("TopK", {"x": wide, "k": i64(7)}, n_outputs=2, axis=1, largest=largest)


@pytest.mark.parametrize("batch_axis", [0, 1])
def test_reverse_sequence(batch_axis):
    x = rng.standard_normal((4, 4, 2)).astype(np.float32)
    lens = i64(1, 4, 0, 3) if batch_axis else i64(2, 2, 4, 1)
    both("ReverseSequence", {"x": x, "l": lens}, batch_axis=batch_axis, time_axis=1 - batch_axis)


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis", [0, -1])
def test_cumsum(exclusive, reverse, axis):
    x = rng.integers(-5, 5, (3, 4)).astype(np.int32)
    both("CumSum", {"x": x, "a": np.array(axis, np.int32)}, exclusive=exclusive, reverse=reverse)
