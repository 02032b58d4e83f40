"""Which backend runs a model: the model's format, the device profile's order, what is here.

A profile's ``deploy.backends`` is an ordered list ("onnxruntime:XnnpackExecutionProvider",
"onnxruntime:CPUExecutionProvider", "tflite:xnnpack", "numpy"). Entries for another model
format are passed over; the onnxruntime entries form one provider list (onnxruntime
partitions the graph across them); the TFLite entries are tried one delegate at a time.
Whatever was asked for and cannot run is a *miss*: it is named in a
``BackendFallbackWarning`` and in ``Session.backend_reason``, or with ``strict`` it is a
``BackendUnavailableError``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgerun.errors import ModelFormatError

if TYPE_CHECKING:
    from edgerun.bundle import Bundle
    from edgerun.profiles import DeviceProfile

KINDS = ("onnxruntime", "tflite", "numpy")
FORMAT_BACKENDS = {"onnx": ("onnxruntime", "numpy"), "tflite": ("tflite", "numpy")}


@dataclass
class ModelSource:
    """A model file or bundle, opened just enough to know its format."""

    path: Path
    format: str  # "onnx" | "tflite"
    bundle: Bundle | None = None

    def external_data(self) -> dict[str, memoryview]:
        """A bundle's external-data members by name (ONNX ``location``), no copies."""
        if self.bundle is None:
            return {}
        return {m.name: self.bundle.member(m.name) for m in self.bundle.manifest.external_data}


def open_source(path: str | os.PathLike[str]) -> ModelSource:
    from edgerun.modelfile import model_path

    path = model_path(path)
    if path.suffix == ".edgerun":
        from edgerun.bundle import open_bundle

        bundle = open_bundle(path)
        return ModelSource(path, bundle.manifest.model_format, bundle)
    return ModelSource(path, "tflite" if path.suffix == ".tflite" else "onnx")


@dataclass(frozen=True)
class Group:
    """One backend to try, with its providers or delegates in order (empty: its defaults)."""

    kind: str
    options: tuple[str, ...] = ()
    requested: bool = False  # asked for by the user or the profile: missing it is a miss


@dataclass
class Choice:
    groups: list[Group]
    why: str  # where the order came from
    skipped: list[str] = field(default_factory=list)  # profile entries for another format


def plan_choice(backend: str, model_format: str, profile: DeviceProfile | None) -> Choice:
    """The backends to try for ``backend`` ("auto" or a name) in order."""
    allowed = FORMAT_BACKENDS.get(model_format, ("numpy",))
    if backend == "numpy":
        return Choice([Group("numpy", requested=True)], "requested")
    if backend != "auto":
        if backend not in allowed:
            raise ModelFormatError(f"the {backend} backend cannot run {model_format} models")
        options = _options(profile, backend) if profile is not None else ()
        return Choice([Group(backend, options, True)], f"requested backend={backend!r}")
    if profile is None:
        groups = [Group(kind) for kind in allowed]
        return Choice(groups, f"auto: {model_format} model, no device profile")
    groups, skipped = [], []
    for entry in profile.deploy.backends:
        kind = entry.partition(":")[0]
        if kind not in allowed:
            skipped.append(entry)
        elif all(g.kind != kind for g in groups):
            groups.append(Group(kind, _options(profile, kind), requested=True))
    return Choice(groups, f"auto: device {profile.name}'s order for {model_format}", skipped)


def _options(profile: DeviceProfile, kind: str) -> tuple[str, ...]:
    return tuple(
        option
        for entry in profile.deploy.backends
        for k, _, option in [entry.partition(":")]
        if k == kind and option
    )
