"""The TFLite reader against the interpreter's own view of the same files, and against
hostile files (which must fail with one ModelFormatError)."""

from __future__ import annotations

import numpy as np
import pytest

import edgerun
from edgerun.errors import EdgerunError, ModelFormatError
from edgerun.runtime import budget
from edgerun.runtime.plan import Plan
from edgerun.runtime.tflite_reader import DOMAIN, parse_tflite, read_tflite
from tests.runtime.kernels.test_tflite_ops import (
    CASES,
    convert,
    converted,
    interpreter_run,
    ours_run,
)

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")


def _cnn(x):
    rng = np.random.default_rng(0)
    w1 = tf.constant(rng.standard_normal((3, 3, 3, 8)).astype(np.float32))
    w2 = tf.constant(rng.standard_normal((3, 3, 8, 1)).astype(np.float32))
    w3 = tf.constant(rng.standard_normal((8 * 4 * 4, 5)).astype(np.float32))
    y = tf.nn.relu6(tf.nn.conv2d(x, w1, 2, "SAME"))
    y = tf.nn.depthwise_conv2d(y, w2, [1, 2, 2, 1], "SAME")
    return tf.matmul(tf.reshape(y, [1, -1]), w3)


SHAPES = [[1, 16, 16, 3]]
BUILTIN = "BUILTIN_WITHOUT_DEFAULT_DELEGATES"


@pytest.fixture(scope="session")
def cnn_models() -> dict[str, bytes]:
    return {mode: convert(_cnn, SHAPES, mode) for mode in ("float", "int8", "float16")}


def _feeds(model: bytes, seed: int = 0) -> list[np.ndarray]:
    x = np.random.default_rng(seed).standard_normal(SHAPES[0]).astype(np.float32)
    it = tf.lite.Interpreter(model_content=model)
    d = it.get_input_details()[0]
    scale, zero = d["quantization"]
    if d["dtype"] == np.float32:
        return [x]
    return [np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)]


@pytest.mark.parametrize("mode", ["float", "int8", "float16"])
def test_tensors_match_interpreter(cnn_models, mode: str) -> None:
    model = cnn_models[mode]
    m = parse_tflite(memoryview(model))
    g = m.graph
    infos = {v.name: v for v in (*g.inputs, *g.outputs, *g.value_info)}
    it = tf.lite.Interpreter(model_content=model)
    it.allocate_tensors()
    details = it.get_tensor_details()
    assert len(infos) == len(details)
    for d in details:
        info = infos[d["name"]]
        assert info.type is not None
        shape = tuple(-1 if s is None else s for s in info.type.shape)
        assert shape == tuple(d["shape_signature"])
        assert np.dtype(info.spec().dtype) == d["dtype"]
        q, params = info.quant, d["quantization_parameters"]
        if params["scales"].size:
            assert q is not None
            np.testing.assert_array_equal(q.scale, params["scales"])
            np.testing.assert_array_equal(q.zero_point, params["zero_points"])
            assert q.dimension == params["quantized_dimension"]
        else:
            assert q is None
        if d["name"] in g.initializers:  # constants: the same values as the interpreter's
            np.testing.assert_array_equal(g.initializers[d["name"]], it.get_tensor(d["index"]))


@pytest.mark.parametrize("mode", ["float", "int8", "float16"])
def test_operators_match_interpreter(cnn_models, mode: str) -> None:
    model = cnn_models[mode]
    m = parse_tflite(memoryview(model))
    builtin = tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = tf.lite.Interpreter(model_content=model, experimental_op_resolver_type=builtin)
    it.allocate_tensors()
    names = {d["index"]: d["name"] for d in it.get_tensor_details()}
    ops = it._get_ops_details()
    assert [n.op_type for n in m.graph.nodes] == [op["op_name"] for op in ops]
    for node, op in zip(m.graph.nodes, ops, strict=True):
        assert node.domain == DOMAIN
        assert node.inputs == [names[i] if i >= 0 else "" for i in op["inputs"]]
        assert node.outputs == [names[i] for i in op["outputs"]]
    assert m.opset_imports == {DOMAIN: 1}


