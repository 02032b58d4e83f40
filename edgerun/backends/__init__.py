"""Backends that run a model: the numpy runtime, and (later) onnxruntime and TFLite."""
