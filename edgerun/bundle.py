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
import itertools
import json
import mmap
import os
import stat
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
MAX_MANIFEST_DEPTH = 32

_CHUNK = 1 << 20
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
    mapped = _map_file(path)
    try:
        entries = _central_directory(mapped, where)
        manifest = _load_manifest(entries, mapped, where)
        spans = _check_members(entries, mapped, manifest, where, verify=verify)
    except BaseException:
        mapped.close()
        raise
    return Bundle(path, manifest, mapped, spans)


def _map_file(path: Path) -> mmap.mmap:
    """Map a regular file; a FIFO or device is refused instead of blocking or reading forever."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise BundleError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BundleError(f"{path}: not a regular file")
        if info.st_size < _EOCD.size:
            raise BundleError(f"{path}: not a bundle (not a zip archive, or truncated)")
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise BundleError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


# ---- the central directory, read by hand -----------------------------------------------
# Python's zipfile tolerates overlapping members (the "better zip bomb"), prefixed data and
# other oddities that a reader of untrusted bundles must refuse, so the directory is parsed
# here with struct and checked in full before any member is read.

_EOCD = struct.Struct("<4s4H2LH")  # signature, disks, entry counts, size, offset, comment
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L2Q2Q")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_LOCAL = struct.Struct("<4s5H3L2H")
MAX_MEMBERS = 1 << 16
_UNIX = 3  # "version made by" high byte: the mode sits in external_attr's high 16 bits


@dataclass(frozen=True)
class _Entry:
    """One central-directory record, checked; ``data`` is where its bytes lie in the file."""

    name: str
    method: int
    crc: int
    size: int
    data: tuple[int, int]


def _central_directory(mapped: mmap.mmap, where: str) -> dict[str, _Entry]:
    """Every member, in archive order, after checking names, modes, sizes and layout."""
    count, cd_start, cd_end = _end_record(mapped, where)
    if count > MAX_MEMBERS:
        raise BundleError(f"{where}: the archive lists {count} members, over {MAX_MEMBERS}")
    entries: dict[str, _Entry] = {}
    extents = [(cd_start, cd_end, "the central directory")]
    pos = cd_start
    for _ in range(count):
        entry, local_start, pos = _central_entry(mapped, pos, cd_end, where)
        if entry.name in entries:
            raise BundleError(f"{where}: member {entry.name!r} appears twice")
        entries[entry.name] = entry
        extents.append((local_start, entry.data[1], entry.name))
    if pos != cd_end:
        raise BundleError(f"{where}: not a bundle (the central directory has trailing bytes)")
    _check_no_overlap(extents, where)
    return entries


def _end_record(mapped: mmap.mmap, where: str) -> tuple[int, int, int]:
    """(member count, central directory start, its end), the zip64 record where present."""
    at = mapped.rfind(b"PK\x05\x06", max(0, len(mapped) - _EOCD.size - 0xFFFF))
    if at < 0 or at + _EOCD.size > len(mapped):
        raise BundleError(f"{where}: not a bundle (not a zip archive, or truncated)")
    _, disk, cd_disk, here, count, size, offset, comment = _EOCD.unpack_from(mapped, at)
    if at + _EOCD.size + comment != len(mapped):
        raise BundleError(f"{where}: not a bundle (bytes after the end of the zip archive)")
    if disk or cd_disk or here != count:
        raise BundleError(f"{where}: multi-part zip archives are not bundles")
    end = at
    locator = at - _ZIP64_LOCATOR.size
    if locator >= 0 and mapped[locator : locator + 4] == b"PK\x06\x07":
        _, _, record, _ = _ZIP64_LOCATOR.unpack_from(mapped, locator)
        if record + _ZIP64_EOCD.size > locator:
            raise BundleError(f"{where}: not a bundle (bad zip64 end record)")
        fields = _ZIP64_EOCD.unpack_from(mapped, record)
        if fields[0] != b"PK\x06\x06":
            raise BundleError(f"{where}: not a bundle (bad zip64 end record)")
        count, size, offset, end = fields[7], fields[8], fields[9], record
    if offset + size != end:
        raise BundleError(
            f"{where}: not a bundle (the central directory is not where the archive says; "
            "truncated, or data was added)"
        )
    return count, offset, end


def _central_entry(mapped: mmap.mmap, pos: int, cd_end: int, where: str) -> tuple[_Entry, int, int]:
    if pos + _CENTRAL.size > cd_end:
        raise BundleError(f"{where}: not a bundle (the central directory is truncated)")
    (sig, made_by, _, flags, method, _, _, crc, csize, size, name_len, extra_len, comment_len,
     _, _, attr, local) = _CENTRAL.unpack_from(mapped, pos)  # fmt: skip
    end = pos + _CENTRAL.size + name_len + extra_len + comment_len
    if sig != b"PK\x01\x02" or end > cd_end:
        raise BundleError(f"{where}: not a bundle (a central directory record is damaged)")
    raw_name = bytes(mapped[pos + _CENTRAL.size : pos + _CENTRAL.size + name_len])
    name = _decode_name(raw_name, flags, where)
    extra = bytes(
        mapped[pos + _CENTRAL.size + name_len : pos + _CENTRAL.size + name_len + extra_len]
    )
    size, csize, local = _zip64_values(extra, size, csize, local, name, where)
    if flags & 0x1:
        raise BundleError(f"{where}: member {name!r} is encrypted")
    _check_mode(made_by, attr, name, where)
    if method == zipfile.ZIP_STORED and csize != size:
        raise BundleError(f"{where}: {name}: stored with two different sizes")
    data_start = _local_header(mapped, local, raw_name, name, where)
    data_end = data_start + csize
    if data_end > len(mapped):
        raise BundleError(f"{where}: {name}: data runs past the end of the file; truncated")
    return _Entry(name, method, crc, size, (data_start, data_end)), local, end


def _decode_name(raw: bytes, flags: int, where: str) -> str:
    if b"\x00" in raw:
        raise UnsafePathError(f"{where}: empty or invalid member name {raw!r}")
    try:
        name = raw.decode("utf-8" if flags & 0x800 else "cp437")
    except UnicodeDecodeError:
        raise UnsafePathError(f"{where}: member name {raw!r} is not valid UTF-8") from None
    return check_member_name(name, where)


def _zip64_values(
    extra: bytes, size: int, csize: int, local: int, name: str, where: str
) -> tuple[int, int, int]:
    """Replace the 0xFFFFFFFF placeholders from the zip64 extra field, in the spec's order."""
    wanted = [v == 0xFFFFFFFF for v in (size, csize, local)]
    if not any(wanted):
        return size, csize, local
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        if tag == 1 and pos + 4 + length <= len(extra):
            values = iter(struct.unpack_from(f"<{length // 8}Q", extra, pos + 4))
            filled = [
                next(values, None) if w else v
                for w, v in zip(wanted, (size, csize, local), strict=True)
            ]
            if None not in filled:
                return filled[0], filled[1], filled[2]  # type: ignore[return-value]
            break
        pos += 4 + length
    raise BundleError(f"{where}: {name}: zip64 sizes are missing")


