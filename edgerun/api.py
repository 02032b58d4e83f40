"""``edgerun.load`` and ``Session``: the Python API of DESIGN.md."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from edgerun.errors import EdgerunError
from edgerun.feeds import check_feeds
from edgerun.modelfile import open_model
from edgerun.specs import TensorSpec

BACKENDS = ("auto", "numpy", "onnxruntime", "tflite")


class Session:
    """A loaded model, ready to run; ``run`` may be called from several threads at once."""

    def __init__(self, backend_session: Any) -> None:
        self._impl = backend_session
        self.inputs: list[TensorSpec] = list(backend_session.inputs)
        self.outputs: list[TensorSpec] = list(backend_session.outputs)

    @property
    def backend(self) -> str:
        return self._impl.name

    @property
    def backend_reason(self) -> str:
        return self._impl.reason

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return self._impl.run(check_feeds(self.inputs, feeds))

    def __repr__(self) -> str:
        return f"Session(backend={self.backend!r}, inputs={[s.name for s in self.inputs]})"


def load(
    path: str | os.PathLike[str],
    backend: str = "auto",
    device: str | None = None,
    threads: int | None = None,
) -> Session:
    """Load a bundle, an .onnx or a .tflite file for running.

    ``device`` names a profile ("rpi4") or a TOML path; its default thread count applies
    when ``threads`` is None.
    """
    if backend not in BACKENDS:
        raise EdgerunError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if threads is None and device is not None:
        from edgerun.profiles import load_profile

        threads = load_profile(device).deploy.threads
    model_file = open_model(path)
    if backend in ("onnxruntime", "tflite"):
        raise EdgerunError(
            f"the {backend} backend is not available in this edgerun yet; use backend='numpy'"
        )
    from edgerun.backends.numpy import NumpySession

    reason = "requested" if backend == "numpy" else "auto: the numpy runtime runs everywhere"
    return Session(NumpySession(model_file, threads, reason))