def test_quantized_specs_carry_parameters(cnn_models) -> None:
    m = parse_tflite(memoryview(cnn_models["int8"]))
    it = tf.lite.Interpreter(model_content=cnn_models["int8"])
    details = it.get_input_details() + it.get_output_details()
    for spec, d in zip(m.inputs + m.outputs, details, strict=True):
        assert spec.dtype == "int8" and spec.quantization is not None
        assert spec.quantization.scale == pytest.approx([d["quantization"][0]])
        assert spec.quantization.zero_point == (d["quantization"][1],)


def _weights_after_flatbuffer(model: bytes) -> bytes:
    """The model with every buffer moved past the flatbuffer (offset/size), as the
    converter writes models over 2 GB, each 64-byte aligned."""
    from tensorflow.lite.tools import flatbuffer_utils

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    moved = {}
    for i, b in enumerate(obj.buffers):
        if b.data is not None and len(b.data):
            moved[i] = bytes(bytearray(b.data))
            b.data, b.offset, b.size = None, 1, len(moved[i])
    size = len(flatbuffer_utils.convert_object_to_bytearray(obj))
    pos, tail = size, b""
    for i, data in moved.items():
        pad = -(size + len(tail)) % 64
        tail += b"\0" * pad
        obj.buffers[i].offset = size + len(tail)
        tail += data
    head = bytes(flatbuffer_utils.convert_object_to_bytearray(obj))
    assert len(head) == pos
    return head + tail


@pytest.mark.parametrize("mode", ["float", "int8"])
def test_buffers_past_the_flatbuffer(cnn_models, mode: str) -> None:
    model = _weights_after_flatbuffer(cnn_models[mode])
    m = parse_tflite(memoryview(model))
    assert any(a.size > 100 for a in m.graph.initializers.values())
    feeds = _feeds(model)
    # TFLite's builtin kernels: int8 exactly (XNNPACK's requantization may differ by one)
    want = interpreter_run(model, feeds, BUILTIN)
    for a, b in zip(ours_run(model, feeds), want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_weights_are_views_of_the_mapped_file(tmp_path, cnn_models) -> None:
    path = tmp_path / "m.tflite"
    path.write_bytes(_weights_after_flatbuffer(cnn_models["float"]))
    m = read_tflite(path)
    big = [a for a in m.graph.initializers.values() if a.size > 100]
    assert big and all(not a.flags.owndata and not a.flags.writeable for a in big)


def test_sparse_constants_densify() -> None:
    rng = np.random.default_rng(5)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    w[rng.random(w.shape) < 0.8] = 0  # pruned: the converter stores it sparse
    weights = tf.constant(w)

    def fn(x):
        return tf.matmul(x, weights)

    specs = [tf.TensorSpec([2, 64], tf.float32)]
    f = tf.function(fn, input_signature=specs)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    conv.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    model = conv.convert()
    m = parse_tflite(memoryview(model))
    assert "DENSIFY" in {n.op_type for n in m.graph.nodes}
    (sparse,) = m.graph.sparse_initializers.values()
    assert sparse.values.size == np.count_nonzero(w)
    x = [rng.standard_normal((2, 64)).astype(np.float32)]
    np.testing.assert_allclose(ours_run(model, x)[0], interpreter_run(model, x)[0], rtol=1e-4)


def test_control_flow_subgraphs() -> None:
    def fn(x):
        y = tf.cond(tf.reduce_sum(x) > 0, lambda: x * 2.0, lambda: x - 1.0)
        _, z = tf.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v * 1.5 + 1.0), (0, y))
        return z

    model = convert(fn, [[4]])
    m = parse_tflite(memoryview(model))
    assert {"IF", "WHILE"} <= {n.op_type for n in m.graph.walk()}
    for sign in (1.0, -1.0):
        x = [np.array([0.5, 1.0, -0.25, 2.0], np.float32) * sign]
        np.testing.assert_allclose(ours_run(model, x)[0], interpreter_run(model, x)[0], rtol=1e-5)


def test_load_runs_tflite_files(tmp_path, cnn_models) -> None:
    path = tmp_path / "m.tflite"
    path.write_bytes(cnn_models["int8"])
    session = edgerun.load(path, backend="numpy")
    feeds = _feeds(cnn_models["int8"])
    out = session.run({session.inputs[0].name: feeds[0]})
    want = interpreter_run(cnn_models["int8"], feeds, BUILTIN)[0]
    np.testing.assert_array_equal(next(iter(out.values())), want)


