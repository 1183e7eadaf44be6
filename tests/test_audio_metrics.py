"""Intrusive metrics on known cases, bad inputs, compute_all and summarize."""

import math

import numpy as np
import pytest

from dvae_jax.audio import metrics, synth

SR = 16000


@pytest.fixture(scope="module")
def clean():
    return synth.speech_like(2.0, SR, seed=1).astype(np.float64)


def _noisy(clean, snr_db, seed=0):
    noise = np.random.default_rng(seed).normal(size=clean.size)
    noise *= np.linalg.norm(clean) / np.linalg.norm(noise) / 10 ** (snr_db / 20)
    return clean + noise


def test_identical_signals_score_at_the_top(clean):
    r = metrics.compute_all(clean, clean, SR)
    name = metrics.metric_name
    assert r[name("si_sdr")] > 100
    assert r[name("pesq_wb")] > 4.0 and r[name("pesq_nb")] > 4.0
    assert r[name("stoi")] == pytest.approx(1.0, abs=1e-3)
    assert r[name("estoi")] == pytest.approx(1.0, abs=1e-3)
    for key in ("spectral_rmse", "lsd", "mcd", "rmse_ls"):
        assert r[name(key)] == pytest.approx(0.0, abs=1e-6)
    assert r[metrics.TRIMMED] == 0.0


def test_scores_are_monotone_in_the_noise_level(clean):
    keys = ["si_sdr", "stoi", "estoi", "lsd", "mcd", "rmse_ls", "spectral_rmse", "pesq_wb"]
    rows = [metrics.compute_all(clean, _noisy(clean, snr), SR, which=keys) for snr in (40, 20, 5)]
    for key, higher_is_better in [("si_sdr", True), ("stoi", True), ("estoi", True), ("pesq_wb", True),
                                  ("lsd", False), ("mcd", False), ("rmse_ls", False),
                                  ("spectral_rmse", False)]:
        values = [row[metrics.metric_name(key)] for row in rows]
        ordered = values[0] > values[1] > values[2] if higher_is_better else values[0] < values[1] < values[2]
        assert ordered, (key, values)
    assert rows[1][metrics.metric_name("si_sdr")] == pytest.approx(20.0, abs=0.5)


def test_si_sdr_and_rmse_ls_are_scale_invariant(clean):
    est = _noisy(clean, 15)
    assert metrics.si_sdr(clean, 3 * est) == pytest.approx(metrics.si_sdr(clean, est))
    assert metrics.rmse_ls(clean, 3 * est) == pytest.approx(metrics.rmse_ls(clean, est))


def test_every_name_names_its_package_or_method():
    names = [metrics.metric_name(k) for k in metrics.METRICS]
    assert len(set(names)) == len(names)
    assert "pesq package" in metrics.metric_name("pesq_wb") and "wide-band" in metrics.metric_name("pesq_wb")
    assert "narrow-band" in metrics.metric_name("pesq_nb")
    assert "pystoi" in metrics.metric_name("estoi") and "extended=True" in metrics.metric_name("estoi")


def test_silent_reference(clean):
    with pytest.raises(metrics.MetricError, match="silent"):
        metrics.si_sdr(np.zeros_like(clean), clean)
    r = metrics.compute_all(np.zeros_like(clean), clean, SR)
    reasons = metrics.reasons(r)
    assert len(reasons) == len(metrics.METRICS)
    assert all("silent" in why for why in reasons.values())


def test_nan_in_estimate(clean):
    est = clean.copy()
    est[100] = np.nan
    with pytest.raises(metrics.MetricError, match="non-finite"):
        metrics.pesq_wb(clean, est, SR)
    r = metrics.compute_all(clean, est, SR, which=["si_sdr", "pesq_nb"])
    assert all(isinstance(v, metrics.MetricNaN) and math.isnan(v) for k, v in r.items() if k != metrics.TRIMMED)


def test_length_mismatch_is_trimmed_and_recorded(clean):
    with pytest.raises(metrics.MetricError, match="samples"):
        metrics.stoi(clean, clean[:-10], SR)
    r = metrics.compute_all(clean, clean[:-123], SR, which=["si_sdr"])
    assert r[metrics.TRIMMED] == 123.0
    assert r[metrics.metric_name("si_sdr")] > 100


def test_too_short_for_pesq_and_stoi_gives_flagged_nan(clean):
    short = clean[:3000]
    r = metrics.compute_all(short, short, SR, which=["pesq_wb", "stoi"])
    for name in (metrics.metric_name("pesq_wb"), metrics.metric_name("stoi")):
        assert math.isnan(r[name]) and r[name].reason


def test_pesq_resamples_other_rates(clean):
    import soxr

    c8 = soxr.resample(clean, SR, 8000)
    assert metrics.pesq_nb(c8, c8, 8000) > 4.0


