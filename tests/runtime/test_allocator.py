"""keep_freed_memory: repeated runs reuse freed heap memory instead of faulting it in again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Allocates, touches and frees arrays of a few MiB in the pattern a plan run has, five
# times after a first round, and prints the page faults those five rounds took.
SCRIPT = """
import resource, sys
import numpy as np
from edgerun.runtime.allocator import keep_freed_memory
print(keep_freed_memory())
def run():
    a = np.ones(1 << 20, np.float32); b = np.ones(3 << 20, np.float32); del a
    c = np.ones(2 << 20, np.float32); del b, c
run()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    run()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

# A first run's pattern: 8 MiB of fresh 1 MiB arrays (numpy itself advises huge pages for
# arrays of 4 MiB and more, not for these), touched once; prints the page faults taken.
FIRST_TOUCH = """
import resource
import numpy as np
from edgerun.runtime.allocator import keep_freed_memory
print(keep_freed_memory())
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
arrays = [np.ones(1 << 18, np.float32) for _ in range(8)]
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")


def _faults(env_value: str | None, script: str = SCRIPT) -> tuple[bool, int]:
    env = {"PATH": "/usr/bin:/bin"}
    if env_value is not None:
        env["EDGERUN_MALLOC"] = env_value
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return out[0] == "True", int(out[1])


def _huge_pages_on_advice() -> bool:
    try:
        mode = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False
    return "[never]" not in mode and sys.maxsize > 2**32


def test_freed_arrays_are_reused_without_page_faults():
    took, faults = _faults(None)
    if not took:
        pytest.skip("not glibc")
    assert faults < 100  # glibc giving the 24 MiB back took ~7,600 faults here


def test_the_environment_can_leave_malloc_alone():
    took, faults = _faults("default")
    assert not took
    assert faults > 1000


def test_first_touches_map_huge_pages():
    if not _huge_pages_on_advice():
        pytest.skip("no transparent huge pages on this kernel (or a 32-bit one)")
    took, faults = _faults(None, FIRST_TOUCH)
    if not took:
        pytest.skip("not glibc")
    assert faults < 200  # 2,056 faults in 4 KiB pages here, 22 with the advice
    assert _faults("default", FIRST_TOUCH)[1] > 1000
