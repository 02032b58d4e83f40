"""Kernels by op family; each module registers its functions with ``@kernel``."""
