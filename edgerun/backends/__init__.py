"""Backends that run a model: the numpy runtime, onnxruntime (execution providers) and LiteRT
(delegates); ``select`` decides which, ``probe`` is the model ``edgerun doctor`` runs on each."""
