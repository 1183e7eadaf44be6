"""The four ways a DVAE is run, written once for every model over its per-step pieces
(dvae_jax/models/base.py): the teacher-forced ELBO pass, free-running generation (cold start),
primed generation, and scheduled sampling.

One generic step serves them all. Its switches say where z_t comes from (``latent``: the
posterior, as in training, or the tempered prior) and which frame feeds the recurrence
(``feed``: 'data' = the real frame, teacher-forced; 'model' = the model's own decoded frame,
free-running; 'mixed' = the decoded frame where a mask says so, scheduled sampling).

Arrays are batch-major (b, t, ...) at the boundary and time-major inside (scans run over the
leading axis). All noise is drawn by the caller, so every driver can be compared with a plain
loop fed the same noise.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from dvae_jax.models import base
from dvae_jax.models.base import DVAE, Outputs

LATENTS = ("posterior", "prior")
FEEDS = ("data", "model", "mixed")


class StepIn(NamedTuple):
    """One step's scanned inputs (time-major when stacked); absent entries are None."""

    data: Any  # the model's hoisted Data (needed by the posterior and by feed 'data'/'mixed')
    noise: Float[Array, "b z"]  # standard noise of z_t (posterior: N(0, 1); prior: its own)
    x_noise: Float[Array, "b f"] | None = None  # decoding noise (decode='sample')
    mask: Bool[Array, " b"] | None = None  # feed 'mixed': True where the model's frame is fed
    key: Array | None = None  # dropout key of this step


class StepOut(NamedTuple):
    latent: base.Latent
    rec: Any  # the model's record for ``finish``
    x_out: Float[Array, "b o"] | None  # decoder head (feeds 'model' and 'mixed' only)
    x: Float[Array, "b f"] | None  # the decoded frame fed back (feeds 'model' and 'mixed')


def _step(model: DVAE, p: Any, latent: str, feed: str, decode: str, temperature, stop_gradient: bool,
          carry: Any, s: StepIn) -> tuple[Any, StepOut]:
    drop = base.make_dropout(model.cfg.dropout_p, s.key)
    carry, ctx = model.enter(p, carry, s.data, feed == "data", drop)
    lat = model.latent(p, carry, ctx, s.data, s.noise, latent == "posterior", temperature, drop)
    zf = model.z_features(p, lat.z, drop)
    x_out = x_hat = None
    if feed == "data":
        frame = s.data.frame
    else:
        x_out = model.emit(p, ctx, zf, drop)
        x_hat = base.decode_frames(model.cfg, x_out, decode, s.x_noise)
        if stop_gradient:
            x_hat = jax.lax.stop_gradient(x_hat)
        frame = model.frame_in(p, x_hat, drop)
        if feed == "mixed":
            frame = jnp.where(s.mask[:, None], frame, s.data.frame)
    carry = model.leave(p, carry, ctx, zf, frame, drop)
    return carry, StepOut(lat, model.record(ctx, zf), x_out, x_hat)


def _scan(model, p, carry, xs: StepIn, latent: str, feed: str, decode: str = "mean",
          temperature=1.0, stop_gradient: bool = True) -> tuple[Any, StepOut]:
    step = functools.partial(_step, model, p, latent, feed, decode, temperature, stop_gradient)
    return jax.lax.scan(step, carry, xs, unroll=model.cfg.unroll)


def _dropout_keys(model: DVAE, key: Array | None, n_steps: int) -> tuple[Array | None, Array | None]:
    """(key of the hoisted layers, per-step keys (t, 2)) or Nones when dropout is off."""
    if key is None or model.cfg.dropout_p <= 0.0:
        return None, None
    return jax.random.fold_in(key, 0), jax.random.split(jax.random.fold_in(key, 1), n_steps)


def _outputs(model: DVAE, variables, p, out: StepOut, carry0, drop, x_out=None) -> Outputs:
    loc, logvar, x_out = model.finish(p, out.rec, out.latent.z, carry0, drop, x_out)
    tm = base.time_major
    return Outputs(tm(out.latent.z), tm(out.latent.mean_q), tm(out.latent.logvar_q), loc, logvar,
                   x_out, model.nu(variables))


# ---------------------------------------------------------------------------------------------
# (1) The teacher-forced pass


