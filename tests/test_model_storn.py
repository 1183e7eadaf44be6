"""STORN (dvae_jax/models/storn.py) against the review's module (tests/reference_review.py, a
float64 NumPy loop on the review's state_dict), its gradients, its state_dict, and the meaning of
its generation: the only new model whose decoder recurrence reads the previous frame."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dvae_jax import config, drivers, generate, interop, models
from dvae_jax.errors import ConfigError
from tests import model_checks as mc
from tests import reference_review as ref

# Hidden layers in every MLP, two stacked layers in both LSTMs, IS likelihood, N(0, I) prior.
DEEP = config.ModelConfig(
    model="storn", x_dim=7, z_dim=3, dense_x_g=(6, 5), dim_rnn_g=5, num_rnn_g=2, dense_g_z=(6, 4),
    dense_z_h=(4, 5), dense_xtm1_h=(6,), dense_h_x=(5, 6), dim_rnn_h=8, num_rnn_h=2,
)
# Every MLP empty (the review's Identity), Gaussian likelihood, Student-t prior with learned nu.
EMPTY = config.ModelConfig(
    model="storn", x_dim=6, z_dim=2, dense_x_g=(), dim_rnn_g=4, dense_g_z=(), dense_z_h=(),
    dense_xtm1_h=(), dense_h_x=(), dim_rnn_h=5, likelihood="gaussian", learn_x_var=True,
    prior="student_t", nu=3.0, learn_nu=True,
)
# Some MLPs empty, some not; fixed-variance Gaussian likelihood, Student-t with a fixed nu.
MIXED = config.ModelConfig(
    model="storn", x_dim=5, z_dim=3, dense_x_g=(4,), dim_rnn_g=6, dense_g_z=(), dense_z_h=(4,),
    dense_xtm1_h=(), dense_h_x=(6,), dim_rnn_h=7, likelihood="gaussian", learn_x_var=False,
    fixed_x_logvar=-0.3, prior="student_t", nu=4.0, activation="relu",
)
CASES = [pytest.param(c, id=i) for c, i in ((DEEP, "deep_is_gaussian"), (EMPTY, "empty_gauss_studentt_learned"),
                                            (MIXED, "mixed_fixedvar_studentt"))]
GRU = dataclasses.replace(DEEP, rnn_cell="gru")

# The review's STORN built from config/speech/cfg_storn.ini: state_dict names and torch shapes
# (/work/notes/issue15_review_state_dicts.txt).
REVIEW_STATE_DICT = {
    "mlp_x_g.linear0.weight": (256, 513), "mlp_x_g.linear0.bias": (256,),
    "rnn_g.weight_ih_l0": (512, 256), "rnn_g.weight_hh_l0": (512, 128),
    "rnn_g.bias_ih_l0": (512,), "rnn_g.bias_hh_l0": (512,),
    "mlp_g_z.linear0.weight": (64, 128), "mlp_g_z.linear0.bias": (64,),
    "mlp_g_z.linear1.weight": (32, 64), "mlp_g_z.linear1.bias": (32,),
    "inf_mean.weight": (16, 32), "inf_mean.bias": (16,),
    "inf_logvar.weight": (16, 32), "inf_logvar.bias": (16,),
    "mlp_z_h.linear0.weight": (32, 16), "mlp_z_h.linear0.bias": (32,),
    "mlp_z_h.linear1.weight": (64, 32), "mlp_z_h.linear1.bias": (64,),
    "mlp_xtm1_h.linear0.weight": (256, 513), "mlp_xtm1_h.linear0.bias": (256,),
    "rnn_h.weight_ih_l0": (512, 320), "rnn_h.weight_hh_l0": (512, 128),
    "rnn_h.bias_ih_l0": (512,), "rnn_h.bias_hh_l0": (512,),
    "mlp_h_x.linear0.weight": (256, 128), "mlp_h_x.linear0.bias": (256,),
    "gen_out.weight": (513, 256), "gen_out.bias": (513,),
}
REVIEW_COUNT = 870_113


assert_trees_close = mc.assert_trees_close


@pytest.mark.parametrize("cfg", CASES)
def test_the_pass_matches_the_reviews_module_in_float64(cfg):
    # Given a tiny STORN, random frames and noise, its parameters exported as the review's
    # state_dict
    # When the JAX pass and the float64 NumPy loop of the review's module run on them
    errs = mc.assert_matches_reference(cfg)
    # Then every output, the loss and its terms agree to round-off (float64) and 1e-4 (float32)
    print("storn float64 relative errors:", {k: f"{e:.1e}" for k, e in errs.items()})


@pytest.mark.parametrize("cfg", [DEEP, EMPTY], ids=["deep", "empty"])
def test_gradients_match_finite_differences(cfg):
    mc.assert_gradients_match_finite_differences(cfg)


def test_the_review_preset_has_the_reviews_parameters_and_state_dict():
    # Given the preset of config/speech/cfg_storn.ini
    cfg = config.model_preset("storn_review_speech")
    # Then its parameter count is the review module's, and its state_dict has the review's names
    # and shapes, exported and imported back exactly
    assert models.count_params(models.init(cfg, jax.random.PRNGKey(0))) == REVIEW_COUNT
    mc.assert_state_dict_round_trip(cfg, REVIEW_STATE_DICT)
    mc.assert_state_dict_round_trip(DEEP)


@pytest.mark.parametrize("cfg", CASES)
def test_final_carry_is_the_reference_loops_final_state(cfg):
    # Given a teacher-forced pass in float64
    with jax.enable_x64(True):
        v, x, noise = mc.make(cfg, 4, b=2, t=5, dtype=jnp.float64)
        _, carry = models.forward(cfg, v, x, noise)
        want = ref.forward(cfg, interop.variables_to_state_dict(v, cfg), x, noise)["final"]
    # Then the carry is LSTM_h's state after the last frame (run batched in ``finish``) and that
    # frame, which the next step's MLP_xtm1_h reads
    assert_trees_close((list(carry.state.h), list(carry.state.c)),
                       ([h for h, _ in want["rnn_h"]], [c for _, c in want["rnn_h"]]), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(carry.x_prev, x[:, -1])


@pytest.mark.parametrize("cfg", [DEEP, EMPTY, GRU], ids=["deep", "empty", "gru"])
def test_generation_is_the_teacher_forced_prior_pass(cfg):
    # Free running (LSTM_h stepped in ``absorb``, each frame fed back) equals the teacher-forced
    # pass (LSTM_h run in ``finish``) fed the generated frames, and priming ends in its carry.
    mc.assert_generation_is_the_prior_pass(cfg)


def test_priming_continues_from_the_lstm_state_and_the_last_prime_frame():
    # Given a prime and the noise of a primed generation
    cfg = DEEP
    model, v = models.build(cfg), models.init(cfg, jax.random.PRNGKey(0))
    _, prime, _ = mc.make(cfg, 1, b=2, t=5)
    noise = generate.draw_noise(cfg, v, jax.random.PRNGKey(2), 9, 2, posterior_frames=5).z
    # When it is primed
    frames, carry_p, _ = drivers.primed(model, v, prime, noise)
    # Then the carry is (LSTM_h after the prime, teacher-forced; the last prime frame), and the
    # continuation is a free run from it
    _, carry_tf = models.forward(cfg, v, prime, noise[:, :5])
    assert_trees_close(carry_p, carry_tf, rtol=0, atol=0)
    np.testing.assert_array_equal(carry_p.x_prev, prime[:, -1])
    tail, _ = drivers.free_run(model, v, carry_p, noise[:, 5:])
    np.testing.assert_allclose(frames[:, 5:], tail, rtol=1e-6, atol=1e-7)
    # And the continuation reads the last prime frame itself (x feedback), not only the state
    other = carry_p._replace(x_prev=carry_p.x_prev * 2.0)
    tail_other, _ = drivers.free_run(model, v, other, noise[:, 5:])
    assert float(jnp.max(jnp.abs(tail_other[:, 0] - tail[:, 0]))) > 1e-4


@pytest.mark.parametrize("cfg", [DEEP, EMPTY], ids=["deep", "empty"])
def test_scheduled_sampling_without_generated_frames_is_the_teacher_forced_pass(cfg):
    # Given frames and posterior noise
    model, v = models.build(cfg), models.init(cfg, jax.random.PRNGKey(0))
    _, x, noise = mc.make(cfg, 1, b=2, t=6)
    # When scheduled sampling feeds no generated frame (LSTM_h stepped in the scan)
    never = jnp.zeros((2, 6), bool)
    ss = drivers.scheduled_sampling(model, v, x, noise, never)
    tf, _ = models.forward(cfg, v, x, noise)
    # Then it is the teacher-forced pass (LSTM_h batched after the scan)
    for field in mc.FIELDS:
        np.testing.assert_allclose(getattr(ss, field), getattr(tf, field), rtol=1e-5, atol=1e-6)
    # And feeding generated frames changes the decoder from frame 2 on (frame 1 reads x_0 = 0)
    always = drivers.scheduled_sampling(model, v, x, noise, jnp.ones((2, 6), bool))
    np.testing.assert_allclose(always.x_out[:, 0], tf.x_out[:, 0], rtol=1e-5, atol=1e-6)
    assert float(jnp.max(jnp.abs(always.x_out[:, 1:] - tf.x_out[:, 1:]))) > 1e-4
    np.testing.assert_array_equal(always.mean_q, tf.mean_q)  # the posterior sees the real frames


@pytest.mark.parametrize("cfg", [DEEP, MIXED], ids=["deep", "mixed"])
def test_a_pass_split_in_two_through_its_carry_equals_the_whole_pass(cfg):
    # With z from the prior nothing looks ahead, so the carry is all the second half needs.
    model, v = models.build(cfg), models.init(cfg, jax.random.PRNGKey(0))
    _, x, _ = mc.make(cfg, 1, b=2, t=8)
    noise = generate.draw_noise(cfg, v, jax.random.PRNGKey(2), 8, 2).z
    whole, carry = drivers.teacher_forced(model, v, x, noise, latent="prior")
    first, mid = drivers.teacher_forced(model, v, x[:, :3], noise[:, :3], latent="prior")
    second, end = drivers.teacher_forced(model, v, x[:, 3:], noise[:, 3:], mid, latent="prior")
    np.testing.assert_allclose(jnp.concatenate([first.x_out, second.x_out], 1), whole.x_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jnp.concatenate([first.z, second.z], 1), whole.z, rtol=1e-6)
    assert_trees_close(end, carry)


def test_dropout_is_applied_with_a_key_and_deterministic_without():
    cfg = dataclasses.replace(DEEP, dropout_p=0.5)
    v, x, _ = mc.make(cfg, 1, b=2, t=6)
    eps = jnp.zeros((2, 6, cfg.z_dim))
    plain, _ = models.forward(cfg, v, x, eps)
    again, _ = models.forward(cfg, v, x, eps)
    a, _ = models.forward(cfg, v, x, eps, key=jax.random.PRNGKey(5), deterministic=False)
    b, _ = models.forward(cfg, v, x, eps, key=jax.random.PRNGKey(5), deterministic=False)
    c, _ = models.forward(cfg, v, x, eps, key=jax.random.PRNGKey(6), deterministic=False)
    np.testing.assert_array_equal(plain.x_out, again.x_out)  # no key: deterministic
    np.testing.assert_array_equal(a.x_out, b.x_out)  # same key, same masks
    assert float(jnp.max(jnp.abs(a.x_out - c.x_out))) > 1e-3  # another key, other masks
    assert float(jnp.max(jnp.abs(a.x_out - plain.x_out))) > 1e-3  # dropout is applied
    assert float(jnp.max(jnp.abs(a.mean_q - plain.mean_q))) > 1e-3  # ... on the posterior's path too


@pytest.mark.parametrize("key", ["resq", "share_x_embedding"])
def test_an_srnn_option_is_a_config_error_naming_the_key(key):
    with pytest.raises(ConfigError, match=f"model.{key}"):
        models.build(dataclasses.replace(DEEP, **{key: True}))


def test_bfloat16_products_stay_close_to_float32():
    # Given the same parameters and inputs, when every weight product takes bfloat16 inputs
    v, x, noise = mc.make(DEEP, 1)
    out32, _ = models.forward(DEEP, v, x, noise)
    out16, _ = models.forward(dataclasses.replace(DEEP, matmul_dtype="bfloat16"), v, x, noise)
    # Then the outputs move by bfloat16 rounding only
    assert mc.rel_err(out16.x_out, out32.x_out) < 3e-2
    assert mc.rel_err(out16.mean_q, out32.mean_q) < 3e-2
