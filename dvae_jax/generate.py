"""Generation from a trained model, and scheduled sampling: the public, jitted API over the
generic drivers (dvae_jax/drivers.py); nothing here is specific to one model.

- Cold start: the model's initial carry, z from the prior, each decoded frame fed back.
- Primed: the teacher-forced pass over P real frames returns its final carry; a free run
  continues from it.
- Scheduled sampling: the training pass with some frames of the recurrence replaced by the
  model's own output.

Features are in the model's input space: STFT power for the Itakura-Saito likelihood,
normalised log-Mel for the Gaussian one (undo the normalisation before inversion).

Randomness: every function that takes a ``key`` draws all of its noise before the scan
(:func:`draw_noise`) and calls a ``*_from_noise`` twin, which tests feed with the same noise as a
reference loop. Arrays are batch-major (n, t, f).
"""

from __future__ import annotations

import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from dvae_jax import drivers, models
from dvae_jax.config import FeatureConfig, ModelConfig
from dvae_jax.errors import ConfigError
from dvae_jax.models import decode_frames, prior_nu  # noqa: F401  (part of this API)

PRNGKey = Array
DECODES = ("mean", "sample")
LATENTS = drivers.LATENTS
PRIME_OUTPUTS = ("reconstruction", "real")
SS_PER = ("frame", "sequence")


class Noise(NamedTuple):
    """Pre-drawn noise for ``t`` generated (or primed) frames of ``n`` sequences, batch-major.

    z: (n, t, z_dim) standard noise of the latent at each frame: N(0, 1) for a Gaussian prior (or
       for a posterior sample during priming), standard Student-t(nu) for a Student-t prior;
       z_t = loc + temperature * scale * noise.
    x: (n, t, x_dim) decoding noise for ``decode='sample'``: Exponential(1) for Itakura-Saito
       (x = exp(v) * E is |X|^2 of a circular complex Gaussian of variance exp(v)), N(0, 1) for
       a Gaussian likelihood (x = mean + std * N); None for ``decode='mean'``.
    """

    z: Array
    x: Array | None



def _check(cfg: ModelConfig, decode: str = "mean", latent: str = "posterior") -> models.DVAE:
    """The built model, after checking the generation options (one line naming the bad one)."""
    model = models.build(cfg)
    if decode not in DECODES:
        raise ConfigError(f"decode={decode!r}: must be one of {DECODES}")
    if latent not in LATENTS:
        raise ConfigError(f"latent={latent!r}: must be one of {LATENTS}")
    return model


# ---------------------------------------------------------------------------------------------
# Noise


def _decoder_noise(cfg: ModelConfig, key: PRNGKey, shape: tuple[int, ...], dtype) -> Array:
    """Noise of sampled decoding: Exponential(1) (|X|^2 of a circular complex Gaussian, scaled by
    the IS variance), Uniform(0, 1) (Bernoulli: x = 1[U < p]) or N(0, 1) (Gaussian likelihood)."""
    if cfg.likelihood == "itakura_saito":
        return jax.random.exponential(key, shape, dtype)
    if cfg.likelihood == "bernoulli":
        return jax.random.uniform(key, shape, dtype)
    return jax.random.normal(key, shape, dtype)


