"""Hyper-parameter sweeps on Optuna: study files, search spaces, trials as run directories.

A study file (``experiments/studies/NAME.json``, or ``.toml``) declares a base config with fixed
overrides, a search space over dotted config keys (categorical / int / float, log scales,
conditions such as ``model.nu`` only for ``model.prior=student_t``, named groups of overrides
such as an architecture), seeds, one or two objectives, the budget, the sampler and the pruner.
Every trial trains with the project's fit loop in ``<study_dir>/trials/<number>/``, a normal run
directory that ``evaluate`` and ``generate`` accept. The study lives in an Optuna storage
(SQLite ``<study_dir>/study.db`` by default, any RDB URL otherwise), so several processes can
share it and a killed sweep resumes: its finished trials persist, and a trial whose worker died
is marked FAIL once its heartbeat is older than the grace period and re-queued (same parameters
and seed) by Optuna's ``RetryFailedTrialCallback``; the re-queued trial continues the dead one's
run directory from its latest checkpoint (fit's exact resume).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dvae_jax import config as config_lib
from dvae_jax import errors

ConfigError = errors.ConfigError
STUDIES_DIR = Path("experiments") / "studies"
PARAM_TYPES = ("categorical", "int", "float")
METRICS = ("val_loss", "final_val_loss", "val_kl", "val_recon", "active_units", "seconds", "epochs",
           "estoi")
SAMPLERS = ("tpe", "random", "grid", "nsga2")
PRUNERS = ("median", "percentile", "hyperband", "none")
DEFAULT_HEARTBEAT_S = 10
ACTIVE_THRESHOLD = 0.01  # nats per frame: a latent dimension above it counts as active


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched parameter.

    Attributes:
        name: a dotted config key (``model.z_dim``) or a free name whose ``values`` map each
            choice to overrides (``architecture``), or whose ``keys`` all take the value.
        kind: categorical | int | float.
        choices: categorical values (str, int, float, bool).
        low, high, log, step: int / float ranges.
        keys: config keys set to the value (default: ``[name]``).
        values: categorical choice -> {config key: value}.
        when: conditions {name or key: allowed value(s)}; the parameter exists only if all hold.
    """

    name: str
    kind: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    keys: tuple[str, ...] = ()
    values: dict | None = None
    when: dict | None = None


@dataclasses.dataclass(frozen=True)
class Objective:
    metric: str  # one of METRICS
    direction: str  # minimize | maximize
    n: int = 8  # estoi: validation utterances evaluated


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """A study file, checked."""

    name: str
    path: str
    base_config: str
    overrides: dict
    space: tuple[Param, ...]
    seeds: tuple[int, ...]
    objectives: tuple[Objective, ...]
    n_trials: int
    timeout_s: float | None
    sampler: dict
    pruner: dict
    population: int = 1
    sets: tuple[str, ...] = ()  # the command line's --set items (already in overrides)
    question: str = ""
    description: str = ""

    def to_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


def spec_from_json(raw: dict) -> StudySpec:
    """The StudySpec a study stored (``to_json``; the study's "spec" attribute), not re-checked."""
    fields = {f.name for f in dataclasses.fields(StudySpec)}
    d = {k: v for k, v in raw.items() if k in fields}
    d["space"] = tuple(Param(**{**p, "choices": tuple(p.get("choices", ())), "keys": tuple(p.get("keys", ()))})
                       for p in raw.get("space", []))
    d["objectives"] = tuple(Objective(**o) for o in raw.get("objectives", []))
    d["seeds"] = tuple(raw.get("seeds", (0,)))
    d["sets"] = tuple(raw.get("sets", ()))
    d.setdefault("path", "")
    d.setdefault("n_trials", 1)
    d.setdefault("timeout_s", None)
    return StudySpec(**d)


# ------------------------------------------------------------------------------------------------
# Study files