def test_bundles_of_tflite_models_run(tmp_path, cnn_models) -> None:
    from edgerun.bundle import write_bundle

    model = cnn_models["int8"]
    m = parse_tflite(memoryview(model))
    path = write_bundle(
        tmp_path / "m.edgerun", model, model_format="tflite", inputs=m.inputs, outputs=m.outputs
    )
    session = edgerun.load(path, backend="numpy")
    assert session.inputs == m.inputs
    feeds = _feeds(model)
    out = session.run({session.inputs[0].name: feeds[0]})
    np.testing.assert_array_equal(
        next(iter(out.values())), interpreter_run(model, feeds, BUILTIN)[0]
    )


def test_inspect_and_run_on_the_command_line(tmp_path, cnn_models, capsys) -> None:
    import json

    from edgerun.cli import main
    from edgerun.inspection import inspect_model

    path = tmp_path / "m.tflite"
    path.write_bytes(cnn_models["int8"])
    report = inspect_model(path)
    assert report.format == "tflite"
    assert report.op_histogram == {
        "tflite::CONV_2D": 1,
        "tflite::DEPTHWISE_CONV_2D": 1,
        "tflite::RESHAPE": 1,
        "tflite::FULLY_CONNECTED": 1,
    }
    # conv 8x8x8 outputs x 3x3x3 taps, depthwise 4x4x8 x 3x3, dense 5 x 128
    assert report.macs_by_op == {
        "CONV_2D": 13824,
        "DEPTHWISE_CONV_2D": 1152,
        "FULLY_CONNECTED": 640,
    }
    capsys.readouterr()
    assert main(["inspect", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["macs"] == 13824 + 1152 + 640
    assert main(["run", str(path), "--backend", "numpy"]) == 0


# -- hostile files -----------------------------------------------------------------------------
def _mutations(model: bytes, count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(count):
        b = bytearray(model)
        kind = i % 4
        if kind == 0:  # a few random bytes
            for _ in range(int(rng.integers(1, 8))):
                b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        elif kind == 1:  # truncated
            b = b[: int(rng.integers(0, len(b)))]
        elif kind == 2:  # one 32-bit word (an offset, a length) replaced
            pos = int(rng.integers(0, len(b) - 4))
            b[pos : pos + 4] = int(rng.integers(0, 1 << 32)).to_bytes(4, "little")
        else:  # garbage behind a valid file identifier
            b = bytearray(rng.integers(0, 256, int(rng.integers(8, 300)), dtype=np.uint8))
            b[4:8] = b"TFL3"
        yield bytes(b)


def _ones(specs) -> dict[str, np.ndarray] | None:
    feeds = {}
    for s in specs:
        if s.dtype not in ("float32", "int8") or not all(isinstance(d, int) for d in s.shape):
            return None
        if np.prod(s.shape) > 1 << 16:
            return None
        feeds[s.name] = np.ones(s.shape, s.dtype)
    return feeds


@pytest.mark.parametrize(
    "source", ["float", "int8", "TRANSPOSE_CONV", "PAD", "AVERAGE_POOL_2D", "STRIDED_SLICE"]
)
def test_hostile_files_fail_cleanly(cnn_models, source: str) -> None:
    """Mutated files are refused, or load and run, or fail to run: always with an edgerun
    error (nothing else escapes, no allocation sized by the damage goes through)."""
    if source in cnn_models:
        model = cnn_models[source]
    else:
        model = converted(next(i for i, c in enumerate(CASES) if c.op == source), "float")
    failed = 0
    with budget.limited(64 << 20):  # a small board: damaged sizes are refused, not filled
        for data in _mutations(model, 300, seed=len(source)):
            try:
                m = parse_tflite(memoryview(data))
                plan = Plan(m.graph, m.opset_imports)
                feeds = _ones(m.inputs)
                if feeds is not None:
                    plan.run(feeds)
            except EdgerunError:
                failed += 1
    assert failed > 50


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (b"\x00" * 64, "TFL3"),
        (b"\x10\x00\x00\x00TFL3" + b"\xff" * 8, "flatbuffer"),
        (b"\xff\xff\xff\x7fTFL3", "past the end"),
    ],
)
def test_garbage_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(ModelFormatError, match=message):
        parse_tflite(memoryview(data))