@functools.partial(jax.jit, static_argnames=("cfg", "n_frames", "n_samples", "decode", "posterior_frames"))
def draw_noise(
    cfg: ModelConfig,
    variables: Any,
    key: PRNGKey,
    n_frames: int,
    n_samples: int = 1,
    decode: str = "mean",
    posterior_frames: int = 0,
) -> Noise:
    """All the noise a generation needs, drawn at once (see :class:`Noise`).

    The first ``posterior_frames`` frames get N(0, 1) latent noise (posterior samples during
    priming), whatever the prior; the others the prior's standard noise.
    """
    k_z, k_x, k_q = jax.random.split(key, 3)
    shape = (n_samples, n_frames, cfg.z_dim)
    if cfg.prior == "student_t":
        nu = jnp.broadcast_to(prior_nu(cfg, variables), shape)
        z = jax.random.t(k_z, nu, shape, jnp.float32)
    else:
        z = jax.random.normal(k_z, shape, jnp.float32)
    if posterior_frames:
        q = jax.random.normal(k_q, (n_samples, posterior_frames, cfg.z_dim), jnp.float32)
        z = z.at[:, :posterior_frames].set(q)
    extra = models.noise_dim(cfg) - cfg.z_dim
    if extra:  # a sequence-level latent's standard normal noise (DSAE's v, read at frame 0)
        v = jax.random.normal(jax.random.fold_in(k_q, 1), (n_samples, n_frames, extra), jnp.float32)
        z = jnp.concatenate([z, v], axis=-1)
    x = _decoder_noise(cfg, k_x, (n_samples, n_frames, cfg.x_dim), jnp.float32) if decode == "sample" else None
    return Noise(z, x)


# ---------------------------------------------------------------------------------------------
# Cold start and priming


@functools.partial(jax.jit, static_argnames=("cfg", "decode"))
def cold_start_from_noise(
    cfg: ModelConfig, variables: Any, noise: Noise, temperature: float | Array = 1.0, decode: str = "mean"
) -> Float[Array, "n t f"]:
    """Cold start with pre-drawn noise (the testable core of :func:`cold_start`).

    Returns:
        (n, t, x_dim) features, n and t from ``noise.z``.
    """
    model = _check(cfg, decode)
    x, _ = drivers.free_run(model, variables, None, noise.z, noise.x, jnp.asarray(temperature, jnp.float32), decode)
    return x


@functools.partial(jax.jit, static_argnames=("cfg", "n_frames", "n_samples", "decode"))
def cold_start(
    cfg: ModelConfig,
    variables: Any,
    key: PRNGKey,
    n_frames: int,
    n_samples: int = 1,
    temperature: float | Array = 1.0,
    decode: str = "mean",
) -> Float[Array, "n t f"]:
    """Generates ``n_samples`` sequences of ``n_frames`` frames from scratch.

    VRNN: h_1 = 0 (c_1 = 0); z_t ~ p(z_t | h_t) with its scale times ``temperature``; x_t from
    p(x_t | z_t, h_t) (mean or sampled, :func:`decode_frames`); h_{t+1} = LSTM([phi_x(x_t),
    phi_z(z_t)], h_t). SRNN: x_0 = 0, z_0 = 0; h_t = LSTM_h(MLP_x_h(x_{t-1})); z_t ~ p(z_t |
    z_{t-1}, h_t) (tempered); x_t from p(x_t | z_t, h_t).

    Args:
        cfg: the model's configuration (static: hashable).
        variables: Flax variables {'params': ...} (or the params tree itself).
        key: PRNG key; all noise is drawn from it before the scan.
        n_frames: frames to generate (static).
        n_samples: sequences generated at once, as a batch (static).
        temperature: multiplies the prior's std (Student-t: its scale); 0 gives the prior mean
            at every step (deterministic with ``decode='mean'``). Traced: a sweep does not recompile.
        decode: 'mean' (IS: exp(v), the expected power; Gaussian: the mean) or 'sample'.

    Returns:
        (n_samples, n_frames, x_dim) features in the model's input space.
    """
    _check(cfg, decode)
    noise = draw_noise(cfg, variables, key, n_frames, n_samples, decode)
    return cold_start_from_noise(cfg, variables, noise, temperature, decode)


def _prime_batch(prime: Array, n_samples: int) -> Float[Array, "n p f"]:
    prime = jnp.asarray(prime, jnp.float32)
    if prime.ndim == 2:
        prime = prime[None]
    if prime.ndim != 3:
        raise ConfigError(f"prime must be (P, x_dim) or (n, P, x_dim), got shape {prime.shape}")
    return jnp.repeat(prime, n_samples, axis=0) if n_samples > 1 else prime