def test_summarize_statistics_and_nan_count():
    rows = [{"a": float(v), "b": 1.0} for v in range(1, 11)] + [{"a": metrics.MetricNaN("x"), "b": 1.0}]
    s = metrics.summarize(rows)
    assert s["a"]["n"] == 10 and s["a"]["n_nan"] == 1
    assert s["a"]["mean"] == pytest.approx(5.5) and s["a"]["median"] == pytest.approx(5.5)
    assert s["a"]["ci95_low"] < 5.5 < s["a"]["ci95_high"]
    assert 3.0 < s["a"]["ci95_low"] and s["a"]["ci95_high"] < 8.0
    assert s["b"]["ci95_low"] == s["b"]["ci95_high"] == 1.0
    empty = metrics.summarize([{"c": math.nan}])
    assert empty["c"]["n"] == 0 and math.isnan(empty["c"]["mean"])


def test_unknown_metric_is_named():
    with pytest.raises(KeyError, match="pesq_xb"):
        metrics.compute_all(np.ones(10), np.ones(10), SR, which=["pesq_xb"])


# --------------------------------------------------------------------------------------------
# Never taking the process down: PESQ in a worker, segmenting, any failing metric -> NaN


def _segfault(*args):
    """Stands in for the pesq C library crashing (it segfaults on ~600 s inputs)."""
    import faulthandler

    faulthandler._sigsegv()


def test_pesq_on_a_long_input_is_segmented_below_the_guard(clean):
    # given a 12 s input and the guard lowered from 300 s to 5 s (three 4 s segments)
    long_ref = np.tile(clean, 6)
    long_est = _noisy(long_ref, 20)
    # when PESQ scores it
    whole = metrics.pesq_wb(long_ref, long_est, SR)
    segmented = metrics.pesq_wb(long_ref, long_est, SR, max_seconds=5.0)
    # then the segment mean is a finite score close to the whole-signal one (periodic signal)
    segments = [metrics.pesq_wb(long_ref[a:a + 4 * SR], long_est[a:a + 4 * SR], SR) for a in (0, 4 * SR, 8 * SR)]
    assert math.isfinite(segmented) and segmented == pytest.approx(np.mean(segments), abs=1e-6)
    assert segmented == pytest.approx(whole, abs=0.3)


def test_pesq_crash_is_a_nan_cell_and_the_caller_lives(clean, monkeypatch):
    # given a pesq that segfaults (in its worker process)
    monkeypatch.setattr(metrics, "_pesq_call", _segfault)
    # when a table is computed, then the PESQ cells are NaN with the reason, the others scored
    r = metrics.compute_all(clean, _noisy(clean, 20), SR, which=["pesq_wb", "si_sdr"])
    cell = r[metrics.metric_name("pesq_wb")]
    assert math.isnan(cell) and "worker process died (signal SIGSEGV)" in cell.reason
    assert r[metrics.metric_name("si_sdr")] == pytest.approx(20.0, abs=0.5)
    # and the next call gets a fresh worker
    monkeypatch.undo()
    assert metrics.pesq_wb(clean, clean, SR) > 4.0


def test_run_isolated_reraises_exceptions_and_survives_crashes():
    import faulthandler

    with pytest.raises(ValueError, match="invalid literal"):
        metrics.run_isolated(int, "x")
    with pytest.raises(metrics.WorkerCrashed, match="SIGSEGV"):
        metrics.run_isolated(faulthandler._sigsegv)
    assert metrics.run_isolated(abs, -3) == 3
    # a call that hangs is stopped after its timeout; the next call gets a fresh worker
    import time

    t0 = time.monotonic()
    with pytest.raises(metrics.WorkerCrashed, match="no answer in 1 s"):
        metrics.run_isolated(time.sleep, 30, timeout_s=1.0)
    assert time.monotonic() - t0 < 20
    assert metrics.run_isolated(abs, -4) == 4


def test_a_metric_that_raises_gives_a_nan_cell_with_its_reason(clean, monkeypatch):
    # given a registered metric with a bug
    def broken(ref, est, sr):
        raise ZeroDivisionError("division by zero in the band loop")

    monkeypatch.setitem(metrics.METRICS, "broken", ("broken (test)", broken))
    # when the table is computed, then that cell is NaN with the exception named, the rest scored
    r = metrics.compute_all(clean, clean, SR, which=["broken", "si_sdr"])
    assert math.isnan(r["broken (test)"])
    assert r["broken (test)"].reason == "broken failed: ZeroDivisionError: division by zero in the band loop"
    assert r[metrics.metric_name("si_sdr")] > 100


def test_intervals_are_scipy_bca_deterministic_and_handle_small_n():
    from scipy import stats as sps

    values = np.random.default_rng(3).gamma(2.0, size=40)
    low, high = metrics.mean_interval(values, n_boot=999, seed=7)
    # the same interval scipy.stats.bootstrap (BCa) gives with the same seed, every time
    ref = sps.bootstrap((values,), np.mean, n_resamples=999, method="BCa", rng=np.random.default_rng(7))
    assert (low, high) == (ref.confidence_interval.low, ref.confidence_interval.high)
    assert metrics.mean_interval(values, n_boot=999, seed=7) == (low, high)
    assert low < values.mean() < high
    assert all(math.isnan(v) for v in metrics.mean_interval(np.array([2.0])))
    assert metrics.mean_interval(np.array([1.0, 3.0])) == (1.0, 3.0)  # BCa undefined: percentile
    s = metrics.summarize([{"a": 1.0}, {"a": metrics.MetricNaN("x")}])
    assert s["a"]["n"] == 1 and math.isnan(s["a"]["ci95_low"])
