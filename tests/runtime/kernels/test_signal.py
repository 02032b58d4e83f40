"""DFT, STFT, windows and MelWeightMatrix against onnx's reference evaluator."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from edgerun.runtime.registry import resolve

rng = np.random.default_rng(0)


def reference(op, names, inputs, attrs, opset):
    node = helper.make_node(op, names, ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for n, v in zip(names, inputs, strict=False)
            if n
        ],
        [helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    feeds = {n: v for n, v in zip(names, inputs, strict=False) if n}
    return ReferenceEvaluator(model).run(None, feeds)[0]


def check(op, names, inputs, attrs, opset, tol=1e-4):
    want = reference(op, names, inputs, attrs, opset)
    args = [v if n else None for n, v in zip(names, inputs, strict=False)]
    got = resolve("", op, opset).fn(*args, **attrs)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


I64 = np.int64
DFT = [
    # (opset, shape, dft_length, axis, inverse, onesided)
    (17, (2, 6, 3, 2), None, 2, 0, 1),  # complex input, onesided forward
    (17, (2, 6, 1), 9, 1, 0, 0),  # zero-padded
    (20, (2, 5, 7, 2), 4, -3, 1, 0),  # truncated inverse, negative axis
    (20, (3, 5, 2), 8, 1, 1, 1),  # irfft with explicit length
    (20, (3, 6, 1), None, 0, 1, 0),  # real input, inverse
]


@pytest.mark.parametrize("case", DFT, ids=[str(i) for i in range(len(DFT))])
def test_dft_matches_reference(case):
    opset, shape, length, axis, inverse, onesided = case
    x = rng.standard_normal(shape).astype(np.float32)
    names = ["x", "n" if length else ""]
    inputs = [x, np.array(length or 0, dtype=I64)]
    attrs = {"inverse": inverse, "onesided": onesided}
    if opset == 17:
        attrs["axis"] = axis
    else:
        names.append("axis")
        inputs.append(np.array(axis, dtype=I64))
    check("DFT", names, inputs, attrs, opset)


@pytest.mark.parametrize("channels, onesided", [(1, 1), (1, 0), (2, 0)])
@pytest.mark.parametrize("windowed", [True, False])
def test_stft_matches_reference(channels, onesided, windowed):
    x = rng.standard_normal((2, 37, channels)).astype(np.float32)
    window = np.hanning(10).astype(np.float32)
    names = ["x", "step", "w" if windowed else "", "" if windowed else "len"]
    inputs = [x, np.array(4, dtype=I64), window, np.array(10, dtype=I64)]
    check("STFT", names, inputs, {"onesided": onesided}, 17)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
@pytest.mark.parametrize("out", [TensorProto.FLOAT, TensorProto.DOUBLE])
def test_windows_match_reference(op, periodic, out):
    attrs = {"periodic": periodic, "output_datatype": out}
    check(op, ["size"], [np.array(11, dtype=np.int32)], attrs, 17, tol=1e-6)


@pytest.mark.parametrize(
    "bins, n_fft, rate, low, high", [(8, 64, 8000, 0.0, 4000.0), (5, 30, 16000, 100.0, 7000.0)]
)
def test_mel_weight_matrix_matches_reference(bins, n_fft, rate, low, high):
    names = ["bins", "n", "rate", "low", "high"]
    ints = [np.array(v, dtype=I64) for v in (bins, n_fft, rate)]
    floats = [np.array(v, dtype=np.float32) for v in (low, high)]
    check("MelWeightMatrix", names, ints + floats, {}, 17, tol=1e-6)
