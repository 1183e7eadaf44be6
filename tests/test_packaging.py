"""The package as a wheel: built offline, installed outside the checkout, run from an empty folder.

An editable install hides missing package data (it reads the checkout); a wheel does not.
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("setup.cfg", "pyproject.toml", "README.md", "dvae_jax")


def _pip(*args: str, cwd: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", *args], check=False, cwd=cwd, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, f"pip {' '.join(args)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources (the checkout gets no build/ or egg-info)."""
    pytest.importorskip("setuptools.command.bdist_wheel",
                        reason="setuptools >= 70.1 builds wheels offline (requirements-test.txt)")
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(out), ".", cwd=src)
    (path,) = out.glob("dvae_jax-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    _pip("install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel), cwd=target)
    return target


def _run(installed: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(installed), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, *args], check=False, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_wheel_holds_the_configs_the_reference_and_the_command(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {p.name for p in (ROOT / "dvae_jax" / "configs").glob("*.json")}
    assert shipped and {f"dvae_jax/configs/{n}" for n in shipped} <= set(names)
    assert "dvae_jax/reference_torch.py" in names and "dvae_jax/data/sentences.txt" in names
    assert not any(n.startswith(("tests/", "benchmarks/", "experiments/")) for n in names)
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[console_scripts]" in text and "dvae-jax = dvae_jax.cli:main" in text


def test_installed_wheel_runs_from_an_empty_folder(installed, tmp_path):
    """Given the wheel installed outside the checkout, when a user runs it from an empty folder,
    then the named configs and the bench command are there (nothing read from the checkout)."""
    where = _run(installed, "-c", "import dvae_jax, sys; print(dvae_jax.__file__)", cwd=tmp_path)
    assert Path(where.stdout.strip()).resolve().is_relative_to(installed.resolve()), where

    r = _run(installed, "-m", "dvae_jax.cli", "describe", "--config", "vrnn_mel_gaussian", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "model: VRNN" in r.stdout and "parameters: " in r.stdout

    r = _run(installed, "-m", "dvae_jax.cli", "bench", "--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("usage: dvae-jax bench")
    assert list(tmp_path.iterdir()) == []  # nothing written where the user stands
