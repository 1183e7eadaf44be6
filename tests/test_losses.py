"""The ELBO's masking: padded frames add nothing, not even NaN (Itakura-Saito of a zero frame is
infinite), in the loss and in its gradient."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dvae_jax import config, losses, models

CFG = config.ModelConfig(model="vrnn", x_dim=5, z_dim=2, dense_x=(4,), dense_z=(3,), dim_rnn=6)


@pytest.mark.parametrize("likelihood", ["itakura_saito", "gaussian"])
def test_zero_padding_under_a_mask_changes_nothing(likelihood):
    cfg = dataclasses.replace(CFG, likelihood=likelihood)
    v = models.init(cfg, jax.random.PRNGKey(0))
    x = jnp.exp(jax.random.normal(jax.random.PRNGKey(1), (2, 6, 5)))
    eps = jax.random.normal(jax.random.PRNGKey(2), (2, 9, 2))
    padded = jnp.concatenate([x, jnp.zeros((2, 3, 5))], axis=1)  # what eval batches look like
    mask = jnp.concatenate([jnp.ones((2, 6)), jnp.zeros((2, 3))], axis=1)

    def loss(v, x, eps, mask):
        out, _ = models.forward(cfg, v, x, eps)
        return losses.elbo(cfg, out, x, mask)[0]

    want, g_want = jax.value_and_grad(loss)(v, x, eps[:, :6], None)
    got, g_got = jax.value_and_grad(loss)(v, padded, eps, mask)
    assert np.isfinite(float(got))
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(g_got), jax.tree_util.tree_leaves(g_want)):
        assert bool(jnp.all(jnp.isfinite(a)))
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
