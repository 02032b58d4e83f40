"""Descriptions of a model's inputs and outputs, shared by every backend and the bundle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

Dim = int | str | None  # a fixed size, a symbolic name, or unknown


@dataclass(frozen=True)
class Quantization:
    """Affine quantization: real = scale * (q - zero_point), per tensor or along ``axis``."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"scale": list(self.scale), "zero_point": list(self.zero_point), "axis": self.axis}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Quantization:
        return cls(tuple(data["scale"]), tuple(data["zero_point"]), data.get("axis"))

    def _params(self, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        scale = np.asarray(self.scale, np.float32)
        zero = np.asarray(self.zero_point, np.float32)
        if self.axis is not None and scale.size > 1:
            shape = [1] * ndim
            shape[self.axis] = scale.size
            return scale.reshape(shape), zero.reshape(shape)
        return scale.reshape(()), zero.reshape(())

    def quantize(self, values: np.ndarray, dtype: str) -> np.ndarray:
        """Real values to integers of ``dtype``, rounded half to even and saturated."""
        scale, zero = self._params(np.ndim(values))
        info = np.iinfo(np.dtype(dtype))
        q = np.rint(np.asarray(values, np.float32) / scale) + zero
        return np.clip(q, info.min, info.max).astype(dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        scale, zero = self._params(np.ndim(q))
        return ((np.asarray(q, np.float32) - zero) * scale).astype(np.float32)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, shape (dims may be symbolic), dtype and quantization.

    ``dtype`` is the numpy name ("float32", "int8", ...) or, for element types numpy has no
    dtype for, the ONNX name ("bfloat16", "float8e4m3fn", "int4").
    """

    name: str
    shape: tuple[Dim, ...] | None
    dtype: str
    quantization: Quantization | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "shape": None if self.shape is None else list(self.shape),
            "dtype": self.dtype,
        }
        if self.quantization is not None:
            data["quantization"] = self.quantization.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorSpec:
        shape = data.get("shape")
        quant = data.get("quantization")
        return cls(
            name=data["name"],
            shape=None if shape is None else tuple(shape),
            dtype=data["dtype"],
            quantization=None if quant is None else Quantization.from_json(quant),
        )

    @property
    def quantized(self) -> bool:
        """An integer tensor that stands for real values (TFLite integer I/O)."""
        return self.quantization is not None and self.dtype in ("int8", "uint8", "int16")

    def from_real(self, values: np.ndarray) -> np.ndarray:
        """What to feed this input for real ``values``: quantized if the input is."""
        if self.quantized and np.asarray(values).dtype.kind == "f":
            return self.quantization.quantize(values, self.dtype)  # type: ignore[union-attr]
        return values

    def to_real(self, values: np.ndarray) -> np.ndarray:
        """This output's real values: dequantized if the output is quantized."""
        if self.quantized and np.asarray(values).dtype.kind in "iu":
            return self.quantization.dequantize(values)  # type: ignore[union-attr]
        return values

    def shape_text(self) -> str:
        if self.shape is None:
            return "?"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"
