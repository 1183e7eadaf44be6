"""Generation (cold start, priming) and scheduled sampling against plain NumPy loops from MODELS.md."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dvae_jax import config, generate, losses, models
from tests import reference_numpy as ref

VRNN = config.ModelConfig(
    model="vrnn", x_dim=7, z_dim=3, dense_x=(6,), dense_z=(4, 5), dense_hx_z=(5,), dense_hz_x=(6,),
    dense_h_z=(4,), dim_rnn=8, num_rnn=2,
)
SRNN = config.ModelConfig(
    model="srnn", x_dim=7, z_dim=3, dense_x_h=(6,), dense_hx_g=(5,), dense_gz_z=(6, 4),
    dense_hz_z=(5,), dense_hz_x=(6,), dim_rnn=8, dim_rnn_g=6, num_rnn=2,
)
IS = {"likelihood": "itakura_saito"}
GAUSS = {"likelihood": "gaussian", "learn_x_var": True}
GAUSS_FIXED = {"likelihood": "gaussian", "learn_x_var": False, "fixed_x_logvar": -0.5}
STUDENT = {"prior": "student_t", "nu": 3.0, "learn_nu": True}


def cfg_of(base, **kw):
    return dataclasses.replace(base, **kw)


# Every likelihood and prior appears with each model; few cases because each one compiles.
CASES = [
    pytest.param(cfg_of(VRNN, **IS), id="vrnn-is"),
    pytest.param(cfg_of(VRNN, **GAUSS, **STUDENT), id="vrnn-gauss-studentt"),
    pytest.param(cfg_of(SRNN, **GAUSS_FIXED, prior="student_t", nu=4.0), id="srnn-gaussfixed-studentt"),
    pytest.param(cfg_of(SRNN, **IS, resq=True), id="srnn_resq-is"),
]


# Smaller layouts (one LSTM layer, fewest MLP layers) for the tests that check behaviour rather
# than equations: compilation time grows with the graph.
SMALL_VRNN = config.ModelConfig(model="vrnn", x_dim=7, z_dim=3, dense_x=(6,), dense_z=(4,), dim_rnn=8, num_rnn=1)
SMALL_SRNN = config.ModelConfig(model="srnn", x_dim=7, z_dim=3, dense_x_h=(6,), dense_hx_g=(5,), dense_gz_z=(4,),
                                dense_hz_z=(), dense_hz_x=(), dim_rnn=8, dim_rnn_g=6, num_rnn=1)
SMALL = [
    pytest.param(cfg_of(SMALL_VRNN, **IS), id="vrnn-is"),
    pytest.param(cfg_of(SMALL_SRNN, **GAUSS, **STUDENT), id="srnn-gauss-studentt"),
]


def params_of(cfg, seed=0):
    """Random parameters with the model's tree, without compiling its init (slow on a busy CPU):
    the structure from jax.eval_shape, values U(-0.6, 0.6) (learned nu: 3 + softplus)."""
    shapes = jax.eval_shape(models.build(cfg).init, jax.random.PRNGKey(0))
    rng = np.random.default_rng(seed)
    leaves, tree = jax.tree_util.tree_flatten(shapes)
    values = [jnp.asarray(rng.uniform(-0.6, 0.6, leaf.shape), jnp.float32) for leaf in leaves]
    variables = jax.tree_util.tree_unflatten(tree, values)
    if "prior_nu" in variables["params"]:
        variables["params"]["prior_nu"] = jnp.full((cfg.z_dim,), 1.0)
    return variables


@functools.cache
def _apply(cfg):
    return jax.jit(lambda v, x, eps: models.forward(cfg, v, x, eps)[0])


def real_frames(cfg, key, b, t):
    x = jax.random.normal(key, (b, t, cfg.x_dim))
    return jnp.exp(x) if cfg.likelihood == "itakura_saito" else x


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


# ---------------------------------------------------------------------------------------------
# Float64 NumPy reference: one loop over time, concatenations applied as such (no splitting).


def np_decode(cfg, x_out, decode, noise):
    if cfg.likelihood == "itakura_saito":
        power = np.exp(x_out)
        return power if decode == "mean" else power * noise
    mean = x_out[..., : cfg.x_dim]
    if decode == "mean":
        return mean
    logvar = x_out[..., cfg.x_dim :] if cfg.learn_x_var else np.full_like(mean, cfg.fixed_x_logvar)
    return mean + np.exp(0.5 * logvar) * noise


def np_generate(cfg, variables, z_noise, x_noise, temperature, decode, prime=None, latent="posterior"):
    """MODELS.md generation, written directly: P teacher-forced frames (prime), then free.

    z_noise (n, P+T, z), x_noise (n, P+T, x) or None; returns (n, P+T, x) with the prime part
    reconstructed (decoded as ``decode``)."""
    P = ref._np(variables["params"])
    act = ref._act(cfg.activation)
    z_noise = np.asarray(z_noise, np.float64)
    x_noise = None if x_noise is None else np.asarray(x_noise, np.float64)
    n, total, _ = z_noise.shape
    p_len = 0 if prime is None else prime.shape[1]
    prime = None if prime is None else np.asarray(prime, np.float64)
    L, Z = cfg.num_rnn, cfg.z_dim
    xn = (lambda t: None) if x_noise is None else (lambda t: x_noise[:, t])
    out = []
    if cfg.model == "vrnn":
        H = cfg.dim_rnn
        hs, cs = [np.zeros((n, H))] * L, [np.zeros((n, H))] * L
        for t in range(total):
            h = hs[-1]
            if t < p_len and latent == "posterior":
                phi_x = ref._mlp(P["phi_x"], prime[:, t], act)
                mq, lq = ref._split(ref._mlp(P["posterior"], np.concatenate([phi_x, h], -1), act, True), Z, cfg.logvar_clip)
                z = mq + np.exp(0.5 * lq) * z_noise[:, t]
            else:
                loc, lv = ref._split(ref._mlp(P["prior"], h, act, True), Z, cfg.logvar_clip)
                z = loc + temperature * np.exp(0.5 * lv) * z_noise[:, t]
            phi_z = ref._mlp(P["phi_z"], z, act)
            x_out = ref._decoder(cfg, ref._mlp(P["decoder"], np.concatenate([phi_z, h], -1), act, True))
            x = np_decode(cfg, x_out, decode, xn(t))
            x_in = prime[:, t] if t < p_len else x
            hs, cs = ref._lstm_stack_step(P["rnn"], np.concatenate([ref._mlp(P["phi_x"], x_in, act), phi_z], -1), hs, cs)
            out.append(x)
        return np.stack(out, 1)
    # SRNN
    H, G = cfg.dim_rnn, cfg.dim_rnn_g
    hs, cs = [np.zeros((n, H))] * L, [np.zeros((n, H))] * L
    g_all = None
    if p_len and latent == "posterior":
        # h over the prime, then g backward over the prime only
        h2, c2, h_all = hs, cs, []
        for t in range(p_len):
            xp = prime[:, t - 1] if t > 0 else np.zeros((n, cfg.x_dim))
            h2, c2 = ref._lstm_stack_step(P["rnn_h"], ref._mlp(P["mlp_x_h"], xp, act), h2, c2)
            h_all.append(h2[-1])
        gs, cg = [np.zeros((n, G))] * L, [np.zeros((n, G))] * L
        g_all = [None] * p_len
        for t in reversed(range(p_len)):
            inp = ref._mlp(P["mlp_hx_g"], np.concatenate([h_all[t], prime[:, t]], -1), act)
            gs, cg = ref._lstm_stack_step(P["rnn_g"], inp, gs, cg)
            g_all[t] = gs[-1]
    x_prev, z_prev = np.zeros((n, cfg.x_dim)), np.zeros((n, Z))
    for t in range(total):
        hs, cs = ref._lstm_stack_step(P["rnn_h"], ref._mlp(P["mlp_x_h"], x_prev, act), hs, cs)
        h = hs[-1]
        loc, lv = ref._split(ref._mlp(P["prior"], np.concatenate([h, z_prev], -1), act, True), Z, cfg.logvar_clip)
        if t < p_len and latent == "posterior":
            mq, lq = ref._split(ref._mlp(P["posterior"], np.concatenate([g_all[t], z_prev], -1), act, True), Z, cfg.logvar_clip)
            if cfg.resq:
                mq = loc + mq
            z = mq + np.exp(0.5 * lq) * z_noise[:, t]
        else:
            z = loc + temperature * np.exp(0.5 * lv) * z_noise[:, t]
        x_out = ref._decoder(cfg, ref._mlp(P["decoder"], np.concatenate([h, z], -1), act, True))
        x = np_decode(cfg, x_out, decode, xn(t))
        out.append(x)
        x_prev = prime[:, t] if t < p_len else x
        z_prev = z
    return np.stack(out, 1)


def np_scheduled_sampling(cfg, variables, x, eps, mask):
    """Scheduled-sampling forward as generate.scheduled_sampling_forward documents it, mean
    feedback; returns x_out (b, t, .) and the prior parameters."""
    P = ref._np(variables["params"])
    act = ref._act(cfg.activation)
    x, eps = np.asarray(x, np.float64), np.asarray(eps, np.float64)
    mask = np.asarray(mask)
    b, t_len, _ = x.shape
    L, Z = cfg.num_rnn, cfg.z_dim
    x_outs, locs = [], []
    if cfg.model == "vrnn":
        H = cfg.dim_rnn
        hs, cs = [np.zeros((b, H))] * L, [np.zeros((b, H))] * L
        for t in range(t_len):
            h = hs[-1]
            phi_x = ref._mlp(P["phi_x"], x[:, t], act)
            mq, lq = ref._split(ref._mlp(P["posterior"], np.concatenate([phi_x, h], -1), act, True), Z, cfg.logvar_clip)
            z = mq + np.exp(0.5 * lq) * eps[:, t]
            phi_z = ref._mlp(P["phi_z"], z, act)
            x_out = ref._decoder(cfg, ref._mlp(P["decoder"], np.concatenate([phi_z, h], -1), act, True))
            locs.append(ref._split(ref._mlp(P["prior"], h, act, True), Z, cfg.logvar_clip)[0])
            x_in = np.where(mask[:, t, None], np_decode(cfg, x_out, "mean", None), x[:, t])
            hs, cs = ref._lstm_stack_step(P["rnn"], np.concatenate([ref._mlp(P["phi_x"], x_in, act), phi_z], -1), hs, cs)
            x_outs.append(x_out)
        return np.stack(x_outs, 1), np.stack(locs, 1)
    # SRNN: g from teacher-forced h; the generative h from the mixed inputs
    H, G = cfg.dim_rnn, cfg.dim_rnn_g
    hs, cs, h_tf = [np.zeros((b, H))] * L, [np.zeros((b, H))] * L, []
    for t in range(t_len):
        xp = x[:, t - 1] if t > 0 else np.zeros((b, cfg.x_dim))
        hs, cs = ref._lstm_stack_step(P["rnn_h"], ref._mlp(P["mlp_x_h"], xp, act), hs, cs)
        h_tf.append(hs[-1])
    gs, cg, g_all = [np.zeros((b, G))] * L, [np.zeros((b, G))] * L, [None] * t_len
    for t in reversed(range(t_len)):
        gs, cg = ref._lstm_stack_step(P["rnn_g"], ref._mlp(P["mlp_hx_g"], np.concatenate([h_tf[t], x[:, t]], -1), act), gs, cg)
        g_all[t] = gs[-1]
    hs, cs = [np.zeros((b, H))] * L, [np.zeros((b, H))] * L
    x_prev, z_prev = np.zeros((b, cfg.x_dim)), np.zeros((b, Z))
    for t in range(t_len):
        hs, cs = ref._lstm_stack_step(P["rnn_h"], ref._mlp(P["mlp_x_h"], x_prev, act), hs, cs)
        h = hs[-1]
        loc, _ = ref._split(ref._mlp(P["prior"], np.concatenate([h, z_prev], -1), act, True), Z, cfg.logvar_clip)
        mq, lq = ref._split(ref._mlp(P["posterior"], np.concatenate([g_all[t], z_prev], -1), act, True), Z, cfg.logvar_clip)
        if cfg.resq:
            mq = loc + mq
        z = mq + np.exp(0.5 * lq) * eps[:, t]
        x_out = ref._decoder(cfg, ref._mlp(P["decoder"], np.concatenate([h, z], -1), act, True))
        x_outs.append(x_out)
        locs.append(loc)
        x_prev = np.where(mask[:, t, None], np_decode(cfg, x_out, "mean", None), x[:, t])
        z_prev = z
    return np.stack(x_outs, 1), np.stack(locs, 1)


# ---------------------------------------------------------------------------------------------
# Cold start and priming against the reference


@pytest.mark.parametrize("cfg,decode", [(c.values[0], d) for c, d in zip(CASES, ["sample", "sample", "sample", "mean"])],
                         ids=[c.id for c in CASES])
def test_cold_start_matches_numpy_loop(cfg, decode):
    # Given a random-init model and pre-drawn noise
    variables = params_of(cfg)
    noise = generate.draw_noise(cfg, variables, jax.random.PRNGKey(1), 12, 3, decode)
    # When generating from scratch with a temperature
    got = generate.cold_start_from_noise(cfg, variables, noise, 0.7, decode)
    # Then it equals the plain loop of MODELS.md fed the same noise
    want = np_generate(cfg, variables, noise.z, noise.x, 0.7, decode)
    assert got.shape == (3, 12, cfg.x_dim)
    assert rel_err(got, want) < 1e-4


B, P_LEN = 2, 6  # one batch / prime shape for every test, so that compilations are shared


PRIMED = [(c.values[0], "posterior") for c in CASES] + [(CASES[1].values[0], "prior"), (CASES[3].values[0], "prior")]


@pytest.mark.parametrize("cfg,latent", PRIMED, ids=[f"{c.id}-posterior" for c in CASES] + ["vrnn-prior", "srnn-prior"])
def test_primed_matches_numpy_loop_and_reconstructs_the_prime(cfg, latent):
    # Given a prime and noise for the prime and 9 free frames
    variables = params_of(cfg)
    prime = real_frames(cfg, jax.random.PRNGKey(2), B, P_LEN)
    noise = generate.draw_noise(cfg, variables, jax.random.PRNGKey(3), P_LEN + 9, B, "sample",
                                posterior_frames=P_LEN if latent == "posterior" else 0)
    # When priming and continuing
    got = generate.primed_from_noise(cfg, variables, prime, noise, latent, 0.8, "sample")
    # Then the whole sequence equals the MODELS.md loop
    want = np_generate(cfg, variables, noise.z, noise.x, 0.8, "sample", prime=np.asarray(prime), latent=latent)
    assert got.shape == (B, P_LEN + 9, cfg.x_dim)
    assert rel_err(got, want) < 1e-4
    if latent == "posterior":
        # and its prime part is the model's teacher-forced reconstruction with the same eps
        out = _apply(cfg)(variables, prime, noise.z[:, :P_LEN])
        recon = generate.decode_frames(cfg, out.x_out, "sample", noise.x[:, :P_LEN])
        assert rel_err(got[:, :P_LEN], recon) < 1e-5


@pytest.mark.parametrize("cfg", [CASES[0], CASES[3]])
def test_primed_posterior_without_free_frames_is_the_models_reconstruction(cfg):
    # Given the model's teacher-forced forward on the prime with noise eps
    variables = params_of(cfg)
    prime = real_frames(cfg, jax.random.PRNGKey(4), B, P_LEN)
    eps = jax.random.normal(jax.random.PRNGKey(5), (B, P_LEN, cfg.z_dim))
    out = _apply(cfg)(variables, prime, eps)
    # When priming with the posterior, the same eps, and no free frames
    got = generate.primed_from_noise(cfg, variables, prime, generate.Noise(eps, None), "posterior", 1.0, "mean")
    # Then the output is the decoded reconstruction of the model
    want = generate.decode_frames(cfg, out.x_out, "mean")
    assert got.shape == (B, P_LEN, cfg.x_dim)
    assert rel_err(got, want) < 1e-5


def test_primed_public_api_shapes_and_prime_broadcast():
    cfg = SMALL[1].values[0]
    variables = params_of(cfg)
    key = jax.random.PRNGKey(0)
    prime = real_frames(cfg, jax.random.PRNGKey(6), B, 4)
    a = generate.primed(cfg, variables, key, prime[0], 6, n_samples=3, decode="sample")
    assert a.shape == (3, 10, cfg.x_dim)
    b = generate.primed(cfg, variables, key, prime, 6, latent="prior", n_samples=2)
    assert b.shape == (4, 10, cfg.x_dim)
    c = generate.primed(cfg, variables, key, prime, 6, prime_output="real")
    np.testing.assert_array_equal(c[:, :4], prime)
    # The free part of each sample continues from the same prime but differs between samples
    assert not np.allclose(a[0, 4:], a[1, 4:])


@pytest.mark.parametrize("cfg", SMALL)
def test_temperature_zero_is_deterministic_and_seeds_differ(cfg):
    variables = params_of(cfg)
    k1, k2 = jax.random.PRNGKey(11), jax.random.PRNGKey(12)
    a = generate.cold_start(cfg, variables, k1, 15, 2, temperature=0.0)
    b = generate.cold_start(cfg, variables, k2, 15, 2, temperature=0.0)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[0], a[1])  # every sample the same too
    c = generate.cold_start(cfg, variables, k1, 15, 2, temperature=1.0)
    d = generate.cold_start(cfg, variables, k2, 15, 2, temperature=1.0)
    assert not np.allclose(c, d)
    assert not np.allclose(c[0], c[1])
    e = generate.cold_start(cfg, variables, k1, 15, 2, temperature=1.0)
    np.testing.assert_array_equal(c, e)  # same seed, same output


def test_temperature_sweep_does_not_recompile():
    cfg = SMALL[0].values[0]
    variables = params_of(cfg)
    key = jax.random.PRNGKey(0)
    generate.cold_start(cfg, variables, key, 15, 2, temperature=1.0)
    before = generate.cold_start._cache_size()
    for temp in (0.0, 0.5, 1.3):
        generate.cold_start(cfg, variables, key, 15, 2, temperature=temp)
    assert generate.cold_start._cache_size() == before


@pytest.mark.parametrize("cfg", [SMALL[0], pytest.param(cfg_of(SMALL_SRNN, **IS), id="srnn-is")])
def test_long_generation_is_finite(cfg):
    # Itakura-Saito feeds exp(v) back: the case where a runaway would show
    variables = params_of(cfg, seed=3)
    x = generate.cold_start(cfg, variables, jax.random.PRNGKey(0), 500, 2, temperature=1.0, decode="sample")
    assert x.shape == (2, 500, cfg.x_dim)
    assert bool(jnp.all(jnp.isfinite(x)))
    if cfg.model == "srnn":
        prime = real_frames(cfg, jax.random.PRNGKey(1), 1, 20)[0]
        y = generate.primed(cfg, variables, jax.random.PRNGKey(2), prime, 480, decode="sample")
        assert y.shape == (1, 500, cfg.x_dim)
        assert bool(jnp.all(jnp.isfinite(y)))


def test_student_t_noise_uses_the_learned_nu():
    cfg = SMALL[1].values[0]
    variables = params_of(cfg)
    params = jax.tree_util.tree_map(lambda a: a, variables)
    params["params"]["prior_nu"] = jnp.full((cfg.z_dim,), -30.0)  # nu = 2 + softplus(-30) ~ 2: heavy tails
    heavy = generate.draw_noise(cfg, params, jax.random.PRNGKey(0), 4000, 1).z
    params["params"]["prior_nu"] = jnp.full((cfg.z_dim,), 30.0)  # nu ~ 32: near Gaussian
    light = generate.draw_noise(cfg, params, jax.random.PRNGKey(0), 4000, 1).z
    kurt = lambda a: float(np.mean(np.asarray(a) ** 4) / np.mean(np.asarray(a) ** 2) ** 2)
    assert kurt(heavy) > 6.0 > kurt(light)
    np.testing.assert_allclose(generate.prior_nu(cfg, params), 32.0, rtol=1e-3)


def test_bad_arguments_are_named():
    cfg = SMALL[0].values[0]
    variables = params_of(cfg)
    with pytest.raises(ValueError, match="decode"):
        generate.cold_start(cfg, variables, jax.random.PRNGKey(0), 3, decode="median")
    with pytest.raises(ValueError, match="latent"):
        generate.primed(cfg, variables, jax.random.PRNGKey(0), jnp.ones((2, 7)), 3, latent="both")
    with pytest.raises(ValueError, match="prime"):
        generate.primed(cfg, variables, jax.random.PRNGKey(0), jnp.ones((7,)), 3)


# ---------------------------------------------------------------------------------------------
# Scheduled sampling


@pytest.mark.parametrize("cfg", CASES)
def test_scheduled_sampling_p0_is_the_teacher_forced_model(cfg):
    variables = params_of(cfg)
    x = real_frames(cfg, jax.random.PRNGKey(7), B, P_LEN)
    eps = jax.random.normal(jax.random.PRNGKey(8), (B, P_LEN, cfg.z_dim))
    want = _apply(cfg)(variables, x, eps)
    never = jnp.zeros((B, P_LEN), bool)  # = p 0; a mask shares the compilation with the next test
    got = generate.scheduled_sampling_forward(cfg, variables, x, jax.random.PRNGKey(0), eps=eps, use_generated=never)
    for name in ("z", "mean_q", "logvar_q", "prior_loc", "prior_logvar", "x_out"):
        assert rel_err(getattr(got, name), getattr(want, name)) < 1e-5, name
    if cfg.prior == "student_t":
        np.testing.assert_allclose(got.nu, want.nu, rtol=1e-6)


@pytest.mark.parametrize("cfg", CASES)
def test_scheduled_sampling_feedback_matches_numpy_loop(cfg):
    variables = params_of(cfg)
    x = real_frames(cfg, jax.random.PRNGKey(9), B, P_LEN)
    eps = jax.random.normal(jax.random.PRNGKey(10), (B, P_LEN, cfg.z_dim))
    mask = jax.random.bernoulli(jax.random.PRNGKey(11), 0.5, (B, P_LEN))
    got = generate.scheduled_sampling_forward(cfg, variables, x, jax.random.PRNGKey(0), eps=eps, use_generated=mask)
    x_out, loc = np_scheduled_sampling(cfg, variables, x, eps, mask)
    assert rel_err(got.x_out, x_out) < 1e-4
    assert rel_err(got.prior_loc, loc) < 1e-4
    tf = _apply(cfg)(variables, x, eps)
    assert not np.allclose(got.x_out, tf.x_out, atol=1e-6)  # the feedback changed something


@pytest.mark.parametrize("cfg,per", [(SMALL[0].values[0], "frame"), (cfg_of(SMALL_SRNN, resq=True), "sequence")],
                         ids=["vrnn-frame", "srnn-sequence"])
def test_scheduled_sampling_trains(cfg, per):
    variables = params_of(cfg)
    x = real_frames(cfg, jax.random.PRNGKey(12), 4, 10)

    @jax.jit
    def loss(v, key, p):
        out = generate.scheduled_sampling_forward(cfg, v, x, key, p=p, per=per, feedback="sample")
        return losses.elbo(cfg, out, x)[0]

    value, grads = jax.value_and_grad(loss)(variables, jax.random.PRNGKey(0), 0.5)
    assert np.isfinite(float(value))
    flat = jax.tree_util.tree_leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in flat)
    assert sum(float(jnp.sum(jnp.abs(g))) for g in flat) > 0
    loss(variables, jax.random.PRNGKey(1), 0.9)  # another p: no recompile needed (traced)
    assert loss._cache_size() == 1


def test_scheduled_sampling_mask_and_probability():
    m = generate.scheduled_sampling_mask(jax.random.PRNGKey(0), 0.3, 200, 50, "frame")
    assert m.shape == (200, 50) and abs(float(m.mean()) - 0.3) < 0.03
    s = generate.scheduled_sampling_mask(jax.random.PRNGKey(0), 0.5, 64, 50, "sequence")
    assert bool(jnp.all(s == s[:, :1]))
    assert float(generate.scheduled_sampling_probability(0, 10, 5.0, 10.0)) == 0.0
    assert float(generate.scheduled_sampling_probability(100, 10, 5.0, 10.0)) == pytest.approx(0.5)
    assert float(generate.scheduled_sampling_probability(10_000, 10, 5.0, 10.0, p_max=0.8)) == pytest.approx(0.8)


def test_realtime_factor_reports_timings():
    feat = config.FeatureConfig(kind="stft", n_fft=64, win_length=64, hop_length=16, window="hann")
    cfg = cfg_of(SMALL_VRNN, x_dim=feat.n_bins, **IS)
    r = generate.realtime_factor(cfg, params_of(cfg), feat, seconds=0.1, n_iter=2, repeats=1)
    assert r["frames"] == 100
    assert r["rtf"] > 0 and r["rtf"] == pytest.approx(r["rtf_generate"] + r["rtf_invert"])
