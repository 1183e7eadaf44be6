"""The review's DKF (dvae_jax/models/dkf.py) against the float64 NumPy loop of the review's module
(tests/reference_review.py), its gradients, its state_dict, its final carry and its generation."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dvae_jax import config, drivers, generate, interop, models
from dvae_jax.errors import ConfigError
from dvae_jax.models import dkf
from tests import model_checks
from tests import reference_review as ref

TINY = config.ModelConfig(model="dkf", x_dim=7, z_dim=3, dense_x_gx=(6,), dim_rnn_gx=5, dense_ztm1_g=(4,),
                          dense_g_z=(4,), dense_z_x=(4, 6))
CASES = {
    "is_gaussian_prior": TINY,
    "gaussian_likelihood_2_layers": dataclasses.replace(TINY, likelihood="gaussian", num_rnn_gx=2),
    "student_t_learned_nu": dataclasses.replace(TINY, prior="student_t", learn_nu=True),
    # dense_ztm1_g = '' crashes in the review: here linear_last reads z_{t-1} directly
    "no_hidden_layers": dataclasses.replace(TINY, dense_x_gx=(), dense_ztm1_g=(), dense_g_z=(), dense_z_x=()),
    "bidirectional": dataclasses.replace(TINY, bidir_gx=True, dense_ztm1_g=(4, 3), dense_g_z=(),
                                         activation="relu"),
    "bidirectional_student_t": dataclasses.replace(TINY, bidir_gx=True, prior="student_t", learn_nu=True,
                                                   likelihood="gaussian", learn_x_var=False),
    # a stacked bidirectional nn.LSTM: layer 1 of each direction reads [fwd, bwd] of layer 0
    "bidirectional_2_layers": dataclasses.replace(TINY, bidir_gx=True, num_rnn_gx=2),
}

# The review's DKF(cfg_dkf.ini) state_dict (docs: /work/notes/issue15_review_state_dicts.txt).
REVIEW_STATE_DICT = {
    "mlp_x_gx.linear0.weight": (256, 513), "mlp_x_gx.linear0.bias": (256,),
    "rnn_gx.weight_ih_l0": (512, 256), "rnn_gx.weight_hh_l0": (512, 128),
    "rnn_gx.bias_ih_l0": (512,), "rnn_gx.bias_hh_l0": (512,),
    "mlp_ztm1_g.linear0.weight": (32, 16), "mlp_ztm1_g.linear0.bias": (32,),
    "mlp_ztm1_g.linear_last.weight": (128, 32), "mlp_ztm1_g.linear_last.bias": (128,),
    "mlp_g_z.linear0.weight": (32, 128), "mlp_g_z.linear0.bias": (32,),
    "inf_mean.weight": (16, 32), "inf_mean.bias": (16,),
    "inf_logvar.weight": (16, 32), "inf_logvar.bias": (16,),
    "mlp_gate.linear1.weight": (16, 16), "mlp_gate.linear1.bias": (16,),
    "mlp_gate.linear2.weight": (16, 16), "mlp_gate.linear2.bias": (16,),
    "mlp_z_prop.linear1.weight": (16, 16), "mlp_z_prop.linear1.bias": (16,),
    "mlp_z_prop.linear2.weight": (16, 16), "mlp_z_prop.linear2.bias": (16,),
    "prior_mean.weight": (16, 16), "prior_mean.bias": (16,),
    "prior_logvar.1.weight": (16, 16), "prior_logvar.1.bias": (16,),
    "mlp_z_x.linear0.weight": (32, 16), "mlp_z_x.linear0.bias": (32,),
    "mlp_z_x.linear1.weight": (64, 32), "mlp_z_x.linear1.bias": (64,),
    "mlp_z_x.linear2.weight": (128, 64), "mlp_z_x.linear2.bias": (128,),
    "mlp_z_x.linear3.weight": (256, 128), "mlp_z_x.linear3.bias": (256,),
    "gen_out.weight": (513, 256), "gen_out.bias": (513,),
}


def tm(a):
    return jnp.swapaxes(a, 0, 1)


@pytest.mark.parametrize("name", list(CASES))
def test_forward_matches_the_reviews_loop(name):
    # given a tiny configuration, when the JAX pass and the float64 NumPy loop of the review's
    # module read the same parameters, frames and noise, then they agree to round-off
    errs = model_checks.assert_matches_reference(CASES[name])
    print(name, {k: f"{v:.1e}" for k, v in errs.items()})


@pytest.mark.parametrize("name", ["is_gaussian_prior", "bidirectional_student_t"])
def test_gradients_match_finite_differences(name):
    model_checks.assert_gradients_match_finite_differences(CASES[name])


def test_preset_has_the_reviews_count_and_state_dict():
    # given the review's speech preset, then its parameter count and state_dict are the review's
    cfg = config.model_preset("dkf_review_speech")
    assert models.count_params(models.init(cfg, jax.random.PRNGKey(0))) == 516_641
    model_checks.assert_state_dict_round_trip(cfg, REVIEW_STATE_DICT)


@pytest.mark.parametrize("name", ["bidirectional", "no_hidden_layers", "gaussian_likelihood_2_layers"])
def test_round_trip_of_tiny_layouts(name):
    model_checks.assert_state_dict_round_trip(CASES[name])


def test_bidirectional_layout_has_the_reverse_weights():
    sd = interop.variables_to_state_dict(models.init(CASES["bidirectional"], jax.random.PRNGKey(0)),
                                         CASES["bidirectional"])
    assert sd["rnn_gx.weight_ih_l0_reverse"].shape == (20, 6)
    assert sd["mlp_ztm1_g.linear_last.weight"].shape == (5, 3)


@pytest.mark.parametrize("name", ["is_gaussian_prior", "bidirectional"])
def test_final_carry_is_the_references_last_latent(name):
    # given a teacher-forced pass in float64, then the carry is z_T, the reference's final state
    cfg = CASES[name]
    with jax.enable_x64(True):
        v, x, noise = model_checks.make(cfg, 4, dtype=jnp.float64)
        _, carry = models.forward(cfg, v, x, noise)
        want = ref.forward(cfg, interop.variables_to_state_dict(v, cfg), x, noise)["final"]["z_prev"]
        assert carry.dtype == jnp.float64
        assert model_checks.rel_err(carry, want) < 1e-12


@pytest.mark.parametrize("name", ["is_gaussian_prior", "student_t_learned_nu", "bidirectional"])
def test_generation_is_the_prior_pass(name):
    model_checks.assert_generation_is_the_prior_pass(CASES[name])


def test_the_prior_sampled_per_step_is_the_batched_transition():
    # given the teacher-forced pass with z from the prior, then every z_t is loc_t + T scale_t
    # noise_t with (loc, logvar) of the transition computed after the scan over z_{t-1}
    cfg = CASES["student_t_learned_nu"]
    model, v = models.build(cfg), models.init(cfg, jax.random.PRNGKey(0))
    _, x, _ = model_checks.make(cfg, 1, b=2, t=6)
    noise = generate.draw_noise(cfg, v, jax.random.PRNGKey(3), 6, 2).z
    out, carry = drivers.teacher_forced(model, v, x, noise, latent="prior", temperature=0.7)
    want = out.prior_loc + 0.7 * jnp.exp(0.5 * out.prior_logvar) * noise
    np.testing.assert_allclose(out.z, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(carry, out.z[:, -1])


def test_per_step_emission_equals_the_batched_decoder():
    # given a carry and prior noise, when frames are emitted one step at a time (feed 'model':
    # emit, frame_in, leave) and when the latent chain is decoded at once (free_run), then the
    # frames and the final carry agree
    cfg = TINY
    model, v = models.build(cfg), models.init(cfg, jax.random.PRNGKey(0))
    noise = jax.random.normal(jax.random.PRNGKey(1), (2, 5, cfg.z_dim))
    carry = jax.random.normal(jax.random.PRNGKey(2), (2, cfg.z_dim))
    end, out = drivers._scan(model, model.params(v), carry, drivers.StepIn(None, tm(noise)), "prior", "model",
                             temperature=0.8)
    x_free, end_free = drivers.free_run(model, v, carry, noise, temperature=0.8)
    np.testing.assert_allclose(tm(out.x), x_free, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(end, end_free, rtol=1e-6)


def test_priming_continues_from_the_primes_last_latent_only():
    # given a prime, when generation is primed, then the carry at the end of the prime is exactly
    # the posterior's z_P, and the continuation is the free run from z_P alone (the same for any
    # prime ending in the same latent); another prime gives another continuation
    cfg = TINY
    model, v = models.build(cfg), models.init(cfg, jax.random.PRNGKey(0))
    _, prime, _ = model_checks.make(cfg, 1, b=2, t=4)
    _, other, _ = model_checks.make(cfg, 2, b=2, t=4)
    noise = generate.draw_noise(cfg, v, jax.random.PRNGKey(3), 9, 2, posterior_frames=4).z
    frames, carry_p, _ = drivers.primed(model, v, prime, noise)
    out, _ = models.forward(cfg, v, prime, noise[:, :4])
    np.testing.assert_array_equal(carry_p, out.z[:, -1])
    tail, _ = drivers.free_run(model, v, out.z[:, -1], noise[:, 4:])
    np.testing.assert_allclose(frames[:, 4:], tail, rtol=1e-6, atol=1e-7)
    frames_other, _, _ = drivers.primed(model, v, other, noise)
    assert float(jnp.max(jnp.abs(frames_other[:, 4:] - frames[:, 4:]))) > 1e-4


def test_the_primes_posterior_sees_the_prime_only():
    # given a prime that is the start of a longer sequence, then the prime's latents are the
    # smoothing posterior of the prime alone: they differ from the longer sequence's first ones
    # (its backward LSTM reads later frames), and equal a pass over the prime by itself
    cfg = TINY
    v, x, noise = model_checks.make(cfg, 5, b=2, t=8)
    whole, _ = models.forward(cfg, v, x, noise)
    part, _ = models.forward(cfg, v, x[:, :4], noise[:, :4])
    assert float(jnp.max(jnp.abs(whole.mean_q[:, :4] - part.mean_q))) > 1e-4
    # and the last frame reaches the first latent (backward in time)
    bumped = x.at[:, -1].multiply(3.0)
    later, _ = models.forward(cfg, v, bumped, noise)
    assert float(jnp.max(jnp.abs(later.mean_q[:, 0] - whole.mean_q[:, 0]))) > 1e-6


def test_log_softplus_is_finite_everywhere():
    a = jnp.array([-1e4, -200.0, -60.0, -3.0, 0.0, 5.0, 80.0])
    y = dkf.log_softplus(a)
    g = jax.grad(lambda a: dkf.log_softplus(a).sum())(a)
    assert bool(jnp.all(jnp.isfinite(y))) and bool(jnp.all(jnp.isfinite(g)))
    np.testing.assert_allclose(y[3:], np.log(np.log1p(np.exp(np.asarray(a[3:], np.float64)))), rtol=1e-6)
    np.testing.assert_allclose(y[:3], a[:3])


def test_dropout_is_applied_with_a_key_and_deterministic_without():
    cfg = dataclasses.replace(TINY, dropout_p=0.5)
    v, x, _ = model_checks.make(cfg)
    eps = jnp.zeros((*x.shape[:2], cfg.z_dim))
    plain, _ = models.forward(cfg, v, x, eps)
    a, _ = models.forward(cfg, v, x, eps, key=jax.random.PRNGKey(5), deterministic=False)
    b, _ = models.forward(cfg, v, x, eps, key=jax.random.PRNGKey(5), deterministic=False)
    c, _ = models.forward(cfg, v, x, eps, key=jax.random.PRNGKey(6), deterministic=False)
    np.testing.assert_array_equal(a.x_out, b.x_out)  # same key, same masks
    assert float(jnp.max(jnp.abs(a.x_out - c.x_out))) > 1e-3  # another key, other masks
    assert float(jnp.max(jnp.abs(a.mean_q - plain.mean_q))) > 1e-3  # inference too
    no_drop, _ = models.forward(TINY, v, x, eps)
    np.testing.assert_array_equal(plain.x_out, no_drop.x_out)  # deterministic without a key


@pytest.mark.parametrize("changes,key", [
    ({"separate_heads": True}, "separate_heads"),
    ({"rnn_cell": "gru"}, "rnn_cell"),
])
def test_options_it_cannot_honour_are_config_errors(changes, key):
    with pytest.raises(ConfigError, match=f"model.{key}"):
        models.build(dataclasses.replace(TINY, **changes))
