"""Shared by the backend tests: device profiles with a chosen backend order, built on disk."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from edgerun.profiles import profile_dir


@pytest.fixture
def board(tmp_path: Path) -> Callable[..., str]:
    """A profile like rpi4's asking for ``backends`` in order; returns its TOML path."""

    def make(backends: list[str], delegates: dict[str, str] | None = None) -> str:
        text = (profile_dir() / "rpi4.toml").read_text()
        text = re.sub(r'(?m)^name = "rpi4"$', 'name = "test-board"', text)
        listed = ", ".join(f'"{b}"' for b in backends)
        text = re.sub(r"(?m)^backends = \[.*\]$", f"backends = [{listed}]", text)
        if delegates:
            text += "\n[deploy.delegates]\n" + "".join(
                f'{k} = "{v}"\n' for k, v in delegates.items()
            )
        path = tmp_path / "test-board.toml"
        path.write_text(text)
        return str(path)

    return make
