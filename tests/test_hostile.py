"""Hostile and broken inputs: every loader refuses them with one clear edgerun error.

Each case builds its files in a temp folder (in code), then is checked twice: through the
library (the exception's type and message) and through the CLI in a fresh process under an
address-space limit and a timeout (exit status 2, one line on stderr naming the problem,
bounded time and peak RSS, and not a file created anywhere in the temp tree).
"""

from __future__ import annotations

import os
import pickle
import re
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgerun
from edgerun import bundle
from edgerun.errors import (
    BundleError,
    EdgerunError,
    InputError,
    ModelFormatError,
    ResourceLimitError,
    UnsafePathError,
)
from edgerun.inference import run_once
from edgerun.inspection import inspect_model
from edgerun.specs import TensorSpec

AS_LIMIT = 1 << 30  # address space of each CLI run
RSS_LIMIT = 400 << 20
SECONDS = 20
HUGE = 1 << 40  # elements: beyond any budget on any machine


# ---- building models ----------------------------------------------------------------------


def tensor(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def onnx_model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto] = (),  # type: ignore[assignment]
    outputs: list[onnx.ValueInfoProto] | None = None,
    initializers: list[TensorProto] = (),  # type: ignore[assignment]
    functions: list[onnx.FunctionProto] = (),  # type: ignore[assignment]
    **graph_fields: list,
) -> onnx.ModelProto:
    outs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "hostile", list(inputs), outs, list(initializers))
    for key, value in graph_fields.items():
        getattr(graph, key).extend(value)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    return helper.make_model(graph, opset_imports=opsets, functions=list(functions))


def save(folder: Path, model: onnx.ModelProto | bytes, name: str = "model.onnx") -> Path:
    path = folder / name
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    return path


