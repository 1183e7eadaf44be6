"""Typed configuration: model, features, data, training; presets; dotted-key overrides.

Every config dataclass checks itself on construction (``__post_init__``), however it was built:
in Python, from a JSON file or from ``--set KEY=VALUE`` overrides. Each field has a :class:`Rule`
(its type, the values it allows and the sentence that says so); a bad value is a
:class:`ConfigError` of one line, ``model.z_dim=0: must be an integer >= 1``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
import os
import pathlib
import re
import typing
from collections.abc import Callable
from typing import Any

from dvae_jax.errors import ConfigError  # re-exported: config.ConfigError

# The accepted names of every choice; the modules that act on them (models.py, layers.py,
# schedules.py, train.py, generate.py, data/, audio/) accept exactly these.
MODELS = ("vrnn", "srnn", "vae", "dkf", "storn", "rvae", "dsae")
# Models none of whose recurrences reads a frame: nothing for scheduled sampling to feed back.
NON_FEEDBACK_MODELS = ("vae", "dkf", "rvae", "dsae")
RNN_CELLS = ("lstm", "gru")
ACTIVATIONS = ("tanh", "relu", "gelu", "silu", "clipped_leaky")
PRIORS = ("gaussian", "student_t")
KL_ESTIMATORS = ("mc", "entropy")
LIKELIHOODS = ("itakura_saito", "gaussian", "bernoulli")
FEATURE_KINDS = ("mel", "stft", "world")
WORLD_F0_METHODS = ("harvest", "dio")  # audio/world.py F0_METHODS
WINDOWS = ("sine", "hann")
CORPORA = ("mini", "vctk", "folder", "tfds", "asterisk", "polyphonic")
POLYPHONIC_SETS = ("jsb", "nottingham", "muse", "piano")  # data/polyphonic.py (SRNN paper's splits)
SPLIT_BY = ("speaker", "utterance")
BATCHING = ("crops", "chunks", "streams")  # streams: piano-roll chunks in order, carry kept
MATMUL_DTYPES = ("float32", "bfloat16")  # model.matmul_dtype
LSTM_IMPLS = ("scan", "cudnn", "auto")  # model.lstm_impl
MODEL_INITS = ("torch", "paper")  # models.init: PyTorch's uniform default | the SRNN code's
MICS = ("mic1", "mic2")
OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "warmup_cosine", "warmup_linear", "exponential", "step", "plateau")
KL_SCHEDULES = ("none", "review", "linear", "sigmoid", "cyclical")
# train.kl_convention: how the epoch lines print the KL and -ELBO: "true" (the closed-form KL) |
# "review" (the review's code: its KL omits the -1 inside the sum, +z_dim/2 nats per frame)
KL_CONVENTIONS = ("true", "review")
SS_PER = ("frame", "sequence")
MAX_SAMPLE_RATE = 384_000  # the highest rate audio interfaces record; above it is a typo


# --------------------------------------------------------------------------------------------
# Rules: how one field is read and checked


@dataclasses.dataclass(frozen=True)
class Rule:
    """How one config field is read and checked.

    Attributes:
        kind: ``int``, ``float``, ``bool``, ``str``, ``ints`` or ``strs`` (tuples of those).
        allowed: completes "must be ...", e.g. "an integer >= 1".
        test: True when a value of the right kind is allowed.
    """

    kind: str
    allowed: str
    test: Callable[[Any], bool] = lambda v: True

    def check(self, value: Any) -> Any:
        """The value normalised to the field's type (list -> tuple, int -> float).

        Raises:
            ValueError: wrong type or a value the rule does not allow.
        """
        value = _as_kind(value, self.kind)
        if not self.test(value):
            raise ValueError(value)
        return value

    def parse(self, text: str) -> Any:
        """A command-line string (``--set``) read as the field's type, not yet range-checked.

        Raises:
            ValueError: the text is not of the field's type (``2.5`` for an integer).
        """
        text = text.strip()
        if self.kind in ("ints", "strs"):
            if text[:1] in "[(" and text[-1:] in "])":
                text = text[1:-1]
            items = [t.strip().strip("'\"") for t in text.split(",")]
            items = [t for t in items if t]
            return tuple(_parse_scalar(t, self.kind[:-1]) for t in items)
        return _parse_scalar(text, self.kind)


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _as_kind(value: Any, kind: str) -> Any:
    if kind == "int" and _is_int(value):
        return int(value)
    if kind == "float" and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "str" and isinstance(value, str):
        return value
    if kind in ("ints", "strs") and isinstance(value, (list, tuple)):
        return tuple(_as_kind(v, kind[:-1]) for v in value)
    raise ValueError(value)


def _parse_scalar(text: str, kind: str) -> Any:
    if kind == "int":
        try:
            return int(text, 10)
        except ValueError:
            number = float(text)  # 1e3 is 1000; 2.5, nan and inf are not integers
            if not number.is_integer() or abs(number) > 2**53:
                raise ValueError(text) from None
            return int(number)
    if kind == "float":
        return float(text)
    if kind == "bool":
        if text.lower() not in ("true", "false"):
            raise ValueError(text)
        return text.lower() == "true"
    return text


def integer(lo: int, hi: int | None = None) -> Rule:
    """An integer >= lo (and <= hi)."""
    if hi is None:
        return Rule("int", f"an integer >= {lo}", lambda v: v >= lo)
    return Rule("int", f"an integer in [{lo}, {hi}]", lambda v: lo <= v <= hi)


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False) -> Rule:
    """A finite number in the given (half-)open or closed interval."""
    def test(v: float) -> bool:
        return (math.isfinite(v) and (lo is None or (v > lo if lo_open else v >= lo))
                and (hi is None or (v < hi if hi_open else v <= hi)))

    if lo is not None and hi is not None:
        allowed = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        allowed = f"a finite number {'>' if lo_open else '>='} {lo:g}"
    elif hi is not None:
        allowed = f"a finite number {'<' if hi_open else '<='} {hi:g}"
    else:
        allowed = "a finite number"
    return Rule("float", allowed, test)


def choice(options: tuple[str, ...]) -> Rule:
    """One of ``options``."""
    return Rule("str", f"one of {', '.join(options)}", lambda v: v in options)


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


FLAG = Rule("bool", "true or false")
TEXT = Rule("str", "a string")
TEXTS = Rule("strs", "a list of strings (e.g. a,b; empty for none)")
SIZES = Rule("ints", "a list of integers >= 1 (e.g. 256,128; empty for none)",
             lambda v: all(n >= 1 for n in v))
REGEX = Rule("str", "a valid regular expression (Python re syntax)", _compiles)
FRACTION = number(0.0, 1.0, hi_open=True)
EPOCHS = number(0.0)


def _show(value: Any) -> str:
    """A value as a user would type it after ``--set KEY=``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value if value and not any(c.isspace() for c in value) else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))  # -1, as typed, rather than -1.0
    return str(value)


