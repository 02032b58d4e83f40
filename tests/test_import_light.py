"""``import edgerun`` must stay light: a board may have nothing but numpy."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = [
    "torch",
    "tensorflow",
    "onnxruntime",
    "onnx",
    "ai_edge_litert",
    "tflite_runtime",
    "converters",
]


def test_import_edgerun_pulls_nothing_heavy() -> None:
    code = (
        "import sys, json, edgerun, edgerun.inspection, edgerun.profiles, edgerun.bundle, "
        "edgerun.modelfile, edgerun.doctor; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
