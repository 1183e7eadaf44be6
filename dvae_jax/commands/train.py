"""``dvae-jax train`` and ``dvae-jax demo`` (pipeline: train_command.py)."""

from __future__ import annotations

import argparse

from dvae_jax import config as config_lib
from dvae_jax.commands import _options


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model (configs in experiments/configs/)")
    p.add_argument("--config", default="vrnn_mel_gaussian", help="config name or JSON path")
    p.add_argument("--workdir", required=True, help="run directory (checkpoints, logs, report)")
    p.add_argument("--resume", action="store_true", help="continue the run in --workdir exactly")
    _options.add_set(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="skip reconstructions and report.md")
    p.add_argument("--mesh", metavar="data=N|auto",
                   help="train on N devices (auto: all), the batch split by rows, the rest replicated; "
                        "train.batch_size is the global batch (docs/distributed.md). Several hosts: "
                        "set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (or run under "
                        "SLURM) and start the same command on each")
    p.set_defaults(func=run)
    d = subparsers.add_parser("demo", help="the main job: mini corpus -> VRNN on log-Mel -> report")
    d.add_argument("--workdir", default="runs/demo")
    d.add_argument("--config", default="demo")
    _options.add_set(d, "override a config key (repeatable)")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=run_demo)


def run(args: argparse.Namespace) -> int:
    from dvae_jax import train_command

    cfg = config_lib.apply_overrides(config_lib.load_named(args.config), args.set)
    args.placement = _placement(args)
    args.placement.check_batch(cfg.train.batch_size)  # before the corpus is prepared
    if not args.placement.writer:
        args.quiet = True  # process 0 prints
    if cfg.data.corpus == "polyphonic":
        return _run_polyphonic(cfg, args)
    train_command.train(cfg, args.workdir, args.resume, args.quiet, not args.no_report,
                        placement=args.placement)
    return 0


def _placement(args: argparse.Namespace):
    """The device mesh of ``--mesh``; several processes (JAX_* variables or SLURM) join first and
    default to every device of every host."""
    from dvae_jax import distributed

    distributed.initialize()
    import jax

    text = args.mesh or ("data=auto" if jax.process_count() > 1 else None)
    return distributed.Placement.from_text(text)


def _run_polyphonic(cfg: config_lib.Config, args: argparse.Namespace) -> int:
    """A piano-roll run: the same pipeline (set -> dataset.json -> fit), without the audio
    reconstructions and report.md; the test bounds come from ``dvae-jax evaluate``."""
    import time

    from dvae_jax import train_command

    t0 = time.time()
    result, _ = train_command.run_training(cfg, args.workdir, args.resume, args.quiet, write_report=False,
                                           placement=args.placement)
    if not args.placement.writer:
        return 0
    print("\n".join(train_command.result_lines(result, args.workdir)))
    print(f"wall time: {time.time() - t0:.0f} s; test bounds: dvae-jax evaluate --workdir {args.workdir} "
          "[--k 1,10]")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from dvae_jax import train_command

    cfg = config_lib.apply_overrides(config_lib.load_named(args.config), args.set)
    train_command.demo(cfg, args.workdir, args.config, quiet=args.quiet)
    return 0
