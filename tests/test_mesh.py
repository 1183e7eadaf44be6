"""Training on a device mesh (issue 16): the sharded step is the single-device step, checkpoints
move between layouts, a killed run resumes exactly under the mesh, and two processes on loopback
train what one process trains.

The pytest process has one CPU device (conftest.py); the checks run in subprocesses whose
XLA_FLAGS force 4 host devices (tests/mesh_checks.py prints what it measured as JSON).

Tolerances: the mesh splits each batch's rows over devices and XLA adds the partial sums of the
gradient (and of the loss) in another order than one device does, so float32 results differ by
rounding. One step from the same state: relative error below 1e-5 per leaf (seen: 3e-7). A whole
run (24 steps, Adam, dropout off): below 2e-5 (seen: 1.3e-6 one process, 1.7e-6 two processes).
The same layout is bitwise reproducible (resume after a kill: difference 0.0).
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dvae_jax import config as config_lib
from dvae_jax import distributed, errors
from dvae_jax.data import batches as batches_lib
from tests import tiny_runs

ROOT = Path(__file__).resolve().parents[1]
FAST = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
STEP_RTOL = 1e-5
RUN_RTOL = 2e-5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(config file, config, dataset): the tiny VRNN run, 2 epochs of 12 steps, batch 8."""
    root = tmp_path_factory.mktemp("mesh")
    cfg, ds = tiny_runs.tiny_mel(root / "cache", epochs=2)
    path = root / "cfg.json"
    config_lib.save_json(cfg, str(path))
    return path, cfg, ds