def float_input(name: str, shape: list | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def relu_model() -> onnx.ModelProto:
    """y = Relu(x), x float32 [1, 4]: the valid model the input cases feed."""
    return onnx_model([helper.make_node("Relu", ["x"], ["y"])], [float_input("x", [1, 4])])


def external_model(folder: Path, **entries: str) -> Path:
    """An initializer whose bytes live in external data described by ``entries``."""
    weights = tensor("w", np.arange(4, dtype=np.float32))
    weights.data_location = TensorProto.EXTERNAL
    weights.ClearField("raw_data")
    for key, value in entries.items():
        weights.external_data.add(key=key, value=value)
    node = helper.make_node("Add", ["w", "w"], ["y"])
    return save(folder, onnx_model([node], initializers=[weights]))


WEIGHTS = np.arange(4, dtype=np.float32).tobytes()


# ---- building bundles ---------------------------------------------------------------------


def write_model_bundle(folder: Path, model: bytes, external: dict[str, bytes] | None) -> Path:
    return bundle.write_bundle(
        folder / "m.edgerun",
        model,
        model_format="onnx",
        inputs=[TensorSpec("x", (1, 4), "float32")],
        outputs=[TensorSpec("y", (1, 4), "float32")],
        external_data=external,
    )


def good_bundle(folder: Path) -> Path:
    return write_model_bundle(folder, relu_model().SerializeToString(), None)


def central_record(raw: bytes | bytearray, name: str) -> int:
    at = raw.find(b"PK\x01\x02")
    while at >= 0:
        name_len = struct.unpack_from("<H", raw, at + 28)[0]
        if raw[at + 46 : at + 46 + name_len] == name.encode():
            return at
        at = raw.find(b"PK\x01\x02", at + 4)
    raise AssertionError(f"no central record for {name}")


def patch_bundle(folder: Path, patch: Callable[[bytearray], None]) -> Path:
    path = good_bundle(folder)
    raw = bytearray(path.read_bytes())
    patch(raw)
    path.write_bytes(bytes(raw))
    return path


def crafted_bundle(folder: Path, members: dict[str, bytes], *, manifest_text: bytes | None = None,
                   modes: dict[str, int] | None = None) -> Path:  # fmt: skip
    """A bundle written entry by entry with zipfile, for what write_bundle never produces."""
    manifest = bundle.Manifest(
        format_version=bundle.FORMAT_VERSION,
        model=bundle._digest("model.onnx", members["model.onnx"]),
        model_format="onnx",
        external_data=tuple(bundle._digest(n, d) for n, d in members.items() if n != "model.onnx"),
        inputs=(),
        outputs=(),
        profile=None,
        applied={},
        accuracy=None,
        source={},
        edgerun_version="0",
    )
    path = folder / "c.edgerun"
    with zipfile.ZipFile(path, "w") as zf:
        text = manifest_text if manifest_text is not None else bundle._manifest_text(manifest, path)
        zf.writestr(bundle.MANIFEST, text, compress_type=zipfile.ZIP_DEFLATED)
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (modes or {}).get(name, 0o100644) << 16
            zf.writestr(info, data)
    return path


# ---- the cases ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    kind: str
    build: Callable[[Path, Path], list[str]]  # (case folder, outside folder) -> CLI args
    error: type[EdgerunError]
    message: str  # a regex the message must contain


CASES: dict[str, Case] = {}


def case(kind: str, error: type[EdgerunError], message: str) -> Callable:
    def register(build: Callable[[Path, Path], list[str]]) -> Callable:
        CASES[f"{kind}-{build.__name__}"] = Case(kind, build, error, message)
        return build

    return register


# paths: external data and members must stay inside the model's folder or archive


@case("paths", UnsafePathError, "leaves its folder")
def external_parent(folder: Path, outside: Path) -> list[str]:
    (outside / "w.bin").write_bytes(WEIGHTS)
    return ["inspect", str(external_model(folder, location="../outside/w.bin"))]


@case("paths", UnsafePathError, "not relative")
def external_absolute(folder: Path, outside: Path) -> list[str]:
    (outside / "w.bin").write_bytes(WEIGHTS)
    return ["inspect", str(external_model(folder, location=str(outside / "w.bin")))]


@case("paths", UnsafePathError, "symlink")
def external_symlink(folder: Path, outside: Path) -> list[str]:
    (outside / "w.bin").write_bytes(WEIGHTS)
    (folder / "w.bin").symlink_to(outside / "w.bin")
    return ["run", str(external_model(folder, location="w.bin"))]


@case("paths", UnsafePathError, "symlink")
def external_symlinked_parent(folder: Path, outside: Path) -> list[str]:
    (outside / "w.bin").write_bytes(WEIGHTS)
    (folder / "sub").symlink_to(outside)
    return ["run", str(external_model(folder, location="sub/w.bin"))]


@case("paths", UnsafePathError, "hard link")
def external_hardlink(folder: Path, outside: Path) -> list[str]:
    (outside / "w.bin").write_bytes(WEIGHTS)
    os.link(outside / "w.bin", folder / "w.bin")
    return ["inspect", str(external_model(folder, location="w.bin"))]


@case("paths", UnsafePathError, "not a regular file")
def external_fifo(folder: Path, outside: Path) -> list[str]:
    os.mkfifo(folder / "w.bin")  # opening it for reading would block forever
    return ["inspect", str(external_model(folder, location="w.bin"))]


@case("paths", UnsafePathError, "not a regular file")
def external_directory(folder: Path, outside: Path) -> list[str]:
    (folder / "w.bin").mkdir()
    return ["inspect", str(external_model(folder, location="w.bin"))]


@case("paths", ModelFormatError, "unknown external_data key")
def external_injected_key(folder: Path, outside: Path) -> list[str]:
    (folder / "w.bin").write_bytes(WEIGHTS)
    return ["inspect", str(external_model(folder, location="w.bin", base_path=str(outside)))]


@case("paths", ModelFormatError, "offset '1_6' is not a decimal integer")
def external_odd_offset(folder: Path, outside: Path) -> list[str]:
    (folder / "w.bin").write_bytes(WEIGHTS * 8)
    return ["inspect", str(external_model(folder, location="w.bin", offset="1_6", length="16"))]


@case("paths", ModelFormatError, "not a regular file")
def model_is_a_fifo(folder: Path, outside: Path) -> list[str]:
    os.mkfifo(folder / "model.onnx")
    return ["inspect", str(folder / "model.onnx")]


@case("paths", BundleError, "not a regular file")
def bundle_is_a_fifo(folder: Path, outside: Path) -> list[str]:
    os.mkfifo(folder / "m.edgerun")
    return ["run", str(folder / "m.edgerun")]


# archives: the central directory is checked before any member is read


@case("archives", UnsafePathError, r"'w\.bin' is not a plain file")
def member_symlink_mode(folder: Path, outside: Path) -> list[str]:
    members = {"model.onnx": relu_model().SerializeToString(), "w.bin": b"../../etc/passwd"}
    return ["inspect", str(crafted_bundle(folder, members, modes={"w.bin": 0o120777}))]


@case("archives", UnsafePathError, "not a plain file")
def member_fifo_mode(folder: Path, outside: Path) -> list[str]:
    members = {"model.onnx": relu_model().SerializeToString(), "w.bin": b""}
    return ["inspect", str(crafted_bundle(folder, members, modes={"w.bin": 0o010644}))]


@case("archives", UnsafePathError, "member name")
def member_traversal(folder: Path, outside: Path) -> list[str]:
    members = {"model.onnx": relu_model().SerializeToString(), "../outside/w.bin": b"w"}
    return ["inspect", str(crafted_bundle(folder, members))]


@case("archives", UnsafePathError, "backslash")
def member_backslash(folder: Path, outside: Path) -> list[str]:
    members = {"model.onnx": relu_model().SerializeToString(), "..\\w.bin": b"w"}
    return ["inspect", str(crafted_bundle(folder, members))]


@case("archives", BundleError, "is encrypted")
def member_encrypted(folder: Path, outside: Path) -> list[str]:
    def encrypt(raw: bytearray) -> None:
        at = central_record(raw, "model.onnx")
        raw[at + 8] |= 1

    return ["inspect", str(patch_bundle(folder, encrypt))]


@case("archives", BundleError, r"members 'model\.onnx' and 'w\.bin' overlap")
def overlapping_members(folder: Path, outside: Path) -> list[str]:
    """w.bin's directory record points at a copy of its local header hidden inside the
    model's data: the overlap the "better zip bomb" is built on. Names, sizes, CRC and
    sha256 all check out, so only the overlap itself can give it away."""
    weights = b"\x07" * 64
    header = struct.pack(
        "<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, zlib.crc32(weights), 64, 64, 5, 0
    )
    hidden = np.frombuffer(header + b"w.bin" + weights, np.uint8)
    model = relu_model()
    model.graph.initializer.append(tensor("hidden", hidden))
    path = write_model_bundle(folder, model.SerializeToString(), {"w.bin": weights})
    raw = bytearray(path.read_bytes())
    struct.pack_into("<L", raw, central_record(raw, "w.bin") + 42, raw.find(header))
    path.write_bytes(bytes(raw))
    return ["inspect", str(path)]


@case("archives", BundleError, "manifest.json is unreadable")
def manifest_inflation_bomb(folder: Path, outside: Path) -> list[str]:
    """A manifest that inflates to 64 MiB while its records claim 100 bytes."""
    members = {"model.onnx": relu_model().SerializeToString()}
    path = crafted_bundle(folder, members, manifest_text=b"{" + b" " * (64 << 20) + b"}")
    raw = bytearray(path.read_bytes())
    struct.pack_into("<L", raw, 22, 100)  # the local header's uncompressed size
    struct.pack_into("<L", raw, central_record(raw, bundle.MANIFEST) + 24, 100)
    path.write_bytes(bytes(raw))
    return ["inspect", str(path)]


@case("archives", BundleError, r"nested deeper than 32")
def manifest_deep_json(folder: Path, outside: Path) -> list[str]:
    members = {"model.onnx": relu_model().SerializeToString()}
    path = crafted_bundle(folder, members)
    with zipfile.ZipFile(path) as zf:
        text = zf.read(bundle.MANIFEST).decode()
    deep = text.replace('"profile": null', '"profile": ' + '{"a": ' * 500 + "1" + "}" * 500)
    return ["inspect", str(crafted_bundle(folder, members, manifest_text=deep.encode()))]


@case("archives", BundleError, "bytes after the end of the zip archive")
def trailing_data(folder: Path, outside: Path) -> list[str]:
    path = good_bundle(folder)
    path.write_bytes(path.read_bytes() + b"\x00" * 100)
    return ["inspect", str(path)]


@case("archives", BundleError, "not where the archive says")
def prefixed_data(folder: Path, outside: Path) -> list[str]:
    path = good_bundle(folder)
    path.write_bytes(b"#!/bin/sh\n" + path.read_bytes())
    return ["inspect", str(path)]


# budgets: sizes are Python ints, refused before anything is allocated


def _constant(name: str, values: list[int] | np.ndarray) -> TensorProto:
    return tensor(name, np.asarray(values, dtype=np.int64))


@case("budgets", ResourceLimitError, r"input 'x' of declared shape \[1099511627776, 4\]")
def declared_input(folder: Path, outside: Path) -> list[str]:
    node = helper.make_node("Relu", ["x"], ["y"])
    return ["inspect", str(save(folder, onnx_model([node], [float_input("x", [HUGE, 4])])))]


@case("budgets", ResourceLimitError, r"random input 'x'.*memory budget")
def random_input_shape(folder: Path, outside: Path) -> list[str]:
    node = helper.make_node("Relu", ["x"], ["y"])
    model = save(folder, onnx_model([node], [float_input("x", ["n", 4])]))
    return ["run", str(model), "--shape", f"x={HUGE}x4"]


# all-constant inputs: refused at load, where the plan would fold the result
@case("budgets", ResourceLimitError, r"node 'big' \(ConstantOfShape\).*memory budget")
def constant_of_shape(folder: Path, outside: Path) -> list[str]:
    node = helper.make_node("ConstantOfShape", ["s"], ["y"], name="big")
    model = onnx_model([node], initializers=[_constant("s", [1 << 20, 1 << 20, 1 << 10])])
    return ["run", str(save(folder, model))]


@case("budgets", ModelFormatError, r"node 'wide' \(Expand\).*memory budget")
def expand(folder: Path, outside: Path) -> list[str]:
    node = helper.make_node("Expand", ["x", "s"], ["y"], name="wide")
    model = onnx_model([node], [float_input("x", [1, 4])], initializers=[_constant("s", [HUGE, 4])])
    return ["run", str(save(folder, model))]


@case("budgets", ModelFormatError, r"node 'tiles' \(Tile\).*memory budget")
def tile(folder: Path, outside: Path) -> list[str]:
    node = helper.make_node("Tile", ["x", "r"], ["y"], name="tiles")
    model = onnx_model([node], [float_input("x", [1, 4])], initializers=[_constant("r", [HUGE, 1])])
    return ["run", str(save(folder, model))]


@case("budgets", ResourceLimitError, r"node 'count' \(Range\).*memory budget")
def range_(folder: Path, outside: Path) -> list[str]:
    node = helper.make_node("Range", ["a", "b", "d"], ["y"], name="count")
    scalars = [tensor(n, np.array(v, np.float32)) for n, v in (("a", 0), ("b", 1e15), ("d", 1))]
    return ["run", str(save(folder, onnx_model([node], initializers=scalars)))]


@case("budgets", ModelFormatError, r"node 'margin' \(Pad\).*memory budget")
def pad(folder: Path, outside: Path) -> list[str]:
    node = helper.make_node("Pad", ["x", "p"], ["y"], name="margin")
    pads = _constant("p", [0, 0, 1 << 31, 1 << 31])
    model = onnx_model([node], [float_input("x", [1, 4])], initializers=[pads])
    return ["run", str(save(folder, model))]


@case(
    "budgets", ResourceLimitError, r"node 'outer' \(Mul\): its result of shape \[131072, 131072\]"
)
def folding_result(folder: Path, outside: Path) -> list[str]:
    """Two 512 KiB constants whose product would be 64 GiB if folded at load."""
    column = tensor("a", np.ones((1 << 17, 1), np.float32))
    row = tensor("b", np.ones((1, 1 << 17), np.float32))
    node = helper.make_node("Mul", ["a", "b"], ["y"], name="outer")
    return ["run", str(save(folder, onnx_model([node], initializers=[column, row])))]


@case("budgets", ResourceLimitError, r"sparse tensor 's'.*memory budget")
def sparse_dims(folder: Path, outside: Path) -> list[str]:
    sparse = helper.make_sparse_tensor(
        tensor("s", np.ones(1, np.float32)), _constant("i", [0]), [HUGE, HUGE]
    )
    node = helper.make_node("Identity", ["s"], ["y"])
    return ["run", str(save(folder, onnx_model([node], sparse_initializer=[sparse])))]


@case("budgets", ModelFormatError, r"function 'f\d+' expands to \d+ nodes")
def function_expansion(folder: Path, outside: Path) -> list[str]:
    """Forty functions, each calling the next twice: 2**40 nodes once inlined."""
    functions = []
    for i in range(40):
        calls = [helper.make_node(f"f{i + 1}", ["x"], ["t"], domain="local"),
                 helper.make_node(f"f{i + 1}", ["t"], ["y"], domain="local")]  # fmt: skip
        if i == 39:
            calls = [helper.make_node("Relu", ["x"], ["y"])]
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
        functions.append(helper.make_function("local", f"f{i}", ["x"], ["y"], calls, opsets))
    node = helper.make_node("f0", ["x"], ["y"], domain="local")
    model = onnx_model([node], [float_input("x", [1, 4])], functions=functions)
    return ["inspect", str(save(folder, model))]


@case("budgets", ModelFormatError, "calls itself")
def recursive_function(folder: Path, outside: Path) -> list[str]:
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    body = [helper.make_node("f", ["x"], ["y"], domain="local")]
    function = helper.make_function("local", "f", ["x"], ["y"], body, opsets)
    node = helper.make_node("f", ["x"], ["y"], domain="local")
    model = onnx_model([node], [float_input("x", [1, 4])], functions=[function])
    return ["inspect", str(save(folder, model))]


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, written by hand: the protobuf library itself
    refuses to build messages this deep."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _nested_if(depth: int) -> bytes:
    """A model of ``depth`` If nodes, each in the then-branch of the one above."""
    out = float_input("y", None).SerializeToString()
    leaf = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "leaf", [], [])
    leaf_bytes = leaf.SerializeToString() + _field(12, out)
    graph = leaf_bytes
    for _ in range(depth):
        branches = b"".join(
            _field(5, _field(1, name.encode()) + b"\xa0\x01\x05" + _field(6, body))
            for name, body in (("then_branch", graph), ("else_branch", leaf_bytes))
        )  # AttributeProto: name (1), type GRAPH (field 20 = 5), g (6)
        node = _field(1, b"c") + _field(2, b"y") + _field(4, b"If") + branches
        graph = _field(1, node) + _field(2, b"level") + _field(12, out)
    inputs = [helper.make_tensor_value_info("c", TensorProto.BOOL, []), float_input("x", [1])]
    graph += b"".join(_field(11, v.SerializeToString()) for v in inputs)
    model = onnx_model([])
    model.ClearField("graph")
    return model.SerializeToString() + _field(7, graph)


