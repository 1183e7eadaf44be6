"""``dvae-jax report --study DIR``: the markdown report of sweeps and run directories (pipeline:
dvae_jax/study_report.py)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from dvae_jax.study_report import DEFAULT_OUT

    p = subparsers.add_parser("report", help="markdown report of sweeps (dvae-jax sweep) and runs: tables, plots, intervals")
    p.add_argument("--study", action="append", default=[], metavar="DIR",
                   help="a sweep's --study-dir (repeatable: one section each; --study or --run is required)")
    p.add_argument("--storage", help="the study's storage URL when it is not DIR/study.db")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"the report file (default {DEFAULT_OUT})")
    p.add_argument("--title", default="Hyper-parameter studies")
    p.add_argument("--summary", metavar="FILE", help="a markdown file of answers written from the numbers, put first")
    p.add_argument("--run", action="append", default=[], metavar="LABEL=DIR",
                   help="a run directory whose `dvae-jax evaluate` (and `generate`) results get a table row "
                        "(repeatable: best settings against the defaults)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dvae_jax import errors, study_report

    if not args.study and not args.run:
        raise errors.ConfigError("report: give a sweep (--study DIR) or a run directory (--run LABEL=DIR), or both")
    runs = []
    for item in args.run:
        label, sep, workdir = item.partition("=")
        if not sep or not label or not workdir:
            raise errors.ConfigError(f"--run {item!r}: expected LABEL=DIR, e.g. best=runs/sweeps/q4_lr/trials/7")
        runs.append((label, workdir))
    path = study_report.write_report(args.study, args.out, storage=args.storage, title=args.title,
                                     summary=args.summary, runs=runs)
    print(f"report: {path}")
    return 0
