"""The ``.edgerun`` bundle: round trip, layout, and every way a bundle can be refused."""

from __future__ import annotations

import json
import mmap
import os
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgerun import bundle
from edgerun.bundle import ALIGNMENT, FORMAT_VERSION, MANIFEST, open_bundle, read_manifest
from edgerun.errors import BundleError, UnsafePathError
from edgerun.specs import Quantization, TensorSpec

GOLDEN = Path(__file__).parent / "golden" / "manifest_schema.txt"

INPUTS = (
    TensorSpec("x", (1, "batch", None), "float32"),
    TensorSpec("q", (4,), "int8", Quantization((0.5,), (-3,), None)),
)
OUTPUTS = (
    TensorSpec("y", None, "float32"),
    TensorSpec("z", (2, 3), "int8", Quantization((0.1, 0.2), (0, 1), 0)),
)
PROFILE = {"name": "rpi4", "cpu": {"arch": "aarch64", "cores": 4}, "ram_mb": 4096}
APPLIED = {
    "folding": True,
    "pruning": None,
    "quantization": {"scheme": "int8", "per_channel": True},
    "calibration_samples": 16,
}
ACCURACY = {"metric": "max_abs_diff", "value": 0.01}
SOURCE = {"framework": "onnx", "sha256": "0" * 64, "name": "add.onnx"}
# Names of several lengths, so the padding needed to align each member differs.
EXTERNAL = {"w.bin": b"\x01" * 1000, "weights/layer_0.bin": b"\x02" * 77, "e" * 41: b""}


@pytest.fixture(scope="session")
def onnx_bytes() -> bytes:
    """One Add node: a real ONNX model, though the bundle never looks inside it."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    node = helper.make_node("Add", ["x", "x"], ["y"])
    graph = helper.make_graph([node], "add", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write(path: Path, model: Any, **kwargs: Any) -> Path:
    kwargs = {"model_format": "onnx", "inputs": INPUTS, "outputs": OUTPUTS, **kwargs}
    return bundle.write_bundle(path, model, **kwargs)


@pytest.fixture
def good(tmp_path: Path, onnx_bytes: bytes) -> Path:
    return write(tmp_path / "m.edgerun", onnx_bytes, external_data=EXTERNAL)


def data_offset(path: Path, name: str) -> int:
    """Where a member's data starts, read from its local header independently of edgerun."""
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        offset = zf.getinfo(name).header_offset
    name_len, extra_len = struct.unpack_from("<HH", raw, offset + 26)
    return offset + 30 + name_len + extra_len


# ---- round trip --------------------------------------------------------------------------


@pytest.mark.parametrize("from_file", [False, True], ids=["bytes", "file"])
def test_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, onnx_bytes: bytes, from_file: bool
) -> None:
    monkeypatch.setattr(bundle, "_CHUNK", 100)  # stream in many pieces
    model: Any = onnx_bytes
    external: dict[str, Any] = dict(EXTERNAL)
    if from_file:
        model = tmp_path / "src.onnx"
        model.write_bytes(onnx_bytes)
        (tmp_path / "w.src").write_bytes(EXTERNAL["w.bin"])
        external["w.bin"] = str(tmp_path / "w.src")
    path = write(
        tmp_path / "m.edgerun",
        model,
        profile=PROFILE,
        applied=APPLIED,
        accuracy=ACCURACY,
        source=SOURCE,
        external_data=external,
    )
    with open_bundle(path) as b:
        m = b.manifest
        assert (m.format_version, m.model_format, m.model.name) == (
            FORMAT_VERSION,
            "onnx",
            "model.onnx",
        )
        assert (m.inputs, m.outputs) == (INPUTS, OUTPUTS)
        assert (m.profile, m.applied, m.accuracy, m.source) == (PROFILE, APPLIED, ACCURACY, SOURCE)
        assert m.model.size == len(onnx_bytes)
        assert m.edgerun_version
        assert bytes(b.model) == onnx_bytes
        assert [e.name for e in m.external_data] == list(EXTERNAL)
        for name, data in EXTERNAL.items():
            assert bytes(b.member(name)) == data
    assert read_manifest(path) == m


