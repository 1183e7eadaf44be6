"""`dvae-jax sweep`: the command line of dvae_jax.sweep (argparse only; the pipeline is there).

Also runnable alone: ``python -m dvae_jax.sweep_command STUDY [options]`` (what ``--workers N``
starts N times).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dvae_jax import errors


def register(subparsers) -> None:
    """Adds the ``sweep`` sub-command to the ``dvae-jax`` parser."""
    p = subparsers.add_parser("sweep", help="hyper-parameter search on Optuna (study files in experiments/studies/)")
    add_arguments(p)
    p.set_defaults(func=sweep)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="a study file (JSON or TOML) or its name in experiments/studies/")
    p.add_argument("--study-dir", help="where trials/<number>/ and study.db go (default runs/sweeps/NAME)")
    p.add_argument("--storage", help="an Optuna RDB URL (default sqlite:///STUDY_DIR/study.db), e.g. "
                                     "postgresql://user@host/db to share a study across machines")
    p.add_argument("--n-trials", type=int, help="finished trials the study should hold (default: the file's budget)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--workers", type=int, default=1, help="local processes working on the study together")
    p.add_argument("--heartbeat", type=int, default=10,
                   help="seconds between trial heartbeats; a trial silent for twice this is failed and re-queued")


def _study_dir(args: argparse.Namespace, name: str) -> Path:
    return Path(args.study_dir) if args.study_dir else Path("runs") / "sweeps" / name


def sweep(args: argparse.Namespace) -> int:
    from dvae_jax import sweep as sweep_lib

    spec = sweep_lib.load_study(args.study)
    study_dir = _study_dir(args, spec.name)
    if args.workers < 1 or (args.n_trials is not None and args.n_trials < 1):
        raise errors.ConfigError("--workers and --n-trials must be >= 1")
    if args.workers > 1:
        # the study (and SQLite tables) exist before the workers race to open them
        sweep_lib.open_study(spec, study_dir, args.storage, args.heartbeat)
        extra = [*(["--n-trials", str(args.n_trials)] if args.n_trials else []),
                 *(["--timeout", str(args.timeout)] if args.timeout else []),
                 "--heartbeat", str(args.heartbeat)]
        print(f"[sweep] {args.workers} workers on '{spec.name}'; logs: {study_dir}/worker-*.log", flush=True)
        status = sweep_lib.spawn_workers(spec.path, study_dir, args.storage, args.workers, extra)
        study = sweep_lib.open_study(spec, study_dir, args.storage, args.heartbeat)
        summary = sweep_lib.summarize(study, args.storage or sweep_lib.default_storage(study_dir), 0.0)
    else:
        status = 0
        summary = sweep_lib.run_sweep(spec, study_dir, args.storage, args.n_trials, args.timeout,
                                      args.heartbeat)
    for line in summary.lines():
        print(line)
    print(f"report: dvae-jax report --study {study_dir}")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dvae-jax sweep", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return sweep(args)
    except errors.DvaeError as e:
        print(f"dvae-jax sweep: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
