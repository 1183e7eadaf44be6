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


# ---------------------------------------------------------------------------------------------
# The one path from decoded features to audio: de-normalise, clip into the feature range, invert

HANN20 = config_lib.FeatureConfig(kind="mel", window="hann", n_mels=20)


def _full_scale_signals():
    t = np.arange(16000) / 16000
    rng = np.random.default_rng(0)
    return {"dc": np.ones(16000), "sine": np.sin(2 * np.pi * 1000 * t), "square": np.sign(np.sin(2 * np.pi * 440 * t)),
            "noise": np.sign(rng.standard_normal(16000))}


@pytest.mark.parametrize("cfg", [MEL, STFT, HANN20], ids=["mel", "stft", "mel-hann-20"])
def test_feature_range_bounds_every_peak_normalised_signal(cfg):
    lo, hi = inversion.feature_range(cfg)
    peak = -np.inf
    for x in _full_scale_signals().values():
        f = spectral.wave_to_features(x.astype(np.float32), cfg)
        assert f.min() >= lo and f.max() <= hi
        peak = max(peak, float(f.max()))
        np.testing.assert_array_equal(inversion.to_raw(f, cfg), f)  # real features pass unchanged
    if cfg.kind == "stft":
        assert peak > 0.99 * hi  # full-scale DC reaches the bound: it is tight
    assert lo == (cfg.power_floor if cfg.kind == "stft" else pytest.approx(np.log(cfg.log_floor)))


def test_to_raw_denormalises_clips_and_keeps_nan_unless_asked():
    lo, hi = inversion.feature_range(MEL)
    x = np.zeros((3, 80), np.float32)
    x[0, 0], x[1, 1], x[2, 2] = 1e6, -1e6, np.nan
    raw = inversion.to_raw(x, MEL, denormalize=lambda v: v * 2.0 + 1.0)
    assert raw[0, 0] == np.float32(hi) and raw[1, 1] == np.float32(lo) and raw[0, 5] == 1.0
    assert np.isnan(raw[2, 2])  # left for the inversion to name
    filled = inversion.to_raw(x, MEL, fill_nonfinite=True)
    assert np.all(np.isfinite(filled)) and filled[2, 2] == np.float32(lo)
    with pytest.raises(inversion.InversionError, match="non-finite"):
        inversion.decoded_to_wave(x, MEL, method="griffin_lim_jax", n_iter=1)


def test_decoded_to_wave_is_features_to_wave_of_the_denormalised_features(wave):
    features = spectral.wave_to_features(wave, STFT)
    phase = spectral.stft(wave, STFT).T
    scale = 3.0
    got = inversion.decoded_to_wave(features / scale, STFT, lambda v: v * scale, phase=phase, length=wave.size)
    want = inversion.features_to_wave(features, STFT, phase=phase, length=wave.size)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert metrics.si_sdr(wave, got) > 30.0
