"""The ONNX reader against onnx.load: same graph, same tensors, bit for bit."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgerun.errors import ModelFormatError, UnsafePathError
from edgerun.runtime.onnx_reader import parse_model, read_onnx
from tests.onnx_compare import assert_model

# Every element type the spec defines except STRING (which has no raw form) and UNDEFINED.
ALL_TYPES = [code for code in range(1, 29) if code != TensorProto.STRING]


def _values(code: int, n: int) -> list:
    np_type = helper.tensor_dtype_to_np_dtype(code)
    if code in (TensorProto.BOOL,):
        return [bool(i % 2) for i in range(n)]
    if np.dtype(np_type).kind in "iu" or code in (21, 22, 25, 26):
        bits = {21: 4, 22: 4, 25: 2, 26: 2}.get(code, 8)
        signed = code in (22, 26) or np.dtype(np_type).kind == "i"
        low = -(1 << (bits - 1)) if signed else 0
        return [low + (i * 3) % (1 << bits) for i in range(n)]
    if code in (14, 15):
        return [complex(i, -i) for i in range(n)]
    return [0.5 * (i - n // 2) for i in range(n)]


def _typed_tensors(raw: bool) -> list[TensorProto]:
    tensors = []
    for code in ALL_TYPES:
        name = f"{helper.tensor_dtype_to_string(code)}_{'raw' if raw else 'typed'}"
        dims = [3, 5]
        values = _values(code, 15)
        if raw and code in (14, 15):
            array = np.array(values, dtype=helper.tensor_dtype_to_np_dtype(code)).reshape(dims)
            tensors.append(numpy_helper.from_array(array, name))
            continue
        tensors.append(helper.make_tensor(name, code, dims, values, raw=False))
        if raw:  # re-encode the same values through raw_data
            array = numpy_helper.to_array(tensors[-1])
            tensors[-1] = numpy_helper.from_array(array, name)
    return tensors


def _model_with(initializers: list[TensorProto], **kw) -> onnx.ModelProto:
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g", [x], [out], initializers
    )
    return helper.make_model(graph, **kw)


def _every_attribute_kind() -> onnx.ModelProto:
    body = helper.make_graph(
        [helper.make_node("Neg", ["a"], ["b"])],
        "body",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)],
    )
    tensor = numpy_helper.from_array(np.arange(6, dtype=np.int64).reshape(2, 3), "t")
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([1.5, 2.5], np.float32), "sv"),
        numpy_helper.from_array(np.array([1, 4], np.int64), "si"),
        [2, 3],
    )
    seq_type = helper.make_sequence_type_proto(
        helper.make_tensor_type_proto(TensorProto.FLOAT, ["n", 3])
    )
    node = helper.make_node(
        "Custom",
        ["x"],
        ["y"],
        domain="org.example",
        name="every_kind",
        f=1.25,
        i=-7,
        s="text",
        t=tensor,
        g=body,
        floats=[1.0, -2.5],
        ints=[1, -2, 3_000_000_000],
        strings=["a", "b"],
        tensors=[tensor, tensor],
        graphs=[body, body],
        sparse=sparse,
        tp=seq_type,
        tps=[seq_type],
    )
    then_branch = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value_floats=[1.0])],
        "then",
        [],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1])],
    )
    if_node = helper.make_node(
        "If", ["cond"], ["z"], then_branch=then_branch, else_branch=then_branch
    )
    function = helper.make_function(
        "org.example",
        "Twice",
        ["a"],
        ["b"],
        [helper.make_node("Add", ["a", "a"], ["b"])],
        [helper.make_opsetid("", 17)],
        attributes=["alpha"],
    )
    graph = helper.make_graph(
        [node, if_node, helper.make_node("Twice", ["x"], ["w"], domain="org.example")],
        "every_kind",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", None, 3]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_value_info(
                "z", helper.make_optional_type_proto(helper.make_tensor_type_proto(1, [1]))
            ),
            helper.make_value_info("w", helper.make_map_type_proto(TensorProto.INT64, seq_type)),
        ],
        sparse_initializer=[sparse],
        doc_string="every attribute kind",
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("org.example", 1)],
        functions=[function],
        producer_name="tests",
        producer_version="1.0",
        doc_string="doc",
    )
    helper.set_model_props(model, {"author": "edgerun", "license": "MIT"})
    return model


BUILT = {
    "typed_fields": lambda: _model_with(_typed_tensors(raw=False)),
    "raw_data": lambda: _model_with(_typed_tensors(raw=True)),
    "strings": lambda: _model_with(
        [helper.make_tensor("s", TensorProto.STRING, [2], [b"ab", b"\xc3\xa9"])]
    ),
    "scalars_and_empty": lambda: _model_with(
        [
            numpy_helper.from_array(np.float32(3.5), "scalar"),
            numpy_helper.from_array(np.zeros((0, 4), np.int8), "empty"),
        ]
    ),
    "every_attribute_kind": _every_attribute_kind,
}


@pytest.mark.parametrize("name", sorted(BUILT))
def test_matches_onnx_on_built_models(name: str, tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(BUILT[name]().SerializeToString())
    assert_model(read_onnx(path), onnx.load(path))


def test_matches_onnx_on_examples(example_paths: dict[str, Path]) -> None:
    for path in example_paths.values():
        assert_model(read_onnx(path), onnx.load(path))


def test_initializers_are_read_only_views_over_the_file(tiny_cnn_path: Path) -> None:
    """Every raw_data tensor is a view of the map, aligned or not (raw_data sits at any
    offset): the plan copies the misaligned ones it runs with (tests/runtime/test_plan.py)."""
    initializers = read_onnx(tiny_cnn_path).graph.initializers.values()
    floats = [w for w in initializers if w.dtype == np.float32]
    assert floats and all(not w.flags.owndata and not w.flags.writeable for w in floats)


def test_matches_onnx_on_the_node_suite() -> None:
    """All ~1,900 models of onnx's backend node test suite parse to what onnx.load holds."""
    from onnx.backend.test.loader import load_node_model_tests

    failures = []
    cases = load_node_model_tests()
    assert len(cases) > 1500
    for case in cases:
        try:
            assert_model(
                parse_model(memoryview(case.model.SerializeToString()), None, case.name), case.model
            )
        except Exception as exc:
            failures.append(f"{case.name}: {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures[:20])


def _save_external(model: onnx.ModelProto, folder: Path, location: str = "weights.bin") -> Path:
    path = folder / "model.onnx"
    onnx.save_model(
        model,
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )
    return path


def _external_model() -> onnx.ModelProto:
    tensors = [
        numpy_helper.from_array(np.arange(i * 10, i * 10 + 37, dtype=np.float32), f"w{i}")
        for i in range(3)
    ]
    return _model_with(tensors)


def test_external_data_matches_onnx(tmp_path: Path) -> None:
    path = _save_external(_external_model(), tmp_path)
    ours = read_onnx(path)
    assert_model(ours, onnx.load(path))
    assert not ours.graph.initializers["w1"].flags.owndata


def _set_external(model: onnx.ModelProto, **entries: str) -> onnx.ModelProto:
    tensor = model.graph.initializer[0]
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    del tensor.external_data[:]
    for k, v in entries.items():
        tensor.external_data.add(key=k, value=v)
    return model


BAD_EXTERNAL = {
    "parent": ({"location": "../weights.bin"}, UnsafePathError, "leaves its folder"),
    "absolute": ({"location": "/etc/passwd"}, UnsafePathError, "not relative"),
    "empty": ({"location": ""}, UnsafePathError, "empty"),
    "missing": ({"location": "nowhere.bin"}, ModelFormatError, "not found"),
    "short": (
        {"location": "weights.bin", "offset": "0", "length": "100000"},
        ModelFormatError,
        "shorter",
    ),
    "negative": ({"location": "weights.bin", "offset": "-4"}, ModelFormatError, "negative"),
    "unknown_key": (
        {"location": "weights.bin", "basepath": "/"},
        ModelFormatError,
        "unknown external_data key",
    ),
    "wrong_length": (
        {"location": "weights.bin", "length": "8"},
        ModelFormatError,
        "its shape needs",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_EXTERNAL))
def test_bad_external_data_is_refused(case: str, tmp_path: Path) -> None:
    entries, error, message = BAD_EXTERNAL[case]
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(np.arange(100, dtype=np.float32).tobytes())
    (tmp_path / "weights.bin").write_bytes(np.arange(100, dtype=np.float32).tobytes())
    path = folder / "model.onnx"
    path.write_bytes(_set_external(_external_model(), **entries).SerializeToString())
    with pytest.raises(error, match=message):
        read_onnx(path)


@pytest.mark.parametrize("link", ["symlink", "hardlink", "symlinked_folder"])
def test_linked_external_data_is_refused(link: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "weights.bin").write_bytes(np.arange(100, dtype=np.float32).tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    location = "weights.bin"
    if link == "symlink":
        os.symlink(outside / "weights.bin", folder / "weights.bin")
    elif link == "hardlink":
        os.link(outside / "weights.bin", folder / "weights.bin")
    else:
        os.symlink(outside, folder / "sub")
        location = "sub/weights.bin"
    path = folder / "model.onnx"
    path.write_bytes(
        _set_external(_external_model(), location=location, length="148").SerializeToString()
    )
    with pytest.raises(UnsafePathError):
        read_onnx(path)


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


CORRUPT = {
    "empty": lambda data: b"",
    "text": lambda data: b"this is not a model\n",
    "truncated": _truncated,
    "last_byte_cut": lambda data: data[:-1],
    "huge_length": lambda data: b"\x3a\xff\xff\xff\xff\x0f" + data,
}


@pytest.mark.parametrize("damage", sorted(CORRUPT))
def test_corrupt_files_give_a_clear_error(damage: str, tiny_cnn_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(CORRUPT[damage](tiny_cnn_path.read_bytes()))
    with pytest.raises(ModelFormatError, match=str(path)):
        read_onnx(path)


@pytest.mark.parametrize("count", [3, 200])  # short packed runs decode in Python, long in numpy
def test_int_fields_match_onnx(count: int, tmp_path: Path) -> None:
    values = [(-1) ** i * (i * 7919) for i in range(count)]
    dims = [1] * (count % 30) + [2, 3]
    weight = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(dims), "w")
    packed = helper.make_tensor("ints", TensorProto.INT64, [count], values)  # int64_data
    node = helper.make_node("Custom", ["w", "ints"], ["y"], domain="test", pads=values)
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([node], "g", [], [output], [weight, packed])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), path)
    model = read_onnx(path)
    assert model.graph.nodes[0].attributes["pads"].value == values
    assert list(model.graph.initializers["w"].shape) == dims
    assert model.graph.initializers["ints"].tolist() == values


