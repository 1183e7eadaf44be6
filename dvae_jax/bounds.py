"""Log-likelihood lower bounds of whole sequences: the ELBO and the importance-weighted bound
(IWAE, Burda et al. 2016) with K posterior samples, per sequence and per time step.

For one sequence x_{1:T} and one posterior sample z_{1:T} ~ q (the model's teacher-forced pass),
the log-weight is
    log w = sum_t [log p(x_t | .) + log p(z_t | .) - log q(z_t | .)]   over the real frames;
IWAE_K = log (1/K) sum_k w_k (a log-mean-exp), ELBO = E_q[log w]. Two ELBO estimates are given:
``elbo`` with the KL in closed form given the sampled past (Gaussian prior; the SRNN code's
test bound and losses.elbo), ``elbo_mc`` = the mean of log w (what IWAE_1 equals, sample by
sample). With a Student-t prior the KL has no closed form and both use its Monte Carlo estimate.
For the Bernoulli and Gaussian likelihoods these are bounds on log p(x); with Itakura-Saito the
reconstruction term is the IS divergence, a log-density up to a constant.

Protocol of the SRNN code (ml/training/train_srnn_midi.py, marcofraccaro/srnn): each test
piece's bound divided by its own length, then averaged over pieces (``*_per_step``). Every piece
is evaluated at its own length from a cold start, so padding adds nothing: SRNN's backward
recurrence would otherwise run through the padded frames (the SRNN code's masked GRU skips them
the same way). Samples are processed in calls of at most ``chunk`` frames (rows x length), so
memory stays bounded for any K; pieces of one length share one compiled program.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from dvae_jax import distributions, losses, models
from dvae_jax.config import ModelConfig
from dvae_jax.errors import DataError


def _log_prior(cfg: ModelConfig, out: models.Outputs) -> Float[Array, "b t"]:
    if cfg.prior == "gaussian":
        return jnp.sum(distributions.gaussian_log_prob(out.z, out.prior_loc, out.prior_logvar), -1)
    scale = jnp.exp(0.5 * out.prior_logvar)
    return jnp.sum(distributions.student_t_log_prob(out.z, out.nu, out.prior_loc, scale), -1)


@functools.partial(jax.jit, static_argnums=0)
def log_weights(
    cfg: ModelConfig, variables: Any, x: Float[Array, "b t f"], mask: Float[Array, "b t"],
    eps: Float[Array, "b t z"],
) -> tuple[Float[Array, " b"], Float[Array, " b"]]:
    """(log w, the closed-form-KL ELBO term) of each row for the posterior noise ``eps``, summed
    over the frames where ``mask`` is 1 (a cold start at frame 0, no dropout)."""
    out, _ = models.forward(cfg, variables, x, eps)
    log_px = -losses.reconstruction(cfg, x, out.x_out)  # (b, t)
    log_q = jnp.sum(distributions.gaussian_log_prob(out.z, out.mean_q, out.logvar_q), -1)
    log_w = jnp.sum(mask * (log_px + _log_prior(cfg, out) - log_q), axis=1)
    kl = jnp.sum(losses.kl_per_dim(cfg, out), -1)
    elbo = jnp.sum(mask * (log_px - kl), axis=1)
    if out.seq is not None:  # a sequence-level latent (DSAE's v): once per sequence
        v = out.seq
        zero = jnp.zeros_like(v.z)
        log_w += jnp.sum(distributions.gaussian_log_prob(v.z, zero, zero)
                         - distributions.gaussian_log_prob(v.z, v.mean_q, v.logvar_q), -1)
        elbo -= losses.kl_sequence(out)
    return log_w, elbo


def sample_keys(key: Array, pieces: np.ndarray, samples: np.ndarray) -> Array:
    """The key of sample s of piece i: fold_in(fold_in(key, i), s), whatever the chunking."""
    per_piece = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(pieces))
    return jax.vmap(jax.random.fold_in)(per_piece, jnp.asarray(samples))


@functools.partial(jax.jit, static_argnums=(0, 3))
def _rows(cfg: ModelConfig, variables: Any, x: Array, z_dim: int, keys: Array) -> tuple[Array, Array]:
    eps = jax.vmap(lambda k: jax.random.normal(k, (x.shape[1], z_dim), x.dtype))(keys)
    return log_weights(cfg, variables, x, jnp.ones(x.shape[:2], x.dtype), eps)


def lengths_of(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Each sequence's length from a prefix mask (ones, then zeros); None: all frames are real.

    Raises:
        DataError: a mask of the wrong shape, or not ones followed by zeros, or an empty row.
    """
    if mask is None:
        return np.full(x.shape[0], x.shape[1], np.int64)
    mask = np.asarray(mask)
    if mask.shape != x.shape[:2]:
        raise DataError(f"bounds: mask has shape {mask.shape}, x has {x.shape[:2]}; they must match")
    lengths = mask.sum(axis=1).astype(np.int64)
    prefix = np.arange(x.shape[1])[None, :] < lengths[:, None]
    if not np.array_equal(mask != 0, prefix) or np.any(lengths == 0):
        raise DataError("bounds: every mask row must be ones then zeros (padding at the end only), "
                        "with at least one frame")
    return lengths


