"""What the TFLite convolutions derive from a node's weights is derived on its first run."""

from __future__ import annotations

import gc

import numpy as np

from edgerun.runtime.kernels import derived, tflite_nn
from edgerun.runtime.tflite_reader import QuantParams, TensorQuant


def _int8_conv_node():
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (1, 6, 6, 4)).astype(np.int8)
    w = rng.integers(-127, 128, (5, 3, 3, 4)).astype(np.int8)
    bias = rng.integers(-300, 300, 5).astype(np.int32)

    def q(scale, zero, dtype=np.int8, dim=0):
        s = np.asarray(scale, np.float32).reshape(-1)
        z = np.broadcast_to(np.asarray(zero), s.shape).astype(np.int64)
        return QuantParams(s, z, dim, np.dtype(dtype))

    quant = TensorQuant(
        (q(0.05, 3), q(np.linspace(0.01, 0.02, 5), 0), q(np.full(5, 5e-4), 0, np.int32)),
        (q(0.2, -4),),
    )
    return x, w, bias, quant


def test_quantized_conv_keeps_one_weight_view_and_multipliers() -> None:
    x, w, bias, quant = _int8_conv_node()
    first = tflite_nn.conv_2d(x, w, bias, padding="SAME", quant=quant)
    held = derived._MEMO.copy()
    view = tflite_nn._oihw(w, quant, lambda f: f.transpose(0, 3, 1, 2))
    assert view is tflite_nn._oihw(w, quant, lambda f: f.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(tflite_nn.conv_2d(x, w, bias, padding="SAME", quant=quant), first)
    assert derived._MEMO.keys() == held.keys()  # the second run derived nothing new
    count = len(derived._MEMO)
    del quant, view
    assert len(derived._MEMO) < count  # the node's entries go with it


def test_float_conv_keeps_one_weight_view_while_its_filter_lives() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 8, 8, 4)).astype(np.float32)
    weights = rng.standard_normal((6, 1, 1, 4)).astype(np.float32)
    before = len(derived._MEMO)
    # a filter that owns its memory: nothing is kept (an entry would keep it alive)
    tflite_nn.conv_2d(x, weights, None)
    assert len(derived._MEMO) == before
    # a filter over the model's buffer, as the reader maps it: its view and the layouts
    # derived from it are kept, and the second run derives nothing
    mapped = np.frombuffer(weights.tobytes(), np.float32).reshape(weights.shape)
    first = tflite_nn.conv_2d(x, mapped, None)
    kept = set(derived._MEMO)
    assert len(kept) > before
    np.testing.assert_array_equal(tflite_nn.conv_2d(x, mapped, None), first)
    assert set(derived._MEMO) == kept
    del mapped
    gc.collect()
    assert len(derived._MEMO) == before  # they go with the filter