def find_study(name_or_path: str) -> Path:
    """A study file by path, or by name in ./experiments/studies/ (.json, then .toml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for ext in (".json", ".toml"):
        candidate = STUDIES_DIR / f"{name_or_path}{ext}"
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in STUDIES_DIR.glob("*.*") if p.suffix in (".json", ".toml"))
    raise ConfigError(f"study file '{name_or_path}' not found (a path, or a name in {STUDIES_DIR}/: "
                      f"{', '.join(known) or 'none there'})")


def _read(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
        return tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except OSError as e:
        raise ConfigError(f"study file {path} cannot be read ({e.strerror or e})") from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"study file {path} is not valid {path.suffix[1:].upper()} ({e})") from None


def _param(path: Path, name: str, raw: Any) -> Param:
    where = f"study file {path}: space.{name}"
    if not isinstance(raw, dict) or raw.get("type") not in PARAM_TYPES:
        raise ConfigError(f"{where}: needs \"type\": one of {', '.join(PARAM_TYPES)}")
    known = {"type", "choices", "low", "high", "log", "step", "keys", "values", "if"}
    if unknown := sorted(set(raw) - known):
        raise ConfigError(f"{where}: unknown entries {', '.join(unknown)} (allowed: {', '.join(sorted(known))})")
    kind = raw["type"]
    if kind == "categorical" and not raw.get("choices"):
        raise ConfigError(f"{where}: a categorical parameter needs a non-empty \"choices\" list")
    if kind != "categorical" and (raw.get("low") is None or raw.get("high") is None
                                  or raw["low"] > raw["high"]):
        raise ConfigError(f"{where}: an {kind} parameter needs \"low\" <= \"high\"")
    values = raw.get("values")
    if values is not None and set(map(str, raw["choices"])) - set(values):
        raise ConfigError(f"{where}: \"values\" must give overrides for every choice")
    keys = tuple(raw.get("keys") or (() if values else (name,)))
    return Param(name=name, kind=kind, choices=tuple(raw.get("choices", ())), low=raw.get("low"),
                 high=raw.get("high"), log=bool(raw.get("log", False)), step=raw.get("step"),
                 keys=keys, values=values, when=raw.get("if"))


def load_study(name_or_path: str, sets: Sequence[str] = (), name: str | None = None,
               base_config: str | None = None) -> StudySpec:
    """Reads and checks a study file; every config key it names is checked on a trial config.

    ``sets`` ("KEY=VALUE", as ``--set``) are added to the file's fixed overrides (the same file then
    runs on another corpus or model); ``name`` replaces the study name (default: the file's name,
    followed by the values of the ``sets``, so that the name says what ran: q1_prior_asterisk_srnn);
    ``base_config`` replaces the file's base config (the same question asked of another model's
    config: srnn_mel_gaussian); the default name then gets the model name, e.g. q1_prior_srnn.

    Raises:
        ConfigError: a missing file, an unknown entry, a bad range or config key (one line).
    """
    path = find_study(name_or_path)
    raw = _read(path)
    known = {"name", "description", "question", "base_config", "overrides", "space", "seeds",
             "objectives", "budget", "sampler", "pruner", "population"}
    if unknown := sorted(set(raw) - known):
        raise ConfigError(f"study file {path}: unknown entries {', '.join(unknown)} "
                          f"(allowed: {', '.join(sorted(known))})")
    objectives = tuple(
        Objective(o["metric"], o.get("direction", "minimize"), int(o.get("n", 8)))
        for o in raw.get("objectives", [{"metric": "val_loss"}])
    )
    for o in objectives:
        if o.metric not in METRICS or o.direction not in ("minimize", "maximize"):
            raise ConfigError(f"study file {path}: objective {o.metric}/{o.direction}: metric must be "
                              f"one of {', '.join(METRICS)}, direction minimize or maximize")
    if not 1 <= len(objectives) <= 2:
        raise ConfigError(f"study file {path}: objectives: give one or two")
    budget = raw.get("budget", {})
    overrides = dict(raw.get("overrides", {}))
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. data.corpus=asterisk")
        overrides[key.strip()] = value.strip()
    if name is None:
        name = str(raw.get("name", path.stem))
        tail = [re.sub(r"[^A-Za-z0-9.]+", "-", s.partition("=")[2]).strip("-") for s in sets]
        if base_config:  # the base config's model last, as a --set model.model=srnn would put it
            tail.append(config_lib.load_named(base_config).model.model)
        if tail:  # q1_prior + data.corpus=asterisk, model.model=srnn -> q1_prior_asterisk_srnn
            name = "_".join([name, *[t for t in tail if t]])
    spec = StudySpec(
        name=name, path=str(path), base_config=str(base_config or raw.get("base_config", "")),
        overrides=overrides, sets=tuple(sets),
        space=tuple(_param(path, k, v) for k, v in raw.get("space", {}).items()),
        seeds=tuple(int(s) for s in raw.get("seeds", [0])), objectives=objectives,
        n_trials=int(budget.get("n_trials", 10)), timeout_s=budget.get("timeout_s"),
        sampler=dict(raw.get("sampler", {"name": "tpe"})), pruner=dict(raw.get("pruner", {"name": "median"})),
        population=int(raw.get("population", {}).get("size", 1)), question=str(raw.get("question", "")),
        description=str(raw.get("description", "")),
    )
    _check_spec(spec)
    return spec


def _check_spec(spec: StudySpec) -> None:
    where = f"study file {spec.path}"
    if not spec.base_config:
        raise ConfigError(f"{where}: \"base_config\" (a config name or JSON path) is required")
    if spec.sampler.get("name", "tpe") not in SAMPLERS or spec.pruner.get("name", "median") not in PRUNERS:
        raise ConfigError(f"{where}: sampler.name must be one of {', '.join(SAMPLERS)} and pruner.name "
                          f"one of {', '.join(PRUNERS)}")
    if spec.sampler.get("name") == "grid" and any(p.kind != "categorical" for p in spec.space):
        raise ConfigError(f"{where}: the grid sampler needs categorical parameters only")
    if spec.n_trials < 1 or not spec.seeds or spec.population < 1:
        raise ConfigError(f"{where}: budget.n_trials, population.size and the seeds list must be >= 1")
    try:
        base = config_lib.load_named(spec.base_config)
        known = set(config_lib.all_keys(base))
        for p in spec.space:  # every key must exist: a typo fails now, not in trial 7
            if bad := [k for k in p.keys if k not in known]:
                raise ConfigError(f"space.{p.name}: unknown config key {bad[0]}")
            for overrides in (p.values or {}).values():
                _apply(base, overrides)
        _apply(base, spec.overrides)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _apply(cfg: config_lib.Config, overrides: dict) -> config_lib.Config:
    for key, value in overrides.items():
        cfg = config_lib.override(cfg, key, list(value) if isinstance(value, tuple) else value)
    return cfg


# ------------------------------------------------------------------------------------------------
# Trials: parameters -> config


def _holds(when: dict | None, known: dict) -> bool:
    for key, allowed in (when or {}).items():
        allowed = allowed if isinstance(allowed, list) else [allowed]
        if known.get(key) not in allowed:
            return False
    return True


def suggest(trial: Any, spec: StudySpec) -> dict[str, Any]:
    """The trial's parameters (only those whose conditions hold), suggested in file order."""
    base = _apply(config_lib.load_named(spec.base_config), spec.overrides)
    known: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for p in spec.space:
        # a condition may name an earlier parameter or any fixed config key
        lookup = {k: _get(base, k) for k in (p.when or {}) if k not in known and "." in k}
        if not _holds(p.when, {**lookup, **known}):
            continue
        if p.kind == "categorical":
            v = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "int":
            v = trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            v = trial.suggest_float(p.name, float(p.low), float(p.high), step=p.step, log=p.log)
        values[p.name] = v
        known[p.name] = v
        for key in p.keys:
            known[key] = v
    return values


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def trial_config(spec: StudySpec, values: dict[str, Any], seed: int) -> config_lib.Config:
    """The base config, the study's fixed overrides, the trial's values and its seed."""
    cfg = _apply(config_lib.load_named(spec.base_config), spec.overrides)
    by_name = {p.name: p for p in spec.space}
    overrides: dict[str, Any] = {}
    for name, v in values.items():
        p = by_name[name]
        if p.values:
            overrides.update(p.values[str(v)])
        overrides.update({key: v for key in p.keys})
    overrides.setdefault("train.seed", seed)
    cfg = _apply(cfg, overrides)
    return dataclasses.replace(cfg, name=f"{spec.name}")


