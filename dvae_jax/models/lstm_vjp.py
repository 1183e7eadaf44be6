"""One LSTM layer over known inputs with a hand-written backward pass (a custom VJP).

Autodiff of ``lax.scan`` accumulates the recurrent kernel's gradient inside the backward loop,
one small (H, b) @ (b, 4H) product per step, and zero-fills a buffer per stacked cotangent. Here
the backward loop carries only the state cotangents (dh, dc) and emits each step's gate
cotangents; the kernel's gradient is then one (H, t*b) @ (t*b, 4H) product after the loop, and
the gate cotangents are the input projection's cotangent as they are. The forward loop stores the
gate activations and the incoming state, which is what the backward pass reads.

Gates in PyTorch's order i, f, g, o (:func:`activations`, :func:`cell`; base.lstm_gates uses them):
  c_t = s(f) c_{t-1} + s(i) tanh(g),  h_t = s(o) tanh(c_t).
Tested against autodiff of the plain scan (tests/test_lstm_vjp.py), float64 and float32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from dvae_jax.models.matmul import mm


def activations(gates: Float[Array, "... 4h"]) -> tuple[Array, Array, Array, Array]:
    """The gates' activations s(i), s(f), tanh(g), s(o) from their pre-activations."""
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    return jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)


def cell(acts: tuple[Array, Array, Array, Array], c: Array) -> tuple[Array, Array]:
    """(h, c) after one step from the gates' activations and the previous cell state."""
    i, f, g, o = acts
    c_new = f * c + i * g
    return o * jnp.tanh(c_new), c_new


def _forward(wh, pre, h0, c0, reverse: bool, unroll: int):
    def step(carry, pre_t):
        h, c = carry
        acts = activations(pre_t + mm(h, wh))
        h_new, c_new = cell(acts, c)
        return (h_new, c_new), (h_new, (jnp.concatenate(acts, -1), h, c, c_new))

    (h_t, c_t), (hs, res) = jax.lax.scan(step, (h0, c0), pre, reverse=reverse, unroll=unroll)
    return (hs, h_t, c_t), res


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def lstm_layer(
    wh: Float[Array, "h 4h"], pre: Float[Array, "t b 4h"], h0: Float[Array, "b h"],
    c0: Float[Array, "b h"], reverse: bool = False, unroll: int = 1,
) -> tuple[Float[Array, "t b h"], Float[Array, "b h"], Float[Array, "b h"]]:
    """(h_t for every step, final h, final c) of an LSTM layer whose input share of the gates
    ``pre`` (x W_i + both biases) is given; ``reverse`` runs from the last step back; ``unroll`` as lax.scan's."""
    return _forward(wh, pre, h0, c0, reverse, unroll)[0]


def _fwd(wh, pre, h0, c0, reverse, unroll):
    out, res = _forward(wh, pre, h0, c0, reverse, unroll)
    return out, (wh, res)


def _bwd(reverse, unroll, saved, cts):
    wh, (acts, h_prev, c_prev, c_new) = saved
    d_hs, d_hT, d_cT = cts
    wh_t = wh.T  # once, outside the loop

    def step(carry, xs):
        dh, dc = carry
        d_h_t, a, cp, cn = xs
        i, f, g, o = jnp.split(a, 4, axis=-1)
        dh = dh + d_h_t
        tc = jnp.tanh(cn)
        dc = dc + dh * o * (1.0 - tc * tc)
        d_gates = jnp.concatenate(
            [dc * g * i * (1.0 - i), dc * cp * f * (1.0 - f), dc * i * (1.0 - g * g), dh * tc * o * (1.0 - o)], -1
        )
        return (mm(d_gates, wh_t), dc * f), d_gates

    (dh0, dc0), d_pre = jax.lax.scan(step, (d_hT, d_cT), (d_hs, acts, c_prev, c_new),
                                    reverse=not reverse, unroll=unroll)
    # The recurrent kernel's gradient as one product over every step and sequence.
    d_wh = jnp.einsum("tbh,tbg->hg", h_prev.astype(wh.dtype), d_pre.astype(wh.dtype),
                      preferred_element_type=d_pre.dtype)
    return d_wh.astype(wh.dtype), d_pre, dh0, dc0


lstm_layer.defvjp(_fwd, _bwd)
