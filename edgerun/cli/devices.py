"""``edgerun devices``: the boards edgerun knows."""

from __future__ import annotations

from typing import Optional

import typer

from edgerun import profiles
from edgerun.cli.render import console, emit_json, table


def devices(
    name: Optional[str] = typer.Argument(None, help="A profile name, or a path to your own TOML."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """List the device profiles, or show one in full.

    Example:  edgerun devices rpi4 --json
    """
    if name is not None:
        _show(profiles.load_profile(name), as_json)
        return
    found = profiles.list_profiles()
    if as_json:
        emit_json([p.to_json() for p in found])
        return
    rows = [
        [
            p.name,
            p.cpu.arch,
            p.cpu.cores,
            f"{p.cpu.clock_ghz:g} GHz",
            _ram(p),
            f"{p.deploy.format} {p.deploy.quantization}",
            p.deploy.backends[0],
        ]
        for p in found
    ]
    columns = ["name", "arch", "cores", "clock", "RAM", "deploys as", "prefers"]
    console().print(table(None, columns, rows))


def _ram(p: profiles.DeviceProfile) -> str:
    return f"{p.memory.ram_mb / 1024:g} GB"


def _show(p: profiles.DeviceProfile, as_json: bool) -> None:
    if as_json:
        emit_json(p.to_json())
        return
    out = console()
    out.print(f"{p.name}: {p.title} ({p.vendor})")
    for section in ("cpu", "memory", "deploy", "perf"):
        rows = [[k, _value(v)] for k, v in p.raw[section].items()]
        out.print(table(section, ["key", "value"], rows))
    for acc in p.raw.get("accelerators", []):
        out.print(table("accelerator", ["key", "value"], [[k, _value(v)] for k, v in acc.items()]))
    out.print("sources: " + ", ".join(p.sources))


def _value(v: object) -> str:
    if isinstance(v, list):
        return ", ".join(map(str, v))
    if isinstance(v, dict):
        return ", ".join(f"{k}={x}" for k, x in v.items())
    return str(v)


def register(app: typer.Typer) -> None:
    app.command("devices")(devices)