def trial_seed(spec: StudySpec, trial: Any) -> int:
    """The seed of a trial: recorded in its user attributes (a re-queued trial keeps it), else
    the study's seeds in turn by trial number (a searched ``train.seed`` wins in trial_config)."""
    seed = trial.user_attrs.get("seed")
    if seed is None:
        seed = spec.seeds[trial.number % len(spec.seeds)]
        trial.set_user_attr("seed", int(seed))
    return int(seed)


# ------------------------------------------------------------------------------------------------
# Storage, sampler, pruner, study


def default_storage(study_dir: str | os.PathLike) -> str:
    return f"sqlite:///{Path(study_dir).absolute() / 'study.db'}"


def make_storage(url: str, heartbeat_s: int = DEFAULT_HEARTBEAT_S, max_retry: int = 2) -> Any:
    """An RDB storage (SQLite, PostgreSQL, MySQL, ...) with heartbeats: a trial whose process died
    is failed after ``2 * heartbeat_s`` and re-queued (at most ``max_retry`` times)."""
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # several local processes write one file: wait for the lock rather than fail at once
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # the re-queued trial continues the dead one's run, so it keeps its per-epoch reports
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    if retry is not None:  # Optuna >= 4.9 renamed the callback and its argument
        kwargs["heartbeat_stale_trial_callback"] = retry(max_retry=max_retry, inherit_intermediate_values=True)
    else:
        kwargs["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(
            max_retry=max_retry, inherit_intermediate_values=True)
    try:
        return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s,
                                          **kwargs)
    except Exception as e:  # noqa: BLE001 - sqlalchemy / driver errors: one line for the user
        raise errors.StorageError(f"cannot open the study storage {url}: {type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''}") from None


