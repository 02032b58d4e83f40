"""Every kind of source pack takes, packed to a bundle that runs like the source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgerun
from converters.sources import load_source
from edgerun.bundle import read_manifest
from edgerun.cli import main
from edgerun.errors import ModelFormatError

torch = pytest.importorskip("torch")


class Small(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def small() -> torch.nn.Module:
    torch.manual_seed(0)
    model = Small().eval()
    with torch.no_grad():  # a BatchNorm with statistics of its own, so folding shows
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 1.5)
    return model


EXAMPLE = (torch.zeros(1, 1, 8, 8),)


def torchscript(folder: Path) -> Path:
    path = folder / "small.pt"
    torch.jit.trace(small(), EXAMPLE).save(str(path))
    return path


def exported_program(folder: Path) -> Path:
    path = folder / "small.pt2"
    torch.export.save(torch.export.export(small(), EXAMPLE), str(path))
    return path


def pickled(folder: Path) -> Path:
    path = folder / "pickled.pt"
    torch.save(small(), str(path))
    return path


def onnx_file(folder: Path) -> Path:
    path = folder / "small.onnx"
    torch.onnx.export(small(), EXAMPLE, str(path), input_names=["x"], dynamo=False)
    return path


SOURCES = {
    "torchscript": (torchscript, ["--input-shape", "x=1x1x8x8"]),
    "exported program": (exported_program, []),
    "pickle, trusted": (pickled, ["--trust-pickle", "--input-shape", "x=1x1x8x8"]),
    "onnx": (onnx_file, []),
}


@pytest.mark.parametrize("kind", SOURCES)
def test_source_packs_and_runs_like_the_source(kind: str, tmp_path: Path) -> None:
    build, extra = SOURCES[kind]
    source = build(tmp_path)
    out = tmp_path / "packed.edgerun"
    args = ["pack", str(source), "--device", "rpi4", "--quantize", "none", "-o", str(out)]
    assert main([*args, *extra]) == 0
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = small()(torch.from_numpy(x)).numpy()
    session = edgerun.load(out, backend="numpy")
    got = session.run({session.inputs[0].name: x})
    np.testing.assert_allclose(next(iter(got.values())), want, rtol=1e-4, atol=1e-5)
    manifest = read_manifest(out)
    assert manifest.source["framework"] in ("torch", "onnx") and manifest.source["sha256"]
    assert manifest.applied["folding"] is True  # no BatchNormalization left


def test_a_pickle_needs_trust(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="unpickling runs code"):
        load_source(str(pickled(tmp_path)))


def test_a_state_dict_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(small().state_dict(), str(path))
    with pytest.raises(ModelFormatError, match="not a model"):
        load_source(str(path), trust_pickle=True)


def test_a_folder_that_is_not_a_saved_model(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="not a TensorFlow SavedModel"):
        load_source(str(tmp_path))


def test_dynamic_batch_keeps_the_first_dim_free(tmp_path: Path) -> None:
    out = tmp_path / "dyn.edgerun"
    args = ["pack", str(onnx_file(tmp_path)), "--device", "rpi4", "--dynamic-batch", "-o", str(out)]
    assert main([*args, "--quantize", "none"]) == 0
    session = edgerun.load(out, backend="numpy")
    assert not isinstance(session.inputs[0].shape[0], int)
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = small()(torch.from_numpy(x)).numpy()
    got = next(iter(session.run({session.inputs[0].name: x}).values()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_calibration_from_a_folder_of_npy(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a host whose onnxruntime can judge the rpi4 recipe (an x86-64 one without VNNI
    # warns that it does not: tests/converters/test_recipe.py)
    monkeypatch.setattr("converters.recipe._host_x86_flags", lambda: None)
    folder = tmp_path / "calibration"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        np.save(folder / f"{i:03}.npy", rng.standard_normal((1, 1, 8, 8)).astype(np.float32))
    out = tmp_path / "int8.edgerun"
    args = ["pack", str(onnx_file(tmp_path)), "--device", "rpi4", "-o", str(out), "--json"]
    assert main([*args, "--calibration", str(folder)]) == 0
    import json

    summary = json.loads(capsys.readouterr().out)
    assert summary["applied"]["calibration_samples"] == 8  # two held out for the report
    assert summary["accuracy"]["samples"] == 2 and summary["warnings"] == []