@functools.partial(jax.jit, static_argnames=("cfg", "latent", "decode", "prime_output"))
def primed_from_noise(
    cfg: ModelConfig,
    variables: Any,
    prime: Float[Array, "n p f"],
    noise: Noise,
    latent: str = "posterior",
    temperature: float | Array = 1.0,
    decode: str = "mean",
    prime_output: str = "reconstruction",
) -> Float[Array, "n t f"]:
    """Primed generation with pre-drawn noise (the testable core of :func:`primed`).

    Args:
        prime: (n, P, x_dim) real frames, one per sequence of ``noise`` (n = noise.z.shape[0]).
        noise: P + T frames; its first P latent entries are the posterior's N(0, 1) noise when
            ``latent='posterior'`` (the model's ``eps``), the prior's standard noise otherwise.

    Returns:
        (n, P + T, x_dim).
    """
    model = _check(cfg, decode, latent)
    if prime_output not in PRIME_OUTPUTS:
        raise ConfigError(f"prime_output={prime_output!r}: must be one of {PRIME_OUTPUTS}")
    n, p_len = prime.shape[:2]
    if noise.z.shape[0] != n or noise.z.shape[1] < p_len:
        raise ConfigError(f"noise.z {noise.z.shape} does not cover a prime of shape {prime.shape}")
    x, _, _ = drivers.primed(
        model, variables, prime.astype(jnp.float32), noise.z, noise.x, latent,
        jnp.asarray(temperature, jnp.float32), decode, real_prime=prime_output == "real",
    )
    return x


@functools.partial(
    jax.jit, static_argnames=("cfg", "n_frames", "latent", "decode", "n_samples", "prime_output")
)
def primed(
    cfg: ModelConfig,
    variables: Any,
    key: PRNGKey,
    prime: Float[Array, "p f"] | Float[Array, "n p f"],
    n_frames: int,
    latent: str = "posterior",
    temperature: float | Array = 1.0,
    decode: str = "mean",
    n_samples: int = 1,
    prime_output: str = "reconstruction",
) -> Float[Array, "n t f"]:
    """Runs the model over P real frames (teacher-forced), then continues freely for ``n_frames``.

    Priming: every real frame enters the recurrence as in training (VRNN: phi_x(x_t) into the
    LSTM; SRNN: x_{t-1} into MLP_x_h / LSTM_h); z_t is drawn from the posterior q (VRNN: q(z_t |
    x_t, h_t); SRNN: q(z_t | z_{t-1}, g_t) with the backward state g run over the prime segment
    only) or, with ``latent='prior'``, from the tempered prior. The free part then starts from
    the state after the last real frame (VRNN: h_{P+1}; SRNN: h_P's LSTM state, x_P real, z_P).

    Args:
        prime: (P, x_dim) or (m, P, x_dim) real frames in the model's input space.
        n_frames: frames generated after the prime (static; 0 is allowed).
        latent: 'posterior' (as in training) or 'prior' (``temperature`` applies).
        temperature: prior scale multiplier for the free part (and the prime with 'prior').
        decode: 'mean' or 'sample' (:func:`decode_frames`), for the prime's reconstruction too.
        n_samples: continuations per prime sequence (static).
        prime_output: 'reconstruction' (default: the decoder's output over the prime, decoded
            as ``decode`` says) or 'real' (the prime frames themselves).

    Returns:
        (m * n_samples, P + n_frames, x_dim), prime-major (the n_samples continuations of prime
        0 first); m = 1 for a 2-D prime.
    """
    _check(cfg, decode, latent)
    batch = _prime_batch(prime, n_samples)
    p_len = batch.shape[1]
    noise = draw_noise(
        cfg, variables, key, p_len + n_frames, batch.shape[0], decode,
        posterior_frames=p_len if latent == "posterior" else 0,
    )
    return primed_from_noise(cfg, variables, batch, noise, latent, temperature, decode, prime_output)


