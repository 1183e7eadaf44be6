"""``dvae-jax sweep``: hyper-parameter search on Optuna (pipeline: dvae_jax/sweep.py). With
``--workers N`` it starts N ``python -m dvae_jax.cli sweep`` processes on the one study."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dvae_jax.commands import _options


def register(subparsers) -> None:
    """Adds the ``sweep`` sub-command to the ``dvae-jax`` parser."""
    p = subparsers.add_parser("sweep", help="hyper-parameter search on Optuna (study files in experiments/studies/)")
    add_arguments(p)
    p.set_defaults(func=sweep)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="a study file (JSON or TOML) or its name in experiments/studies/")
    _options.add_set(p, help="add a fixed override to every trial, e.g. data.corpus=asterisk or model.model=srnn "
                            "(repeatable; the study's default name gets the values: q1_prior_asterisk_srnn)")
    p.add_argument("--base-config", metavar="CONFIG",
                   help="replaces the study file's base config, e.g. srnn_mel_gaussian to ask its question of SRNN "
                        "(the default name then ends with the model: q1_prior_srnn)")
    p.add_argument("--name", help="the Optuna study name (default: the file's, plus the --set values)")
    p.add_argument("--study-dir", help="where trials/<number>/ and study.db go (default runs/sweeps/NAME)")
    p.add_argument("--storage", help="an Optuna RDB URL (default sqlite:///STUDY_DIR/study.db), e.g. "
                                     "postgresql://user@host/db to share a study across machines")
    p.add_argument("--n-trials", type=_options.int_in(1),
                   help="finished trials the study should hold (default: the file's budget)")
    p.add_argument("--timeout", type=_options.float_in(0.0, 1e7, lo_open=True),
                   help="stop starting trials after this many seconds")
    p.add_argument("--workers", type=_options.int_in(1, 64), default=1,
                   help="local processes working on the study together")
    p.add_argument("--mesh", metavar="AXES",
                   help="train each population on a device mesh, members on one axis and batch rows on the other, "
                        "e.g. members=2,data=2 or members=auto,data=1 (a study with population.size > 1; one "
                        "process: not with --workers)")
    p.add_argument("--heartbeat", type=_options.int_in(1, 3600), default=10,
                   help="seconds between trial heartbeats; a trial silent for twice this is failed and re-queued")


def _study_dir(args: argparse.Namespace, name: str) -> Path:
    return Path(args.study_dir) if args.study_dir else Path("runs") / "sweeps" / name


def _check_mesh(args: argparse.Namespace, spec) -> None:
    """Refuses ``--mesh`` with ``--workers`` (each worker would claim the same devices) and says
    where the populations train."""
    from dvae_jax import distributed, errors

    if args.workers > 1:
        raise errors.ConfigError(f"--mesh {args.mesh} with --workers {args.workers}: the workers would share "
                                 "the mesh's devices; use one worker (its populations use every device)")
    placement = distributed.Placement.from_text(args.mesh, distributed.AXES)
    if spec.population > 1:  # else run_sweep refuses the mesh
        print(f"[sweep] populations of {spec.population} on a {placement.describe()}", flush=True)


def sweep(args: argparse.Namespace) -> int:
    from dvae_jax import sweep as sweep_lib

    t0 = time.time()
    spec = sweep_lib.load_study(args.study, args.set, args.name, args.base_config)
    study_dir = _study_dir(args, spec.name)
    if args.mesh:
        _check_mesh(args, spec)
    if args.workers > 1:
        # the study (and SQLite tables) exist before the workers race to open them
        sweep_lib.open_study(spec, study_dir, args.storage, args.heartbeat)
        extra = [*[a for item in args.set for a in ("--set", item)], "--name", spec.name,
                 *(["--base-config", args.base_config] if args.base_config else []),
                 *(["--n-trials", str(args.n_trials)] if args.n_trials else []),
                 *(["--timeout", str(args.timeout)] if args.timeout else []),
                 "--heartbeat", str(args.heartbeat)]
        print(f"[sweep] {args.workers} workers on '{spec.name}'; logs: {study_dir}/worker-*.log", flush=True)
        status = sweep_lib.spawn_workers(spec.path, study_dir, args.storage, args.workers, extra)
        study = sweep_lib.open_study(spec, study_dir, args.storage, args.heartbeat)
        summary = sweep_lib.summarize(study, args.storage or sweep_lib.default_storage(study_dir),
                                    time.time() - t0)
    else:
        status = 0
        summary = sweep_lib.run_sweep(spec, study_dir, args.storage, args.n_trials, args.timeout,
                                      args.heartbeat, mesh=args.mesh)
    for line in summary.lines():
        print(line)
    print(f"report: dvae-jax report --study {study_dir}")
    return status

