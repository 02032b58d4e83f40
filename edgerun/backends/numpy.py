"""The numpy runtime as a backend: a plan built once from the model, run per call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgerun import _lazy
from edgerun.modelfile import ModelFile
from edgerun.runtime.plan import Plan, StepHook


class NumpySession:
    name = "numpy"

    def __init__(self, model_file: ModelFile, threads: int | None = None, reason: str = "") -> None:
        model = model_file.model
        self.model = model
        self.reason = reason or "requested"
        self.inputs = model.inputs
        self.outputs = model.outputs
        self.threads = threads
        if threads is not None:
            set_blas_threads(threads)
        self.plan = Plan(model.graph, model.opset_imports, functions=model.functions)

    def run(self, feeds: Mapping[str, np.ndarray], hook: StepHook | None = None) -> dict[str, Any]:
        results = self.plan.run(feeds, hook=hook)
        return {name: _owned(r) for name, r in zip(self.plan.output_names, results, strict=True)}


def _owned(value: Any) -> Any:
    """Outputs the caller may write to, as onnxruntime's are: never a read-only view of the
    model's mapped weights or of a broadcast."""
    if isinstance(value, np.ndarray) and not value.flags.writeable:
        return value.copy()
    return value


def set_blas_threads(threads: int) -> bool:
    """Limit BLAS to ``threads`` through threadpoolctl; False where it is not installed."""
    if not _lazy.available("threadpoolctl"):
        return False
    _lazy.require("threadpoolctl").threadpool_limits(limits=threads)
    return True
