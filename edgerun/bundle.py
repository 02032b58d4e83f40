"""The ``.edgerun`` bundle: one zip archive holding a model, its manifest and its weights.

The layout serves the board, not the packer. ``manifest.json`` comes first so a peek reads
one small member; every other member is stored uncompressed with its data 64-byte aligned
(as Android's zipalign does), so the runtime maps the archive once and hands out views of
the weights instead of copies. A load checks every name, size and sha256 before it returns,
so a corrupt, truncated or tampered bundle is one clear ``BundleError``, never a partial
load. Writes go to a temp file that replaces the destination only once it is complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from edgerun.errors import BundleError, UnsafePathError
from edgerun.specs import Quantization, TensorSpec

FORMAT_VERSION = 1
ALIGNMENT = 64
MANIFEST = "manifest.json"
GOLDEN = "golden.npz"  # inputs "input/NAME" and expected outputs "output/NAME"
MODEL_FORMATS = ("onnx", "tflite")
MAX_MANIFEST_BYTES = 16 * 1024 * 1024

_CHUNK = 1 << 20
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, then name and extra lengths at 26
_ZIPALIGN_EXTRA_ID = 0xD935
_ZIP64_EXTRA_BYTES = 20  # what zipfile appends to a local header's extra for a zip64 member
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # same inputs, same bytes

# Defaults merged under what the packer passes, so every manifest carries these keys.
_APPLIED_KEYS = {"folding": False, "pruning": None, "quantization": None, "calibration_samples": 0}
_SOURCE_KEYS = {"framework": None, "sha256": None, "name": None}

Source = bytes | bytearray | memoryview | os.PathLike[str] | str


@dataclass(frozen=True)
class Member:
    """One archive member as the manifest records it."""

    name: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_json(cls, data: Any, where: str, at: str) -> Member:
        _expect(data, (dict,), where, at)
        name = _get(data, "name", (str,), where, at)
        check_member_name(name, where)
        size = _get(data, "size", (int,), where, at)
        sha256 = _get(data, "sha256", (str,), where, at)
        if size < 0:
            raise BundleError(f"{where}: {MANIFEST}: {at}.size is negative")
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise BundleError(f"{where}: {MANIFEST}: {at}.sha256 is not a hex sha256 digest")
        return cls(name, size, sha256)


@dataclass(frozen=True)
class Manifest:
    """What a bundle holds and how it was made; ``manifest.json`` is its JSON form."""

    format_version: int
    model: Member
    model_format: str
    external_data: tuple[Member, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    profile: dict[str, Any] | None
    applied: dict[str, Any]
    accuracy: dict[str, Any] | None
    source: dict[str, Any]
    edgerun_version: str
    golden: Member | None = None  # sample inputs and the packer's outputs, for `verify`

    @property
    def members(self) -> tuple[Member, ...]:
        """Every member besides the manifest: the model, its external data, the goldens."""
        golden = (self.golden,) if self.golden else ()
        return (self.model, *self.external_data, *golden)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "model": self.model.to_json(),
            "model_format": self.model_format,
            "external_data": [m.to_json() for m in self.external_data],
            "inputs": [s.to_json() for s in self.inputs],
            "outputs": [s.to_json() for s in self.outputs],
            "profile": self.profile,
            "applied": self.applied,
            "accuracy": self.accuracy,
            "source": self.source,
            "edgerun_version": self.edgerun_version,
            "golden": self.golden.to_json() if self.golden else None,
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> Manifest:
        """Validate and build; a missing or mistyped key is a ``BundleError`` naming it.

        ``format_version`` is checked first: a newer manifest may have any shape, and the
        useful message then is "upgrade edgerun", not a complaint about a key.
        """
        _expect(data, (dict,), where, "")
        version = _format_version(data, where)
        fmt = _get(data, "model_format", (str,), where, "")
        if fmt not in MODEL_FORMATS:
            raise BundleError(f"{where}: {MANIFEST}: unknown model_format {fmt!r}")
        manifest = cls(
            format_version=version,
            model=Member.from_json(_get(data, "model", (dict,), where, ""), where, "model"),
            model_format=fmt,
            external_data=_members(_get(data, "external_data", (list,), where, ""), where),
            inputs=_specs(_get(data, "inputs", (list,), where, ""), where, "inputs"),
            outputs=_specs(_get(data, "outputs", (list,), where, ""), where, "outputs"),
            profile=_get(data, "profile", (dict, type(None)), where, ""),
            applied=_get(data, "applied", (dict,), where, ""),
            accuracy=_get(data, "accuracy", (dict, type(None)), where, ""),
            source=_get(data, "source", (dict,), where, ""),
            edgerun_version=_get(data, "edgerun_version", (str,), where, ""),
            golden=_golden(data, where),
        )
        _check_distinct([MANIFEST, *(m.name for m in manifest.members)], where)
        return manifest


# ---- validation helpers ---------------------------------------------------------------

_JSON_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def _is(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False  # JSON true is not the integer 1
    return isinstance(value, types)


def _expect(value: Any, types: tuple[type, ...], where: str, at: str) -> Any:
    if not _is(value, types):
        wanted = " or ".join(_JSON_NAMES[t] for t in types)
        found = _JSON_NAMES.get(type(value), type(value).__name__)
        what = at or "the document"
        raise BundleError(f"{where}: {MANIFEST}: {what} should be {wanted}, not {found}")
    return value


def _get(data: dict[str, Any], key: str, types: tuple[type, ...], where: str, at: str) -> Any:
    path = f"{at}.{key}" if at else key
    if key not in data:
        raise BundleError(f"{where}: {MANIFEST}: missing key {path!r}")
    return _expect(data[key], types, where, path)


def _format_version(data: dict[str, Any], where: str) -> int:
    version = _get(data, "format_version", (int,), where, "")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{where}: bundle format_version {version} is newer than this edgerun supports "
            f"({FORMAT_VERSION}); upgrade edgerun"
        )
    if version < 1:
        raise BundleError(f"{where}: {MANIFEST}: format_version {version} is not valid")
    return version


def _golden(data: dict[str, Any], where: str) -> Member | None:
    value = data.get("golden")
    if value is None:
        return None
    member = Member.from_json(value, where, "golden")
    if member.name != GOLDEN:
        raise BundleError(f"{where}: {MANIFEST}: golden.name must be {GOLDEN!r}")
    return member


def _members(items: list[Any], where: str) -> tuple[Member, ...]:
    return tuple(Member.from_json(m, where, f"external_data[{i}]") for i, m in enumerate(items))


def _specs(items: list[Any], where: str, at: str) -> tuple[TensorSpec, ...]:
    return tuple(_spec(item, where, f"{at}[{i}]") for i, item in enumerate(items))


def _spec(data: Any, where: str, at: str) -> TensorSpec:
    _expect(data, (dict,), where, at)
    _get(data, "name", (str,), where, at)
    _get(data, "dtype", (str,), where, at)
    shape = _get(data, "shape", (list, type(None)), where, at)
    for i, dim in enumerate(shape or ()):
        _expect(dim, (int, str, type(None)), where, f"{at}.shape[{i}]")
    quant = data.get("quantization")
    if quant is not None:
        _quantization(_expect(quant, (dict,), where, f"{at}.quantization"), where, at)
    return TensorSpec.from_json(data)


def _quantization(data: dict[str, Any], where: str, at: str) -> Quantization:
    at = f"{at}.quantization"
    for i, s in enumerate(_get(data, "scale", (list,), where, at)):
        _expect(s, (int, float), where, f"{at}.scale[{i}]")
    for i, z in enumerate(_get(data, "zero_point", (list,), where, at)):
        _expect(z, (int,), where, f"{at}.zero_point[{i}]")
    _expect(data.get("axis"), (int, type(None)), where, f"{at}.axis")
    return Quantization.from_json(data)


def check_member_name(name: str, where: str) -> str:
    """Refuse a name that could leave the archive if anyone ever extracted it."""
    if not name or "\x00" in name:
        raise UnsafePathError(f"{where}: empty or invalid member name {name!r}")
    if "\\" in name:
        raise UnsafePathError(f"{where}: member name {name!r} contains a backslash")
    if name.startswith("/") or ":" in name:
        raise UnsafePathError(f"{where}: member name {name!r} is absolute or names a drive")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise UnsafePathError(f"{where}: member name {name!r} has an empty, '.' or '..' part")
    return name


def _check_distinct(names: Iterable[str], where: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise BundleError(f"{where}: member {name!r} appears twice")
        seen.add(name)


# ---- writing ---------------------------------------------------------------------------


def write_bundle(
    path: str | os.PathLike[str],
    model: Source,
    *,
    model_format: str,
    inputs: Iterable[TensorSpec],
    outputs: Iterable[TensorSpec],
    profile: dict[str, Any] | None = None,
    applied: dict[str, Any] | None = None,
    accuracy: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
    external_data: Mapping[str, Source] | None = None,
    golden: Source | None = None,
) -> Path:
    """Write a bundle atomically: either the whole bundle lands at ``path`` or nothing does.

    Sources are read twice, streamed: once to put sizes and digests in the manifest (which
    must come first), once to copy them, checked against the first read so a file that
    changes underneath is an error instead of a bundle that fails its own checksums.
    """
    path = Path(path)
    if model_format not in MODEL_FORMATS:
        raise BundleError(
            f"{path}: model_format must be one of {MODEL_FORMATS}, not {model_format!r}"
        )
    model_name = f"model.{model_format}"
    sources = {model_name: model, **_external_sources(external_data, model_name, path)}
    if golden is not None:
        sources[GOLDEN] = golden
    members = [_digest(name, src) for name, src in sources.items()]
    golden_member = members.pop() if golden is not None else None
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        model=members[0],
        model_format=model_format,
        external_data=tuple(members[1:]),
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        profile=profile,
        applied={**_APPLIED_KEYS, **(applied or {})},
        accuracy=accuracy,
        source={**_SOURCE_KEYS, **(source or {})},
        edgerun_version=_edgerun_version(),
        golden=golden_member,
    )
    text = _manifest_text(manifest, path)
    _atomic_write(path, lambda fp: _write_archive(fp, text, manifest.members, sources))
    return path


def _external_sources(
    external: Mapping[str, Source] | None, model_name: str, where: Path
) -> dict[str, Source]:
    for name in external or {}:
        check_member_name(name, str(where))
        if name in (MANIFEST, model_name, GOLDEN):
            raise BundleError(f"{where}: external data may not be named {name!r}")
    return dict(external or {})


def _manifest_text(manifest: Manifest, where: Path) -> str:
    try:
        return json.dumps(manifest.to_json(), indent=2) + "\n"
    except (TypeError, ValueError) as exc:  # e.g. a TOML datetime left in the profile
        raise BundleError(f"{where}: the manifest is not JSON-serialisable: {exc}") from exc


def _edgerun_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgerun")
    except PackageNotFoundError:
        return "0+unknown"


def _chunks(src: Source) -> Iterator[memoryview | bytes]:
    """A source's bytes in bounded pieces, so a 200 MB model is never held in memory."""
    if isinstance(src, bytes | bytearray | memoryview):
        view = memoryview(src).cast("B")
        for start in range(0, len(view), _CHUNK):
            yield view[start : start + _CHUNK]
        return
    try:
        with open(src, "rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk
    except OSError as exc:
        raise BundleError(f"{src}: cannot read: {exc.strerror or exc}") from exc


def _digest(name: str, src: Source) -> Member:
    digest, size = hashlib.sha256(), 0
    for chunk in _chunks(src):
        digest.update(chunk)
        size += len(chunk)
    return Member(name, size, digest.hexdigest())


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Temp file in the destination folder, fsync, rename: a crash leaves the old file."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise BundleError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w+b") as fp:
            write(fp)
            fp.flush()
            os.fsync(fp.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the bundle from the service user
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise BundleError(f"{path}: cannot write: {exc.strerror or exc}") from exc
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable; not every platform can open a folder."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_archive(
    fp: IO[bytes], manifest: str, members: Iterable[Member], sources: Mapping[str, Source]
) -> None:
    with zipfile.ZipFile(fp, "w") as zf:
        zf.writestr(_zip_info(MANIFEST), manifest, compress_type=zipfile.ZIP_DEFLATED)
        for member in members:
            _write_member(zf, fp, member, sources[member.name])


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
    info.external_attr = 0o644 << 16
    return info


