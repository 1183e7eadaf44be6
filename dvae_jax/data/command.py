"""The ``dvae-jax prepare`` sub-command: build the feature cache and manifest, print a summary."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from dvae_jax import config as config_lib
from dvae_jax.data import audio_io, mini
from dvae_jax.data import corpus as corpus_lib
from dvae_jax.data import prepare as prepare_lib


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``prepare`` to an argparse sub-parser collection; returns its parser."""
    p = subparsers.add_parser(
        "prepare",
        help="read a corpus, compute features, write the cache and manifest",
        description="Builds the feature cache of a corpus (the mini corpus is synthesised on first use).",
    )
    p.add_argument("--corpus", choices=("mini", "vctk", "folder", "tfds"), default=None, help="default: mini")
    p.add_argument("--root", default=None, help="corpus folder (vctk, folder) or TFDS manual_dir (tfds)")
    p.add_argument("--features", choices=("mel", "stft"), default=None, help="log-Mel or the review's STFT power")
    p.add_argument("--cache-dir", default=None, help="where the cache (and the mini corpus) live")
    p.add_argument("--config", default=None, help="a JSON config file (dvae_jax.config.Config)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. data.n_speakers=4 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def config_from_args(args: argparse.Namespace) -> config_lib.Config:
    cfg = config_lib.load_json(config_lib.Config, args.config) if getattr(args, "config", None) else config_lib.Config()
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
    """Runs ``prepare``; returns the exit status (2 on a user-facing data or config error)."""
    try:
        cfg = config_from_args(args)
        ds = prepare_lib.prepare_dataset(cfg.data, cfg.features, progress=not args.quiet)
    except (config_lib.ConfigError, corpus_lib.DataError, audio_io.AudioError, mini.MiniCorpusError) as e:
        print(f"dvae-jax prepare: error: {e}", file=sys.stderr)
        return 2
    print(ds.summary())
    print(f"cache: {ds.path}")
    return 0
