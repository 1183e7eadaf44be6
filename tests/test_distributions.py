"""Distributions against scipy.stats on random parameters; the Monte Carlo KL against the closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from dvae_jax import distributions as D

RNG = np.random.default_rng(0)


def test_gaussian_log_prob_and_entropy_match_scipy():
    x, m = RNG.normal(size=50), RNG.normal(size=50)
    lv = RNG.uniform(-3, 3, size=50)
    got = np.asarray(D.gaussian_log_prob(jnp.asarray(x), jnp.asarray(m), jnp.asarray(lv)))
    np.testing.assert_allclose(got, stats.norm.logpdf(x, m, np.exp(0.5 * lv)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(D.gaussian_entropy(jnp.asarray(lv))),
                               stats.norm.entropy(scale=np.exp(0.5 * lv)), rtol=1e-5, atol=1e-5)


def test_student_t_log_prob_matches_scipy():
    x, loc = RNG.normal(size=50) * 3, RNG.normal(size=50)
    scale, nu = RNG.uniform(0.2, 3, size=50), RNG.uniform(1.0, 30.0, size=50)
    got = np.asarray(D.student_t_log_prob(*map(jnp.asarray, (x, nu, loc, scale))))
    np.testing.assert_allclose(got, stats.t.logpdf(x, nu, loc, scale), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_closed_form_gaussian_kl_matches_numerical_integration(seed):
    r = np.random.default_rng(seed)
    mq, mp = r.normal(size=2)
    lq, lp = r.uniform(-1.5, 1.5, size=2)
    q, p = stats.norm(mq, np.exp(0.5 * lq)), stats.norm(mp, np.exp(0.5 * lp))
    want, _ = integrate.quad(lambda z: q.pdf(z) * (q.logpdf(z) - p.logpdf(z)), -30, 30, limit=200)
    got = float(D.kl_gaussian(*map(jnp.asarray, (mq, lq, mp, lp))))
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_reparameterised_gaussian_sample_has_the_right_moments():
    eps = jax.random.normal(jax.random.PRNGKey(0), (200_000,))
    z = np.asarray(D.gaussian_sample(jnp.asarray(1.5), jnp.asarray(np.log(0.25)), eps))
    assert z.mean() == pytest.approx(1.5, abs=0.01) and z.std() == pytest.approx(0.5, abs=0.01)


def test_student_t_sample_follows_scipy_distribution():
    z = np.asarray(D.student_t_sample(jax.random.PRNGKey(1), jnp.full((20_000,), 4.0), 0.5, 2.0))
    assert stats.kstest(z, stats.t(4.0, 0.5, 2.0).cdf).pvalue > 0.01


@pytest.mark.parametrize("use_entropy", [False, True])
def test_monte_carlo_kl_against_student_t_with_huge_nu_equals_the_gaussian_kl(use_entropy):
    # Given q = N(mq, vq) and a Student-t prior with nu = 1e6 (numerically a Gaussian)
    n = 200_000
    mq, lq, mp, lp = 0.3, -0.4, -0.2, 0.5
    eps = jax.random.normal(jax.random.PRNGKey(2), (n,))
    z = D.gaussian_sample(jnp.asarray(mq), jnp.asarray(lq), eps)
    # When the KL is estimated by Monte Carlo at the reparameterised samples
    est = np.asarray(D.kl_gaussian_student_t_mc(z, mq, lq, jnp.asarray(1e6), mp, np.exp(0.5 * lp),
                                                use_entropy=use_entropy), np.float64)
    closed = float(D.kl_gaussian(*map(jnp.asarray, (mq, lq, mp, lp))))
    # Then the estimate agrees with the closed form within 3 standard errors
    se = est.std() / np.sqrt(n)
    assert abs(est.mean() - closed) < 3 * se + 1e-4, (est.mean(), closed, se)
