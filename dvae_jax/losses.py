"""ELBO terms with the review's per-frame normalisation; pure functions, batched over all frames."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from dvae_jax import distributions
from dvae_jax.config import ModelConfig
from dvae_jax.models.base import Outputs
from dvae_jax.notation import Metrics

IS_EPS = 1e-10  # the review's floor on the decoder variance


def itakura_saito(x: Float[Array, "b t f"], logvar: Float[Array, "b t f"]) -> Float[Array, "b t"]:
    """Per-frame Itakura-Saito divergence sum_f (x/y - log(x/y) - 1), y = exp(logvar) + 1e-10."""
    ratio = x / (jnp.exp(logvar) + IS_EPS)
    return jnp.sum(ratio - jnp.log(ratio) - 1.0, axis=-1)


def gaussian_nll(
    x: Float[Array, "b t f"], mean: Float[Array, "b t f"], logvar: Float[Array, "b t f"]
) -> Float[Array, "b t"]:
    """Per-frame -log N(x; mean, exp(logvar)) summed over features (constant included)."""
    return -jnp.sum(distributions.gaussian_log_prob(x, mean, logvar), axis=-1)


def bernoulli_nll(x: Float[Array, "b t f"], logits: Float[Array, "b t f"]) -> Float[Array, "b t"]:
    """Per-frame -log Bernoulli(x; sigmoid(logits)) summed over features, for binary (or [0, 1])
    x: -(x log s(l) + (1 - x) log s(-l)), with log-sigmoid so that no logit overflows."""
    return -jnp.sum(x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits), axis=-1)


def reconstruction(cfg: ModelConfig, x: Float[Array, "b t f"], x_out: Float[Array, "b t o"]) -> Float[Array, "b t"]:
    """Per-frame reconstruction term (b, t) for the configured likelihood."""
    if cfg.likelihood == "itakura_saito":
        return itakura_saito(x, x_out)
    if cfg.likelihood == "bernoulli":
        return bernoulli_nll(x, x_out)
    if cfg.learn_x_var:
        return gaussian_nll(x, x_out[..., : cfg.x_dim], x_out[..., cfg.x_dim :])
    return gaussian_nll(x, x_out, jnp.full_like(x_out, cfg.fixed_x_logvar))


def kl_per_dim(cfg: ModelConfig, out: Outputs) -> Float[Array, "b t z"]:
    """KL(q(z_t|.) || p(z_t|.)) per frame and latent dimension (b, t, z): closed form for a
    Gaussian prior, a single-sample Monte Carlo estimate for a Student-t prior."""
    if cfg.prior == "gaussian":
        return distributions.kl_gaussian(out.mean_q, out.logvar_q, out.prior_loc, out.prior_logvar)
    scale = jnp.exp(0.5 * out.prior_logvar)
    return distributions.kl_gaussian_student_t_mc(
        out.z, out.mean_q, out.logvar_q, out.nu, out.prior_loc, scale,
        use_entropy=cfg.kl_estimator == "entropy",
    )


def kl_sequence(out: Outputs) -> Float[Array, " b"]:
    """KL(q(v | x) || N(0, I)) of each sequence's sequence-level latent (DSAE's v); zeros for a
    model without one."""
    if out.seq is None:
        return jnp.zeros(out.z.shape[:1], out.z.dtype)
    seq = out.seq
    zeros = jnp.zeros_like(seq.mean_q)
    return jnp.sum(distributions.kl_gaussian(seq.mean_q, seq.logvar_q, zeros, zeros), axis=-1)


def review_kl_offset(cfg: ModelConfig, seq_len: int | None = None) -> float:
    """What the review's code adds to the KL it logs, in nats per frame: its Gaussian KL
    (dvae/utils/loss.py, ``loss_KLD``) omits the constant -1 inside the sum, so its logged KL
    (and loss) is z_dim / 2 higher than the true KL per frame (DSAE: also v_dim / 2 per sequence,
    v_dim / (2 seq_len) per frame); the gradients are the same. NaN for a Student-t prior, which
    the review's code does not have."""
    if cfg.prior != "gaussian":
        return float("nan")
    extra = 0.5 * cfg.v_dim / seq_len if cfg.model == "dsae" and seq_len else 0.0
    return 0.5 * cfg.z_dim + extra


def elbo(
    cfg: ModelConfig,
    out: Outputs,
    x: Float[Array, "b t f"],
    mask: Float[Array, "b t"] | None = None,
    kl_weight: Float[Array, ""] | float = 1.0,
    beta: float = 1.0,
    free_bits: float = 0.0,
) -> tuple[Float[Array, ""], Metrics]:
    """Negative ELBO per frame: recon + kl_weight * beta * kl, each summed and divided by the
    number of (valid) frames, B*T without a mask, as in the review.

    Args:
        cfg: the model's configuration (likelihood, prior).
        out: the model's outputs for ``x``.
        x: targets (b, t, f).
        mask: (b, t), 1 for real frames, 0 for padding; None means all frames count.
        kl_weight: the annealing weight (a traced scalar is fine).
        beta: a fixed KL multiplier.
        free_bits: per-dimension floor (nats per frame) on the KL that enters the loss; the
            reported ``kl`` is always the raw value.

    Returns:
        (loss, metrics) with recon, kl (z's and, DSAE, v's), kl_v, kl_per_dim (z's, (z,)), frames.
    """
    if mask is None:
        recon = reconstruction(cfg, x, out.x_out)  # (b, t)
        kl = kl_per_dim(cfg, out)  # (b, t, z)
        n = jnp.asarray(recon.size, recon.dtype)
        recon_sum = jnp.sum(recon)
        kl_dim = jnp.sum(kl, axis=(0, 1)) / n
    else:
        # Padding must add nothing, not even NaN: Itakura-Saito of a zero (padded) frame is
        # infinite and inf * 0 is NaN (in the loss and its gradient), so padded frames are given a
        # harmless target and selected out rather than multiplied by 0.
        valid = mask > 0
        recon = reconstruction(cfg, jnp.where(valid[..., None], x, 1.0), out.x_out)
        kl = kl_per_dim(cfg, out)
        n = jnp.maximum(jnp.sum(valid.astype(recon.dtype)), 1.0)
        recon_sum = jnp.sum(jnp.where(valid, recon, 0.0))
        kl_dim = jnp.sum(jnp.where(valid[..., None], kl, 0.0), axis=(0, 1)) / n
    recon_mean = recon_sum / n
    # A sequence-level latent's KL counts once per sequence, over the same frame count (the
    # review's DSAE: loss_KLD(v) / (T * B)).
    kl_v = jnp.sum(kl_sequence(out)) / n
    kl_mean = jnp.sum(kl_dim) + kl_v
    kl_loss = (jnp.sum(jnp.maximum(kl_dim, free_bits)) + kl_v) if free_bits > 0 else kl_mean
    loss = recon_mean + kl_weight * beta * kl_loss
    metrics = {
        "loss": loss,
        "recon": recon_mean,
        "kl": kl_mean,
        "kl_v": kl_v,
        "kl_per_dim": kl_dim,
        "kl_weight": jnp.asarray(kl_weight, recon.dtype),
        "frames": n,
    }
    return loss, metrics
