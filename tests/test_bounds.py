"""ELBO and IWAE bounds (dvae_jax/bounds.py): masks, K = 1, chunking, and a tiny SRNN trained on
a slice of the packaged JSB chorales."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dvae_jax import bounds, config, losses, models, train
from dvae_jax.data import polyphonic
from dvae_jax.errors import DataError
from tests.test_models import TINY_SRNN, TINY_VRNN

SRNN = dataclasses.replace(TINY_SRNN, likelihood="bernoulli", resq=True, num_rnn=1)
VRNN = dataclasses.replace(TINY_VRNN, likelihood="bernoulli", num_rnn=1)


def rolls(n=3, t=9, f=7, seed=0):
    return (np.random.default_rng(seed).random((n, t, f)) < 0.3).astype(np.float32)


@pytest.mark.parametrize("cfg", [SRNN], ids=["srnn"])  # SRNN: the one with a backward recurrence
def test_padding_adds_nothing(cfg):
    # Given pieces of lengths 9, 5 and 7, and the same pieces padded with zeros to 12 frames
    params = models.init(cfg, jax.random.PRNGKey(0))
    x = rolls(f=cfg.x_dim)
    lengths = np.array([9, 5, 7])
    mask = (np.arange(9)[None] < lengths[:, None]).astype(np.float32)
    x = x * mask[..., None]
    x_pad = np.concatenate([x, np.zeros((3, 3, cfg.x_dim), np.float32)], axis=1)
    mask_pad = np.concatenate([mask, np.zeros((3, 3), np.float32)], axis=1)
    key = jax.random.PRNGKey(1)
    # When both are bounded with the same key
    a = bounds.piece_bounds(cfg, params, x, mask, 4, key)
    b = bounds.piece_bounds(cfg, params, x_pad, mask_pad, 4, key)
    # Then every piece's bounds are unchanged, and the piece of 5 frames equals itself alone
    for name in ("iwae", "elbo", "elbo_mc"):
        np.testing.assert_allclose(a[name], b[name], rtol=1e-6)
    alone = bounds.piece_bounds(cfg, params, x[1:2, :5], None, 4, key)
    assert np.isfinite(alone["iwae"]).all()
    np.testing.assert_array_equal(b["lengths"], lengths)


def test_srnn_backward_pass_would_see_the_padding():
    # Why pieces are cut to their length: SRNN's backward LSTM runs from the last (padded) frame,
    # so masking the sum alone would change a padded piece's bound.
    params = models.init(SRNN, jax.random.PRNGKey(0))
    x = jnp.asarray(rolls(n=1, t=6, f=SRNN.x_dim))
    eps = jax.random.normal(jax.random.PRNGKey(2), (1, 9, SRNN.z_dim))
    full, _ = bounds.log_weights(SRNN, params, x, jnp.ones((1, 6)), eps[:, :6])
    padded = jnp.concatenate([x, jnp.ones((1, 3, SRNN.x_dim))], axis=1)
    leak, _ = bounds.log_weights(SRNN, params, padded, jnp.pad(jnp.ones((1, 6)), ((0, 0), (0, 3))), eps)
    assert abs(float(full[0]) - float(leak[0])) > 1e-4


def test_iwae_with_one_sample_is_the_sampled_elbo_and_chunking_changes_nothing():
    params = models.init(SRNN, jax.random.PRNGKey(0))
    x = rolls(f=SRNN.x_dim)
    key = jax.random.PRNGKey(3)
    one = bounds.piece_bounds(SRNN, params, x, None, 1, key)
    np.testing.assert_allclose(one["iwae"], one["elbo_mc"], rtol=1e-6)
    # The same noise drawn directly: sample 0 of each piece
    eps = jax.vmap(lambda k: jax.random.normal(k, (9, SRNN.z_dim)))(
        bounds.sample_keys(key, np.arange(3), np.zeros(3, int)))
    lw, _ = bounds.log_weights(SRNN, params, jnp.asarray(x), jnp.ones((3, 9)), eps)
    np.testing.assert_allclose(one["iwae"], np.asarray(lw), rtol=1e-5)
    # K samples in calls of one row each, or all at once: the same numbers
    a = bounds.piece_bounds(SRNN, params, x, None, 5, key, chunk=9)
    b = bounds.piece_bounds(SRNN, params, x, None, 5, key, chunk=10_000)
    for name in ("iwae", "elbo", "elbo_mc"):
        np.testing.assert_allclose(a[name], b[name], rtol=1e-6)
    # And log-mean-exp >= mean, sample by sample (Jensen), strictly with distinct samples
    assert (b["iwae"] > b["elbo_mc"]).all()


@pytest.mark.parametrize("prior", ["gaussian", "student_t"])
def test_log_weights_agree_with_losses_elbo(prior):
    # Given the same noise, the bounds' terms equal -losses.elbo (per frame) x frames: the
    # closed-form term with a Gaussian prior, log w itself with the Student-t's Monte Carlo KL.
    cfg = dataclasses.replace(SRNN, prior=prior, nu=4.0, kl_estimator="mc")
    params = models.init(cfg, jax.random.PRNGKey(0))
    x = jnp.asarray(rolls(f=cfg.x_dim))
    eps = jax.random.normal(jax.random.PRNGKey(4), (3, 9, cfg.z_dim))
    lw, closed = bounds.log_weights(cfg, params, x, jnp.ones((3, 9)), eps)
    out, _ = models.forward(cfg, params, x, eps)
    loss, _ = losses.elbo(cfg, out, x)
    np.testing.assert_allclose(float(jnp.sum(closed)), -float(loss) * 27, rtol=1e-5)
    if prior == "student_t":
        np.testing.assert_allclose(np.asarray(lw), np.asarray(closed), rtol=1e-5)


def test_bad_masks_are_refused():
    x = rolls(f=SRNN.x_dim)
    params = models.init(SRNN, jax.random.PRNGKey(0))
    holes = np.ones((3, 9), np.float32)
    holes[0, 3] = 0.0
    with pytest.raises(DataError, match="ones then zeros"):
        bounds.evaluate_bounds(SRNN, params, x, holes, 1, jax.random.PRNGKey(0))
    with pytest.raises(DataError, match="must match"):
        bounds.evaluate_bounds(SRNN, params, x, holes[:, :4], 1, jax.random.PRNGKey(0))


def test_tiny_srnn_on_jsb_improves_both_bounds():
    # Given a tiny SRNN and a slice of the packaged JSB chorales (4 streams, 3 chunks of 100 frames)
    cfg = config.Config(
        model=dataclasses.replace(SRNN, x_dim=88, z_dim=4, dense_x_h=(16,), dense_hx_g=(16,),
                                  dense_gz_z=(16,), dense_hz_z=(16,), dense_hz_x=(16,), dim_rnn=16,
                                  dim_rnn_g=16),
        train=config.TrainConfig(batch_size=4, epochs=1, lr=1e-2, lr_schedule="constant",
                                 clip_grad_norm=5.0, kl_schedule="none"),
    )
    rolls_ = polyphonic.load("jsb")
    x_train = rolls_.x_train[:12]
    test, mask = rolls_.x_test[:4, :120], rolls_.mask_test[:4, :120]
    key = jax.random.PRNGKey(0)
    params = models.init(cfg.model, key)
    before = bounds.evaluate_bounds(cfg.model, params, test, mask, 8, key)
    # When it trains for 30 steps with the fit loop's step (state carried across batches, as
    # data.batching=streams does, reset every 3 batches like an epoch start)
    tx = train.make_optimizer(cfg.train, 3, 30)
    step, _ = train.make_steps(cfg.model, cfg.train, tx, 3, 30)
    model = models.build(cfg.model)
    cold = jax.tree_util.tree_map(np.asarray, model.initial_carry(model.params(params), 4))
    state = train.init_state(params, tx, carry=jax.tree_util.tree_map(jnp.array, cold))
    for i in range(30):
        if i % 3 == 0:  # fresh buffers: the step donates its state
            state = state.replace(carry=jax.tree_util.tree_map(jnp.array, cold))
        x = jnp.asarray(x_train[(i % 3) * 4:(i % 3 + 1) * 4])
        state, _ = step(state, {"x": x, "mask": jnp.ones(x.shape[:2])}, jax.random.PRNGKey(i))
    after = bounds.evaluate_bounds(cfg.model, state.params, test, mask, 8, key)
    # Then both bounds are finite, IWAE_8 >= ELBO, and both improved over the untrained model
    for r in (before, after):
        assert np.isfinite([r["iwae_per_step"], r["elbo_per_step"], r["elbo_mc_per_step"]]).all()
        assert r["iwae_per_step"] >= r["elbo_mc_per_step"]
    assert after["iwae_per_step"] > before["iwae_per_step"] + 5.0
    assert after["elbo_per_step"] > before["elbo_per_step"] + 5.0
    assert after["sequences"] == 4 and after["frames"] == int(mask.sum())
