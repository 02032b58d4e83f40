"""Models built in code, once per session; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from converters import examples


@pytest.fixture(scope="session")
def example_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every built-in example model, saved as .onnx."""
    folder = tmp_path_factory.mktemp("examples")
    paths = {}
    for name, build in examples.EXAMPLES.items():
        path = folder / f"{name}.onnx"
        path.write_bytes(build().SerializeToString())
        paths[name] = path
    return paths


@pytest.fixture(scope="session")
def tiny_cnn_path(example_paths: dict[str, Path]) -> Path:
    return example_paths["tiny-cnn"]
