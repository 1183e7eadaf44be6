"""Typed configuration: model, features, data, training; presets; dotted-key overrides."""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from typing import Any

from dvae_jax.errors import ConfigError  # noqa: F401  (re-exported: config.ConfigError)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Layout of a VRNN or SRNN. Field names follow the review's configuration files.

    Every ``dense_*`` entry is the list of hidden layer sizes of that MLP (empty = identity).
    """

    model: str = "vrnn"  # "vrnn" | "srnn"
    x_dim: int = 513
    z_dim: int = 16
    activation: str = "tanh"  # "tanh" | "relu"
    dropout_p: float = 0.0
    # VRNN
    dense_x: tuple[int, ...] = (256,)
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
    # Prior over z_t
    prior: str = "gaussian"  # "gaussian" | "student_t"
    nu: float = 5.0  # Student-t degrees of freedom (initial value when learned)
    learn_nu: bool = False
    kl_estimator: str = "mc"  # Student-t KL: "mc" (log q - log p) | "entropy" (-H[q] - log p)
    # Likelihood of x_t
    likelihood: str = "itakura_saito"  # "itakura_saito" | "gaussian"
    learn_x_var: bool = True  # gaussian likelihood: decoder also outputs a log-variance
    fixed_x_logvar: float = 0.0  # gaussian likelihood with a fixed variance
    logvar_clip: float = 40.0  # every log-variance is clipped to [-clip, clip] (no inf / NaN)
    # Scan
    unroll: int = 1


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Acoustic features. ``kind='stft'`` is the review's STFT power; ``'mel'`` is log-Mel."""

    kind: str = "mel"  # "mel" | "stft"
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
    normalize: bool = True  # log-Mel: per-band mean/std from the training split

    @property
    def n_bins(self) -> int:
        return self.n_mels if self.kind == "mel" else self.n_fft // 2 + 1


@dataclasses.dataclass(frozen=True)
class DataConfig:
    corpus: str = "mini"  # "mini" | "vctk" | "folder" | "tfds"
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
    batching: str = "crops"  # "crops" (random crops) | "chunks" (the review's non-overlapping chunks)
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


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    batch_size: int = 32
    epochs: int = 20
    max_steps: int = 0  # 0 = no limit beyond epochs
    optimizer: str = "adam"  # "adam" | "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.0
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
    beta: float = 1.0
    free_bits: float = 0.0  # per-dimension KL floor (nats per frame); 0 = off
    scheduled_sampling: float = 0.0  # max probability of feeding the model's own frame (0 = off)
    ss_start_epochs: float = 0.0  # scheduled sampling: ramp start
    ss_ramp_epochs: float = 20.0  # scheduled sampling: epochs to reach the max probability
    ss_per: str = "frame"  # scheduled sampling: "frame" | "sequence"
    early_stop_patience: int = 50  # epochs without improvement after the KL warm-up
    nan_patience: int = 5  # non-finite steps in a row before rollback
    nan_max_rollbacks: int = 3
    checkpoint_every_steps: int = 0  # 0 = end of every epoch only
    prefetch: int = 2
    log_every_steps: int = 10


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = "default"
    model: ModelConfig = ModelConfig()
    features: FeatureConfig = FeatureConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()


# --------------------------------------------------------------------------------------------
# Overrides and (de)serialisation


def _coerce(value: Any, type_hint: Any, key: str) -> Any:
    origin = typing.get_origin(type_hint)
    if origin is tuple:
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("[") or value.startswith("("):
                value = json.loads(value.replace("(", "[").replace(")", "]"))
            elif value == "":
                value = []
            else:
                value = [v for v in value.split(",") if v.strip()]
        (item_type, *_rest) = typing.get_args(type_hint)
        return tuple(_coerce(v, item_type, key) for v in value)
    try:
        if type_hint is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if type_hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) else int(value)
        if type_hint is float:
            return float(value)
        if type_hint is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key '{key}': cannot read {value!r} as {type_hint.__name__}") from None
    return value


def _fields(obj: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def all_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a (nested) config dataclass."""
    keys = []
    for name, field in _fields(cfg).items():
        value = getattr(cfg, name)
        if dataclasses.is_dataclass(value):
            keys.extend(all_keys(value, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def override(cfg: Any, key: str, value: Any, _full: str | None = None, _root: Any = None) -> Any:
    """Returns ``cfg`` with dotted ``key`` set to ``value`` (coerced to the field's type).

    Raises:
        ConfigError: the key does not exist (the message lists close matches) or the value
            cannot be read as the field's type.
    """
    full = _full or key
    root = _root if _root is not None else cfg
    head, _, rest = key.partition(".")
    fields = _fields(cfg)
    hints = typing.get_type_hints(type(cfg))
    if head not in fields or (rest and not dataclasses.is_dataclass(getattr(cfg, head))) or (
        not rest and dataclasses.is_dataclass(getattr(cfg, head))
    ):
        close = difflib.get_close_matches(full, all_keys(root), n=4, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown config key '{full}'.{hint}")
    if rest:
        return dataclasses.replace(cfg, **{head: override(getattr(cfg, head), rest, value, full, root)})
    return dataclasses.replace(cfg, **{head: _coerce(value, hints[head], full)})


def apply_overrides(cfg: Any, assignments: list[str] | tuple[str, ...]) -> Any:
    """Applies ``key=value`` strings, e.g. ``model.z_dim=32`` (from ``--set``)."""
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. model.z_dim=32)")
        key, value = item.split("=", 1)
        cfg = override(cfg, key.strip(), value.strip())
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Builds a config dataclass from a dict, rejecting unknown keys by name."""
    fields = _fields(cls)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(prefix + c for c in close)}?" if close else ""
            raise ConfigError(f"unknown config key '{prefix}{key}'.{hint}")
        hint_t = hints[key]
        if dataclasses.is_dataclass(hint_t):
            kwargs[key] = from_dict(hint_t, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint_t, prefix + key)
    return cls(**kwargs)


def save_json(cfg: Any, path: str) -> None:
    with open(path, "w") as f:
        json.dump(to_dict(cfg), f, indent=2)


def load_json(cls: type, path: str) -> Any:
    with open(path) as f:
        return from_dict(cls, json.load(f))


# --------------------------------------------------------------------------------------------
# Model presets: the review's speech layouts (MODELS.md).

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
# Named experiment configs (experiments/configs/NAME.json): partial JSON over the defaults.


def config_dirs() -> list:
    import pathlib

    here = pathlib.Path(__file__).resolve().parent
    return [pathlib.Path.cwd() / "experiments" / "configs", here.parent / "experiments" / "configs"]


def available_configs() -> list[str]:
    names = set()
    for d in config_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.json"))
    return sorted(names)


def load_named(name_or_path: str) -> Config:
    """A config by name (experiments/configs/NAME.json) or by path to a JSON file."""
    import os

    if os.path.isfile(name_or_path):
        path = name_or_path
    else:
        path = next((str(d / f"{name_or_path}.json") for d in config_dirs() if (d / f"{name_or_path}.json").is_file()), None)
        if path is None:
            known = available_configs()
            close = difflib.get_close_matches(name_or_path, known, n=3, cutoff=0.3)
            raise ConfigError(
                f"unknown config '{name_or_path}': not a file and not in experiments/configs/. "
                f"Known: {', '.join(known) or '(none found)'}" + (f". Did you mean {close[0]}?" if close else "")
            )
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
    data.pop("description", None)
    return from_dict(Config, data)