def test_layout_manifest_first_members_stored_and_aligned(good: Path) -> None:
    with zipfile.ZipFile(good) as zf:
        infos = zf.infolist()
    assert infos[0].filename == MANIFEST
    for info in infos[1:]:
        assert info.compress_type == zipfile.ZIP_STORED
        assert data_offset(good, info.filename) % ALIGNMENT == 0, info.filename
    assert {i.filename for i in infos[1:]} == {"model.onnx", *EXTERNAL}


def test_members_are_read_only_views_of_one_map(good: Path) -> None:
    with open_bundle(good) as b:
        model, weights = b.model, b.member("w.bin")
        assert model.readonly and weights.readonly
        assert isinstance(model.obj, mmap.mmap) and model.obj is weights.obj


def test_defaults_fill_the_documented_keys(tmp_path: Path) -> None:
    m = read_manifest(write(tmp_path / "m.edgerun", b"model"))
    assert m.applied == {
        "folding": False,
        "pruning": None,
        "quantization": None,
        "calibration_samples": 0,
    }
    assert m.source == {"framework": None, "sha256": None, "name": None}
    assert (m.profile, m.accuracy, m.external_data) == (None, None, ())


def test_same_inputs_give_the_same_bytes(tmp_path: Path, onnx_bytes: bytes) -> None:
    a = write(tmp_path / "a.edgerun", onnx_bytes, external_data=EXTERNAL)
    b = write(tmp_path / "b.edgerun", onnx_bytes, external_data=EXTERNAL)
    assert a.read_bytes() == b.read_bytes()


def test_close_leaves_handed_out_views_valid(good: Path, onnx_bytes: bytes) -> None:
    b = open_bundle(good)
    view = b.model
    b.close()
    b.close()
    assert bytes(view) == onnx_bytes
    with pytest.raises(BundleError, match="closed"):
        b.member("model.onnx")


def test_unknown_member_is_an_error(good: Path) -> None:
    with open_bundle(good) as b, pytest.raises(BundleError, match=r"no member 'nope\.bin'"):
        b.member("nope.bin")


def test_read_manifest_does_not_hash(good: Path) -> None:
    flip(good, data_offset(good, "model.onnx"))
    assert read_manifest(good).model.name == "model.onnx"
    with pytest.raises(BundleError):
        open_bundle(good)


# ---- damage to a written bundle ------------------------------------------------------------


def flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def truncate(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


def cut_model_data(path: Path) -> None:
    start = data_offset(path, "model.onnx")
    raw = path.read_bytes()
    path.write_bytes(raw[:start] + raw[start + 8 :])


DAMAGE: dict[str, tuple[Callable[[Path], None], str | None]] = {
    "flipped model byte": (
        lambda p: flip(p, data_offset(p, "model.onnx") + 5),
        "model.onnx: sha256 mismatch, the bundle is corrupt or was modified",
    ),
    "flipped external byte": (lambda p: flip(p, data_offset(p, "w.bin")), "w.bin: sha256 mismatch"),
    "flipped manifest byte": (lambda p: flip(p, data_offset(p, MANIFEST) + 3), MANIFEST),
    "cut in half": (lambda p: truncate(p, p.stat().st_size // 2), "not a bundle"),
    "last bytes cut": (lambda p: truncate(p, p.stat().st_size - 3), "not a bundle"),
    "empty file": (lambda p: truncate(p, 0), "not a bundle"),
    "bytes cut from model data": (cut_model_data, None),
    "not a zip": (lambda p: p.write_bytes(b"this is not a zip archive at all"), "not a bundle"),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_bundle_is_refused(
    good: Path, damage: tuple[Callable[[Path], None], str | None]
) -> None:
    do, message = damage
    do(good)
    with pytest.raises(BundleError, match=message) as err:
        open_bundle(good)
    assert str(good) in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot open"):
        open_bundle(tmp_path / "nope.edgerun")


# ---- hand-crafted archives -----------------------------------------------------------------


def craft(path: Path, entries: list[tuple[str, bytes, int]], *, align: bool = True) -> None:
    """A zip written entry by entry, stored entries padded as the writer pads them."""
    with open(path, "wb") as fp, zipfile.ZipFile(fp, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names, on purpose
        for name, data, compress in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = compress
            if align and compress == zipfile.ZIP_STORED:
                pad = -(fp.tell() + 30 + len(name.encode()) + 4) % ALIGNMENT
                info.extra = struct.pack("<HH", 0xD935, pad) + bytes(pad)
            zf.writestr(info, data)


def manifest_for(members: dict[str, bytes]) -> dict[str, Any]:
    """A valid manifest for ``members``, the first being the model."""
    spec = bundle.Manifest(
        format_version=FORMAT_VERSION,
        model=bundle._digest(*next(iter(members.items()))),
        model_format="onnx",
        external_data=tuple(bundle._digest(n, d) for n, d in list(members.items())[1:]),
        inputs=INPUTS,
        outputs=OUTPUTS,
        profile=None,
        applied={},
        accuracy=None,
        source={},
        edgerun_version="0.1.0",
    )
    return spec.to_json()


MODEL = b"\x08\x07" * 50
STORED, DEFLATED = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED


def entries_with(
    *, edit: Callable[[dict[str, Any]], Any] | None = None, members: dict[str, bytes] | None = None
) -> list[tuple[str, bytes, int]]:
    listed = members or {"model.onnx": MODEL}
    data = manifest_for(listed)
    if edit:
        edit(data)
    text = json.dumps(data).encode()
    return [(MANIFEST, text, DEFLATED), *((n, d, STORED) for n, d in listed.items())]


def good_entries() -> list[tuple[str, bytes, int]]:
    return entries_with()


def with_member(name: str, compress: int = STORED) -> list[tuple[str, bytes, int]]:
    return [*good_entries(), (name, b"x", compress)]


UNSAFE = {
    "parent": "../x",
    "inner parent": "a/../../x",
    "absolute": "/etc/passwd",
    "backslash": "a\\..\\x",
    "drive letter": "C:/x",
    "empty part": "a//b",
    "dot part": "./x",
    "trailing slash": "dir/",
    "nul": "x\x00y",
}


@pytest.mark.parametrize("name", UNSAFE.values(), ids=UNSAFE.keys())
def test_unsafe_member_name(tmp_path: Path, name: str) -> None:
    path = tmp_path / "b.edgerun"
    craft(path, with_member(name.replace("\x00", "\x01")))
    # zipfile cuts a name at a NUL when writing, so that one is patched in afterwards
    path.write_bytes(path.read_bytes().replace(b"x\x01y", b"x\x00y"))
    with pytest.raises(UnsafePathError, match="member name"):
        open_bundle(path)
    with pytest.raises(UnsafePathError):
        read_manifest(path)


def test_unsafe_name_listed_in_manifest(tmp_path: Path) -> None:
    path = tmp_path / "b.edgerun"
    craft(path, entries_with(edit=lambda m: m["model"].update(name="../model.onnx")))
    with pytest.raises(UnsafePathError, match=r"'\.\./model\.onnx'"):
        open_bundle(path)


def _set_version(m: dict[str, Any]) -> None:
    m.clear()  # a newer manifest may look like anything; the version is what matters
    m["format_version"] = 2


def _drop(key: str, sub: str | None = None) -> Callable[[dict[str, Any]], None]:
    return lambda m: (m[sub] if sub else m).pop(key)


MANIFEST_DAMAGE: dict[str, tuple[list[tuple[str, bytes, int]], str]] = {
    "format_version 2": (
        entries_with(edit=_set_version),
        r"bundle format_version 2 is newer than this edgerun supports \(1\); upgrade edgerun",
    ),
    "format_version 0": (
        entries_with(edit=lambda m: m.update(format_version=0)),
        "format_version 0",
    ),
    "format_version a string": (
        entries_with(edit=lambda m: m.update(format_version="1")),
        "format_version should be an integer, not a string",
    ),
    "missing model.sha256": (entries_with(edit=_drop("sha256", "model")), "'model.sha256'"),
    "missing inputs": (entries_with(edit=_drop("inputs")), "'inputs'"),
    "mistyped shape": (
        entries_with(edit=lambda m: m["inputs"][0].update(shape="1x4")),
        "inputs\\[0\\].shape should be",
    ),
    "bool dim": (
        entries_with(edit=lambda m: m["inputs"][0].update(shape=[True])),
        r"inputs\[0\].shape\[0\]",
    ),
    "bad sha256": (
        entries_with(edit=lambda m: m["model"].update(sha256="xyz")),
        "model.sha256 is not a hex",
    ),
    "unknown format": (
        entries_with(edit=lambda m: m.update(model_format="pt")),
        "unknown model_format 'pt'",
    ),
    "not an object": ([(MANIFEST, b"[1, 2]", DEFLATED)], "should be an object, not an array"),
    "not JSON": ([(MANIFEST, b"{oops", DEFLATED), ("model.onnx", MODEL, STORED)], "not valid JSON"),
    "manifest missing": ([("model.onnx", MODEL, STORED)], "manifest.json is missing"),
    "manifest not first": (
        [good_entries()[1], good_entries()[0]],
        "manifest.json is not the first member",
    ),
    "empty archive": ([], "manifest.json is missing"),
    "duplicate member": (with_member("model.onnx"), "'model.onnx' appears twice"),
    "duplicate manifest": (with_member(MANIFEST), "'manifest.json' appears twice"),
    "listed member missing": (
        good_entries()[:1],
        "model.onnx is listed in manifest.json but missing",
    ),
    "unlisted member": (with_member("extra.bin"), "'extra.bin' is not listed"),
    "compressed model": (
        [(n, d, DEFLATED) for n, d, _ in good_entries()],
        "model.onnx: is compressed",
    ),
    "compressed external data": (
        [
            *entries_with(members={"model.onnx": MODEL, "w.bin": b"w" * 100})[:2],
            ("w.bin", b"w" * 100, DEFLATED),
        ],
        "w.bin: is compressed",
    ),
    "size mismatch": (
        entries_with(edit=lambda m: m["model"].update(size=3)),
        "model.onnx: size mismatch",
    ),
    "sha256 mismatch": (
        entries_with(edit=lambda m: m["model"].update(sha256="0" * 64)),
        "model.onnx: sha256 mismatch",
    ),
}


@pytest.mark.parametrize("case", MANIFEST_DAMAGE.values(), ids=MANIFEST_DAMAGE.keys())
def test_bad_archive_is_refused(tmp_path: Path, case: tuple[list[Any], str]) -> None:
    entries, message = case
    path = tmp_path / "b.edgerun"
    craft(path, entries)
    with pytest.raises(BundleError, match=message) as err:
        open_bundle(path)
    assert type(err.value) is BundleError and str(path) in str(err.value)


def test_crafted_good_archive_opens(tmp_path: Path) -> None:
    """The crafting helper itself makes loadable bundles, so the refusals above are real."""
    path = tmp_path / "b.edgerun"
    craft(path, good_entries())
    with open_bundle(path) as b:
        assert bytes(b.model) == MODEL


def test_unaligned_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "b.edgerun"
    craft(path, good_entries(), align=False)
    assert data_offset(path, "model.onnx") % ALIGNMENT
    with pytest.raises(BundleError, match="not 64-byte aligned"):
        open_bundle(path)


def test_huge_manifest_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "b.edgerun"
    craft(path, [(MANIFEST, b"{}" + b" " * bundle.MAX_MANIFEST_BYTES, DEFLATED)])
    with pytest.raises(BundleError, match="over the 16 MiB limit"):
        open_bundle(path)


def test_member_data_past_end_of_file(tmp_path: Path) -> None:
    """A central directory that claims more data than the file holds."""
    path = tmp_path / "b.edgerun"
    big = b"m" * 5000
    craft(path, entries_with(members={"model.onnx": big}))
    raw = bytearray(path.read_bytes())
    central = raw.rfind(b"PK\x01\x02")  # the model's entry is the last one
    struct.pack_into("<I", raw, central + 42, len(raw) - 100)  # its local header offset
    path.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=r"model\.onnx"):
        open_bundle(path)


# ---- writing -------------------------------------------------------------------------------


def _fail_replace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> type[BaseException]:
    def replace(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", replace)
    return BundleError


def _interrupt_fsync(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> type[BaseException]:
    def fsync(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", fsync)
    return KeyboardInterrupt


def _source_vanishes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> type[BaseException]:
    """The external-data file disappears between the digest pass and the copy."""
    digest = bundle._digest

    def then_delete(name: str, src: Any) -> bundle.Member:
        member = digest(name, src)
        if name == "w.bin":
            os.unlink(src)
        return member

    monkeypatch.setattr(bundle, "_digest", then_delete)
    return BundleError


def _source_changes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> type[BaseException]:
    digest = bundle._digest

    def then_append(name: str, src: Any) -> bundle.Member:
        member = digest(name, src)
        if name == "w.bin":
            with open(src, "ab") as f:
                f.write(b"more")
        return member

    monkeypatch.setattr(bundle, "_digest", then_append)
    return BundleError


FAILURES = {
    "os.replace fails": _fail_replace,
    "interrupted at fsync": _interrupt_fsync,
    "source vanishes": _source_vanishes,
    "source changes": _source_changes,
}


@pytest.mark.parametrize("existing", [True, False], ids=["over an old file", "new file"])
@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
def test_interrupted_write_leaves_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    onnx_bytes: bytes,
    failure: Callable[..., type[BaseException]],
    existing: bool,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = out / "m.edgerun"
    if existing:
        target.write_bytes(b"the old bundle")
    weights = tmp_path / "w.src"
    weights.write_bytes(b"w" * 3000)
    expected = failure(monkeypatch, tmp_path)
    with pytest.raises(expected):
        write(target, onnx_bytes, external_data={"w.bin": weights})
    assert sorted(p.name for p in out.iterdir()) == (["m.edgerun"] if existing else [])
    if existing:
        assert target.read_bytes() == b"the old bundle"


@pytest.mark.parametrize("name", ["../w.bin", "/abs.bin", "a\\b.bin", "C:w.bin", "a//b"])
def test_writer_refuses_unsafe_external_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafePathError):
        write(tmp_path / "m.edgerun", b"m", external_data={name: b"x"})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", [MANIFEST, "model.onnx", "golden.npz"])
def test_writer_refuses_reserved_external_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(BundleError, match="may not be named"):
        write(tmp_path / "m.edgerun", b"m", external_data={name: b"x"})


def test_external_data_may_share_the_model_stem(tmp_path: Path) -> None:
    """torch.onnx.export names external data ``model.onnx.data``."""
    path = write(tmp_path / "m.edgerun", b"m", external_data={"model.onnx.data": b"w"})
    with open_bundle(path) as b:
        assert bytes(b.member("model.onnx.data")) == b"w"


def test_writer_refuses_what_json_cannot_hold(tmp_path: Path) -> None:
    import datetime

    with pytest.raises(BundleError, match="JSON"):
        write(tmp_path / "m.edgerun", b"m", profile={"checked": datetime.date(2024, 1, 1)})
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="model_format"):
        write(tmp_path / "m.edgerun", b"m", model_format="pt")


def test_writer_reports_unwritable_folder(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot write"):
        write(tmp_path / "no" / "such" / "m.edgerun", b"m")


def test_tflite_model_member(tmp_path: Path) -> None:
    with open_bundle(write(tmp_path / "m.edgerun", b"TFL3" * 10, model_format="tflite")) as b:
        assert b.manifest.model.name == "model.tflite"
        assert bytes(b.model) == b"TFL3" * 10


# ---- the on-disk schema, pinned ------------------------------------------------------------

OPAQUE = {"profile", "accuracy", "applied.quantization"}  # documents owned elsewhere


def json_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    names |= {list: "array", dict: "object", type(None): "null"}
    return names[type(value)]


def walk(
    value: Any, path: str, types: dict[str, set[str]], keys: dict[str, list[set[str]]]
) -> None:
    """Record each key path's types, and the key set of every object met at each path."""
    if path:
        types.setdefault(path, set()).add(json_type(value))
    if path in OPAQUE:
        return
    if isinstance(value, dict):
        keys.setdefault(path, []).append(set(value))
        for key, item in value.items():
            walk(item, f"{path}.{key}" if path else key, types, keys)
    elif isinstance(value, list):
        for item in value:
            walk(item, f"{path}[]", types, keys)


def schema_text(documents: list[dict[str, Any]]) -> str:
    """Every key path with the union of its types; a key some objects lack is also 'absent'."""
    types: dict[str, set[str]] = {}
    keys: dict[str, list[set[str]]] = {}
    for doc in documents:
        walk(doc, "", types, keys)
    for path in types:
        parent, _, key = path.rpartition(".") if "." in path else ("", "", path)
        if not path.endswith("]") and any(key not in ks for ks in keys.get(parent, [])):
            types[path].add("absent")
    return "".join(f"{p}: {'|'.join(sorted(t))}\n" for p, t in sorted(types.items()))


def test_manifest_schema_matches_golden(tmp_path: Path, onnx_bytes: bytes) -> None:
    every_spec = INPUTS + OUTPUTS  # each kind of dim, shape and quantization
    full = write(
        tmp_path / "full.edgerun",
        onnx_bytes,
        inputs=every_spec,
        outputs=every_spec,
        profile=PROFILE,
        applied=APPLIED,
        accuracy=ACCURACY,
        source=SOURCE,
        external_data=EXTERNAL,
        golden=b"golden arrays",
    )
    bare = write(tmp_path / "bare.edgerun", onnx_bytes, inputs=INPUTS[:1], outputs=())
    docs = [read_manifest(p).to_json() for p in (full, bare)]
    with zipfile.ZipFile(full) as zf:
        assert json.loads(zf.read(MANIFEST)) == docs[0]  # to_json is what is on disk
    text = schema_text(docs)
    if os.environ.get("EDGERUN_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "manifest schema changed: bump FORMAT_VERSION on purpose"


def test_golden_member_round_trip(tmp_path: Path, onnx_bytes: bytes) -> None:
    path = write(tmp_path / "g.edgerun", onnx_bytes, external_data=EXTERNAL, golden=b"arrays")
    with bundle.open_bundle(path) as opened:
        assert opened.manifest.golden is not None
        assert opened.manifest.members[-1] == opened.manifest.golden
        assert bytes(opened.member(bundle.GOLDEN)) == b"arrays"
    assert read_manifest(write(tmp_path / "n.edgerun", onnx_bytes)).golden is None


# ---- properties (hypothesis, bounded and derandomized so CI runs are repeatable) -----------

BOUNDED = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,  # nothing written into the checkout
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
NAME_PART = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-.é", min_size=1, max_size=12).filter(
    lambda part: part not in (".", "..")
)
MEMBER_NAME = st.lists(NAME_PART, min_size=1, max_size=3).map("/".join)
EXTERNAL_DATA = st.dictionaries(
    MEMBER_NAME.filter(lambda n: n not in (MANIFEST, "model.onnx", "golden.npz")),
    st.binary(max_size=300),
    max_size=4,
)


@BOUNDED
@given(model=st.binary(min_size=1, max_size=500), external=EXTERNAL_DATA)
def test_any_members_round_trip_aligned(
    tmp_path: Path, model: bytes, external: dict[str, bytes]
) -> None:
    path = write(tmp_path / "p.edgerun", model, external_data=external)
    with open_bundle(path) as b:
        assert bytes(b.model) == model
        for name, data in external.items():
            assert bytes(b.member(name)) == data
    for name in ["model.onnx", *external]:
        assert data_offset(path, name) % ALIGNMENT == 0


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("prop")
    return write(
        folder / "w.edgerun", b"\x08\x07" * 40, external_data={"w.bin": b"w" * 90}
    ).read_bytes()


@BOUNDED
@given(data=st.data())
def test_damaged_bundle_opens_intact_or_is_refused(
    tmp_path: Path, written: bytes, data: st.DataObject
) -> None:
    """Any edits and a cut: either a BundleError, or every member is exactly what was written
    (an edit in a timestamp, say, is harmless), never another exception."""
    raw = bytearray(written)
    edits = data.draw(
        st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), max_size=4)
    )
    for at, value in edits:
        raw[at] = value
    cut = data.draw(st.integers(0, len(raw)))
    path = tmp_path / "d.edgerun"
    path.write_bytes(bytes(raw[:cut]))
    try:
        with open_bundle(path) as b:
            assert bytes(b.model) == b"\x08\x07" * 40 and bytes(b.member("w.bin")) == b"w" * 90
    except BundleError:
        pass


U16, U32 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
# a central record with every field drawn: version, flags, method, times, CRC, sizes, name,
# extra and comment lengths, disk, attributes and the local header's offset
CENTRAL_RECORD = st.tuples(*[U16] * 6, *[U32] * 3, *[U16] * 5, U32, U32).map(
    lambda fields: struct.pack("<4s6H3L5H2L", b"PK\x01\x02", *fields)
)


@BOUNDED
@given(
    blob=st.binary(max_size=400),
    records=st.lists(CENTRAL_RECORD, max_size=3),
    count=st.integers(0, 0xFFFF),
    offset=st.integers(0, 0xFFFFFFFF),
)
def test_forged_directories_are_refused(
    tmp_path: Path, blob: bytes, records: list[bytes], count: int, offset: int
) -> None:
    """Garbage, then forged central records and an end record with any counts and offsets."""
    directory = b"".join(records)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(directory), offset, 0)
    path = tmp_path / "r.edgerun"
    path.write_bytes(blob + directory + end)
    with pytest.raises(BundleError):
        open_bundle(path)


def as_zip64(raw: bytes) -> bytes:
    """The same archive with every central record and the end record in zip64 form, as a
    bundle over 4 GiB would have them (zipfile writes them only when it must)."""
    eocd = raw.rfind(b"PK\x05\x06")
    count, _, cd_offset = struct.unpack_from("<4s4H2LH", raw, eocd)[4:7]
    records, pos = [], cd_offset
    for _ in range(count):
        fields = list(struct.unpack_from("<4s6H3L5H2L", raw, pos))
        name_len, extra_len, comment_len = fields[10:13]
        name = raw[pos + 46 : pos + 46 + name_len]
        extra = raw[pos + 46 + name_len : pos + 46 + name_len + extra_len]
        zip64 = struct.pack("<HHQQQ", 1, 24, fields[9], fields[8], fields[16])
        fields[8] = fields[9] = fields[16] = 0xFFFFFFFF
        fields[11] = len(zip64 + extra)
        records.append(struct.pack("<4s6H3L5H2L", *fields) + name + zip64 + extra)
        pos += 46 + name_len + extra_len + comment_len
    directory = b"".join(records)
    record = cd_offset + len(directory)
    end64 = struct.pack(
        "<4sQ2H2L2Q2Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(directory), cd_offset
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, record, 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return raw[:cd_offset] + directory + end64 + locator + end


def test_zip64_records_are_read(good: Path) -> None:
    path = good.with_name("z64.edgerun")
    path.write_bytes(as_zip64(good.read_bytes()))
    with zipfile.ZipFile(path) as zf:  # Python's zipfile agrees it is a valid zip64 archive
        assert zf.testzip() is None
    with open_bundle(good) as plain, open_bundle(path) as zip64:
        assert zip64.manifest == plain.manifest
        for member in plain.manifest.members:
            assert bytes(zip64.member(member.name)) == bytes(plain.member(member.name))


@pytest.mark.parametrize("written", [0, 1 << 20, 24 << 20], ids=["empty", "1 MiB", "24 MiB"])
def test_killed_writer_leaves_the_old_bundle(
    tmp_path: Path, onnx_bytes: bytes, written: int
) -> None:
    """SIGKILL in the middle of a real write (once the temp file holds ``written`` bytes):
    no handler runs, yet the destination is still the old, whole bundle."""
    import signal
    import subprocess
    import sys
    import time

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(48 << 20))
    dest = write(tmp_path / "m.edgerun", onnx_bytes)
    code = (
        "import sys; from edgerun.bundle import write_bundle; "
        "write_bundle(sys.argv[1], sys.argv[2], model_format='onnx', inputs=(), outputs=())"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(dest), str(big)])
    deadline = time.monotonic() + 60
    while not any(_size(t) >= written for t in tmp_path.glob(".m.edgerun.*.tmp")):
        assert child.poll() is None and time.monotonic() < deadline, "the write ended first"
        time.sleep(0.001)
    child.send_signal(signal.SIGKILL)
    child.wait()
    with open_bundle(dest) as b:
        assert bytes(b.model) == onnx_bytes


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed into place between the listing and now
        return -1
