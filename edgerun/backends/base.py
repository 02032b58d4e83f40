"""What every backend provides to a Session, and what it records when ops are timed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edgerun.specs import TensorSpec


@dataclass(frozen=True)
class OpInfo:
    """One op as the backend runs it (onnxruntime's are its post-fusion nodes)."""

    name: str
    op_type: str
    provider: str | None = None  # onnxruntime's execution provider for the node
    output_bytes: int | None = None  # per call, where the backend says


@dataclass
class OpRecord:
    """Per-op time over the recorded runs. ``spans`` hold (run, op index, start in seconds
    since that run began, seconds) for the first ``max_traced_runs`` runs."""

    ops: list[OpInfo]
    totals_s: list[float]
    calls: list[int]
    spans: list[tuple[int, int, float, float]] = field(default_factory=list)


class OpRecorder(Protocol):
    """Times each op with the backend's own instrument (a step hook, onnxruntime's profiler).

    ``run(feeds, record=False)`` is a warm-up: it runs but is left out of the record.
    """

    def run(self, feeds: Mapping[str, np.ndarray], record: bool = True) -> None: ...

    def finish(self) -> OpRecord: ...


class BackendSession(Protocol):
    name: str  # what actually runs it, e.g. "numpy" or "onnxruntime:CPUExecutionProvider"
    reason: str  # why this backend was chosen, and what was asked for and is missing
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    threads: int | None
    placement: dict[str, int] | None  # execution provider -> nodes it took
    providers: list[str]  # onnxruntime's registered providers, the TFLite delegate

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Run on feeds that Session has already checked."""
        ...

    def op_recorder(self, max_traced_runs: int) -> OpRecorder | None:
        """A recorder of per-op time, or None where the backend cannot time ops."""
        ...
