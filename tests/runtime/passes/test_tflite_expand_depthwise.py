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


def test_quantized_pairs_are_left_alone() -> None:
    model = convert(_block(48, 2, "SAME"), [(1, 16, 16, 8)], mode="int8")
    ops = _ops(model)
    assert "EXPAND_DEPTHWISE_CONV_2D" not in ops and "DEPTHWISE_CONV_2D" in ops
