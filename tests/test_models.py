"""VRNN / SRNN against the float64 NumPy reference (tests/reference_numpy.py), every combination."""

import dataclasses
import itertools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from dvae_jax import config, losses, models
from tests import reference_numpy as ref

TINY_VRNN = config.ModelConfig(
    model="vrnn", x_dim=7, z_dim=3, dense_x=(6, 5), dense_z=(4,), dense_hx_z=(5,), dense_hz_x=(6,),
    dense_h_z=(4,), dim_rnn=8, num_rnn=2, logvar_clip=40.0,
)
TINY_SRNN = config.ModelConfig(
    model="srnn", x_dim=7, z_dim=3, dense_x_h=(6,), dense_hx_g=(5,), dense_gz_z=(6, 4),
    dense_hz_z=(5,), dense_hz_x=(6,), dim_rnn=8, dim_rnn_g=6, num_rnn=2,
)
LIKELIHOODS = [
    {"likelihood": "itakura_saito"},
    {"likelihood": "gaussian", "learn_x_var": True},
    {"likelihood": "gaussian", "learn_x_var": False, "fixed_x_logvar": -0.3},
]
PRIORS = [
    {"prior": "gaussian"},
    {"prior": "student_t", "nu": 4.0, "learn_nu": False, "kl_estimator": "mc"},
    {"prior": "student_t", "nu": 3.0, "learn_nu": True, "kl_estimator": "entropy"},
]
MODELS = [("vrnn", TINY_VRNN), ("srnn", TINY_SRNN), ("srnn_resq", dataclasses.replace(TINY_SRNN, resq=True)),
          # the SRNN code's choices: shared x embedding, clipped very leaky rectifier
          ("srnn_paper", dataclasses.replace(TINY_SRNN, resq=True, share_x_embedding=True,
                                             activation="clipped_leaky", separate_heads=True)),
          ("vrnn_separate_heads_gru", dataclasses.replace(TINY_VRNN, separate_heads=True, rnn_cell="gru")),
          ("srnn_paper_gru", dataclasses.replace(TINY_SRNN, resq=True, share_x_embedding=True, rnn_cell="gru",
                                                 activation="clipped_leaky", separate_heads=True))]
CASES = [
    pytest.param(dataclasses.replace(m, **lk, **pr), id=f"{name}-{lk['likelihood']}{'' if lk.get('learn_x_var', True) else '_fixed'}-{pr['prior']}{'_learned' if pr.get('learn_nu') else ''}")
    for (name, m), lk, pr in itertools.product(MODELS, LIKELIHOODS, PRIORS)
]


def make_inputs(cfg, key, b=3, t=6, dtype=jnp.float32):
    kx, ke, kp = jax.random.split(key, 3)
    x = jax.random.normal(kx, (b, t, cfg.x_dim), dtype)
    if cfg.likelihood == "itakura_saito":
        x = jnp.exp(x)  # power spectra are positive
    eps = jax.random.normal(ke, (b, t, cfg.z_dim), dtype)
    params = models.init(cfg, kp)
    return x, eps, params


