"""The generic drivers over each model's per-step pieces: the free-running step is the
teacher-forced step fed the generated frame, priming ends in the teacher-forced pass's carry,
the carry is the NumPy reference's final state, and dropout draws per step."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dvae_jax import config, drivers, generate, models
from dvae_jax.models import base
from tests import model_checks
from tests import reference_numpy as ref

VRNN = config.ModelConfig(model="vrnn", x_dim=7, z_dim=3, dense_x=(6,), dense_z=(4,), dense_hx_z=(5,),
                          dim_rnn=8, num_rnn=2, likelihood="gaussian")
VRNN1 = dataclasses.replace(VRNN, num_rnn=1, likelihood="itakura_saito")  # the fused h product
SRNN = config.ModelConfig(model="srnn", x_dim=7, z_dim=3, dense_x_h=(6,), dense_hx_g=(5,), dense_gz_z=(4,),
                          dense_hz_z=(5,), dense_hz_x=(), dim_rnn=8, dim_rnn_g=6, num_rnn=2)
SRNN_RESQ = dataclasses.replace(SRNN, resq=True, prior="student_t", learn_nu=True, likelihood="gaussian")
CASES = [pytest.param(c, id=i) for c, i in ((VRNN, "vrnn"), (VRNN1, "vrnn_1layer"), (SRNN, "srnn"),
                                              (SRNN_RESQ, "srnn_resq_studentt"))]


def frames(cfg, key, b, t):
    x = jax.random.normal(key, (b, t, cfg.x_dim))
    return jnp.exp(x) if cfg.likelihood == "itakura_saito" else x


assert_trees_close = model_checks.assert_trees_close


@pytest.mark.parametrize("cfg", CASES)
def test_free_running_steps_equal_teacher_forced_steps_fed_the_generated_frames(cfg):
    # Given a state reached by priming on real frames, and prior noise for 5 more frames
    model, v = models.build(cfg), models.init(cfg, jax.random.PRNGKey(0))
    prime = frames(cfg, jax.random.PRNGKey(1), 2, 4)
    _, carry = models.forward(cfg, v, prime, jax.random.normal(jax.random.PRNGKey(2), (2, 4, cfg.z_dim)))
    noise = generate.draw_noise(cfg, v, jax.random.PRNGKey(3), 5, 2).z
    # When the model runs freely from it, and the teacher-forced pass (z from the prior, same
    # noise) is fed the frames the free run generated, from the same state
    x_gen, carry_free = drivers.free_run(model, v, carry, noise, temperature=0.9)
    out, carry_tf = drivers.teacher_forced(model, v, x_gen, noise, carry, latent="prior", temperature=0.9)
    # Then both decode the same frames and end in the same state, the first step and the last
    np.testing.assert_allclose(models.decode_frames(cfg, out.x_out), x_gen, rtol=1e-5, atol=1e-6)
    x1, carry1 = drivers.free_run(model, v, carry, noise[:, :1], temperature=0.9)
    _, carry1_tf = drivers.teacher_forced(model, v, x1, noise[:, :1], carry, latent="prior", temperature=0.9)
    assert_trees_close(carry1_tf, carry1)
    assert_trees_close(carry_tf, carry_free)


@pytest.mark.parametrize("cfg", CASES)
def test_primed_state_at_the_end_of_the_prime_is_the_teacher_forced_final_carry(cfg):
    model, v = models.build(cfg), models.init(cfg, jax.random.PRNGKey(0))
    prime = frames(cfg, jax.random.PRNGKey(1), 3, 6)
    noise = generate.draw_noise(cfg, v, jax.random.PRNGKey(2), 10, 3, posterior_frames=6).z
    _, carry_prime, _ = drivers.primed(model, v, prime, noise)
    _, carry_tf = models.forward(cfg, v, prime, noise[:, :6])
    assert_trees_close(carry_prime, carry_tf, rtol=0, atol=0)


@pytest.mark.parametrize("cfg", CASES)
def test_final_carry_is_the_reference_loops_final_state(cfg):
    with jax.enable_x64(True):
        v = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), models.init(cfg, jax.random.PRNGKey(0)))
        x = frames(cfg, jax.random.PRNGKey(1), 2, 5).astype(jnp.float64)
        eps = jax.random.normal(jax.random.PRNGKey(2), (2, 5, cfg.z_dim), jnp.float64)
        _, carry = models.forward(cfg, v, x, eps)
        want = ref.forward(cfg, v, x, eps)
    state = carry if cfg.model == "vrnn" else carry.state
    assert_trees_close((list(state.h), list(state.c)), want["final_state"], rtol=1e-10, atol=1e-12)
    if cfg.model == "srnn":  # the frame and latent the next step reads
        np.testing.assert_array_equal(carry.x_prev, x[:, -1])
        np.testing.assert_allclose(carry.z_prev, want["z"][:, -1], rtol=1e-10)


@pytest.mark.parametrize("cfg", CASES)
def test_a_pass_split_in_two_through_its_carry_equals_the_whole_pass(cfg):
    # With z from the prior nothing looks ahead, so the carry is all the second half needs.
    model, v = models.build(cfg), models.init(cfg, jax.random.PRNGKey(0))
    x = frames(cfg, jax.random.PRNGKey(1), 2, 8)
    noise = generate.draw_noise(cfg, v, jax.random.PRNGKey(2), 8, 2).z
    whole, carry = drivers.teacher_forced(model, v, x, noise, latent="prior")
    first, mid = drivers.teacher_forced(model, v, x[:, :3], noise[:, :3], latent="prior")
    second, end = drivers.teacher_forced(model, v, x[:, 3:], noise[:, 3:], mid, latent="prior")
    np.testing.assert_allclose(jnp.concatenate([first.x_out, second.x_out], 1), whole.x_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jnp.concatenate([first.prior_loc, second.prior_loc], 1), whole.prior_loc,
                               rtol=1e-5, atol=1e-6)
    assert_trees_close(end, carry)


@pytest.mark.parametrize("cfg", [VRNN, SRNN], ids=["vrnn", "srnn"])
def test_dropout_is_applied_and_follows_the_key(cfg):
    cfg = dataclasses.replace(cfg, dropout_p=0.5)
    v = models.init(cfg, jax.random.PRNGKey(0))
    x = frames(cfg, jax.random.PRNGKey(1), 1, 6)
    eps = jnp.zeros((1, 6, cfg.z_dim))
    plain, _ = models.forward(cfg, v, x, eps)
    a, _ = models.forward(cfg, v, x, eps, key=jax.random.PRNGKey(5), deterministic=False)
    b, _ = models.forward(cfg, v, x, eps, key=jax.random.PRNGKey(5), deterministic=False)
    c, _ = models.forward(cfg, v, x, eps, key=jax.random.PRNGKey(6), deterministic=False)
    np.testing.assert_array_equal(a.x_out, b.x_out)  # same key, same masks
    assert float(jnp.max(jnp.abs(a.x_out - c.x_out))) > 1e-3  # another key, other masks
    assert float(jnp.max(jnp.abs(a.x_out - plain.x_out))) > 1e-3  # dropout is applied


def test_registry_and_config_agree_on_the_models_and_activations():
    assert set(models.REGISTRY) == set(config.MODELS)
    assert set(base.ACTIVATIONS) == set(config.ACTIVATIONS)
