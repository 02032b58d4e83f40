"""edgerun's numpy runtime as an ``onnx.backend`` Backend, for onnx's own node test suite.

onnx's test data holds ml_dtypes arrays for types numpy lacks; so does edgerun's runtime
wherever ml_dtypes is installed (it is, beside onnx), so values cross unchanged.
"""

from __future__ import annotations

from typing import Any

import onnx
from onnx.backend.base import Backend, BackendRep

from edgerun.runtime.onnx_reader import parse_model
from edgerun.runtime.plan import Plan


class EdgerunRep(BackendRep):
    def __init__(self, model: onnx.ModelProto) -> None:
        ours = parse_model(memoryview(model.SerializeToString()), None, model.graph.name)
        self.plan = Plan(ours.graph, ours.opset_imports, functions=ours.functions)
        self.inputs = [v.name for v in ours.graph.real_inputs]

    def run(self, inputs: Any, **kwargs: Any) -> list[Any]:
        if isinstance(inputs, dict):
            return self.plan.run(inputs)
        return self.plan.run(dict(zip(self.inputs, inputs, strict=False)))


class EdgerunBackend(Backend):
    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> EdgerunRep:
        return EdgerunRep(model)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"
