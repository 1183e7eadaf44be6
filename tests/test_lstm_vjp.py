"""The LSTM layer's hand-written backward pass (models/lstm_vjp.py) against autodiff of the plain
scan of base.cell_update: outputs and gradients to rounding (float64 and float32)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dvae_jax.models import base, lstm_vjp


def _inputs(dtype, t=7, b=3, h=5):
    ks = jax.random.split(jax.random.PRNGKey(0), 6)
    wh = 0.4 * jax.random.normal(ks[0], (h, 4 * h), dtype)
    pre = jax.random.normal(ks[1], (t, b, 4 * h), dtype)
    h0, c0 = (0.3 * jax.random.normal(k, (b, h), dtype) for k in ks[2:4])
    weights = (jax.random.normal(ks[4], (t, b, h), dtype), jax.random.normal(ks[5], (b, h), dtype))
    return (wh, pre, h0, c0), weights


def _plain(wh, pre, h0, c0, reverse, unroll):
    zeros = jnp.zeros(wh.shape[1], wh.dtype)
    layer = base.LSTMLayer(jnp.zeros((1, wh.shape[1]), wh.dtype), wh, zeros, zeros)

    def step(carry, x):
        h, c = base.cell_update(layer, x, carry[0] @ wh, carry[0], carry[1])
        return (h, c), h

    (h, c), hs = jax.lax.scan(step, (h0, c0), pre, reverse=reverse, unroll=unroll)
    return hs, h, c


def _loss(fn, weights, reverse, unroll):
    def loss(*args):
        hs, h, c = fn(*args, reverse, unroll)
        return jnp.sum(jnp.sin(hs) * weights[0]) + jnp.sum(h * weights[1]) + jnp.sum(c**2)

    return loss


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-13), ("float32", 2e-6)])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("unroll", [1, 2])
def test_custom_backward_equals_autodiff_of_the_scan(dtype, tol, reverse, unroll):
    with jax.enable_x64(dtype == "float64"):
        args, weights = _inputs(jnp.dtype(dtype))
        want = _plain(*args, reverse, unroll)
        got = lstm_vjp.lstm_layer(*args, reverse, unroll)
        for a, b in zip(want, got):  # the same arithmetic, fused differently by XLA
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=tol, atol=tol)
        g_want = jax.grad(_loss(_plain, weights, reverse, unroll), argnums=(0, 1, 2, 3))(*args)
        g_got = jax.grad(_loss(lstm_vjp.lstm_layer, weights, reverse, unroll), argnums=(0, 1, 2, 3))(*args)
        for name, a, b in zip(("wh", "pre", "h0", "c0"), g_want, g_got):
            rel = float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
            assert rel < tol, f"{name}: relative error {rel:.2e}"


def test_run_lstm_routes_lstm_layers_through_the_custom_backward(monkeypatch):
    calls = []
    real = lstm_vjp.lstm_layer
    monkeypatch.setattr(lstm_vjp, "lstm_layer", lambda *a: calls.append(1) or real(*a))
    layer = base.LSTMLayer(*(jnp.ones(s) * 0.1 for s in [(2, 8), (2, 8), (8,), (8,)]))
    gru = base.LSTMLayer(*(jnp.ones(s) * 0.1 for s in [(2, 6), (2, 6), (6,), (6,)]))
    base.run_lstm((layer, layer), jnp.ones((4, 3, 2)))
    assert len(calls) == 2
    base.run_lstm((gru,), jnp.ones((4, 3, 2)))  # a GRU keeps autodiff of its scan
    assert len(calls) == 2
