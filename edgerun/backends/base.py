"""What every backend provides to a Session."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from edgerun.specs import TensorSpec


class BackendSession(Protocol):
    name: str  # what actually runs it, e.g. "numpy" or "onnxruntime:CPUExecutionProvider"
    reason: str  # why this backend was chosen
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Run on feeds that Session has already checked."""
        ...
