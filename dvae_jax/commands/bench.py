"""``dvae-jax bench``: train-step speed of dvae_jax against the PyTorch reference (dvae_jax/bench.py)."""

from __future__ import annotations

import argparse

from dvae_jax.commands import _options


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="train-step speed of dvae_jax vs the PyTorch reference")
    p.add_argument("--models", default="vrnn,srnn", help="comma-separated: vrnn,srnn")
    p.add_argument("--settings", default="review,mel",
                   help="review (128 x 50 x 513, Itakura-Saito), mel (64 x 100 x 80, Gaussian)")
    p.add_argument("--steps", type=_options.int_in(1), default=20, help="timed steps per implementation")
    p.add_argument("--warmup", type=_options.int_in(0), default=3)
    p.add_argument("--json", default="", help="write the results here")
    p.add_argument("--tiny", action="store_true", help="tiny layers and shapes (a smoke test)")
    p.add_argument("--batch", type=_options.int_in(1), default=None, help="override the setting's batch size")
    p.add_argument("--frames", type=_options.int_in(2), default=None, help="override the setting's sequence length")
    p.add_argument("--no-torch", action="store_true", help="time dvae_jax only")
    p.add_argument("--torch-threads", type=_options.int_in(0), default=0,
                   help="torch intra-op threads (0 = torch's default, the number of cores)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dvae_jax import bench

    return bench.run(args)
