"""The sub-commands of ``dvae-jax``: one module each (or a small group), each with
``register(subparsers)`` (its argparse, the only place it lives) and ``run(args) -> int``. They
parse, call a pipeline and print; user errors propagate as ``errors.DvaeError`` to ``cli.main``."""

from __future__ import annotations

import importlib

# In the order ``dvae-jax --help`` lists them.
MODULES = ("describe", "prepare", "train", "evaluate", "generate", "sweep", "report", "run_dir", "interop", "bench")


def register_all(subparsers) -> None:
    """Adds every sub-command to an argparse sub-parser collection."""
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
