"""``edgerun.load`` and ``Session``: the Python API of DESIGN.md."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgerun.errors import (
    BackendFallbackWarning,
    BackendUnavailableError,
    EdgerunError,
    MissingDependencyError,
)
from edgerun.feeds import check_feeds
from edgerun.specs import TensorSpec

if TYPE_CHECKING:
    from edgerun.backends.base import BackendSession, OpRecorder
    from edgerun.backends.select import Group, ModelSource
    from edgerun.profiles import DeviceProfile
    from edgerun.runtime.plan import Plan

BACKENDS = ("auto", "numpy", "onnxruntime", "tflite")


class Session:
    """A loaded model, ready to run; ``run`` may be called from several threads at once."""

    def __init__(self, backend_session: BackendSession) -> None:
        self._impl = backend_session
        self.inputs: list[TensorSpec] = list(backend_session.inputs)
        self.outputs: list[TensorSpec] = list(backend_session.outputs)

    @property
    def backend(self) -> str:
        """What runs the model: "numpy", "onnxruntime:CPUExecutionProvider", "tflite:xnnpack"."""
        return self._impl.name

    @property
    def backend_reason(self) -> str:
        """Why: where the order came from, what was asked for and is missing, who took what."""
        return self._impl.reason

    @property
    def placement(self) -> dict[str, int] | None:
        """onnxruntime: nodes each execution provider took; None where the backend cannot say."""
        return self._impl.placement

    @property
    def providers(self) -> list[str]:
        """onnxruntime's registered execution providers, or the TFLite delegate; [] on numpy."""
        return list(self._impl.providers)

    @property
    def threads(self) -> int | None:
        return self._impl.threads

    @property
    def plan(self) -> Plan | None:
        """The numpy runtime's plan (its steps, constants); None on other backends."""
        return getattr(self._impl, "plan", None)

    def op_recorder(self, max_traced_runs: int = 200) -> OpRecorder | None:
        """Per-op timing with the backend's own instrument, for the profiler; None where the
        backend cannot time ops (TFLite). While it records, run through it."""
        return self._impl.op_recorder(max_traced_runs)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return self._impl.run(check_feeds(self.inputs, feeds))

    def __repr__(self) -> str:
        return f"Session(backend={self.backend!r}, inputs={[s.name for s in self.inputs]})"


def load(
    path: str | os.PathLike[str],
    backend: str = "auto",
    device: str | None = None,
    threads: int | None = None,
    strict: bool = False,
) -> Session:
    """Load a bundle, an .onnx or a .tflite file for running.

    ``device`` names a profile ("rpi4") or a TOML path: its backend order and default thread
    count apply. With ``backend="auto"`` the model's format, that order and what is installed
    decide; the numpy runtime is the last resort. A backend, execution provider or delegate
    that was asked for and cannot run gives a ``BackendFallbackWarning`` naming it, and the
    next one runs; with ``strict=True`` it is a ``BackendUnavailableError`` instead.
    """
    from edgerun.backends.select import open_source, plan_choice

    if backend not in BACKENDS:
        raise EdgerunError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    profile = None
    if device is not None:
        from edgerun.profiles import load_profile

        profile = load_profile(device)
        if threads is None:
            threads = profile.deploy.threads
    source = open_source(path)
    choice = plan_choice(backend, source.format, profile)
    if any(group.kind != "numpy" for group in choice.groups):
        from edgerun.backends.vet import vet

        vet(source)  # what edgerun refuses, no other runtime is handed
    impl, missed = _first_that_runs(choice.groups, source, profile, threads, backend, strict)
    if strict and missed.asked:
        asked = f"device {profile.name}" if profile is not None else f"backend={backend!r}"
        raise BackendUnavailableError(
            f"{asked} asks for what cannot run here, and strict mode allows no fallback: "
            + "; ".join(missed.asked)
        )
    assert impl is not None  # the last group is numpy, which raises rather than misses
    impl.reason = _reason(choice.why, impl, missed)
    if missed.asked or missed.failed:
        warnings.warn(
            f"{source.path.name} runs on {impl.name}; not available: "
            + "; ".join(missed.asked + missed.failed),
            BackendFallbackWarning,
            stacklevel=2,
        )
    return Session(impl)


@dataclass
class _Missed:
    asked: list[str] = field(default_factory=list)  # asked for: warned, strict refuses
    failed: list[str] = field(default_factory=list)  # a default that broke: warned
    absent: list[str] = field(default_factory=list)  # a default not installed: only said


def _first_that_runs(
    groups: list[Group],
    source: ModelSource,
    profile: DeviceProfile | None,
    threads: int | None,
    backend: str,
    strict: bool,
) -> tuple[BackendSession | None, _Missed]:
    missed = _Missed()
    for group in groups:
        try:
            impl = _open(group, source, profile, threads)
        except (MissingDependencyError, BackendUnavailableError) as exc:
            before = missed.asked + missed.failed + missed.absent
            if backend != "auto":
                raise
            if group.kind == "numpy" and before:
                raise BackendUnavailableError(
                    f"no backend can run {source.path}: {'; '.join(before)}; numpy runtime: {exc}"
                ) from exc
            text = f"{group.kind} ({exc})"
            if group.requested:
                missed.asked.append(text)
                if strict:
                    return None, missed
            elif isinstance(exc, MissingDependencyError):
                missed.absent.append(text)
            else:
                missed.failed.append(text)
            continue
        missed.asked += getattr(impl, "misses", [])
        return impl, missed
    return None, missed


def _open(
    group: Group, source: ModelSource, profile: DeviceProfile | None, threads: int | None
) -> BackendSession:
    if group.kind == "onnxruntime":
        from edgerun.backends.onnxruntime import OnnxRuntimeSession, OrtOptions

        return OnnxRuntimeSession(source, group.options, OrtOptions.from_profile(profile, threads))
    if group.kind == "tflite":
        from edgerun.backends.tflite import TfliteSession

        libraries = dict(profile.deploy.delegates) if profile is not None else {}
        return TfliteSession(source, group.options, threads, libraries)
    from edgerun.backends.numpy import NumpySession
    from edgerun.modelfile import bundle_model, open_model

    model = open_model(source.path) if source.bundle is None else bundle_model(source.bundle)
    return NumpySession(model, threads)


def _reason(why: str, impl: BackendSession, missed: _Missed) -> str:
    parts = [why]
    if missed.asked:
        parts.append("missing: " + "; ".join(missed.asked))
    if missed.failed:
        parts.append("failed: " + "; ".join(missed.failed))
    if missed.absent:
        parts.append("not here: " + "; ".join(missed.absent))
    if impl.placement:
        total = sum(impl.placement.values())
        took = ", ".join(f"{p} took {n} of {total} nodes" for p, n in impl.placement.items())
        parts.append(took)
    describe = getattr(impl, "describe", None)
    if describe is not None and (text := describe()):
        parts.append(text)
    return "; ".join(parts)
