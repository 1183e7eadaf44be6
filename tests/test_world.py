"""WORLD vocoder features (dvae_jax.audio.world): frames on the project's hop, log-F0 and voicing,
coding round trip through synthesis."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pyworld")

from dvae_jax import errors
from dvae_jax.audio import world

SR = 16000
SILENCE = 3000  # samples of near-silence at each end


def _voiced(seconds: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A harmonic tone gliding 120..180 Hz between near-silent edges; (wave, its F0 per sample)."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = 150 + 30 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    wave = 0.3 * sum(np.sin(k * phase) / k for k in range(1, 20))
    wave[:SILENCE] = 0.0
    wave[-SILENCE:] = 0.0
    wave = wave + 1e-4 * np.random.default_rng(0).standard_normal(wave.size)
    return wave, f0


@pytest.mark.parametrize("method", world.F0_METHODS)
def test_frames_follow_the_project_hop_and_f0_is_found(method):
    # given a 1 s voiced tone, when analysed at hop 256 (16 ms)
    cfg = world.WorldConfig(f0_method=method)
    wave, f0_true = _voiced()
    feats = world.analyse(wave, cfg)
    # then one frame per hop plus one, as the centred STFT: len // hop + 1
    t = len(wave) // 256 + 1
    assert cfg.frame_period_ms == 16.0
    assert world.n_frames(len(wave), cfg) == t
    assert feats.log_f0.shape == feats.vuv.shape == (t,)
    assert feats.coded_sp.shape == (t, 60) and feats.coded_ap.shape == (t, cfg.ap_dims)
    assert world.to_array(feats).shape == (t, cfg.n_dims)
    # and the interior frames are voiced with F0 within 3 % of the true glide (frame k at k * hop)
    inner = np.arange(t)[(np.arange(t) * 256 > SILENCE + 1024) & (np.arange(t) * 256 < len(wave) - SILENCE - 1024)]
    assert np.all(feats.vuv[inner] == 1.0)
    err = np.abs(feats.log_f0[inner] - np.log(f0_true[inner * 256]))
    assert np.max(err) < np.log(1.03)
    # and the silent edges are unvoiced
    assert np.all(feats.vuv[:5] == 0.0) and np.all(feats.vuv[-5:] == 0.0)


def test_coded_features_round_trip_through_synthesis():
    # given the coded features of a voiced tone, when synthesised and analysed again
    cfg = world.WorldConfig(f0_method="dio")
    wave, _ = _voiced()
    feats = world.analyse(wave, cfg)
    out = world.synthesise(feats, cfg, length=len(wave))
    again = world.analyse(out, cfg)
    # then the length is the original's and the features agree within stated tolerances:
    # F0 within 2 % (median over frames voiced in both), voicing on >= 90 % of the frames,
    # coded envelope within 0.3 (mean |difference|; its values span about 10)
    assert out.shape == wave.shape and out.dtype == np.float32
    both = (feats.vuv > 0) & (again.vuv > 0)
    assert both.sum() > 30
    assert np.median(np.abs(feats.log_f0[both] - again.log_f0[both])) < np.log(1.02)
    assert np.mean(feats.vuv == again.vuv) >= 0.9
    assert np.mean(np.abs(feats.coded_sp[both] - again.coded_sp[both])) < 0.3
    assert np.ptp(feats.coded_sp[both]) > 3.0  # the tolerance above is small against the range


def test_log_f0_is_interpolated_through_unvoiced_frames():
    # given F0 with unvoiced frames (0) at the edges and in the middle
    f0 = np.array([0.0, 100.0, 0.0, 0.0, 400.0, 0.0])
    log_f0, vuv = world.interpolate_log_f0(f0)
    # then the flag marks the voiced frames, log-F0 is linear in between and held at the edges
    np.testing.assert_array_equal(vuv, [0, 1, 0, 0, 1, 0])
    expected = np.log([100, 100, 100 * 4 ** (1 / 3), 100 * 4 ** (2 / 3), 400, 400])
    np.testing.assert_allclose(log_f0, expected, rtol=1e-6)
    # and decoding gives F0 back, zero where unvoiced
    np.testing.assert_allclose(world.f0_from_log(log_f0, vuv), f0, rtol=1e-5)
    # and without any voiced frame, log-F0 is 0 and nothing is voiced
    log_f0, vuv = world.interpolate_log_f0(np.zeros(4))
    assert np.all(log_f0 == 0) and np.all(vuv == 0)


def test_array_layout_round_trips_and_bad_input_is_named():
    cfg = world.WorldConfig(f0_method="dio")
    wave, _ = _voiced(0.5)
    feats = world.analyse(wave, cfg)
    back = world.from_array(world.to_array(feats), cfg)
    for a, b in zip(feats, back):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(world.WorldError, match="frames, 63"):
        world.from_array(np.zeros((5, 10)), cfg)
    with pytest.raises(world.WorldError, match="coded_sp"):
        world.synthesise(feats._replace(coded_sp=feats.coded_sp[:, :10]), cfg)
    with pytest.raises(world.WorldError, match="non-finite"):
        world.analyse(np.full(2000, np.nan), cfg)
    with pytest.raises(world.WorldError, match="f0_method"):
        world.WorldConfig(f0_method="yin")
    assert issubclass(world.WorldError, errors.DvaeError)


@pytest.mark.parametrize("n", [513, 1000, 4097, 12345, 16000])
def test_frame_count_is_exactly_the_stft_one_for_any_length(n):
    # given a wave of any length, then analysis gives n // hop + 1 frames in every array
    cfg = world.WorldConfig(f0_method="dio")
    x = 0.1 * np.random.default_rng(n).standard_normal(n)
    f0, sp, ap = world.analyse_raw(x, cfg)
    assert f0.shape[0] == sp.shape[0] == ap.shape[0] == n // 256 + 1
    # and a short array is padded by repeating its last frame, a long one cut
    a = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(world._fit_frames(a, 5), [[0, 1], [2, 3], [4, 5], [4, 5], [4, 5]])
    np.testing.assert_array_equal(world._fit_frames(a, 2), a[:2])


def test_bounds_hold_analysed_signals_and_tame_wild_frames():
    cfg = world.WorldConfig(f0_method="dio")
    lo, hi = world.feature_bounds(cfg)
    assert lo.shape == hi.shape == (cfg.n_dims,) and np.all(lo < hi)
    # given full-scale and silent test signals and the voiced tone, their frames lie inside the bounds
    t = np.arange(SR) / SR
    rng = np.random.default_rng(0)
    signals = [_voiced()[0], np.clip(rng.standard_normal(SR), -1, 1), np.sign(np.sin(2 * np.pi * 100 * t)),
               np.sin(2 * np.pi * 100 * t), 1e-9 * rng.standard_normal(SR)]
    for x in signals:
        a = world.to_array(world.analyse(x, cfg))
        assert np.all(a >= lo) and np.all(a <= hi)
        np.testing.assert_array_equal(world.sanitise(a, cfg), a)
    # given wild frames (NaN, +-inf, huge coefficients of one sign: 1e78 once decoded)
    wild = np.zeros((40, cfg.n_dims), np.float32)
    wild[:10] = np.nan
    wild[10:20] = np.inf
    wild[20:30] = -np.inf
    wild[30:, 0], wild[30:, 1], wild[30:, 2:] = np.log(150.0), 1.0, 5.0
    clean = world.sanitise(wild, cfg)
    assert np.all(np.isfinite(clean)) and np.all(clean >= lo) and np.all(clean <= hi)
    np.testing.assert_array_equal(clean[:10], np.broadcast_to(lo, (10, cfg.n_dims)))
    np.testing.assert_array_equal(clean[10:20], np.broadcast_to(hi, (10, cfg.n_dims)))
    # then the decoded envelope stays in SP_RANGE and the synthesis is finite
    _, sp, ap = world.decode(world.from_array(clean, cfg), cfg)
    assert sp.max() <= world.SP_RANGE[1] and sp.min() >= world.SP_RANGE[0] and 0 <= ap.min() <= ap.max() <= 1
    out = world.synthesise(world.from_array(clean, cfg), cfg)
    assert out.shape == (39 * 256,) and np.all(np.isfinite(out))
    with pytest.raises(world.WorldError, match=f"frames, {cfg.n_dims}"):
        world.sanitise(np.zeros((3, 5)), cfg)
