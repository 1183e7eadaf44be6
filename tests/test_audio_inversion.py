"""features_to_wave: the review's original-phase protocol and Griffin-Lim for both feature kinds."""

import numpy as np
import pytest

from dvae_jax import config as config_lib
from dvae_jax.audio import inversion, metrics, spectral, synth

STFT = config_lib.FeatureConfig(kind="stft")
MEL = config_lib.FeatureConfig(kind="mel")


@pytest.fixture(scope="module")
def wave():
    return synth.speech_like(1.5, 16000, seed=5)


@pytest.mark.parametrize("as_angle", [False, True])
def test_stft_power_with_original_phase_is_near_perfect(wave, as_angle):
    features = spectral.wave_to_features(wave, STFT)
    phase = spectral.stft(wave, STFT).T
    if as_angle:
        phase = np.angle(phase)
    out = inversion.features_to_wave(features, STFT, phase=phase, length=wave.size)
    assert out.shape == wave.shape and out.dtype == np.float32
    assert metrics.si_sdr(wave, out) > 30.0


def test_auto_picks_phase_when_given(wave):
    features = spectral.wave_to_features(wave, STFT)
    phase = spectral.stft(wave, STFT).T
    a = inversion.features_to_wave(features, STFT, phase=phase, length=wave.size)
    b = inversion.features_to_wave(features, STFT, phase=phase, length=wave.size, method="phase")
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", ["griffin_lim_jax", "griffin_lim_librosa"])
def test_mel_griffin_lim_gives_intelligible_speech_like_output(wave, method):
    features = spectral.wave_to_features(wave, MEL)
    out = inversion.features_to_wave(features, MEL, length=wave.size, method=method, n_iter=16)
    assert out.shape == wave.shape and np.all(np.isfinite(out))
    assert metrics.estoi(metrics.peak_normalise(wave), metrics.peak_normalise(out), 16000) > 0.4


def test_mel_pinv_magnitude_is_nonnegative_and_keeps_the_mel_spectrum(wave):
    features = spectral.wave_to_features(wave, MEL)
    mag = inversion.mel_to_magnitude(features, MEL, "pinv")
    assert mag.shape == (MEL.n_fft // 2 + 1, features.shape[0]) and np.all(mag >= 0)
    back = spectral.power_to_logmel(mag.astype(np.float64) ** 2, MEL)
    loud = features > np.log(MEL.log_floor) + 5
    assert np.median(np.abs(back - features)[loud]) < 0.5  # natural-log units


def test_bad_inputs_raise_inversion_error(wave):
    features = spectral.wave_to_features(wave, STFT)
    with pytest.raises(inversion.InversionError, match="phase"):
        inversion.features_to_wave(features, STFT, method="phase")
    with pytest.raises(inversion.InversionError, match="phase must be"):
        inversion.features_to_wave(features, STFT, phase=spectral.stft(wave, STFT))  # not transposed
    bad = features.copy()
    bad[3, 4] = np.nan
    with pytest.raises(inversion.InversionError, match="non-finite"):
        inversion.features_to_wave(bad, STFT)
    with pytest.raises(inversion.InversionError, match="features must be"):
        inversion.features_to_wave(features[:, :80], STFT)
    with pytest.raises(inversion.InversionError, match="method"):
        inversion.features_to_wave(features, STFT, method="magic")
    assert issubclass(inversion.InversionError, ValueError)