def rel_err(a, b):
    """Largest absolute difference relative to the reference's largest magnitude."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def compare(cfg, x, eps, params):
    @jax.jit
    def run(params, x, eps):
        out, _ = models.forward(cfg, params, x, eps)
        return out, losses.elbo(cfg, out, x, kl_weight=0.7, beta=1.3)

    out, (loss, metrics) = run(params, x, eps)
    want = ref.forward(cfg, params, x, eps)
    want_loss, want_recon, want_kl = ref.loss(cfg, want, x, kl_weight=0.7, beta=1.3)
    errs = {k: rel_err(getattr(out, k), want[k]) for k in ("z", "mean_q", "logvar_q", "prior_loc", "prior_logvar", "x_out")}
    errs["loss"] = rel_err(loss, want_loss)
    errs["recon"] = rel_err(metrics["recon"], want_recon)
    errs["kl"] = rel_err(metrics["kl"], want_kl)
    return errs


@pytest.mark.parametrize("cfg", CASES)
def test_matches_float64_reference_in_x64(cfg):
    # Given float64 parameters, inputs and noise
    with jax.enable_x64(True):
        x, eps, params = make_inputs(cfg, jax.random.PRNGKey(1), dtype=jnp.float64)
        params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
        # When the JAX model and the NumPy loop see the same values
        errs = compare(cfg, x, eps, params)
    # Then they agree to float64 round-off
    assert max(errs.values()) < 1e-10, errs


@pytest.mark.parametrize("cfg", CASES)
def test_matches_float64_reference_in_float32(cfg):
    x, eps, params = make_inputs(cfg, jax.random.PRNGKey(2))
    errs = compare(cfg, x, eps, params)
    assert max(errs.values()) < 1e-4, errs


@pytest.mark.parametrize("preset,count", [("vrnn_review_speech", 480_097), ("srnn_review_speech", 884_993)])
def test_review_presets_have_the_reviews_parameter_counts(preset, count):
    cfg = config.model_preset(preset)
    assert models.count_params(models.init(cfg, jax.random.PRNGKey(0))) == count


@pytest.mark.parametrize("cfg", [TINY_VRNN, TINY_SRNN, dataclasses.replace(TINY_SRNN, resq=True, prior="student_t", learn_nu=True)])
def test_gradients_match_finite_differences(cfg):
    with jax.enable_x64(True):
        x, eps, params = make_inputs(cfg, jax.random.PRNGKey(3), b=2, t=4, dtype=jnp.float64)
        params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
        flat, unravel = jax.flatten_util.ravel_pytree(params)

        @jax.jit
        def f(v):
            return losses.elbo(cfg, models.forward(cfg, unravel(v), x, eps)[0], x)[0]

        gflat = jax.jit(jax.grad(f))(flat)
        rng = np.random.default_rng(0)
        idx = rng.choice(flat.size, size=25, replace=False)
        h = 1e-6
        # all perturbed points in one batched call: (2 * 25, n_params)
        steps = jnp.zeros((len(idx), flat.size), flat.dtype).at[np.arange(len(idx)), idx].set(h)
        f_plus, f_minus = jax.lax.map(f, flat + steps), jax.lax.map(f, flat - steps)
        fd = (f_plus - f_minus) / (2 * h)
        np.testing.assert_allclose(gflat[idx], fd, rtol=1e-6, atol=1e-7)


def test_noise_is_drawn_per_step_when_not_given():
    cfg = TINY_VRNN
    x, _, params = make_inputs(cfg, jax.random.PRNGKey(4))
    out, _ = models.forward(cfg, params, x, key=jax.random.PRNGKey(5))
    eps = (out.z - out.mean_q) / jnp.exp(0.5 * out.logvar_q)
    # no two frames share their noise
    diffs = jnp.abs(eps[:, 1:] - eps[:, :-1]).max(axis=(0, 2))
    assert float(diffs.min()) > 1e-3


@pytest.mark.parametrize("unroll", [1, 3])
def test_unroll_does_not_change_the_result(unroll):
    x, eps, params = make_inputs(TINY_SRNN, jax.random.PRNGKey(6))
    base, _ = models.forward(TINY_SRNN, params, x, eps)
    other, _ = models.forward(dataclasses.replace(TINY_SRNN, unroll=unroll), params, x, eps)
    np.testing.assert_allclose(other.x_out, base.x_out, rtol=1e-6, atol=1e-6)


def test_logvar_clip_keeps_extreme_inputs_finite():
    cfg = dataclasses.replace(TINY_VRNN, activation="relu")
    x, eps, params = make_inputs(cfg, jax.random.PRNGKey(7))
    out, _ = models.forward(cfg, params, x * 1e6, eps)
    loss, _ = losses.elbo(cfg, out, x * 1e6)
    assert bool(jnp.isfinite(loss))


def test_srnn_code_layout_has_the_srnn_codes_parameter_count():
    # Given the SRNN code's midi model (MainSRNN_midi.py defaults: d = a = 300, z = 100, 500-unit
    # one-layer MLPs, u/x embedding of two 500-unit layers shared by both paths, GRUs, separate
    # mean / log-variance MLPs), counted by hand from ml/models/SRNN_midi.py's Lasagne layers
    cfg = config.ModelConfig(
        model="srnn", x_dim=88, z_dim=100, dense_x_h=(500, 500), dim_rnn=300, dense_hx_g=(), dim_rnn_g=300,
        dense_gz_z=(500,), dense_hz_z=(500,), dense_hz_x=(500,), num_rnn=1, resq=True, likelihood="bernoulli",
        share_x_embedding=True, separate_heads=True, rnn_cell="gru", activation="clipped_leaky")
    emb = (88 * 500 + 500) + (500 * 500 + 500)
    gru_d = 500 * 900 + 300 * 900 + 900  # Lasagne's GRU: W_in, W_hid, one bias per gate
    gru_a = 800 * 900 + 300 * 900 + 900  # a_t from [d_t, x embedding]
    head = 2 * ((400 * 500 + 500) + (500 * 100 + 100))  # mean and log-variance MLPs
    dec = (400 * 500 + 500) + (500 * 88 + 88)
    lasagne = emb + gru_d + gru_a + 2 * head + dec
    # When counted here
    n = sum(a.size for a in jax.tree_util.tree_leaves(models.init(cfg, jax.random.PRNGKey(0))))
    # Then the counts differ by PyTorch's second GRU bias (b_hh) only, one per GRU
    assert lasagne == 3_253_788
    assert n == lasagne + 2 * 900


def test_separate_heads_do_not_mix():
    # Given a model with separate mean / log-variance MLPs
    cfg = dataclasses.replace(TINY_SRNN, separate_heads=True, likelihood="gaussian")
    x, eps, params = make_inputs(cfg, jax.random.PRNGKey(3))
    out, _ = models.forward(cfg, params, x, eps)
    # When only the log-variance MLPs' parameters change
    bumped = jax.tree_util.tree_map_with_path(
        lambda path, a: a + 0.5 if "logvar" in jax.tree_util.keystr(path) else a, params)
    out2, _ = models.forward(cfg, bumped, x, jnp.zeros_like(eps))
    out1, _ = models.forward(cfg, params, x, jnp.zeros_like(eps))
    # Then every mean stays (z = mean with zero noise) and every log-variance moves
    np.testing.assert_array_equal(out1.mean_q, out2.mean_q)
    np.testing.assert_array_equal(out1.prior_loc, out2.prior_loc)
    assert not np.allclose(out1.logvar_q, out2.logvar_q)
    assert not np.allclose(out1.prior_logvar, out2.prior_logvar)
    assert np.isfinite(out.logvar_q).all()
