"""``dvae-jax prepare``: build the feature cache and manifest of a corpus, print a summary."""

from __future__ import annotations

import argparse
import dataclasses

from dvae_jax import config as config_lib
from dvae_jax.commands import _options


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "prepare",
        help="read a corpus, compute features, write the cache and manifest",
        description="Builds the feature cache of a corpus (the mini corpus is synthesised on first use).",
    )
    p.add_argument("--corpus", choices=_options.CORPORA, default=None, help="default: mini")
    p.add_argument("--root", default=None,
                   help="corpus folder (vctk, folder), TFDS manual_dir (tfds), or the folder of the piano-roll "
                        "files (polyphonic; JSB ships with dvae_jax)")
    p.add_argument("--set-name", default=None, metavar="NAME",
                   help="polyphonic: jsb, nottingham, muse or piano (the SRNN paper's piano-roll sets)")
    p.add_argument("--features", choices=("mel", "stft", "world"), default=None,
                   help="log-Mel, the review's STFT power, or WORLD vocoder frames (needs the [world] extra)")
    p.add_argument("--cache-dir", default=None, help="where the cache (and the mini corpus) live")
    p.add_argument("--config", default=None, help="a JSON config file (dvae_jax.config.Config)")
    _options.add_set(p, "override any config key, e.g. data.n_speakers=4 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def config_from_args(args: argparse.Namespace) -> config_lib.Config:
    """The Config that ``prepare``'s options describe."""
    cfg = config_lib.load_named(args.config) if getattr(args, "config", None) else config_lib.Config()
    changes = {"corpus": args.corpus or None, "root": args.root, "cache_dir": args.cache_dir or None,
               "set_name": getattr(args, "set_name", None)}
    # one replace: corpus=polyphonic is checked together with its set name
    data = dataclasses.replace(cfg.data, **{k: v for k, v in changes.items() if v is not None})
    feats = cfg.features
    if args.features:
        feats = dataclasses.replace(feats, kind=args.features)
    cfg = dataclasses.replace(cfg, data=data, features=feats)
    return config_lib.apply_overrides(cfg, args.set)


def run(args: argparse.Namespace) -> int:
    from dvae_jax.data import prepare as prepare_lib

    cfg = config_from_args(args)
    ds = prepare_lib.prepare_dataset(cfg.data, cfg.features, progress=not args.quiet)
    print(ds.summary())
    if cfg.data.corpus != "polyphonic":  # a piano-roll set is its file (named in the summary)
        print(f"cache: {ds.path}")
    return 0