def piece_bounds(
    cfg: ModelConfig, variables: Any, x: np.ndarray, mask: np.ndarray | None, k: int, key: Array,
    chunk: int = 16384,
) -> dict[str, np.ndarray]:
    """Per sequence (n,): ``iwae`` (K samples), ``elbo_mc`` (mean log w), ``elbo`` (closed-form
    KL, averaged over the K samples) and ``lengths``. See the module docstring."""
    if k < 1 or chunk < 1:
        raise ValueError(f"bounds: k={k} and chunk={chunk} must be >= 1")
    x = np.asarray(x, np.float32)
    lengths = lengths_of(x, mask)
    log_w = np.zeros((len(x), k))
    elbo = np.zeros((len(x), k))
    for length in np.unique(lengths):
        idx = np.flatnonzero(lengths == length)
        pieces, samples = np.repeat(idx, k), np.tile(np.arange(k), len(idx))
        rows = max(1, min(chunk // int(length), len(pieces)))  # one program per length
        for start in range(0, len(pieces), rows):
            sel = np.arange(start, start + rows) % len(pieces)  # the last call repeats rows
            keys = sample_keys(key, pieces[sel], samples[sel])
            lw, el = _rows(cfg, variables, jnp.asarray(x[pieces[sel], :length]), models.noise_dim(cfg), keys)
            keep = sel[: len(pieces) - start]
            log_w[pieces[keep], samples[keep]] = np.asarray(lw)[: len(keep)]
            elbo[pieces[keep], samples[keep]] = np.asarray(el)[: len(keep)]
    top = log_w.max(axis=1)  # log-mean-exp in float64, shifted by the largest weight
    iwae = top + np.log(np.mean(np.exp(log_w - top[:, None]), axis=1))
    return {"iwae": iwae, "elbo_mc": log_w.mean(1), "elbo": elbo.mean(1), "lengths": lengths}


def evaluate_bounds(
    cfg: ModelConfig, variables: Any, x: np.ndarray, mask: np.ndarray | None, k: int, key: Array,
    chunk: int = 16384,
) -> dict[str, float]:
    """The ELBO and IWAE_K of a set of sequences, in nats: ``*_per_step`` (each sequence's bound
    / its length, averaged over sequences: the SRNN paper's protocol), ``*_per_sequence`` (mean
    over sequences) and ``*_per_frame`` (total / total frames).

    Args:
        cfg: the model's configuration.
        variables: its Flax variables.
        x: (n, t, f) sequences, zero-padded at the end.
        mask: (n, t) 1 on real frames then 0, or None (all real).
        k: importance samples per sequence (K = 1: IWAE is the sampled ELBO).
        key: PRNG key of the posterior samples.
        chunk: the most frames (rows x length) run in one call: bounds memory for any K.
    """
    b = piece_bounds(cfg, variables, x, mask, k, key, chunk)
    n_frames = float(b["lengths"].sum())
    res: dict[str, float] = {"k": k, "sequences": len(b["lengths"]), "frames": int(n_frames)}
    for name in ("elbo", "elbo_mc", "iwae"):
        v = b[name]
        res[f"{name}_per_step"] = float(np.mean(v / b["lengths"]))
        res[f"{name}_per_sequence"] = float(np.mean(v))
        res[f"{name}_per_frame"] = float(np.sum(v) / n_frames)
    return res
