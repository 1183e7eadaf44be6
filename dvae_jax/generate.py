"""Cold-start and primed generation for VRNN and SRNN, and the scheduled-sampling forward; pure, jitted.

Everything here is a plain function of the parameter tree (``variables['params']``, names as
documented at the top of models.py) and a :class:`~dvae_jax.config.ModelConfig`; no Flax module
is applied, so the generation loop can feed each generated frame back into the recurrence.

Features are in the model's input space: STFT power for the Itakura-Saito likelihood,
normalised log-Mel for the Gaussian one (undo with ``Dataset.denormalize`` before inversion).

Notation (MODELS.md): VRNN state h_t (LSTM over [phi_x(x_t), phi_z(z_t)]), prior p(z_t | h_t),
decoder p(x_t | z_t, h_t). SRNN: h_t = LSTM_h(MLP_x_h(x_{t-1})), prior p(z_t | z_{t-1}, h_t),
decoder p(x_t | z_t, h_t), posterior q(z_t | z_{t-1}, g_t) with the backward state g.

Randomness: every function that takes a ``key`` draws all of its noise before the scan
(:func:`draw_noise`) and calls a ``*_from_noise`` twin, which tests feed with the same noise as a
reference loop. Arrays are batch-major (n, t, f) in the public API, time-major inside.
"""

from __future__ import annotations

import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dvae_jax import layers, models
from dvae_jax.config import FeatureConfig, ModelConfig
from dvae_jax.typing import Array, PRNGKey

DECODES = ("mean", "sample")
LATENTS = ("posterior", "prior")
PRIME_OUTPUTS = ("reconstruction", "real")


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


# ---------------------------------------------------------------------------------------------
# Parameters


def _mlp(tree: dict | None, name: str | None = None) -> list:
    """The ``linear0..n`` layers of an MLP entry (an MLP without layers has no entry)."""
    tree = (tree or {}) if name is None else (tree or {}).get(name, {})
    return [tree[f"linear{i}"] for i in range(len(tree))]


def _lstm(tree: dict, name: str) -> list:
    sub = tree[name]
    return [sub[f"layer{i}"] for i in range(len(sub))]


def _params(variables: Any) -> dict:
    return variables.get("params", variables)


def prior_nu(cfg: ModelConfig, variables: Any) -> Array | None:
    """Student-t degrees of freedom (z,): learned (2 + softplus(raw), models.py) or cfg.nu."""
    if cfg.prior != "student_t":
        return None
    if cfg.learn_nu:
        return 2.0 + jax.nn.softplus(_params(variables)["prior_nu"])
    return jnp.full((cfg.z_dim,), cfg.nu, jnp.float32)


def _check(cfg: ModelConfig, decode: str = "mean", latent: str = "posterior") -> None:
    if cfg.model not in ("vrnn", "srnn"):
        raise ValueError(f"model.model must be 'vrnn' or 'srnn', got '{cfg.model}'")
    if decode not in DECODES:
        raise ValueError(f"decode must be one of {DECODES}, got {decode!r}")
    if latent not in LATENTS:
        raise ValueError(f"latent must be one of {LATENTS}, got {latent!r}")
    models.decoder_out_dim(cfg)  # validates the likelihood


# ---------------------------------------------------------------------------------------------
# Small pure pieces


def _heads(cfg: ModelConfig, a: Array) -> tuple[Array, Array]:
    z = cfg.z_dim
    return a[..., :z], a[..., z:].clip(-cfg.logvar_clip, cfg.logvar_clip)


def _decoder_out(cfg: ModelConfig, a: Array) -> Array:
    """Raw decoder output as models.py returns it (log-variances clipped)."""
    clip = cfg.logvar_clip
    if cfg.likelihood == "itakura_saito":
        return a.clip(-clip, clip)
    if cfg.learn_x_var:
        return jnp.concatenate([a[..., : cfg.x_dim], a[..., cfg.x_dim :].clip(-clip, clip)], -1)
    return a