def _write_member(zf: zipfile.ZipFile, fp: IO[bytes], member: Member, src: Source) -> None:
    info = _zip_info(member.name)
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = member.size
    info.extra = _align_extra(fp.tell(), info)
    digest = hashlib.sha256()
    with zf.open(info, "w") as out:
        for chunk in _chunks(src):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != member.sha256:
        raise BundleError(f"{member.name}: the source changed while the bundle was written")


def _align_extra(header_offset: int, info: zipfile.ZipInfo) -> bytes:
    """zipalign's extra field (id 0xD935: alignment, then zeros) sized to align the data."""
    name = _name_bytes(info.filename)
    zip64 = _ZIP64_EXTRA_BYTES if info.file_size * 1.05 > zipfile.ZIP64_LIMIT else 0
    unpadded = header_offset + 30 + len(name) + 6 + zip64
    pad = -unpadded % ALIGNMENT
    return struct.pack("<HHH", _ZIPALIGN_EXTRA_ID, 2 + pad, ALIGNMENT) + bytes(pad)


def _name_bytes(name: str) -> bytes:
    """A name's bytes as zipfile writes them: ASCII, else UTF-8 (with flag bit 11 set)."""
    try:
        return name.encode("ascii")
    except UnicodeEncodeError:
        return name.encode("utf-8")


