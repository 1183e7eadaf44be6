"""The review's frame-wise VAE (dvae_jax/models/vae.py) against the float64 NumPy loop of the review's
module (tests/reference_review.py), its gradients, its state_dict and its generation."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dvae_jax import config, drivers, generate, models
from dvae_jax.errors import ConfigError
from tests import model_checks

TINY = config.ModelConfig(model="vae", x_dim=7, z_dim=3, dense_x_z=(5, 4))
CASES = {
    "is_gaussian_prior": TINY,
    "gaussian_likelihood": dataclasses.replace(TINY, likelihood="gaussian"),
    "fixed_x_var_relu": dataclasses.replace(TINY, likelihood="gaussian", learn_x_var=False, activation="relu"),
    "student_t_learned_nu": dataclasses.replace(TINY, prior="student_t", learn_nu=True),
    "no_hidden_layer": dataclasses.replace(TINY, dense_x_z=()),  # the review crashes here
    "bernoulli": dataclasses.replace(TINY, likelihood="bernoulli", dense_x_z=(6,)),
}

# The review's VAE(cfg_vae.ini) state_dict (docs: /work/notes/issue15_review_state_dicts.txt).
REVIEW_STATE_DICT = {
    "mlp_x_z.linear0.weight": (128, 513), "mlp_x_z.linear0.bias": (128,),
    "inf_mean.weight": (16, 128), "inf_mean.bias": (16,),
    "inf_logvar.weight": (16, 128), "inf_logvar.bias": (16,),
    "mlp_z_x.linear0.weight": (128, 16), "mlp_z_x.linear0.bias": (128,),
    "gen_out.weight": (513, 128), "gen_out.bias": (513,),
}


@pytest.mark.parametrize("name", list(CASES))
def test_forward_matches_the_reviews_loop(name):
    # given a tiny configuration, when the JAX pass and the float64 NumPy loop of the review's
    # module read the same parameters, frames and noise, then they agree to round-off
    errs = model_checks.assert_matches_reference(CASES[name])
    print(name, {k: f"{v:.1e}" for k, v in errs.items()})


@pytest.mark.parametrize("name", ["is_gaussian_prior", "student_t_learned_nu"])
def test_gradients_match_finite_differences(name):
    model_checks.assert_gradients_match_finite_differences(CASES[name])


def test_preset_has_the_reviews_count_and_state_dict():
    # given the review's speech preset, then its parameter count and state_dict are the review's
    cfg = config.model_preset("vae_review_speech")
    assert models.count_params(models.init(cfg, jax.random.PRNGKey(0))) == 138_273
    model_checks.assert_state_dict_round_trip(cfg, REVIEW_STATE_DICT)


@pytest.mark.parametrize("name", ["is_gaussian_prior", "no_hidden_layer"])
def test_round_trip_of_tiny_layouts(name):
    model_checks.assert_state_dict_round_trip(CASES[name])


def test_final_carry_is_empty_like_the_references():
    # given a teacher-forced pass, then nothing crosses frames: the carry is () (the reference's
    # ``final`` is None)
    cfg = TINY
    v, x, noise = model_checks.make(cfg)
    _, carry = models.forward(cfg, v, x, noise)
    assert carry == ()


@pytest.mark.parametrize("name", ["is_gaussian_prior", "student_t_learned_nu", "gaussian_likelihood"])
def test_generation_is_the_prior_pass(name):
    model_checks.assert_generation_is_the_prior_pass(CASES[name])


def test_per_step_emission_equals_the_batched_decoder():
    # given prior noise, when frames are emitted one step at a time (feed 'model': emit,
    # frame_in, leave) and when the latent chain is decoded at once (free_run), then they agree
    cfg = TINY
    model, v = models.build(cfg), models.init(cfg, jax.random.PRNGKey(0))
    noise = jax.random.normal(jax.random.PRNGKey(1), (2, 5, cfg.z_dim))
    p = model.params(v)
    _, out = drivers._scan(model, p, (), drivers.StepIn(None, base_tm(noise)), "prior", "model",
                           temperature=0.8)
    x_free, carry = drivers.free_run(model, v, None, noise, temperature=0.8)
    np.testing.assert_allclose(base_tm(out.x), x_free, rtol=1e-6, atol=1e-7)
    assert carry == ()


def base_tm(a):
    return jnp.swapaxes(a, 0, 1)


def test_priming_continuation_does_not_depend_on_the_prime():
    # given two different primes and the same noise, when generation is primed by each, then the
    # prime's frames differ (its reconstruction) and the continuation is the same: nothing
    # crosses frames
    cfg = TINY
    model, v = models.build(cfg), models.init(cfg, jax.random.PRNGKey(0))
    _, prime_a, _ = model_checks.make(cfg, 1, b=2, t=4)
    _, prime_b, _ = model_checks.make(cfg, 2, b=2, t=4)
    noise = generate.draw_noise(cfg, v, jax.random.PRNGKey(3), 9, 2, posterior_frames=4).z
    a, _, _ = drivers.primed(model, v, prime_a, noise)
    b, _, _ = drivers.primed(model, v, prime_b, noise)
    assert float(jnp.max(jnp.abs(a[:, :4] - b[:, :4]))) > 1e-3
    np.testing.assert_array_equal(a[:, 4:], b[:, 4:])
    cold, _ = drivers.free_run(model, v, None, noise[:, 4:])
    np.testing.assert_allclose(a[:, 4:], cold, rtol=1e-6)  # the same as a cold start


def test_dropout_is_applied_with_a_key_and_deterministic_without():
    cfg = dataclasses.replace(TINY, dropout_p=0.5)
    v, x, _ = model_checks.make(cfg)
    eps = jnp.zeros((*x.shape[:2], cfg.z_dim))
    plain, _ = models.forward(cfg, v, x, eps)
    again, _ = models.forward(cfg, v, x, eps)
    a, _ = models.forward(cfg, v, x, eps, key=jax.random.PRNGKey(5), deterministic=False)
    b, _ = models.forward(cfg, v, x, eps, key=jax.random.PRNGKey(5), deterministic=False)
    c, _ = models.forward(cfg, v, x, eps, key=jax.random.PRNGKey(6), deterministic=False)
    np.testing.assert_array_equal(plain.x_out, again.x_out)
    np.testing.assert_array_equal(a.x_out, b.x_out)  # same key, same masks
    assert float(jnp.max(jnp.abs(a.x_out - c.x_out))) > 1e-3  # another key, other masks
    assert float(jnp.max(jnp.abs(a.mean_q - plain.mean_q))) > 1e-3  # the encoder's too
    # without dropout the output equals the cfg without dropout
    no_drop, _ = models.forward(TINY, v, x, eps)
    np.testing.assert_array_equal(plain.x_out, no_drop.x_out)


@pytest.mark.parametrize("key,value", [("separate_heads", True), ("rnn_cell", "gru")])
def test_options_it_cannot_honour_are_config_errors(key, value):
    with pytest.raises(ConfigError, match=f"model.{key}"):
        models.build(dataclasses.replace(TINY, **{key: value}))
