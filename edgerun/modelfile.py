"""Opens whatever a user points edgerun at: an ``.onnx`` file or an ``.edgerun`` bundle.

Weights stay in the file: the model is read through a memory map and its tensors are
views of it (the plan copies the misaligned ones it runs with: see plan._aligned).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgerun.errors import ModelFormatError
from edgerun.runtime.external import check_relative
from edgerun.runtime.graph import Model
from edgerun.runtime.onnx_reader import parse_model, read_onnx

if TYPE_CHECKING:
    from edgerun.bundle import Bundle, Manifest


@dataclass
class ModelFile:
    model: Model
    format: str  # "onnx" | "tflite"
    manifest: Manifest | None = None  # set for bundles
    bundle: Bundle | None = None


def model_path(path: str | os.PathLike[str]) -> Path:
    """The path, if it names something that could be a model file."""
    path = Path(path)
    if path.is_dir():
        raise ModelFormatError(f"{path}: is a folder, not a model file")
    if not path.exists():
        raise ModelFormatError(f"{path}: no such file")
    return path


def open_model(path: str | os.PathLike[str]) -> ModelFile:
    path = model_path(path)
    if path.suffix == ".edgerun":
        return _open_bundle(path)
    if path.suffix == ".tflite":
        from edgerun.runtime.tflite_reader import read_tflite

        return ModelFile(read_tflite(path), "tflite")
    return ModelFile(read_onnx(path), "onnx")


def _open_bundle(path: Path) -> ModelFile:
    from edgerun.bundle import open_bundle

    return bundle_model(open_bundle(path))


def bundle_model(bundle: Bundle) -> ModelFile:
    """The model in an already opened (and verified) bundle."""
    path = bundle.path
    manifest = bundle.manifest
    if manifest.model_format == "tflite":
        from edgerun.runtime.tflite_reader import parse_tflite

        what = f"{path}:{manifest.model.name}"
        return ModelFile(parse_tflite(bundle.model, what), "tflite", manifest, bundle)
    if manifest.model_format != "onnx":
        raise ModelFormatError(
            f"{path}: bundles of {manifest.model_format} models are not supported yet"
        )

    def member(location: str) -> memoryview:
        check_relative(location, str(path))
        return bundle.member(location)

    model = parse_model(bundle.model, member, what=f"{path}:{manifest.model.name}")
    return ModelFile(model, "onnx", manifest, bundle)
