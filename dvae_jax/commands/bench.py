"""``dvae-jax bench``: train-step speed of dvae_jax vs the PyTorch reference (dvae_jax/bench.py)."""

from __future__ import annotations

import argparse

from dvae_jax.commands import _options


def register(subparsers) -> None:
    from dvae_jax import bench, bench_precision  # the settings and precisions live there

    p = subparsers.add_parser("bench", help="train-step speed of dvae_jax vs the PyTorch reference")
    p.add_argument("--models", default="vrnn,srnn", help="comma-separated: vrnn,srnn")
    p.add_argument(
        "--settings", default="review,mel", help="comma-separated: " + bench.SETTINGS_HELP
    )
    p.add_argument(
        "--steps", type=_options.int_in(1), default=20, help="timed steps per implementation"
    )
    p.add_argument("--warmup", type=_options.int_in(0), default=3)
    p.add_argument("--json", default="", help="write the results here")
    p.add_argument("--tiny", action="store_true", help="tiny layers and shapes (a smoke test)")
    p.add_argument(
        "--batch", type=_options.int_in(1), default=None, help="override the setting's batch size"
    )
    p.add_argument(
        "--frames",
        type=_options.int_in(2),
        default=None,
        help="override the setting's sequence length",
    )
    p.add_argument(
        "--no-torch",
        action="store_true",
        help="skip the PyTorch reference (--review-repo still times the review's code)",
    )
    p.add_argument(
        "--torch-threads",
        type=_options.int_in(0),
        default=0,
        help="torch intra-op threads (0 = torch's default, the number of cores)",
    )
    p.add_argument(
        "--review-repo",
        default="",
        metavar="PATH",
        help="also time your own checkout of the review's code (XiaoyuBIE1994/DVAE) at PATH: its "
        "build_VRNN / build_SRNN and its loss_ISD / loss_KLD, imported from PATH, with "
        "anomaly detection off and on (Itakura-Saito settings only)",
    )
    p.add_argument(
        "--device",
        choices=bench.DEVICES,
        default="cpu",
        help="gpu: JAX on its first GPU and torch on cuda (a one-line error if either sees none)",
    )
    p.add_argument(
        "--precision",
        choices=bench_precision.PRECISIONS,
        default="float32",
        help="matrix products in float32, TF32 (GPU only) or bf16 operands; the row reports "
        "the loss's relative error against float32 from the same weights and noise",
    )
    p.add_argument(
        "--lstm-impl",
        choices=("scan", "cudnn", "auto"),
        default="scan",
        help="SRNN's data-driven LSTMs in dvae_jax (model.lstm_impl): lax.scan, or cuDNN through "
        "jax.experimental.rnn (--device gpu; one line where it cannot run)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dvae_jax import bench

    return bench.run(args)