def decode_frames(cfg: ModelConfig, x_out: Array, decode: str = "mean", noise_x: Array | None = None) -> Array:
    """Decoder output -> features.

    Itakura-Saito: mean decoding gives exp(v), the expected power; sampling gives
    exp(v) * E, E ~ Exponential(1) (``noise_x``). Gaussian: the mean, or mean + std * N(0, 1).
    """
    if cfg.likelihood == "itakura_saito":
        power = jnp.exp(x_out)
        return power if decode == "mean" else power * noise_x
    mean = x_out[..., : cfg.x_dim]
    if decode == "mean":
        return mean
    logvar = x_out[..., cfg.x_dim :] if cfg.learn_x_var else jnp.full_like(mean, cfg.fixed_x_logvar)
    return mean + jnp.exp(0.5 * logvar) * noise_x


def _z_from_prior(loc: Array, logvar: Array, noise: Array, temperature: Array) -> Array:
    """loc + temperature * scale * noise; scale = exp(logvar / 2) (for Student-t the model stores
    2 log scale in the log-variance slot, so the same formula holds)."""
    return loc + temperature * jnp.exp(0.5 * logvar) * noise


def _lstm_stack_step(ps: list, inp: Array, hs: tuple, cs: tuple, pre0: Array | None = None):
    """One step of a stacked LSTM; ``pre0`` is layer 0's input projection when precomputed."""
    new_h, new_c = [], []
    for i, (p, h, c) in enumerate(zip(ps, hs, cs)):
        proj = pre0 if (i == 0 and pre0 is not None) else layers.lstm_input_projection(p, inp)
        h, c = layers.lstm_gates(proj + h @ p["wh"], c)
        new_h.append(h)
        new_c.append(c)
        inp = h
    return tuple(new_h), tuple(new_c)


def _zeros_state(n: int, hidden: int, num: int, dtype=jnp.float32):
    zeros = tuple(jnp.zeros((n, hidden), dtype) for _ in range(num))
    return zeros, zeros


def _run_lstm(ps: list, inputs: Array, reverse: bool = False, unroll: int = 1):
    """Stacked LSTM over known inputs (t, n, in) from a zero state; returns (top outputs, final carry).

    Layer 0's input projection is one matmul over all frames (hoisted out of the scan)."""
    n = inputs.shape[1]
    hidden = ps[0]["wh"].shape[0]
    pre0 = layers.lstm_input_projection(ps[0], inputs)

    def step(carry, pre):
        hs, cs = _lstm_stack_step(ps, None, *carry, pre0=pre)
        return (hs, cs), hs[-1]

    carry, out = jax.lax.scan(step, _zeros_state(n, hidden, len(ps)), pre0, reverse=reverse, unroll=unroll)
    return out, carry


# ---------------------------------------------------------------------------------------------
# Noise


def _decoder_noise(cfg: ModelConfig, key: PRNGKey, shape: tuple[int, ...], dtype) -> Array:
    """Noise of sampled decoding: Exponential(1) (|X|^2 of a circular complex Gaussian, scaled by
    the IS variance) or N(0, 1) (Gaussian likelihood)."""
    if cfg.likelihood == "itakura_saito":
        return jax.random.exponential(key, shape, dtype)
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
    x = _decoder_noise(cfg, k_x, (n_samples, n_frames, cfg.x_dim), jnp.float32) if decode == "sample" else None
    return Noise(z, x)


def _tm(a: Array | None) -> Array | None:
    return None if a is None else jnp.swapaxes(a, 0, 1)


# ---------------------------------------------------------------------------------------------
# VRNN


def _vrnn_weights(cfg: ModelConfig, P: dict) -> dict:
    return {
        "phi_x": _mlp(P, "phi_x"), "phi_z": _mlp(P, "phi_z"), "post": _mlp(P, "posterior"),
        "prior": _mlp(P, "prior"), "dec": _mlp(P, "decoder"), "rnn": _lstm(P, "rnn"),
    }


