"""edgerun: pack trained models for edge boards and run them with a numpy-only runtime.

``import edgerun`` stays light (numpy only): readers, backends and converters load on use.
"""

from __future__ import annotations

from edgerun.api import Session, load
from edgerun.errors import (
    BundleError,
    EdgerunError,
    InputError,
    MissingDependencyError,
    ModelFormatError,
    ProfileError,
    UnsafePathError,
    UnsupportedOpError,
)
from edgerun.specs import Quantization, TensorSpec

__all__ = [
    "BundleError",
    "EdgerunError",
    "InputError",
    "MissingDependencyError",
    "ModelFormatError",
    "ProfileError",
    "Quantization",
    "Session",
    "TensorSpec",
    "UnsafePathError",
    "UnsupportedOpError",
    "__version__",
    "load",
]

__version__ = "0.1.0"
