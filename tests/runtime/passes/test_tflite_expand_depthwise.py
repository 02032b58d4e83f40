"""TFLite's 1x1 expansion -> depthwise pairs as one EXPAND_DEPTHWISE_CONV_2D step, against
the interpreter; the pairs it must leave alone."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.runtime.plan import Plan
from edgerun.runtime.tflite_reader import parse_tflite
from tests.runtime.kernels.test_tflite_ops import (
    assert_float_close,
    convert,
    feeds_for,
    interpreter_run,
    ours_run,
    quantize_feeds,
)

tf = pytest.importorskip("tensorflow")
rng = np.random.default_rng(3)


def _block(m: int, strides: int, padding: str, also_read: bool = False):
    """x -> 1x1 conv to ``m`` channels, ReLU6 -> 3x3 depthwise, ReLU6; ``also_read``: the
    expansion is also an output."""
    c = 8
    w = tf.constant(rng.standard_normal((1, 1, c, m)).astype(np.float32) / 3)
    b = tf.constant(rng.standard_normal(m).astype(np.float32))
    wd = tf.constant(rng.standard_normal((3, 3, m, 1)).astype(np.float32))
    bd = tf.constant(rng.standard_normal(m).astype(np.float32))

    def fn(x):
        e = tf.nn.relu6(tf.nn.conv2d(x, w, 1, "VALID") + b)
        d = tf.nn.depthwise_conv2d(e, wd, [1, strides, strides, 1], padding)
        y = tf.nn.relu6(d + bd)
        return (y, e) if also_read else y

    return fn


def _ops(model: bytes) -> list[str]:
    m = parse_tflite(memoryview(model))
    return [s.node.op_type for s in Plan(m.graph, m.opset_imports).steps]


@pytest.mark.parametrize("m", [48, 8])  # an expansion (one write), and one run as two steps
@pytest.mark.parametrize(("strides", "padding"), [(1, "SAME"), (2, "SAME"), (2, "VALID")])
def test_expansion_and_depthwise_run_as_one_step(m: int, strides: int, padding: str) -> None:
    shape = (1, 17, 16, 8)  # odd rows, even columns: SAME pads unevenly at stride 2
    model = convert(_block(m, strides, padding), [shape])
    assert _ops(model) == ["EXPAND_DEPTHWISE_CONV_2D"]
    feeds = feeds_for([shape], positive=False, seed=5)
    assert_float_close(ours_run(model, feeds), interpreter_run(model, feeds))


def test_an_expansion_another_step_reads_is_left_alone() -> None:
    shape = (1, 16, 16, 8)
    model = convert(_block(48, 1, "SAME", also_read=True), [shape])
    assert "EXPAND_DEPTHWISE_CONV_2D" not in _ops(model)
    feeds = feeds_for([shape], positive=False, seed=5)
    got, want = ours_run(model, feeds), interpreter_run(model, feeds)
    assert_float_close(sorted(got, key=np.size), sorted(want, key=np.size))


@pytest.mark.parametrize("m", [48, 8])
@pytest.mark.parametrize(("strides", "padding"), [(1, "SAME"), (2, "SAME"), (2, "VALID")])
def test_quantized_pairs_run_as_one_step_bit_for_bit(
    monkeypatch, m: int, strides: int, padding: str
) -> None:
    # TFLite's reference kernels are the oracle: edgerun follows their integer arithmetic;
    # the pair runs fused, not as the two kernels it falls back to
    from edgerun.runtime.kernels import tflite_nn

    def unfused(*args, **kwargs):
        raise AssertionError("the pair ran as two steps")

    monkeypatch.setattr(tflite_nn, "conv_2d", unfused)
    shape = (1, 17, 16, 8)
    model = convert(_block(m, strides, padding), [shape], mode="int8")
    assert _ops(model) == ["EXPAND_DEPTHWISE_CONV_2D"]
    feeds = quantize_feeds(model, feeds_for([shape], positive=False, seed=6))
    want_all = interpreter_run(model, feeds, "BUILTIN_REF")
    for got, want in zip(ours_run(model, feeds), want_all, strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_a_quantized_pair_falls_back_to_the_two_steps(monkeypatch) -> None:
    # a scaling the float32 path cannot take exactly: the two kernels run, with the same result
    from edgerun.runtime.kernels import tflite_nn

    monkeypatch.setattr(tflite_nn, "centered_requantizer", lambda *args: None)
    shape = (1, 16, 16, 8)
    model = convert(_block(48, 2, "SAME"), [shape], mode="int8")
    assert _ops(model) == ["EXPAND_DEPTHWISE_CONV_2D"]
    feeds = quantize_feeds(model, feeds_for([shape], positive=False, seed=7))
    want_all = interpreter_run(model, feeds, "BUILTIN_REF")
    for got, want in zip(ours_run(model, feeds), want_all, strict=True):
        np.testing.assert_array_equal(got, want)