def make_sampler(spec: StudySpec) -> Any:
    import optuna

    opts = {k: v for k, v in spec.sampler.items() if k != "name"}
    name = spec.sampler.get("name", "tpe")
    if name == "grid":
        grid = {p.name: list(p.choices) for p in spec.space}
        return optuna.samplers.GridSampler(grid, seed=opts.get("seed"))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=opts.get("seed"))
    if name == "nsga2" or (len(spec.objectives) > 1 and name == "tpe" and opts.get("multi") == "nsga2"):
        return optuna.samplers.NSGAIISampler(**opts)
    # TPE handles one or several objectives; constant_liar spreads concurrent workers apart
    return optuna.samplers.TPESampler(**{"constant_liar": True, **opts})


def make_pruner(spec: StudySpec) -> Any:
    import optuna

    opts = {k: v for k, v in spec.pruner.items() if k != "name"}
    name = spec.pruner.get("name", "median")
    if name == "none" or len(spec.objectives) > 1:  # Optuna cannot prune multi-objective trials
        return optuna.pruners.NopPruner()
    if name == "percentile":
        return optuna.pruners.PercentilePruner(**{"percentile": 50.0, **opts})
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(**opts)
    return optuna.pruners.MedianPruner(**opts)


def open_study(spec: StudySpec, study_dir: str | os.PathLike, storage: str | None = None,
               heartbeat_s: int = DEFAULT_HEARTBEAT_S) -> Any:
    """Creates or loads the study; a stored study made from a different file is refused."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    Path(study_dir).mkdir(parents=True, exist_ok=True)
    url = storage or default_storage(study_dir)
    study = optuna.create_study(
        study_name=spec.name, storage=make_storage(url, heartbeat_s), sampler=make_sampler(spec),
        pruner=make_pruner(spec), directions=[o.direction for o in spec.objectives], load_if_exists=True)
    mine = {k: v for k, v in spec.to_json().items() if k not in ("path", "n_trials", "timeout_s")}
    saved = study.user_attrs.get("spec")
    if saved is None:
        study.set_user_attr("spec", mine)
    elif saved != mine:
        diff = sorted(k for k in mine if saved.get(k) != mine[k])
        raise ConfigError(f"study '{spec.name}' in {url} was created from a different study file "
                          f"({', '.join(diff)} differ): use another --study-dir / --storage or rename it")
    info = Path(study_dir) / "study.json"  # what `dvae-jax report --study DIR` opens
    if not info.exists():
        shown = url if "@" not in url else url.split("://")[0] + "://...@" + url.split("@", 1)[1]
        tmp = info.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"name": spec.name, "storage": shown, "spec": mine}, indent=2))
        os.replace(tmp, info)
    return study


def finished(study: Any) -> int:
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=done))


# ------------------------------------------------------------------------------------------------
# Training a trial


def fit_with_epoch_hook(cfg: config_lib.Config, workdir: Path, dataset: Any,
                        on_epoch: Callable[[dict], None], resume: bool = False) -> Any:
    """fit.fit, calling ``on_epoch(record)`` with each epoch's metrics record once the epoch is
    saved (it may raise, e.g. optuna.TrialPruned, to stop the run)."""
    from dvae_jax import fit as fit_lib
    from dvae_jax import run_dir

    if not (Path(workdir) / "checkpoints").exists():  # self-contained like `dvae-jax train`'s runs
        run_dir.record(workdir, dataset)
    return fit_lib.fit(cfg, workdir, resume=resume, progress=False, dataset=dataset, on_epoch=on_epoch)


class Datasets:
    """Prepared datasets by (data, features) config, shared by the trials of one process."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def get(self, cfg: config_lib.Config) -> Any:
        from dvae_jax.data import prepare

        key = json.dumps([config_lib.to_dict(cfg.data), config_lib.to_dict(cfg.features)], sort_keys=True)
        if key not in self._cache:
            self._cache[key] = prepare.prepare_dataset(cfg.data, cfg.features, progress=False)
        return self._cache[key]


