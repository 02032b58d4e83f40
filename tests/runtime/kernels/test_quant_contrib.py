"""onnxruntime's com.microsoft quantized ops against onnxruntime itself, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

from edgerun.runtime.registry import resolve

ort = pytest.importorskip("onnxruntime")
rng = np.random.default_rng(0)
MS = "com.microsoft"
U8, S8 = np.dtype(np.uint8), np.dtype(np.int8)


def run_ort(op, inputs, attrs, out_type):
    """One com.microsoft node in onnxruntime; every input is an initializer but the first."""
    names = [f"i{k}" if a is not None else "" for k, a in enumerate(inputs)]
    inits = [
        numpy_helper.from_array(np.asarray(a), n)
        for k, (n, a) in enumerate(zip(names, inputs, strict=True))
        if a is not None and k
    ]
    x = np.asarray(inputs[0])
    graph = helper.make_graph(
        [helper.make_node(op, names, ["y"], domain=MS, **attrs)],
        "g",
        [helper.make_tensor_value_info("i0", helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)],
        [helper.make_tensor_value_info("y", helper.np_dtype_to_tensor_dtype(out_type), None)],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)]
    )
    model.ir_version = 8
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    return sess.run(None, {"i0": x})[0]


def ours(op, inputs, attrs):
    return resolve(MS, op, 1).fn(*inputs, **attrs)


def ints(dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)


def qparams(dtype, scale):
    zero = 131 if dtype == U8 else -3
    return np.array(scale, np.float32), np.array(zero, dtype)


def check(op, inputs, attrs, out_type, ties=False):
    got = ours(op, inputs, attrs)
    want = run_ort(op, inputs, attrs, out_type)
    assert got.dtype == want.dtype and got.shape == want.shape
    if not ties:
        np.testing.assert_array_equal(got, want)
        return
    # onnxruntime's x86 QLinearAdd rounds some exact halves the other way than its own
    # portable kernel (which edgerun follows): at most one step apart, on a few elements
    diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
    assert diff.max() <= 1 and np.count_nonzero(diff) <= 0.01 * diff.size


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
@pytest.mark.parametrize("dtype", [U8, S8])
@pytest.mark.parametrize("b_shape", [(2, 5, 6, 7), (5, 1, 1), (1,)])
def test_binary(op, dtype, b_shape):
    a, b = ints(dtype, (2, 5, 6, 7)), ints(dtype, b_shape)
    c_scale = 0.11 if op == "QLinearAdd" else 0.9
    inputs = [a, *qparams(dtype, 0.043), b, *qparams(dtype, 0.071), *qparams(dtype, c_scale)]
    check(op, inputs, {}, dtype, ties=op == "QLinearAdd")


@pytest.mark.parametrize(
    ("op", "attrs"), [("QLinearSigmoid", {}), ("QLinearLeakyRelu", {"alpha": 0.1})]
)
@pytest.mark.parametrize("dtype", [U8, S8])
def test_activation(op, attrs, dtype):
    codes = np.arange(np.iinfo(dtype).min, np.iinfo(dtype).max + 1).astype(dtype)
    x = np.concatenate([codes, ints(dtype, 100)]).reshape(4, -1)
    y_scale = 1 / 256 if op == "QLinearSigmoid" else 0.05
    check(op, [x, *qparams(dtype, 0.0625), *qparams(dtype, y_scale)], attrs, dtype)


@pytest.mark.parametrize("dtype", [U8, S8])
@pytest.mark.parametrize("channels_last", [0, 1])
def test_global_average_pool(dtype, channels_last):
    x = ints(dtype, (2, 7, 7, 16))
    inputs = [x, *qparams(dtype, 0.05), *qparams(dtype, 0.02)]
    check("QLinearGlobalAveragePool", inputs, {"channels_last": channels_last}, dtype)


@pytest.mark.parametrize("dtype", [U8, S8])
@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
        {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1},
        {"kernel_shape": [2, 3], "strides": [2, 1], "ceil_mode": 1},
        {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "channels_last": 1},
    ],
)
def test_average_pool(dtype, attrs):
    x = ints(dtype, (2, 5, 9, 8))
    inputs = [x, *qparams(dtype, 0.05), *qparams(dtype, 0.03)]
    check("QLinearAveragePool", inputs, attrs, dtype)


@pytest.mark.parametrize("dtype", [U8, S8])
def test_concat(dtype):
    xs = [ints(dtype, (2, c, 4)) for c in (3, 1, 5)]
    params = [qparams(dtype, s) for s in (0.05, 0.07, 0.05)]
    inputs = [*params[0]]
    for x, (s, z) in zip(
        xs, [params[0], params[1], (np.array(0.02, np.float32), params[0][1])], strict=True
    ):
        inputs += [x, s, z]
    check("QLinearConcat", inputs, {"axis": 1}, dtype)


@pytest.mark.parametrize("a_type", [U8, S8])
@pytest.mark.parametrize("per_column", [False, True])
@pytest.mark.parametrize("quantized_output", [False, True])
@pytest.mark.parametrize("trans", [(0, 0), (1, 1)])
def test_qgemm(a_type, per_column, quantized_output, trans):
    m, k, n = 5, 300, 7
    a = ints(a_type, (k, m) if trans[0] else (m, k))
    # 7-bit weights: onnxruntime's u8 x s8 kernels saturate int16 pair sums on AVX2 otherwise
    b = rng.integers(-64, 63, (n, k) if trans[1] else (k, n), endpoint=True).astype(np.int8)
    b_scale = (rng.random(n if per_column else 1) * 0.01 + 0.001).astype(np.dtype(np.float32))
    b_zero = np.zeros(b_scale.shape, np.int8)
    c = rng.integers(-3000, 3000, n).astype(np.int32)
    inputs = [a, *qparams(a_type, 0.03), b, b_scale, b_zero, c]
    if quantized_output:
        inputs += [*qparams(a_type, 0.5)]
    attrs = {"alpha": 0.75, "transA": trans[0], "transB": trans[1]}
    check("QGemm", inputs, attrs, a_type if quantized_output else np.dtype(np.float32))


@pytest.mark.parametrize("per_column", [False, True])
@pytest.mark.parametrize("with_zero", [False, True])
def test_dynamic_quantize_matmul(per_column, with_zero):
    a = rng.standard_normal((3, 4, 32)).astype(np.dtype(np.float32))
    b = rng.integers(-64, 63, (32, 6), endpoint=True).astype(np.int8)
    b_scale = (rng.random(6 if per_column else 1) * 0.01 + 0.001).astype(np.dtype(np.float32))
    b_zero = rng.integers(-3, 3, b_scale.shape).astype(np.int8) if with_zero else None
    bias = rng.standard_normal(6).astype(np.dtype(np.float32))
    got = ours("DynamicQuantizeMatMul", [a, b, b_scale, b_zero, bias], {})
    want = run_ort("DynamicQuantizeMatMul", [a, b, b_scale, b_zero, bias], {}, np.dtype(np.float32))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("a_type", [U8, S8])
def test_matmul_integer_to_float(a_type):
    a = ints(a_type, (2, 5, 40))
    b = rng.integers(-64, 63, (40, 6), endpoint=True).astype(np.int8)
    b_scale = (rng.random(6) * 0.01 + 0.001).astype(np.dtype(np.float32))
    inputs = [
        a,
        b,
        np.array(0.02, np.float32),
        b_scale,
        qparams(a_type, 0)[1],
        None,
        rng.standard_normal(6).astype(np.float32),
    ]
    got = ours("MatMulIntegerToFloat", inputs, {})
    want = run_ort("MatMulIntegerToFloat", inputs, {}, np.dtype(np.float32))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [U8, S8])
@pytest.mark.parametrize(("opset", "axis"), [(13, -1), (13, 1), (12, 1), (12, 2)])
def test_softmax(dtype, opset, axis):
    x = ints(dtype, (2, 3, 16, 20))
    y_zero = np.array(0 if dtype == U8 else -128, dtype)
    params = [np.array(0.08, np.float32), qparams(dtype, 0)[1], np.array(1 / 256, np.float32)]
    attrs = {"opset": opset, "axis": axis}
    check("QLinearSoftmax", [x, *params, y_zero], attrs, dtype)


@pytest.mark.parametrize("dtype", [U8, S8, np.dtype(np.uint16), np.dtype(np.int16)])
@pytest.mark.parametrize("per_axis", [False, True])
def test_quantize_dequantize(dtype, per_axis):
    x = (rng.standard_normal((2, 3, 5)) * 40).astype(np.float32)
    scale = np.array([0.5, 0.25, 0.3], np.float32) if per_axis else np.array(0.3, np.float32)
    zero = np.full(scale.shape, 3 if dtype.kind == "u" else -2, dtype)  # numpy 1.24: no 0-d + int
    q = ours("QuantizeLinear", [x, scale, zero], {"axis": 1})
    np.testing.assert_array_equal(
        q, run_ort("QuantizeLinear", [x, scale, zero], {"axis": 1}, dtype)
    )
    d = ours("DequantizeLinear", [q, scale, zero], {"axis": 1})
    want = run_ort("DequantizeLinear", [q, scale, zero], {"axis": 1}, np.dtype(np.float32))
    np.testing.assert_array_equal(d, want)