def teacher_forced(
    model: DVAE,
    variables: Any,
    x: Float[Array, "b t f"],
    noise: Float[Array, "b t z"],
    carry: Any = None,
    latent: str = "posterior",
    temperature: Float[Array, ""] | float = 1.0,
    dropout_key: Array | None = None,
) -> tuple[Outputs, Any]:
    """The model over real frames, every non-recurrent product hoisted out of the scan.

    Args:
        model: a built model (``models.build(cfg)``).
        variables: Flax variables {'params': ...}.
        x: real frames in the model's input space.
        noise: z_t's standard noise: N(0, 1) for the posterior (the reparameterisation eps),
            the prior's own standard noise with ``latent='prior'``.
        carry: the state before x[:, 0] (None: a cold start).
        latent: 'posterior' (training, the ELBO) or 'prior' (priming without looking ahead).
        temperature: the prior's scale multiplier with ``latent='prior'``.
        dropout_key: enables dropout (``model.dropout_p``); None is deterministic.

    Returns:
        (Outputs batch-major (mean_q/logvar_q None with the prior), the carry after the last
        frame: what a free run continues from).
    """
    p = model.params(variables)
    carry0 = model.initial_carry(p, x.shape[0], x.dtype) if carry is None else carry
    k_hoist, k_steps = _dropout_keys(model, dropout_key, x.shape[1])
    drop = base.make_dropout(model.cfg.dropout_p, k_hoist)
    data, aux = model.hoist(p, x, carry0, drop, need_prior=latent == "prior")
    xs = StepIn(data, base.time_major(noise), key=k_steps)
    carry_t, out = _scan(model, p, carry0, xs, latent, "data", temperature=temperature)
    return _outputs(model, variables, p, out, carry0, drop), model.close(carry_t, aux, True)


# ---------------------------------------------------------------------------------------------
# (2) Free running and (3) primed generation


def free_run(
    model: DVAE,
    variables: Any,
    carry: Any,
    noise: Float[Array, "n t z"],
    x_noise: Float[Array, "n t f"] | None = None,
    temperature: Float[Array, ""] | float = 1.0,
    decode: str = "mean",
) -> tuple[Float[Array, "n t f"], Any]:
    """Generates len(noise[0]) frames from ``carry`` (None: a cold start), each decoded frame fed
    back: z_t ~ p(z_t | .) tempered, x_t from p(x_t | z_t, .) ('mean' or 'sample').

    Returns:
        (frames (n, t, f) in the model's input space, the final carry).
    """
    p = model.params(variables)
    if carry is None:
        carry = model.initial_carry(p, noise.shape[0], noise.dtype)
    xs = StepIn(None, base.time_major(noise), base.time_major(x_noise))
    carry, out = _scan(model, p, carry, xs, "prior", "model", decode, temperature)
    return base.time_major(out.x), carry


def primed(
    model: DVAE,
    variables: Any,
    prime: Float[Array, "n p f"],
    noise: Float[Array, "n t z"],
    x_noise: Float[Array, "n t f"] | None = None,
    latent: str = "posterior",
    temperature: Float[Array, ""] | float = 1.0,
    decode: str = "mean",
    real_prime: bool = False,
) -> tuple[Float[Array, "n t f"], Any, Any]:
    """The teacher-forced pass over the prime (its final carry), then a free run from it for the
    remaining t - p frames of ``noise``.

    Returns:
        (frames (n, t, f): the prime's reconstruction (decoded as ``decode`` says) or, with
        ``real_prime``, the prime itself, then the continuation; the carry at the end of the
        prime; the final carry).
    """
    p_len = prime.shape[1]
    out, carry_p = teacher_forced(model, variables, prime, noise[:, :p_len], None, latent, temperature)
    if real_prime:
        head = prime
    else:
        xn = None if x_noise is None else x_noise[:, :p_len]
        head = base.decode_frames(model.cfg, out.x_out, decode, xn)
    tail_xn = None if x_noise is None else x_noise[:, p_len:]
    tail, carry = free_run(model, variables, carry_p, noise[:, p_len:], tail_xn, temperature, decode)
    return jnp.concatenate([head, tail], axis=1), carry_p, carry


# ---------------------------------------------------------------------------------------------
# (4) Scheduled sampling


def scheduled_sampling(
    model: DVAE,
    variables: Any,
    x: Float[Array, "b t f"],
    noise: Float[Array, "b t z"],
    use_generated: Bool[Array, "b t"],
    x_noise: Float[Array, "b t f"] | None = None,
    feedback: str = "mean",
    stop_gradient: bool = True,
    dropout_key: Array | None = None,
) -> Outputs:
    """The training pass with the frame that feeds the deterministic recurrence replaced, where
    ``use_generated`` says so, by the model's own decoded output for that frame, x^_t =
    decode(p(x_t | z_t, .)) with z_t this pass's posterior sample (Bengio et al. 2015; the
    review's SRNN "generation mode"). The posterior keeps seeing the real frames (its hoisted
    data path); the targets stay the real frames. With ``use_generated`` all False this is the
    teacher-forced pass (tested).
    """
    p = model.params(variables)
    carry0 = model.initial_carry(p, x.shape[0], x.dtype)
    k_hoist, k_steps = _dropout_keys(model, dropout_key, x.shape[1])
    drop = base.make_dropout(model.cfg.dropout_p, k_hoist)
    data, _ = model.hoist(p, x, carry0, drop, need_prior=False)
    tm = base.time_major
    xs = StepIn(data, tm(noise), tm(x_noise), tm(use_generated), k_steps)
    _, out = _scan(model, p, carry0, xs, "posterior", "mixed", feedback, stop_gradient=stop_gradient)
    return _outputs(model, variables, p, out, carry0, drop, x_out=out.x_out)