def trial_dir(study_dir: str | os.PathLike, number: int) -> Path:
    return Path(study_dir) / "trials" / str(number)


def _adopt_killed_run(trial: Any, workdir: Path, study_dir: Path) -> bool:
    """A re-queued trial continues its dead predecessor's run directory (exact resume)."""
    history = _system_attrs(trial).get("retry_history") or []
    if not history or workdir.exists():
        return workdir.exists() and (workdir / "checkpoints").exists()
    source = trial_dir(study_dir, history[-1])
    if not (source / "checkpoints" / "latest").exists():
        return False
    shutil.copytree(source, workdir, ignore=shutil.ignore_patterns("*.tmp", "*orbax-checkpoint-tmp*", "tensorboard"))
    trial.set_user_attr("resumed_from", int(history[-1]))
    return True


def _system_attrs(trial: Any) -> dict:
    """Optuna 4+ keeps system attributes off the public Trial; its frozen record has them."""
    if hasattr(trial, "system_attrs"):
        return dict(trial.system_attrs)
    return dict(trial.study._storage.get_trial(trial._trial_id).system_attrs)


def _best_epoch(workdir: Path) -> tuple[list[dict], dict | None]:
    """(the epoch records of metrics.jsonl, the one with the lowest finite validation loss)."""
    from dvae_jax import fit as fit_lib

    epochs = [r for r in fit_lib.read_metrics(workdir) if r.get("kind") == "epoch"]
    if not epochs:
        return epochs, None
    return epochs, min(epochs, key=lambda r: r["val_loss"] if math.isfinite(r["val_loss"]) else math.inf)


def run_metrics(workdir: Path, result: Any = None) -> dict[str, float]:
    """The numbers a trial can be judged on, from its metrics.jsonl."""
    epochs, best = _best_epoch(workdir)
    if best is None:
        return {}
    return {
        "val_loss": float(best["val_loss"]), "final_val_loss": float(epochs[-1]["val_loss"]),
        "val_kl": float(best["val_kl"]), "val_recon": float(best["val_recon"]),
        "active_units": float(sum(k > ACTIVE_THRESHOLD for k in best.get("val_kl_per_dim", []))),
        "best_epoch": float(best["epoch"]), "epochs": float(len(epochs)),
        "seconds": float(epochs[-1].get("seconds", float("nan"))),
    }


