"""Activations, Erf, and the Softmax family."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.linalg import last_axis_sums
from edgerun.runtime.registry import kernel

# -- helpers --------------------------------------------------------------------------------


def _compute_dtype(dtype):
    # ml_dtypes floats (bfloat16, float8...) are kind "V" to numpy: compute those in float32
    return np.dtype(np.float32) if dtype.kind == "V" else dtype


def _float(x):
    return x.astype(_compute_dtype(x.dtype), copy=False)


def _like(result, x):
    return np.asarray(result).astype(x.dtype, copy=False)


def _scalar(x, value):
    return _compute_dtype(x.dtype).type(value)


# W. J. Cody's rational Chebyshev approximations (Math. Comp. 23, 1969; netlib specfun CALERF),
# evaluated in float64 on whole arrays: erf for |x| <= 0.46875, erfc beyond.
_ERF_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
          3.20937758913846947e03, 1.85777706184603153e-1)  # fmt: skip
_ERF_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
          2.84423683343917062e03)  # fmt: skip
_ERFC_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
           2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
           2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)  # fmt: skip
_ERFC_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
           1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
           3.43936767414372164e03, 1.23033935480374942e03)  # fmt: skip
_ERFC_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
           1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)  # fmt: skip
_ERFC_Q = (2.56852019228982242e00, 1.87295284992346047e00, 5.27905102951428412e-1,
           6.05183413124413191e-2, 2.33520497626869185e-3)  # fmt: skip
_ONE_OVER_SQRT_PI = 5.6418958354775628695e-1


def _rational(t, num, den, steps):
    # Cody's form: num[-1] leads, den has an implicit leading 1
    top, bottom = num[-1] * t, t.copy()
    for i in range(steps):
        top += num[i]
        top *= t
        bottom += den[i]
        bottom *= t
    return top + num[steps], bottom + den[steps]


def _erfc_far(y):
    inv2 = 1.0 / (y * y)
    top, bottom = _rational(inv2, _ERFC_P, _ERFC_Q, 4)
    return (_ONE_OVER_SQRT_PI - inv2 * top / bottom) / y * np.exp(-y * y)


def erf(x: np.ndarray) -> np.ndarray:
    """Error function of an array, element-wise, computed in float64; accurate to float64
    for float64 input and to the last bit of float32 for narrower types.

    Both of Cody's main ranges run on the whole array and share one division. exp(-y*y)
    is taken in one piece: its rounding error only matters to erfc's relative accuracy.
    Past |x| = 4 erfc < 2**-26, so erf rounds to +-1 in float32: only float64 input pays
    for the third range, and only on the elements that need it.
    """
    x64 = np.asarray(x, dtype=np.float64)
    y = np.abs(x64)
    small = y <= 0.46875
    near = np.minimum(y, 4.0)
    t = np.square(x64)
    top_s, bottom_s = _rational(t, _ERF_A, _ERF_B, 3)
    top_n, bottom_n = _rational(near, _ERFC_C, _ERFC_D, 7)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        top_n *= np.exp(-np.minimum(t, 16.0))
        ratio = np.where(small, top_s * x64, top_n)
        ratio /= np.where(small, bottom_s, bottom_n)
        out = np.where(small, ratio, np.copysign(0.5 - ratio + 0.5, x64))
        far = y > 4.0
        if np.asarray(x).dtype.itemsize >= 8 and far.any():
            out[far] = np.copysign(0.5 - _erfc_far(y[far]) + 0.5, x64[far])
    return out


# erf(x) = x * P(x^2) / Q(x^2) on |x| <= 3.9193 (past it erf rounds to +-1 in float32): a
# rational fitted here to 3e-9 relative error, for float32 and narrower inputs. Evaluated in
# float64 (float32 Horner steps alone cost ~6 ulp near 1), in blocks small enough to stay in
# cache: within 0.55 ulp of float32 rounding, ~6x faster than Cody's ranges with exp.
_ERF32_CLAMP = 3.9193
_ERF32_P = (6.736934900331004e-06, 4.09756880882811e-04, 4.211263305131451e-03,
            5.5683761543429175e-02, 1.9258959855662e-01, 1.128379170093297)  # fmt: skip
_ERF32_Q = (2.5716460747005065e-07, 7.219123456516166e-05, 1.4161938631374765e-03,
            1.6259384032106333e-02, 1.1735162870717633e-01, 5.040115243250298e-01, 1.0)  # fmt: skip
_BLOCK = 16384


def _horner(t, coefficients, out):
    np.multiply(t, coefficients[0], out=out)
    out += coefficients[1]
    for c in coefficients[2:]:
        out *= t
        out += c
    return out


def _erf32(x):
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    out = np.empty(flat.shape, np.float32)
    n = min(_BLOCK, flat.size)
    xc, t, num, den = (np.empty(n) for _ in range(4))
    for start in range(0, flat.size, _BLOCK):
        size = min(_BLOCK, flat.size - start)
        a, b, p, q = xc[:size], t[:size], num[:size], den[:size]
        np.clip(flat[start : start + size], -_ERF32_CLAMP, _ERF32_CLAMP, out=a)
        np.multiply(a, a, out=b)
        _horner(b, _ERF32_P, p)
        p *= a
        np.divide(p, _horner(b, _ERF32_Q, q), out=out[start : start + size], casting="same_kind")
    return out.reshape(np.shape(x))


# Gelu's float32 path: x * Phi(x) = max(x, 0) - |x| * h, where h = erfc(|x| / sqrt2) / 2 is
# the normal tail, from Abramowitz & Stegun 7.1.26 (erfc(z) = t * poly(t) * exp(-z * z),
# t = 1 / (1 + p z), |error| < 1.5e-7), run in float32 on blocks that stay in L2. That is
# 22 array passes against the 30 of the Erf op's rational (numpy has no vectorised erf) and
# as accurate for an activation: Gelu within 2e-7 * max(1, |x|). z is clamped where exp(-z*z)
# underflows to 0, so h is exactly 0 past it and +-inf give inf and 0.
_GELU_P = np.float32(0.3275911)
_GELU_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
_GELU_H = tuple(np.float32(a / 2 / np.sqrt(0.5)) for a in reversed(_GELU_A))  # h * |x| / z
_GELU_Z_MAX = np.float32(10.5)  # exp(-110.25) is 0 in float32
_GELU_BLOCK = 65536


def _gelu32(x):
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    out = np.empty(flat.shape, np.float32)
    n = min(_GELU_BLOCK, flat.size)
    zs, ts, es = (np.empty(n, np.float32) for _ in range(3))
    for start in range(0, flat.size, _GELU_BLOCK):
        size = min(_GELU_BLOCK, flat.size - start)
        xb, z, t, e = flat[start : start + size], zs[:size], ts[:size], es[:size]
        np.abs(xb, out=z)
        z *= np.float32(np.sqrt(0.5))
        np.clip(z, np.float32(0), _GELU_Z_MAX, out=z)  # clip: numpy's SIMD loop, 2x minimum's
        np.multiply(z, _GELU_P, out=t)
        t += np.float32(1)
        np.divide(np.float32(1), t, out=t)  # np.reciprocal ran 1.7x slower (AMD EPYC)
        np.multiply(z, z, out=e)
        np.negative(e, out=e)
        np.exp(e, out=e)
        e *= z  # now exp(-z*z) * z; the tail below is |x| * h
        tail = _horner(t, _GELU_H, out[start : start + size])
        tail *= t
        tail *= e
        np.subtract(np.clip(xb, np.float32(0), np.float32(np.inf), out=z), tail, out=tail)
    return out.reshape(np.shape(x))


def _tanh_sigmoid_is_faster() -> bool:
    """Whether float32 sigmoids take 0.5 + 0.5 * tanh(x / 2) rather than 1 / (1 + exp(-x)).

    Which is faster depends on the loop numpy's float32 tanh runs on this CPU: with AVX-512
    (a Xeon) the tanh form was 27 % faster; with AVX2 alone (an AMD EPYC, Zen 3) the exp form
    was 2.4x faster. ARM, unmeasured, keeps the tanh form, as does a numpy that does not
    list its CPU features."""
    import importlib

    for where in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):  # numpy 2, 1
        try:
            features = importlib.import_module(where).__cpu_features__
        except (ImportError, AttributeError):
            continue
        return not features.get("AVX2") or bool(features.get("AVX512_SKX"))
    return True


_TANH_SIGMOID = _tanh_sigmoid_is_faster()


def _sigmoid(x):
    if x.dtype == np.float32 and _TANH_SIGMOID:
        # 0.5 + 0.5 * tanh(x / 2) saturates without overflow. Its error is absolute (an ulp
        # of 0.5), as in onnxruntime's own clamped-rational logistic: far-negative inputs
        # give 0 rather than a tiny positive number. Not for float16, where an ulp of 0.5
        # is 2.4e-4: the exp form keeps its small outputs' relative accuracy.
        half = x.dtype.type(0.5)
        out = np.multiply(x, half)
        np.tanh(out, out=out)
        out *= half
        out += half
        return out
    return exp_sigmoid(x, x.dtype.type(1))


def exp_sigmoid(x, numerator):
    """numerator / (1 + exp(-x)) in one buffer; exp(-x) overflowing to inf gives the
    right 0 (a numerator ``x`` makes it Swish: x * sigmoid(x), with no pass for the product)."""
    out = np.negative(x, out=np.empty_like(x))  # in x's layout (a channels-last view)
    with np.errstate(over="ignore", invalid="ignore"):  # Swish(-inf) is -inf * 0: NaN
        np.exp(out, out=out)
        out += x.dtype.type(1)
        return np.divide(numerator, out, out=out)


def _softplus(x):
    return np.maximum(x, x.dtype.type(0)) + np.log1p(np.exp(-np.abs(x)))


# -- activations ----------------------------------------------------------------------------


@kernel("Relu", since=1)
def relu_1(x, *, consumed_inputs=None):
    if x.dtype.kind == "f":
        # np.clip with typed scalars takes numpy's SIMD loop; np.maximum(x, 0) does not
        return np.clip(x, x.dtype.type(0), x.dtype.type(np.inf))
    return _like(np.maximum(_float(x), 0), x)


@kernel("LeakyRelu", since=1)
def leaky_relu_1(x, *, alpha=0.01, consumed_inputs=None):
    f = _float(x)
    # exact and branch-free: x*alpha is the smaller of the two below 0 when alpha <= 1
    out = f * _scalar(x, alpha)
    return _like((np.maximum if alpha <= 1 else np.minimum)(f, out, out=out), x)


@kernel("PRelu", since=1)
def prelu_1(x, slope, *, consumed_inputs=None):
    f = _float(x)
    return _like(np.where(f >= 0, f, f * _float(slope)), x)


@kernel("Elu", since=1)
def elu_1(x, *, alpha=1.0, consumed_inputs=None):
    f = _float(x)
    return _like(np.where(f >= 0, f, _scalar(x, alpha) * np.expm1(np.minimum(f, 0))), x)


@kernel("Selu", since=1)
def selu_1(x, *, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875,
           consumed_inputs=None):  # fmt: skip
    f = _float(x)
    negative = _scalar(x, alpha) * np.expm1(np.minimum(f, 0))
    return _like(_scalar(x, gamma) * np.where(f > 0, f, negative), x)


@kernel("Celu", since=12)
def celu_12(x, *, alpha=1.0):
    f = _float(x)
    a = _scalar(x, alpha)
    return _like(np.maximum(f, 0) + np.minimum(0, a * np.expm1(np.minimum(f, 0) / a)), x)


@kernel("Sigmoid", since=1)
def sigmoid_1(x, *, consumed_inputs=None):
    return _like(_sigmoid(_float(x)), x)


@kernel("HardSigmoid", since=1)
def hard_sigmoid_1(x, *, alpha=0.2, beta=0.5, consumed_inputs=None):
    return _like(_hard_sigmoid(_float(x), alpha, beta), x)


def _hard_sigmoid(f, alpha, beta):
    out = f * f.dtype.type(alpha)
    out += f.dtype.type(beta)
    return np.clip(out, f.dtype.type(0), f.dtype.type(1), out=out)


@kernel("HardSwish", since=14)
def hard_swish_14(x):
    f = _float(x)
    out = _hard_sigmoid(f, 1 / 6, 0.5)
    out *= f
    return _like(out, x)


@kernel("Softplus", since=1)
def softplus_1(x):
    return _like(_softplus(_float(x)), x)


@kernel("Softsign", since=1)
def softsign_1(x):
    f = _float(x)
    return _like(f / (1 + np.abs(f)), x)


def _erf_any(x):
    return erf(x) if x.dtype.itemsize >= 8 else _erf32(x)


@kernel("Erf", since=9)
def erf_9(x):
    return _like(_erf_any(x), x)


@kernel("Gelu", since=20)
def gelu_20(x, *, approximate="none"):
    f = _float(x)
    if approximate == "tanh":
        inner = np.sqrt(2 / np.pi) * (f + 0.044715 * f**3)
        return _like(0.5 * f * (1 + np.tanh(inner.astype(f.dtype, copy=False))), x)
    if approximate != "none":
        raise ValueError(f"Gelu approximate must be 'none' or 'tanh', not {approximate!r}")
    if f.dtype == np.float32:
        return _like(_gelu32(f), x)
    out = _erf_any(f * f.dtype.type(np.sqrt(0.5))).astype(f.dtype, copy=False)
    out += f.dtype.type(1)
    out *= f
    out *= f.dtype.type(0.5)
    return _like(out, x)


@kernel("Mish", since=18)
def mish_18(x):
    f = _float(x)
    return _like(f * np.tanh(_softplus(f)), x)


@kernel("Swish", since=24)
def swish_24(x, *, alpha=1.0):
    f = _float(x)
    a = _scalar(x, alpha)
    if f.dtype == np.float32 and _TANH_SIGMOID:
        return _like(f * _sigmoid(f * a), x)
    return _like(exp_sigmoid(f if alpha == 1 else f * a, f), x)


@kernel("ThresholdedRelu", since=10)
def thresholded_relu_10(x, *, alpha=1.0):
    f = _float(x)
    return _like(np.where(f > _scalar(x, alpha), f, 0), x)


@kernel("Shrink", since=9)
def shrink_9(x, *, bias=0.0, lambd=0.5):
    f = _float(x).astype(np.float64) if x.dtype.kind in "iu" else _float(x)
    shrunk = np.where(f < -lambd, f + bias, np.where(f > lambd, f - bias, 0))
    return _like(shrunk, x)


@kernel("Tanh", since=1)
def tanh_1(x, *, consumed_inputs=None):
    return _like(np.tanh(_float(x)), x)


# -- Softmax family -------------------------------------------------------------------------
# Opsets 1 and 11 coerce the input to 2-D at ``axis`` and normalise each row; opset 13
# normalises along the single ``axis``.


def _softmax(f, axis):
    out = np.subtract(f, np.max(f, axis=axis, keepdims=True))
    np.exp(out, out=out)
    if axis in (-1, f.ndim - 1) and f.dtype in (np.float32, np.float64):
        out /= last_axis_sums(out)[..., None]
    else:
        out /= np.sum(out, axis=axis, keepdims=True)
    return out


def _log_softmax(f, axis):
    shifted = f - np.max(f, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def _hardmax(f, axis):
    first = np.expand_dims(np.argmax(f, axis=axis), axis)
    out = np.zeros(f.shape, dtype=f.dtype)
    np.put_along_axis(out, first, 1, axis=axis)
    return out


def _rows(fn, x, axis):
    axis = axis % x.ndim if x.ndim else 0
    rows = int(np.prod(x.shape[:axis], dtype=np.int64))
    flat = _float(x).reshape(rows, -1)
    return _like(fn(flat, 1).reshape(x.shape), x)


def _single(fn, x, axis):
    return _like(fn(_float(x), axis), x)


@kernel("Softmax", since=1)
def softmax_1(x, *, axis=1):
    return _rows(_softmax, x, axis)


@kernel("Softmax", since=13)
def softmax_13(x, *, axis=-1):
    return _single(_softmax, x, axis)


@kernel("LogSoftmax", since=1)
def log_softmax_1(x, *, axis=1):
    return _rows(_log_softmax, x, axis)


@kernel("LogSoftmax", since=13)
def log_softmax_13(x, *, axis=-1):
    return _single(_log_softmax, x, axis)


@kernel("Hardmax", since=1)
def hardmax_1(x, *, axis=1):
    return _rows(_hardmax, x, axis)


@kernel("Hardmax", since=13)
def hardmax_13(x, *, axis=-1):
    return _single(_hardmax, x, axis)
