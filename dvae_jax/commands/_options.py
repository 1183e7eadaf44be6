"""Options several sub-commands share."""

from __future__ import annotations

import argparse
import math

from dvae_jax import config as config_lib
from dvae_jax import errors

CORPORA = config_lib.CORPORA


def add_set(p: argparse.ArgumentParser, help: str = "override a config key, e.g. model.z_dim=32 (repeatable)") -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def add_audio(p: argparse.ArgumentParser, what: str) -> None:
    """``--audio DIR`` or ``--corpus NAME --root PATH``: speech other than the run's own corpus."""
    g = p.add_argument_group("other speech (featurised with the run's own settings and statistics)")
    g.add_argument("--audio", metavar="DIR", default=None,
                   help=f"{what} the audio files of any folder (transcripts optional: .txt/.lab next to a file)")
    g.add_argument("--corpus", choices=CORPORA, default=None, help=f"{what} a corpus read by its reader (with --root)")
    g.add_argument("--root", default=None, help="the corpus location for --corpus (a folder alone means --corpus folder)")


def audio_source(args: argparse.Namespace) -> tuple[str, str] | None:
    """(corpus, root) of ``--audio`` / ``--corpus --root``, or None for the run's own corpus."""
    if args.audio is not None and (args.corpus is not None or args.root is not None):
        raise errors.ConfigError("give either --audio DIR or --corpus NAME --root PATH, not both")
    if args.audio is not None:
        return "folder", args.audio
    if args.corpus is None and args.root is None:
        return None
    return args.corpus or "folder", args.root or ""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def int_in(lo: int, hi: int | None = None):
    """argparse type: an integer in [lo, hi] (no float is ever truncated)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
        if value < lo or (hi is not None and value > hi):
            allowed = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise argparse.ArgumentTypeError(f"must be an integer {allowed}, got {value}")
        return value

    return parse


def float_in(lo: float, hi: float, lo_open: bool = False):
    """argparse type: a finite number in [lo, hi] ((lo, hi] with ``lo_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
        if not math.isfinite(value) or value < lo or value > hi or (lo_open and value == lo):
            left = "(" if lo_open else "["
            raise argparse.ArgumentTypeError(f"must be a finite number in {left}{lo:g}, {hi:g}], got {text}")
        return value

    return parse


MAX_SECONDS = 600.0  # one generated clip; longer ones: several calls (memory grows with length)
