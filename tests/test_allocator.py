"""The caching allocator under the command: what is preloaded, when, and that the re-executed
command runs with it (benchmarks/RESULTS.md: glibc's malloc page-faults XLA's per-step buffers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dvae_jax import allocator

ROOT = Path(__file__).resolve().parents[1]
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")


@linux
def test_choice_follows_the_environment(tmp_path):
    lib = tmp_path / "libjemalloc.so.2"
    lib.write_bytes(b"")
    assert allocator.choice({allocator.ENV: "system"}) is None
    assert allocator.choice({allocator.ENV: str(lib)}) == str(lib)
    assert allocator.choice({allocator.ENV: str(tmp_path / "missing.so")}) is None
    assert allocator.choice({allocator.ENV: str(lib), "LD_PRELOAD": "/x/libtcmalloc.so.4"}) is None
    assert allocator.choice({allocator.ENV: str(lib), allocator._DONE: "1"}) is None  # never twice
    assert allocator.choice({}) == allocator.find()


def test_active_reads_ld_preload(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/opt/other.so:/usr/lib/libtcmalloc_minimal.so.4")
    assert allocator.active() == "/usr/lib/libtcmalloc_minimal.so.4"
    monkeypatch.setenv("LD_PRELOAD", "/opt/other.so")
    assert allocator.active() is None


@linux
@pytest.mark.skipif(allocator.find() is None, reason="no tcmalloc / jemalloc installed")
def test_the_command_re_executes_itself_with_the_allocator(tmp_path):
    out = tmp_path / "b.json"
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.ENV, allocator._DONE)}
    cmd = [sys.executable, "-m", "dvae_jax.cli", "--no-cache", "bench", "--tiny", "--no-torch", "--models",
           "vrnn", "--settings", "review", "--steps", "1", "--warmup", "0", "--json", str(out)]
    subprocess.run(cmd, cwd=ROOT, env=dict(env, JAX_PLATFORMS="cpu"), check=True, capture_output=True, timeout=300)
    assert json.loads(out.read_text())["env"]["allocator"] == allocator.find()
    subprocess.run(cmd, cwd=ROOT, env=dict(env, JAX_PLATFORMS="cpu", **{allocator.ENV: "system"}), check=True,
                   capture_output=True, timeout=300)
    assert json.loads(out.read_text())["env"]["allocator"] is None


def test_a_wrong_path_says_so_in_one_line_and_runs_on(monkeypatch, capsys):
    monkeypatch.setenv(allocator.ENV, "/nonexistent/libtcmalloc.so.4")
    monkeypatch.delenv(allocator._DONE, raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    allocator.reexec(["describe"])  # returns: nothing to preload
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "/nonexistent/libtcmalloc.so.4: no such file" in err[0]


@linux
@pytest.mark.skipif(allocator.find() is None, reason="no tcmalloc / jemalloc installed")
def test_the_re_executed_command_imports_the_same_dvae_jax_not_one_in_the_current_directory(tmp_path):
    # Given a folder named dvae_jax in the current directory that is not the package
    (tmp_path / "dvae_jax").mkdir()
    (tmp_path / "dvae_jax" / "__init__.py").write_text("raise SystemExit('the wrong dvae_jax')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.ENV, allocator._DONE)}
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(ROOT), env.get("PYTHONPATH", "")) if x)
    code = "import sys; sys.path.remove(''); sys.argv = ['dvae-jax', 'describe', '--config', 'demo']; " \
           "from dvae_jax import cli; raise SystemExit(cli.main())"
    # When the command re-executes itself from there
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=tmp_path, env=dict(env, JAX_PLATFORMS="cpu"),
                          capture_output=True, text=True, timeout=300)
    # Then the re-executed process ran the real package
    assert done.returncode == 0, done.stderr
    assert "parameters:" in done.stdout
