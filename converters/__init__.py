"""Host side: turn PyTorch / TensorFlow / ONNX / TFLite models into edgerun bundles.

Needs the heavy packages (onnx at least), which is why it is apart from ``edgerun``.
"""
