"""``dvae-jax upgrade-run``: store in a run of the older layout what it needs without its corpus."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "upgrade-run", help="write a run's normalisation statistics and corpus fingerprint (older runs)",
        description="Runs trained before dataset.json existed kept their normalisation statistics only in the "
                    "corpus's feature cache. This recomputes them from the run's original corpus (named in its "
                    "config.json; the cache is reused or rebuilt) and writes RUN/dataset.json, after which the "
                    "run needs neither the corpus nor the cache for cold generation.")
    p.add_argument("--workdir", required=True, help="run directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dvae_jax import run_dir

    data = run_dir.upgrade(args.workdir, progress=not args.quiet)
    fp = data.fingerprint
    print(f"wrote {args.workdir}/{run_dir.DATA_FILE}: corpus {fp.get('corpus')} at {fp.get('root')} (cache "
          f"{fp.get('hash')}), normalisation {'per-band mean/std' if data.normalizer.applies else 'none'}")
    return 0