def _annotated_chain() -> onnx.ModelProto:
    """x -> Relu -> a -> Relu -> y, with a value_info annotation for ``a``."""
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        value_info=[helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, "n"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _parsed(data: bytes):
    return parse_model(memoryview(data), None)


def test_value_info_types_are_read_when_needed() -> None:
    from edgerun.runtime.onnx_reader import DeferredValueInfo
    from edgerun.runtime.plan import Plan

    model = _parsed(_annotated_chain().SerializeToString())
    (annotation,) = model.graph.value_info
    Plan(model.graph, model.opset_imports)  # shape inference knows Relu: no annotation read
    assert isinstance(annotation, DeferredValueInfo) and "_type" not in vars(annotation)
    assert annotation.type is not None and annotation.type.shape == (2, "n")


def _with_value_info(model: onnx.ModelProto, value_info: bytes) -> bytes:
    """``model`` serialized with a raw ValueInfoProto appended to its graph (field 13)."""
    graph = model.graph.SerializeToString() + b"\x6a" + bytes([len(value_info)]) + value_info
    rest = onnx.ModelProto()
    rest.CopyFrom(model)
    rest.ClearField("graph")
    return rest.SerializeToString() + b"\x3a" + _varint(len(graph)) + graph


def _varint(n: int) -> bytes:
    out = b""
    while n >= 0x80:
        out, n = out + bytes([n & 0x7F | 0x80]), n >> 7
    return out + bytes([n])


def test_a_malformed_value_info_type_fails_when_read() -> None:
    # name "b", then a TypeProto whose tensor_type claims 5 bytes and holds 1
    model = _parsed(_with_value_info(_annotated_chain(), b"\x0a\x01b\x12\x03\x0a\x05\x08"))
    assert [v.name for v in model.graph.value_info] == ["a", "b"]
    with pytest.raises(ModelFormatError, match="truncated"):
        _ = model.graph.value_info[1].type
