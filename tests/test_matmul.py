"""model.matmul_dtype=bfloat16: kernels cast once per pass, biases kept, products on bfloat16
inputs with float32 accumulation forward and backward; the ELBO and its gradients stay within
bfloat16's rounding of the float32 ones."""

from __future__ import annotations

import dataclasses

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from dvae_jax import config, losses, models
from dvae_jax.errors import ConfigError
from dvae_jax.models import base, cudnn_lstm, matmul


def _tiny(model: str, **kw) -> config.ModelConfig:
    return config.ModelConfig(model=model, x_dim=10, z_dim=3, dense_x=(8,), dense_z=(4,), dense_hx_z=(6,),
                              dense_hz_x=(8,), dense_h_z=(6,), dim_rnn=8, dense_x_h=(8,), dense_hx_g=(8,),
                              dense_gz_z=(6,), dense_hz_z=(6,), dim_rnn_g=8, **kw)


def test_cast_kernels_narrows_kernels_and_keeps_biases():
    cfg = _tiny("srnn", matmul_dtype="bfloat16")
    model = models.build(cfg)
    p = model.params(models.init(cfg, jax.random.PRNGKey(0)))
    assert p.rnn_h[0].wi.dtype == p.rnn_h[0].wh.dtype == p.post_z.dtype == jnp.bfloat16
    assert p.decoder[0].kernel.dtype == jnp.bfloat16
    assert p.rnn_h[0].bi.dtype == p.rnn_h[0].bh.dtype == p.decoder[0].bias.dtype == jnp.float32
    p32 = models.build(_tiny("srnn")).params(models.init(cfg, jax.random.PRNGKey(0)))
    assert p32.decoder[0].kernel.dtype == jnp.float32


def test_mixed_product_and_its_gradients_use_bfloat16_inputs():
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 4, 7))
    w = jax.random.normal(jax.random.PRNGKey(1), (7, 3))
    wl = w.astype(jnp.bfloat16)
    y = matmul.mm(x, wl)
    assert y.dtype == jnp.float32
    want = np.asarray(x.astype(jnp.bfloat16), np.float64) @ np.asarray(wl, np.float64)
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=1e-5)  # exact inputs, f32 sums
    g = jax.random.normal(jax.random.PRNGKey(2), y.shape)
    dx, dw = jax.vjp(matmul.mm, x, wl)[1](g)
    assert dx.dtype == jnp.float32 and dw.dtype == jnp.bfloat16
    gl = np.asarray(g.astype(jnp.bfloat16), np.float64)
    np.testing.assert_allclose(np.asarray(dx), gl @ np.asarray(wl, np.float64).T, rtol=1e-5, atol=1e-5)
    dw_want = np.einsum("tbi,tbo->io", np.asarray(x.astype(jnp.bfloat16), np.float64), gl)
    np.testing.assert_allclose(np.asarray(dw, np.float64), dw_want, rtol=1e-2, atol=1e-2)
    assert matmul.mm(x, w) is not None and jnp.array_equal(matmul.mm(x, w), x @ w)


@pytest.mark.parametrize("model", ["vrnn", "srnn"])
def test_bfloat16_elbo_and_gradients_stay_near_float32(model):
    cfg = _tiny(model)
    variables = models.init(cfg, jax.random.PRNGKey(0))
    x = jnp.abs(jax.random.normal(jax.random.PRNGKey(1), (4, 6, 10))) + 0.1
    eps = jax.random.normal(jax.random.PRNGKey(2), (4, 6, 3))

    def loss(v, c):
        out, _ = models.forward(c, v, x, eps=eps)
        return losses.elbo(c, out, x)[0]

    l32, g32 = jax.value_and_grad(loss)(variables, cfg)
    l16, g16 = jax.value_and_grad(loss)(variables, dataclasses.replace(cfg, matmul_dtype="bfloat16"))
    assert float(l16) != float(l32)  # the option takes effect
    assert abs(float(l16 - l32)) / abs(float(l32)) < 1e-3
    flat32, flat16 = jax.flatten_util.ravel_pytree(g32)[0], jax.flatten_util.ravel_pytree(g16)[0]
    assert flat16.dtype == jnp.float32
    assert float(jnp.linalg.norm(flat16 - flat32) / jnp.linalg.norm(flat32)) < 3e-2


def test_matmul_dtype_is_validated_and_cudnn_refuses_bfloat16():
    with pytest.raises(ConfigError, match="model.matmul_dtype"):
        _tiny("vrnn", matmul_dtype="float16")
    layer = base.LSTMLayer(*(jnp.zeros(s, jnp.bfloat16) for s in [(2, 8), (2, 8)]),
                           jnp.zeros(8), jnp.zeros(8))
    assert cudnn_lstm.choose("auto", (layer,), jnp.float32) == "scan"


def test_wide_products_backward_equals_autodiff_of_the_plain_product():
    # Given a product over (t, b) frames, as the hoisted layers compute, in float64
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.PRNGKey(0), (5, 3, 7), jnp.float64)
        w = jax.random.normal(jax.random.PRNGKey(1), (7, 4), jnp.float64)
        g = jax.random.normal(jax.random.PRNGKey(2), (5, 3, 4), jnp.float64)
        # When both are differentiated
        want = jax.vjp(lambda a, b: a @ b, x, w)[1](g)
        got = jax.vjp(matmul.mm, x, w)[1](g)
        # Then the forward and both cotangents agree to rounding
        np.testing.assert_allclose(np.asarray(matmul.mm(x, w)), np.asarray(x @ w), rtol=1e-14)
        for a, b in zip(want, got):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-13, atol=1e-13)