# ---- reading ---------------------------------------------------------------------------


class Bundle:
    """An open bundle: its manifest and read-only views of its members over one mmap."""

    def __init__(
        self, path: Path, manifest: Manifest, mapped: mmap.mmap, spans: dict[str, tuple[int, int]]
    ) -> None:
        self.path = path
        self.manifest = manifest
        self._map: mmap.mmap | None = mapped
        self._view: memoryview | None = memoryview(mapped)
        self._spans = spans

    def member(self, name: str) -> memoryview:
        """A verified member's bytes, no copy; valid while any view of it is alive."""
        if self._view is None:
            raise BundleError(f"{self.path}: the bundle is closed")
        if name not in self._spans:
            raise BundleError(f"{self.path}: the bundle has no member {name!r}")
        start, end = self._spans[name]
        return self._view[start:end]

    @property
    def model(self) -> memoryview:
        return self.member(self.manifest.model.name)

    def close(self) -> None:
        """Unmap now if no view is left; otherwise the map goes when the last view does."""
        if self._view is None:
            return
        self._view.release()
        self._view = None
        with contextlib.suppress(BufferError):
            self._map.close()  # type: ignore[union-attr]
        self._map = None

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Open and fully verify a bundle: names, layout, sizes and every member's sha256."""
    return _open(Path(path), verify=True)


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The manifest of a well-formed bundle, without hashing members (for ``inspect``)."""
    with _open(Path(path), verify=False) as bundle:
        return bundle.manifest


def _open(path: Path, *, verify: bool) -> Bundle:
    where = str(path)
    with _open_file(path) as f, _open_zip(f, where) as zf:
        manifest = _load_manifest(zf, where)
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            spans = _check_members(zf, mapped, manifest, where, verify=verify)
        except BaseException:
            mapped.close()
            raise
    return Bundle(path, manifest, mapped, spans)


def _open_file(path: Path) -> IO[bytes]:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise BundleError(f"{path}: cannot open: {exc.strerror or exc}") from exc


def _open_zip(f: IO[bytes], where: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(f)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise BundleError(
            f"{where}: not a bundle (not a zip archive, or truncated): {exc}"
        ) from exc


def _load_manifest(zf: zipfile.ZipFile, where: str) -> Manifest:
    infos = zf.infolist()
    for info in infos:
        check_member_name(info.orig_filename, where)  # before zipfile cut it at a NUL
    _check_distinct((info.filename for info in infos), where)
    if not infos or infos[0].filename != MANIFEST:
        problem = "is not the first member" if MANIFEST in zf.NameToInfo else "is missing"
        raise BundleError(f"{where}: {MANIFEST} {problem}; not an edgerun bundle")
    return Manifest.from_json(_manifest_json(zf, infos[0], where), where)


def _manifest_json(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> Any:
    """The parsed manifest, refusing a huge one before a byte of it is inflated."""
    if info.file_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{where}: {MANIFEST} is {info.file_size} bytes, over the 16 MiB limit")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise BundleError(f"{where}: {MANIFEST} uses compression {info.compress_type}, not deflate")
    try:
        with zf.open(info) as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError) as exc:
        raise BundleError(
            f"{where}: {MANIFEST} is unreadable, the bundle is corrupt: {exc}"
        ) from exc
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"{where}: {MANIFEST} is not valid JSON: {exc}") from exc


def _check_members(
    zf: zipfile.ZipFile, mapped: mmap.mmap, manifest: Manifest, where: str, *, verify: bool
) -> dict[str, tuple[int, int]]:
    """Archive and manifest must list the same members; each is checked, then located."""
    infos = {info.filename: info for info in zf.infolist()}
    for member in manifest.members:
        if member.name not in infos:
            raise BundleError(f"{where}: {member.name} is listed in {MANIFEST} but missing")
    listed = {MANIFEST, *(m.name for m in manifest.members)}
    unlisted = sorted(set(infos) - listed)
    if unlisted:
        raise BundleError(f"{where}: member {unlisted[0]!r} is not listed in {MANIFEST}")
    return {m.name: _span(infos[m.name], m, mapped, where, verify) for m in manifest.members}


def _span(
    info: zipfile.ZipInfo, member: Member, mapped: mmap.mmap, where: str, verify: bool
) -> tuple[int, int]:
    what = f"{where}: {member.name}"
    if info.compress_type != zipfile.ZIP_STORED:
        raise BundleError(f"{what}: is compressed; bundle members must be stored to be mapped")
    if info.file_size != member.size or info.compress_size != member.size:
        raise BundleError(
            f"{what}: size mismatch ({info.file_size} bytes in the archive, "
            f"{member.size} in {MANIFEST}), the bundle is corrupt or was modified"
        )
    start = _data_offset(info, mapped, what)
    end = start + member.size
    if end > len(mapped):
        raise BundleError(f"{what}: data runs past the end of the file; the bundle is truncated")
    if start % ALIGNMENT:
        raise BundleError(f"{what}: data is not {ALIGNMENT}-byte aligned")
    if verify and _sha256(mapped, start, end) != member.sha256:
        raise BundleError(f"{what}: sha256 mismatch, the bundle is corrupt or was modified")
    return start, end


def _data_offset(info: zipfile.ZipInfo, mapped: mmap.mmap, what: str) -> int:
    """Where the data starts, from the local header: its extra may differ from the central one."""
    offset = info.header_offset
    if offset + 30 > len(mapped):
        raise BundleError(f"{what}: local header past the end of the file; the bundle is truncated")
    signature, name_len, extra_len = _LOCAL_HEADER.unpack_from(mapped, offset)
    name_start = offset + 30
    central_name = info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
    if signature != b"PK\x03\x04" or mapped[name_start : name_start + name_len] != central_name:
        raise BundleError(f"{what}: local header does not match the central directory")
    return name_start + name_len + extra_len


def _sha256(mapped: mmap.mmap, start: int, end: int) -> str:
    with memoryview(mapped) as view, view[start:end] as data:
        return hashlib.sha256(data).hexdigest()