def _check_mode(made_by: int, attr: int, name: str, where: str) -> None:
    """A member must be a plain file: no symlink, folder, device or FIFO modes."""
    kind = stat.S_IFMT(attr >> 16) if made_by >> 8 == _UNIX else 0
    if (kind and kind != stat.S_IFREG) or attr & 0x10:  # 0x10: MS-DOS folder bit
        raise UnsafePathError(
            f"{where}: member {name!r} is not a plain file (mode {oct(attr >> 16)})"
        )


def _local_header(mapped: mmap.mmap, offset: int, raw_name: bytes, name: str, where: str) -> int:
    """Where a member's data starts; its local header must agree with the central one."""
    if offset + _LOCAL.size > len(mapped):
        raise BundleError(f"{where}: {name}: local header past the end of the file; truncated")
    fields = _LOCAL.unpack_from(mapped, offset)
    name_len, extra_len = fields[9], fields[10]
    start = offset + _LOCAL.size
    if fields[0] != b"PK\x03\x04" or mapped[start : start + name_len] != raw_name:
        raise BundleError(f"{where}: {name}: local header does not match the central directory")
    return start + name_len + extra_len


def _check_no_overlap(extents: list[tuple[int, int, str]], where: str) -> None:
    """Members (header to end of data) and the directory must not share a byte."""
    ordered = sorted(extents)
    for (_, end, first), (start, _, second) in itertools.pairwise(ordered):
        if start < end:
            raise BundleError(f"{where}: members {first!r} and {second!r} overlap in the archive")


