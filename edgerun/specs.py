"""Descriptions of a model's inputs and outputs, shared by every backend and the bundle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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

    def shape_text(self) -> str:
        if self.shape is None:
            return "?"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"
