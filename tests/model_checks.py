"""The checks every model of the review passes, called by tests/test_model_<name>.py with that
model's tiny configurations: the float64 NumPy loop (tests/reference_review.py, fed the review's
state_dict exported by dvae_jax.interop), finite-difference gradients, the state_dict round trip,
and generation through the generic drivers."""

from __future__ import annotations

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from dvae_jax import drivers, generate, interop, losses, models
from tests import reference_review as ref

FIELDS = ("z", "mean_q", "logvar_q", "prior_loc", "prior_logvar", "x_out")


def make(cfg, seed=0, b=3, t=6, dtype=jnp.float32):
    """(variables, x (b, t, f), noise (b, t, noise_dim)) in ``dtype``; IS frames are positive."""
    kx, kn, kp = jax.random.split(jax.random.PRNGKey(seed), 3)
    variables = jax.tree_util.tree_map(lambda a: a.astype(dtype), models.init(cfg, kp))
    x = jax.random.normal(kx, (b, t, cfg.x_dim), dtype)
    if cfg.likelihood == "itakura_saito":
        x = jnp.exp(x)
    elif cfg.likelihood == "bernoulli":
        x = (x > 0).astype(dtype)
    noise = jax.random.normal(kn, (b, t, models.noise_dim(cfg)), dtype)
    return variables, x, noise


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    """Two pytrees with the same leaves, equal within the tolerances."""
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(leaves_a) == len(leaves_b) > 0
    for u, w in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(np.asarray(u), np.asarray(w), rtol=rtol, atol=atol)


def rel_err(a, b) -> float:
    """Largest absolute difference relative to the reference's largest magnitude."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def reference_errors(cfg, variables, x, noise) -> dict[str, float]:
    """Relative errors of the JAX pass (outputs, loss, recon, KL) against the NumPy loop."""
    @jax.jit
    def run(variables, x, noise):
        out, _ = models.forward(cfg, variables, x, noise)
        return out, losses.elbo(cfg, out, x, kl_weight=0.7, beta=1.3)

    out, (loss, metrics) = run(variables, x, noise)
    sd = interop.variables_to_state_dict(variables, cfg)
    want = ref.forward(cfg, sd, x, noise)
    want_loss, want_recon, want_kl = ref.loss(cfg, want, x, kl_weight=0.7, beta=1.3)
    errs = {k: rel_err(getattr(out, k), want[k]) for k in FIELDS}
    if out.seq is not None:
        errs.update(v=rel_err(out.seq.z, want["v"]), mean_v=rel_err(out.seq.mean_q, want["mean_v"]),
                    logvar_v=rel_err(out.seq.logvar_q, want["logvar_v"]))
    errs.update(loss=rel_err(loss, want_loss), recon=rel_err(metrics["recon"], want_recon),
                kl=rel_err(metrics["kl"], want_kl))
    return errs


def assert_matches_reference(cfg) -> dict[str, float]:
    """float64: to round-off (1e-10); float32: to 1e-4. Returns the float64 errors."""
    with jax.enable_x64(True):
        errs64 = reference_errors(cfg, *make(cfg, 1, dtype=jnp.float64))
    assert max(errs64.values()) < 1e-10, errs64
    errs32 = reference_errors(cfg, *make(cfg, 2))
    assert max(errs32.values()) < 1e-4, errs32
    return errs64


def assert_gradients_match_finite_differences(cfg, n=25, h=1e-6):
    """The ELBO's gradient at ``n`` random parameters against central differences (float64)."""
    with jax.enable_x64(True):
        variables, x, noise = make(cfg, 3, b=2, t=4, dtype=jnp.float64)
        flat, unravel = jax.flatten_util.ravel_pytree(variables)

        @jax.jit
        def f(v):
            return losses.elbo(cfg, models.forward(cfg, unravel(v), x, noise)[0], x)[0]

        grad = jax.jit(jax.grad(f))(flat)
        idx = np.random.default_rng(0).choice(flat.size, size=min(n, flat.size), replace=False)
        steps = jnp.zeros((len(idx), flat.size), flat.dtype).at[np.arange(len(idx)), idx].set(h)
        fd = (jax.lax.map(f, flat + steps) - jax.lax.map(f, flat - steps)) / (2 * h)
        np.testing.assert_allclose(grad[idx], fd, rtol=1e-6, atol=1e-7)
        assert np.any(np.abs(np.asarray(grad[idx])) > 1e-6)  # not a vacuous comparison


