"""The four ways a DVAE is run, written once for every model over its per-step pieces
(dvae_jax/models/base.py): the teacher-forced ELBO pass, free-running generation (cold start),
primed generation, and scheduled sampling.

One generic step serves them all. Its switches say where z_t comes from (``latent``: the
posterior, as in training, or the tempered prior) and which frame feeds the recurrence
(``feed``: 'data' = the real frame, teacher-forced; 'model' = the model's own decoded frame,
free-running; 'mixed' = the decoded frame where a mask says so, scheduled sampling; 'none' = no
frame: the latent chain of a model whose recurrences never read a frame, ``feeds_back_x =
False``, whose frames are then decoded together by ``model.decode``).

Noise: z_t's standard noise has ``model.noise_dim(cfg)`` entries per frame: z_dim, then (DSAE)
the sequence-level latent's, read at frame 0 only.

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

from dvae_jax.errors import ConfigError
from dvae_jax.models import base
from dvae_jax.models.base import DVAE, Outputs

LATENTS = ("posterior", "prior")
FEEDS = ("data", "model", "mixed", "none")


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
    hoisted = feed == "data"
    carry, ctx = model.enter(p, carry, s.data, hoisted, drop)
    lat = model.latent(p, carry, ctx, s.data, s.noise, latent == "posterior", temperature, drop)
    zf = model.z_features(p, lat.z, drop)
    carry, ctx = model.absorb(p, carry, ctx, zf, hoisted, drop)
    x_out = x_hat = None
    if feed == "data":
        frame = s.data.frame
    elif feed == "none":
        frame = None
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


def _outputs(model: DVAE, variables, p, out: StepOut, carry0, drop, x_out=None,
             seq: base.Latent | None = None, **kw) -> tuple[Outputs, Any]:
    """(Outputs, what ``finish`` hands to ``close`` as ``end``); ``kw``: lengths, when given."""
    loc, logvar, x_out, end = model.finish(p, out.rec, out.latent.z, carry0, drop, x_out, **kw)
    tm = base.time_major
    return Outputs(tm(out.latent.z), tm(out.latent.mean_q), tm(out.latent.logvar_q), loc, logvar,
                   x_out, model.nu(variables), seq), end


def split_noise(model: DVAE, noise: Float[Array, "b t n"]) -> tuple[Array, Array | None]:
    """(z's noise (b, t, z), the sequence-level latent's (b, v) or None)."""
    z_dim = model.cfg.z_dim
    if noise.shape[-1] == z_dim:
        return noise, None
    return noise[..., :z_dim], noise[:, 0, z_dim:]


def _sequence(model: DVAE, p, x, carry, noise_v, posterior: bool, temperature, drop, **kw):
    """The sequence-level latent in the carry (models without one: the carry unchanged)."""
    if noise_v is None:
        if model.noise_dim(model.cfg) != model.cfg.z_dim:
            raise ValueError(f"{model.name}: noise must have {model.noise_dim(model.cfg)} entries per "
                             f"frame (z_dim, then the sequence latent's)")
        return carry, None
    return model.sequence(p, x, carry, noise_v, posterior, temperature, drop, **kw)


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
    lengths: Array | None = None,
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
        lengths: (b,) real frames per row when rows are padded at the end (whole utterances of
            different lengths): recurrences that look ahead then start at each row's last real
            frame, so the real frames' outputs are those of the unpadded rows. None: no padding.

    Returns:
        (Outputs batch-major (mean_q/logvar_q None with the prior), the carry after the last
        frame: what a free run continues from; with ``lengths`` it is not meaningful).
    """
    p = model.params(variables)
    carry0 = model.initial_carry(p, x.shape[0], x.dtype) if carry is None else carry
    k_hoist, k_steps = _dropout_keys(model, dropout_key, x.shape[1])
    drop = base.make_dropout(model.cfg.dropout_p, k_hoist)
    noise, noise_v = split_noise(model, noise)
    kw = {} if lengths is None else {"lengths": lengths}  # models that only look back need not take it
    carry0, seq = _sequence(model, p, x, carry0, noise_v, latent == "posterior", temperature, drop, **kw)
    data, aux = model.hoist(p, x, carry0, drop, need_prior=latent == "prior", **kw)
    xs = StepIn(data, base.time_major(noise), key=k_steps)
    carry_t, out = _scan(model, p, carry0, xs, latent, "data", temperature=temperature)
    outputs, end = _outputs(model, variables, p, out, carry0, drop, seq=seq, **kw)
    return outputs, model.close(carry_t, aux, True, end)


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
    noise, noise_v = split_noise(model, noise)
    if carry is None:
        carry = model.initial_carry(p, noise.shape[0], noise.dtype)
        carry, _ = _sequence(model, p, None, carry, noise_v, False, temperature, None)
    if model.feeds_back_x:
        xs = StepIn(None, base.time_major(noise), base.time_major(x_noise))
        carry, out = _scan(model, p, carry, xs, "prior", "model", decode, temperature)
        return base.time_major(out.x), carry
    z, carry_end = latent_chain(model, p, carry, noise, temperature)
    x_out, end = model.decode(p, z, carry, None)
    return base.decode_frames(model.cfg, x_out, decode, x_noise), model.close(carry_end, None, False, end)


