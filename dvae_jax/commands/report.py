"""``dvae-jax report --study DIR``: the markdown report of sweeps (pipeline: dvae_jax/study_report.py)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from dvae_jax.study_report import DEFAULT_OUT

    p = subparsers.add_parser("report", help="markdown report of sweeps (dvae-jax sweep): tables, plots, intervals")
    p.add_argument("--study", action="append", required=True, metavar="DIR",
                   help="a sweep's --study-dir (repeatable: one section each)")
    p.add_argument("--storage", help="the study's storage URL when it is not DIR/study.db")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"the report file (default {DEFAULT_OUT})")
    p.add_argument("--title", default="Hyper-parameter studies")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dvae_jax import study_report

    path = study_report.write_report(args.study, args.out, storage=args.storage, title=args.title)
    print(f"report: {path}")
    return 0
