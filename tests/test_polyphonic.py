"""The Bernoulli likelihood (against the float64 NumPy reference) and the piano-roll reader."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dvae_jax import config, generate, losses, models
from dvae_jax.data import polyphonic
from dvae_jax.errors import ConfigError, DataError
from tests import reference_numpy as ref
from tests.test_models import TINY_SRNN, TINY_VRNN, compare

BERNOULLI = [  # the other likelihood x prior combinations are covered by tests/test_models.py
    pytest.param(dataclasses.replace(TINY_VRNN, likelihood="bernoulli"), id="vrnn"),
    pytest.param(dataclasses.replace(TINY_SRNN, likelihood="bernoulli", resq=True, prior="student_t",
                                     nu=4.0), id="srnn_resq_student_t"),
]


def binary_inputs(cfg, key, b=3, t=6, dtype=jnp.float32):
    kx, ke, kp = jax.random.split(key, 3)
    x = jax.random.bernoulli(kx, 0.3, (b, t, cfg.x_dim)).astype(dtype)
    eps = jax.random.normal(ke, (b, t, cfg.z_dim), dtype)
    return x, eps, models.init(cfg, kp)


@pytest.mark.parametrize("cfg", BERNOULLI)
def test_bernoulli_matches_float64_reference(cfg):
    # Given binary frames, float64 parameters and noise
    with jax.enable_x64(True):
        x, eps, params = binary_inputs(cfg, jax.random.PRNGKey(3), dtype=jnp.float64)
        params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
        # When the JAX model and loss and the NumPy loop see the same values
        errs = compare(cfg, x, eps, params)
    # Then outputs (logits), loss, reconstruction and KL agree to float64 round-off
    assert max(errs.values()) < 1e-10, errs


def test_bernoulli_nll_is_stable_and_exact_at_extreme_logits():
    # Given logits far beyond where sigmoid saturates in float32
    logits = jnp.array([[[-1e4, 1e4, -30.0, 30.0, 0.0]]], jnp.float32)
    x = jnp.array([[[1.0, 0.0, 0.0, 1.0, 1.0]]], jnp.float32)
    # When the per-frame negative log-likelihood is computed
    nll = losses.bernoulli_nll(x, logits)
    # Then it is finite and equals sum softplus(-l) for x=1, softplus(l) for x=0
    want = 1e4 + 1e4 + np.log1p(np.exp(-30.0)) + np.log1p(np.exp(-30.0)) + np.log(2.0)
    assert np.isfinite(nll).all()
    np.testing.assert_allclose(float(nll[0, 0]), want, rtol=1e-6)
    cfg = config.ModelConfig(likelihood="bernoulli", x_dim=5)
    np.testing.assert_allclose(losses.reconstruction(cfg, x, logits), nll)


def test_bernoulli_decoding_mean_sample_and_noise():
    cfg = config.ModelConfig(likelihood="bernoulli", x_dim=4, z_dim=2)
    logits = jnp.array([[-50.0, 0.0, 0.0, 50.0]])
    # Mean decoding gives the probabilities
    np.testing.assert_allclose(models.decode_frames(cfg, logits), jax.nn.sigmoid(logits))
    # Sampled decoding is 1 exactly where the uniform noise is below the probability
    u = jnp.array([[0.5, 0.4, 0.6, 0.99]])
    np.testing.assert_array_equal(models.decode_frames(cfg, logits, "sample", u), [[0.0, 1.0, 0.0, 1.0]])
    # The decoding noise is Uniform(0, 1)
    noise = generate._decoder_noise(cfg, jax.random.PRNGKey(0), (4000,), jnp.float32)
    assert 0.0 <= float(noise.min()) and float(noise.max()) < 1.0
    assert abs(float(noise.mean()) - 0.5) < 0.02
    assert models.decoder_out_dim(cfg) == 4


def test_bernoulli_cold_start_generates_binary_frames():
    cfg = dataclasses.replace(TINY_SRNN, likelihood="bernoulli")
    params = models.init(cfg, jax.random.PRNGKey(0))
    x = generate.cold_start(cfg, params, jax.random.PRNGKey(1), n_frames=5, n_samples=2, decode="sample")
    assert x.shape == (2, 5, cfg.x_dim)
    assert set(np.unique(np.asarray(x))) <= {0.0, 1.0}


def test_packaged_jsb_has_the_papers_split():
    rolls = polyphonic.load("jsb")
    assert rolls.x_train.shape == (272, 100, 88) and rolls.x_valid.shape == (80, 100, 88)
    assert rolls.x_test.shape == (77, 319, 88) and rolls.test_lengths.max() == 319
    # Padding is zero, and every piece starts at frame 0
    pad = rolls.mask_test == 0
    assert not rolls.x_test[pad].any() and (rolls.mask_test[:, 0] == 1).all()
    batches = list(polyphonic.train_batches(rolls.x_train))
    assert len(batches) == 17 and all(b.shape == (16, 100, 88) for b in batches)
    np.testing.assert_array_equal(batches[1][3], rolls.x_train[19])  # stream 3, second chunk
    assert "77 test pieces (9396 frames, longest 319)" in polyphonic.summary(rolls)


def test_reader_errors_name_the_file_and_what_to_do(tmp_path):
    with pytest.raises(DataError, match="only jsb ships"):
        polyphonic.load("muse")
    with pytest.raises(DataError, match="no such file"):
        polyphonic.load("piano", root=str(tmp_path))
    with pytest.raises(DataError, match="must be one of"):
        polyphonic.load("bach")
    bad = tmp_path / polyphonic.FILE.format(name="jsb")
    with np.load(polyphonic.EMBEDDED / bad.name) as d:
        arrays = {k: d[k] for k in d.files}
    arrays["u_train"] = arrays["x_train"]  # not shifted
    np.savez(bad, **arrays)
    with pytest.raises(DataError, match="u_train is not x_train shifted"):
        polyphonic.load("jsb", root=str(tmp_path))
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable"):
        polyphonic.load("jsb", root=str(tmp_path))


def test_data_config_set_name():
    assert config.DataConfig(corpus="polyphonic", set_name="nottingham").set_name == "nottingham"
    with pytest.raises(ConfigError, match="data.set_name"):
        config.DataConfig(corpus="polyphonic")
    with pytest.raises(ConfigError, match="data.set_name=bach"):
        config.override(config.Config(), "data.set_name", "bach")


def test_polyphonic_configs_load_and_have_comparable_sizes():
    sizes = {}
    for name in ("srnn_polyphonic_paper", "vrnn_polyphonic"):
        cfg = config.load_named(name)
        assert cfg.model.likelihood == "bernoulli" and cfg.model.x_dim == 88
        assert cfg.train.batch_size == 16 and cfg.train.clip_grad_norm == 1.0
        shapes = jax.eval_shape(lambda k, c=cfg.model: models.init(c, k), jax.random.PRNGKey(0))
        sizes[name] = models.count_params(shapes)
    assert config.load_named("srnn_polyphonic_paper").model.resq
    assert 0.8 < sizes["vrnn_polyphonic"] / sizes["srnn_polyphonic_paper"] < 1.2, sizes


def test_reference_bernoulli_loss_is_the_log_density():
    # The reference's own check: its Bernoulli term equals -sum log p computed directly
    x = np.array([[[1.0, 0.0, 1.0]]])
    a = np.array([[[0.3, -1.2, 2.0]]])
    p = 1 / (1 + np.exp(-a))
    out = {"x_out": a, "mean_q": np.zeros((1, 1, 1)), "logvar_q": np.zeros((1, 1, 1)),
           "prior_loc": np.zeros((1, 1, 1)), "prior_logvar": np.zeros((1, 1, 1))}
    cfg = config.ModelConfig(likelihood="bernoulli", x_dim=3, z_dim=1)
    _, recon, kl = ref.loss(cfg, out, x)
    np.testing.assert_allclose(recon, -np.sum(x * np.log(p) + (1 - x) * np.log(1 - p)), rtol=1e-12)
    assert kl == 0.0