# ---------------------------------------------------------------------------------------------
# Scheduled sampling (training in "generation mode")



def scheduled_sampling_mask(
    key: PRNGKey, p: float | Array, batch: int, n_frames: int, per: str = "frame"
) -> Bool[Array, "b t"]:
    """(b, t) booleans, True where the model's own frame replaces the real one: Bernoulli(p)
    per frame, or per sequence (``per='sequence'``: all frames of a sequence or none)."""
    if per == "frame":
        return jax.random.bernoulli(key, p, (batch, n_frames))
    if per == "sequence":
        return jnp.broadcast_to(jax.random.bernoulli(key, p, (batch, 1)), (batch, n_frames))
    raise ConfigError(f"per={per!r}: must be one of {SS_PER}")


@functools.partial(jax.jit, static_argnames=("cfg", "per", "feedback", "stop_gradient", "deterministic"))
def scheduled_sampling_forward(
    cfg: ModelConfig,
    variables: Any,
    x: Float[Array, "b t f"],
    key: PRNGKey,
    p: float | Array = 0.0,
    per: str = "frame",
    feedback: str = "mean",
    eps: Float[Array, "b t z"] | None = None,
    use_generated: Bool[Array, "b t"] | None = None,
    stop_gradient: bool = True,
    deterministic: bool = True,
) -> models.Outputs:
    """The model's training forward with scheduled sampling; returns :class:`models.Outputs`
    for ``losses.elbo(cfg, out, x, ...)`` (the targets stay the real frames).

    What is replaced, and by what: the frame that enters the *deterministic recurrence* of the
    generative model, by the model's own output for that frame, x^_t = decode(p(x_t | z_t, .))
    with z_t the posterior sample of this same forward (``feedback``: 'mean' is exp(v) for IS,
    the mean for a Gaussian; 'sample' draws it), with probability ``p`` independently per frame
    (``per='frame'``) or per sequence (``per='sequence'``). Gradients do not flow through x^
    (``stop_gradient``), as in Bengio et al. 2015.

    - VRNN: h_{t+1} = LSTM([phi_x(x~_t), phi_z(z_t)], h_t) with x~_t = x^_t where chosen, else
      x_t. The posterior q(z_t | x_t, h_t) still sees the real x_t; h_t, the prior p(z_t | h_t)
      and the decoder follow the mixed recurrence.
    - SRNN ("generation mode" of the review): h_t = LSTM_h(MLP_x_h(x~_{t-1})), x~_{t-1} = x^_{t-1}
      where chosen, else x_{t-1} (x_0 = 0 either way). The prior p(z_t | z_{t-1}, h_t), the
      decoder (and with Resq the posterior mean's prior part) use this h_t. The backward state g
      of the inference network is computed from the real frames and the teacher-forced h (g
      depends on the future, x^ on the past: using the mixed h there would be circular), so the
      encoder sees the data exactly as in teacher forcing.

    With p = 0 (or ``use_generated`` all False) this equals the teacher-forced pass (tested).
    The forward is one sequential scan over all frames (the decoder and, for VRNN, phi_x of x^
    enter the loop), so it is slower than the teacher-forced pass.

    Args:
        x: (b, t, x_dim) real frames in the model's input space.
        key: draws the replacement mask, eps (when None), sampled feedback and dropout.
        p: replacement probability (traced; a schedule can change it without recompiling).
        per: 'frame' or 'sequence'.
        feedback: 'mean' or 'sample'.
        eps: (b, t, z_dim) posterior noise; drawn from ``key`` when None.
        use_generated: (b, t) bool mask overriding ``p``/``per`` (for tests and analyses).
        stop_gradient: no gradient through the fed-back frames.
        deterministic: no dropout.

    Returns:
        models.Outputs, batch-major.
    """
    model = _check(cfg, feedback)
    k_mask, k_eps, k_x, k_drop = jax.random.split(key, 4)
    b, t_len = x.shape[:2]
    if eps is None:
        eps = jax.random.normal(k_eps, (b, t_len, models.noise_dim(cfg)), x.dtype)
    if use_generated is None:
        use_generated = scheduled_sampling_mask(k_mask, p, b, t_len, per)
    x_noise = _decoder_noise(cfg, k_x, (b, t_len, cfg.x_dim), x.dtype) if feedback == "sample" else None
    return drivers.scheduled_sampling(
        model, variables, x, eps, use_generated, x_noise, feedback, stop_gradient,
        dropout_key=None if deterministic else k_drop,
    )


