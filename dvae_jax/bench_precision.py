"""Matrix-product precision for ``dvae-jax bench --precision``: float32, TF32 or bf16.

JAX: float32 and TF32 are ``jax.default_matmul_precision`` ("float32" is XLA's HIGHEST, so a GPU
does not fall back to TF32 silently). bf16 feeds every matrix product bfloat16 operands with a
float32 result, on any backend: XLA:CPU ignores a dot's precision setting, so the bf16 step is
made by rewriting the traced step, each ``dot_general`` (inside scans, loops and nested jits too)
casting its float32 operands to bfloat16, with a float32 product on GPU and, since XLA:CPU has no
bf16 x bf16 -> f32 dot, a bfloat16 product widened to float32 on CPU. The models stay float32
everywhere else (elementwise work, the recurrence's state, the loss).

torch: float32 / TF32 are ``torch.backends.cuda.matmul.allow_tf32`` and
``torch.backends.cudnn.allow_tf32`` (cuDNN's LSTM has its own switch); bf16 is ``torch.autocast``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

PRECISIONS = ("float32", "tf32", "bf16")
_JAX_NAMES = {"float32": "float32", "tf32": "tensorfloat32", "bf16": "float32"}


def jax_precision(precision: str):
    """The context to trace a JAX function in at ``precision`` (bf16 also needs bf16_dots)."""
    import jax

    return jax.default_matmul_precision(_JAX_NAMES[precision])


def _rewrite_param(value: Any, f32: bool) -> Any:
    """A primitive's parameter with every jaxpr in it rewritten (scan/while/cond/pjit bodies)."""
    from jax.extend import core

    if isinstance(value, core.ClosedJaxpr):
        return _rewrite_closed(value, f32)
    if isinstance(value, core.Jaxpr):
        closed = _rewrite_closed(core.ClosedJaxpr(value, ()), f32)
        if closed.consts:  # an open jaxpr cannot take new constants; keep the original
            return value
        return closed.jaxpr
    if isinstance(value, tuple) and value and all(isinstance(v, core.ClosedJaxpr) for v in value):
        return tuple(_rewrite_closed(v, f32) for v in value)
    return value


def _rewrite_closed(closed, f32: bool):
    import jax

    avals = [v.aval for v in closed.jaxpr.invars]
    return jax.make_jaxpr(lambda *args: _eval(closed.jaxpr, closed.consts, args, f32))(*avals)


def _bf16_dot(f32: bool, lhs, rhs, **params):
    import jax.numpy as jnp
    from jax import lax

    if lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32:
        return lax.dot_general_p.bind(lhs, rhs, **params)
    lhs, rhs = lhs.astype(jnp.bfloat16), rhs.astype(jnp.bfloat16)
    # XLA:CPU has no bf16 x bf16 -> f32 dot: there a bf16 product, widened (as torch's CPU autocast)
    result = jnp.dtype(jnp.float32 if f32 else jnp.bfloat16)
    out = lax.dot_general_p.bind(lhs, rhs, **dict(params, preferred_element_type=result))
    return out.astype(jnp.float32)


def _eval(jaxpr, consts, args, f32: bool) -> list:
    """jax.core.eval_jaxpr with bf16 dot operands and rewritten sub-jaxprs."""
    from jax import lax
    from jax.extend import core

    env: dict = {}

    def read(v):
        return v.val if isinstance(v, core.Literal) else env[v]

    for var, val in zip(jaxpr.constvars, consts):
        env[var] = val
    for var, val in zip(jaxpr.invars, args):
        env[var] = val
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        if eqn.primitive is lax.dot_general_p:
            outvals = [_bf16_dot(f32, *invals, **eqn.params)]
        else:
            params = {k: _rewrite_param(v, f32) for k, v in eqn.params.items()}
            bind_params = eqn.primitive.get_bind_params(params)
            subfuns = ()
            if isinstance(bind_params, tuple):  # jax < 0.7: (subfuns, params)
                subfuns, bind_params = bind_params
            with eqn.ctx.manager:
                outvals = eqn.primitive.bind(*subfuns, *invals, **bind_params)
            if not eqn.primitive.multiple_results:
                outvals = [outvals]
        for var, val in zip(eqn.outvars, outvals):
            env[var] = val
    return [read(v) for v in jaxpr.outvars]


def bf16_dots(fn: Callable, f32_result: bool = True) -> Callable:
    """``fn`` with every float32 matrix product computed from bfloat16 operands.

    ``f32_result``: a float32 product (GPU); XLA:CPU has no bf16 x bf16 -> f32 dot, so on CPU
    (False) it is a bfloat16 product widened to float32, as torch's CPU autocast gives."""
    import jax

    def wrapped(*args):
        closed = jax.make_jaxpr(fn)(*args)
        flat = jax.tree_util.tree_leaves(args)
        out = _eval(closed.jaxpr, closed.consts, flat, f32_result)
        return jax.tree_util.tree_unflatten(
            jax.tree_util.tree_structure(jax.eval_shape(fn, *args)), out
        )

    return wrapped


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
