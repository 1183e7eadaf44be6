"""A caching memory allocator under the `dvae-jax` command (Linux), for XLA's per-step buffers.

XLA on CPU allocates each executable's temporaries (one block of ~100 MB at the review's shapes)
at every call. glibc's malloc serves blocks above its mmap threshold (at most 32 MB) with fresh
``mmap`` pages and unmaps them on free, so every train step page-faults its whole working set in
again: 32,000 minor faults and ~70 ms of kernel time per VRNN step at the review's shapes
(benchmarks/RESULTS.md). tcmalloc (gperftools) and jemalloc keep freed blocks for reuse: no
faults, and the step is 13-22 % faster. No malloc tunable of glibc avoids it (the threshold is
capped below the block's size), and an allocator cannot be swapped inside a running process, so
the command re-executes itself once with the library in ``LD_PRELOAD`` when one is installed
(Debian: ``apt-get install libtcmalloc-minimal4``; ``make`` installs it when it can).

``DVAE_JAX_ALLOCATOR``: ``auto`` (default: the first of :data:`CANDIDATES` found), ``system``
(glibc's malloc, no re-execution), or the path of a malloc library to preload.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path

ENV = "DVAE_JAX_ALLOCATOR"
_DONE = "_DVAE_JAX_ALLOCATOR_SET"  # set in the re-executed process: never twice
CANDIDATES = ("tcmalloc_minimal", "tcmalloc", "jemalloc")
_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def _known(path: str) -> bool:
    return any(f"lib{name}." in Path(path).name for name in CANDIDATES)


def active(env: dict[str, str] | None = None) -> str | None:
    """The caching allocator preloaded in ``env`` (this process's environment), or None."""
    env = os.environ if env is None else env
    for entry in env.get("LD_PRELOAD", "").replace(" ", ":").split(":"):
        if entry and _known(entry):
            return entry
    return None


def find() -> str | None:
    """The path of an installed caching allocator, or None (what ``auto`` preloads)."""
    for name in CANDIDATES:
        for d in _DIRS:
            for so in sorted(Path(d).glob(f"lib{name}.so*")) if Path(d).is_dir() else ():
                if so.name.count(".so") == 1 and not so.name.endswith(".so"):  # libx.so.4, not the dev link
                    return str(so)
        found = ctypes.util.find_library(name)
        if found:
            return found
    return None


def choice(env: dict[str, str] | None = None) -> str | None:
    """The library to preload for this environment, or None (nothing to do)."""
    env = os.environ if env is None else env
    want = env.get(ENV, "auto").strip() or "auto"
    if not sys.platform.startswith("linux") or want == "system" or env.get(_DONE):
        return None
    if active(env):
        return None
    if want != "auto":
        return want if Path(want).is_file() else None
    return find()


def reexec(argv: list[str]) -> None:
    """Replaces this process by ``python -m dvae_jax.cli argv`` with the allocator preloaded
    (same PID, file descriptors and exit status); returns when there is nothing to do or the
    re-execution is impossible (the command then runs with the system allocator)."""
    lib = choice()
    want = os.environ.get(ENV, "auto").strip()
    if lib is None and want not in ("", "auto", "system") and not os.environ.get(_DONE):
        print(f"{ENV}={want}: no such file; running with the system malloc "
              f"(set it to auto, system or the path of libtcmalloc / libjemalloc)", file=sys.stderr)
    if lib is None:
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(x for x in (lib, env.get("LD_PRELOAD", "")) if x)
    env[_DONE] = "1"
    env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))  # no "large alloc" lines
    # The same dvae_jax as this process, first on the path; -P: not a dvae_jax folder that
    # happens to be in the current directory (python -m would otherwise put it first).
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(x for x in (root, env.get("PYTHONPATH", "")) if x)
    flags = ["-P"] if sys.version_info >= (3, 11) else []
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *flags, "-m", "dvae_jax.cli", *argv], env)
    except OSError:
        return
