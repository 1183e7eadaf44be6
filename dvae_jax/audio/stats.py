"""Reference-free spectral statistics for judging generated speech against real speech.

All statistics work on natural-log Mel features (frames, n_mels), the layout of
spectral.wave_to_features with ``kind='mel'``, converted to dB (10 log10) so that distances read
in dB; :func:`logmel` computes them from a waveform.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from dvae_jax import config as config_lib
from dvae_jax.audio import spectral

_DB = 10.0 / math.log(10.0)  # natural log power -> dB


def logmel(wave: np.ndarray, feat_cfg: config_lib.FeatureConfig) -> np.ndarray:
    """Waveform -> natural-log Mel (frames, n_mels), whatever ``feat_cfg.kind`` says (the STFT and
    Mel settings of STFT or WORLD runs are not checked against the rate: ``fmax`` is capped at
    Nyquist here, so that no Mel band is empty)."""
    nyquist = feat_cfg.sample_rate / 2
    if feat_cfg.fmax > nyquist:
        feat_cfg = dataclasses.replace(feat_cfg, fmax=nyquist, fmin=min(feat_cfg.fmin, nyquist / 2))
    power = np.abs(spectral.stft(wave, feat_cfg)) ** 2
    return spectral.power_to_logmel(power, feat_cfg)


def _check(features: np.ndarray, name: str = "features", min_frames: int = 1) -> np.ndarray:
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < min_frames:
        raise ValueError(f"{name} must be (frames >= {min_frames}, n_mels), got shape {features.shape}")
    if not np.all(np.isfinite(features)):
        raise ValueError(f"{name} contain non-finite values")
    return features


def mean_logmel_spectrum(features: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """Mean over frames (of all utterances given) of the log-Mel spectrum, in dB: (n_mels,)."""
    if isinstance(features, (list, tuple)):
        features = np.concatenate([_check(f) for f in features], axis=0)
    return _DB * _check(features).mean(axis=0)


def mean_logmel_distance(features: np.ndarray, real: np.ndarray | list[np.ndarray]) -> float:
    """RMS over Mel bands of the difference between the mean log-Mel spectrum (dB) of
    ``features`` and of ``real`` speech (an array or a list of utterances): long-term spectral
    envelope mismatch in dB, 0 for the same spectrum."""
    diff = mean_logmel_spectrum(features) - mean_logmel_spectrum(real)
    return float(np.sqrt(np.mean(diff**2)))


def _frame_distances(features: np.ndarray) -> np.ndarray:
    """RMS over bands of the dB difference of consecutive frames: (frames - 1,)."""
    return _DB * np.sqrt(np.mean(np.diff(features, axis=0) ** 2, axis=1))


def spectral_flux(features: np.ndarray) -> float:
    """Mean frame-to-frame log-Mel change (dB RMS over bands). Speech has bursts of change
    (onsets) between steady vowels; a flat value near 0 means a droning or frozen output."""
    return float(np.mean(_frame_distances(_check(features, min_frames=2))))


def boundary_continuity(features: np.ndarray, boundary: int) -> float:
    """Jump at a boundary frame relative to the typical jump: distance(frame b-1, frame b)
    divided by the median frame-to-frame distance of the whole sequence. About 1 (or below)
    for a seamless continuation; well above 1 for a click or a spectral discontinuity.

    Args:
        features: (frames, n_mels) natural-log Mel of the whole sequence (prime + continuation).
        boundary: index of the first frame after the boundary (e.g. the number of prime frames).
    """
    features = _check(features, min_frames=3)
    if not 1 <= boundary < features.shape[0]:
        raise ValueError(f"boundary must be in [1, {features.shape[0] - 1}], got {boundary}")
    distances = _frame_distances(features)
    median = float(np.median(distances))
    if median == 0:
        return math.inf if distances[boundary - 1] > 0 else 1.0
    return float(distances[boundary - 1] / median)


def voiced_frame_ratio(
    wave: np.ndarray,
    sr: int,
    fmin: float = 60.0,
    fmax: float = 400.0,
    threshold: float = 0.5,
    silence_db: float = -40.0,
) -> float:
    """Fraction of frames (40 ms, hop 10 ms) that are voiced, by normalised autocorrelation:
    a frame is voiced when it is within ``silence_db`` of the loudest frame and its
    autocorrelation peak at a lag in [1/fmax, 1/fmin] exceeds ``threshold`` times its energy.
    Vectorised, milliseconds per utterance (librosa.pyin is far slower). Real read speech is
    typically 0.3-0.6 voiced; noise is near 0.

    Returns:
        voiced frames / all frames (NaN for a silent or too-short signal).
    """
    wave = np.asarray(wave, np.float64)
    if wave.ndim != 1 or not np.all(np.isfinite(wave)):
        raise ValueError("wave must be a finite 1-D array")
    frame, hop = int(0.04 * sr), int(0.01 * sr)
    if wave.size < frame or not np.any(wave):
        return math.nan
    t = 1 + (wave.size - frame) // hop
    index = hop * np.arange(t)[:, None] + np.arange(frame)[None, :]
    frames = wave[index]
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = np.sum(frames**2, axis=1)
    n_fft = 1 << (2 * frame - 1).bit_length()
    spec = np.fft.rfft(frames, n=n_fft, axis=1)
    acf = np.fft.irfft(np.abs(spec) ** 2, n=n_fft, axis=1)[:, :frame]
    lo, hi = int(sr / fmax), min(int(sr / fmin), frame - 1)
    # Unbiased by the overlap length so long lags are not penalised.
    acf_norm = acf[:, lo:hi + 1] / (frame - np.arange(lo, hi + 1)) * frame
    peak = acf_norm.max(axis=1) / np.maximum(energy, 1e-20)
    loud = 10 * np.log10(np.maximum(energy, 1e-20) / energy.max()) > silence_db
    return float(np.mean(loud & (peak > threshold)))
