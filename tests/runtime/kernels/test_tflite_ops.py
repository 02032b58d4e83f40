"""TFLite builtin kernels, one small model per op, against the TFLite interpreter.

Each case is a tf.function converted by TFLiteConverter twice: float32, and full-integer
int8 (int8 inputs and outputs, calibrated on random data) where TFLite has the op in int8.
Float results must match the interpreter within rtol 1e-4. Quantized results must match
TFLite's reference kernels (OpResolverType.BUILTIN_REF) exactly for the ops edgerun
computes with TFLite's integer arithmetic, and be within one quantization step of the
default interpreter (XNNPACK requantizes in float, so it may differ by one) for all.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from edgerun.runtime.plan import Plan
from edgerun.runtime.tflite_reader import parse_tflite

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")

# ops whose int8 kernels follow TFLite's integer arithmetic bit for bit
EXACT_INT8 = {
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "TRANSPOSE_CONV",
    "BATCH_MATMUL",
    "ADD",
    "SUB",
    "MUL",
    "AVERAGE_POOL_2D",
    "MAX_POOL_2D",
    "REDUCE_MAX",
    "RELU",
    "RELU6",
    "LEAKY_RELU",
    "MAXIMUM",
    "MINIMUM",
    "SQUARED_DIFFERENCE",
    "CONCATENATION",
    "PAD",
    "PADV2",
    "RESHAPE",
    "TRANSPOSE",
    "SQUEEZE",
    "EXPAND_DIMS",
    "STRIDED_SLICE",
    "SLICE",
    "GATHER",
    "SPLIT",
    "SPLIT_V",
    "PACK",
    "UNPACK",
    "DEPTH_TO_SPACE",
    "RESIZE_NEAREST_NEIGHBOR",
    "RESIZE_BILINEAR",
    "QUANTIZE",
    "DEQUANTIZE",
    "ARG_MAX",
    # 8-bit lookup tables built as TFLite's LUTPopulate builds them
    "EXP",
    "LOG",
    "LOGISTIC",
    "TANH",
    "HARD_SWISH",
    "GELU",
}
# Where TFLite's two int8 kernels disagree with each other by more than one step: the
# reference SUM with the optimized one (edgerun follows the optimized kernel, which also
# backs XNNPACK's result), XNNPACK's BATCH_MATMUL with the reference (edgerun is
# bit-exact with the reference).
REFERENCE_DIFFERS = {"SUM"}
DEFAULT_DIFFERS = {"BATCH_MATMUL"}


@dataclass
class Case:
    op: str  # the TFLite builtin the model must contain
    fn: Callable
    shapes: list[list[int | None]]
    int8: bool = True
    positive: bool = False  # inputs drawn from (0.5, 2.5): LOG, RSQRT, POW, DIV
    dtypes: list = field(default_factory=list)
    exact: bool | None = None  # int8 bit-exact with the reference kernels (None: by op)


def _w(*shape, seed=1):
    return tf.constant(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


@functools.cache
def _prelu():
    alpha = np.random.default_rng(2).uniform(0.05, 0.5, (1, 1, 4))
    return tf.keras.layers.PReLU(tf.constant_initializer(alpha), shared_axes=[1, 2])


_dw, _tconv, _v1 = tf.nn.depthwise_conv2d, tf.nn.conv2d_transpose, tf.compat.v1.image
X = [1, 8, 8, 4]
_PADS = [[0, 0], [1, 2], [2, 1], [0, 0]]
CASES = [
    Case("CONV_2D", lambda x: tf.nn.relu(tf.nn.conv2d(x, _w(3, 3, 4, 6), 1, "SAME") + _w(6)), [X]),
    Case("CONV_2D", lambda x: tf.nn.conv2d(x, _w(3, 3, 4, 5), 2, "VALID", dilations=1), [X]),
    Case("CONV_2D", lambda x: tf.nn.conv2d(x, _w(3, 3, 4, 5), 1, "SAME", dilations=2), [X]),
    Case("DEPTHWISE_CONV_2D", lambda x: _dw(x, _w(3, 3, 4, 2), [1, 2, 2, 1], "SAME"), [X]),
    Case("DEPTHWISE_CONV_2D", lambda x: tf.nn.relu6(_dw(x, _w(3, 3, 4, 1), [1] * 4, "VALID")), [X]),
    Case("FULLY_CONNECTED", lambda x: tf.matmul(x, _w(16, 10)) + _w(10), [[3, 16]]),
    Case("TRANSPOSE_CONV", lambda x: _tconv(x, _w(3, 3, 5, 4), [1, 16, 16, 5], 2, "SAME"), [X]),
    Case("TRANSPOSE_CONV", lambda x: _tconv(x, _w(2, 2, 3, 4), [1, 9, 9, 3], 1, "VALID"), [X]),
    Case("BATCH_MATMUL", lambda a, b: tf.matmul(a, b), [[2, 3, 4], [2, 4, 5]]),
    Case("ADD", lambda x, y: x + y, [X, [1, 1, 1, 4]]),
    Case("SUB", lambda x, y: x - y, [X, X]),
    Case("MUL", lambda x, y: x * y, [X, [1, 8, 1, 4]]),
    Case("DIV", lambda x, y: x / y, [X, X], positive=True),
    Case("AVERAGE_POOL_2D", lambda x: tf.nn.avg_pool2d(x, 3, 2, "SAME"), [X]),
    Case("MAX_POOL_2D", lambda x: tf.nn.max_pool2d(x, 3, 2, "SAME"), [X]),
    Case("MEAN", lambda x: tf.reduce_mean(x, axis=[1, 2], keepdims=True), [X]),
    Case("MEAN", lambda x: tf.reduce_mean(x, axis=-1, keepdims=True), [X], exact=True),
    Case("SUM", lambda x: tf.reduce_sum(x, axis=[3]), [X]),
    Case("REDUCE_MAX", lambda x: tf.reduce_max(x, axis=[1]), [X]),
    Case("RESHAPE", lambda x: tf.reshape(x, [1, 16, 16]), [X]),
    Case("SOFTMAX", lambda x: tf.nn.softmax(x * 3.0), [[2, 10]]),
    Case("LOGISTIC", tf.sigmoid, [X]),
    Case("TANH", tf.tanh, [X]),
    Case("RELU", tf.nn.relu, [X]),
    Case("RELU6", tf.nn.relu6, [X]),
    Case("LEAKY_RELU", lambda x: tf.nn.leaky_relu(x, 0.1), [X]),
    Case("PRELU", lambda x: _prelu()(x), [X]),
    Case("HARD_SWISH", lambda x: x * tf.nn.relu6(x + 3.0) / 6.0, [X]),
    Case("CONCATENATION", lambda x, y: tf.concat([x, y], axis=3), [X, X]),
    Case("PAD", lambda x: tf.pad(x, [[0, 0], [1, 2], [2, 1], [0, 0]]), [X]),
    Case("PADV2", lambda x: tf.pad(x, [[0, 0], [1, 0], [0, 1], [0, 0]], constant_values=0.5), [X]),
    Case("RESIZE_BILINEAR", lambda x: tf.image.resize(x, [13, 16], "bilinear"), [X]),
    Case("RESIZE_BILINEAR", lambda x: _v1.resize_bilinear(x, [15, 15], align_corners=True), [X]),
    Case("RESIZE_NEAREST_NEIGHBOR", lambda x: tf.image.resize(x, [16, 12], "nearest"), [X]),
    Case("RESIZE_NEAREST_NEIGHBOR", lambda x: _v1.resize_nearest_neighbor(x, [15, 15], True), [X]),
    Case("DEPTH_TO_SPACE", lambda x: tf.nn.depth_to_space(x, 2), [X]),
    Case("STRIDED_SLICE", lambda x: x[:, 1:7:2, ::-1, 1:], [X]),
    Case("STRIDED_SLICE", lambda x: x[:, 2, ..., tf.newaxis, 1:3], [X]),
    Case("SLICE", lambda x: tf.slice(x, [0, 1, 2, 0], [1, 4, -1, 3]), [X]),
    Case("TRANSPOSE", lambda x: tf.transpose(x, [0, 3, 1, 2]), [X]),
    Case("SQUEEZE", lambda x: tf.squeeze(x, axis=2), [[None, None, 1, 5]]),
    Case("EXPAND_DIMS", lambda x: tf.expand_dims(x, 1), [[None, 5]]),
    Case("GATHER", lambda x: tf.gather(x, [2, 0, 1, 2], axis=1), [X]),
    Case("SPLIT", lambda x: tf.split(x, 2, axis=3), [X]),
    Case("SPLIT_V", lambda x: tf.split(x, [1, 3], axis=3), [X]),
    Case("PACK", lambda x, y: tf.stack([x, y], axis=1), [[2, 5], [2, 5]]),
    Case("UNPACK", lambda x: tf.unstack(x, axis=1), [[2, 3, 5]]),
    Case("SHAPE", lambda x: tf.shape(x), [[None, 5]], int8=False),
    Case("ARG_MAX", lambda x: tf.argmax(x, axis=-1), [X]),
    Case("MAXIMUM", tf.maximum, [X, X]),
    Case("MINIMUM", tf.minimum, [X, X]),
    Case("SQUARED_DIFFERENCE", tf.math.squared_difference, [X, X]),
    Case("RSQRT", tf.math.rsqrt, [X], positive=True),
    Case("SQRT", tf.sqrt, [X], positive=True),
    Case("EXP", tf.exp, [X]),
    Case("LOG", tf.math.log, [X], positive=True),
    Case("POW", tf.pow, [X, X], positive=True),
    Case("CAST", lambda x: tf.cast(x * 4.0, tf.int32), [X]),
    Case("GELU", lambda x: tf.nn.gelu(x, approximate=False), [X]),
    Case("GELU", lambda x: tf.nn.gelu(x, approximate=True), [X]),
    # beyond the list: float only
    Case("SPACE_TO_DEPTH", lambda x: tf.nn.space_to_depth(x, 2), [X], int8=False),
    Case("MIRROR_PAD", lambda x: tf.pad(x, _PADS, "REFLECT"), [X], int8=False),
    Case("MIRROR_PAD", lambda x: tf.pad(x, _PADS, "SYMMETRIC"), [X], int8=False),
    Case("TILE", lambda x: tf.tile(x, [1, 2, 1, 3]), [X], int8=False),
    Case("BROADCAST_TO", lambda x: tf.broadcast_to(x, [3, 8, 8, 4]), [X], int8=False),
    Case("REDUCE_MIN", lambda x: tf.reduce_min(x, axis=[2]), [X], int8=False),
    Case("REDUCE_PROD", lambda x: tf.reduce_prod(x, axis=[3]), [X], int8=False),
    Case("ARG_MIN", lambda x: tf.argmin(x, axis=1), [X], int8=False),
    Case("LOG_SOFTMAX", tf.nn.log_softmax, [[2, 10]], int8=False),
    Case("ABS", tf.abs, [X], int8=False),
    Case("NEG", tf.negative, [X], int8=False),
    Case("FLOOR", lambda x: tf.floor(x * 3.0), [X], int8=False),
    Case("CEIL", lambda x: tf.math.ceil(x * 3.0), [X], int8=False),
    Case("SQUARE", tf.square, [X], int8=False),
    Case("SIN", tf.sin, [X], int8=False),
    Case("COS", tf.cos, [X], int8=False),
    Case("ELU", tf.nn.elu, [X], int8=False),
    Case("SELECT", lambda x, y: tf.where(x > y, x, y * 2.0), [X, X], int8=False),
    Case("GATHER_ND", lambda x: tf.gather_nd(x, [[0, 1], [0, 3]]), [X], int8=False),
    Case("REVERSE_V2", lambda x: tf.reverse(x, [1]), [X], int8=False),
    Case("FLOOR_DIV", lambda x, y: tf.math.floordiv(x, y), [X, X], positive=True, int8=False),
    Case("FLOOR_MOD", lambda x, y: tf.math.floormod(x, y), [X, X], positive=True, int8=False),
    Case("ZEROS_LIKE", lambda x: tf.zeros_like(x) + x, [[None, 5]], int8=False),
    Case("FILL", lambda x: tf.fill(tf.shape(x), 2.0) * x, [[None, 5]], int8=False),
    Case("RANGE", lambda x: tf.cast(tf.range(tf.shape(x)[0]), tf.float32), [[None, 5]], int8=False),
]  # fmt: skip


def case_id(case: Case) -> str:
    same = [c for c in CASES if c.op == case.op]
    return case.op if len(same) == 1 else f"{case.op}-{same.index(case)}"


def feeds_for(shapes, positive: bool, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for shape in shapes:
        dims = [1 if d is None else d for d in shape]
        if positive:
            out.append(rng.uniform(0.5, 2.5, dims).astype(np.float32))
        else:
            out.append(rng.standard_normal(dims).astype(np.float32))
    return out


def convert(fn, shapes, mode: str = "float", positive: bool = False) -> bytes:
    """A tf.function of float32 inputs, converted: "float", "int8" (int8 in and out),
    "int8-float-io" (float in and out, QUANTIZE/DEQUANTIZE at the ends), "uint8-io",
    "float16", "dynamic" (int8 weights, float activations)."""
    specs = [tf.TensorSpec(s, tf.float32) for s in shapes]
    f = tf.function(fn, input_signature=specs)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    if mode != "float":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        conv.target_spec.supported_types = [tf.float16]
    if mode.startswith("int8"):

        def representative():
            for i in range(16):
                yield feeds_for(shapes, positive, seed=100 + i)

        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if mode == "int8":
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
    if mode == "uint8-io":  # int8 inside, uint8 at the ends: QUANTIZE requantizes
        conv.representative_dataset = lambda: (
            feeds_for(shapes, positive, 100 + i) for i in range(16)
        )
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    return conv.convert()


def interpreter_run(model: bytes, feeds: list[np.ndarray], resolver: str = "AUTO") -> list:
    """The interpreter's outputs; ``resolver``: "AUTO" (XNNPACK where it applies),
    "BUILTIN_REF" (reference kernels), "BUILTIN_WITHOUT_DEFAULT_DELEGATES" (builtin ones)."""
    kind = getattr(tf.lite.experimental.OpResolverType, resolver)
    it = tf.lite.Interpreter(model_content=model, experimental_op_resolver_type=kind)
    for d, x in zip(it.get_input_details(), feeds, strict=True):
        if list(d["shape"]) != list(x.shape):
            it.resize_tensor_input(d["index"], x.shape)
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), feeds, strict=True):
        it.set_tensor(d["index"], x)
    it.invoke()
    return [it.get_tensor(d["index"]) for d in it.get_output_details()]


def quantize_feeds(model: bytes, feeds: list[np.ndarray]) -> list[np.ndarray]:
    it = tf.lite.Interpreter(model_content=model)
    out = []
    for d, x in zip(it.get_input_details(), feeds, strict=True):
        scale, zero = d["quantization"]
        if d["dtype"] == np.float32 or scale == 0:
            out.append(x.astype(d["dtype"]))
            continue
        info = np.iinfo(d["dtype"])
        out.append(np.clip(np.round(x / scale) + zero, info.min, info.max).astype(d["dtype"]))
    return out


def ours_run(model: bytes, feeds: list[np.ndarray]) -> list:
    m = parse_tflite(memoryview(model))
    plan = Plan(m.graph, m.opset_imports)
    names = [s.name for s in m.inputs]
    results = plan.run(dict(zip(names, feeds, strict=True)))
    # match the interpreter's output order (its details are in subgraph output order)
    return results


def ops_in(model: bytes) -> set[str]:
    m = parse_tflite(memoryview(model))
    return {n.op_type for n in m.graph.walk()}


@functools.cache
def converted(index: int, mode: str) -> bytes:
    case = CASES[index]
    return convert(case.fn, case.shapes, mode, case.positive)


def assert_float_close(ours: list, want: list) -> None:
    assert len(ours) == len(want)
    for a, b in zip(ours, want, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        scale = float(np.abs(b).max()) if b.size and b.dtype.kind == "f" else 1.0
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(scale, 1.0))


def steps_apart(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max(initial=0))


@pytest.mark.parametrize("index", range(len(CASES)), ids=[case_id(c) for c in CASES])
def test_float(index: int) -> None:
    case = CASES[index]
    model = converted(index, "float")
    assert case.op in ops_in(model)
    feeds = feeds_for(case.shapes, case.positive, seed=index)
    assert_float_close(ours_run(model, feeds), interpreter_run(model, feeds))


INT8 = [i for i, c in enumerate(CASES) if c.int8]


@pytest.mark.parametrize("index", INT8, ids=[case_id(CASES[i]) for i in INT8])
def test_int8(index: int) -> None:
    case = CASES[index]
    model = converted(index, "int8")
    assert case.op in ops_in(model)
    feeds = quantize_feeds(model, feeds_for(case.shapes, case.positive, seed=index))
    if len(feeds) == 1 and feeds[0].size == 256 and not case.positive:
        # every int8 code once: a lookup table is checked whole
        feeds = [np.random.default_rng(index).permutation(np.arange(-128, 128, dtype=np.int8))]
        feeds[0] = feeds[0].reshape(case.shapes[0])
    ours = ours_run(model, feeds)
    default = interpreter_run(model, feeds)
    try:
        reference = interpreter_run(model, feeds, "BUILTIN_REF")
    except ValueError as exc:  # op versions the reference resolver lacks (DEPTH_TO_SPACE v2)
        assert "Didn't find op" in str(exc)
        reference = default
    for a, ref, dflt in zip(ours, reference, default, strict=True):
        assert a.shape == ref.shape and a.dtype == ref.dtype
        if case.op in EXACT_INT8 if case.exact is None else case.exact:
            np.testing.assert_array_equal(a, ref)
        if case.op not in REFERENCE_DIFFERS:
            assert steps_apart(a, ref) <= 1
        if case.op not in DEFAULT_DIFFERS:
            assert steps_apart(a, dflt) <= 1


@pytest.mark.parametrize("op", ["CONV_2D", "ADD", "CONCATENATION"])
def test_quantize_dequantize(op: str) -> None:
    # int8 models with float inputs and outputs: QUANTIZE in, DEQUANTIZE out
    index = next(i for i, c in enumerate(CASES) if c.op == op)
    case = CASES[index]
    model = converted(index, "int8-float-io")
    assert {"QUANTIZE", "DEQUANTIZE", op} <= ops_in(model)
    feeds = feeds_for(case.shapes, case.positive, seed=index)
    for a, b in zip(
        ours_run(model, feeds), interpreter_run(model, feeds, "BUILTIN_REF"), strict=True
    ):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("op", ["CONV_2D", "ADD"])
def test_uint8_inputs_and_outputs(op: str) -> None:
    index = next(i for i, c in enumerate(CASES) if c.op == op)
    case = CASES[index]
    model = converted(index, "uint8-io")
    assert "QUANTIZE" in ops_in(model)
    feeds = quantize_feeds(model, feeds_for(case.shapes, case.positive, seed=index))
    assert feeds[0].dtype == np.uint8
    ours = ours_run(model, feeds)
    for a, b in zip(ours, interpreter_run(model, feeds, "BUILTIN_REF"), strict=True):
        assert a.dtype == b.dtype == np.uint8
        np.testing.assert_array_equal(a, b)
