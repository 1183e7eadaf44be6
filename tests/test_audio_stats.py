"""Reference-free spectral statistics."""

import numpy as np
import pytest

from dvae_jax import config as config_lib
from dvae_jax.audio import stats, synth

SR = 16000
MEL = config_lib.FeatureConfig(kind="mel")


@pytest.fixture(scope="module")
def speech():
    return synth.speech_like(2.0, SR, seed=2)


def test_mean_logmel_distance(speech):
    lm = stats.logmel(speech, MEL)
    assert stats.mean_logmel_distance(lm, [lm]) == 0.0
    assert stats.mean_logmel_distance(lm + np.log(10.0), lm) == pytest.approx(10.0)  # +10 dB


def test_spectral_flux_is_zero_for_a_frozen_spectrum(speech):
    lm = stats.logmel(speech, MEL)
    frozen = np.repeat(lm[20:21], 50, axis=0)
    assert stats.spectral_flux(frozen) == 0.0
    assert stats.spectral_flux(lm) > 1.0


def test_boundary_continuity_detects_a_jump(speech):
    lm = stats.logmel(speech, MEL)
    seamless = stats.boundary_continuity(lm, 60)
    jumped = lm.copy()
    jumped[60:] += np.log(10.0) * 3 * np.linspace(-1, 1, lm.shape[1])  # a +-30 dB tilt from frame 60
    assert stats.boundary_continuity(jumped, 60) > 2.5 * max(seamless, 1.0)
    with pytest.raises(ValueError, match="boundary"):
        stats.boundary_continuity(lm, 0)


def test_voiced_ratio_separates_speech_from_noise(speech):
    noise = np.random.default_rng(0).normal(size=speech.size)
    assert stats.voiced_frame_ratio(speech, SR) > 0.4
    assert stats.voiced_frame_ratio(noise, SR) < 0.05
    assert np.isnan(stats.voiced_frame_ratio(np.zeros(SR), SR))
