"""The numpy backend: ``threads=`` is the BLAS thread count, on every load."""

from __future__ import annotations

from pathlib import Path

import pytest

import edgerun

threadpoolctl = pytest.importorskip("threadpoolctl")


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


def test_threads_set_blas_threads_on_each_load(tiny_cnn_path: Path) -> None:
    start = _blas_threads()
    if not start:
        pytest.skip("numpy's BLAS is not one threadpoolctl knows")
    try:
        # the controller is made once a process; later loads still set their own count
        for threads in (1, 2, 1):
            edgerun.load(tiny_cnn_path, backend="numpy", threads=threads)
            assert _blas_threads() == [min(threads, n) for n in start]
    finally:
        threadpoolctl.threadpool_limits(limits=max(start), user_api="blas")
