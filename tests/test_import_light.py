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


def test_loading_and_running_a_model_imports_no_psutil(tmp_path) -> None:
    # the memory budget reads the RAM size through sysconf: importing psutil was 14 ms of
    # a cold process's first load
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    path = tmp_path / "relu.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    code = (
        "import sys, numpy as np, edgerun\n"
        f"s = edgerun.load({str(path)!r}, backend='numpy')\n"
        "s.run({'x': np.ones(2, np.float32)})\n"
        "print('psutil' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
