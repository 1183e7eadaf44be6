"""``dvae-jax import-review`` and ``export-review``: the review's PyTorch checkpoints (dvae_jax/interop.py)."""

from __future__ import annotations

import argparse

from dvae_jax import config as config_lib


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import-review", help="import a checkpoint of the review's PyTorch code as a dvae-jax run"
    )
    p.add_argument("ckpt", help=".pt file: a state_dict or a dict holding one (e.g. 'model_state_dict')")
    p.add_argument("--preset", required=True, choices=sorted(config_lib.MODEL_PRESETS),
                   help="the layout the checkpoint was trained with")
    p.add_argument("--out", required=True, help="run directory to write (config.json + checkpoint)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config overrides")
    p.set_defaults(func=run_import)
    e = subparsers.add_parser("export-review", help="write a run's parameters as a review-layout state_dict")
    e.add_argument("--workdir", required=True, help="a dvae-jax run directory")
    e.add_argument("--out", required=True, help=".pt file to write")
    e.add_argument("--which", default="best", choices=("best", "latest"))
    e.set_defaults(func=run_export)


def run_import(args: argparse.Namespace) -> int:
    """Imports, then stores what the run needs beyond its weights (run_dir)."""
    from dvae_jax import checkpoint, interop, run_dir

    status = interop.run_import(args)
    cfg = checkpoint.load_config(args.out)
    if not run_dir.normalises(cfg.features):
        # nothing to de-normalise (the review's STFT power): self-contained as it is
        run_dir.save(args.out, run_dir.RunData(run_dir.Normalizer(), {"imported_from": str(args.ckpt)}))
    else:
        print(f"note: {args.out} uses normalised log-Mel, whose statistics the checkpoint does not hold: run "
              f"`dvae-jax upgrade-run --workdir {args.out}` with the corpus it was trained on in place")
    return status


def run_export(args: argparse.Namespace) -> int:
    from dvae_jax import interop

    return interop.run_export(args)
