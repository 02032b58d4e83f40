"""Whole real-architecture models: edgerun's numpy runtime against onnxruntime (the oracle).

The models are torch definitions with random weights, exported by torch.onnx.export as a
user would; the reader is also checked against onnx.load on each of them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import edgerun
from edgerun.runtime.onnx_reader import read_onnx
from tests.onnx_compare import assert_model

torch = pytest.importorskip("torch", reason="needs the [torch] extra")
zoo = pytest.importorskip("converters.zoo")

MODELS = sorted(zoo.MODELS)


@pytest.fixture(scope="session")
def zoo_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("zoo")
    paths = {}
    for name in MODELS:
        paths[name] = folder / f"{name}.onnx"
        zoo.export(name, str(paths[name]))
    return paths


def _feeds(name: str, path: Path) -> dict[str, np.ndarray]:
    _, example = zoo.build(name, seed=1)
    names = [i.name for i in onnx.load(path, load_external_data=False).graph.input]
    return {n: t.numpy() for n, t in zip(names, example, strict=True)}


@pytest.mark.parametrize("name", MODELS)
def test_matches_onnxruntime(name: str, zoo_paths: dict[str, Path]) -> None:
    import onnxruntime as ort

    path = zoo_paths[name]
    feeds = _feeds(name, path)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = edgerun.load(path, backend="numpy").run(feeds)
    assert len(got) == len(expected)
    for ours, theirs in zip(got.values(), expected, strict=True):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_reader_matches_onnx_load(name: str, zoo_paths: dict[str, Path]) -> None:
    assert_model(read_onnx(zoo_paths[name]), onnx.load(zoo_paths[name]))


@pytest.mark.parametrize("name", MODELS)
def test_edgerun_run_from_the_command_line(name: str, zoo_paths: dict[str, Path]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edgerun.cli", "run", str(zoo_paths[name]), "-b", "numpy", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert '"backend": "numpy"' in result.stdout
