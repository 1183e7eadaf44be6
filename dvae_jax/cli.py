"""The `dvae-jax` command: one entry point, sub-commands registered by the modules that own them."""

from __future__ import annotations

import argparse
import sys

from dvae_jax import config as config_lib
from dvae_jax import errors


def _describe_register(sub) -> None:
    p = sub.add_parser("describe", help="print a model layout and its parameter count")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", help=f"model preset: {', '.join(config_lib.MODEL_PRESETS)}")
    g.add_argument("--config", help="an experiment config name or JSON path (its model section)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_describe)


def _describe(args) -> int:
    import jax

    from dvae_jax import models

    if args.config:
        cfg = config_lib.apply_overrides(config_lib.load_named(args.config), args.set).model
    else:
        model = config_lib.model_preset(args.preset or "vrnn_review_speech")
        cfg = config_lib.apply_overrides(config_lib.Config(model=model), args.set).model
    variables = models.init(cfg, jax.random.PRNGKey(0))
    print(f"model: {cfg.model.upper()}  x_dim {cfg.x_dim}  z_dim {cfg.z_dim}  activation {cfg.activation}  "
          f"prior {cfg.prior}  likelihood {cfg.likelihood}" + (f"  resq {cfg.resq}" if cfg.model == "srnn" else ""))
    flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
    width = max(len(jax.tree_util.keystr(p)) for p, _ in flat)
    for path, leaf in flat:
        print(f"  {jax.tree_util.keystr(path):<{width}}  {tuple(leaf.shape)!s:>12}  {leaf.size:>9,}")
    print(f"parameters: {models.count_params(variables)}")
    return 0


def _train_register(sub) -> None:
    p = sub.add_parser("train", help="train a model (configs in experiments/configs/)")
    p.add_argument("--config", default="vrnn_mel_gaussian", help="config name or JSON path")
    p.add_argument("--workdir", required=True, help="run directory (checkpoints, logs, report)")
    p.add_argument("--resume", action="store_true", help="continue the run in --workdir exactly")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. model.z_dim=32 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="skip reconstructions and report.md")
    p.set_defaults(func=_train)


def _train(args) -> int:
    from dvae_jax import train_command

    return train_command.train(args)


def _demo_register(sub) -> None:
    p = sub.add_parser("demo", help="the main job: mini corpus -> VRNN on log-Mel -> report")
    p.add_argument("--workdir", default="runs/demo")
    p.add_argument("--config", default="demo")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_demo)


def _demo(args) -> int:
    from dvae_jax import train_command

    return train_command.demo(args)


def build_parser() -> argparse.ArgumentParser:
    from dvae_jax.data import command as data_command

    parser = argparse.ArgumentParser(prog="dvae-jax", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    _describe_register(sub)
    data_command.register(sub)
    _train_register(sub)
    _demo_register(sub)
    from dvae_jax import bench, evaluate_command, generate_command, interop

    evaluate_command.register(sub)
    generate_command.register(sub)
    interop.register(sub)
    bench.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except errors.DvaeError as e:
        if args.debug:
            raise
        message = " ".join(str(e).split()) or type(e).__name__  # one line, whatever the message
        print(f"dvae-jax {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