def _vrnn_free(cfg: ModelConfig, w: dict, state, z_noise: Array, x_noise: Array | None, temperature, decode: str):
    """Free-running VRNN from ``state`` over len(z_noise) frames (time-major noise)."""
    act = layers.activation(cfg.activation)

    def step(carry, noise):
        hs, cs = carry
        h = hs[-1]
        loc, logvar = _heads(cfg, layers.mlp(w["prior"], h, act, final_act=False))
        z = _z_from_prior(loc, logvar, noise["z"], temperature)
        phi_z = layers.mlp(w["phi_z"], z, act)
        x_out = _decoder_out(cfg, layers.mlp(w["dec"], jnp.concatenate([phi_z, h], -1), act, final_act=False))
        x = decode_frames(cfg, x_out, decode, noise.get("x"))
        phi_x = layers.mlp(w["phi_x"], x, act)
        carry = _lstm_stack_step(w["rnn"], jnp.concatenate([phi_x, phi_z], -1), hs, cs)
        return carry, x

    xs = {"z": z_noise} if x_noise is None else {"z": z_noise, "x": x_noise}
    return jax.lax.scan(step, state, xs, unroll=cfg.unroll)


def _vrnn_prime(cfg: ModelConfig, w: dict, prime: Array, z_noise: Array, latent: str, temperature):
    """Teacher-forced VRNN over the prime (t, n, f): returns (state after the last real frame,
    raw decoder outputs (t, n, .)). z_t ~ q(z_t | x_t, h_t) or p(z_t | h_t)."""
    act = layers.activation(cfg.activation)
    n = prime.shape[1]
    phi_x_all = layers.mlp(w["phi_x"], prime, act)  # hoisted: depends on real frames only

    def step(carry, xs):
        hs, cs = carry
        h, phi_x = hs[-1], xs["phi_x"]
        if latent == "posterior":
            mean_q, logvar_q = _heads(cfg, layers.mlp(w["post"], jnp.concatenate([phi_x, h], -1), act, final_act=False))
            z = mean_q + jnp.exp(0.5 * logvar_q) * xs["z"]
        else:
            loc, logvar = _heads(cfg, layers.mlp(w["prior"], h, act, final_act=False))
            z = _z_from_prior(loc, logvar, xs["z"], temperature)
        phi_z = layers.mlp(w["phi_z"], z, act)
        x_out = _decoder_out(cfg, layers.mlp(w["dec"], jnp.concatenate([phi_z, h], -1), act, final_act=False))
        carry = _lstm_stack_step(w["rnn"], jnp.concatenate([phi_x, phi_z], -1), hs, cs)
        return carry, x_out

    state0 = _zeros_state(n, cfg.dim_rnn, cfg.num_rnn, prime.dtype)
    return jax.lax.scan(step, state0, {"phi_x": phi_x_all, "z": z_noise}, unroll=cfg.unroll)


# ---------------------------------------------------------------------------------------------
# SRNN


def _srnn_weights(cfg: ModelConfig, P: dict) -> dict:
    return {
        "x_h": _mlp(P, "mlp_x_h"), "rnn_h": _lstm(P, "rnn_h"), "hx_g": _mlp(P, "mlp_hx_g"),
        "rnn_g": _lstm(P, "rnn_g"), "post": _mlp(P, "posterior"), "prior": _mlp(P, "prior"),
        "dec": _mlp(P, "decoder"),
    }


