"""How much memory one tensor may take, checked before it is allocated.

Sizes are Python integers (never an int64 product that can wrap). The budget is the device
profile's RAM where a caller sets one (``limited``), else half of this machine's RAM: a
tensor bigger than that cannot be meant, and asking numpy for it would at best fail late
and at worst wake the OOM killer.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from edgerun.errors import ResourceLimitError

MACHINE_SHARE = 0.5
_FALLBACK_BYTES = 1 << 30  # where neither sysconf nor psutil can tell the RAM size
_limit: contextvars.ContextVar[int | None] = contextvars.ContextVar("edgerun_budget", default=None)
_machine: list[int] = []


def limit() -> int:
    """The current budget in bytes for one tensor."""
    chosen = _limit.get()
    return chosen if chosen is not None else machine_budget()


def machine_budget() -> int:
    """A share of the memory this process may use: RAM, a cgroup's limit, RLIMIT_AS."""
    if not _machine:
        _machine.append(int(min(_memory_limits()) * MACHINE_SHARE))
    return _machine[0]


def _memory_limits() -> list[int]:
    return [_ram_bytes(), *_process_limits()]


def _ram_bytes() -> int:
    # sysconf where POSIX has it: importing psutil took 20 ms of a cold process's first load
    with contextlib.suppress(AttributeError, ValueError, OSError):
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        if pages > 0 and size > 0:
            return pages * size
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # no psutil, or no /proc: a conservative guess
        return _FALLBACK_BYTES


def _process_limits() -> list[int]:
    limits = []
    with contextlib.suppress(OSError, ValueError):
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()  # a container's limit
        if text.isdigit():
            limits.append(int(text))
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
        if soft > 0 and soft != resource.RLIM_INFINITY:
            limits.append(soft)
    return limits


@contextlib.contextmanager
def limited(nbytes: int) -> Iterator[None]:
    """Within the block (this thread or task only), tensors may take at most ``nbytes``."""
    token = _limit.set(min(nbytes, limit()))
    try:
        yield
    finally:
        _limit.reset(token)


def tensor_bytes(shape: Iterable[int], dtype: np.dtype | type | str) -> int:
    """Bytes a dense tensor of ``shape`` needs, exactly, as a Python integer."""
    itemsize = np.dtype(dtype).itemsize if np.dtype(dtype).kind != "O" else 8
    return math.prod(int(d) for d in shape) * max(itemsize, 1)


def human(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{nbytes} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def check(shape: Iterable[int], dtype: np.dtype | type | str, what: str) -> None:
    """Refuse a tensor of ``shape`` before it exists, naming ``what`` and the size."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise ResourceLimitError(f"{what}: negative dimension in shape {dims}")
    nbytes = tensor_bytes(dims, dtype)
    if nbytes > limit():  # the message only then: naming the dtype cost more than the check
        check_bytes(nbytes, f"{what} of shape {dims} ({np.dtype(dtype)})")


def check_bytes(nbytes: int, what: str) -> None:
    budget = limit()
    if nbytes > budget:
        raise ResourceLimitError(
            f"{what} would take {human(nbytes)}, over the memory budget of {human(budget)}"
        )
