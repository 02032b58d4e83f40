"""Sample data for calibration and the accuracy report: user files, or loud synthetic inputs.

Samples are ``{input name: array}`` with a leading sample axis; sample ``i`` is fed as
``array[i:i+1]``, a batch of one, because that is how a board runs the model. A ``label``
array (one class index per sample) in a validation file turns on label accuracy.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from edgerun.errors import InputError
from edgerun.specs import TensorSpec

Samples = dict[str, np.ndarray]
LABEL_KEYS = ("label", "labels")


class PackWarning(UserWarning):
    """Something pack did that the user should know about (shown on stderr by the CLI)."""


def load_samples(
    path: Path, specs: list[TensorSpec], what: str
) -> tuple[Samples, np.ndarray | None]:
    """Read ``--calibration``/``--validation`` data: an .npz, or a folder of .npy files.

    A folder holds either one ``INPUT.npy`` per input (samples stacked), or, for a model with
    one input, one .npy per sample. Returns the samples and the labels (None without).
    """
    path = Path(path)
    if path.is_dir():
        arrays = _folder(path, specs, what)
    elif path.suffix == ".npz" and path.is_file():
        arrays = _npz(path, what)
    elif not path.exists():
        raise InputError(f"{what} {path}: no such file or folder")
    else:
        raise InputError(f"{what} {path}: expected an .npz file or a folder of .npy files")
    labels = next((arrays.pop(k) for k in LABEL_KEYS if k in arrays), None)
    samples = {spec.name: _check(arrays, spec, path, what) for spec in specs}
    extra = sorted(set(arrays) - set(samples))
    if extra:
        raise InputError(
            f"{what} {path}: {extra[0]!r} is not an input of the model "
            f"(inputs: {', '.join(s.name for s in specs)})"
        )
    count = _count(samples, path, what)
    if labels is not None and (labels.ndim != 1 or len(labels) != count):
        raise InputError(f"{what} {path}: 'label' must hold one class index per sample ({count})")
    return samples, labels


def _npz(path: Path, what: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{what} {path}: not a readable .npz: {exc}") from exc


def _folder(path: Path, specs: list[TensorSpec], what: str) -> dict[str, np.ndarray]:
    files = sorted(p for p in path.iterdir() if p.suffix == ".npy" and p.is_file())
    if not files:
        raise InputError(f"{what} {path}: the folder holds no .npy files")
    stems = {p.stem for p in files}
    if {s.name for s in specs} <= stems:
        return {p.stem: _npy(p, what) for p in files}
    if len(specs) != 1:
        raise InputError(
            f"{what} {path}: a model with several inputs needs one INPUT.npy per input "
            f"({', '.join(s.name + '.npy' for s in specs)})"
        )
    spec = specs[0]
    rank = len(spec.shape) if spec.shape is not None else None
    samples = []
    for p in files:
        array = _npy(p, what)
        samples.append(array[0] if rank is not None and array.ndim == rank else array)
    try:
        return {spec.name: np.stack(samples)}
    except ValueError as exc:
        raise InputError(f"{what} {path}: the .npy files differ in shape: {exc}") from exc


def _npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{what} {path}: not a readable .npy: {exc}") from exc


def _check(arrays: dict[str, np.ndarray], spec: TensorSpec, path: Path, what: str) -> np.ndarray:
    """Samples for one input, cast to its dtype: [N, *per-sample shape]."""
    if spec.name not in arrays:
        raise InputError(f"{what} {path}: no samples for input {spec.name!r}")
    array = arrays[spec.name]
    want = np.dtype(spec.dtype)
    if not np.can_cast(array.dtype, want, casting="same_kind"):
        raise InputError(
            f"{what} {path}: input {spec.name!r} holds {array.dtype}, the model takes {want}"
        )
    sample_shape = tuple(spec.shape[1:]) if spec.shape else ()
    got = array.shape[1:]
    if len(got) != len(sample_shape) or any(
        isinstance(d, int) and d != g for d, g in zip(sample_shape, got, strict=True)
    ):
        shown = "x".join("?" if not isinstance(d, int) else str(d) for d in sample_shape)
        raise InputError(
            f"{what} {path}: input {spec.name!r} samples are {'x'.join(map(str, got)) or 'scalars'}"
            f", the model takes N x {shown} (samples stacked on the first axis)"
        )
    return array.astype(want, copy=False)


def _count(samples: Samples, path: Path, what: str) -> int:
    counts = {len(a) for a in samples.values()}
    if len(counts) != 1 or 0 in counts:
        raise InputError(f"{what} {path}: every input needs the same, non-zero number of samples")
    return counts.pop()


def synthetic(specs: list[TensorSpec], count: int, seed: int = 0) -> Samples:
    """Random inputs, with a loud warning: int8 ranges calibrated on noise fit no real data."""
    warnings.warn(
        "no --calibration data: calibrating and checking accuracy on SYNTHETIC random inputs; "
        "the int8 ranges and the accuracy report will not reflect real data",
        PackWarning,
        stacklevel=2,
    )
    rng = np.random.default_rng(seed)
    samples = {}
    for spec in specs:
        shape = (count, *(d if isinstance(d, int) else 1 for d in (spec.shape or ())[1:]))
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            samples[spec.name] = rng.standard_normal(shape).astype(dtype)
        else:
            samples[spec.name] = rng.integers(0, 100, shape).astype(dtype)
    return samples


def split(samples: Samples, labels: np.ndarray | None, share: float = 0.2) -> tuple:
    """Hold out the last ``share`` of the samples (at least one) for the accuracy report."""
    count = len(next(iter(samples.values())))
    held = max(1, round(count * share)) if count > 1 else 0
    keep = count - held if held else count
    calibration = {k: v[:keep] for k, v in samples.items()}
    validation = {k: v[keep:] for k, v in samples.items()} if held else dict(calibration)
    held_labels = None if labels is None else (labels[keep:] if held else labels)
    return calibration, validation, held_labels


def sample(samples: Samples, i: int) -> dict[str, np.ndarray]:
    return {k: v[i : i + 1] for k, v in samples.items()}


def count(samples: Samples) -> int:
    return len(next(iter(samples.values())))
