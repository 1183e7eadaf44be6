"""Matrix-product precision for ``dvae-jax bench --precision``: float32, TF32 or bf16.

JAX: float32 and TF32 are ``jax.default_matmul_precision`` ("float32" is XLA's HIGHEST, so a GPU
does not fall back to TF32 silently). bf16 is the model's option ``model.matmul_dtype=bfloat16``
(dvae_jax/models/matmul.py): XLA:CPU ignores a dot's precision setting, so the kernels themselves
are cast to bfloat16 once per pass and every weight product takes bfloat16 inputs with float32
accumulation, forward and backward. The models stay float32 everywhere else (elementwise work,
the recurrence's state, the loss, the parameters and Adam's state).

torch: float32 / TF32 are ``torch.backends.cuda.matmul.allow_tf32`` and
``torch.backends.cudnn.allow_tf32`` (cuDNN's LSTM has its own switch); bf16 is ``torch.autocast``.
"""

from __future__ import annotations

import contextlib

PRECISIONS = ("float32", "tf32", "bf16")
_JAX_NAMES = {"float32": "float32", "tf32": "tensorfloat32", "bf16": "float32"}


def jax_precision(precision: str):
    """The context to trace a JAX function in at ``precision`` (bf16: see :func:`model_config`)."""
    import jax

    return jax.default_matmul_precision(_JAX_NAMES[precision])


def model_config(cfg, precision: str):
    """The model configuration dvae_jax runs at ``precision``: bf16 is the model's own mixed
    precision (``model.matmul_dtype=bfloat16``: bfloat16 inputs and float32 accumulation for
    every weight product, forward and backward, on CPU and GPU alike); float32 and TF32 keep
    float32 weights (TF32 is the matmul precision set by :func:`jax_precision`)."""
    import dataclasses

    return dataclasses.replace(cfg, matmul_dtype="bfloat16" if precision == "bf16" else "float32")


@contextlib.contextmanager
def torch_precision(precision: str, device: str):
    """torch's matmul / cuDNN TF32 switches and bf16 autocast for the duration of a step."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        if precision == "bf16":
            with torch.autocast(
                device_type="cuda" if device == "gpu" else "cpu", dtype=torch.bfloat16
            ):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
