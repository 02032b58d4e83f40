"""keep_freed_memory: repeated runs reuse freed heap memory instead of faulting it in again."""

from __future__ import annotations

import subprocess
import sys

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

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")


def _faults(env_value: str | None) -> tuple[bool, int]:
    env = {"PATH": "/usr/bin:/bin"}
    if env_value is not None:
        env["EDGERUN_MALLOC"] = env_value
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return out[0] == "True", int(out[1])


def test_freed_arrays_are_reused_without_page_faults():
    took, faults = _faults(None)
    if not took:
        pytest.skip("not glibc")
    assert faults < 100  # glibc giving the 24 MiB back took ~7,600 faults here


def test_the_environment_can_leave_malloc_alone():
    took, faults = _faults("default")
    assert not took
    assert faults > 1000