def best_kl_per_dim(workdir: Path) -> list[float]:
    """Validation KL per latent dimension (nats per frame) at the best epoch (collapse diagnostics)."""
    _, best = _best_epoch(workdir)
    return [] if best is None else [float(k) for k in best.get("val_kl_per_dim", [])]


def learned_nu(workdir: str | os.PathLike) -> list[float] | None:
    """The Student-t degrees of freedom a run learned (per latent dimension, best checkpoint), or
    None when its nu is fixed or its prior Gaussian (or it has no checkpoint)."""
    from dvae_jax import checkpoint, models

    try:
        cfg = checkpoint.load_config(workdir)
        if cfg.model.prior != "student_t" or not cfg.model.learn_nu:
            return None
        cfg, variables, _ = checkpoint.load_run(workdir, "best")
    except errors.DvaeError:
        return None
    import numpy as np

    return [float(v) for v in np.asarray(models.prior_nu(cfg.model, variables))]


def _estoi(workdir: Path, dataset: Any, n: int) -> float:
    """Mean ESTOI of the model's resynthesis on ``n`` validation utterances (evaluate_run)."""
    from dvae_jax import evaluate

    res = evaluate.evaluate_run(workdir, split="val", n=n, metrics=["estoi"], quality=False, asr_n=0,
                                dataset=dataset, write_report=False)
    found = _find_number(res.get("aggregate", res), ("model", "estoi"))
    if found is None:
        raise errors.RunError(f"{workdir}: no ESTOI in the evaluation results")
    return found


