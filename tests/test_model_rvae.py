"""RVAE (causal and non-causal) against the float64 NumPy loop of the review's rvae.py
(tests/reference_review.py), its state_dict, and what generation and priming mean for it."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dvae_jax import config, drivers, generate, interop, losses, models
from dvae_jax.errors import ConfigError
from tests import model_checks as mc
from tests import reference_review as ref

# The review's speech layout (every MLP empty, one layer per LSTM), shrunk.
CAUSAL = config.ModelConfig(model="rvae", x_dim=7, z_dim=3, dim_rnn_g_x=5, dim_rnn_g_z=4, dim_rnn_h=6)
NONCAUSAL = dataclasses.replace(CAUSAL, bidir_g_x=True, bidir_h=True)
# Hidden layers in every MLP and two stacked layers in every LSTM.
DEEP = {"dense_x_gx": (6, 5), "dense_z_gz": (4,), "dense_g_z": (6, 5), "dense_z_h": (5,),
        "dense_h_x": (6, 4), "num_rnn_g_x": 2, "num_rnn_g_z": 2, "num_rnn_h": 2}
STUDENT = {"prior": "student_t", "nu": 3.0, "learn_nu": True}
GAUSS = {"likelihood": "gaussian", "learn_x_var": True}

CASES = [
    pytest.param(CAUSAL, id="causal-is-gaussian-empty"),
    pytest.param(NONCAUSAL, id="noncausal-is-gaussian-empty"),
    pytest.param(dataclasses.replace(CAUSAL, **DEEP, **STUDENT), id="causal-is-student-deep"),
    pytest.param(dataclasses.replace(NONCAUSAL, **DEEP, **GAUSS), id="noncausal-gauss-gaussian-deep"),
    pytest.param(dataclasses.replace(NONCAUSAL, dense_g_z=(5,), **GAUSS, **STUDENT), id="noncausal-gauss-student"),
    pytest.param(dataclasses.replace(CAUSAL, bidir_g_x=True, likelihood="gaussian", learn_x_var=False,
                                     fixed_x_logvar=-0.3),
                 id="bidir_g_x-only-gauss_fixed"),
    pytest.param(dataclasses.replace(CAUSAL, bidir_h=True, **STUDENT, num_rnn_h=2, dense_g_z=(5,)),
                 id="bidir_h-only-student"),
]

# The review's build_RVAE(cfg_rvae_Causal.ini / cfg_rvae_NonCausal.ini).state_dict() (measured,
# /work/notes/issue15_review_state_dicts.txt).
REVIEW_CAUSAL = {
    "rnn_g_x.weight_ih_l0": (512, 513), "rnn_g_x.weight_hh_l0": (512, 128),
    "rnn_g_x.bias_ih_l0": (512,), "rnn_g_x.bias_hh_l0": (512,),
    "rnn_g_z.weight_ih_l0": (512, 16), "rnn_g_z.weight_hh_l0": (512, 128),
    "rnn_g_z.bias_ih_l0": (512,), "rnn_g_z.bias_hh_l0": (512,),
    "inf_mean.weight": (16, 256), "inf_mean.bias": (16,),
    "inf_logvar.weight": (16, 256), "inf_logvar.bias": (16,),
    "rnn_h.weight_ih_l0": (512, 16), "rnn_h.weight_hh_l0": (512, 128),
    "rnn_h.bias_ih_l0": (512,), "rnn_h.bias_hh_l0": (512,),
    "gen_out.weight": (513, 128), "gen_out.bias": (513,),
}
REVIEW_NONCAUSAL = {
    "rnn_g_x.weight_ih_l0": (512, 513), "rnn_g_x.weight_hh_l0": (512, 128),
    "rnn_g_x.bias_ih_l0": (512,), "rnn_g_x.bias_hh_l0": (512,),
    "rnn_g_x.weight_ih_l0_reverse": (512, 513), "rnn_g_x.weight_hh_l0_reverse": (512, 128),
    "rnn_g_x.bias_ih_l0_reverse": (512,), "rnn_g_x.bias_hh_l0_reverse": (512,),
    "rnn_g_z.weight_ih_l0": (512, 16), "rnn_g_z.weight_hh_l0": (512, 128),
    "rnn_g_z.bias_ih_l0": (512,), "rnn_g_z.bias_hh_l0": (512,),
    "inf_mean.weight": (16, 384), "inf_mean.bias": (16,),
    "inf_logvar.weight": (16, 384), "inf_logvar.bias": (16,),
    "rnn_h.weight_ih_l0": (512, 16), "rnn_h.weight_hh_l0": (512, 128),
    "rnn_h.bias_ih_l0": (512,), "rnn_h.bias_hh_l0": (512,),
    "rnn_h.weight_ih_l0_reverse": (512, 16), "rnn_h.weight_hh_l0_reverse": (512, 128),
    "rnn_h.bias_ih_l0_reverse": (512,), "rnn_h.bias_hh_l0_reverse": (512,),
    "gen_out.weight": (513, 256), "gen_out.bias": (513,),
}


@pytest.mark.parametrize("cfg", CASES)
def test_matches_the_review_loop(cfg):
    # Given a tiny RVAE and the review's loop on its exported state_dict, same frames and noise,
    # when both run the teacher-forced pass and the loss,
    # then every output agrees to round-off in float64 (1e-4 in float32).
    errs = mc.assert_matches_reference(cfg)
    print(cfg.bidir_g_x, cfg.bidir_h, {k: f"{v:.1e}" for k, v in errs.items()})


@pytest.mark.parametrize("cfg", [
    pytest.param(dataclasses.replace(CAUSAL, **DEEP, **STUDENT), id="causal-deep-student"),
    pytest.param(dataclasses.replace(NONCAUSAL, dense_g_z=(5,), num_rnn_h=2, **GAUSS), id="noncausal-gauss"),
])
def test_gradients_match_finite_differences(cfg):
    # Given a tiny RVAE in float64, when the ELBO's gradient is taken,
    # then it agrees with central differences at random parameters.
    mc.assert_gradients_match_finite_differences(cfg)


@pytest.mark.parametrize("preset, count, names", [
    ("rvae_causal_review_speech", 553_121, REVIEW_CAUSAL),
    ("rvae_noncausal_review_speech", 1_026_849, REVIEW_NONCAUSAL),
])
def test_preset_is_the_review_module(preset, count, names):
    # Given the review's speech preset, when it is declared and exported,
    # then its size and its state_dict's names and shapes are the review module's, and export
    # then import is the identity.
    cfg = config.MODEL_PRESETS[preset]
    assert models.count_params(models.init(cfg, jax.random.PRNGKey(0))) == count
    mc.assert_state_dict_round_trip(cfg, names)


@pytest.mark.parametrize("cfg", [dataclasses.replace(CAUSAL, **DEEP), dataclasses.replace(NONCAUSAL, **DEEP)],
                         ids=["causal", "noncausal"])
def test_final_carry_is_the_reference_state(cfg):
    # Given a pass over real frames in float64,
    # when its final carry is compared with the review loop's recurrent states,
    # then LSTM_g_z's state (every layer), z_T and LSTM_h's state agree (non-causal: the carry
    # holds the forward direction's state after frame T, which the loop reports for the top layer).
    with jax.enable_x64(True):
        variables, x, noise = mc.make(cfg, 4, dtype=jnp.float64)
        _, carry = models.forward(cfg, variables, x, noise)
        want = ref.forward(cfg, interop.variables_to_state_dict(variables, cfg), x, noise)["final"]
    for k, (h, c) in enumerate(want["rnn_g_z"]):
        np.testing.assert_allclose(carry.g_z.h[k], h, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(carry.g_z.c[k], c, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(carry.z_prev, want["z_prev"], rtol=1e-10, atol=1e-12)
    layers = [want["rnn_h"]] if cfg.bidir_h else want["rnn_h"]
    top = len(carry.h.h) - len(layers)
    for k, (h, c) in enumerate(layers):
        np.testing.assert_allclose(carry.h.h[top + k], h, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(carry.h.c[top + k], c, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cfg", [
    pytest.param(dataclasses.replace(CAUSAL, num_rnn_h=2, dense_z_h=(4,)), id="causal"),
    pytest.param(dataclasses.replace(NONCAUSAL, num_rnn_h=2, **STUDENT), id="noncausal-student"),
])
def test_generation_is_the_prior_pass(cfg):
    # Given the state after a prime, when the model free-runs and when the teacher-forced pass
    # draws z from the prior over the generated frames (same noise),
    # then frames and final states agree (the non-causal decoder decodes the whole sequence
    # jointly in both), cold starts follow their key and priming's carry is the pass's.
    model = models.build(cfg)
    assert model.causal_decoder == (not cfg.bidir_h) and not model.feeds_back_x
    mc.assert_generation_is_the_prior_pass(cfg)


def _prime(cfg, p_len=4, total=9):
    variables, x, _ = mc.make(cfg, 7, b=2, t=total)
    noise = generate.draw_noise(cfg, variables, jax.random.PRNGKey(8), total, 2, posterior_frames=p_len).z
    return models.build(cfg), variables, x, noise


def test_causal_priming_continues_from_the_decoder_state_after_the_prime():
    # Given a causal RVAE and a prime of 4 frames taken from a longer sequence,
    cfg = CAUSAL
    model, v, x, noise = _prime(cfg)
    prime = x[:, :4]
    # when it is primed for 9 frames,
    frames, carry_p, _ = drivers.primed(model, v, prime, noise)
    # then the first frames are the prime's reconstruction, whose posterior saw the prime only
    # (its backward g_x reads x_{t:4}: the pass over the whole sequence differs),
    out_p, _ = models.forward(cfg, v, prime, noise[:, :4])
    np.testing.assert_allclose(frames[:, :4], models.decode_frames(cfg, out_p.x_out), rtol=1e-6)
    out_full, _ = models.forward(cfg, v, x, noise)
    assert not np.allclose(out_full.mean_q[:, :4], out_p.mean_q)
    # the carry holds LSTM_h's state after z_4 (and the inference chain's),
    p = model.params(v)
    _, h_end = model.decode(p, jnp.swapaxes(out_p.z, 0, 1), model.initial_carry(p, 2), None)
    for a, b in zip(jax.tree_util.tree_leaves(carry_p.h), jax.tree_util.tree_leaves(h_end)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_array_equal(carry_p.z_prev, out_p.z[:, -1])
    # and the continuation is z ~ N(0, I) decoded from that state: it depends on the prime.
    x_tail, _ = model.decode(p, jnp.swapaxes(noise[:, 4:], 0, 1), carry_p, None)
    np.testing.assert_allclose(frames[:, 4:], models.decode_frames(cfg, x_tail), rtol=1e-6)
    other, _, _ = drivers.primed(model, v, x[:, 4:8], noise)
    assert not np.allclose(other[:, 4:], frames[:, 4:])


def test_noncausal_priming_decodes_prime_and_continuation_jointly():
    # Given a non-causal RVAE and a prime,
    cfg = NONCAUSAL
    model, v, x, noise = _prime(cfg)
    prime = x[:, :4]
    recon = models.decode_frames(cfg, models.forward(cfg, v, prime, noise[:, :4])[0].x_out)
    # when primed with as many frames as the prime, then it is the prime's reconstruction;
    same, _, _ = drivers.primed(model, v, prime, noise[:, :4])
    np.testing.assert_allclose(same, recon, rtol=1e-6)
    # when primed further, the prime's frames are re-decoded with the continuation's latents in
    # view (the backward direction of LSTM_h reads them), the real prime on request,
    frames, _, _ = drivers.primed(model, v, prime, noise)
    assert not np.allclose(frames[:, :4], recon)
    real, _, _ = drivers.primed(model, v, prime, noise, real_prime=True)
    np.testing.assert_array_equal(real[:, :4], prime)
    np.testing.assert_allclose(real[:, 4:], frames[:, 4:], rtol=1e-6)
    # and the continuation depends on the prime (through its latents, decoded jointly).
    other, _, _ = drivers.primed(model, v, x[:, 4:8], noise)
    assert not np.allclose(other[:, 4:], frames[:, 4:])


def test_dropout_follows_its_key_and_is_off_without_one():
    # Given an RVAE with dropout and hidden layers in every MLP,
    cfg = dataclasses.replace(CAUSAL, **DEEP, dropout_p=0.3)
    v, x, noise = mc.make(cfg, 9)
    key = jax.random.PRNGKey(1)

    def run(c, det, k=key):
        return models.forward(c, v, x, noise, k, deterministic=det)[0].x_out

    # when run deterministically, then it is the model without dropout;
    np.testing.assert_allclose(run(cfg, True), run(dataclasses.replace(cfg, dropout_p=0.0), True), rtol=1e-6)
    # when run with a key, then it differs, is reproducible, and changes with the key.
    a, b, c = run(cfg, False), run(cfg, False), run(cfg, False, jax.random.PRNGKey(2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, run(cfg, True)) and not np.allclose(a, c)


@pytest.mark.parametrize("key, value", [("rnn_cell", "gru"), ("separate_heads", True)])
def test_options_rvae_cannot_honour_are_refused(key, value):
    # Given an option the review's RVAE has no counterpart for, when the model is built,
    # then one ConfigError names the key.
    with pytest.raises(ConfigError, match=f"model.{key}"):
        models.build(dataclasses.replace(CAUSAL, **{key: value}))


def test_scheduled_sampling_is_refused():
    # Given an RVAE (no recurrence reads a frame), when scheduled sampling is asked for,
    # then a ConfigError says there is nothing to schedule.
    v, x, noise = mc.make(CAUSAL, 0)
    with pytest.raises(ConfigError, match="scheduled_sampling"):
        drivers.scheduled_sampling(models.build(CAUSAL), v, x, noise, jnp.zeros(x.shape[:2], bool))


def test_bfloat16_products_stay_near_float32():
    # Given a non-causal RVAE whose kernels multiply in bfloat16 (model.matmul_dtype),
    cfg = dataclasses.replace(NONCAUSAL, dense_g_z=(5,))
    v, x, noise = mc.make(cfg, 3)
    bf16 = dataclasses.replace(cfg, matmul_dtype="bfloat16")
    # when the pass and its gradient run,
    out32 = models.forward(cfg, v, x, noise)[0]
    out16 = models.forward(bf16, v, x, noise)[0]
    grad = jax.grad(lambda w: losses.elbo(bf16, models.forward(bf16, w, x, noise)[0], x)[0])(v)
    # then the outputs are bfloat16's rounding of float32's (not equal), the gradient finite.
    err = mc.rel_err(out16.x_out, out32.x_out)
    assert 0 < err < 3e-2, err
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grad))
