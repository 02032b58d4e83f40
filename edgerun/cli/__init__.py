"""The ``edgerun`` command: a thin driver over the library (STYLE.md rule 7).

Each verb lives in its own module: parse, one library call, render. Library errors
(``EdgerunError``) become one line on stderr and exit status 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import sys

import typer

from edgerun.errors import EdgerunError

app = typer.Typer(
    name="edgerun",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    """Pack trained models for edge boards, run them, and measure them there.

    Example:  edgerun devices rpi4
    """


def _register() -> None:
    from edgerun.cli import devices, doctor, estimate, inspect, pack, profile, run, verify

    for module in (pack, run, profile, estimate, verify, devices, inspect, doctor):
        module.register(app)


_register()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # standalone mode: typer itself prints usage errors (exit 2) and help (exit 0)
        app(args=args, prog_name="edgerun")
    except EdgerunError as exc:
        if "--debug" in args:
            raise
        print(f"edgerun: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
