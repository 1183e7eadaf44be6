"""WORLD vocoder features (pyworld): analysis, coding, decoding and synthesis, on the project's hop.

A WORLD frame holds a fundamental frequency, a spectral envelope (CheapTrick) and a band
aperiodicity (D4C). For a model the envelope and aperiodicity are coded to a few dimensions
(``pyworld.code_spectral_envelope``: Mel-cepstrum-like coefficients; ``code_aperiodicity``: one
value per 3 kHz band) and F0 becomes a continuous log-F0, linearly interpolated through unvoiced
frames, plus a 0/1 voicing flag: a model then never has to predict the jump to F0 = 0.

The frame period is the STFT hop (``hop_length / sample_rate``, 16 ms for 256 samples at 16 kHz)
and WORLD's frames sit at ``k * hop`` samples like the centred STFT's, so an utterance of ``n``
samples has ``n // hop + 1`` frames in both. Needs the ``pyworld`` package (imported lazily; its
0.3.x releases import ``pkg_resources``, hence ``setuptools<80``).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import NamedTuple

import numpy as np

from dvae_jax import errors

F0_METHODS = ("harvest", "dio")
# The decoded envelope is clipped into this power range before synthesis: the loudest envelope
# bin of full-scale test signals (square wave, chirp) is about 150, digital silence about 3e-17;
# a model's coded envelope far outside the data would otherwise decode to 1e78 or inf.
SP_RANGE = (1e-20, 1e4)
# Coded values a model's output is clipped into (:func:`feature_bounds`); analysed speech and
# full-scale test signals lie well inside (c0 -36.8 for silence to -0.5 for white noise, the other
# coefficients within +-11, the coded aperiodicity in D4C's [-60, 0] dB).
C0_RANGE = (-60.0, 10.0)
CEPSTRUM_LIMIT = 20.0
AP_RANGE = (-60.0, 0.0)


class WorldError(errors.DataError):
    """A signal or feature array WORLD cannot analyse or synthesise, or pyworld missing."""


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """WORLD analysis settings.

    Attributes:
        sample_rate: Hz.
        hop_length: samples between frames (the frame period is ``hop_length / sample_rate``).
        f0_method: 'harvest' (robust, slower) or 'dio' refined by 'stonemask' (fast).
        f0_floor: lowest F0 searched, Hz (also sets CheapTrick's FFT size).
        f0_ceil: highest F0 searched, Hz.
        sp_dims: dimensions of the coded spectral envelope.
    """

    sample_rate: int = 16000
    hop_length: int = 256
    f0_method: str = "harvest"
    f0_floor: float = 71.0
    f0_ceil: float = 800.0
    sp_dims: int = 60

    def __post_init__(self) -> None:
        if self.f0_method not in F0_METHODS:
            raise WorldError(f"WORLD f0_method must be one of {F0_METHODS}, got {self.f0_method!r}")
        if not 0 < self.f0_floor < self.f0_ceil:
            raise WorldError(f"WORLD needs 0 < f0_floor < f0_ceil, got {self.f0_floor}, {self.f0_ceil}")

    @property
    def frame_period_ms(self) -> float:
        return 1000.0 * self.hop_length / self.sample_rate

    @property
    def fft_size(self) -> int:
        return int(_pyworld().get_cheaptrick_fft_size(self.sample_rate, self.f0_floor))

    @property
    def ap_dims(self) -> int:
        return int(_pyworld().get_num_aperiodicities(self.sample_rate))

    @property
    def n_dims(self) -> int:
        """Width of :func:`to_array`'s frames: log-F0, voicing, coded envelope, coded aperiodicity."""
        return 2 + self.sp_dims + self.ap_dims


def from_features(feat_cfg) -> WorldConfig:
    """The WORLD settings of a ``config.FeatureConfig`` with ``kind='world'``."""
    return WorldConfig(sample_rate=feat_cfg.sample_rate, hop_length=feat_cfg.hop_length,
                       f0_method=feat_cfg.world_f0_method, f0_floor=feat_cfg.world_f0_floor,
                       f0_ceil=feat_cfg.world_f0_ceil, sp_dims=feat_cfg.world_env_dims)


class WorldFeatures(NamedTuple):
    """Coded WORLD features of one utterance, ``t`` frames.

    Attributes:
        log_f0: (t,) natural-log F0 in Hz, interpolated through unvoiced frames.
        vuv: (t,) 1.0 where voiced, 0.0 where not.
        coded_sp: (t, sp_dims) coded spectral envelope.
        coded_ap: (t, ap_dims) coded band aperiodicity.
    """

    log_f0: np.ndarray
    vuv: np.ndarray
    coded_sp: np.ndarray
    coded_ap: np.ndarray


def _pyworld():
    try:
        return importlib.import_module("pyworld")
    except ImportError as err:
        raise WorldError(
            f"WORLD features need pyworld: pip install pyworld 'setuptools<80' (import failed: {err})"
        ) from None


def require() -> None:
    """Checks that pyworld can be imported.

    Raises:
        WorldError: pyworld cannot be imported (the message says what to install).
    """
    _pyworld()


def n_frames(n_samples: int, cfg: WorldConfig) -> int:
    """WORLD frames of ``n_samples`` samples: ``n // hop + 1``, as the project's centred STFT."""
    return n_samples // cfg.hop_length + 1


def interpolate_log_f0(f0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F0 in Hz with 0 for unvoiced frames -> (log-F0 linearly interpolated through the unvoiced
    frames, held constant before the first and after the last voiced frame; the voicing flag).
    Without any voiced frame the log-F0 is 0 everywhere (the flag says it is meaningless).
    """
    f0 = np.asarray(f0, np.float64)
    vuv = (f0 > 0).astype(np.float32)
    voiced = np.flatnonzero(f0 > 0)
    if voiced.size == 0:
        return np.zeros(f0.shape, np.float32), vuv
    log_f0 = np.interp(np.arange(f0.size), voiced, np.log(f0[voiced]))
    return log_f0.astype(np.float32), vuv


def f0_from_log(log_f0: np.ndarray, vuv: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Inverse of :func:`interpolate_log_f0`: exp(log-F0) where ``vuv > threshold``, else 0 (a
    model's voicing output is a probability; 0.5 decides)."""
    voiced = np.asarray(vuv) > threshold
    return np.where(voiced, np.exp(np.asarray(log_f0, np.float64)), 0.0)


def _check_wave(wave: np.ndarray, cfg: WorldConfig) -> np.ndarray:
    wave = np.ascontiguousarray(np.asarray(wave, np.float64))
    if wave.ndim != 1 or wave.size < 2 * cfg.hop_length:
        raise WorldError(f"WORLD analysis needs a 1-D wave of at least {2 * cfg.hop_length} samples, "
                         f"got shape {wave.shape}")
    if not np.all(np.isfinite(wave)):
        raise WorldError(f"wave holds {int(np.sum(~np.isfinite(wave)))} non-finite samples")
    return wave


def analyse_raw(wave: np.ndarray, cfg: WorldConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uncoded WORLD analysis: (f0 (t,) Hz with 0 = unvoiced, envelope (t, fft/2+1), aperiodicity
    (t, fft/2+1)), ``t = n_frames(len(wave))``.

    Raises:
        WorldError: pyworld missing, or a wave that is not 1-D, finite and two hops long.
    """
    pw = _pyworld()
    x = _check_wave(wave, cfg)
    fs, period = cfg.sample_rate, cfg.frame_period_ms
    if cfg.f0_method == "harvest":
        f0, times = pw.harvest(x, fs, f0_floor=cfg.f0_floor, f0_ceil=cfg.f0_ceil, frame_period=period)
    else:
        f0, times = pw.dio(x, fs, f0_floor=cfg.f0_floor, f0_ceil=cfg.f0_ceil, frame_period=period)
        f0 = pw.stonemask(x, f0, times, fs)
    sp = pw.cheaptrick(x, f0, times, fs, f0_floor=cfg.f0_floor, fft_size=cfg.fft_size)
    ap = pw.d4c(x, f0, times, fs, fft_size=cfg.fft_size)
    return tuple(_fit_frames(a, n_frames(x.size, cfg)) for a in (f0, sp, ap))


def _fit_frames(a: np.ndarray, t: int) -> np.ndarray:
    """``a`` with exactly ``t`` frames: WORLD counts frames as ``1 + int(seconds / period)`` in
    floating point, which could fall one short of ``n // hop + 1``; the last frame is repeated."""
    if a.shape[0] >= t:
        return a[:t]
    return np.concatenate([a, np.repeat(a[-1:], t - a.shape[0], axis=0)], axis=0)


def analyse(wave: np.ndarray, cfg: WorldConfig) -> WorldFeatures:
    """Waveform -> coded WORLD features, ``n_frames(len(wave))`` frames.

    Raises:
        WorldError: as :func:`analyse_raw`.
    """
    pw = _pyworld()
    f0, sp, ap = analyse_raw(wave, cfg)
    log_f0, vuv = interpolate_log_f0(f0)
    coded_sp = pw.code_spectral_envelope(sp, cfg.sample_rate, cfg.sp_dims)
    coded_ap = pw.code_aperiodicity(ap, cfg.sample_rate)
    return WorldFeatures(log_f0, vuv, coded_sp.astype(np.float32), coded_ap.astype(np.float32))


def decode(features: WorldFeatures, cfg: WorldConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coded features -> (f0, envelope, aperiodicity) as pyworld.synthesize takes them.

    Raises:
        WorldError: shapes that disagree with each other or with ``cfg``, or non-finite values.
    """
    pw = _pyworld()
    t = np.asarray(features.log_f0).shape[0]
    want = {"log_f0": (t,), "vuv": (t,), "coded_sp": (t, cfg.sp_dims), "coded_ap": (t, cfg.ap_dims)}
    for name, shape in want.items():
        value = np.asarray(getattr(features, name))
        if value.shape != shape:
            raise WorldError(f"WORLD feature '{name}' must have shape {shape}, got {value.shape}")
        if not np.all(np.isfinite(value)):
            raise WorldError(f"WORLD feature '{name}' holds non-finite values")
    f0 = f0_from_log(features.log_f0, features.vuv)
    f0 = np.where(f0 > 0, np.clip(f0, cfg.f0_floor, cfg.f0_ceil), 0.0)  # a model's F0 beyond the search range
    coded_sp = np.ascontiguousarray(features.coded_sp, np.float64)
    coded_ap = np.ascontiguousarray(features.coded_ap, np.float64)
    with np.errstate(over="ignore"):  # inf is clipped just below
        sp = pw.decode_spectral_envelope(coded_sp, cfg.sample_rate, cfg.fft_size)
    sp = np.clip(np.nan_to_num(sp, nan=SP_RANGE[0]), *SP_RANGE)
    ap = np.clip(pw.decode_aperiodicity(coded_ap, cfg.sample_rate, cfg.fft_size), 0.0, 1.0)
    return f0, np.ascontiguousarray(sp), np.ascontiguousarray(ap)


def synthesise(features: WorldFeatures, cfg: WorldConfig, length: int | None = None) -> np.ndarray:
    """Coded features -> float32 waveform by WORLD synthesis.

    Args:
        features: as :func:`analyse` returns (or a model's prediction of them).
        cfg: the analysis settings the features came from.
        length: output samples (the original's length); None gives ``hop * (frames - 1)``.

    Raises:
        WorldError: as :func:`decode`.
    """
    f0, sp, ap = decode(features, cfg)
    wave = _pyworld().synthesize(
        np.ascontiguousarray(f0), np.ascontiguousarray(sp), np.ascontiguousarray(ap),
        cfg.sample_rate, cfg.frame_period_ms,
    )
    n = cfg.hop_length * (len(f0) - 1) if length is None else int(length)
    wave = np.nan_to_num(np.clip(wave[:n], -1e3, 1e3), nan=0.0)  # never NaN or past float32
    return np.pad(wave, (0, n - wave.size)).astype(np.float32)


def to_array(features: WorldFeatures) -> np.ndarray:
    """(t, 2 + sp_dims + ap_dims) float32: log-F0, voicing, coded envelope, coded aperiodicity."""
    return np.concatenate([
        np.asarray(features.log_f0, np.float32)[:, None], np.asarray(features.vuv, np.float32)[:, None],
        np.asarray(features.coded_sp, np.float32), np.asarray(features.coded_ap, np.float32),
    ], axis=1)


def from_array(array: np.ndarray, cfg: WorldConfig) -> WorldFeatures:
    """Inverse of :func:`to_array`.

    Raises:
        WorldError: not (frames, cfg.n_dims).
    """
    array = np.asarray(array, np.float32)
    if array.ndim != 2 or array.shape[1] != cfg.n_dims:
        raise WorldError(f"WORLD features must be (frames, {cfg.n_dims}), got shape {array.shape}")
    sp_end = 2 + cfg.sp_dims
    return WorldFeatures(array[:, 0], array[:, 1], array[:, 2:sp_end], array[:, sp_end:])


def feature_bounds(cfg: WorldConfig) -> tuple[np.ndarray, np.ndarray]:
    """(lowest, highest) per dimension of :func:`to_array`'s frames, (n_dims,) each: log-F0 within
    [0, log f0_ceil] (0: an utterance without voiced frames; :func:`decode` clips voiced F0 into
    [f0_floor, f0_ceil]), voicing in [0, 1], the envelope's first coefficient within
    ``C0_RANGE`` and the others within +-``CEPSTRUM_LIMIT``, the aperiodicity within ``AP_RANGE``.
    Analysed speech lies inside; a model's output is clipped into them before synthesis."""
    lo = np.concatenate([[0.0, 0.0, C0_RANGE[0]],
                         np.full(cfg.sp_dims - 1, -CEPSTRUM_LIMIT), np.full(cfg.ap_dims, AP_RANGE[0])])
    hi = np.concatenate([[np.log(cfg.f0_ceil), 1.0, C0_RANGE[1]],
                         np.full(cfg.sp_dims - 1, CEPSTRUM_LIMIT), np.full(cfg.ap_dims, AP_RANGE[1])])
    return lo.astype(np.float32), hi.astype(np.float32)


def sanitise(array: np.ndarray, cfg: WorldConfig) -> np.ndarray:
    """Any (frames, n_dims) array -> one :func:`synthesise` accepts: NaN and -inf become the
    lower bound (silence, unvoiced), +inf the upper, everything clipped into :func:`feature_bounds`.

    Raises:
        WorldError: not (frames, cfg.n_dims).
    """
    array = np.asarray(array, np.float32)
    if array.ndim != 2 or array.shape[1] != cfg.n_dims:
        raise WorldError(f"WORLD features must be (frames, {cfg.n_dims}), got shape {array.shape}")
    lo, hi = feature_bounds(cfg)
    lo_b, hi_b = np.broadcast_to(lo, array.shape), np.broadcast_to(hi, array.shape)
    array = np.where(np.isnan(array) | (array == -np.inf), lo_b, array)
    array = np.where(array == np.inf, hi_b, array)
    return np.clip(array, lo, hi).astype(np.float32)
