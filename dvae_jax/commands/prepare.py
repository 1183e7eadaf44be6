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
    p.add_argument("--root", default=None, help="corpus folder (vctk, folder) or TFDS manual_dir (tfds)")
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
    data = cfg.data
    if args.corpus:
        data = dataclasses.replace(data, corpus=args.corpus)
    if args.root is not None:
        data = dataclasses.replace(data, root=args.root)
    if args.cache_dir:
        data = dataclasses.replace(data, cache_dir=args.cache_dir)
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
    print(f"cache: {ds.path}")
    return 0
