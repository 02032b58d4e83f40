"""Conformance: onnx's own backend node test suite, run by onnx's own runner.

Every case is collected; the ones edgerun does not pass yet are listed in
``conformance_xfail.py`` with their reason, so a fixed case surfaces as an unexpected pass.
"""

from __future__ import annotations

import warnings

import onnx.backend.test

from tests.runtime.conformance_xfail import SKIP, XFAIL
from tests.runtime.onnx_backend import EdgerunBackend

warnings.filterwarnings("ignore", category=RuntimeWarning)

_runner = onnx.backend.test.BackendTest(EdgerunBackend, __name__)
for _name in XFAIL:
    _runner.xfail(f"^{_name}_cpu$")
for _name in SKIP:
    _runner.exclude(f"^{_name}_cpu$")

# Only the node suite: the 'real' model cases download weights, which nothing here may do.
OnnxBackendNodeModelTest = _runner.test_cases["OnnxBackendNodeModelTest"]