def _srnn_free(cfg: ModelConfig, w: dict, state, z_noise: Array, x_noise: Array | None, temperature, decode: str):
    """Free-running SRNN; state = (hs, cs, x_prev, z_prev)."""
    act = layers.activation(cfg.activation)

    def step(carry, noise):
        hs, cs, x_prev, z_prev = carry
        hs, cs = _lstm_stack_step(w["rnn_h"], layers.mlp(w["x_h"], x_prev, act), hs, cs)
        h = hs[-1]
        loc, logvar = _heads(cfg, layers.mlp(w["prior"], jnp.concatenate([h, z_prev], -1), act, final_act=False))
        z = _z_from_prior(loc, logvar, noise["z"], temperature)
        x_out = _decoder_out(cfg, layers.mlp(w["dec"], jnp.concatenate([h, z], -1), act, final_act=False))
        x = decode_frames(cfg, x_out, decode, noise.get("x"))
        return (hs, cs, x, z), x

    xs = {"z": z_noise} if x_noise is None else {"z": z_noise, "x": x_noise}
    return jax.lax.scan(step, state, xs, unroll=cfg.unroll)


def _srnn_z_chain(cfg: ModelConfig, w: dict, h: Array, g: Array | None, z_noise: Array, latent: str, temperature):
    """SRNN's latent chain over known h (and g): posterior q(z_t | z_{t-1}, g_t) (Resq: plus the
    prior mean) or prior p(z_t | z_{t-1}, h_t). Only z_{t-1}'s share of each first layer stays in
    the scan. Returns (z (t, n, z), posterior (mean, logvar) or None)."""
    act = layers.activation(cfg.activation)
    H, G = cfg.dim_rnn, cfg.dim_rnn_g
    prior0_h, prior0_z = layers.first_layer_split(w["prior"][0], H)
    xs = {"pre_prior": layers.dense(prior0_h, h), "z": z_noise}
    need_prior = latent == "prior" or cfg.resq
    if latent == "posterior":
        post0_g, post0_z = layers.first_layer_split(w["post"][0], G)
        xs["pre_post"] = layers.dense(post0_g, g)

    def finish(pre, z_prev, w_z, rest):
        a = pre + z_prev @ w_z
        if rest:
            a = layers.mlp(rest, act(a), act, final_act=False)
        return _heads(cfg, a)

    def step(z_prev, x):
        if need_prior:
            loc, logvar = finish(x["pre_prior"], z_prev, prior0_z, w["prior"][1:])
        if latent == "prior":
            z = _z_from_prior(loc, logvar, x["z"], temperature)
            return z, (z, z, z)
        mean_q, logvar_q = finish(x["pre_post"], z_prev, post0_z, w["post"][1:])
        if cfg.resq:
            mean_q = loc + mean_q
        z = mean_q + jnp.exp(0.5 * logvar_q) * x["z"]
        return z, (z, mean_q, logvar_q)

    z0 = jnp.zeros((h.shape[1], cfg.z_dim), h.dtype)
    _, (z, mean_q, logvar_q) = jax.lax.scan(step, z0, xs, unroll=cfg.unroll)
    return z, ((mean_q, logvar_q) if latent == "posterior" else None)


def _srnn_prime(cfg: ModelConfig, w: dict, prime: Array, z_noise: Array, latent: str, temperature):
    """Teacher-forced SRNN over the prime (t, n, f). The backward state g runs over the prime
    segment only (it cannot see the future that is yet to be generated). Returns (state for the
    free run: LSTM_h carry after h_P, x_P (real), z_P; raw decoder outputs)."""
    act = layers.activation(cfg.activation)
    x_prev = jnp.concatenate([jnp.zeros_like(prime[:1]), prime[:-1]], 0)
    h, (hs, cs) = _run_lstm(w["rnn_h"], layers.mlp(w["x_h"], x_prev, act), unroll=cfg.unroll)
    g = None
    if latent == "posterior":
        hx = layers.mlp(w["hx_g"], jnp.concatenate([h, prime], -1), act)
        g, _ = _run_lstm(w["rnn_g"], hx, reverse=True, unroll=cfg.unroll)
    z, _ = _srnn_z_chain(cfg, w, h, g, z_noise, latent, temperature)
    x_out = _decoder_out(cfg, layers.mlp(w["dec"], jnp.concatenate([h, z], -1), act, final_act=False))
    return (hs, cs, prime[-1], z[-1]), x_out


