"""Intrusive speech metrics (reference vs estimate), each named with its package and mode.

Every metric function takes two 1-D waveforms of equal length at ``sr`` and returns a float.
Input the metric cannot be defined on (a silent reference, a NaN in the estimate, unequal
lengths) raises :class:`MetricError`; an outcome of the measurement itself (PESQ finds no
utterance, pystoi has too few frames) returns :class:`MetricNaN`, a NaN float carrying the
reason. :func:`compute_all` never raises on bad signals: it turns every failure, any exception
included, into a MetricNaN (PESQ runs in a worker process, so even its segfaults do), so a table
over many utterances always completes.

Conventions shared by all metrics in :func:`compute_all` (the review's protocol, MODELS.md): both
signals are first scaled to 0.9 peak; length mismatches are trimmed to the shorter signal and
the number of trimmed samples is recorded under ``TRIMMED``.
"""

from __future__ import annotations

import inspect
import itertools
import math
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Self

import numpy as np

from dvae_jax import config as config_lib
from dvae_jax import errors
from dvae_jax.audio import spectral


class MetricError(errors.DataError):
    """A signal on which a metric is undefined (silent, non-finite, wrong shape or length)."""


class MetricNaN(float):
    """NaN that says why: ``float(x)`` is nan, ``x.reason`` the explanation."""

    reason: str

    def __new__(cls, reason: str) -> Self:
        obj = super().__new__(cls, math.nan)
        obj.reason = reason
        return obj

    def __repr__(self) -> str:
        return f"MetricNaN({self.reason!r})"


PEAK = 0.9
TRIMMED = "trimmed_samples (length mismatch, trimmed to the shorter signal)"

# The analysis behind the spectral metrics: the review's STFT (64 ms sine window, hop 16 ms at
# 16 kHz), scaled with the sample rate; 80 Mel bands for MCD.
# Log-domain metrics floor both powers at the reference's peak power minus 80 dB: with an
# absolute floor, near-silent pauses (where any noise is an "error" of 60 dB) dominate the mean.
_FLOOR_DB = 80.0


def _floor(reference_power: np.ndarray) -> float:
    return float(np.max(reference_power)) * 10 ** (-_FLOOR_DB / 10) + 1e-30


def _analysis(sr: int) -> config_lib.FeatureConfig:
    n_fft = 1024 * sr // 16000
    n_fft += n_fft % 2
    return config_lib.FeatureConfig(
        kind="stft", sample_rate=sr, n_fft=n_fft, win_length=n_fft, hop_length=n_fft // 4,
        window="sine", n_mels=80, fmin=0.0, fmax=sr / 2,
    )


# --------------------------------------------------------------------------------------------
# Input checks


