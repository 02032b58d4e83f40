"""README's two commands are what CI runs and what a newcomer types."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    return re.findall(r"```sh\n(.+?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_gives_exactly_two_commands() -> None:
    commands = _commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)


def test_ci_runs_the_readme_test_command() -> None:
    assert _commands()[1] in (ROOT / ".ci" / "run").read_text()