# ---------------------------------------------------------------------------------------------
# Public generation API


def _free(cfg, w, state, z_noise, x_noise, temperature, decode):
    fn = _vrnn_free if cfg.model == "vrnn" else _srnn_free
    return fn(cfg, w, state, z_noise, x_noise, temperature, decode)


def _weights(cfg, variables):
    P = _params(variables)
    return _vrnn_weights(cfg, P) if cfg.model == "vrnn" else _srnn_weights(cfg, P)


def _cold_state(cfg: ModelConfig, n: int):
    hs, cs = _zeros_state(n, cfg.dim_rnn, cfg.num_rnn)
    if cfg.model == "vrnn":
        return hs, cs
    return hs, cs, jnp.zeros((n, cfg.x_dim), jnp.float32), jnp.zeros((n, cfg.z_dim), jnp.float32)


@functools.partial(jax.jit, static_argnames=("cfg", "decode"))
def cold_start_from_noise(
    cfg: ModelConfig, variables: Any, noise: Noise, temperature: float | Array = 1.0, decode: str = "mean"
) -> Array:
    """Cold start with pre-drawn noise (the testable core of :func:`cold_start`).

    Returns:
        (n, t, x_dim) features, n and t from ``noise.z``.
    """
    _check(cfg, decode)
    n = noise.z.shape[0]
    _, x = _free(cfg, _weights(cfg, variables), _cold_state(cfg, n), _tm(noise.z), _tm(noise.x),
                 jnp.asarray(temperature, jnp.float32), decode)
    return jnp.swapaxes(x, 0, 1)


@functools.partial(jax.jit, static_argnames=("cfg", "n_frames", "n_samples", "decode"))
def cold_start(
    cfg: ModelConfig,
    variables: Any,
    key: PRNGKey,
    n_frames: int,
    n_samples: int = 1,
    temperature: float | Array = 1.0,
    decode: str = "mean",
) -> Array:
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


def _prime_batch(prime: Array, n_samples: int) -> Array:
    prime = jnp.asarray(prime, jnp.float32)
    if prime.ndim == 2:
        prime = prime[None]
    if prime.ndim != 3:
        raise ValueError(f"prime must be (P, x_dim) or (n, P, x_dim), got shape {prime.shape}")
    return jnp.repeat(prime, n_samples, axis=0) if n_samples > 1 else prime


@functools.partial(jax.jit, static_argnames=("cfg", "latent", "decode", "prime_output"))
def primed_from_noise(
    cfg: ModelConfig,
    variables: Any,
    prime: Array,
    noise: Noise,
    latent: str = "posterior",
    temperature: float | Array = 1.0,
    decode: str = "mean",
    prime_output: str = "reconstruction",
) -> Array:
    """Primed generation with pre-drawn noise (the testable core of :func:`primed`).

    Args:
        prime: (n, P, x_dim) real frames, one per sequence of ``noise`` (n = noise.z.shape[0]).
        noise: P + T frames; its first P latent entries are the posterior's N(0, 1) noise when
            ``latent='posterior'`` (the model's ``eps``), the prior's standard noise otherwise.

    Returns:
        (n, P + T, x_dim).
    """
    _check(cfg, decode, latent)
    if prime_output not in PRIME_OUTPUTS:
        raise ValueError(f"prime_output must be one of {PRIME_OUTPUTS}, got {prime_output!r}")
    n, p_len = prime.shape[:2]
    if noise.z.shape[0] != n or noise.z.shape[1] < p_len:
        raise ValueError(f"noise.z {noise.z.shape} does not cover a prime of shape {prime.shape}")
    temperature = jnp.asarray(temperature, jnp.float32)
    w = _weights(cfg, variables)
    z_noise, x_noise = _tm(noise.z), _tm(noise.x)
    xt = jnp.swapaxes(prime.astype(jnp.float32), 0, 1)
    prime_fn = _vrnn_prime if cfg.model == "vrnn" else _srnn_prime
    state, x_out = prime_fn(cfg, w, xt, z_noise[:p_len], latent, temperature)
    if prime_output == "real":
        head = xt
    else:
        head = decode_frames(cfg, x_out, decode, None if x_noise is None else x_noise[:p_len])
    _, tail = _free(cfg, w, state, z_noise[p_len:], None if x_noise is None else x_noise[p_len:],
                    temperature, decode)
    return jnp.swapaxes(jnp.concatenate([head, tail], 0), 0, 1)


