"""The persistent compilation cache: a second process loads what the first compiled."""

import json
import os
import subprocess
import sys
from pathlib import Path

from dvae_jax import compile_cache

ROOT = Path(__file__).resolve().parents[1]

PROGRAM = r"""
import json, sys
import jax, jax.numpy as jnp
from jax import monitoring
from dvae_jax import compile_cache

events = []
monitoring.register_event_listener(lambda name, **kw: events.append(name))
used = compile_cache.enable(sys.argv[1] if len(sys.argv) > 1 else None)
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum() * 3.0)
f(jnp.ones((16, 8))).block_until_ready()
print(json.dumps({"dir": str(used) if used else None,
                  "hits": events.count("/jax/compilation_cache/cache_hits"),
                  "misses": events.count("/jax/compilation_cache/cache_misses")}))
"""


def _run(*args, **env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.update(PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", **env_extra)
    r = subprocess.run([sys.executable, "-c", PROGRAM, *map(str, args)], capture_output=True,
                       text=True, env=env, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


def test_a_second_process_hits_the_cache(tmp_path):
    cache = tmp_path / "jax_cache"
    # Given a first process that compiles with an empty cache directory
    first, _ = _run(cache)
    assert first["dir"] == str(cache) and first["hits"] == 0 and first["misses"] >= 1
    entries = [p for p in cache.rglob("*") if p.is_file()]
    assert entries, "the first process wrote nothing to the cache"
    # When a second process compiles the same program
    second, _ = _run(cache)
    # Then it loads it from the cache
    assert second["hits"] >= 1 and second["misses"] == 0


def test_default_directory_is_the_user_cache(tmp_path):
    # Given XDG_CACHE_HOME and no explicit path
    out, _ = _run(XDG_CACHE_HOME=str(tmp_path / "xdg"))
    # Then the cache lives under it
    assert out["dir"] == str(tmp_path / "xdg" / "dvae_jax" / "jax")
    assert any(p.is_file() for p in (tmp_path / "xdg" / "dvae_jax" / "jax").rglob("*"))


def test_env_var_turns_it_off(tmp_path):
    cache = tmp_path / "off"
    out, _ = _run(cache, DVAE_JAX_NO_COMPILE_CACHE="1")
    assert out["dir"] is None and out["hits"] == 0
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))


def test_unusable_directory_warns_and_goes_on(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    # Given a cache path below a regular file (cannot be created, even as root)
    used = compile_cache.enable(blocker / "cache")
    # Then the cache stays off with one warning line, and nothing fails
    assert used is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "compilation cache off" in err[0] and str(blocker) in err[0]


def test_default_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.default_dir() == tmp_path / "dvae_jax" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert compile_cache.default_dir() == Path.home() / ".cache" / "dvae_jax" / "jax"
