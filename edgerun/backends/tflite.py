"""LiteRT (TFLite) as a backend: ``ai_edge_litert.interpreter``, else ``tflite_runtime``.

Delegates come from the profile in order, the first that loads and takes part of the graph
wins: "xnnpack" is built into the interpreter (its default delegate, with the thread count);
the others (edgetpu, vx, qnn, hexagon, gpu) are shared libraries loaded with
``load_delegate``, from the profile's ``[deploy.delegates]`` or the usual library name. A
delegate that cannot load or takes no op is a miss. The Python interpreter has no per-op
profiler, so profiling on TFLite is whole-model.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from edgerun import _lazy
from edgerun.errors import BackendUnavailableError, MissingDependencyError
from edgerun.specs import Quantization, TensorSpec

if TYPE_CHECKING:
    from edgerun.backends.select import ModelSource

# delegate -> the shared library that usually provides it (a profile may name another)
DELEGATE_LIBRARIES = {
    "edgetpu": "libedgetpu.so.1",
    "vx": "libvx_delegate.so",
    "qnn": "libQnnTFLiteDelegate.so",
    "hexagon": "libhexagon_delegate.so",
    "gpu": "libtensorflowlite_gpu_delegate.so",
}
# reached only through Android's own APIs, never from a Python interpreter
NOT_LOADABLE = {"nnapi": "NNAPI is reached through Android's Java/C API, not from Python"}


def interpreter_module() -> Any:
    """LiteRT's interpreter, else tflite_runtime's; missing both names the ``[tflite]`` extra."""
    try:
        return _lazy.require("ai_edge_litert.interpreter", "tflite")
    except MissingDependencyError:
        pass
    try:
        return _lazy.require("tflite_runtime.interpreter", "tflite")
    except MissingDependencyError:
        raise MissingDependencyError(
            "neither ai_edge_litert nor tflite_runtime is installed; install one with: "
            "pip install 'edgerun[tflite]'"
        ) from None


class TfliteSession:
    def __init__(
        self,
        source: ModelSource,
        delegates: tuple[str, ...],
        threads: int | None,
        libraries: Mapping[str, str] | None = None,
    ) -> None:
        self.module = interpreter_module()
        self.source = source
        self.threads = threads
        self.placement: dict[str, int] | None = None
        self.misses: list[str] = []
        self.reason = ""
        self._model = None if source.bundle is None else bytes(source.bundle.model)
        libraries = {**DELEGATE_LIBRARIES, **(libraries or {})}
        for delegate in delegates or ("xnnpack",):
            why = self._try(delegate, libraries.get(delegate))
            if why is None:
                break
            self.misses.append(f"tflite:{delegate} ({why})")
        else:
            self._builtin()
        self.providers = [self.name.partition(":")[2]]
        details = self.interpreter
        self._inputs = details.get_input_details()
        self._outputs = details.get_output_details()
        self.inputs = [_spec(d) for d in self._inputs]
        self.outputs = [_spec(d) for d in self._outputs]
        self._shapes = {d["index"]: tuple(d["shape"]) for d in self._inputs}
        self._lock = threading.Lock()  # one interpreter's tensors: one run at a time

    def _try(self, delegate: str, library: str | None) -> str | None:
        """Start the interpreter on ``delegate``; None on success, else why not."""
        if delegate in NOT_LOADABLE:
            return NOT_LOADABLE[delegate]
        if delegate == "xnnpack":
            self._interpreter()
            if self._partitions() == 0:
                return "this interpreter applied no XNNPACK delegate to the model"
            self.name = "tflite:xnnpack"
            return None
        if library is None:
            return "no library known for it; name one in the profile's [deploy.delegates]"
        try:
            ctypes.CDLL(library)  # first: a failed load_delegate prints a stray traceback
            loaded = self.module.load_delegate(library)
        except (OSError, ValueError, RuntimeError) as exc:
            return f"cannot load {library}: {exc}"
        try:
            self._interpreter([loaded])
        except (BackendUnavailableError, RuntimeError) as exc:
            return f"{library} refused the model: {exc}"
        if self._partitions() == 0:
            return f"{library} took no op of the model"
        self.name = f"tflite:{delegate}"
        return None

    def _builtin(self) -> None:
        resolver = self.module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self._interpreter(resolver=resolver)
        self.name = "tflite:builtin"

    def _interpreter(self, delegates: list[Any] | None = None, resolver: Any = None) -> None:
        kwargs: dict[str, Any] = {"num_threads": self.threads, "experimental_delegates": delegates}
        if resolver is not None:
            kwargs["experimental_op_resolver_type"] = resolver
        if self._model is None:
            kwargs["model_path"] = str(self.source.path)
        else:  # the interpreter takes bytes only, so a bundle's model is copied once
            kwargs["model_content"] = self._model
        try:
            self.interpreter = self.module.Interpreter(**kwargs)
            self.interpreter.allocate_tensors()
        except ValueError as exc:
            raise BackendUnavailableError(
                f"LiteRT cannot load {self.source.path}: {str(exc).strip()}"
            ) from exc

    def _partitions(self) -> int:
        """Delegate nodes in the execution plan (-1 where the interpreter will not say)."""
        try:
            ops = self.interpreter._get_ops_details()
        except AttributeError:
            return -1
        return sum(op.get("op_name") == "DELEGATE" for op in ops)

    def describe(self) -> str:
        parts = self._partitions()
        if self.name == "tflite:builtin" or parts < 0:
            return ""
        return f"{self.name.partition(':')[2]} delegate took {parts} partition(s) of the graph"

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
        with self._lock:
            interpreter = self.interpreter
            resized = False
            for detail in self._inputs:
                value = feeds[detail["name"]]
                if value.shape != self._shapes[detail["index"]]:
                    interpreter.resize_tensor_input(detail["index"], value.shape, strict=True)
                    self._shapes[detail["index"]] = value.shape
                    resized = True
            if resized:
                interpreter.allocate_tensors()
            for detail in self._inputs:
                interpreter.set_tensor(detail["index"], feeds[detail["name"]])
            interpreter.invoke()
            return {d["name"]: interpreter.get_tensor(d["index"]) for d in self._outputs}

    def op_recorder(self, max_traced_runs: int) -> None:
        return None  # the Python interpreter offers no per-op profile


def _spec(detail: Mapping[str, Any]) -> TensorSpec:
    signature = detail.get("shape_signature", detail["shape"])
    shape = tuple(None if int(d) < 0 else int(d) for d in signature)
    params = detail.get("quantization_parameters") or {}
    scales = [float(s) for s in params.get("scales", [])]
    quant = None
    if scales:
        zeros = tuple(int(z) for z in params.get("zero_points", []))
        axis = int(params.get("quantized_dimension", 0)) if len(scales) > 1 else None
        quant = Quantization(tuple(scales), zeros, axis)
    return TensorSpec(detail["name"], shape, np.dtype(detail["dtype"]).name, quant)
