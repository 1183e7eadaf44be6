"""The weights' products, in float32 or with bfloat16 inputs (``model.matmul_dtype``).

A model's typed parameters carry the dtype: :func:`cast_kernels` turns every kernel into the
matmul dtype once per pass (biases stay float32), and :func:`mm` multiplies a float32 activation
by a bfloat16 kernel with bfloat16 inputs and float32 accumulation. Its backward pass does the
same (both products on bfloat16 inputs; the kernel's cotangent is rounded to bfloat16 as the
kernel is), so both directions run at the bfloat16 matmul rate (AVX512-BF16 CPUs, GPU tensor
cores). Activations, the loss, parameters and the optimiser state stay float32.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array

_BIASES = ("bias", "bi", "bh")  # the leaves that are added, not multiplied


def cast_kernels(params: Any, dtype: str) -> Any:
    """``params`` (a model's typed parameters) with every kernel in ``dtype``, biases as they are."""
    if jnp.dtype(dtype) == jnp.float32:
        return params

    def cast(path, leaf):
        name = getattr(path[-1], "name", None) if path else None
        return leaf if name in _BIASES else leaf.astype(dtype)

    return jax.tree_util.tree_map_with_path(cast, params)


def mm(x: Array, w: Array) -> Array:
    """``x @ w``; with a kernel in a narrower dtype than ``x``, that dtype's inputs and ``x``'s
    accumulation (forward and backward). A product over many frames at once (``x`` with two or
    more leading axes: the hoisted layers) takes :func:`_wide`'s backward pass."""
    if w.dtype != x.dtype:
        return _mixed(x, w)
    if x.ndim >= 3:
        return _wide(x, w)
    return x @ w


@jax.custom_vjp
def _wide(x: Array, w: Array) -> Array:
    return x @ w


def _wide_fwd(x, w):
    return x @ w, (x, w)


def _wide_bwd(res, g):
    # The kernel's gradient as (g^T x)^T: both (frames, features) operands are read in the layout
    # they have. Autodiff's x^T g made XLA copy the larger one, transposed, first (for the
    # decoder's 513-wide output, a 13 MB copy per step); this form is 5-9 % faster per train
    # step at the review's shapes (benchmarks/RESULTS.md).
    x, w = res
    g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
    dw_t = jax.lax.dot_general(g2, x2, (((0,), (0,)), ((), ())))
    return g @ w.T, dw_t.T


_wide.defvjp(_wide_fwd, _wide_bwd)


@jax.custom_vjp
def _mixed(x: Array, w: Array) -> Array:
    return jnp.matmul(x.astype(w.dtype), w, preferred_element_type=x.dtype)


def _mixed_fwd(x, w):
    low = x.astype(w.dtype)  # the residual is kept narrow too
    return jnp.matmul(low, w, preferred_element_type=x.dtype), (low, w)


def _mixed_bwd(res, g):
    low, w = res
    g_low = g.astype(w.dtype)
    dx = jnp.matmul(g_low, w.T, preferred_element_type=g.dtype)
    dw = jnp.einsum("...i,...o->io", low, g_low, preferred_element_type=g.dtype)
    return dx, dw.astype(w.dtype)


_mixed.defvjp(_mixed_fwd, _mixed_bwd)