def check_pair(ref: np.ndarray, est: np.ndarray, sr: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns float64 copies; raises MetricError on anything a metric is undefined on."""
    ref = np.asarray(ref, np.float64)
    est = np.asarray(est, np.float64)
    if ref.ndim != 1 or est.ndim != 1:
        raise MetricError(f"waveforms must be 1-D, got shapes {ref.shape} and {est.shape}")
    if ref.shape != est.shape:
        raise MetricError(
            f"reference has {ref.size} samples, estimate {est.size}: trim or pad them to one length "
            "(compute_all trims to the shorter)"
        )
    if ref.size == 0:
        raise MetricError("empty waveforms")
    if not np.all(np.isfinite(ref)):
        raise MetricError(f"reference has {int(np.sum(~np.isfinite(ref)))} non-finite samples")
    if not np.all(np.isfinite(est)):
        raise MetricError(f"estimate has {int(np.sum(~np.isfinite(est)))} non-finite samples (NaN/inf)")
    if not np.any(ref):
        raise MetricError("reference is silent (all zeros): the metric is undefined")
    if sr is not None and (not isinstance(sr, (int, np.integer)) or sr <= 0):
        raise MetricError(f"sample rate must be a positive integer, got {sr!r}")
    return ref, est


def _require_sound(est: np.ndarray) -> None:
    if not np.any(est):
        raise MetricError("estimate is silent (all zeros): the metric is undefined")


def peak_normalise(wave: np.ndarray, peak: float = PEAK) -> np.ndarray:
    """Scales to ``peak`` max |x| (the review scales both signals to 0.9 before PESQ / STOI)."""
    wave = np.asarray(wave, np.float64)
    top = np.max(np.abs(wave))
    if top == 0:
        raise MetricError("cannot peak-normalise a silent signal")
    return wave * (peak / top)


def _resample(wave: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr == target:
        return wave
    import soxr

    return soxr.resample(wave, sr, target, quality="HQ")


# --------------------------------------------------------------------------------------------
# Waveform metrics


def si_sdr(ref: np.ndarray, est: np.ndarray, sr: int | None = None) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), both signals made zero-mean; the energy
    ratio is regularised by float64 eps times the reference energy, so identical signals give a
    finite ~156 dB rather than inf."""
    ref, est = check_pair(ref, est)
    ref = ref - ref.mean()
    est = est - est.mean()
    _require_sound(est)
    alpha = np.dot(est, ref) / np.dot(ref, ref)
    target = alpha * ref
    noise = est - target
    eps = np.finfo(np.float64).eps * np.dot(ref, ref)
    num, den = np.dot(target, target), np.dot(noise, noise)
    return float(10 * np.log10((num + eps) / (den + eps)))


def rmse_ls(ref: np.ndarray, est: np.ndarray, sr: int | None = None) -> float:
    """Waveform RMSE after the least-squares scaling of the estimate, min_a ||ref - a est|| / sqrt(n)
    (the review's RMSE); a silent estimate gives a = 0."""
    ref, est = check_pair(ref, est)
    energy = np.dot(est, est)
    alpha = np.dot(ref, est) / energy if energy > 0 else 0.0
    return float(np.sqrt(np.mean((ref - alpha * est) ** 2)))


# --------------------------------------------------------------------------------------------
# Spectral metrics (on the review's STFT analysis of both signals as given)


def _power(wave: np.ndarray, cfg: config_lib.FeatureConfig) -> np.ndarray:
    return np.abs(spectral.stft(wave, cfg)).astype(np.float64) ** 2


def spectral_rmse(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """RMSE between STFT magnitudes |X| (not power: power's RMSE is set by a few loud bins),
    over all bins and frames; sine window 64 ms, hop 16 ms."""
    ref, est = check_pair(ref, est, sr)
    cfg = _analysis(sr)
    return float(np.sqrt(np.mean((np.sqrt(_power(ref, cfg)) - np.sqrt(_power(est, cfg))) ** 2)))


def log_spectral_distance(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """Log-spectral distance in dB: per frame sqrt(mean_f (10 log10(P_ref / P_est))^2), averaged
    over all frames; both powers floored at the reference's peak bin power - 80 dB."""
    ref, est = check_pair(ref, est, sr)
    cfg = _analysis(sr)
    p_ref = _power(ref, cfg)
    floor = _floor(p_ref)
    p_ref = np.maximum(p_ref, floor)
    p_est = np.maximum(_power(est, cfg), floor)
    diff = 10 * np.log10(p_ref / p_est)
    return float(np.mean(np.sqrt(np.mean(diff**2, axis=0))))


_N_CEPS = 13  # c0 .. c12; c0 (energy) is excluded from the distance


def _mel_power(wave: np.ndarray, sr: int) -> np.ndarray:
    cfg = _analysis(sr)
    return spectral.mel_basis(cfg).astype(np.float64) @ _power(np.asarray(wave, np.float64), cfg)


def mel_cepstrum(wave: np.ndarray, sr: int, floor: float | None = None) -> np.ndarray:
    """(frames, 13) Mel cepstrum c0..c12 of the log-amplitude 80-band Mel spectrum.

    librosa.feature.mfcc (DCT-II, orthonormal) of ln|X| = 0.5 ln(Mel power), divided by
    sqrt(2 n_mels) so that ln|X(w)| = c0 + 2 sum_n c_n cos(n w) on the Mel-warped axis, the
    cepstrum's own scale, for which the MCD constant (10 / ln 10) sqrt(2 ...) is defined. (MFCCs
    of a dB spectrum, as librosa's default, would inflate MCD about 25-fold.)
    """
    import librosa

    mel = _mel_power(wave, sr)
    floor = _floor(mel) if floor is None else floor
    log_amplitude = 0.5 * np.log(np.maximum(mel, floor))
    ceps = librosa.feature.mfcc(S=log_amplitude, n_mfcc=_N_CEPS, dct_type=2, norm="ortho")
    return ceps.T / np.sqrt(2.0 * mel.shape[0])


def mel_cepstral_distortion(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """MCD in dB: mean over frames of (10 / ln 10) sqrt(2 sum_{d=1}^{12} (c_d - c'_d)^2), c0
    excluded, frames aligned one to one (no DTW: the estimate is a resynthesis of the same
    utterance), every frame counted; Mel powers floored at the reference's peak - 80 dB."""
    ref, est = check_pair(ref, est, sr)
    floor = _floor(_mel_power(ref, sr))  # one floor (reference peak - 80 dB) for both
    diff = mel_cepstrum(ref, sr, floor)[:, 1:] - mel_cepstrum(est, sr, floor)[:, 1:]
    return float(np.mean(10.0 / np.log(10.0) * np.sqrt(2.0 * np.sum(diff**2, axis=1))))


# --------------------------------------------------------------------------------------------
# PESQ and STOI


# PESQ runs in a worker process: the C library segfaults on long inputs (about 600 s at 16 kHz),
# and a segfault in the caller would end a whole evaluation. Inputs longer than
# PESQ_MAX_SECONDS are also cut into equal segments scored separately (P.862 is specified for
# 8-30 s signals), so the crash is not reached at all.
PESQ_MAX_SECONDS = 300.0
# A call that has not answered after this many seconds is taken as hung: its worker is killed and
# the call fails like a crash (a NaN with its reason), so one bad input cannot stall an evaluation.
# PESQ on a PESQ_MAX_SECONDS segment takes a few seconds on this 2-core machine.
WORKER_TIMEOUT_S = 120.0


class WorkerCrashed(RuntimeError):
    """The worker process died (a segfault or abort in native code); the caller lives on."""


class _Worker:
    """One persistent ``python -m dvae_jax.audio.metrics`` child, fed pickled calls on stdin.

    A plain subprocess rather than multiprocessing: spawn re-imports the caller's ``__main__``
    (a script without a main guard, or stdin, breaks it) and fork copies JAX's threads.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()

    def call(self, fn: Callable, args: tuple, timeout_s: float = WORKER_TIMEOUT_S):
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "dvae_jax.audio.metrics"], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, env=env,
                )
            try:
                pickle.dump((fn, args), self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                self.proc.stdin.flush()
                # the reply is written in one flush: once its first byte is there, the rest follows
                ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
                if not ready:
                    self.proc.kill()
                    self.proc.wait()
                    self.proc = None
                    raise WorkerCrashed(f"its worker process gave no answer in {timeout_s:g} s and was stopped")
                ok, value = pickle.load(self.proc.stdout)
            except (EOFError, BrokenPipeError, pickle.UnpicklingError):
                code = self.proc.wait()
                self.proc = None
                how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
                raise WorkerCrashed(f"its worker process died ({how})") from None
        if not ok:
            raise value
        return value


def _serve() -> None:
    """The worker's loop: (fn, args) in, (True, result) or (False, exception) out."""
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the pickled replies
    while True:
        try:
            fn, args = pickle.load(source)
        except EOFError:
            return
        try:
            reply = (True, fn(*args))
        except Exception as err:  # noqa: BLE001 - sent back and re-raised in the caller
            reply = (False, err)
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            data = pickle.dumps((False, RuntimeError(repr(reply[1]))))
        sink.write(data)
        sink.flush()


_WORKER = _Worker()


def run_isolated(fn: Callable, *args, timeout_s: float = WORKER_TIMEOUT_S):
    """``fn(*args)`` in a persistent worker process, so that a crash in native code cannot kill
    the caller. ``fn`` and the arguments must pickle (a module-level function, arrays). An
    exception in ``fn`` is re-raised here; a worker that dies, or gives no answer within
    ``timeout_s``, raises :class:`WorkerCrashed` and the next call starts a fresh worker."""
    return _WORKER.call(fn, args, timeout_s)


def _pesq_call(rate: int, ref: np.ndarray, est: np.ndarray, mode: str) -> float:
    import pesq as pesq_lib

    return float(pesq_lib.pesq(rate, ref, est, mode))


def _pesq_segment(ref16: np.ndarray, est16: np.ndarray, mode: str, isolate: bool) -> float:
    import pesq as pesq_lib

    try:
        if isolate:
            return run_isolated(_pesq_call, 16000, ref16, est16, mode)
        return _pesq_call(16000, ref16, est16, mode)
    except WorkerCrashed as err:
        return MetricNaN(f"pesq {mode}: {err}; scored NaN")
    except pesq_lib.NoUtterancesError:
        return MetricNaN(f"pesq {mode}: no utterances detected in the reference or estimate")
    except pesq_lib.BufferTooShortError:
        return MetricNaN(f"pesq {mode}: signal too short ({ref16.size / 16000:.2f} s)")
    except pesq_lib.PesqError as err:  # any other error the C library reports
        return MetricNaN(f"pesq {mode}: {type(err).__name__}: {err}")


def _pesq(
    ref: np.ndarray, est: np.ndarray, sr: int, mode: str,
    max_seconds: float = PESQ_MAX_SECONDS, isolate: bool = True,
) -> float:
    ref, est = check_pair(ref, est, sr)
    _require_sound(est)
    rate = 16000
    ref16, est16 = _resample(ref, sr, rate), _resample(est, sr, rate)
    n_seg = max(1, math.ceil(ref16.size / (max_seconds * rate)))
    bounds = np.linspace(0, ref16.size, n_seg + 1).astype(int)
    scores, weights = [], []
    for a, b in itertools.pairwise(bounds):
        score = _pesq_segment(ref16[a:b], est16[a:b], mode, isolate)
        if n_seg == 1:
            return score
        if math.isfinite(score):
            scores.append(score)
            weights.append(b - a)
        else:
            failure = score
    if not scores:
        return MetricNaN(f"every {max_seconds:g} s segment failed; last: {failure.reason}")
    # Longer than the guard: the length-weighted mean of the segments' scores.
    return float(np.average(scores, weights=weights))


def pesq_wb(
    ref: np.ndarray, est: np.ndarray, sr: int, *, max_seconds: float = PESQ_MAX_SECONDS,
    isolate: bool = True,
) -> float:
    """PESQ MOS-LQO, ITU-T P.862.2 wide-band, ``pesq`` package, at 16 kHz (resampled with soxr
    HQ from any other rate).

    Run in a worker process unless ``isolate`` is False (a crash gives a NaN with its reason);
    signals longer than ``max_seconds`` are split into equal segments of at most that length and
    the length-weighted mean of their scores returned.
    """
    return _pesq(ref, est, sr, "wb", max_seconds, isolate)


def pesq_nb(
    ref: np.ndarray, est: np.ndarray, sr: int, *, max_seconds: float = PESQ_MAX_SECONDS,
    isolate: bool = True,
) -> float:
    """PESQ MOS-LQO, P.862 narrow-band (with the P.862.1 mapping), ``pesq`` package, run at
    16 kHz (the package accepts 8 or 16 kHz for 'nb'; other rates resampled with soxr HQ). The
    review used pypesq's narrow-band score, which is the raw P.862 score, not MOS-LQO: not
    directly comparable. Isolation and segmenting as :func:`pesq_wb`."""
    return _pesq(ref, est, sr, "nb", max_seconds, isolate)


def _stoi(ref: np.ndarray, est: np.ndarray, sr: int, extended: bool) -> float:
    ref, est = check_pair(ref, est, sr)
    _require_sound(est)
    import pystoi

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(pystoi.stoi(ref, est, sr, extended=extended))
    # pystoi warns and returns 1e-5 when fewer than 30 speech frames (384 ms) remain.
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return MetricNaN("pystoi: fewer than 30 non-silent frames (signal too short or silent)")
    return value


def stoi(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """STOI (Taal et al. 2011), pystoi, extended=False (resamples to 10 kHz internally)."""
    return _stoi(ref, est, sr, extended=False)


def estoi(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """ESTOI (Jensen and Taal 2016), pystoi, extended=True (the review's)."""
    return _stoi(ref, est, sr, extended=True)


# --------------------------------------------------------------------------------------------
# Registry, compute_all, summarize

# short key -> (stable full name, function)
METRICS: dict[str, tuple[str, Callable[[np.ndarray, np.ndarray, int], float]]] = {
    "spectral_rmse": ("spectral_rmse (STFT magnitude, sine 64 ms / hop 16 ms, 0.9 peak)", spectral_rmse),
    "lsd": ("lsd_db (log-spectral distance, STFT power, dB, 0.9 peak)", log_spectral_distance),
    "mcd": ("mcd_db (mel-cepstral distortion, c1-c12, log-amplitude Mel-80 cepstrum via librosa MFCC, no DTW)",
            mel_cepstral_distortion),
    "si_sdr": ("si_sdr_db (scale-invariant SDR, zero-mean, dB)", si_sdr),
    "rmse_ls": ("rmse_ls (waveform RMSE after least-squares scaling, 0.9 peak)", rmse_ls),
    "pesq_wb": ("pesq_wb (pesq package, wide-band, 16 kHz)", pesq_wb),
    "pesq_nb": ("pesq_nb (pesq package, narrow-band, 16 kHz)", pesq_nb),
    "stoi": ("stoi (pystoi, extended=False)", stoi),
    "estoi": ("estoi (pystoi, extended=True)", estoi),
}


def metric_name(key: str) -> str:
    """Stable full name of a metric from its short key (e.g. 'pesq_wb')."""
    if key not in METRICS:
        raise KeyError(f"unknown metric '{key}'; known: {', '.join(METRICS)}")
    return METRICS[key][0]


def _resolve(which: Iterable[str] | None) -> list[str]:
    if which is None:
        return list(METRICS)
    full_to_key = {name: key for key, (name, _) in METRICS.items()}
    keys = []
    for item in which:
        if item in METRICS:
            keys.append(item)
        elif item in full_to_key:
            keys.append(full_to_key[item])
        else:
            raise KeyError(f"unknown metric '{item}'; known: {', '.join(METRICS)}")
    return keys


def compute_all(
    ref_wave: np.ndarray, est_wave: np.ndarray, sr: int, which: Iterable[str] | None = None
) -> dict[str, float]:
    """Every metric (or those in ``which``, short keys or full names) on one pair of waveforms.

    Both signals are scaled to 0.9 peak first; unequal lengths are trimmed to the shorter and
    the count recorded under :data:`TRIMMED` (0.0 when equal). Never raises on bad signals: a
    metric that fails, with a MetricError or any other exception, gives a :class:`MetricNaN` whose
    ``reason`` says why (see :func:`reasons`).

    Returns:
        {full metric name: value}, plus ``TRIMMED``.
    """
    keys = _resolve(which)
    ref = np.ravel(np.asarray(ref_wave, np.float64))
    est = np.ravel(np.asarray(est_wave, np.float64))
    n = min(ref.size, est.size)
    out: dict[str, float] = {TRIMMED: float(abs(ref.size - est.size))}
    try:
        ref, est = check_pair(ref[:n], est[:n], sr)
        ref = peak_normalise(ref)
        est = peak_normalise(est)
        failure = None
    except MetricError as err:
        failure = str(err)
    for key in keys:
        name, fn = METRICS[key]
        if failure is not None:
            out[name] = MetricNaN(failure)
            continue
        try:
            out[name] = fn(ref, est, sr)
        except MetricError as err:
            out[name] = MetricNaN(str(err))
        except Exception as err:  # noqa: BLE001 - one failing metric must not end the table
            first = str(err).splitlines()[0] if str(err) else ""
            out[name] = MetricNaN(f"{key} failed: {type(err).__name__}: {first}".rstrip(": "))
    return out


def reasons(results: Mapping[str, float]) -> dict[str, str]:
    """{metric name: reason} for every NaN in a compute_all result."""
    found = {}
    for name, value in results.items():
        if isinstance(value, float) and math.isnan(value):
            found[name] = getattr(value, "reason", "NaN (no reason recorded)")
    return found


CI_METHOD = "BCa"  # scipy.stats.bootstrap's bias-corrected and accelerated interval


def _rng_keyword(fn: Callable, rng: np.random.Generator) -> dict:
    # scipy >= 1.15 names it rng; older releases only know random_state.
    return {"rng": rng} if "rng" in inspect.signature(fn).parameters else {"random_state": rng}


def mean_interval(values: np.ndarray, n_boot: int = 2000, seed: int | np.random.Generator = 0,
                  level: float = 0.95) -> tuple[float, float]:
    """Bootstrap interval of the mean with ``scipy.stats.bootstrap`` (BCa, ``n_boot`` resamples,
    fixed seed). Constant values give (v, v); where BCa is undefined (a jackknife without
    spread, as with n = 2) the percentile interval is used; fewer than 2 values give NaN."""
    from scipy import stats as sps

    values = np.asarray(values, np.float64)
    if values.size < 2:
        return math.nan, math.nan
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    rng = np.random.default_rng(seed)
    for method in (CI_METHOD, "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DegenerateDataWarning: handled by the fallback
            res = sps.bootstrap((values,), np.mean, n_resamples=n_boot, confidence_level=level,
                                method=method, vectorized=True, **_rng_keyword(sps.bootstrap, rng))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            break
    return low, high


def summarize(
    results: Iterable[Mapping[str, float]], n_boot: int = 2000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Per metric over utterances: mean, median, 95% bootstrap interval of the mean
    (:func:`mean_interval`: scipy.stats.bootstrap, BCa, ``n_boot`` resamples, fixed seed), n
    (finite values) and n_nan (NaN / inf values, excluded).

    Returns:
        {name: {'mean', 'median', 'ci95_low', 'ci95_high', 'n', 'n_nan'}}; statistics are NaN when
        no finite value exists. The interval is the mean's when n >= 2, else NaN.
    """
    results = list(results)
    names: list[str] = []
    for row in results:
        names.extend(k for k in row if k not in names)
    rng = np.random.default_rng(seed)
    summary = {}
    for name in names:
        values = np.array([float(row[name]) for row in results if name in row], np.float64)
        finite = values[np.isfinite(values)]
        stats = {"mean": math.nan, "median": math.nan, "ci95_low": math.nan, "ci95_high": math.nan,
                 "n": int(finite.size), "n_nan": int(values.size - finite.size)}
        if finite.size:
            stats["mean"] = float(finite.mean())
            stats["median"] = float(np.median(finite))
        stats["ci95_low"], stats["ci95_high"] = mean_interval(finite, n_boot, rng)
        summary[name] = stats
    return summary


if __name__ == "__main__":
    _serve()
