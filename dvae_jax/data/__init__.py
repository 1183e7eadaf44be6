"""Corpora -> features -> cache -> batches (NumPy, outside jit)."""
