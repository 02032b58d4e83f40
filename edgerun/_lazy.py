"""The one door to optional packages (STYLE.md rule 4).

The device side must import with nothing but numpy, so heavy packages are imported here,
on first use, and a missing one names the extra that installs it.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from edgerun.errors import MissingDependencyError

# module -> the pip extra that provides it
EXTRAS: dict[str, str] = {
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "ai_edge_litert": "tflite",
    "tflite_runtime": "tflite",
    "torch": "torch",
    "tensorflow": "tensorflow",
    "tf2onnx": "tensorflow",
    "onnxslim": "pack",
    "sklearn": "examples",
}


def require(module: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise an error that says which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        name = extra or EXTRAS.get(top, top)
        raise MissingDependencyError(
            f"{module} is not installed; install it with: pip install 'edgerun[{name}]'"
        ) from exc


def available(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
