"""Activation kernels: erf against math.erf, numerically stable forms, Softmax semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgerun.runtime.kernels import activation
from edgerun.runtime.kernels.activation import erf
from edgerun.runtime.registry import resolve


def op(name, opset=22):
    return resolve("", name, opset).fn


def _grid():
    dense = np.linspace(-8.0, 8.0, 400_001)
    tiny = np.linspace(-1e-3, 1e-3, 2001)
    edges = [0.46875, np.nextafter(0.46875, 1.0), 4.0, np.nextafter(4.0, 5.0), 26.0, 27.0, 1e30]
    return np.concatenate([dense, tiny, edges, np.negative(edges)])


def test_erf_float64_matches_math_erf():
    x = _grid()
    expected = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(erf(x), expected, rtol=1e-15, atol=1e-16)


def test_erf_float32_is_math_erf_rounded():
    x = _grid().astype(np.float32)
    expected = np.array([math.erf(float(v)) for v in x]).astype(np.float32)
    got = op("Erf")(x)
    assert got.dtype == np.float32
    ulps = np.abs(got.view(np.int32).astype(np.int64) - expected.view(np.int32))
    assert ulps.max() <= 1


def test_erf_special_values():
    got = erf(np.array([np.inf, -np.inf, np.nan, -0.0]))
    assert got[0] == 1.0 and got[1] == -1.0 and np.isnan(got[2]) and np.signbit(got[3])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_sigmoid_and_softplus_stay_finite(dtype):
    x = np.array([-1e4, -100, -1, 0, 1, 100, 1e4], dtype=np.float64).astype(dtype)
    with np.errstate(over="raise", invalid="raise"):
        sig = op("Sigmoid")(x)
        soft = op("Softplus")(x)
    assert sig.dtype == dtype and soft.dtype == dtype
    np.testing.assert_allclose(sig[[0, 3, -1]].astype(float), [0, 0.5, 1])
    assert soft[0] == 0 and soft[-1] == x[-1]


def test_softmax_coerces_to_2d_before_opset_13():
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    old, new = op("Softmax", 11)(x, axis=1), op("Softmax", 13)(x, axis=1)
    np.testing.assert_allclose(old.reshape(2, -1).sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(new.sum(axis=1), 1, rtol=1e-6)
    hard = op("Hardmax", 11)(x, axis=1)
    assert hard.reshape(2, -1).sum(axis=1).tolist() == [1, 1]


def test_hardmax_takes_first_of_ties():
    assert op("Hardmax", 13)(np.array([[2.0, 2.0, 1.0]])).tolist() == [[1, 0, 0]]


def test_gelu_tanh_close_to_exact():
    x = np.linspace(-5, 5, 101).astype(np.float32)
    exact = op("Gelu", 20)(x)
    approx = op("Gelu", 20)(x, approximate="tanh")
    assert exact.dtype == approx.dtype == np.float32
    np.testing.assert_allclose(exact, approx, atol=1e-3)


@pytest.fixture(params=[True, False], ids=["tanh form", "exp form"])
def sigmoid_form(request, monkeypatch):
    """Both float32 sigmoids, whichever this CPU takes (activation._tanh_sigmoid_is_faster)."""
    monkeypatch.setattr(activation, "_TANH_SIGMOID", request.param)
    return request.param


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_sigmoid_error(dtype, sigmoid_form):
    # float32's tanh form, 0.5 + 0.5 * tanh(x / 2), is within an ulp of 0.5 everywhere
    # (onnxruntime's own float32 logistic is 1.7e-7 off here); the exp form, and float16 and
    # float64 always, keep small outputs accurate relative to their size
    x = np.linspace(-40, 40, 80_001).astype(dtype)
    exact = 1 / (1 + np.exp(-x.astype(np.longdouble)))
    got = op("Sigmoid")(x)
    assert got.dtype == dtype and np.all((got >= 0) & (got <= 1))
    bound = {np.float16: 9.8e-4, np.float32: 6e-8, np.float64: 2.3e-16}[dtype]  # 2 ulp; 1/2; 1
    if dtype == np.float32 and not sigmoid_form:
        bound = 9e-8  # 1.5 ulp of 0.5
    assert float(np.abs(got - exact).max()) <= bound
    if dtype != np.float32 or not sigmoid_form:
        tail = (x < -2) & (x > -10)  # exp(-x) overflows float16 past -11
        rtol = {np.float16: 2e-3, np.float32: 2.5e-7, np.float64: 1e-14}[dtype]
        np.testing.assert_allclose(got[tail], exact[tail].astype(np.float64), rtol=rtol)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("alpha", [1.0, 0.5, -2.0])
def test_swish_error(dtype, alpha, sigmoid_form):
    limit = 10 / abs(alpha) if dtype == np.float16 else 40  # exp(11) overflows float16
    x = np.linspace(-limit, limit, 80_001).astype(dtype)
    exact = x.astype(np.longdouble) / (1 + np.exp(-np.longdouble(alpha) * x))
    got = op("Swish", 24)(x, alpha=alpha)
    assert got.dtype == dtype
    error = np.abs(got - exact)
    rtol = {np.float16: 2e-3, np.float32: 6e-7, np.float64: 1e-14}[dtype]
    if dtype == np.float32 and sigmoid_form:  # the sigmoid's error is absolute: times |x|
        assert np.all(error <= 1.2e-7 * np.abs(x) + rtol * np.abs(exact))
    else:
        assert float((error / np.maximum(np.abs(exact), 1e-30)).max()) <= rtol


def test_swish_edges_and_layout(sigmoid_form):
    x = np.array([-1e4, -100, 0, 100, 1e4, np.inf], np.float32)
    with np.errstate(over="raise", invalid="raise"):
        got = op("Swish", 24)(x)
    np.testing.assert_array_equal(got, [0, 0, 0, 100, 1e4, np.inf])
    # a channels-last tensor viewed as NCHW (a convolution's output) keeps its layout, so
    # the next convolution reads it as it would have the Mul's
    nchw = np.random.default_rng(0).standard_normal((1, 5, 6, 4)).astype(np.float32)
    channels_last = nchw.transpose(0, 2, 3, 1).copy().transpose(0, 3, 1, 2)
    swished = op("Swish", 24)(channels_last)
    assert swished.strides == channels_last.strides
    np.testing.assert_allclose(swished, nchw / (1 + np.exp(-nchw)), rtol=1e-6)
