"""benchmarks/gpu.sh (run by a user with an NVIDIA GPU; CI has none): it parses, and every bench
option, setting and precision it uses exists in `dvae-jax bench --help` and in the bench module."""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from dvae_jax import bench, bench_precision

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"


def _bench_command(text: str) -> str:
    """The script's `dvae-jax bench` command, continuation lines joined, and the REVIEW array."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.search(r"dvae-jax\"? bench ", line))
    block = [lines[start]]
    while block[-1].rstrip().endswith("\\"):
        block.append(lines[start + len(block)])
    block += [line for line in lines if line.strip().startswith("REVIEW=(")]
    return "\n".join(block)


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_gpu_script_parses():
    result = subprocess.run(
        ["bash", "-n", str(SCRIPT)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_gpu_script_uses_only_existing_bench_options():
    # Given the options the script passes to `dvae-jax bench`
    used = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", _bench_command(SCRIPT.read_text())))
    assert {"--device", "--precision", "--settings", "--json", "--review-repo"} <= used
    # When bench's help is printed as a user would see it
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    help_text = subprocess.run(
        [sys.executable, "-m", "dvae_jax.cli", "bench", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    offered = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", help_text))
    # Then each of them is offered
    assert used <= offered, used - offered


def test_gpu_script_defaults_name_existing_settings_and_precisions():
    text = SCRIPT.read_text()
    settings = re.search(r"SETTINGS=\$\{SETTINGS:-([\w,]+)\}", text).group(1).split(",")
    precisions = re.search(r"PRECISIONS=\$\{PRECISIONS:-([\w ]+)\}", text).group(1).split()
    models = re.search(r"MODELS=\$\{MODELS:-([\w,]+)\}", text).group(1).split(",")
    assert set(settings) == set(bench.SETTINGS)
    assert set(precisions) == set(bench_precision.PRECISIONS)
    assert set(models) == set(bench.PRESETS)