def assert_state_dict_round_trip(cfg, expected: dict[str, tuple[int, ...]] | None = None):
    """Export then import is the identity; with ``expected`` the names and torch shapes are the
    review module's (its state_dict, listed by the test)."""
    variables = models.init(cfg, jax.random.PRNGKey(5))
    sd = interop.variables_to_state_dict(variables, cfg)
    back = interop.state_dict_to_variables(sd, cfg)
    for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(back)):
        np.testing.assert_array_equal(np.asarray(a), b)
    assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(back)
    assert sum(a.size for a in sd.values()) == models.count_params(variables)
    if expected is not None:
        assert {k: tuple(a.shape) for k, a in sd.items()} == expected


def assert_generation_is_the_prior_pass(cfg, prime_len=4, n_gen=5):
    """Free running from the state after a prime equals the teacher-forced pass with z from the
    prior fed the generated frames (same noise): the same frames and the same final state. Cold
    start is finite and follows its key. Priming's state at the end of the prime is the
    teacher-forced pass's final carry."""
    model, v = models.build(cfg), models.init(cfg, jax.random.PRNGKey(0))
    _, prime, _ = make(cfg, 1, b=2, t=prime_len)
    q = jax.random.normal(jax.random.PRNGKey(2), (2, prime_len, models.noise_dim(cfg)))
    _, carry = models.forward(cfg, v, prime, q)
    noise = generate.draw_noise(cfg, v, jax.random.PRNGKey(3), n_gen, 2).z
    x_gen, carry_free = drivers.free_run(model, v, carry, noise, temperature=0.9)
    out, carry_tf = drivers.teacher_forced(model, v, x_gen, noise, carry, latent="prior", temperature=0.9)
    np.testing.assert_allclose(models.decode_frames(cfg, out.x_out), x_gen, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(carry_tf), jax.tree_util.tree_leaves(carry_free)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    cold = generate.cold_start(cfg, v, jax.random.PRNGKey(4), 7, 2)
    assert cold.shape == (2, 7, cfg.x_dim) and bool(jnp.all(jnp.isfinite(cold)))
    other = generate.cold_start(cfg, v, jax.random.PRNGKey(5), 7, 2)
    assert not np.allclose(cold, other)
    full = generate.draw_noise(cfg, v, jax.random.PRNGKey(6), 9, 2, posterior_frames=prime_len).z
    frames, carry_p, _ = drivers.primed(model, v, prime, full)
    _, carry_tf = models.forward(cfg, v, prime, full[:, :prime_len])
    for a, b in zip(jax.tree_util.tree_leaves(carry_p), jax.tree_util.tree_leaves(carry_tf)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert frames.shape == (2, 9, cfg.x_dim) and bool(jnp.all(jnp.isfinite(frames)))
    return frames


def assert_padding_is_invisible(cfg, lengths=(6, 3, 1)):
    """Rows of different lengths padded at the end and run with ``lengths``: every real frame's
    posterior, prior and decoder output (and DSAE's v) equal those of the row run alone, so
    evaluating whole utterances in padded batches is exact also for recurrences that look ahead."""
    variables, x, noise = make(cfg, 7, b=len(lengths), t=max(lengths))
    out, _ = models.forward(cfg, variables, x, noise, lengths=jnp.asarray(lengths, jnp.int32))
    for row, n in enumerate(lengths):
        alone, _ = models.forward(cfg, variables, x[row:row + 1, :n], noise[row:row + 1, :n])
        for name in FIELDS:
            a, b = getattr(out, name), getattr(alone, name)
            if a is not None:
                np.testing.assert_allclose(np.asarray(a[row, :n]), np.asarray(b[0]), rtol=2e-5, atol=2e-6,
                                           err_msg=f"{name} of row {row} ({n} frames)")
        if out.seq is not None:
            np.testing.assert_allclose(np.asarray(out.seq.mean_q[row]), np.asarray(alone.seq.mean_q[0]),
                                       rtol=2e-5, atol=2e-6)
