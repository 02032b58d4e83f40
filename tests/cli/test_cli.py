"""The CLI as users meet it: help with examples, --json, one-line errors with status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgerun.cli import app, main

COMMANDS = sorted(c.name or c.callback.__name__ for c in app.registered_commands)


def edgerun(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from edgerun.cli import main; sys.exit(main())", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_verbs_of_the_design_are_there() -> None:
    assert {"run", "profile", "devices", "inspect", "doctor"} <= set(COMMANDS)


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_every_command_has_help_with_an_example(
    command: str, capsys: pytest.CaptureFixture
) -> None:
    args = [command, "--help"] if command else ["--help"]
    assert main(args) == 0
    assert "Example:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["inspect", "missing.onnx"], "no such file"),
        (["devices", "no-such-board"], "unknown device 'no-such-board'"),
        (["devices", "missing.toml"], "no such device profile file"),
    ],
)
def test_user_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = edgerun(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_debug_shows_the_traceback() -> None:
    result = edgerun("--debug", "inspect", "missing.onnx")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_corrupt_model_is_a_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07\x12\xff")
    result = edgerun("inspect", str(bad))
    assert result.returncode == 2 and str(bad) in result.stderr


def test_usage_errors_exit_2() -> None:
    assert edgerun("inspect").returncode == 2


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", "{tiny_cnn}", "--json"],
        ["devices", "--json"],
        ["devices", "rpi4", "--json"],
        ["doctor", "--json"],
    ],
)
def test_json_is_one_document_on_stdout(args: list[str], tiny_cnn_path: Path) -> None:
    result = edgerun(*(a.format(tiny_cnn=tiny_cnn_path) for a in args))
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)


def test_inspect_shows_the_model(tiny_cnn_path: Path) -> None:
    result = edgerun("inspect", str(tiny_cnn_path))
    assert result.returncode == 0
    for text in ("image", "[batch, 3, 32, 32]", "Conv", "MACs"):
        assert text in result.stdout