@case("budgets", ModelFormatError, "nested deeper than 64")
def deep_types(folder: Path, outside: Path) -> list[str]:
    """A sequence of a sequence of ... 5,000 deep: 20 KB that would overflow the stack."""
    vtype = helper.make_tensor_type_proto(TensorProto.FLOAT, [1])
    for _ in range(5000):
        vtype = helper.make_sequence_type_proto(vtype)
    raw = helper.make_value_info("x", vtype).SerializeToString()
    model = onnx_model([helper.make_node("Identity", ["x"], ["y"])])
    data = model.SerializeToString()
    graph = model.graph.SerializeToString()
    field = b"\x5a" + _varint(len(raw)) + raw  # GraphProto.input (11), length-delimited
    new_graph = graph + field
    head = data[: data.find(graph) - len(_varint(len(graph)))]
    assert head.endswith(b"\x3a")
    tail = data[data.find(graph) + len(graph) :]
    return ["inspect", str(save(folder, head + _varint(len(new_graph)) + new_graph + tail))]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


# truncation and garbage


@case("garbage", ModelFormatError, "runs past its end")
def eight_bytes(folder: Path, outside: Path) -> list[str]:
    """The ONNX cousin of TFLite's 8-byte crash: a length that points past the file."""
    return ["inspect", str(save(folder, b"\x3a\xff\xff\xff\x7f\x00\x00\x00"))]