@functools.partial(
    jax.jit, static_argnames=("cfg", "n_frames", "latent", "decode", "n_samples", "prime_output")
)
def primed(
    cfg: ModelConfig,
    variables: Any,
    key: PRNGKey,
    prime: Array,
    n_frames: int,
    latent: str = "posterior",
    temperature: float | Array = 1.0,
    decode: str = "mean",
    n_samples: int = 1,
    prime_output: str = "reconstruction",
) -> Array:
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


def scheduled_sampling_mask(key: PRNGKey, p: float | Array, batch: int, n_frames: int, per: str = "frame") -> Array:
    """(b, t) booleans, True where the model's own frame replaces the real one: Bernoulli(p)
    per frame, or per sequence (``per='sequence'``: all frames of a sequence or none)."""
    if per == "frame":
        return jax.random.bernoulli(key, p, (batch, n_frames))
    if per == "sequence":
        return jnp.broadcast_to(jax.random.bernoulli(key, p, (batch, 1)), (batch, n_frames))
    raise ValueError(f"per must be 'frame' or 'sequence', got {per!r}")


@functools.partial(jax.jit, static_argnames=("cfg", "per", "feedback", "stop_gradient"))
def scheduled_sampling_forward(
    cfg: ModelConfig,
    variables: Any,
    x: Array,
    key: PRNGKey,
    p: float | Array = 0.0,
    per: str = "frame",
    feedback: str = "mean",
    eps: Array | None = None,
    use_generated: Array | None = None,
    stop_gradient: bool = True,
) -> models.Outputs:
    """The model's training forward with scheduled sampling; returns :class:`models.Outputs`
    for ``losses.elbo(cfg, out, x, ...)`` (the targets stay the real frames).

    What is replaced, and by what: the frame that enters the *deterministic recurrence* of the
    generative model, by the model's own output for that frame, x^_t = decode(p(x_t | z_t, h_t))
    with z_t the posterior sample of this same forward (``feedback``: 'mean' is exp(v) for IS,
    the mean for a Gaussian; 'sample' draws it), with probability ``p`` independently per frame
    (``per='frame'``) or per sequence (``per='sequence'``). Gradients do not flow through x^
    (``stop_gradient``), as in Bengio et al. 2015.

    - VRNN: h_{t+1} = LSTM([phi_x(x~_t), phi_z(z_t)], h_t) with x~_t = x^_t where chosen, else
      x_t. The posterior q(z_t | x_t, h_t) and so the encoder still sees the real x_t; h_t, the
      prior p(z_t | h_t) and the decoder follow the mixed recurrence.
    - SRNN ("generation mode" of the review): h_t = LSTM_h(MLP_x_h(x~_{t-1})), x~_{t-1} = x^_{t-1}
      where chosen, else x_{t-1} (x_0 = 0 either way). The prior p(z_t | z_{t-1}, h_t), the
      decoder (and with Resq the posterior mean's prior part) use this h_t. The backward state g
      of the inference network is computed from the real frames and the teacher-forced h (g
      depends on the future, x^ on the past: using the mixed h there would be circular), so the
      encoder sees the data exactly as in teacher forcing.

    With p = 0 (or ``use_generated`` all False) this equals ``models.build(cfg).apply(variables,
    x, eps)`` (tested). The forward is one sequential scan over all frames (the decoder and, for
    VRNN, phi_x of x^ enter the loop), so it is slower than the teacher-forced model. Dropout is
    not applied: a config with ``dropout_p > 0`` is refused.

    Args:
        x: (b, t, x_dim) real frames in the model's input space.
        key: draws the replacement mask, eps (when None) and sampled feedback.
        p: replacement probability (traced; a schedule can change it without recompiling).
        per: 'frame' or 'sequence'.
        feedback: 'mean' or 'sample'.
        eps: (b, t, z_dim) posterior noise; drawn from ``key`` when None.
        use_generated: (b, t) bool mask overriding ``p``/``per`` (for tests and analyses).
        stop_gradient: no gradient through the fed-back frames.

    Returns:
        models.Outputs, batch-major.
    """
    _check(cfg, feedback)
    if cfg.dropout_p > 0:
        raise ValueError("scheduled_sampling_forward does not implement dropout: set model.dropout_p=0")
    k_mask, k_eps, k_x = jax.random.split(key, 3)
    b, t_len = x.shape[:2]
    if eps is None:
        eps = jax.random.normal(k_eps, (b, t_len, cfg.z_dim), x.dtype)
    if use_generated is None:
        use_generated = scheduled_sampling_mask(k_mask, p, b, t_len, per)
    x_noise = _decoder_noise(cfg, k_x, (t_len, b, cfg.x_dim), x.dtype) if feedback == "sample" else None
    fn = _vrnn_ss if cfg.model == "vrnn" else _srnn_ss
    out = fn(cfg, _weights(cfg, variables), jnp.swapaxes(x, 0, 1), jnp.swapaxes(eps, 0, 1),
             jnp.swapaxes(use_generated, 0, 1), x_noise, feedback, stop_gradient)
    bt = lambda a: jnp.swapaxes(a, 0, 1)
    return models.Outputs(
        bt(out["z"]), bt(out["mean_q"]), bt(out["logvar_q"]), bt(out["prior_loc"]),
        bt(out["prior_logvar"]), bt(out["x_out"]), prior_nu(cfg, variables),
    )


