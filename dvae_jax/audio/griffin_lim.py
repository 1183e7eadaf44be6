"""Jitted fast Griffin-Lim in JAX, on the same analysis as :mod:`dvae_jax.audio.spectral`.

The STFT here is spectral.stft written in jnp (centred, reflect-padded, the config's window,
rfft) and the inverse is librosa.istft's least-squares overlap-add (divide by the sum of squared
windows), so a JAX-reconstructed wave is judged on exactly the features the model saw. The
iteration is Perraudin, Balazs and Sondergaard (2013)'s fast Griffin-Lim, step for step as
librosa.griffinlim (``momentum / (1 + momentum)`` times the previous rebuilt spectrogram).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dvae_jax import config as config_lib
from dvae_jax.audio import spectral

# Added to |X| before normalising the phase; far below any spectrogram value that matters, and
# not a denormal, which XLA on CPU may flush to zero (librosa uses the float tiny).
_EPS = 1e-12


def _padded_window(cfg: config_lib.FeatureConfig) -> np.ndarray:
    """spectral.window centred in n_fft samples, as librosa pads a shorter window."""
    win = spectral.window(cfg).astype(np.float64)
    if cfg.win_length > cfg.n_fft:
        raise config_lib.ConfigError(
            f"features.win_length ({cfg.win_length}) must not exceed features.n_fft ({cfg.n_fft})"
        )
    left = (cfg.n_fft - cfg.win_length) // 2
    return np.pad(win, (left, cfg.n_fft - cfg.win_length - left))


def n_frames(n_samples: int, cfg: config_lib.FeatureConfig) -> int:
    """Frames of the centred STFT of ``n_samples`` samples (as librosa.stft, center=True)."""
    return 1 + (n_samples + 2 * (cfg.n_fft // 2) - cfg.n_fft) // cfg.hop_length


def _frame(padded: jax.Array, t: int, n_fft: int, hop: int) -> jax.Array:
    """(..., samples) -> (..., t, n_fft) frames at hop offsets."""
    if n_fft % hop == 0:
        # Blocks of hop samples, r shifted views concatenated: slices instead of a gather.
        r = n_fft // hop
        blocks = padded[..., :(t + r - 1) * hop].reshape(*padded.shape[:-1], t + r - 1, hop)
        return jnp.concatenate([blocks[..., j:j + t, :] for j in range(r)], axis=-1)
    index = hop * np.arange(t)[:, None] + np.arange(n_fft)[None, :]
    return padded[..., index]


def stft(wave: jax.Array, cfg: config_lib.FeatureConfig) -> jax.Array:
    """spectral.stft in jnp: (..., samples) -> complex64 (..., n_fft // 2 + 1, frames)."""
    wave = jnp.asarray(wave, jnp.float32)
    pad = cfg.n_fft // 2
    if wave.shape[-1] <= pad:
        raise ValueError(f"signal of {wave.shape[-1]} samples is too short for n_fft={cfg.n_fft}")
    padded = jnp.pad(wave, [(0, 0)] * (wave.ndim - 1) + [(pad, pad)], mode="reflect")
    t = n_frames(wave.shape[-1], cfg)
    frames = _frame(padded, t, cfg.n_fft, cfg.hop_length) * jnp.asarray(_padded_window(cfg), jnp.float32)
    return jnp.swapaxes(jnp.fft.rfft(frames, axis=-1), -1, -2)


@functools.lru_cache(maxsize=16)
def _window_sum_square(cfg: config_lib.FeatureConfig, t: int) -> np.ndarray:
    win2 = _padded_window(cfg) ** 2
    total = cfg.n_fft + cfg.hop_length * (t - 1)
    wss = np.zeros(total)
    for i in range(t):
        wss[i * cfg.hop_length:i * cfg.hop_length + cfg.n_fft] += win2
    # librosa divides only where the sum is above float tiny; elsewhere it leaves the sample as is.
    return np.where(wss > np.finfo(np.float32).tiny, 1.0 / np.maximum(wss, 1e-30), 1.0).astype(np.float32)


def _overlap_add(frames: jax.Array, hop: int) -> jax.Array:
    """(..., t, n_fft) -> (..., n_fft + hop (t - 1)) by summing frames at hop offsets."""
    t, n_fft = frames.shape[-2:]
    lead = frames.shape[:-2]
    if n_fft % hop == 0:
        # r shifted copies of (t, hop) blocks: r pads and adds, no scatter (scatter is slow on CPU).
        r = n_fft // hop
        blocks = frames.reshape(*lead, t, r, hop)
        widths = [(0, 0)] * len(lead)
        out = sum(
            jnp.pad(blocks[..., :, j, :], widths + [(j, r - 1 - j), (0, 0)]) for j in range(r)
        )
        return out.reshape(*lead, (t + r - 1) * hop)
    index = hop * np.arange(t)[:, None] + np.arange(n_fft)[None, :]
    out = jnp.zeros((*lead, n_fft + hop * (t - 1)), frames.dtype)
    return out.at[..., index].add(frames)


def istft(spec: jax.Array, cfg: config_lib.FeatureConfig, length: int | None = None) -> jax.Array:
    """spectral.istft in jnp: complex (..., bins, frames) -> float32 (..., samples)."""
    t = spec.shape[-1]
    pad = cfg.n_fft // 2
    if length is not None:
        t = min(t, -(-(length + 2 * pad) // cfg.hop_length))
        spec = spec[..., :t]
    frames = jnp.fft.irfft(jnp.swapaxes(spec, -1, -2), n=cfg.n_fft, axis=-1)
    frames = frames * jnp.asarray(_padded_window(cfg), jnp.float32)
    wave = _overlap_add(frames, cfg.hop_length) * jnp.asarray(_window_sum_square(cfg, t))
    if length is None:
        return wave[..., pad:wave.shape[-1] - pad]
    wave = wave[..., pad:pad + length]
    short = length - wave.shape[-1]
    if short > 0:
        wave = jnp.pad(wave, [(0, 0)] * (wave.ndim - 1) + [(0, short)])
    return wave


@functools.partial(jax.jit, static_argnames=("cfg", "length", "init"))
def _griffin_lim(magnitude, key, n_iter, momentum, cfg, length, init):
    magnitude = magnitude.astype(jnp.float32)
    if init == "random":
        phase = jax.random.uniform(key, magnitude.shape, jnp.float32, 0.0, 2 * jnp.pi)
        angles = jnp.exp(1j * phase).astype(jnp.complex64)
    else:
        angles = jnp.ones(magnitude.shape, jnp.complex64)
    # Inside the loop librosa keeps ``length`` samples; that is only consistent when their STFT
    # has as many frames as the magnitude. Otherwise use hop * (frames - 1) samples, which always
    # is (it differs from librosa's only in the last partial hop, and librosa would fail there).
    t = magnitude.shape[-1]
    inner_length = length if length is not None and n_frames(length, cfg) == t else None
    step = momentum / (1.0 + momentum)

    def body(_, carry):
        spec, tprev = carry
        rebuilt = stft(istft(spec, cfg, inner_length), cfg)
        update = rebuilt - step * tprev  # tprev is 0 at the first step, as librosa's None
        update = update / (jnp.abs(update) + _EPS)
        return update * magnitude, rebuilt

    spec0 = angles * magnitude
    spec, _ = jax.lax.fori_loop(0, n_iter, body, (spec0, jnp.zeros_like(spec0)))
    return istft(spec, cfg, length)


def griffin_lim_jax(
    magnitude: jax.Array | np.ndarray,
    feat_cfg: config_lib.FeatureConfig,
    n_iter: int = 32,
    momentum: float = 0.99,
    key: jax.Array | int | None = None,
    init: str = "random",
    length: int | None = None,
    bucket: int = 0,
) -> jax.Array:
    """Fast Griffin-Lim (with momentum), jitted; the phase is estimated from the magnitude alone.

    Args:
        magnitude: |STFT| as (..., n_fft // 2 + 1, frames), the layout of spectral.stft and
            librosa (transpose (frames, bins) features first). Leading axes are a batch.
        feat_cfg: the analysis (n_fft, win_length, hop_length, window) the magnitude came from.
        n_iter: iterations (traced: changing it does not recompile).
        momentum: 0 gives the classic Griffin-Lim; librosa's default 0.99 is the fast variant.
        key: PRNG key or int seed for ``init='random'`` (default seed 0).
        init: 'random' (uniform random phase, as librosa) or 'zeros' (zero phase).
        length: output samples (as librosa's ``length``); None gives hop * (frames - 1).
        bucket: if > 0, pad the frames with silence (zero magnitude) to a multiple of ``bucket``
            and cut the output back: one compilation serves every length in a bucket (each new
            length otherwise compiles anew, seconds each). Only the last frames see the padding.

    Returns:
        float32 waveform (..., samples).
    """
    if init not in ("random", "zeros"):
        raise ValueError(f"init must be 'random' or 'zeros', got {init!r}")
    magnitude = jnp.asarray(magnitude)
    if magnitude.ndim < 2 or magnitude.shape[-2] != feat_cfg.n_fft // 2 + 1:
        raise ValueError(
            f"magnitude must be (..., {feat_cfg.n_fft // 2 + 1}, frames) for n_fft={feat_cfg.n_fft}, "
            f"got shape {tuple(magnitude.shape)} (transpose (frames, bins) features first)"
        )
    if key is None or isinstance(key, int):
        key = jax.random.key(0 if key is None else key)
    t = magnitude.shape[-1]
    if bucket > 0 and t % bucket:
        out_len = (t - 1) * feat_cfg.hop_length if length is None else int(length)
        pad = [(0, 0)] * (magnitude.ndim - 1) + [(0, bucket - t % bucket)]
        wave = _griffin_lim(
            jnp.pad(magnitude, pad), key, jnp.asarray(n_iter, jnp.int32), jnp.asarray(momentum, jnp.float32),
            cfg=feat_cfg, length=None, init=init,
        )
        wave = wave[..., :out_len]
        short = out_len - wave.shape[-1]
        return jnp.pad(wave, [(0, 0)] * (wave.ndim - 1) + [(0, short)]) if short > 0 else wave
    return _griffin_lim(
        magnitude, key, jnp.asarray(n_iter, jnp.int32), jnp.asarray(momentum, jnp.float32),
        cfg=feat_cfg, length=None if length is None else int(length), init=init,
    )


def spectral_convergence(
    magnitude: np.ndarray, wave: np.ndarray, feat_cfg: config_lib.FeatureConfig
) -> float:
    """||S - |STFT(wave)||| / ||S|| (Frobenius), with spectral.stft; frames cropped to the shorter.

    Args:
        magnitude: target |STFT|, (n_fft // 2 + 1, frames).
        wave: reconstructed waveform.
        feat_cfg: the analysis.
    """
    magnitude = np.asarray(magnitude, np.float64)
    rebuilt = np.abs(spectral.stft(np.asarray(wave), feat_cfg)).astype(np.float64)
    t = min(magnitude.shape[-1], rebuilt.shape[-1])
    diff = magnitude[..., :t] - rebuilt[..., :t]
    return float(np.linalg.norm(diff) / max(np.linalg.norm(magnitude[..., :t]), 1e-30))
