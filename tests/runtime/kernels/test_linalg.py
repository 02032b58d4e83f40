"""Integer matmuls: exact against int64 numpy, requantization against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from edgerun.runtime.kernels.linalg import last_axis_sums, ones
from edgerun.runtime.registry import resolve

rng = np.random.default_rng(0)


def integers(dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


@pytest.mark.parametrize("k", [4, 300, 1000])  # float32 exact, then float64
@pytest.mark.parametrize(("a_type", "b_type"), [(np.uint8, np.int8), (np.int8, np.uint8)])
@pytest.mark.parametrize("per_axis", [False, True])
def test_matmul_integer_is_exact(k, a_type, b_type, per_axis):
    a, b = integers(a_type, (2, 3, k)), integers(b_type, (k, 5))
    a_zp = integers(a_type, (3,) if per_axis else ())
    b_zp = integers(b_type, (5,) if per_axis else ())
    got = resolve("", "MatMulInteger", 10).fn(a, b, a_zp, b_zp)
    row_zp = a_zp.astype(np.int64).reshape(-1, 1) if per_axis else a_zp.astype(np.int64)
    exact = (a.astype(np.int64) - row_zp) @ (b.astype(np.int64) - b_zp)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, exact)


@pytest.mark.parametrize("k", [4, 1000])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_matmul_against_onnxruntime(k, dtype):
    # same-signed operands: onnxruntime's u8s8 path saturates int16 sums on AVX2 machines
    ort = pytest.importorskip("onnxruntime")
    inputs = [
        integers(dtype, (2, 3, k)),
        np.array(0.02, np.float32),
        integers(dtype, ()),
        integers(dtype, (k, 5)),
        np.array(0.03, np.float32),
        integers(dtype, ()),
        np.array(rng.uniform(1, 60), np.float32),
        integers(dtype, ()),
    ]
    names = [f"i{n}" for n in range(8)]
    graph = helper.make_graph(
        [helper.make_node("QLinearMatMul", names, ["y"])],
        "g",
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for n, v in zip(names, inputs, strict=True)
        ],
        [
            helper.make_tensor_value_info(
                "y", helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), None
            )
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = sess.run(None, dict(zip(names, inputs, strict=True)))[0]
    got = resolve("", "QLinearMatMul", 21).fn(*inputs)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("shape", [(7,), (3, 128), (2, 12, 5, 33), (4, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_last_axis_sums_are_the_rows_sums(shape, dtype):
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    got = last_axis_sums(x)
    assert got.dtype == dtype and got.shape == shape[:-1]
    np.testing.assert_allclose(got, x.sum(axis=-1), rtol=1e-5, atol=1e-5)
    assert not ones(5, np.dtype(dtype)).flags.writeable  # shared: nobody may write it