def _feedback(cfg, x_out, feedback, noise, stop_gradient):
    x_hat = decode_frames(cfg, x_out, feedback, noise)
    return jax.lax.stop_gradient(x_hat) if stop_gradient else x_hat


def _vrnn_ss(cfg, w, xt, eps, mask, x_noise, feedback, stop_gradient):
    act = layers.activation(cfg.activation)
    n = xt.shape[1]
    phi_x_all = layers.mlp(w["phi_x"], xt, act)
    d_x = phi_x_all.shape[-1]
    post0_x, post0_h = layers.first_layer_split(w["post"][0], d_x)
    xs = {"phi_x": phi_x_all, "pre_post": layers.dense(post0_x, phi_x_all), "eps": eps, "mask": mask}
    if x_noise is not None:
        xs["x_noise"] = x_noise

    def step(carry, s):
        hs, cs = carry
        h = hs[-1]
        a = s["pre_post"] + h @ post0_h
        if len(w["post"]) > 1:
            a = layers.mlp(w["post"][1:], act(a), act, final_act=False)
        mean_q, logvar_q = _heads(cfg, a)
        z = mean_q + jnp.exp(0.5 * logvar_q) * s["eps"]
        phi_z = layers.mlp(w["phi_z"], z, act)
        x_out = _decoder_out(cfg, layers.mlp(w["dec"], jnp.concatenate([phi_z, h], -1), act, final_act=False))
        x_hat = _feedback(cfg, x_out, feedback, s.get("x_noise"), stop_gradient)
        phi_rec = jnp.where(s["mask"][:, None], layers.mlp(w["phi_x"], x_hat, act), s["phi_x"])
        carry = _lstm_stack_step(w["rnn"], jnp.concatenate([phi_rec, phi_z], -1), hs, cs)
        return carry, {"h": h, "z": z, "mean_q": mean_q, "logvar_q": logvar_q, "x_out": x_out}

    _, out = jax.lax.scan(step, _zeros_state(n, cfg.dim_rnn, cfg.num_rnn, xt.dtype), xs, unroll=cfg.unroll)
    out["prior_loc"], out["prior_logvar"] = _heads(cfg, layers.mlp(w["prior"], out.pop("h"), act, final_act=False))
    return out