@case("garbage", ModelFormatError, "offset 2147483647 is past the end")
def tflite_eight_bytes(folder: Path, outside: Path) -> list[str]:
    """TFLite's own 8-byte crash: a root table offset far outside the file."""
    return ["run", str(save(folder, b"\xff\xff\xff\x7fTFL3", "model.tflite"))]


@case("garbage", ModelFormatError, "malformed protobuf varint")
def overlong_varint(folder: Path, outside: Path) -> list[str]:
    return ["run", str(save(folder, b"\x08" + b"\xff" * 11 + b"\x01"))]


@case("garbage", ModelFormatError, "model.onnx")
def truncated_onnx(folder: Path, outside: Path) -> list[str]:
    data = relu_model().SerializeToString()
    return ["run", str(save(folder, data[: len(data) * 15 // 16]))]


@case("garbage", BundleError, "not a bundle")
def truncated_bundle(folder: Path, outside: Path) -> list[str]:
    path = good_bundle(folder)
    path.write_bytes(path.read_bytes()[:-40])
    return ["run", str(path)]


@case("garbage", ModelFormatError, r"40 dimensions, more than 32")
def too_many_dims(folder: Path, outside: Path) -> list[str]:
    node = helper.make_node("Identity", ["w"], ["y"])
    weights = tensor("w", np.zeros([1] * 40, np.float32))
    return ["inspect", str(save(folder, onnx_model([node], initializers=[weights])))]


@case("garbage", ModelFormatError, "an index lies outside its dims")
def sparse_index_out_of_range(folder: Path, outside: Path) -> list[str]:
    sparse = helper.make_sparse_tensor(
        tensor("s", np.ones(1, np.float32)), _constant("i", [1 << 40]), [4]
    )
    node = helper.make_node("Identity", ["s"], ["y"])
    return ["run", str(save(folder, onnx_model([node], sparse_initializer=[sparse])))]


@case("garbage", ModelFormatError, "cycle")
def cycle(folder: Path, outside: Path) -> list[str]:
    nodes = [helper.make_node("Relu", ["y"], ["t"]), helper.make_node("Relu", ["t"], ["y"])]
    return ["run", str(save(folder, onnx_model(nodes)))]


# no code execution: pickles are never loaded


class Payload:
    """Unpickling this writes a file: proof that something ran."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.target, "pwned"))


def _pickled_npy(path: Path, outside: Path) -> None:
    np.save(path, np.array([Payload(outside / "pwned")], dtype=object), allow_pickle=True)


@case("code", InputError, "holds Python objects")
def pickled_npy(folder: Path, outside: Path) -> list[str]:
    _pickled_npy(folder / "x.npy", outside)
    return ["run", str(save(folder, relu_model())), "--input", f"x={folder / 'x.npy'}"]


@case("code", InputError, "holds Python objects")
def pickled_npz(folder: Path, outside: Path) -> list[str]:
    _pickled_npy(folder / "x.npy", outside)
    with zipfile.ZipFile(folder / "all.npz", "w") as zf:
        zf.write(folder / "x.npy", "x.npy")
    return ["run", str(save(folder, relu_model())), "--inputs", str(folder / "all.npz")]


@case("code", ModelFormatError, r"model\.pt")
def pickled_checkpoint(folder: Path, outside: Path) -> list[str]:
    path = folder / "model.pt"
    path.write_bytes(pickle.dumps(Payload(outside / "pwned")))
    return ["run", str(path)]


@case("code", ModelFormatError, "a pickle, and unpickling runs code")
def pickled_torch_model_to_pack(folder: Path, outside: Path) -> list[str]:
    pytest.importorskip("torch")
    path = folder / "model.pt"
    path.write_bytes(pickle.dumps(Payload(outside / "pwned")))
    return ["pack", str(path), "--device", "rpi4"]


# inputs at run time


@case("inputs", InputError, "input 'x' must be float32, got int64")
def wrong_dtype(folder: Path, outside: Path) -> list[str]:
    np.save(folder / "x.npy", np.zeros((1, 4), np.int64))
    return ["run", str(save(folder, relu_model())), "--input", f"x={folder / 'x.npy'}"]


@case("inputs", InputError, "input 'x' must have size 4 on axis 1")
def wrong_shape(folder: Path, outside: Path) -> list[str]:
    np.save(folder / "x.npy", np.zeros((1, 5), np.float32))
    return ["run", str(save(folder, relu_model())), "--input", f"x={folder / 'x.npy'}"]


@case("inputs", InputError, "unknown input.*'image'")
def unknown_name(folder: Path, outside: Path) -> list[str]:
    np.save(folder / "x.npy", np.zeros((1, 4), np.float32))
    return ["run", str(save(folder, relu_model())), "--input", f"image={folder / 'x.npy'}"]


@case("inputs", InputError, "header claims 1.0 TiB of data")
def npy_header_bomb(folder: Path, outside: Path) -> list[str]:
    with open(folder / "x.npy", "wb") as f:
        header = {"descr": "<f4", "fortran_order": False, "shape": (1 << 38,)}
        np.lib.format.write_array_header_1_0(f, header)
        f.write(bytes(64))
    return ["run", str(save(folder, relu_model())), "--input", f"x={folder / 'x.npy'}"]


@case("inputs", InputError, "not a regular file")
def input_fifo(folder: Path, outside: Path) -> list[str]:
    os.mkfifo(folder / "x.npy")
    return ["run", str(save(folder, relu_model())), "--input", f"x={folder / 'x.npy'}"]


@case("inputs", EdgerunError, "cannot write outputs")
def output_folder_missing(folder: Path, outside: Path) -> list[str]:
    out = folder / "no" / "such" / "folder" / "out.npz"
    return ["run", str(save(folder, relu_model())), "--output", str(out)]


# ---- running them -------------------------------------------------------------------------


def library(args: list[str]) -> None:
    """What the CLI verb does, called directly (the CLI module is a thin driver over this)."""
    from edgerun.inference import parse_shape, save_outputs

    verb, model, *rest = args
    options: dict[str, list[str]] = {}
    for flag, value in zip(rest[::2], rest[1::2], strict=True):
        options.setdefault(flag, []).append(value)
    if verb == "inspect":
        inspect_model(model)
        return
    if verb == "pack":
        from converters.pack import PackOptions, pack

        pack(model, PackOptions(device=options["--device"][0]))
        return
    pairs = [item.split("=", 1) for item in options.get("--input", [])]
    files = {name: Path(value) for name, value in pairs}
    shapes = {n: parse_shape(v) for n, v in (s.split("=") for s in options.get("--shape", []))}
    npz = Path(options["--inputs"][0]) if "--inputs" in options else None
    session = edgerun.load(model, backend=options.get("--backend", ["auto"])[0])
    result = run_once(session, files, npz, shapes)
    if "--output" in options:
        save_outputs(result.outputs, Path(options["--output"][0]))


WRAPPER = """
import re, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
resource.setrlimit(resource.RLIMIT_CPU, ({seconds}, {seconds}))
from edgerun.cli import main
code = main(sys.argv[1:])
# VmHWM belongs to this program's memory map; ru_maxrss would also count the pytest
# process this one was forked from, which may hold TensorFlow
status = open("/proc/self/status").read()
print("maxrss=" + re.search(r"VmHWM:\\s*(\\d+) kB", status).group(1))
sys.exit(code)
"""


def cli(args: list[str], cwd: Path, home: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(home), "OPENBLAS_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    code = WRAPPER.format(limit=AS_LIMIT, seconds=SECONDS)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=SECONDS * 3,
        cwd=cwd,
        env=env,
    )
    return result, time.perf_counter() - start


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def arena(tmp_path: Path) -> dict[str, Path]:
    folders = {name: tmp_path / name for name in ("case", "outside", "cwd", "home")}
    for folder in folders.values():
        folder.mkdir()
    return folders


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input_is_refused(name: str, arena: dict[str, Path]) -> None:
    hostile = CASES[name]
    args = hostile.build(arena["case"], arena["outside"])
    if args[0] == "run":  # the runtime edgerun owns; other backends delegate to their own
        args += ["--backend", "numpy"]
    root = arena["case"].parent
    before = snapshot(root)

    with pytest.raises(hostile.error) as err:
        library(args)
    assert re.search(hostile.message, str(err.value)), str(err.value)
    assert snapshot(root) == before

    result, seconds = cli(args, arena["cwd"], arena["home"])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgerun: error: "), result.stderr
    assert re.search(hostile.message, lines[0]), lines[0]
    rss = int(re.fullmatch(r"maxrss=(\d+)\n", result.stdout).group(1)) * 1024  # type: ignore[union-attr]
    assert rss < RSS_LIMIT and seconds < SECONDS
    assert snapshot(root) == before, "a file was created"


# edgerun's reader and size planner vet a model before onnxruntime is handed it
ORT_GAPS = [
    "budgets-declared_input",
    "budgets-constant_of_shape",
    "budgets-expand",
    "budgets-tile",
    "budgets-range_",
    "budgets-pad",
    "budgets-function_expansion",
]  # (not folding_result: onnxruntime would try to allocate its 64 GiB in this process)


@pytest.mark.parametrize("name", ORT_GAPS)
def test_hostile_models_on_onnxruntime(name: str, arena: dict[str, Path]) -> None:
    pytest.importorskip("onnxruntime")
    hostile = CASES[name]
    args = hostile.build(arena["case"], arena["outside"])
    with pytest.raises(EdgerunError, match=hostile.message):
        library(["run", args[1], "--backend", "onnxruntime"])


def test_there_are_enough_cases_in_every_class() -> None:
    kinds = {c.kind for c in CASES.values()}
    assert kinds == {"paths", "archives", "budgets", "garbage", "code", "inputs"}
    assert len(CASES) >= 30


def test_legal_depth_and_length_load_and_run(tmp_path: Path) -> None:
    """The bounds refuse only what is absurd: 60 nested Ifs and a 20,000-node chain run."""
    session = edgerun.load(save(tmp_path, _nested_if(60), "deep.onnx"), backend="numpy")
    x = np.array([1.5], np.float32)
    assert session.run({"c": np.array(True), "x": x})["y"].tolist() == [1.5]
    nodes = [helper.make_node("Neg", [f"t{i}"], [f"t{i + 1}"]) for i in range(20_000)]
    nodes += [helper.make_node("Identity", ["t20000"], ["y"])]
    long = save(tmp_path, onnx_model(nodes, [float_input("t0", [2])]), "long.onnx")
    session = edgerun.load(long, backend="numpy")
    assert session.run({"t0": np.array([1, -2], np.float32)})["y"].tolist() == [1, -2]
    assert inspect_model(long).nodes == 20_001


# ---- byte mutations and truncation --------------------------------------------------------
# Every outcome of loading, inspecting and running a damaged file is success or an
# EdgerunError: never an IndexError, a struct.error, a crash or a hang. Tensors are held to
# a small budget so that a mutated shape is refused rather than allocated.

SWEEP_BUDGET = 64 << 20
SAMPLE = 600  # positions tried in files larger than this (seeded)


def sweep_onnx() -> bytes:
    """Small but not trivial: an initializer, a constant shape, three kinds of node."""
    nodes = [
        helper.make_node("Add", ["x", "w"], ["a"]),
        helper.make_node("Reshape", ["a", "s"], ["r"]),
        helper.make_node("Relu", ["r"], ["y"]),
    ]
    weights = tensor("w", np.arange(4, dtype=np.float32))
    model = onnx_model(
        nodes, [float_input("x", [1, 4])], initializers=[weights, _constant("s", [2, 2])]
    )
    return model.SerializeToString()


def sweep_tflite() -> bytes:
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("edgerun.runtime.tflite_reader")
    weights = tf.constant(np.arange(4, dtype=np.float32))
    f = tf.function(
        lambda x: tf.nn.relu(tf.reshape(x + weights, [2, 2])),
        input_signature=[tf.TensorSpec([1, 4], tf.float32)],
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    return bytes(converter.convert())


def sweep_bundle() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return write_model_bundle(Path(folder), sweep_onnx(), None).read_bytes()


SWEEPS = {".onnx": sweep_onnx, ".tflite": sweep_tflite, ".edgerun": sweep_bundle}


def try_everything(path: Path) -> None:
    """Load, inspect and run; only EdgerunError may come out."""
    from edgerun.runtime import budget

    with budget.limited(SWEEP_BUDGET):
        try:
            inspect_model(path)
            run_once(edgerun.load(path, backend="numpy"))
        except EdgerunError:
            pass


def variants(data: bytes) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(11)
    positions = range(len(data))
    if len(data) > SAMPLE:
        positions = sorted(rng.choice(len(data), SAMPLE, replace=False).tolist())  # type: ignore[assignment]
    out = [(f"cut at {k}/16", data[: len(data) * k // 16]) for k in range(16)]
    for i in positions:
        for value in {data[i] ^ 0xFF, 0x00, 0x7F, data[i] ^ 0x01} - {data[i]}:
            out.append((f"byte {i} = {value:#x}", data[:i] + bytes([value]) + data[i + 1 :]))
    return out


@pytest.mark.parametrize("suffix", sorted(SWEEPS))
def test_mutated_files_fail_cleanly(suffix: str, tmp_path: Path) -> None:
    data = SWEEPS[suffix]()
    path = tmp_path / f"m{suffix}"
    path.write_bytes(data)
    try_everything(path)  # the original is fine
    failures = []
    start = time.perf_counter()
    for label, damaged in variants(data):
        path.write_bytes(damaged)
        try:
            try_everything(path)
        except Exception as exc:  # anything that is not an EdgerunError
            failures.append(f"{label}: {type(exc).__name__}: {exc}")
    assert not failures, f"{len(failures)} failures, first ones:\n" + "\n".join(failures[:10])
    assert time.perf_counter() - start < 40


# ---- properties of the size planner (hypothesis, bounded and derandomized) ----------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgerun.runtime import budget  # noqa: E402
from edgerun.runtime.kernels import shape as shape_kernels  # noqa: E402
from edgerun.runtime.passes.shape_inference import output_shapes  # noqa: E402

BOUNDED = settings(max_examples=80, derandomize=True, deadline=None, database=None)
SMALL_BUDGET = 1 << 20
DIM = st.one_of(st.integers(0, 6), st.integers(0, 1 << 62))  # mostly small, sometimes absurd
DTYPES = st.sampled_from(["float32", "float16", "int64", "int8", "bool", "complex128"])


@BOUNDED
@given(shape=st.lists(DIM, max_size=6), dtype=DTYPES)
def test_tensor_bytes_are_exact_python_integers(shape: list[int], dtype: str) -> None:
    nbytes = budget.tensor_bytes(shape, dtype)
    exact = np.dtype(dtype).itemsize
    for d in shape:
        exact *= d
    assert nbytes == exact >= 0  # an int64 product would have wrapped for the large ones
    if budget.tensor_bytes([d for d in shape if d], dtype) <= SMALL_BUDGET:
        assert np.empty(shape, dtype).nbytes == nbytes  # (numpy refuses [0, 2**40, 2**40])


def refused_or_exact(make: Callable[[], np.ndarray], expected: list[int], dtype: np.dtype) -> None:
    """Under a small budget, the kernel refuses exactly when the result would not fit."""
    fits = budget.tensor_bytes(expected, dtype) <= SMALL_BUDGET
    with budget.limited(SMALL_BUDGET):
        if not fits:
            with pytest.raises(ResourceLimitError, match="over the memory budget"):
                make()
            return
        if budget.tensor_bytes([d for d in expected if d], dtype) >= 1 << 63:
            # empty, yet numpy refuses shapes like [0, 2**40, 2**40]: a ValueError, which
            # the plan reports as the node's failure
            with pytest.raises(ValueError):
                make()
            return
        result = make()
    assert list(result.shape) == expected and result.dtype == dtype


@BOUNDED
@given(dims=st.lists(DIM, max_size=4))
def test_constant_of_shape_size(dims: list[int]) -> None:
    value = np.array([2.5], np.float32)
    make = lambda: shape_kernels.constant_of_shape_9(np.array(dims, np.int64), value=value)  # noqa: E731
    refused_or_exact(make, dims, np.dtype(np.float32))


@BOUNDED
@given(base=st.lists(st.integers(1, 3), min_size=1, max_size=3), data=st.data())
def test_tile_and_expand_sizes(base: list[int], data: st.DataObject) -> None:
    x = np.ones(base, np.float32)
    reps = data.draw(st.lists(DIM, min_size=len(base), max_size=len(base)))
    tiled = [b * r for b, r in zip(base, reps, strict=True)]
    refused_or_exact(lambda: shape_kernels.tile_6(x, np.array(reps, np.int64)), tiled, x.dtype)
    target = [r if b == 1 else b for b, r in zip(base, reps, strict=True)]
    expand = lambda: shape_kernels.expand_8(x, np.array(target, np.int64))  # noqa: E731
    refused_or_exact(expand, target, x.dtype)


@BOUNDED
@given(base=st.lists(st.integers(1, 3), min_size=1, max_size=3), data=st.data())
def test_pad_size(base: list[int], data: st.DataObject) -> None:
    x = np.ones(base, np.int8)
    pads = data.draw(st.lists(DIM, min_size=2 * len(base), max_size=2 * len(base)))
    grown = [d + pads[i] + pads[i + len(base)] for i, d in enumerate(base)]
    refused_or_exact(lambda: shape_kernels.pad_11(x, np.array(pads, np.int64)), grown, x.dtype)


@BOUNDED
@given(limit=st.one_of(st.integers(-10, 100), st.integers(0, 1 << 60)), delta=st.integers(1, 7))
def test_range_size(limit: int, delta: int) -> None:
    count = max(-(-limit // delta), 0)
    args = (np.array(0, np.int64), np.array(limit, np.int64), np.array(delta, np.int64))
    with budget.limited(SMALL_BUDGET):
        if count * 8 > SMALL_BUDGET:
            with pytest.raises(ResourceLimitError):
                shape_kernels.range_11(*args)
            return
        result = shape_kernels.range_11(*args)
    np.testing.assert_array_equal(result, np.arange(0, limit, delta))


BROADCAST_DIM = st.sampled_from([1, 1, 2, 3])


@BOUNDED
@given(a=st.lists(BROADCAST_DIM, max_size=4), b=st.lists(BROADCAST_DIM, max_size=4))
def test_planned_broadcast_matches_numpy(a: list[int], b: list[int]) -> None:
    node = helper.make_node("Add", ["a", "b"], ["c"])
    from edgerun.runtime.onnx_reader import parse_model

    model = parse_model(
        memoryview(onnx_model([node], [], [float_input("c", None)]).SerializeToString()), None
    )
    arrays = [np.zeros(a, np.float32), np.zeros(b, np.float32)]
    try:
        expected = np.broadcast_shapes(tuple(a), tuple(b))
    except ValueError:
        assert output_shapes(model.graph.nodes[0], arrays) == []  # unknown, never a guess
        return
    assert output_shapes(model.graph.nodes[0], arrays) == [expected]


@BOUNDED
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), data=st.data())
def test_planned_reshape_and_transpose_match_numpy(shape: list[int], data: st.DataObject) -> None:
    from edgerun.runtime.onnx_reader import parse_model

    x = np.zeros(shape, np.float32)
    target = data.draw(st.permutations(shape))
    if target:
        target[data.draw(st.integers(0, len(target) - 1))] = -1
    perm = data.draw(st.permutations(range(len(shape))))
    nodes = [
        helper.make_node("Reshape", ["x", "s"], ["r"]),
        helper.make_node("Transpose", ["x"], ["t"], perm=perm),
    ]
    outputs = [float_input("r", None), float_input("t", None)]
    graph = parse_model(memoryview(onnx_model(nodes, [], outputs).SerializeToString()), None).graph
    shape_arg = np.array(target, np.int64)
    assert output_shapes(graph.nodes[0], [x, shape_arg]) == [x.reshape(target).shape]
    assert output_shapes(graph.nodes[1], [x]) == [x.transpose(perm).shape]


# ---- inputs at run time: special values, odd layouts, many threads ------------------------

from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from threading import Barrier  # noqa: E402

from edgerun.errors import BackendUnavailableError, MissingDependencyError  # noqa: E402


@pytest.fixture(scope="module")
def tflite_cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tf = pytest.importorskip("tensorflow")
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential(
        [
            tf.keras.Input((8, 8, 3)),
            tf.keras.layers.Conv2D(4, 3, activation="relu"),
            tf.keras.layers.GlobalAveragePooling2D(),
            tf.keras.layers.Dense(3),
        ]
    )
    path = tmp_path_factory.mktemp("tflite") / "cnn.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


BACKEND_MODELS = [
    ("numpy", "onnx"),
    ("onnxruntime", "onnx"),
    ("numpy", "tflite"),
    ("tflite", "tflite"),
]


def session_for(backend: str, fmt: str, request: pytest.FixtureRequest) -> edgerun.Session:
    path = request.getfixturevalue("tiny_cnn_path" if fmt == "onnx" else "tflite_cnn")
    try:
        return edgerun.load(path, backend=backend)
    except (BackendUnavailableError, MissingDependencyError) as exc:
        pytest.skip(f"{backend} cannot run here: {exc}")


def feeds_for(session: edgerun.Session, seed: int) -> dict[str, np.ndarray]:
    from edgerun.inference import random_feeds

    return random_feeds(session.inputs, seed=seed)


@pytest.mark.parametrize(("backend", "fmt"), BACKEND_MODELS)
def test_sixteen_threads_match_sequential_runs(
    backend: str, fmt: str, request: pytest.FixtureRequest
) -> None:
    session = session_for(backend, fmt, request)
    feeds = [feeds_for(session, seed) for seed in range(16)]
    sequential = [session.run(f) for f in feeds]
    start = Barrier(16)

    def worker(i: int) -> list[dict[str, np.ndarray]]:
        start.wait()  # all sixteen at once
        return [session.run(feeds[i]) for _ in range(3)]

    with ThreadPoolExecutor(16) as pool:
        parallel = list(pool.map(worker, range(16)))
    for expected, rounds in zip(sequential, parallel, strict=True):
        for got in rounds:
            assert got.keys() == expected.keys()
            for name in expected:
                np.testing.assert_array_equal(got[name], expected[name])


def _layouts(x: np.ndarray) -> dict[str, np.ndarray]:
    wide = np.zeros((*x.shape[:-1], x.shape[-1] * 2), x.dtype)
    wide[..., ::2] = x
    return {
        "strided": wide[..., ::2],
        "fortran": np.asfortranarray(x),
        "reversed": np.ascontiguousarray(x[..., ::-1])[..., ::-1],
        "read-only": np.frombuffer(x.tobytes(), x.dtype).reshape(x.shape),
        "broadcast": np.broadcast_to(x[:1], x.shape) if x.shape[0] == 1 else x,
    }


@pytest.mark.parametrize(("backend", "fmt"), BACKEND_MODELS)
def test_non_contiguous_inputs_give_the_same_outputs(
    backend: str, fmt: str, request: pytest.FixtureRequest
) -> None:
    session = session_for(backend, fmt, request)
    feeds = feeds_for(session, 3)
    expected = session.run(feeds)
    (name, x), *rest = feeds.items()
    for layout, y in _layouts(x).items():
        got = session.run({name: y, **dict(rest)})
        for out in expected:
            np.testing.assert_array_equal(got[out], expected[out], err_msg=layout)


def special_values_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Relu", ["x"], ["relu"]),
        helper.make_node("Sigmoid", ["x"], ["sigmoid"]),
        helper.make_node("Add", ["x", "x"], ["add"]),
        helper.make_node("Mul", ["x", "zero"], ["times_zero"]),
        helper.make_node("Softmax", ["x"], ["softmax"], axis=1),
        helper.make_node("ReduceSum", ["x"], ["sum"], keepdims=0),
        helper.make_node("MatMul", ["x", "w"], ["matmul"]),
    ]
    names = ["relu", "sigmoid", "add", "times_zero", "softmax", "sum", "matmul"]
    initializers = [
        tensor("zero", np.zeros(1, np.float32)),
        tensor("w", np.ones((4, 2), np.float32)),
    ]
    return onnx_model(
        nodes, [float_input("x", [3, 4])], [float_input(n, None) for n in names], initializers
    )


def test_nan_and_inf_propagate_as_the_reference_does(tmp_path: Path) -> None:
    from onnx.reference import ReferenceEvaluator

    model = special_values_model()
    x = np.array(
        [[np.nan, 1.0, -2.0, 0.5], [np.inf, -np.inf, 3.0, 0.0], [1.0, 2.0, np.inf, np.inf]],
        np.float32,
    )
    session = edgerun.load(save(tmp_path, model), backend="numpy")
    ours = session.run({"x": x})
    reference = dict(
        zip(
            [spec.name for spec in session.outputs],
            ReferenceEvaluator(model).run(None, {"x": x}),
            strict=True,
        )
    )
    for name, expected in reference.items():
        np.testing.assert_allclose(ours[name], expected, rtol=1e-6, equal_nan=True, err_msg=name)
        assert np.array_equal(np.isnan(ours[name]), np.isnan(expected)), name