def _load_manifest(entries: dict[str, _Entry], mapped: mmap.mmap, where: str) -> Manifest:
    first = next(iter(entries.values()), None)
    if first is None or first.name != MANIFEST:
        problem = "is not the first member" if MANIFEST in entries else "is missing"
        raise BundleError(f"{where}: {MANIFEST} {problem}; not an edgerun bundle")
    return Manifest.from_json(_manifest_json(first, mapped, where), where)


def _manifest_json(entry: _Entry, mapped: mmap.mmap, where: str) -> Any:
    """The parsed manifest, refusing a huge one before a byte of it is inflated."""
    if entry.size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{where}: {MANIFEST} is {entry.size} bytes, over the 16 MiB limit")
    raw = bytes(mapped[entry.data[0] : entry.data[1]])
    if entry.method == zipfile.ZIP_DEFLATED:
        inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            raw = inflate.decompress(raw, MAX_MANIFEST_BYTES + 1)
        except zlib.error as exc:
            raise BundleError(
                f"{where}: {MANIFEST} is unreadable, the bundle is corrupt: {exc}"
            ) from None
        if not inflate.eof:
            raise BundleError(f"{where}: {MANIFEST} is unreadable, the bundle is corrupt")
    elif entry.method != zipfile.ZIP_STORED:
        raise BundleError(f"{where}: {MANIFEST} uses compression {entry.method}, not deflate")
    if len(raw) != entry.size or zlib.crc32(raw) != entry.crc:
        raise BundleError(f"{where}: {MANIFEST} fails its CRC, the bundle is corrupt")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"{where}: {MANIFEST} is not valid JSON: {exc}") from exc
    _check_depth(data, where)
    return data


def _check_depth(data: Any, where: str) -> None:
    """Refuse JSON nested deeper than any manifest needs (later code recurses over it)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_MANIFEST_DEPTH:
            raise BundleError(f"{where}: {MANIFEST} is nested deeper than {MAX_MANIFEST_DEPTH}")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _check_members(
    entries: dict[str, _Entry],
    mapped: mmap.mmap,
    manifest: Manifest,
    where: str,
    *,
    verify: bool,
) -> dict[str, tuple[int, int]]:
    """Archive and manifest must list the same members; each is checked, then located."""
    for member in manifest.members:
        if member.name not in entries:
            raise BundleError(f"{where}: {member.name} is listed in {MANIFEST} but missing")
    listed = {MANIFEST, *(m.name for m in manifest.members)}
    unlisted = [name for name in entries if name not in listed]
    if unlisted:
        raise BundleError(f"{where}: member {unlisted[0]!r} is not listed in {MANIFEST}")
    return {m.name: _span(entries[m.name], m, mapped, where, verify) for m in manifest.members}


def _span(
    entry: _Entry, member: Member, mapped: mmap.mmap, where: str, verify: bool
) -> tuple[int, int]:
    what = f"{where}: {member.name}"
    if entry.method != zipfile.ZIP_STORED:
        raise BundleError(f"{what}: is compressed; bundle members must be stored to be mapped")
    if entry.size != member.size:
        raise BundleError(
            f"{what}: size mismatch ({entry.size} bytes in the archive, "
            f"{member.size} in {MANIFEST}), the bundle is corrupt or was modified"
        )
    start, end = entry.data
    if start % ALIGNMENT:
        raise BundleError(f"{what}: data is not {ALIGNMENT}-byte aligned")
    if verify and _sha256(mapped, start, end) != member.sha256:
        raise BundleError(f"{what}: sha256 mismatch, the bundle is corrupt or was modified")
    return start, end


def _sha256(mapped: mmap.mmap, start: int, end: int) -> str:
    with memoryview(mapped) as view, view[start:end] as data:
        return hashlib.sha256(data).hexdigest()