def _srnn_ss(cfg, w, xt, eps, mask, x_noise, feedback, stop_gradient):
    act = layers.activation(cfg.activation)
    n = xt.shape[1]
    H, G = cfg.dim_rnn, cfg.dim_rnn_g
    x_prev = jnp.concatenate([jnp.zeros_like(xt[:1]), xt[:-1]], 0)
    # The encoder's view: teacher-forced h and the backward state g over the real frames.
    h_tf, _ = _run_lstm(w["rnn_h"], layers.mlp(w["x_h"], x_prev, act), unroll=cfg.unroll)
    hx = layers.mlp(w["hx_g"], jnp.concatenate([h_tf, xt], -1), act)
    g, _ = _run_lstm(w["rnn_g"], hx, reverse=True, unroll=cfg.unroll)
    post0_g, post0_z = layers.first_layer_split(w["post"][0], G)
    # mask_prev[t]: whether x_{t-1} is replaced (frame t-1's draw); t = 0 reads x_0 = 0.
    mask_prev = jnp.concatenate([jnp.zeros_like(mask[:1]), mask[:-1]], 0)
    xs = {"x_prev": x_prev, "pre_post": layers.dense(post0_g, g), "eps": eps, "mask": mask_prev}
    if x_noise is not None:
        xs["x_noise"] = x_noise

    def head(mlp_layers, inp):
        return _heads(cfg, layers.mlp(mlp_layers, inp, act, final_act=False))

    def step(carry, s):
        hs, cs, z_prev, xhat_prev = carry
        x_in = jnp.where(s["mask"][:, None], xhat_prev, s["x_prev"])
        hs, cs = _lstm_stack_step(w["rnn_h"], layers.mlp(w["x_h"], x_in, act), hs, cs)
        h = hs[-1]
        prior_loc, prior_logvar = head(w["prior"], jnp.concatenate([h, z_prev], -1))
        a = s["pre_post"] + z_prev @ post0_z
        if len(w["post"]) > 1:
            a = layers.mlp(w["post"][1:], act(a), act, final_act=False)
        mean_q, logvar_q = _heads(cfg, a)
        if cfg.resq:
            mean_q = prior_loc + mean_q
        z = mean_q + jnp.exp(0.5 * logvar_q) * s["eps"]
        x_out = _decoder_out(cfg, layers.mlp(w["dec"], jnp.concatenate([h, z], -1), act, final_act=False))
        x_hat = _feedback(cfg, x_out, feedback, s.get("x_noise"), stop_gradient)
        out = {"z": z, "mean_q": mean_q, "logvar_q": logvar_q, "prior_loc": prior_loc,
               "prior_logvar": prior_logvar, "x_out": x_out}
        return (hs, cs, z, x_hat), out

    hs, cs = _zeros_state(n, H, cfg.num_rnn, xt.dtype)
    carry0 = (hs, cs, jnp.zeros((n, cfg.z_dim), xt.dtype), jnp.zeros_like(xt[0]))
    _, out = jax.lax.scan(step, carry0, xs, unroll=cfg.unroll)
    return out


def scheduled_sampling_probability(
    step: Array | int, steps_per_epoch: int, start_epoch: float = 0.0, ramp_epochs: float = 50.0,
    p_max: float = 1.0,
) -> Array:
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
    n_iter: int = 32,
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
        f = np.asarray(feats[0])
        if denormalize is not None:
            f = denormalize(f)
        if cfg.likelihood == "gaussian" and feat_cfg.kind == "mel":
            f = np.clip(f, np.log(feat_cfg.log_floor), 20.0)
        return inversion.features_to_wave(f, feat_cfg, method="griffin_lim_jax", n_iter=n_iter)

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
