"""glibc's allocator set for repeated inference: freed activations stay in the process.

A plan run allocates and frees the same large arrays every time. By default glibc hands
such blocks back to the kernel (blocks over its mmap threshold are unmapped, and free
memory at the top of the heap is trimmed), so the next run faults every page in again:
about 5,500 page faults per MiniLM run, 12 % of its time on this machine. Raising the mmap
threshold to glibc's maximum (32 MiB on 64-bit, 512 KiB on 32-bit) and the trim threshold
to 256 MiB keeps those blocks in the heap, as onnxruntime's arena keeps its buffers. Peak
RSS does not grow; RSS after a run stays near its peak instead of falling back.

This is process-wide, so it is done once, only on glibc, and ``EDGERUN_MALLOC=default``
in the environment leaves the allocator as it is.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
TRIM_BYTES = 256 << 20
MMAP_BYTES = (32 << 20, 512 << 10)  # glibc's maximum on 64-bit, then on 32-bit
OPT_OUT = "EDGERUN_MALLOC"

_done = False


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as above, once per process; True when it took effect."""
    global _done
    if _done:
        return False
    _done = True
    if os.environ.get(OPT_OUT, "").lower() == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 -- glibc only: musl's mallopt does nothing
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if not any(mallopt(M_MMAP_THRESHOLD, size) for size in MMAP_BYTES):
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))
