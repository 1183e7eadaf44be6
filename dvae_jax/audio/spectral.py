"""The one definition of the STFT / Mel analysis shared by feature extraction and inversion."""

from __future__ import annotations

import functools

import librosa
import numpy as np

from dvae_jax import config as config_lib


def window(cfg: config_lib.FeatureConfig) -> np.ndarray:
    """Analysis window of length ``win_length``; the review's sine window sin(pi (n + 0.5) / N)."""
    n = cfg.win_length
    if cfg.window == "sine":
        return np.sin(np.pi * (np.arange(n) + 0.5) / n).astype(np.float32)
    if cfg.window == "hann":
        return librosa.filters.get_window("hann", n, fftbins=True).astype(np.float32)
    raise config_lib.ConfigError(f"features.window must be 'sine' or 'hann', got '{cfg.window}'")


def stft(wave: np.ndarray, cfg: config_lib.FeatureConfig) -> np.ndarray:
    """Centred STFT with reflect padding, complex (n_fft // 2 + 1, frames)."""
    return librosa.stft(
        np.asarray(wave, dtype=np.float32), n_fft=cfg.n_fft, hop_length=cfg.hop_length,
        win_length=cfg.win_length, window=window(cfg), center=True, pad_mode="reflect",
    )


def istft(spec: np.ndarray, cfg: config_lib.FeatureConfig, length: int | None = None) -> np.ndarray:
    """Inverse of :func:`stft` (least-squares overlap-add with the same window)."""
    return librosa.istft(
        spec, hop_length=cfg.hop_length, win_length=cfg.win_length, n_fft=cfg.n_fft,
        window=window(cfg), center=True, length=length,
    ).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).astype(
        np.float32
    )


def mel_basis(cfg: config_lib.FeatureConfig) -> np.ndarray:
    """Slaney-normalised Mel filterbank (n_mels, n_fft // 2 + 1), as librosa's default."""
    return _mel_basis(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)


def power_to_logmel(power: np.ndarray, cfg: config_lib.FeatureConfig) -> np.ndarray:
    """Power spectrogram (bins, frames) -> natural-log Mel (frames, n_mels)."""
    mel = mel_basis(cfg) @ power
    return np.log(np.maximum(mel, cfg.log_floor)).T.astype(np.float32)


def wave_to_features(wave: np.ndarray, cfg: config_lib.FeatureConfig) -> np.ndarray:
    """Waveform -> (frames, bins) float32: STFT power (floored) or log-Mel (not normalised)."""
    power = np.abs(stft(wave, cfg)) ** 2
    if cfg.kind == "stft":
        return np.maximum(power, cfg.power_floor).T.astype(np.float32)
    if cfg.kind == "mel":
        return power_to_logmel(power, cfg)
    raise config_lib.ConfigError(f"features.kind must be 'mel' or 'stft', got '{cfg.kind}'")
