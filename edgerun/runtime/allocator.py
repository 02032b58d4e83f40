"""glibc's allocator set for repeated inference: freed activations stay in the process.

A plan run allocates and frees the same large arrays every time. By default glibc hands
such blocks back to the kernel (blocks over its mmap threshold are unmapped, and free
memory at the top of the heap is trimmed), so the next run faults every page in again:
about 5,500 page faults per MiniLM run, 12 % of its time on this machine. Raising the mmap
threshold to glibc's maximum (32 MiB on 64-bit, 512 KiB on 32-bit) and the trim threshold
to 256 MiB keeps those blocks in the heap, as onnxruntime's arena keeps its buffers. Peak
RSS does not grow; RSS after a run stays near its peak instead of falling back.

The first run still touches every page of its activations once, and on a virtual machine
each first touch is a page fault of about 2.3 us (tiny_yolo's first run took 1,124 of
them). So the heap's next RESERVE_BYTES are also advised for transparent huge pages (a
64-bit kernel with THP in "madvise" or "always" mode): one fault maps 2 MiB. First-run
faults went 1,124 -> about 55 on tiny_yolo, 1,292 -> 47 on light_shufflenet and 8,805 ->
2,044 on int8 ResNet-18; medians over seven fresh processes of load plus first inference
went 17.2 -> 13.9 ms on tiny_yolo, 38.3 -> 35.4 on light_squeezenet, 53.6 -> 45.3 on
MobileNetV2 and 36.1 -> 32.3 on MobileNetV3-Small, with ResNet-18 (whose first run needs
more than the reserve) unchanged within this machine's noise. Peak RSS moved by at most
1 MiB either way (the extents a run touches are resident whole). Reserving 90 MiB was
slower on ResNet-18 in the one set of runs tried (first inference 55 -> 76 ms).

This is process-wide, so it is done once, only on glibc, and ``EDGERUN_MALLOC=default``
in the environment leaves the allocator as it is.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
TRIM_BYTES = 256 << 20
MMAP_BYTES = (32 << 20, 512 << 10)  # glibc's maximum on 64-bit, then on 32-bit
OPT_OUT = "EDGERUN_MALLOC"
MADV_HUGEPAGE = 14  # linux/mman.h, the same on every architecture
HUGE_PAGE_SIZE = "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size"  # absent: no THP
RESERVE_BYTES = 30 << 20  # under the 32 MiB mmap threshold: malloc takes it from the heap
_HEAD_SLACK = 64  # bytes short of the huge page boundary for malloc's chunk headers

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
    if not mallopt(M_TRIM_THRESHOLD, TRIM_BYTES):
        return False
    if ctypes.sizeof(ctypes.c_void_p) == 8:  # 32-bit glibc maps blocks over 512 KiB apart
        advise_huge_pages(libc)
    return True


def advise_huge_pages(libc: ctypes.CDLL) -> bool:
    """Advise the heap's next RESERVE_BYTES for transparent huge pages: allocated, advised
    and freed at once, the block returns to the top of the heap (never trimmed, as set
    above), where the arrays allocated next are carved from it. True when the kernel took
    the advice; a kernel without THP refuses it, and nothing changes."""
    try:  # 2 MiB with 4 KiB pages (x86-64, arm64); 32 MiB with a Pi 5's 16 KiB pages
        huge = int(Path(HUGE_PAGE_SIZE).read_text())
    except (OSError, ValueError):
        return False
    if not 0 < huge <= RESERVE_BYTES // 2:
        return False
    malloc, free, madvise = libc.malloc, libc.free, libc.madvise
    malloc.argtypes, malloc.restype = (ctypes.c_size_t,), ctypes.c_void_p
    free.argtypes, free.restype = (ctypes.c_void_p,), None
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    madvise.restype = ctypes.c_int
    block = malloc(RESERVE_BYTES)
    if not block:
        return False
    start = -(-block // huge) * huge  # whole huge pages inside the block
    end = (block + RESERVE_BYTES) // huge * huge
    advised = end > start and madvise(start, end - start, MADV_HUGEPAGE) == 0
    free(block)
    if advised and start - block > _HEAD_SLACK:
        # the block's head, below its first huge page, is held (never touched: no memory)
        # so that the arrays allocated next begin on a huge page rather than fault up to
        # 2 MiB in 4 KiB pages first; let go again if malloc placed it elsewhere
        head = malloc(start - block - _HEAD_SLACK)
        if head != block:
            free(head)
    return advised