def _env(devices: int, **extra) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {FAST}", **extra)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _check(*args) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "mesh_checks.py"), *map(str, args)],
                          check=False, env=_env(4), capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("MESH_CHECK ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("MESH_CHECK "):])


def _train(cfg_path, workdir, *extra, devices=4, env=None, report=False, **popen):
    cmd = [sys.executable, "-m", "dvae_jax.cli", "train", "--config", str(cfg_path), "--workdir", str(workdir),
           *([] if report else ["--no-report"]), *extra]
    return subprocess.Popen(cmd, env=env or _env(devices), cwd=ROOT, **popen)


def test_sharded_step_equals_the_single_device_step(tiny):
    # Given the same state, batches and keys, When five steps run on one device and on data=4
    got = _check("step", tiny[0])
    # Then the mesh really holds replicated parameters and a row-split batch
    assert got["param_spec"] == "P() on 4" and got["batch_spec"].startswith("P('data'") and "on 4" in got["batch_spec"]
    assert got["one_spec"] == "single on 1"
    # and every result agrees to float32 rounding
    for what in ("first_step", "five_steps", "opt_state", "metrics"):
        assert got[what]["rel"] < STEP_RTOL, (what, got[what])
    assert got["eval"] < STEP_RTOL
    # a carried recurrent state (data.batching=streams) is split by rows and continues alike
    assert got["streams"]["carry_spec"].startswith("P('data'"), got["streams"]
    assert got["streams"]["errors"]["rel"] < RUN_RTOL, got["streams"]  # seen: 4.1e-6 (3 steps of 20 frames)


def test_checkpoints_move_between_one_and_four_devices(tiny, tmp_path):
    got = _check("layouts", tiny[0], tmp_path)
    # a run on 4 devices and one on 1 device agree
    assert got["fit_one_vs_four"]["rel"] < RUN_RTOL, got
    # the 4-device checkpoint restores on one device and on the mesh to the same bits
    assert got["four_restored_on_one_vs_four"] == {"abs": 0.0, "rel": 0.0}
    assert got["restored_specs"] == ["single on 1", "P() on 4"]
    # each run resumed on the other layout finishes its extra epoch, and they still agree
    assert got["resumed"] == [24, 24, "epochs", "epochs"]
    assert got["resumed_one_vs_four"]["rel"] < RUN_RTOL, got
    assert got["epoch_rows"] == [2, 2] and got["devices"] == [[1, 4], [4, 1]]


def test_sigkill_then_resume_under_the_mesh_is_exact(tiny, tmp_path):
    cfg_path, cfg, ds = tiny
    spe = batches_lib.steps_per_epoch(ds, "train", cfg.train.batch_size, cfg.data.seq_len)
    kill_after = spe + 3 if (spe + 3) % spe else spe + 4  # a checkpoint in the middle of epoch 1
    killed = tmp_path / "killed"
    proc = _train(cfg_path, killed, "--mesh", "data=4", "--quiet", stdout=subprocess.DEVNULL,
                  stderr=subprocess.PIPE)
    killed_at = tiny_runs.sigkill_at_checkpoint(proc, killed, kill_after, timeout_s=300)
    assert killed_at is not None, proc.stderr.read().decode()[-2000:]
    got = _check("resume", cfg_path, killed, tmp_path)
    assert not got["killed_at"]["done"] and 0 < got["killed_at"]["batch"] < spe  # really mid-epoch
    # the resumed run is bitwise the uninterrupted one, logs included
    assert got["steps"] == [2 * spe, 2 * spe]
    assert got["errors"] == {"abs": 0.0, "rel": 0.0} and got["val_equal"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_loopback_train_what_one_process_trains(tiny, tmp_path):
    # Given two processes with 2 CPU devices each, joined by JAX's distributed runtime
    cfg_path = tiny[0]
    port = _free_port()
    procs = [
        _train(cfg_path, tmp_path / "mh", env=_env(2, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                                   JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)),
               report=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    # Then process 0 alone reports, on the 4-device mesh of both hosts
    assert "devices: mesh data 4 over 4 cpu device(s), 2 process(es)" in outs[0][0]
    assert "best validation -ELBO" in outs[0][0] and "best validation" not in outs[1][0]
    # its report too (every process opened the checkpoints: orbax synchronises them)
    assert (tmp_path / "mh" / "report.md").exists()
    # and the parameters agree with one process on 4 devices and on one device (same global batch)
    got = _check("compare", cfg_path, tmp_path / "mh", tmp_path)
    assert got["steps"] == 24 and got["epoch_rows"] == 2 and got["devices"] == [4, 4]
    assert got["vs_one_process_four_devices"]["rel"] < RUN_RTOL, got
    assert got["vs_one_device"]["rel"] < RUN_RTOL, got


def test_bad_meshes_are_one_line_errors(tiny, tmp_path):
    # in this process (one device)
    with pytest.raises(errors.ConfigError, match="2 devices asked for, 1 available"):
        distributed.Placement.from_text("data=2")
    for text in ("bogus", "data=x", "members=2", "data=1,data=1"):
        with pytest.raises(errors.ConfigError, match="expected data=N|auto"):
            distributed.Placement.from_text(text)
    with pytest.raises(errors.ConfigError, match="at least one device"):
        distributed.Placement.from_text("data=0")
    assert distributed.Placement.from_text("data=auto").describe().startswith("mesh data 1 over 1")
    # a batch the data axis does not divide, from the command line on 4 devices
    proc = _train(tiny[0], tmp_path / "r", "--mesh", "data=3", stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        "dvae-jax train: error: train.batch_size=8 does not split over the mesh's data axis (3 devices): "
        "use a multiple of 3, or a --mesh data=N whose N divides 8")


@pytest.mark.parametrize("env, match", [
    ({"JAX_NUM_PROCESSES": "2"}, "JAX_COORDINATOR_ADDRESS, JAX_PROCESS_ID not set"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "two"}, "must be integers"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, r"must be in \[0, "),
    ({"JAX_COORDINATOR_ADDRESS": "node1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}, "expected HOST:PORT"),
    ({"JAX_COORDINATOR_ADDRESS": "node1:99999", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "expected HOST:PORT"),
])
def test_incomplete_multi_host_variables_are_one_line_errors(monkeypatch, env, match):
    for k in distributed.ENV:
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(errors.ConfigError, match=match):
        distributed.initialize()


def test_a_host_reads_only_its_rows_of_every_batch(tiny):
    _, cfg, ds = tiny
    args = (ds, "train", 8, cfg.data.seq_len, 3, 1)
    full = list(batches_lib.train_batches(*args))
    half = list(batches_lib.train_batches(*args, rows=(4, 8), start_batch=2))
    assert len(half) == len(full) - 2
    for a, b in zip(full[2:], half, strict=True):
        np.testing.assert_array_equal(a["x"][4:], b["x"])
        np.testing.assert_array_equal(a["mask"][4:], b["mask"])
    full = list(batches_lib.window_batches(ds, "val", 8, cfg.data.seq_len))
    part = list(batches_lib.window_batches(ds, "val", 8, cfg.data.seq_len, rows=(2, 6)))
    assert len(part) == len(full)
    for a, b in zip(full, part, strict=True):
        np.testing.assert_array_equal(a["x"][2:6], b["x"])
        np.testing.assert_array_equal(a["mask"][2:6], b["mask"])


def _multi_host_env(monkeypatch, address: str, pid: int) -> None:
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", address)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", str(pid))


def test_an_unreachable_or_busy_coordinator_is_one_line_not_an_abort(monkeypatch):
    # JAX itself would abort the process with a C++ fatal error after its 300 s timeout
    port = _free_port()  # nothing listens there
    _multi_host_env(monkeypatch, f"127.0.0.1:{port}", 1)
    monkeypatch.setenv("DVAE_JAX_COORDINATOR_TIMEOUT", "1")
    t0 = time.time()
    with pytest.raises(errors.RunError, match="process 1 cannot reach the coordinator .*start process 0"):
        distributed.initialize()
    assert time.time() - t0 < 10
    with socket.socket() as busy:  # process 0 on a port someone else holds
        busy.bind(("", 0))
        busy.listen()
        _multi_host_env(monkeypatch, f"127.0.0.1:{busy.getsockname()[1]}", 0)
        with pytest.raises(errors.RunError, match="process 0 cannot listen on port .*choose a free port"):
            distributed.initialize()
