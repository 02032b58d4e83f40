"""Quantization kernels against onnxruntime: rounding ties, saturation, granularities, types."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgerun.runtime.dtypes import runtime_dtype
from edgerun.runtime.registry import resolve

ort = pytest.importorskip("onnxruntime")
ml_dtypes = pytest.importorskip("ml_dtypes")
rng = np.random.default_rng(0)


def _code(dtype: np.dtype) -> int:
    return next(c for c in range(1, 27) if c != 8 and runtime_dtype(c) == dtype)


def run_ort(op, inputs, attrs, out_codes, opset=21):
    """One node in onnxruntime; ml_dtypes inputs go in as initializers (ORT's Python API
    takes no ml_dtypes arrays) and such outputs come back through a Cast to float32."""
    names = [f"i{k}" if a is not None else "" for k, a in enumerate(inputs)]
    outs = [f"o{k}" for k in range(len(out_codes))]
    feeds = {n: a for n, a in zip(names, inputs, strict=True) if a is not None}
    inits = [numpy_helper.from_array(a, n) for n, a in feeds.items() if a.dtype.isbuiltin == 2]
    feeds = {n: a for n, a in feeds.items() if a.dtype.isbuiltin != 2}
    nodes = [helper.make_node(op, names, outs, **attrs)]
    results = []
    for o, c in zip(outs, out_codes, strict=True):
        if runtime_dtype(c).isbuiltin == 2:
            nodes.append(helper.make_node("Cast", [o], [o + "f"], to=TensorProto.FLOAT))
            results.append(helper.make_tensor_value_info(o + "f", TensorProto.FLOAT, None))
        else:
            results.append(helper.make_tensor_value_info(o, c, None))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, _code(a.dtype), a.shape) for n, a in feeds.items()],
        results,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def ours(op, inputs, attrs, opset=21):
    result = resolve("", op, opset).fn(*inputs, **attrs)
    return list(result) if isinstance(result, tuple) else [result]


def assert_same(got, want):
    if got.dtype.isbuiltin != 2:  # ml_dtypes results are compared as float32 (exact)
        assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))


# halves (ties), values past every range, signed zero, infinities
EDGES = np.array(
    [
        0.5,
        1.5,
        2.5,
        -0.5,
        -1.5,
        -2.5,
        126.5,
        127.5,
        -128.5,
        254.5,
        255.5,
        1e6,
        -1e6,
        -0.0,
        np.inf,
        -np.inf,
        3.49999,
        40000.5,
        -40000.5,
        70000.0,
    ],
    dtype=np.float32,
)


@pytest.mark.parametrize("zp_dtype", [np.uint8, np.int8, np.uint16, np.int16])
@pytest.mark.parametrize("zp", [0, 3])
def test_quantize_integer_edges(zp_dtype, zp):
    args = [EDGES, np.array(1.0, np.float32), np.array(zp, zp_dtype)]
    code = _code(np.dtype(zp_dtype))
    assert_same(ours("QuantizeLinear", args, {})[0], run_ort("QuantizeLinear", args, {}, [code])[0])


def test_quantize_per_axis_and_float16():
    x = (rng.standard_normal((2, 3, 4)) * 50).astype(np.float16)
    scale = np.array([0.5, 0.25, 2.0], np.float16)
    zp = np.array([-3, 0, 7], np.int8)
    args = [x, scale, zp]
    attrs = {"axis": 1}
    want = run_ort("QuantizeLinear", args, attrs, [TensorProto.INT8])[0]
    assert_same(ours("QuantizeLinear", args, attrs)[0], want)


@pytest.mark.parametrize("target", [ml_dtypes.int4, ml_dtypes.uint4])
def test_quantize_blocked_4bit(target):
    x = (rng.standard_normal((3, 8)) * 6).astype(np.float32)
    scale = rng.uniform(0.3, 1.5, (3, 3)).astype(np.float32)
    zp = np.array([[1, 0, 2]] * 3).astype(target)
    args = [x, scale, zp]
    attrs = {"axis": 1, "block_size": 3}
    want = run_ort("QuantizeLinear", args, attrs, [_code(np.dtype(target))])[0]
    assert_same(ours("QuantizeLinear", args, attrs)[0], want)


@pytest.mark.parametrize("target", [ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2])
@pytest.mark.parametrize("saturate", [0, 1])
def test_quantize_float8(target, saturate):
    x = np.concatenate([EDGES, (rng.standard_normal(20) * 300).astype(np.float32)])
    args = [x, np.array(2.0, np.float32), np.array(0, target)]
    attrs = {"saturate": saturate}
    want = run_ort("QuantizeLinear", args, attrs, [_code(np.dtype(target))])[0]
    assert_same(ours("QuantizeLinear", args, attrs)[0], want)


@pytest.mark.parametrize(
    ("x", "zp", "scale", "attrs"),
    [
        (np.arange(-128, 128, dtype=np.int8).reshape(4, 64), np.int8(-5), np.float32(0.1), {}),
        (
            np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
            np.array([1, 2, 3], np.uint8),
            np.array([0.5, 0.25, 3.0], np.float16),
            {"axis": 1},
        ),
        (
            np.arange(-8, 8).reshape(2, 8).astype(ml_dtypes.int4),
            np.array([[1, -2, 0], [3, 0, -1]]).astype(ml_dtypes.int4),
            np.array([[0.5, 0.25, 2.0], [1.0, 3.0, 0.1]], np.float32),
            {"axis": 1, "block_size": 3},
        ),
        (np.array([-(2**31), 2**31 - 1, 7], np.int32), None, np.float32(0.5), {}),
    ],
)
def test_dequantize(x, zp, scale, attrs):
    args = [x, np.asarray(scale), None if zp is None else np.asarray(zp)]
    want = run_ort("DequantizeLinear", args, attrs, [_code(np.asarray(scale).dtype)])[0]
    assert_same(ours("DequantizeLinear", args, attrs)[0], want)


@pytest.mark.parametrize(
    "x",
    [
        rng.standard_normal((3, 5)).astype(np.float32) * 4,
        rng.uniform(1, 9, 20).astype(np.float32),
        -rng.uniform(1, 9, 20).astype(np.float32),
        np.zeros(6, np.float32),
        np.array([-1.0, 0.5, 254.0 / 255], np.float32),
    ],
)
def test_dynamic_quantize(x):
    want = run_ort("DynamicQuantizeLinear", [x], {}, [2, 1, 2], opset=11)
    for got, expected in zip(ours("DynamicQuantizeLinear", [x], {}, 11), want, strict=True):
        assert_same(np.asarray(got), expected)