def scheduled_sampling_probability(
    step: Array | int, steps_per_epoch: int, start_epoch: float = 0.0, ramp_epochs: float = 50.0,
    p_max: float = 1.0,
) -> Float[Array, ""]:
    """Linear ramp of the replacement probability: 0 before ``start_epoch``, then up to ``p_max``
    over ``ramp_epochs`` (a plain step -> value function, optax style)."""
    epoch = jnp.asarray(step, jnp.float32) / max(steps_per_epoch, 1)
    frac = (epoch - start_epoch) / max(ramp_epochs, 1e-9)
    return p_max * jnp.clip(frac, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Speed


def realtime_factor(
    cfg: ModelConfig,
    variables: Any,
    feat_cfg: FeatureConfig,
    seconds: float = 10.0,
    n_samples: int = 1,
    decode: str = "mean",
    invert: bool = True,
    n_iter: int = 64,
    repeats: int = 3,
    denormalize=None,
) -> dict:
    """Wall-clock real-time factor of cold-start generation of ``seconds`` of audio, plus its
    inversion to a waveform (Griffin-Lim in JAX, ``n_iter`` iterations): time / audio duration.
    Compilation is excluded (one warm-up call); the median of ``repeats`` runs is reported.

    Args:
        denormalize: features -> raw features before inversion (``Dataset.denormalize``); None
            treats the generated features as raw (fine for timing).

    Returns:
        dict with frames, audio_seconds (one sequence), generate_s (all ``n_samples`` sequences),
        invert_s (one sequence), rtf_generate (generate_s / audio produced), rtf_invert, rtf (their
        sum: seconds of compute per second of audio; below 1 is faster than real time), device.
    """
    from dvae_jax.audio import inversion  # local: audio pulls librosa

    n_frames = round(seconds * feat_cfg.sample_rate / feat_cfg.hop_length)
    key = jax.random.PRNGKey(0)

    def gen():
        return jax.block_until_ready(cold_start(cfg, variables, key, n_frames, n_samples, 1.0, decode))

    def inv(feats):
        return inversion.decoded_to_wave(np.asarray(feats[0]), feat_cfg, denormalize, fill_nonfinite=True,
                                         method="griffin_lim_jax", n_iter=n_iter)

    feats = gen()
    if invert:
        inv(feats)
    t_gen, t_inv = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        feats = gen()
        t_gen.append(time.perf_counter() - t0)
        if invert:
            t0 = time.perf_counter()
            inv(feats)
            t_inv.append(time.perf_counter() - t0)
    audio_s = n_frames * feat_cfg.hop_length / feat_cfg.sample_rate
    g = float(np.median(t_gen))  # all n_samples sequences
    i = float(np.median(t_inv)) if invert else 0.0  # one sequence
    return {
        "frames": n_frames, "n_samples": n_samples, "audio_seconds": audio_s, "generate_s": g,
        "invert_s": i, "rtf_generate": g / (audio_s * n_samples), "rtf_invert": i / audio_s,
        "rtf": g / (audio_s * n_samples) + i / audio_s, "device": str(jax.devices()[0]), "model": cfg.model,
        "griffin_lim_iters": n_iter if invert else 0,
    }