def _bad(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{key}={_show(value)}: must be {allowed}")


def _bad_type(key: str, value: Any, rule: Rule) -> ConfigError:
    # 3.0 given for an integer is shown as 3.0: the type, not the number, is what is wrong.
    shown = repr(value) if isinstance(value, float) and rule.kind != "float" else _show(value)
    return ConfigError(f"{key}={shown}: must be {rule.allowed}")


def _validate(obj: Any, section: str, rules: dict[str, Rule]) -> None:
    """Checks and normalises every field of a frozen config dataclass in place."""
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        rule = rules[field.name]
        try:
            normalised = rule.check(value)
        except ValueError:
            raise _bad_type(f"{section}.{field.name}", value, rule) from None
        if normalised is not value:
            object.__setattr__(obj, field.name, normalised)


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """A check that involves more than one field."""
    if not ok:
        raise _bad(key, value, allowed)


# --------------------------------------------------------------------------------------------
# The configs


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Layout of a VRNN or SRNN. Field names follow the review's configuration files.

    Every ``dense_*`` entry is the list of hidden layer sizes of that MLP (empty = identity).
    """

    model: str = "vrnn"  # "vrnn" | "srnn"
    x_dim: int = 513
    z_dim: int = 16
    activation: str = "tanh"  # "tanh" | "relu" | "gelu" | "silu" | "clipped_leaky" (the SRNN code's)
    dropout_p: float = 0.0
    # VRNN (dense_x is also DSAE's, whose default is empty: see MODEL_DEFAULTS)
    dense_x: tuple[int, ...] | None = None
    dense_z: tuple[int, ...] = (32, 64)
    dense_hx_z: tuple[int, ...] = ()
    dense_hz_x: tuple[int, ...] = ()  # decoder MLP (both models; the review's SRNN uses (256,))
    dense_h_z: tuple[int, ...] = ()
    dim_rnn: int = 128
    num_rnn: int = 1
    # SRNN
    dense_x_h: tuple[int, ...] = (256,)
    dense_hx_g: tuple[int, ...] = (256,)
    dense_gz_z: tuple[int, ...] = (64, 32)
    dense_hz_z: tuple[int, ...] = (64, 32)
    dim_rnn_g: int = 128
    resq: bool = False  # Fraccaro's residual posterior mean
    # The backward recurrence reads x_t through MLP_x_h (the SRNN code shares its x and u
    # embeddings) instead of the raw frame: g_t = LSTM_g(MLP_hx_g([h_t, MLP_x_h(x_t)]), g_{t+1}).
    share_x_embedding: bool = False
    # Both models: the posterior's and the prior's mean and log-variance from two MLPs each
    # (``posterior`` and ``posterior_logvar``, ``prior`` and ``prior_logvar``), as the SRNN code
    # has them, instead of two linear heads on one shared MLP (the review's layout).
    separate_heads: bool = False
    rnn_cell: str = "lstm"  # every recurrence: "lstm" (the review's) | "gru" (the SRNN code's)
    # The review's other models (dvae/model/*.py, config/speech/cfg_*.ini; docs/models.md). A key
    # several models read with different review defaults (dense_x_gx, dense_g_z, dense_z_h,
    # dense_h_x, dense_x) is None until the config is built, then the chosen model's default.
    # VAE
    dense_x_z: tuple[int, ...] = (128,)  # encoder MLP; the decoder's hidden sizes are its reverse
    # DKF
    dense_x_gx: tuple[int, ...] | None = None  # DKF (256,), RVAE ()
    dim_rnn_gx: int = 128
    num_rnn_gx: int = 1
    bidir_gx: bool = False
    dense_ztm1_g: tuple[int, ...] = (32,)
    dense_g_z: tuple[int, ...] | None = None  # DKF (32,), STORN (64, 32), RVAE ()
    dense_z_x: tuple[int, ...] = (32, 64, 128, 256)
    # STORN (and dim_rnn_g, above)
    dense_x_g: tuple[int, ...] = (256,)
    num_rnn_g: int = 1
    dense_z_h: tuple[int, ...] | None = None  # STORN (32, 64), RVAE ()
    dense_xtm1_h: tuple[int, ...] = (256,)
    dense_h_x: tuple[int, ...] | None = None  # STORN (256,), RVAE ()
    dim_rnn_h: int = 128
    num_rnn_h: int = 1
    # RVAE (causal: bidir_g_x and bidir_h false; non-causal: both true)
    dim_rnn_g_x: int = 128
    num_rnn_g_x: int = 1
    bidir_g_x: bool = False
    dense_z_gz: tuple[int, ...] = ()
    dim_rnn_g_z: int = 128
    num_rnn_g_z: int = 1
    bidir_h: bool = False
    # DSAE (v: the sequence-level latent)
    v_dim: int = 16
    dim_rnn_gv: int = 128
    num_rnn_gv: int = 1
    dense_gv_v: tuple[int, ...] = ()
    dense_xv_gxv: tuple[int, ...] = ()
    dim_rnn_gxv: int = 128
    num_rnn_gxv: int = 1
    dense_gxv_gz: tuple[int, ...] = ()
    dim_rnn_gz: int = 128
    num_rnn_gz: int = 1
    dim_rnn_prior: int = 128
    num_rnn_prior: int = 1
    dense_vz_x: tuple[int, ...] = (32, 64, 128, 256)
    # Prior over z_t
    prior: str = "gaussian"  # "gaussian" | "student_t"
    nu: float = 5.0  # Student-t degrees of freedom (initial value when learned)
    learn_nu: bool = False
    kl_estimator: str = "mc"  # Student-t KL: "mc" (log q - log p) | "entropy" (-H[q] - log p)
    # Likelihood of x_t
    likelihood: str = "itakura_saito"  # "itakura_saito" | "gaussian" | "bernoulli" (logits)
    learn_x_var: bool = True  # gaussian likelihood: decoder also outputs a log-variance
    fixed_x_logvar: float = 0.0  # gaussian likelihood with a fixed variance
    logvar_clip: float = 40.0  # every log-variance is clipped to [-clip, clip] (no inf / NaN)
    # Scan
    unroll: int = 1
    # Speed. matmul_dtype: "float32" | "bfloat16": the weights' products take bfloat16 inputs
    # with float32 accumulation, forward and backward (parameters, optimiser state, activations
    # and the loss stay float32; twice the matmul rate on CPUs with AVX512-BF16 and on GPUs).
    matmul_dtype: str = "float32"
    # SRNN's data-driven LSTMs (LSTM_h, LSTM_g, teacher-forced): "scan" (lax.scan, any backend)
    # | "cudnn" (jax.experimental.rnn on a CUDA GPU; LSTM cells, float32 only, not in
    # populations) | "auto" (cudnn where it can run, else scan). VRNN ignores it.
    lstm_impl: str = "scan"
    # Initialisation (models.init): "torch" (PyTorch's uniform default) | "paper" (the SRNN code's:
    # Glorot-normal dense kernels, orthogonal recurrent blocks per gate, zero biases)
    init: str = "torch"

    def __post_init__(self) -> None:
        for key, defaults in MODEL_DEFAULTS.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, defaults.get(self.model, defaults["*"]))
        _validate(self, "model", MODEL_RULES)


# The review's defaults of the keys several models read with different defaults ("*": the others).
MODEL_DEFAULTS: dict[str, dict[str, tuple[int, ...]]] = {
    "dense_x": {"*": (256,), "dsae": ()},
    "dense_x_gx": {"*": (256,), "rvae": ()},
    "dense_g_z": {"*": (32,), "storn": (64, 32), "rvae": ()},
    "dense_z_h": {"*": (32, 64), "rvae": ()},
    "dense_h_x": {"*": (256,), "rvae": ()},
}

MODEL_RULES: dict[str, Rule] = {
    "model": choice(MODELS), "x_dim": integer(1), "z_dim": integer(1),
    "activation": choice(ACTIVATIONS), "dropout_p": number(0.0, 1.0, hi_open=True),
    "dense_x": SIZES, "dense_z": SIZES, "dense_hx_z": SIZES, "dense_hz_x": SIZES, "dense_h_z": SIZES,
    "dim_rnn": integer(1), "num_rnn": integer(1),
    "dense_x_h": SIZES, "dense_hx_g": SIZES, "dense_gz_z": SIZES, "dense_hz_z": SIZES,
    "dim_rnn_g": integer(1), "resq": FLAG, "share_x_embedding": FLAG, "separate_heads": FLAG, "rnn_cell": choice(RNN_CELLS),
    "prior": choice(PRIORS), "nu": number(0.0, lo_open=True), "learn_nu": FLAG,
    "kl_estimator": choice(KL_ESTIMATORS),
    "likelihood": choice(LIKELIHOODS), "learn_x_var": FLAG, "fixed_x_logvar": number(),
    "logvar_clip": number(0.0, lo_open=True), "unroll": integer(1), "init": choice(MODEL_INITS),
    "matmul_dtype": choice(MATMUL_DTYPES), "lstm_impl": choice(LSTM_IMPLS),
    "dense_x_z": SIZES, "dense_x_gx": SIZES, "dim_rnn_gx": integer(1), "num_rnn_gx": integer(1),
    "bidir_gx": FLAG, "dense_ztm1_g": SIZES, "dense_g_z": SIZES, "dense_z_x": SIZES,
    "dense_x_g": SIZES, "num_rnn_g": integer(1), "dense_z_h": SIZES, "dense_xtm1_h": SIZES,
    "dense_h_x": SIZES, "dim_rnn_h": integer(1), "num_rnn_h": integer(1),
    "dim_rnn_g_x": integer(1), "num_rnn_g_x": integer(1), "bidir_g_x": FLAG, "dense_z_gz": SIZES,
    "dim_rnn_g_z": integer(1), "num_rnn_g_z": integer(1), "bidir_h": FLAG,
    "v_dim": integer(1), "dim_rnn_gv": integer(1), "num_rnn_gv": integer(1), "dense_gv_v": SIZES,
    "dense_xv_gxv": SIZES, "dim_rnn_gxv": integer(1), "num_rnn_gxv": integer(1),
    "dense_gxv_gz": SIZES, "dim_rnn_gz": integer(1), "num_rnn_gz": integer(1),
    "dim_rnn_prior": integer(1), "num_rnn_prior": integer(1), "dense_vz_x": SIZES,
}


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Acoustic features. ``kind='stft'`` is the review's STFT power; ``'mel'`` is log-Mel;
    ``'world'`` is the WORLD vocoder's coded frames (audio/world.py): log-F0, voicing, coded
    spectral envelope, coded aperiodicity, on the STFT's hop. The ``world_*`` fields apply to it
    only (and enter the feature cache's key only then)."""

    kind: str = "mel"  # "mel" | "stft" | "world"
    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 256
    window: str = "sine"  # "sine" (the review's) | "hann"
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0
    trim_db: float = 30.0  # librosa.effects.trim top_db; 0 disables trimming
    log_floor: float = 1e-5  # log-Mel: log(max(mel_power, floor))
    power_floor: float = 1e-10  # STFT power: max(power, floor), keeps Itakura-Saito finite
    normalize: bool = True  # log-Mel and WORLD: per-band mean/std from the training split
    world_f0_method: str = "harvest"  # "harvest" (robust, ~0.6 s per s of audio) | "dio" (~20x faster)
    world_env_dims: int = 60  # coded spectral envelope dimensions
    world_f0_floor: float = 71.0  # Hz; also sets CheapTrick's FFT size
    world_f0_ceil: float = 800.0  # Hz

    def __post_init__(self) -> None:
        _validate(self, "features", FEATURE_RULES)
        _require(self.win_length <= self.n_fft, "features.win_length", self.win_length,
                 f"<= features.n_fft ({self.n_fft})")
        _require(self.hop_length <= self.win_length, "features.hop_length", self.hop_length,
                 f"<= features.win_length ({self.win_length})")
        if self.kind == "mel":
            nyquist = self.sample_rate / 2
            _require(self.fmax <= nyquist, "features.fmax", self.fmax,
                     f"<= half of features.sample_rate ({nyquist:g}) for Mel features")
            _require(self.fmin < self.fmax, "features.fmin", self.fmin,
                     f"< features.fmax ({self.fmax:g})")
        if self.kind == "world":
            self._check_world()

    def _check_world(self) -> None:
        """The settings pyworld can analyse and code (checked without importing it)."""
        _require(self.sample_rate >= WORLD_MIN_SAMPLE_RATE, "features.sample_rate", self.sample_rate,
                 f">= {WORLD_MIN_SAMPLE_RATE} for features.kind=world (pyworld codes the aperiodicity in "
                 "3 kHz bands; below that rate there is none)")
        _require(self.world_f0_floor < self.world_f0_ceil, "features.world_f0_floor", self.world_f0_floor,
                 f"< features.world_f0_ceil ({self.world_f0_ceil:g})")
        nyquist = self.sample_rate / 2
        _require(self.world_f0_ceil < nyquist, "features.world_f0_ceil", self.world_f0_ceil,
                 f"< half of features.sample_rate ({nyquist:g})")
        # pyworld's coder aborts the process (malloc) beyond half of CheapTrick's FFT size
        most = world_fft_size(self.sample_rate, self.world_f0_floor) // 2
        _require(self.world_env_dims <= most, "features.world_env_dims", self.world_env_dims,
                 f"<= {most} (half of CheapTrick's FFT size at {self.sample_rate} Hz with "
                 f"world_f0_floor {self.world_f0_floor:g})")

    @property
    def n_bins(self) -> int:
        if self.kind == "world":  # log-F0, voicing, coded envelope, coded aperiodicity
            return 2 + self.world_env_dims + world_ap_dims(self.sample_rate)
        return self.n_mels if self.kind == "mel" else self.n_fft // 2 + 1


WORLD_MIN_SAMPLE_RATE = 12000


def world_ap_dims(sample_rate: int) -> int:
    """Bands of pyworld's coded aperiodicity: ``get_num_aperiodicities`` (WORLD's formula, one band
    per 3 kHz up to 15 kHz: 1 at 16 kHz, 5 at 44.1 kHz), computed without importing pyworld."""
    return int(min(15000.0, sample_rate / 2.0 - 3000.0) / 3000.0)


def world_fft_size(sample_rate: int, f0_floor: float) -> int:
    """CheapTrick's FFT size, pyworld's ``get_cheaptrick_fft_size`` (1024 at 16 kHz, floor 71 Hz)."""
    return int(2 ** (1 + int(math.log(3.0 * sample_rate / f0_floor + 1) / math.log(2))))


FEATURE_RULES: dict[str, Rule] = {
    "kind": choice(FEATURE_KINDS), "sample_rate": integer(1, MAX_SAMPLE_RATE),
    "n_fft": integer(1), "win_length": integer(1), "hop_length": integer(1),
    "window": choice(WINDOWS), "n_mels": integer(1),
    "fmin": number(0.0), "fmax": number(0.0, lo_open=True), "trim_db": number(0.0),
    "log_floor": number(0.0, lo_open=True), "power_floor": number(0.0, lo_open=True),
    "normalize": FLAG,
    "world_f0_method": choice(WORLD_F0_METHODS), "world_env_dims": integer(2),
    "world_f0_floor": number(0.0, lo_open=True), "world_f0_ceil": number(0.0, lo_open=True),
}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Corpus, selection, split and batching."""

    corpus: str = "mini"  # "mini" | "vctk" | "folder" | "tfds" | "asterisk" | "polyphonic"
    root: str = ""  # corpus location ("" = the default for mini: <cache_dir>/mini)
    cache_dir: str = "cache"
    n_speakers: int = 0  # 0 = all
    speakers: tuple[str, ...] = ()
    utts_per_speaker: int = 0  # 0 = all
    split_by: str = "speaker"  # "speaker" | "utterance"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    seq_len: int = 50  # frames per training sequence
    # "crops" (random crops) | "chunks" (the review's non-overlapping chunks, shuffled) | "streams"
    # (piano-rolls: the chunks in the file's order, the recurrent state carried between batches)
    batching: str = "crops"
    # Corpus reading and selection (dvae_jax.data)
    mic: str = "mic1"  # vctk 0.92: "mic1" | "mic2"
    speaker_pattern: str = ""  # folder: regex on the relative path; group 'speaker' (or 1) names it
    transcripts: str = ""  # folder: file of "<id or relative path><tab or |><text>" lines
    genders: tuple[str, ...] = ()  # keep speakers of these genders (speaker-info), e.g. F
    accents: tuple[str, ...] = ()  # keep speakers of these accents (speaker-info), e.g. Scottish
    require_text: bool = False  # skip utterances without a transcript
    downmix: bool = False  # average multi-channel files to mono instead of skipping them
    mini_speakers: int = 12  # the embedded corpus built on first use
    mini_sentences: int = 40
    workers: int = 0  # feature-extraction threads (0 = number of CPUs)
    set_name: str = ""  # polyphonic: jsb | nottingham | muse | piano ("" for the other corpora)

    def __post_init__(self) -> None:
        _validate(self, "data", DATA_RULES)
        if self.corpus == "polyphonic":
            _require(self.set_name in POLYPHONIC_SETS, "data.set_name", self.set_name,
                     f"one of {', '.join(POLYPHONIC_SETS)} with data.corpus=polyphonic")
        _require(self.val_fraction + self.test_fraction < 1, "data.test_fraction", self.test_fraction,
                 f"< 1 - data.val_fraction ({self.val_fraction:g}): the training split needs the rest")
        if self.batching == "streams":
            _require(self.corpus == "polyphonic", "data.batching", self.batching,
                     "crops or chunks with data.corpus=" + self.corpus
                     + " (streams is the piano-roll protocol: data.corpus=polyphonic)")
        if self.batching == "chunks":
            _require(self.seq_len >= 2, "data.seq_len", self.seq_len,
                     "an integer >= 2 with data.batching=chunks")


DATA_RULES: dict[str, Rule] = {
    "corpus": choice(CORPORA), "root": TEXT, "cache_dir": TEXT,
    "n_speakers": integer(0), "speakers": TEXTS, "utts_per_speaker": integer(0),
    "split_by": choice(SPLIT_BY), "val_fraction": FRACTION, "test_fraction": FRACTION,
    "seed": integer(0), "seq_len": integer(1), "batching": choice(BATCHING),
    "mic": choice(MICS), "speaker_pattern": REGEX, "transcripts": TEXT,
    "genders": TEXTS, "accents": TEXTS, "require_text": FLAG, "downmix": FLAG,
    "mini_speakers": integer(1), "mini_sentences": integer(1), "workers": integer(0),
    "set_name": Rule("str", f"empty or one of {', '.join(POLYPHONIC_SETS)}",
                     lambda v: v in ("", *POLYPHONIC_SETS)),
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimizer, schedules, annealing, stopping and checkpointing."""

    seed: int = 0
    batch_size: int = 32
    epochs: int = 20
    max_steps: int = 0  # 0 = no limit beyond epochs
    optimizer: str = "adam"  # "adam" | "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.0
    adam_eps: float = 1e-8  # Adam's epsilon (optax's default; the SRNN code's is 1e-4)
    lr_schedule: str = "constant"  # constant | warmup_cosine | warmup_linear | exponential | step | plateau
    warmup_epochs: float = 0.0
    decay_rate: float = 0.5  # exponential / step decay factor
    decay_epochs: float = 10.0  # exponential / step decay period
    plateau_patience: int = 5
    plateau_factor: float = 0.5
    clip_grad_norm: float = 0.0  # 0 = no clipping
    kl_schedule: str = "review"  # none | review | linear | sigmoid | cyclical
    kl_warmup_epochs: float = 10.0  # review: epochs at weight 0 before the steps begin
    kl_anneal_epochs: float = 40.0  # length of the ramp (review: 0.2 per 10 epochs -> 40)
    kl_cycles: int = 4
    kl_start: float = 0.0  # KL weight at the start: kl_start + (1 - kl_start) * ramp (SRNN code: 0.2)
    beta: float = 1.0
    free_bits: float = 0.0  # per-dimension KL floor (nats per frame); 0 = off
    scheduled_sampling: float = 0.0  # max probability of feeding the model's own frame (0 = off)
    ss_start_epochs: float = 0.0  # scheduled sampling: ramp start
    ss_ramp_epochs: float = 20.0  # scheduled sampling: epochs to reach the max probability
    ss_per: str = "frame"  # scheduled sampling: "frame" | "sequence"
    early_stop_patience: int = 50  # epochs without improvement after the KL warm-up
    nan_patience: int = 5  # non-finite steps in a row before rollback
    nan_max_rollbacks: int = 3
    diverge_patience: int = 5  # epochs in a row with validation past the bound below (0 = off)
    diverge_margin: float = 1.0  # bound: lowest validation + margin * max(1, |lowest|)
    checkpoint_every_steps: int = 0  # 0 = end of every epoch only
    prefetch: int = 2
    log_every_steps: int = 10  # 0 = no per-step log lines
    kl_convention: str = "true"  # epoch lines: "true" KL | "review" (+z_dim/2, as its code logs)

    def __post_init__(self) -> None:
        _validate(self, "train", TRAIN_RULES)
        if self.kl_schedule == "review":  # its steps are kl_anneal_epochs / 4 epochs long
            _require(self.kl_anneal_epochs > 0, "train.kl_anneal_epochs", self.kl_anneal_epochs,
                     "> 0 with train.kl_schedule=review")


TRAIN_RULES: dict[str, Rule] = {
    "seed": integer(0), "batch_size": integer(1), "epochs": integer(1), "max_steps": integer(0),
    "optimizer": choice(OPTIMIZERS), "lr": number(0.0, lo_open=True), "weight_decay": number(0.0),
    "adam_eps": number(0.0, lo_open=True), "lr_schedule": choice(LR_SCHEDULES), "warmup_epochs": EPOCHS,
    "decay_rate": number(0.0, 1.0, lo_open=True), "decay_epochs": number(0.0, lo_open=True),
    "plateau_patience": integer(1), "plateau_factor": number(0.0, 1.0, lo_open=True, hi_open=True),
    "clip_grad_norm": number(0.0),
    "kl_schedule": choice(KL_SCHEDULES), "kl_warmup_epochs": EPOCHS, "kl_anneal_epochs": EPOCHS,
    "kl_cycles": integer(1), "kl_start": number(0.0, 1.0), "beta": number(0.0), "free_bits": number(0.0),
    "scheduled_sampling": number(0.0, 1.0), "ss_start_epochs": EPOCHS, "ss_ramp_epochs": EPOCHS,
    "ss_per": choice(SS_PER), "early_stop_patience": integer(1), "nan_patience": integer(1),
    "nan_max_rollbacks": integer(0), "diverge_patience": integer(0),
    "diverge_margin": number(0.0, lo_open=True), "checkpoint_every_steps": integer(0), "prefetch": integer(0),
    "log_every_steps": integer(0), "kl_convention": choice(KL_CONVENTIONS),
}


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = "default"
    model: ModelConfig = ModelConfig()
    features: FeatureConfig = FeatureConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()

    def __post_init__(self) -> None:
        _require(isinstance(self.name, str), "name", self.name, "a string")
        for key, cls in SECTIONS.items():  # sections check themselves when built
            value = getattr(self, key)
            if not isinstance(value, cls):
                raise ConfigError(f"{key}: must be a {cls.__name__}, got {type(value).__name__}")
        if self.features.kind == "world":  # IS needs power spectra, Bernoulli 0/1 frames
            _require(self.model.likelihood == "gaussian", "model.likelihood", self.model.likelihood,
                     "gaussian with features.kind=world (its frames are real-valued log-F0, voicing and "
                     "coded envelope, not power spectra)")
        if self.model.model in NON_FEEDBACK_MODELS:
            _require(self.train.scheduled_sampling == 0, "train.scheduled_sampling",
                     self.train.scheduled_sampling,
                     f"0 with model.model={self.model.model} (no recurrence of it reads a frame: "
                     "there is nothing to feed back)")
        if self.data.batching == "streams":  # the carry runs through teacher-forced passes only
            _require(self.train.scheduled_sampling == 0, "train.scheduled_sampling",
                     self.train.scheduled_sampling, "0 with data.batching=streams")


SECTIONS: dict[str, type] = {
    "model": ModelConfig, "features": FeatureConfig, "data": DataConfig, "train": TrainConfig,
}
RULES: dict[type, dict[str, Rule]] = {
    ModelConfig: MODEL_RULES, FeatureConfig: FEATURE_RULES, DataConfig: DATA_RULES,
    TrainConfig: TRAIN_RULES, Config: {"name": TEXT},
}


# --------------------------------------------------------------------------------------------
# Overrides and (de)serialisation


def _fields(obj: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def _sections(cls: type) -> dict[str, type]:
    """The fields of ``cls`` that are themselves config dataclasses."""
    hints = typing.get_type_hints(cls)
    return {name: hints[name] for name in _fields(cls) if dataclasses.is_dataclass(hints[name])}


def all_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a (nested) config dataclass or config class."""
    cls = cfg if isinstance(cfg, type) else type(cfg)
    sections = _sections(cls)
    keys = []
    for name in _fields(cls):
        if name in sections:
            keys.extend(all_keys(sections[name], f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _unknown_key(key: str, cls: type, prefix: str = "") -> ConfigError:
    close = difflib.get_close_matches(prefix + key, all_keys(cls, prefix), n=4, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown config key '{prefix}{key}'.{hint}")


def _tree(cfg: Any) -> dict:
    """Field values of a config as nested dicts (one per section), values as they are."""
    return {f.name: (_tree(v) if dataclasses.is_dataclass(v := getattr(cfg, f.name)) else v)
            for f in dataclasses.fields(cfg)}


def _locate(tree: dict, cls: type, key: str) -> tuple[dict, str, Rule]:
    """(the dict holding ``key``'s leaf, the leaf's name, its rule) for dotted ``key``."""
    *heads, leaf = key.split(".")
    node, here = tree, cls
    for head in heads:
        sections = _sections(here)
        if head not in sections:
            raise _unknown_key(key, cls)
        node, here = node[head], sections[head]
    if leaf not in _fields(here) or leaf in _sections(here):
        raise _unknown_key(key, cls)
    return node, leaf, RULES[here][leaf]


def apply_overrides(cfg: Any, assignments: list[str] | tuple[str, ...]) -> Any:
    """Applies ``key=value`` strings, e.g. ``model.z_dim=32`` (from ``--set``).

    All assignments are applied before the result is checked, so the order of keys that depend
    on each other (``features.n_fft`` and ``features.win_length``) does not matter.

    Raises:
        ConfigError: an unknown key (the message lists close matches), a value that is not of the
            key's type (``train.epochs=2.5``) or not allowed (``model.z_dim=0``).
    """
    tree = _tree(cfg)
    was = _model_of(tree, type(cfg))
    given = set()
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. model.z_dim=32)")
        key, text = (s.strip() for s in item.split("=", 1))
        node, leaf, rule = _locate(tree, type(cfg), key)
        try:
            node[leaf] = rule.parse(text)
        except ValueError:
            raise _bad(key, text, rule.allowed) from None
        given.add(key.split(".")[-1])
    if was is not None and _model_of(tree, type(cfg)) != was:
        # Another model: the keys whose review default depends on the model take the new one's
        # unless given here.
        model = tree["model"] if type(cfg) is Config else tree
        for key in MODEL_DEFAULTS:
            if key not in given:
                model[key] = None
    return from_dict(type(cfg), tree)


def _model_of(tree: dict, cls: type) -> str | None:
    """The model a config tree (a Config's or a ModelConfig's) names."""
    if cls is Config:
        return tree.get("model", {}).get("model")
    return tree.get("model") if cls is ModelConfig else None


def override(cfg: Any, key: str, value: Any) -> Any:
    """Returns ``cfg`` with dotted ``key`` set to ``value`` (a string is read as ``--set`` does)."""
    if isinstance(value, str):
        return apply_overrides(cfg, [f"{key}={value}"])
    tree = _tree(cfg)
    node, leaf, _ = _locate(tree, type(cfg), key)
    node[leaf] = value
    return from_dict(type(cfg), tree)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Builds (and so checks) a config dataclass from a dict, rejecting unknown keys by name.

    Raises:
        ConfigError: an unknown key, a section that is not a dict, or a value not allowed.
    """
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or "the config"
        raise ConfigError(f"{where}: must be a JSON object of keys, got {type(data).__name__}")
    sections = _sections(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in _fields(cls):
            raise _unknown_key(key, cls, prefix)
        kwargs[key] = from_dict(sections[key], value, f"{prefix}{key}.") if key in sections else value
    return cls(**kwargs)


def save_json(cfg: Any, path: str) -> None:
    with open(path, "w") as f:
        json.dump(to_dict(cfg), f, indent=2)


def _read_json(path: str | os.PathLike) -> dict:
    """A config file's JSON object, without its free-text ``description``."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid JSON ({e}); fix or replace it") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object of sections, got {type(data).__name__}")
    data.pop("description", None)
    return data


def load_json(cls: type, path: str | os.PathLike) -> Any:
    """A config from a JSON file; an error names the file, the key and what is allowed."""
    data = _read_json(path)
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# --------------------------------------------------------------------------------------------
# Model presets: the review's speech layouts (MODELS.md).

def _review(model: str, **keys: Any) -> ModelConfig:
    """A speech preset of the review's code: STFT power (513 bins), z_dim 16, tanh, IS."""
    return ModelConfig(model=model, x_dim=513, z_dim=16, activation="tanh",
                       likelihood="itakura_saito", prior="gaussian", **keys)


MODEL_PRESETS: dict[str, ModelConfig] = {
    "vrnn_review_speech": ModelConfig(
        model="vrnn", x_dim=513, z_dim=16, activation="tanh", dense_x=(256,), dense_z=(32, 64),
        dense_hx_z=(), dense_hz_x=(), dense_h_z=(), dim_rnn=128, num_rnn=1,
        likelihood="itakura_saito", prior="gaussian",
    ),
    "srnn_review_speech": ModelConfig(
        model="srnn", x_dim=513, z_dim=16, activation="tanh", dense_x_h=(256,), dense_hx_g=(256,),
        dense_gz_z=(64, 32), dense_hz_z=(64, 32), dense_hz_x=(256,), dim_rnn=128,
        dim_rnn_g=128, num_rnn=1, resq=False, likelihood="itakura_saito", prior="gaussian",
    ),
    # config/speech/cfg_*.ini of the review's code, every key it reads
    "vae_review_speech": _review("vae", dense_x_z=(128,)),
    "dkf_review_speech": _review(
        "dkf", dense_x_gx=(256,), dim_rnn_gx=128, num_rnn_gx=1, bidir_gx=False, dense_ztm1_g=(32,),
        dense_g_z=(32,), dense_z_x=(32, 64, 128, 256)),
    "storn_review_speech": _review(
        "storn", dense_x_g=(256,), dim_rnn_g=128, num_rnn_g=1, dense_g_z=(64, 32), dense_z_h=(32, 64),
        dense_xtm1_h=(256,), dense_h_x=(256,), dim_rnn_h=128, num_rnn_h=1),
    "rvae_causal_review_speech": _review(
        "rvae", dense_x_gx=(), dim_rnn_g_x=128, num_rnn_g_x=1, bidir_g_x=False, dense_z_gz=(),
        dim_rnn_g_z=128, num_rnn_g_z=1, dense_g_z=(), dense_z_h=(), dim_rnn_h=128, num_rnn_h=1,
        bidir_h=False, dense_h_x=()),
    "rvae_noncausal_review_speech": _review(
        "rvae", dense_x_gx=(), dim_rnn_g_x=128, num_rnn_g_x=1, bidir_g_x=True, dense_z_gz=(),
        dim_rnn_g_z=128, num_rnn_g_z=1, dense_g_z=(), dense_z_h=(), dim_rnn_h=128, num_rnn_h=1,
        bidir_h=True, dense_h_x=()),
    "dsae_review_speech": _review(
        "dsae", v_dim=16, dense_x=(), dim_rnn_gv=128, num_rnn_gv=1, dense_gv_v=(), dense_xv_gxv=(),
        dim_rnn_gxv=128, num_rnn_gxv=1, dense_gxv_gz=(), dim_rnn_gz=128, num_rnn_gz=1,
        dim_rnn_prior=128, num_rnn_prior=1, dense_vz_x=(32, 64, 128, 256)),
}


def model_preset(name: str) -> ModelConfig:
    if name not in MODEL_PRESETS:
        close = difflib.get_close_matches(name, list(MODEL_PRESETS), n=3, cutoff=0.3)
        raise ConfigError(
            f"unknown model preset '{name}'. Known: {', '.join(sorted(MODEL_PRESETS))}"
            + (f" (did you mean {close[0]}?)" if close else "")
        )
    return MODEL_PRESETS[name]


# --------------------------------------------------------------------------------------------
# Named experiment configs: partial JSON over the defaults. The shipped ones are package data
# (dvae_jax/configs/NAME.json, in the wheel); a user's ./experiments/configs/NAME.json also works.

SHIPPED_CONFIGS = pathlib.Path(__file__).resolve().parent / "configs"


def config_dirs() -> list[pathlib.Path]:
    """Where names are looked up, in order: the shipped configs, then ./experiments/configs/."""
    return [SHIPPED_CONFIGS, pathlib.Path.cwd() / "experiments" / "configs"]


def available_configs() -> list[str]:
    names = set()
    for d in config_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.json"))
    return sorted(names)


def _looks_like_path(text: str) -> bool:
    return text.endswith(".json") or "/" in text or os.sep in text


def config_path(name_or_path: str) -> pathlib.Path:
    """The file of a config given by name (shipped, or ./experiments/configs/) or by JSON path.

    Raises:
        ConfigError: neither a known name nor an existing file (the message lists the names).
    """
    if not _looks_like_path(name_or_path):
        for d in config_dirs():
            if (d / f"{name_or_path}.json").is_file():
                return d / f"{name_or_path}.json"
    if os.path.isfile(name_or_path):
        return pathlib.Path(name_or_path)
    known = available_configs()
    if _looks_like_path(name_or_path):
        raise ConfigError(f"config file '{name_or_path}' does not exist; pass a JSON file or one of: "
                          f"{', '.join(known) or '(none found)'}")
    close = difflib.get_close_matches(name_or_path, known, n=3, cutoff=0.3)
    raise ConfigError(
        f"unknown config '{name_or_path}': not a file and not a shipped config ({SHIPPED_CONFIGS}) "
        f"nor in ./experiments/configs/. Known: {', '.join(known) or '(none found)'}"
        + (f". Did you mean {close[0]}?" if close else "")
    )


def load_named(name_or_path: str) -> Config:
    """A config by name (dvae_jax/configs/NAME.json, then ./experiments/configs/NAME.json) or
    by path to a JSON file, checked (see :func:`load_json`)."""
    return load_json(Config, config_path(name_or_path))
