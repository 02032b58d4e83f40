"""Distillation: a student a quarter of the digits CNN's size learns from it."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from converters import digits
from converters.distill import DistillOptions, distill
from edgerun.errors import InputError
from tests.converters.optimise import nets


def _accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return 100.0 * float(np.mean(model(torch.from_numpy(x)).argmax(1).numpy() == y))


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    return digits.cnn(epochs=4)


def test_a_quarter_size_student_comes_within_three_points(teacher: torch.nn.Module) -> None:
    x, y, x_test, y_test = digits.digits_split()
    student = digits.student()
    report = distill(teacher, student, [x], y, DistillOptions(epochs=10))
    assert report["student_parameters"] <= report["teacher_parameters"] / 4
    assert report["losses"][-1] < report["losses"][0]
    assert _accuracy(student, x_test, y_test) >= _accuracy(teacher, x_test, y_test) - 3.0


def test_a_copy_of_the_teacher_has_nothing_to_learn() -> None:
    x, y, _, _ = digits.digits_split()
    teacher = digits.student()  # no BatchNorm: the same outputs in train and eval mode
    report = distill(
        teacher,
        copy.deepcopy(teacher),
        [x[:128]],
        y[:128],
        DistillOptions(alpha=1.0, epochs=1, learning_rate=1e-9),
    )
    assert report["losses"][0] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "kwargs", [{"temperature": 0}, {"alpha": 1.5}, {"epochs": -1}, {"learning_rate": 0}]
)
def test_bad_options(kwargs) -> None:
    with pytest.raises(InputError, match="distillation"):
        DistillOptions(**kwargs)


FACTORIES = """
import torch
from torch import nn


def teacher():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 3)).eval()
    model.example_inputs = (torch.zeros(1, 1, 8, 8),)
    return model


def student():
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
"""


def test_pack_distils_into_the_student(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgerun.bundle import read_manifest
    from edgerun.cli import main

    (tmp_path / "factories_for_distill.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "train.npz", input=x, label=x[:, 0, 0, :3].argmax(axis=1))
    out = tmp_path / "distilled.edgerun"
    args = ["pack", "factories_for_distill:teacher", "--device", "rpi4", "-q", "none"]
    extra = ["--student", "factories_for_distill:student", "--train", str(tmp_path / "train.npz")]
    assert main([*args, *extra, "-o", str(out)]) == 0
    manifest = read_manifest(out)
    report = manifest.applied["distillation"]
    assert report["student"] == "factories_for_distill:student"
    assert (report["teacher_parameters"], report["student_parameters"]) == (2179, 195)
    assert manifest.accuracy["backends"]["numpy"]["outputs"]  # checked against the teacher
    assert manifest.source["name"] == "factories_for_distill:teacher"


def test_student_needs_training_data_and_a_torch_teacher(tmp_path, capsys) -> None:
    from edgerun.cli import main

    source = tmp_path / "m.onnx"
    source.write_bytes(nets.cnn().SerializeToString())
    np.savez(tmp_path / "t.npz", x=np.zeros((4, 1, 8, 8), np.float32), label=np.zeros(4))
    base = ["pack", str(source), "--device", "rpi4", "--student", "converters.digits:student"]
    assert main(base) == 2
    assert "--student needs --train" in capsys.readouterr().err
    assert main([*base, "--train", str(tmp_path / "t.npz")]) == 2
    assert "--student distils PyTorch models; this one is onnx" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.edgerun"))
