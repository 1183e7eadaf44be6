"""A synthetic sequence task with real temporal structure, for tests and quick checks.

Each sequence is a sum of two sinusoids with random frequency, phase and amplitude, observed
through a fixed random linear map into ``f`` features plus Gaussian noise: predicting frame t
from the past needs the (latent) phase and frequency, which a dynamical VAE can track.
"""

from __future__ import annotations

import numpy as np


def noisy_sinusoids(n: int, t: int, f: int = 8, noise: float = 0.1, seed: int = 0) -> np.ndarray:
    """(n, t, f) float32 sequences."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(1234).standard_normal((2, f)) / np.sqrt(2)  # same map for every split
    time = np.arange(t)[None, :]
    freq = rng.uniform(0.05, 0.3, size=(n, 2))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 2))
    amp = rng.uniform(0.5, 1.5, size=(n, 2))
    waves = amp[:, :, None] * np.sin(2 * np.pi * freq[:, :, None] * time[:, None, :] + phase[:, :, None])
    x = np.einsum("nkt,kf->ntf", waves, mix) + noise * rng.standard_normal((n, t, f))
    return x.astype(np.float32)
