"""The device side installs with no extras and works: devices, inspect, doctor, light import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with ``pip install <repo>`` and no extras (so no onnx, no onnxruntime)."""
    folder = tmp_path_factory.mktemp("bare") / "venv"
    venv.create(folder, with_pip=True)
    python = folder / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        check=True,
        timeout=900,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    return folder


def _run(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [folder / "bin" / "edgerun", *args], capture_output=True, text=True, timeout=300, cwd=folder
    )


def test_no_heavy_packages_are_installed(bare_venv: Path) -> None:
    heavy = ("onnx", "onnxruntime", "torch")
    code = f"import importlib.util as u; print([m for m in {heavy!r} if u.find_spec(m)])"
    out = subprocess.run(
        [bare_venv / "bin" / "python", "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "args", [["--help"], ["devices"], ["devices", "rpi4", "--json"], ["doctor", "--json"]]
)
def test_commands_work_without_extras(bare_venv: Path, args: list[str]) -> None:
    result = _run(bare_venv, *args)
    assert result.returncode == 0, result.stderr


def test_inspect_works_without_onnx(bare_venv: Path, tiny_cnn_path: Path) -> None:
    result = _run(bare_venv, "inspect", str(tiny_cnn_path), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["op_histogram"]["Conv"] == 2


def test_profiles_ship_inside_the_wheel(bare_venv: Path) -> None:
    code = "import edgerun.profiles as p; print(p.profile_dir())"
    out = subprocess.run(
        [bare_venv / "bin" / "python", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    assert str(bare_venv) in out.stdout
    assert sys.prefix != str(bare_venv)
