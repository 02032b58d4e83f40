"""The numpy runtime as a backend: a plan built once from the model, run per call."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from time import perf_counter
from typing import Any

import numpy as np

try:  # a dependency, imported with the backend (3.6 ms): every load sets BLAS threads
    import threadpoolctl
except ImportError:  # installed without its dependencies
    threadpoolctl = None  # type: ignore[assignment]

from edgerun.backends.base import OpInfo, OpRecord
from edgerun.modelfile import ModelFile
from edgerun.runtime.allocator import keep_freed_memory
from edgerun.runtime.plan import Plan, Step, StepHook


def c_order(feeds: Mapping[str, Any]) -> dict[str, Any]:
    """The feeds with every array in C order. Kernels choose their method by memory layout
    (channels-last inputs take other paths, which round differently), so the same values
    must give the same outputs however the caller's arrays are laid out."""
    return {
        k: v if not isinstance(v, np.ndarray) or v.flags.c_contiguous else v.copy(order="C")
        for k, v in feeds.items()
    }


class NumpySession:
    name = "numpy"
    placement: dict[str, int] | None = None
    providers: list[str] = []

    def __init__(self, model_file: ModelFile, threads: int | None = None, reason: str = "") -> None:
        model = model_file.model
        self.model = model
        self.reason = reason or "requested"
        self.inputs = model.inputs
        self.outputs = model.outputs
        self.threads = threads
        if threads is not None:
            set_blas_threads(threads)
        keep_freed_memory()  # runs reuse the heap instead of faulting pages in each time
        self.plan = Plan(model.graph, model.opset_imports, functions=model.functions)

    def run(self, feeds: Mapping[str, np.ndarray], hook: StepHook | None = None) -> dict[str, Any]:
        # kernels choose their method by memory layout (channels-last inputs take other
        # paths, which round differently), so every feed enters in C order: the same values
        # give the same outputs however the caller's arrays are laid out
        feeds = {
            k: np.ascontiguousarray(v) if isinstance(v, np.ndarray) else v for k, v in feeds.items()
        }
        results = self.plan.run(feeds, hook=hook)
        return {name: _owned(r) for name, r in zip(self.plan.output_names, results, strict=True)}

    def op_recorder(self, max_traced_runs: int) -> StepRecorder:
        return StepRecorder(self, max_traced_runs)


class StepRecorder:
    """Per-step time through the plan's step hook: one timer around each kernel call."""

    def __init__(self, session: NumpySession, max_traced_runs: int) -> None:
        self.session = session
        steps = session.plan.steps
        self.index = {id(s): i for i, s in enumerate(steps)}
        self.ops = [
            OpInfo(s.node.name or f"{s.node.op_type}_{i}", s.node.op_type)
            for i, s in enumerate(steps)
        ]
        self.totals = [0.0] * len(steps)
        self.calls = [0] * len(steps)
        self.spans: list[tuple[int, int, float, float]] = []
        self.max_traced_runs = max_traced_runs
        self.runs = 0
        self.start = 0.0

    def run(self, feeds: Mapping[str, np.ndarray], record: bool = True) -> None:
        if not record:
            self.session.plan.run(c_order(feeds))
            return
        self.start = perf_counter()
        self.session.plan.run(c_order(feeds), hook=self._hook)
        self.runs += 1

    def _hook(self, step: Step, seconds: float, results: tuple) -> None:
        end = perf_counter()
        i = self.index[id(step)]
        self.totals[i] += seconds
        self.calls[i] += 1
        if self.runs < self.max_traced_runs:
            self.spans.append((self.runs, i, end - seconds - self.start, seconds))

    def finish(self) -> OpRecord:
        return OpRecord(self.ops, self.totals, self.calls, self.spans)


def _owned(value: Any) -> Any:
    """Outputs the caller may write to, as onnxruntime's are: never a read-only view of the
    model's mapped weights or of a broadcast."""
    if isinstance(value, np.ndarray) and not value.flags.writeable:
        return value.copy()
    return value


def set_blas_threads(threads: int) -> bool:
    """Limit BLAS to ``threads`` through threadpoolctl; False where it is not installed."""
    if threadpoolctl is None:
        return False
    _blas_controller().limit(limits=threads)
    return True


@functools.cache
def _blas_controller() -> Any:
    """One threadpoolctl controller a process: making one scans the loaded libraries
    (1.4 ms, where setting the limit takes 0.04), and numpy's BLAS is loaded by then."""
    return threadpoolctl.ThreadpoolController()  # type: ignore[union-attr]
