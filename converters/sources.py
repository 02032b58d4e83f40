"""What the user points ``pack`` at, recognised and loaded: a file, a folder or a factory.

Loading never runs code the user did not ask for: a ``package.module:factory`` spec is an
explicit request to import and call it; a pickled ``.pt`` runs code when unpickled, so it
loads only with ``trust_pickle``.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgerun import _lazy
from edgerun.errors import ConversionError, ModelFormatError

FRAMEWORKS = ("torch", "tensorflow", "onnx", "tflite")
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_SUFFIXES = {
    ".onnx": "onnx",
    ".tflite": "tflite",
    ".keras": "tensorflow",
    ".h5": "tensorflow",
    ".pt": "torch",
    ".pth": "torch",
    ".pt2": "torch",
}


@dataclass
class Source:
    framework: str  # one of FRAMEWORKS
    model: Any  # nn.Module / ExportedProgram / ScriptModule, a TF model, onnx.ModelProto, bytes
    name: str  # the stem of the bundle's file name
    sha256: str | None  # of the file, when the source is one
    example_inputs: tuple | None = None  # torch: what the model was built to take


def load_source(spec: str, trust_pickle: bool = False) -> Source:
    """Recognise ``spec`` by what it is on disk (or its ``module:factory`` form) and load it."""
    path = Path(spec)
    if not path.exists() and _FACTORY.match(spec):
        return _factory(spec)
    if not path.exists():
        raise ModelFormatError(f"{spec}: no such file or folder")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return _tensorflow(path)
        raise ModelFormatError(f"{path}: a folder, but not a TensorFlow SavedModel")
    framework = _SUFFIXES.get(path.suffix.lower())
    if framework is None:
        known = ", ".join(sorted(_SUFFIXES))
        raise ModelFormatError(
            f"{path}: unknown model format {path.suffix or '(no suffix)'!r}; pack takes {known}, "
            "a SavedModel folder or a package.module:factory spec"
        )
    if framework == "onnx":
        return _onnx(path)
    if framework == "tflite":
        return Source("tflite", path.read_bytes(), path.stem, _sha256(path))
    if framework == "tensorflow":
        return _tensorflow(path)
    return _torch_file(path, trust_pickle)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _factory(spec: str) -> Source:
    module_name, attr = spec.split(":")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # a factory in the current folder, as `python -m` finds it
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelFormatError(f"{spec}: cannot import {module_name}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelFormatError(f"{spec}: {module_name} has no callable {attr!r}")
    try:
        model = factory()
    except Exception as exc:  # the user's code: any failure is theirs to read
        raise ConversionError(f"{spec}: the factory raised {type(exc).__name__}: {exc}") from exc
    framework = _framework_of(model, spec)
    example = getattr(model, "example_inputs", None)
    return Source(framework, model, attr, None, tuple(example) if example is not None else None)


def _framework_of(model: Any, spec: str) -> str:
    kind = type(model).__module__.split(".")[0]
    if kind == "torch" or _is_torch_module(model):
        return "torch"
    if kind in ("keras", "tensorflow", "tf_keras"):
        return "tensorflow"
    raise ConversionError(
        f"{spec}: the factory returned a {type(model).__name__}; pack takes a torch.nn.Module "
        "or a Keras model"
    )


def _is_torch_module(model: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def _onnx(path: Path) -> Source:
    onnx = _lazy.require("onnx")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, ValueError, OSError, ...
        raise ModelFormatError(f"{path}: not a readable ONNX model: {exc}") from exc
    return Source("onnx", model, path.stem, _sha256(path))


def _tensorflow(path: Path) -> Source:
    from converters.tensorflow_frontend import load_tensorflow

    return Source("tensorflow", load_tensorflow(path), path.stem, _sha256_tree(path))


def _sha256_tree(path: Path) -> str:
    if path.is_file():
        return _sha256(path)
    digest = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        digest.update(str(p.relative_to(path)).encode() + b"\0" + _sha256(p).encode())
    return digest.hexdigest()


def _torch_file(path: Path, trust_pickle: bool) -> Source:
    torch = _lazy.require("torch")
    if path.suffix == ".pt2":
        try:
            program = torch.export.load(str(path))
        except Exception as exc:
            raise ModelFormatError(f"{path}: not a readable ExportedProgram: {exc}") from exc
        example = program.example_inputs[0] if program.example_inputs else None
        return Source("torch", program, path.stem, _sha256(path), example)
    try:
        return Source("torch", torch.jit.load(str(path)), path.stem, _sha256(path))
    except RuntimeError:
        pass  # not TorchScript: a pickle
    if not trust_pickle:
        raise ModelFormatError(
            f"{path}: not TorchScript but a pickle, and unpickling runs code from the file; "
            "pass --trust-pickle if you trust its author, or give a package.module:factory"
        )
    try:
        model = torch.load(str(path), weights_only=False)
    except Exception as exc:
        raise ModelFormatError(f"{path}: not a readable PyTorch file: {exc}") from exc
    if not isinstance(model, torch.nn.Module):
        raise ModelFormatError(
            f"{path}: holds a {type(model).__name__} (a state dict?), not a model; "
            "give a package.module:factory that builds the model and loads it"
        )
    example = getattr(model, "example_inputs", None)
    return Source("torch", model, path.stem, _sha256(path), example)