def _find_number(tree: Any, words: tuple[str, ...], path: str = "") -> float | None:
    """The first 'mean' number under a path naming all ``words`` (the evaluate results layout
    belongs to evaluate.py; searching keeps this independent of its nesting)."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            found = _find_number(v, words, f"{path}/{k}".lower())
            if found is not None:
                return found
    elif isinstance(tree, (int, float)) and all(w in path for w in words) and path.endswith("mean"):
        return float(tree)
    return None


def make_objective(spec: StudySpec, study_dir: Path, datasets: Datasets | None = None) -> Callable:
    """The Optuna objective: one trial = one run directory trained by fit, pruned per epoch."""
    import optuna

    datasets = datasets or Datasets()

    def objective(trial: optuna.Trial) -> float | tuple[float, ...]:
        values = suggest(trial, spec)
        cfg = trial_config(spec, values, trial_seed(spec, trial))
        workdir = trial_dir(study_dir, trial.number)
        trial.set_user_attr("workdir", str(workdir))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("seed", int(cfg.train.seed))
        resume = _adopt_killed_run(trial, workdir, study_dir)
        dataset = datasets.get(cfg)
        single = len(spec.objectives) == 1

        def on_epoch(record: dict) -> None:
            if single and math.isfinite(record["val_loss"]):
                trial.report(float(record["val_loss"]), int(record["epoch"]))
                if trial.should_prune():
                    trial.set_user_attr("pruned_at_epoch", int(record["epoch"]))
                    raise optuna.TrialPruned(f"epoch {record['epoch']}: val -ELBO {record['val_loss']:.4f}")

        result = fit_with_epoch_hook(cfg, workdir, dataset, on_epoch, resume=resume)
        return _objective_values(spec, trial, workdir, dataset, result)

    return objective


def _objective_values(spec: StudySpec, trial: Any, workdir: Path, dataset: Any, result: Any):
    metrics = run_metrics(workdir, result)
    for k, v in metrics.items():
        trial.set_user_attr(k, v)
    trial.set_user_attr("kl_per_dim", best_kl_per_dim(workdir))
    if (nu := learned_nu(workdir)) is not None:
        trial.set_user_attr("learned_nu", nu)
    trial.set_user_attr("stopped", getattr(result, "stopped", ""))
    out = []
    for o in spec.objectives:
        value = _estoi(workdir, dataset, o.n) if o.metric == "estoi" else metrics.get(o.metric, math.nan)
        trial.set_user_attr(o.metric, value)
        out.append(float(value))
    if not all(math.isfinite(v) for v in out):
        raise errors.TrainingError(f"{workdir}: objective not finite ({out})")  # -> FAIL, no retry
    return out[0] if len(out) == 1 else tuple(out)


@dataclasses.dataclass
class SweepSummary:
    study: str
    storage: str
    finished: int
    complete: int
    pruned: int
    failed: int
    best: list[dict]
    seconds: float

    def lines(self) -> list[str]:
        out = [(f"study '{self.study}' ({self.storage}): {self.finished} finished trials "
               f"({self.complete} complete, {self.pruned} pruned), {self.failed} failed; "
               f"{self.seconds:.0f} s")]
        for b in self.best:
            out.append(f"best trial {b['number']}: {b['values']} {b['params']} -> {b['workdir']}")
        return out


def summarize(study: Any, storage: str, seconds: float) -> SweepSummary:
    import optuna

    states = [t.state for t in study.get_trials(deepcopy=False)]
    ts = optuna.trial.TrialState
    try:
        best = study.best_trials
    except ValueError:
        best = []
    return SweepSummary(
        study=study.study_name, storage=storage, finished=finished(study),
        complete=states.count(ts.COMPLETE), pruned=states.count(ts.PRUNED), failed=states.count(ts.FAIL),
        best=[{"number": t.number, "values": t.values, "params": t.params, "workdir": t.user_attrs.get("workdir")}
              for t in best[:3]],
        seconds=seconds,
    )


def run_sweep(spec: StudySpec, study_dir: str | os.PathLike, storage: str | None = None,
              n_trials: int | None = None, timeout_s: float | None = None,
              heartbeat_s: int = DEFAULT_HEARTBEAT_S, mesh: str | None = None) -> SweepSummary:
    """Runs trials in this process until the study holds ``n_trials`` finished (complete or
    pruned) trials, counted over every worker, or ``timeout_s`` passes. Re-running after a kill
    goes on where the study stands. ``mesh`` (e.g. ``members=2,data=2``): the device mesh a
    population trains on (members on one axis, batch rows on the other).

    Raises:
        ConfigError: ``mesh`` for a study without a population, or a mesh the devices cannot hold.
    """
    import optuna

    t0 = time.time()
    if mesh:
        if spec.population <= 1:
            raise ConfigError(f"--mesh {mesh}: study '{spec.name}' has no population (population.size 1): set "
                              "population.size > 1 to train its trials together on the mesh")
        from dvae_jax import distributed

        distributed.Placement.from_text(mesh, distributed.AXES)  # a bad mesh fails before any trial
    study_dir = Path(study_dir)
    url = storage or default_storage(study_dir)
    study = open_study(spec, study_dir, url, heartbeat_s)
    total = n_trials or spec.n_trials
    timeout = timeout_s if timeout_s is not None else spec.timeout_s
    optuna.storages.fail_stale_trials(study)  # trials of a dead worker: FAIL + re-queued
    remaining = total - finished(study)
    if remaining > 0:
        if spec.population > 1:
            from dvae_jax import population

            population.optimize_population(spec, study, study_dir, total, timeout, Datasets(), mesh=mesh)
        else:
            study.optimize(make_objective(spec, study_dir), n_trials=remaining, timeout=timeout,
                           catch=(errors.TrainingError,),
                           # running trials count: a worker stops once the others' trials fill the budget
                           callbacks=[optuna.study.MaxTrialsCallback(
                               total, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                                              optuna.trial.TrialState.RUNNING))])
    return summarize(study, url, time.time() - t0)


def spawn_workers(study_path: str, study_dir: str | os.PathLike, storage: str | None, workers: int,
                  extra: list[str] | None = None) -> int:
    """Starts ``workers`` processes on one study (each `python -m dvae_jax.cli sweep`), their
    output in ``<study_dir>/worker-<i>.log``; returns the worst exit status."""
    study_dir = Path(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    args = [study_path, "--study-dir", str(study_dir), *(["--storage", storage] if storage else []),
            *(extra or [])]
    with contextlib.ExitStack() as stack:
        procs = []
        for i in range(workers):
            log = stack.enter_context(open(study_dir / f"worker-{i}.log", "a"))
            cmd = [sys.executable, "-m", "dvae_jax.cli", "sweep", *args]
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        return max(proc.wait() for proc in procs)
