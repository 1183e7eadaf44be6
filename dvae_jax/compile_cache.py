"""JAX's persistent compilation cache, on by default for the `dvae-jax` command.

XLA compiles every jitted step anew in each process; with the cache on, a second process with
the same program (same model shapes, same JAX and backend) loads the compiled executable from
disk instead. Call :func:`enable` before the first compilation (``cli.main`` does, unless
``--no-cache`` is given or ``DVAE_JAX_NO_COMPILE_CACHE=1`` is set). Method and timings:
benchmarks/COMPILE_CACHE.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cc

DISABLE_ENV = "DVAE_JAX_NO_COMPILE_CACHE"
# Cache every program that took this long to compile: the train and eval steps take seconds,
# tiny helper programs (a reshape, a random split) compile in milliseconds and are not worth a
# disk round trip.
MIN_COMPILE_SECONDS = 0.2
MIN_ENTRY_BYTES = 0


def default_dir() -> Path:
    """$XDG_CACHE_HOME/dvae_jax/jax, else ~/.cache/dvae_jax/jax."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dvae_jax" / "jax"


def disabled_by_env() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def enable(path: str | os.PathLike | None = None) -> Path | None:
    """Turns on JAX's persistent compilation cache in ``path``; returns the directory used.

    Args:
        path: the cache directory. None: $JAX_COMPILATION_CACHE_DIR when set (JAX's own
            variable, e.g. the test suite's per-session directory), else :func:`default_dir`.

    Returns:
        The directory, or None when ``DVAE_JAX_NO_COMPILE_CACHE`` is set or the directory cannot
        be created (a warning is printed: the cache is a speed-up, never a reason to fail).
    """
    if disabled_by_env():
        return None
    if path is None:
        path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or default_dir()
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError(13, "not writable")
    except OSError as e:
        print(f"warning: compilation cache off, cannot use {path}: {e.strerror or e}; "
              f"set XDG_CACHE_HOME to a writable directory or {DISABLE_ENV}=1", file=sys.stderr)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    # JAX decides once per process whether the cache is used, at the first compilation: reset
    # that decision so that enabling after some compilation still takes effect.
    jax_cc.reset_cache()
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    if "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES" not in os.environ:
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", MIN_ENTRY_BYTES)
    return path


def disable() -> None:
    """Turns the persistent cache off for this process (compilations after this call)."""
    jax.config.update("jax_compilation_cache_dir", None)
    jax_cc.reset_cache()
