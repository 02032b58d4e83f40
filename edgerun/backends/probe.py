"""A tiny model every backend must run, so that ``edgerun doctor`` tests them, not their imports.

y = Relu(x @ W + b) with x of shape [1, 8], as ONNX (written here as protobuf, since a bare
board has no onnx package) and as TFLite (made once by TensorFlow's converter from a
tf.function with these W and b; tests/test_doctor.py rebuilds it and compares). The expected
output is the formula in numpy.
"""

from __future__ import annotations

import base64
import struct

import numpy as np

WEIGHT = np.arange(32, dtype=np.float32).reshape(8, 4) / 16 - 1
BIAS = np.array([0.5, -0.25, 0.125, 0.0], dtype=np.float32)
INPUT = np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8)
ONNX_OPSET = 13
_FLOAT = 1  # onnx TensorProto.FLOAT

TFLITE = base64.b64decode(
    "HAAAAFRGTDMUACAAHAAYABQAEAAMAAAACAAEABQAAAAcAAAAhAAAANwAAAA8AgAATAIAAAAEAAADAAAAAQAAABAAAAAA"
    "AAoAEAAMAAgABAAKAAAADAAAABwAAAA0AAAADwAAAHNlcnZpbmdfZGVmYXVsdAABAAAABAAAAKT///8DAAAABAAAAAEA"
    "AAB5AAAAAQAAAAQAAADK/v//BAAAAAEAAAB4AAAAAgAAADQAAAAEAAAA3P///wYAAAAEAAAAEwAAAENPTlZFUlNJT05f"
    "TUVUQURBVEEACAAMAAgABAAIAAAABQAAAAQAAAATAAAAbWluX3J1bnRpbWVfdmVyc2lvbgAHAAAAXAEAAFQBAADEAAAA"
    "nAAAAJQAAAB0AAAABAAAAFb///8EAAAAYAAAABAAAAAAAAAACAAOAAgABAAIAAAAEAAAACQAAAAAAAYACAAEAAYAAAAE"
    "AAAAAAAAAAwAGAAUABAADAAEAAwAAAB+lWtvWmisbAMAAAACAAAABAAAAAYAAAAyLjIxLjAAAML///8EAAAAEAAAADEu"
    "NS4wAAAAAAAAAAAAAACk/f//4v///wQAAAAQAAAAAAAAPwAAgL4AAAA+AAAAAAAABgAIAAQABgAAAAQAAACAAAAAAACA"
    "vwAAQL8AAAC/AACAvgAAAAAAAIA+AAAAPwAAQD8AAHC/AAAwvwAA4L4AAEC+AACAPQAAoD4AABA/AABQPwAAYL8AACC/"
    "AADAvgAAAL4AAAA+AADAPgAAID8AAGA/AABQvwAAEL8AAKC+AACAvQAAQD4AAOA+AAAwPwAAcD9Y/v//XP7//w8AAABN"
    "TElSIENvbnZlcnRlZC4AAQAAABQAAAAAAA4AGAAUABAADAAIAAQADgAAABQAAAAcAAAAbAAAAHAAAAB0AAAABAAAAG1h"
    "aW4AAAAAAQAAABQAAAAAAA4AFgAAABAADAALAAQADgAAABgAAAAAAAAIGAAAABwAAAAAAAYACAAHAAYAAAAAAAABAQAA"
    "AAMAAAADAAAAAAAAAAEAAAACAAAAAQAAAAMAAAABAAAAAAAAAAQAAADQAAAAgAAAAEgAAAAEAAAAVv///wAAAAEQAAAA"
    "EAAAAAQAAAAgAAAAQP///xEAAABQYXJ0aXRpb25lZENhbGw6MAAAAAIAAAABAAAABAAAAJb///8AAAABEAAAABAAAAAD"
    "AAAAGAAAAID///8IAAAAUmVsdTthZGQAAAAAAQAAAAQAAADK////AAAAARAAAAAQAAAAAgAAABQAAAC0////BgAAAE1h"
    "dE11bAAAAgAAAAQAAAAIAAAAAAAWABgAFAAAABAADAAIAAAAAAAAAAcAFgAAAAAAAAEUAAAAFAAAAAEAAAAkAAAABAAE"
    "AAQAAAATAAAAc2VydmluZ19kZWZhdWx0X3g6MAACAAAAAQAAAAgAAAABAAAAEAAAAAwADAALAAAAAAAEAAwAAAAJAAAA"
    "AAAACQ=="
)


def expected(x: np.ndarray = INPUT) -> np.ndarray:
    return np.maximum(x @ WEIGHT + BIAS, 0)


def onnx_model() -> bytes:
    """The ModelProto: MatMul, Add, Relu over two initializers."""
    nodes = [
        _node("MatMul", ["x", "W"], ["h"]),
        _node("Add", ["h", "b"], ["a"]),
        _node("Relu", ["a"], ["y"]),
    ]
    graph = b"".join(
        [
            *(_bytes(1, n) for n in nodes),
            _bytes(2, b"probe"),
            _bytes(5, _tensor("W", WEIGHT)),
            _bytes(5, _tensor("b", BIAS)),
            _bytes(11, _value("x", [1, 8])),
            _bytes(12, _value("y", [1, 4])),
        ]
    )
    opset = _bytes(1, b"") + _int(2, ONNX_OPSET)
    return _int(1, 8) + _bytes(7, graph) + _bytes(8, opset)  # ir_version 8


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _bytes(field: int, data: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _node(op_type: str, inputs: list[str], outputs: list[str]) -> bytes:
    parts = [_bytes(1, i.encode()) for i in inputs] + [_bytes(2, o.encode()) for o in outputs]
    return b"".join([*parts, _bytes(3, op_type.lower().encode()), _bytes(4, op_type.encode())])


def _tensor(name: str, value: np.ndarray) -> bytes:
    dims = b"".join(_int(1, d) for d in value.shape)
    raw = struct.pack(f"<{value.size}f", *value.ravel().tolist())
    return dims + _int(2, _FLOAT) + _bytes(8, name.encode()) + _bytes(9, raw)


def _value(name: str, shape: list[int]) -> bytes:
    dims = b"".join(_bytes(1, _int(1, d)) for d in shape)
    tensor = _int(1, _FLOAT) + _bytes(2, dims)
    return _bytes(1, name.encode()) + _bytes(2, _bytes(1, tensor))
