"""A deterministic speech-like test signal (voiced syllables through formant filters, fricative noise)."""

from __future__ import annotations

import numpy as np
from scipy import signal as sp_signal

# (F1, F2, F3) in Hz of a few vowels; bandwidths 80 / 100 / 140 Hz.
_VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))
_BANDWIDTHS = (80.0, 100.0, 140.0)


def _resonator(x: np.ndarray, freq: float, bw: float, sr: int) -> np.ndarray:
    r = np.exp(-np.pi * bw / sr)
    theta = 2 * np.pi * freq / sr
    a = [1.0, -2 * r * np.cos(theta), r * r]
    return sp_signal.lfilter([1.0 - r], a, x)


def speech_like(seconds: float = 2.0, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """Syllables of a glottal-pulse-like harmonic source (f0 100-200 Hz, gliding) through three
    formant resonators, separated by short fricative noise bursts and pauses; peak 0.9, float32.

    Good enough that PESQ finds utterances and STOI sees speech-like modulation; not speech.
    """
    rng = np.random.default_rng(seed)
    n = round(seconds * sr)
    out = np.zeros(n)
    pos = int(0.05 * sr)
    while pos < n - int(0.1 * sr):
        syl = int(rng.uniform(0.15, 0.3) * sr)
        syl = min(syl, n - pos)
        t = np.arange(syl) / sr
        f0 = rng.uniform(100, 200) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        # Sum of harmonics with a -12 dB/octave tilt approximates a glottal source.
        src = sum(np.sin(k * phase) / k**2 for k in range(1, 40) if k * f0.max() < sr / 2)
        vowel = _VOWELS[rng.integers(len(_VOWELS))]
        voiced = sum(_resonator(src, f, b, sr) for f, b in zip(vowel, _BANDWIDTHS))
        env = np.sin(np.pi * np.arange(syl) / syl) ** 0.5
        out[pos:pos + syl] += voiced * env
        pos += syl
        if rng.random() < 0.5 and pos < n - int(0.08 * sr):  # fricative: high-passed noise burst
            fl = int(0.06 * sr)
            noise = sp_signal.lfilter(*sp_signal.butter(4, 3500 / (sr / 2), "high"), rng.normal(size=fl))
            out[pos:pos + fl] += 0.3 * noise * np.hanning(fl)
            pos += fl
        pos += int(rng.uniform(0.02, 0.12) * sr)
    out += 1e-4 * rng.normal(size=n)  # a noise floor, as a microphone has
    return (0.9 * out / np.max(np.abs(out))).astype(np.float32)
