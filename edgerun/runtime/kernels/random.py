"""Random generators. Each call draws from a fresh numpy Generator (seeded from ``seed`` when
given), so a seeded node repeats its values from run to run and no state is kept."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.dtypes import runtime_dtype
from edgerun.runtime.registry import kernel


def _rng(seed) -> np.random.Generator:
    return np.random.default_rng(None if seed is None else int(seed))


def _dtype(code, like=None) -> np.dtype:
    if code:
        return runtime_dtype(code)
    if like is None:
        raise ValueError("a random operator needs the dtype attribute")
    return like.dtype


def _shape(shape) -> tuple[int, ...]:
    if shape is None:
        raise ValueError("RandomNormal/RandomUniform need the shape attribute")
    return tuple(int(d) for d in shape)


@kernel("RandomNormal", since=1)
def random_normal_1(*, dtype=1, mean=0.0, scale=1.0, seed=None, shape=None):
    return _rng(seed).normal(mean, scale, _shape(shape)).astype(_dtype(dtype))


@kernel("RandomUniform", since=1)
def random_uniform_1(*, dtype=1, high=1.0, low=0.0, seed=None, shape=None):
    return _rng(seed).uniform(low, high, _shape(shape)).astype(_dtype(dtype))


@kernel("RandomNormalLike", since=1)
def random_normal_like_1(input, *, dtype=None, mean=0.0, scale=1.0, seed=None):
    return _rng(seed).normal(mean, scale, input.shape).astype(_dtype(dtype, input))


@kernel("RandomUniformLike", since=1)
def random_uniform_like_1(input, *, dtype=None, high=1.0, low=0.0, seed=None):
    return _rng(seed).uniform(low, high, input.shape).astype(_dtype(dtype, input))


@kernel("Bernoulli", since=15)
def bernoulli_15(input, *, dtype=None, seed=None):
    draws = _rng(seed).random(input.shape) < input.astype(np.float64)
    return draws.astype(_dtype(dtype, input))


@kernel("Multinomial", since=7)
def multinomial_7(input, *, dtype=6, sample_size=1, seed=None):
    # input: [batch, classes] unnormalized log-probabilities; sample by inverting the CDF
    logits = input.astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    cdf = np.cumsum(probs, axis=1)
    cdf /= cdf[:, -1:]
    u = _rng(seed).random((input.shape[0], sample_size))
    picks = (cdf[:, None, :] <= u[:, :, None]).sum(axis=2)
    return np.minimum(picks, input.shape[1] - 1).astype(_dtype(dtype))
