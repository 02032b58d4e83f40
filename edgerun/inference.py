"""One inference from files or random inputs: the library behind ``edgerun run``."""

from __future__ import annotations

import os
import stat
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgerun.api import Session
from edgerun.errors import EdgerunError, InputError
from edgerun.runtime import budget
from edgerun.specs import Dim, TensorSpec


def parse_shape(text: str) -> tuple[int, ...]:
    """'1x3x224x224' -> (1, 3, 224, 224)."""
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise InputError(f"bad shape {text!r}; write it like 1x3x224x224") from None
    if any(d < 0 for d in dims):
        raise InputError(f"bad shape {text!r}: negative dimension")
    return dims


def concrete_shape(spec: TensorSpec, override: tuple[int, ...] | None) -> tuple[int, ...]:
    """The shape to feed: the override, else the spec with symbolic dims taken as 1."""
    if override is not None:
        return override
    if spec.shape is None:
        raise InputError(f"input {spec.name!r} has unknown rank; give its shape with --shape")
    return tuple(_dim(d) for d in spec.shape)


def _dim(d: Dim) -> int:
    return d if isinstance(d, int) and d >= 0 else 1


def random_feeds(
    specs: list[TensorSpec], shapes: dict[str, tuple[int, ...]] | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """Inputs in each dtype's sensible range: floats in [0, 1), integers in [0, 10), bools."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = concrete_shape(spec, (shapes or {}).get(spec.name))
        budget.check(shape, np.float64, f"random input {spec.name!r}")  # drawn as float64
        feeds[spec.name] = _random(rng, spec, shape)
    return feeds


def _random(rng: np.random.Generator, spec: TensorSpec, shape: tuple[int, ...]) -> np.ndarray:
    from edgerun.feeds import feed_dtype

    dtype = feed_dtype(spec)
    if dtype is None or dtype.kind == "O":
        raise InputError(f"input {spec.name!r} of type {spec.dtype} needs a file (--input)")
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        return rng.integers(0, 10, size=shape).astype(dtype)
    return rng.random(shape, dtype=np.float64).astype(dtype)


def read_feeds(files: dict[str, Path], npz: Path | None) -> dict[str, np.ndarray]:
    """Arrays from ``name=file.npy`` pairs and/or one ``.npz``.

    Never unpickled (``allow_pickle=False``), and every array's header is read and checked
    against its file and the memory budget before numpy allocates it, so a 100-byte file
    that claims a terabyte is one clear error.
    """
    feeds: dict[str, np.ndarray] = {}
    if npz is not None:
        feeds.update(_load_npz(npz))
    for name, path in files.items():
        feeds[name] = _load_npy(path)
    return feeds


def _open_input(path: Path) -> Any:
    """A regular file opened for reading; FIFOs and devices would block or never end."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(f"{path}: not a regular file")
    return os.fdopen(fd, "rb")


def _check_header(f: Any, available: int, what: str) -> None:
    """Read an .npy header from ``f`` (left just past it) and refuse what cannot be right."""
    try:
        version = np.lib.format.read_magic(f)
        header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _fortran, dtype = header(f)
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise InputError(f"{what}: not a numpy .npy file ({exc})") from None
    if dtype.hasobject:
        raise InputError(f"{what}: holds Python objects, which would need unpickling; refused")
    nbytes = budget.tensor_bytes(shape, dtype)
    if nbytes > available:
        raise InputError(
            f"{what}: its header claims {budget.human(nbytes)} of data, the file holds "
            f"{budget.human(available)}; truncated or forged"
        )
    budget.check_bytes(nbytes, f"{what}: array of shape {list(shape)}")


def _load_npy(path: Path) -> np.ndarray:
    with _open_input(path) as f:
        size = os.fstat(f.fileno()).st_size
        _check_header(f, size, str(path))
        f.seek(0)
        try:
            return np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"{path}: not a numpy .npy file ({exc})") from None


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with _open_input(path) as f:
        return read_npz(f, str(path))


def read_npz(f: Any, what: str) -> dict[str, np.ndarray]:
    """Every array of an .npz from a seekable binary file, each header checked first."""
    import zipfile

    try:
        with zipfile.ZipFile(f) as archive:
            infos = [i for i in archive.infolist() if not i.is_dir()]
            budget.check_bytes(sum(i.file_size for i in infos), f"{what}: arrays")
            arrays = {}
            for info in infos:
                with archive.open(info) as member:
                    _check_header(member, info.file_size, f"{what}: {info.filename}")
                with archive.open(info) as member:
                    array = np.lib.format.read_array(member, allow_pickle=False)
                arrays[info.filename.removesuffix(".npy")] = array
            return arrays
    except EdgerunError:
        raise  # already names the problem (ResourceLimitError is also a ValueError)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{what}: not a numpy .npz file ({exc})") from None


def save_outputs(outputs: dict[str, np.ndarray], path: Path) -> None:
    """Write an .npz atomically: a temp file in the same folder, then rename."""
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent or ".", prefix=".", suffix=".npz.tmp")
    except OSError as exc:
        raise EdgerunError(f"{path}: cannot write outputs: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **outputs)  # type: ignore[arg-type]  # numpy stubs: savez(file, *args, allow_pickle, **kwds)
        os.replace(temp, path)
    except BaseException as exc:
        Path(temp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise EdgerunError(f"{path}: cannot write outputs: {exc.strerror or exc}") from None
        raise


@dataclass
class OutputSummary:
    name: str
    shape: list[int]
    dtype: str
    min: float | None
    max: float | None
    mean: float | None
    top5: list[tuple[int, float]] | None  # (class index, value) for classifier-shaped outputs

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(name: str, value: Any) -> OutputSummary:
    array = np.asarray(value)
    numeric = array.size > 0 and array.dtype.kind in "biuf"
    as_float = array.astype(np.float64) if numeric else None
    top5 = None
    if numeric and array.ndim in (1, 2) and array.shape[-1] >= 5 and array.size == array.shape[-1]:
        row = as_float.reshape(-1)  # type: ignore[union-attr]
        best = np.argsort(-row, kind="stable")[:5]
        top5 = [(int(i), float(row[i])) for i in best]
    return OutputSummary(
        name=name,
        shape=list(array.shape),
        dtype=str(array.dtype),
        min=float(as_float.min()) if numeric else None,  # type: ignore[union-attr]
        max=float(as_float.max()) if numeric else None,  # type: ignore[union-attr]
        mean=float(as_float.mean()) if numeric else None,  # type: ignore[union-attr]
        top5=top5,
    )


@dataclass
class RunResult:
    backend: str
    backend_reason: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    random_inputs: bool


def run_once(
    session: Session,
    files: dict[str, Path] | None = None,
    npz: Path | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
    seed: int = 0,
) -> RunResult:
    """One inference: feeds from files when given, else random ones shaped by the specs."""
    given = read_feeds(files or {}, npz)
    missing = [s for s in session.inputs if s.name not in given]
    feeds = {**random_feeds(missing, shapes, seed), **given} if missing else given
    outputs = session.run(feeds)
    return RunResult(session.backend, session.backend_reason, feeds, outputs, bool(missing))
