"""Distillation: a student a quarter of the digits CNN's size learns from it."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from converters import digits
from converters.distill import DistillOptions, distill
from edgerun.errors import InputError


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
