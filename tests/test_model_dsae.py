"""DSAE (dvae_jax/models/dsae.py) against the float64 NumPy loop of the review's module
(tests/reference_review.py), its gradients, its state_dict, its generation and priming."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dvae_jax import drivers, generate, interop, models
from dvae_jax.config import MODEL_PRESETS, ModelConfig
from dvae_jax.errors import ConfigError
from tests import model_checks as mc
from tests import reference_review as ref

# Tiny layouts. PLAIN: the review's speech layout in miniature (every optional MLP empty);
# DEEP: a hidden layer in every MLP and two layers in every recurrence, Gaussian likelihood,
# Student-t prior with learned nu; WIDE_OUT: no decoder hidden layer (the review's code needs one;
# ours maps gen_out straight from [v, z]), a fixed-variance Gaussian, relu.
PLAIN = ModelConfig(model="dsae", x_dim=7, z_dim=3, v_dim=2, dim_rnn_gv=5, dim_rnn_gxv=4,
                    dim_rnn_gz=6, dim_rnn_prior=5, dense_vz_x=(8,))
DEEP = dataclasses.replace(
    PLAIN, dense_x=(6,), dense_gv_v=(5,), dense_xv_gxv=(7,), dense_gxv_gz=(4,), dense_vz_x=(6, 5),
    num_rnn_gv=2, num_rnn_gxv=2, num_rnn_gz=2, num_rnn_prior=2, likelihood="gaussian",
    prior="student_t", learn_nu=True, nu=4.0)
WIDE_OUT = dataclasses.replace(PLAIN, dense_vz_x=(), likelihood="gaussian", learn_x_var=False,
                               activation="relu", v_dim=4)

# The review's DSAE state_dict for config/speech/cfg_dsae.ini (measured: issue15 design notes).
REVIEW_STATE_DICT = {
    "rnn_g_v.weight_ih_l0": (512, 513),
    "rnn_g_v.weight_hh_l0": (512, 128),
    "rnn_g_v.bias_ih_l0": (512,),
    "rnn_g_v.bias_hh_l0": (512,),
    "rnn_g_v.weight_ih_l0_reverse": (512, 513),
    "rnn_g_v.weight_hh_l0_reverse": (512, 128),
    "rnn_g_v.bias_ih_l0_reverse": (512,),
    "rnn_g_v.bias_hh_l0_reverse": (512,),
    "inf_v_mean.weight": (16, 256),
    "inf_v_mean.bias": (16,),
    "inf_v_logvar.weight": (16, 256),
    "inf_v_logvar.bias": (16,),
    "rnn_g_xv.weight_ih_l0": (512, 529),
    "rnn_g_xv.weight_hh_l0": (512, 128),
    "rnn_g_xv.bias_ih_l0": (512,),
    "rnn_g_xv.bias_hh_l0": (512,),
    "rnn_g_xv.weight_ih_l0_reverse": (512, 529),
    "rnn_g_xv.weight_hh_l0_reverse": (512, 128),
    "rnn_g_xv.bias_ih_l0_reverse": (512,),
    "rnn_g_xv.bias_hh_l0_reverse": (512,),
    "rnn_g_z.weight_ih_l0": (128, 256),
    "rnn_g_z.weight_hh_l0": (128, 128),
    "rnn_g_z.bias_ih_l0": (128,),
    "rnn_g_z.bias_hh_l0": (128,),
    "inf_z_mean.weight": (16, 128),
    "inf_z_mean.bias": (16,),
    "inf_z_logvar.weight": (16, 128),
    "inf_z_logvar.bias": (16,),
    "rnn_prior.weight_ih_l0": (512, 16),
    "rnn_prior.weight_hh_l0": (512, 128),
    "rnn_prior.bias_ih_l0": (512,),
    "rnn_prior.bias_hh_l0": (512,),
    "prior_mean.weight": (16, 128),
    "prior_mean.bias": (16,),
    "prior_logvar.weight": (16, 128),
    "prior_logvar.bias": (16,),
    "mlp_vz_x.linear0.weight": (32, 32),
    "mlp_vz_x.linear0.bias": (32,),
    "mlp_vz_x.linear1.weight": (64, 32),
    "mlp_vz_x.linear1.bias": (64,),
    "mlp_vz_x.linear2.weight": (128, 64),
    "mlp_vz_x.linear2.bias": (128,),
    "mlp_vz_x.linear3.weight": (256, 128),
    "mlp_vz_x.linear3.bias": (256,),
    "gen_out.weight": (513, 256),
    "gen_out.bias": (513,),
}


@pytest.mark.parametrize("cfg", [PLAIN, DEEP, WIDE_OUT], ids=["plain", "deep", "wide_out"])
def test_matches_the_review_reference(cfg):
    # Given the same parameters (as the review's state_dict) and noise, when both run,
    # then every output, v and the loss agree to round-off (float64) and 1e-4 (float32).
    errs = mc.assert_matches_reference(cfg)
    print(cfg.likelihood, cfg.prior, {k: f"{e:.1e}" for k, e in errs.items()})


@pytest.mark.parametrize("cfg", [PLAIN, DEEP], ids=["plain", "deep"])
def test_gradients_match_finite_differences(cfg):
    mc.assert_gradients_match_finite_differences(cfg)


def test_preset_has_the_reviews_parameter_count_and_names():
    # Given the speech preset, then its count and its state_dict are the review's module's.
    cfg = MODEL_PRESETS["dsae_review_speech"]
    assert models.count_params(models.init(cfg, jax.random.PRNGKey(0))) == 1_650_241
    mc.assert_state_dict_round_trip(cfg, REVIEW_STATE_DICT)


@pytest.mark.parametrize("cfg", [PLAIN, DEEP], ids=["plain", "deep"])
def test_final_carry_is_the_references_state(cfg):
    # Given a teacher-forced pass, then the carry holds v, LSTM_prior's state after reading
    # [0, z_1, ..., z_{T-1}] and z_T, as the plain loop leaves them.
    with jax.enable_x64(True):
        variables, x, noise = mc.make(cfg, 4, dtype=jnp.float64)
        _, carry = models.forward(cfg, variables, x, noise)
        want = ref.forward(cfg, interop.variables_to_state_dict(variables, cfg), x, noise)["final"]
    np.testing.assert_allclose(carry.v, want["v"], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(carry.z_prev, want["z_prev"], rtol=1e-12, atol=1e-13)
    for k, (h, c) in enumerate(want["rnn_prior"]):
        np.testing.assert_allclose(carry.prior.h[k], h, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(carry.prior.c[k], c, rtol=1e-12, atol=1e-13)
    assert bool(jnp.all(carry.has_v))


@pytest.mark.parametrize("cfg", [PLAIN, DEEP], ids=["gaussian", "student_t"])
def test_generation_is_the_prior_pass(cfg):
    mc.assert_generation_is_the_prior_pass(cfg)


def _prime_and_noise(cfg, seed, p_len=4, n=9):
    v = models.init(cfg, jax.random.PRNGKey(0))
    prime = mc.make(cfg, seed, b=2, t=p_len)[1]
    noise = generate.draw_noise(cfg, v, jax.random.PRNGKey(7), n, 2, posterior_frames=p_len).z
    return v, prime, noise


def test_priming_keeps_the_primes_v_and_continues_its_prior_chain():
    cfg, p_len = PLAIN, 4
    model = models.build(cfg)
    v, prime, noise = _prime_and_noise(cfg, 1, p_len)
    # Given a prime, when generation is primed with it,
    frames, carry_p, carry = drivers.primed(model, v, prime, noise)
    out, _ = models.forward(cfg, v, prime, noise[:, :p_len])
    # then the carry at the end of the prime holds its posterior v sample and its last z, and
    # the whole continuation keeps that v (the tail's v noise is not read),
    np.testing.assert_array_equal(carry_p.v, out.seq.z)
    np.testing.assert_array_equal(carry_p.z_prev, out.z[:, -1])
    np.testing.assert_array_equal(carry.v, out.seq.z)
    other_v = noise.at[:, p_len:, cfg.z_dim:].set(5.0)
    np.testing.assert_array_equal(drivers.primed(model, v, prime, other_v)[0], frames)
    # and the continuation is the prior chain stepped from LSTM_prior's state and z_P: the
    # teacher-forced pass from the prior over the continuation's frames, from that carry.
    tail = frames[:, p_len:]
    out_tail, _ = drivers.teacher_forced(model, v, tail, noise[:, p_len:], carry_p, latent="prior")
    np.testing.assert_allclose(models.decode_frames(cfg, out_tail.x_out), tail, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out_tail.seq.z, carry_p.v)


def test_two_primes_give_different_continuations():
    # Given the same noise and two different primes, then the continuations differ (through
    # the prime's v and the prior chain's state), and so do their carries' v.
    cfg = PLAIN
    model = models.build(cfg)
    v, prime_a, noise = _prime_and_noise(cfg, 1)
    prime_b = mc.make(cfg, 2, b=2, t=4)[1]
    fa, ca, _ = drivers.primed(model, v, prime_a, noise)
    fb, cb, _ = drivers.primed(model, v, prime_b, noise)
    assert not np.allclose(fa[:, 4:], fb[:, 4:])
    assert not np.allclose(ca.v, cb.v) and not np.allclose(ca.prior.h[0], cb.prior.h[0])
    # Replacing only the primed v changes the continuation too (the decoder reads v).
    fc, _ = drivers.free_run(model, v, ca._replace(v=cb.v), noise[:, 4:])
    assert not np.allclose(fc, fa[:, 4:])


def test_cold_start_draws_v_from_the_tempered_prior():
    # Given a cold start, then v = temperature * its noise (N(0, I) prior), once per sequence.
    cfg = DEEP
    model = models.build(cfg)
    v, _, noise = _prime_and_noise(cfg, 1)
    _, carry = drivers.free_run(model, v, None, noise, temperature=0.5)
    np.testing.assert_allclose(carry.v, 0.5 * noise[:, 0, cfg.z_dim:], rtol=1e-6)
    assert bool(jnp.all(carry.has_v))


def test_dropout_applies_with_a_key_only():
    cfg = dataclasses.replace(DEEP, dropout_p=0.3)
    variables, x, noise = mc.make(cfg, 1)
    # Given no key, then the pass is deterministic and is the dropout-free one;
    base_out = models.forward(cfg, variables, x, noise)[0]
    np.testing.assert_array_equal(models.forward(cfg, variables, x, noise)[0].x_out, base_out.x_out)
    no_drop = models.forward(dataclasses.replace(cfg, dropout_p=0.0), variables, x, noise)[0]
    np.testing.assert_array_equal(no_drop.x_out, base_out.x_out)
    # given keys, then dropout changes v, z and the output, and differs between keys.
    k1, k2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
    d1 = models.forward(cfg, variables, x, noise, key=k1, deterministic=False)[0]
    d2 = models.forward(cfg, variables, x, noise, key=k2, deterministic=False)[0]
    for field in ("x_out", "mean_q"):
        assert not np.allclose(getattr(d1, field), getattr(base_out, field))
        assert not np.allclose(getattr(d1, field), getattr(d2, field))
    assert not np.allclose(d1.seq.mean_q, base_out.seq.mean_q)


@pytest.mark.parametrize("key,value", [("rnn_cell", "gru"), ("separate_heads", True),
                                       ("lstm_impl", "cudnn")])
def test_unsupported_options_are_config_errors(key, value):
    with pytest.raises(ConfigError, match=f"model.{key}="):
        models.build(dataclasses.replace(PLAIN, **{key: value}))


def test_paper_init_keeps_the_elman_layer_one_orthogonal_block():
    # Given DSAE's one-gate rnn_g_z (H = 6, not a multiple of 4) and init=paper
    cfg = dataclasses.replace(PLAIN, dim_rnn_gz=6, init="paper")
    torch_like = models.init(dataclasses.replace(cfg, init="torch"), jax.random.PRNGKey(0))
    paper = models.init(cfg, jax.random.PRNGKey(0))
    # Then every leaf keeps its shape and the Elman layer's W_h is one orthogonal matrix
    assert jax.tree_util.tree_map(np.shape, paper) == jax.tree_util.tree_map(np.shape, torch_like)
    wh = np.asarray(paper["params"]["rnn_g_z"]["layer0"]["wh"])
    np.testing.assert_allclose(wh.T @ wh, np.eye(6), atol=1e-5)


def test_scheduled_sampling_is_refused():
    # DSAE never feeds a frame back: there is nothing to schedule.
    variables, x, noise = mc.make(PLAIN, 1)
    with pytest.raises(ConfigError, match="scheduled_sampling"):
        drivers.scheduled_sampling(models.build(PLAIN), variables, x, noise, jnp.ones(x.shape[:2], bool))


def test_bfloat16_matmuls_stay_close_to_float32():
    # Given bfloat16 kernels (model.matmul_dtype), then outputs stay float32 and near the float32 pass.
    variables, x, noise = mc.make(DEEP, 1)
    want = models.forward(DEEP, variables, x, noise)[0]
    got = models.forward(dataclasses.replace(DEEP, matmul_dtype="bfloat16"), variables, x, noise)[0]
    assert got.x_out.dtype == jnp.float32
    for field in ("x_out", "prior_loc", "mean_q"):
        assert mc.rel_err(getattr(got, field), getattr(want, field)) < 2e-2