def latent_chain(model: DVAE, p: Any, carry: Any, noise: Float[Array, "n t z"],
                 temperature) -> tuple[Float[Array, "t n z"], Any]:
    """z_t ~ p(z_t | z_{<t}) tempered, from ``carry``, for a model whose recurrences never read a
    frame: (the latents, time-major; the carry after them)."""
    carry, out = _scan(model, p, carry, StepIn(None, base.time_major(noise)), "prior", "none",
                       temperature=temperature)
    return out.latent.z, carry


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
    if not model.causal_decoder:
        return _primed_jointly(model, variables, prime, out, carry_p, noise[:, p_len:, :model.cfg.z_dim],
                               x_noise, temperature, decode, real_prime)
    if real_prime:
        head = prime
    else:
        xn = None if x_noise is None else x_noise[:, :p_len]
        head = base.decode_frames(model.cfg, out.x_out, decode, xn)
    tail_xn = None if x_noise is None else x_noise[:, p_len:]
    tail, carry = free_run(model, variables, carry_p, noise[:, p_len:], tail_xn, temperature, decode)
    return jnp.concatenate([head, tail], axis=1), carry_p, carry


def _primed_jointly(model: DVAE, variables, prime, out: Outputs, carry_p, noise, x_noise, temperature,
                    decode: str, real_prime: bool):
    """Priming a model whose decoder is not causal (RVAE non-causal): the prime's posterior
    latents z_{1:p} (inference over the prime only), the prior's z_{p+1:t} after them, then every
    frame decoded from the whole latent sequence z_{1:t} at once: the continuation depends on the
    prime through z_{1:p}, and the prime's frames are re-decoded with the continuation's latents
    in view (``real_prime`` puts the real frames there instead)."""
    p = model.params(variables)
    z_tail, carry = latent_chain(model, p, carry_p, noise, temperature)
    z = jnp.concatenate([base.time_major(out.z), z_tail], axis=0)
    x_out, end = model.decode(p, z, model.initial_carry(p, prime.shape[0], prime.dtype), None)
    frames = base.decode_frames(model.cfg, x_out, decode, x_noise)
    if real_prime:
        frames = jnp.concatenate([prime, frames[:, prime.shape[1]:]], axis=1)
    return frames, carry_p, model.close(carry, None, False, end)


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
    if not model.feeds_back_x:
        raise ConfigError(f"scheduled sampling: model.model={model.name} never feeds a frame back "
                          "into a recurrence, so there is nothing to schedule; set train.scheduled_sampling=0")
    p = model.params(variables)
    carry0 = model.initial_carry(p, x.shape[0], x.dtype)
    k_hoist, k_steps = _dropout_keys(model, dropout_key, x.shape[1])
    drop = base.make_dropout(model.cfg.dropout_p, k_hoist)
    data, _ = model.hoist(p, x, carry0, drop, need_prior=False)
    tm = base.time_major
    xs = StepIn(data, tm(noise), tm(x_noise), tm(use_generated), k_steps)
    _, out = _scan(model, p, carry0, xs, "posterior", "mixed", feedback, stop_gradient=stop_gradient)
    return _outputs(model, variables, p, out, carry0, drop, x_out=out.x_out)[0]
