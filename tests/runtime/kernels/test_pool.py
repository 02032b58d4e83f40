"""Pooling kernels against onnxruntime on cases the node suite does not cover."""

from __future__ import annotations

import numpy as np
import pytest

from tests.runtime.kernels.test_conv import ours, run_ort

rng = np.random.default_rng(0)

MAXPOOL_CASES = [
    ((1, 8, 112, 112), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((2, 3, 9, 10), {"kernel_shape": [3, 2], "strides": [2, 3], "pads": [1, 0, 2, 1]}),
    ((1, 2, 11, 9), {"kernel_shape": [3, 3], "dilations": [2, 1], "ceil_mode": 1}),
    ((1, 2, 8, 8), {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 3, 7, 6, 5), {"kernel_shape": [2, 3, 2], "strides": [2, 1, 2], "ceil_mode": 1}),
    ((1, 5, 7, 7), {"kernel_shape": [7, 7]}),  # one window: a global pool
    ((2, 4, 5, 6), {"kernel_shape": [7, 8], "pads": [1, 2, 1, 0]}),  # one window over pads
]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("xs", "attrs"), MAXPOOL_CASES)
def test_max_pool(xs, attrs, channels_last):
    x = rng.standard_normal(xs).astype(np.float32)
    stored = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1) if channels_last else x
    got = ours("MaxPool", [stored], attrs)
    np.testing.assert_array_equal(got, run_ort("MaxPool", [x], attrs))
    if channels_last and xs[1] > 1:  # pooled in that layout, and handed on in it
        assert got.strides[1] == got.itemsize


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("xs", "attrs"), MAXPOOL_CASES)
def test_average_pool(xs, attrs, channels_last, count_include_pad):
    # summed axis by axis like MaxPool's maximum, then divided by each window's count
    x = rng.standard_normal(xs).astype(np.float32)
    stored = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1) if channels_last else x
    attrs = {**attrs, "count_include_pad": count_include_pad}
    got = ours("AveragePool", [stored], attrs)
    np.testing.assert_allclose(got, run_ort("AveragePool", [x], attrs), rtol=1e-5, atol=1e-6)
    if channels_last and xs[1] > 1:
        assert got.strides[1] == got.itemsize
