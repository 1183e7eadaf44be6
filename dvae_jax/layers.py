"""Parameter holders (Linear, MLP, LSTM) and the pure functions that apply them.

Modules here only *declare* parameters, with the review's names and PyTorch's default
initialisation; the arithmetic is in plain functions of those parameters. That lets a model
slice one kernel in two (a layer fed [a_t, b_t] is W_a a_t + W_b b_t) and compute the part that
does not depend on the previous step for all frames before the scan, while the stored kernel
stays the single matrix the review's checkpoints hold (transposed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from dvae_jax.typing import Array

LinearP = dict  # {'kernel': (in, out), 'bias': (out,)}
LSTMP = dict  # {'wi': (in, 4H), 'wh': (H, 4H), 'bi': (4H,), 'bh': (4H,)}; gates i, f, g, o


def _torch_uniform(fan_in: int) -> Callable:
    """PyTorch's default Linear / LSTM init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / float(fan_in) ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class Linear(nn.Module):
    """Declares a dense layer's kernel (in, out) and bias (out,); returns them."""

    in_dim: int
    out_dim: int

    @nn.compact
    def __call__(self) -> LinearP:
        init = _torch_uniform(self.in_dim)
        return {
            "kernel": self.param("kernel", init, (self.in_dim, self.out_dim)),
            "bias": self.param("bias", init, (self.out_dim,)),
        }


class MLP(nn.Module):
    """Declares layers ``linear0..n`` mapping sizes[0] -> sizes[1] -> ... -> sizes[-1]."""

    sizes: Sequence[int]

    @nn.compact
    def __call__(self) -> list[LinearP]:
        return [
            Linear(a, b, name=f"linear{i}")()
            for i, (a, b) in enumerate(zip(self.sizes[:-1], self.sizes[1:]))
        ]


class LSTMLayer(nn.Module):
    """Declares one LSTM layer in PyTorch's layout: wi (in, 4H), wh (H, 4H), bi, bh (4H,)."""

    in_dim: int
    hidden: int

    @nn.compact
    def __call__(self) -> LSTMP:
        init = _torch_uniform(self.hidden)
        four_h = 4 * self.hidden
        return {
            "wi": self.param("wi", init, (self.in_dim, four_h)),
            "wh": self.param("wh", init, (self.hidden, four_h)),
            "bi": self.param("bi", init, (four_h,)),
            "bh": self.param("bh", init, (four_h,)),
        }


class LSTM(nn.Module):
    """Declares a stacked LSTM ``layer0..`` (gates i, f, g, o; both biases, as nn.LSTM)."""

    in_dim: int
    hidden: int
    num_layers: int = 1

    @nn.compact
    def __call__(self) -> list[LSTMP]:
        return [
            LSTMLayer(self.in_dim if i == 0 else self.hidden, self.hidden, name=f"layer{i}")()
            for i in range(self.num_layers)
        ]


# ---------------------------------------------------------------------------------------------
# Pure functions


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
}


def activation(name: str) -> Callable[[Array], Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"model.activation must be one of {sorted(ACTIVATIONS)}, got '{name}'")
    return ACTIVATIONS[name]


def dense(p: LinearP, x: Array) -> Array:
    return x @ p["kernel"] + p["bias"]


def mlp(
    layers: Sequence[LinearP],
    x: Array,
    act: Callable[[Array], Array],
    final_act: bool = True,
    dropout: Callable[[Array], Array] | None = None,
    start: int = 0,
) -> Array:
    """Applies ``layers[start:]``; activation (and dropout) after each but, without
    ``final_act``, the last (a linear output head)."""
    n = len(layers)
    for i in range(start, n):
        x = dense(layers[i], x)
        if final_act or i < n - 1:
            x = act(x)
            if dropout is not None:
                x = dropout(x)
    return x


def first_layer_split(p: LinearP, n_a: int) -> tuple[LinearP, Array]:
    """Splits a layer fed [a, b] into (the a-part with the bias, the b-part kernel)."""
    return {"kernel": p["kernel"][:n_a], "bias": p["bias"]}, p["kernel"][n_a:]


def lstm_gates(gates: Array, c: Array) -> tuple[Array, Array]:
    """LSTM update from pre-activations (..., 4H) in PyTorch's gate order i, f, g, o."""
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
    return h_new, c_new


def lstm_input_projection(p: LSTMP, x: Array) -> Array:
    """The part of the gates that does not depend on the state: x W_i + b_i + b_h."""
    return x @ p["wi"] + (p["bi"] + p["bh"])
