"""``edgerun profile`` as users meet it: one JSON document, and files on request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgerun.cli import app

pytestmark = pytest.mark.skipif(
    "profile" not in {c.name for c in app.registered_commands},
    reason="profile is not registered in edgerun.cli._register yet",
)


def edgerun(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgerun.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_json_is_one_document(tiny_cnn_path: Path) -> None:
    result = edgerun("profile", str(tiny_cnn_path), "--json", "--runs", "3", "--warmup", "1")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["latency"]["runs"] == 3 and data["ops"]


def test_table_csv_trace_and_device(tiny_cnn_path: Path, tmp_path: Path) -> None:
    csv_file, trace = tmp_path / "ops.csv", tmp_path / "trace.json"
    result = edgerun(
        "profile", str(tiny_cnn_path), "--runs", "2", "--warmup", "0",
        "--device", "rpi-zero-2w", "--csv", str(csv_file), "--trace", str(trace),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "rpi-zero-2w" in result.stdout and "fits" in result.stdout
    assert csv_file.read_text().startswith("index,name,op_type")
    assert "traceEvents" in json.loads(trace.read_text())


def test_bad_shape_is_a_user_error(tiny_cnn_path: Path) -> None:
    result = edgerun("profile", str(tiny_cnn_path), "--shape", "image=1xq")
    assert result.returncode == 2 and "bad shape" in result.stderr


def test_profile_on_onnxruntime_says_what_ran(tiny_cnn_path: Path) -> None:
    result = edgerun(
        "profile", str(tiny_cnn_path), "--backend", "onnxruntime", "--runs", "3", "--warmup", "1"
    )
    assert result.returncode == 0, result.stderr
    assert "backend: onnxruntime:CPUExecutionProvider" in result.stdout
    assert "why: requested backend='onnxruntime'" in result.stdout
    assert "ops by time" in result.stdout and "Conv" in result.stdout


def test_a_failing_gate_exits_1_and_names_itself(tiny_cnn_path: Path) -> None:
    result = edgerun(
        "profile", str(tiny_cnn_path), "--backend", "numpy", "--runs", "2", "--warmup", "0",
        "--json", "--fail-if", "p99>0.0001us", "--fail-if", "peak_rss>1000GB",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "gate failed: p99>0.0001us (p99 = " in result.stderr
    assert "peak_rss" not in result.stderr  # the passing gate is not named
    gates = json.loads(result.stdout)["gates"]
    assert [(g["gate"], g["passed"]) for g in gates] == [
        ("p99>0.0001us", False), ("peak_rss>1000GB", True)
    ]  # fmt: skip


def test_passing_gates_exit_0_and_show_in_the_table(tiny_cnn_path: Path) -> None:
    result = edgerun(
        "profile", str(tiny_cnn_path), "--backend", "numpy", "--runs", "2", "--warmup", "0",
        "--device", "rpi4", "--fail-if", "ram_share>=100%", "--fail-if", "p99>10s",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "gates" in result.stdout and "ram_share = " in result.stdout
    assert "FAIL" not in result.stdout and result.stderr == ""


def test_a_malformed_gate_is_a_user_error(tiny_cnn_path: Path) -> None:
    result = edgerun("profile", str(tiny_cnn_path), "--fail-if", "p99 > fast")
    assert result.returncode == 2 and "bad gate 'p99 > fast'" in result.stderr
