"""``verify``: does this board still give the answers the bundle was packed with?

A bundle carries a few sample inputs and the outputs the packer's machine computed, with
the tolerance it derived from how far its own backends disagreed. The board runs the
samples and compares; a different BLAS or CPU may differ within that tolerance, never more.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgerun.bundle import GOLDEN, Manifest, open_bundle
from edgerun.errors import BundleError, InputError


@dataclass(frozen=True)
class OutputCheck:
    name: str
    max_abs_error: float
    tolerance: float
    top1_agreement: float | None  # classifier outputs

    @property
    def ok(self) -> bool:
        return self.max_abs_error <= self.tolerance

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max_abs_error": self.max_abs_error,
            "tolerance": self.tolerance,
            "top1_agreement": self.top1_agreement,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class VerifyReport:
    bundle: str
    backend: str
    samples: int
    outputs: list[OutputCheck]

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "backend": self.backend,
            "samples": self.samples,
            "ok": self.ok,
            "outputs": [o.to_json() for o in self.outputs],
        }


def verify(
    path: str | os.PathLike[str],
    backend: str = "auto",
    device: str | None = None,
    threads: int | None = None,
) -> VerifyReport:
    """Run the bundle's golden samples here and compare with what the packer saw."""
    import edgerun

    arrays, atol, manifest = _golden(path)
    session = edgerun.load(path, backend=backend, device=device, threads=threads)
    # goldens hold real values in the manifest's order; integer I/O is quantized on the way
    inputs = {
        s.name: s.from_real(arrays[f"input/{m.name}"])
        for s, m in zip(session.inputs, manifest.inputs, strict=True)
    }
    count = len(next(iter(inputs.values())))
    produced = [session.run({k: v[i : i + 1] for k, v in inputs.items()}) for i in range(count)]
    checks = []
    for spec, m in zip(session.outputs, manifest.outputs, strict=True):
        expected = arrays[f"output/{m.name}"]
        got = np.concatenate([np.asarray(spec.to_real(p[spec.name])) for p in produced])
        checks.append(_check(m.name, expected, got, atol[m.name]))
    return VerifyReport(str(path), session.backend, count, checks)


def _golden(
    path: str | os.PathLike[str],
) -> tuple[dict[str, np.ndarray], dict[str, float], Manifest]:
    with open_bundle(path) as bundle:
        manifest = bundle.manifest
        section = (manifest.accuracy or {}).get("golden")
        if manifest.golden is None or not isinstance(section, dict):
            raise BundleError(f"{path}: the bundle holds no golden samples to verify against")
        data = bytes(bundle.member(GOLDEN))
    from edgerun.inference import read_npz

    try:
        arrays = read_npz(io.BytesIO(data), f"{path}: {GOLDEN}")  # headers checked first
    except InputError as exc:
        raise BundleError(str(exc)) from exc
    atol = section.get("atol")
    names = [s.name for s in manifest.outputs]
    if not isinstance(atol, dict) or any(
        not isinstance(atol.get(n), int | float) or f"output/{n}" not in arrays for n in names
    ):
        raise BundleError(f"{path}: the golden samples do not match the bundle's outputs")
    if any(f"input/{s.name}" not in arrays for s in manifest.inputs):
        raise BundleError(f"{path}: the golden samples do not match the bundle's inputs")
    return arrays, {n: float(atol[n]) for n in names}, manifest


def _check(name: str, expected: np.ndarray, got: np.ndarray, tolerance: float) -> OutputCheck:
    if expected.shape != got.shape:
        return OutputCheck(name, float("inf"), tolerance, None)
    diff = np.abs(expected.astype(np.float64) - got.astype(np.float64))
    top1 = None
    if expected.ndim == 2 and expected.shape[1] >= 2:
        top1 = float(np.mean(expected.argmax(axis=1) == got.argmax(axis=1)))
    return OutputCheck(name, float(np.max(diff, initial=0.0)), tolerance, top1)
