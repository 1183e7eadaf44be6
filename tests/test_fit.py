"""The fit loop on a tiny mini corpus: run files, best checkpoint, exact resume after SIGKILL,
kills during saves, and the NaN guard."""

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from dvae_jax import checkpoint, fit, models
from dvae_jax import config as config_lib
from dvae_jax.data import batches as batches_lib
from tests import tiny_runs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_runs.tiny_mel(tmp_path_factory.mktemp("cache"), epochs=3, kl_schedule="linear",
                              kl_warmup_epochs=0, kl_anneal_epochs=2)


def _params(workdir, kind="latest"):
    cfg = checkpoint.load_config(workdir)
    ck = checkpoint.RunCheckpoints(workdir)
    try:
        return ck.restore(kind, models.init(cfg.model, jax.random.PRNGKey(0)))
    finally:
        ck.close()


def test_fit_writes_a_complete_run_and_best_holds_the_best(tiny, tmp_path):
    cfg, ds = tiny
    result = fit.fit(cfg, tmp_path / "run", progress=False, dataset=ds)
    run = tmp_path / "run"
    assert result.stopped == "epochs" and result.epochs_run == 3
    for name in ("config.json", "metrics.jsonl", "loss.png", "kl_per_dim.png"):
        assert (run / name).exists(), name
    epochs = [r for r in fit.read_metrics(run) if r["kind"] == "epoch"]
    steps = [r for r in fit.read_metrics(run) if r["kind"] == "step"]
    assert len(steps) == result.steps and all(0 <= r["kl_weight"] <= 1 for r in steps)
    best = min(epochs, key=lambda r: r["val_loss"])
    assert result.best_val == pytest.approx(best["val_loss"])
    # the best checkpoint really holds the best weights: re-evaluating them gives the logged value
    ck = _params(run, "best")
    assert ck.meta["val_loss"] == pytest.approx(best["val_loss"])
    _, eval_step = fit.train.make_steps(result and config_lib.load_json(config_lib.Config, str(run / "config.json")).model,
                                        cfg.train, fit.train.make_optimizer(cfg.train, 1, 1), 1, 1)
    rerun = fit.evaluate_split(eval_step, ck.variables, ds, "val", cfg.train.batch_size, cfg.data.seq_len,
                               jax.random.split(jax.random.PRNGKey(cfg.train.seed), 3)[2])
    assert rerun["loss"] == pytest.approx(best["val_loss"], rel=1e-5)
    # where the time went: every activity accounted for, frames = (steps - the compiling one) x batch
    t = result.timing
    parts = sum(t[f"time_{k}_s"] for k in (*fit.Clock.KINDS, "other"))
    assert parts == pytest.approx(t["time_wall_s"], rel=1e-6)
    assert 0 < t["step_share"] < 1 and t["time_compile_s"] > 0 and t["time_validation_s"] > 0
    frames = (result.steps - 1) * cfg.train.batch_size * cfg.data.seq_len
    assert t["step_frames_per_s"] * t["time_step_s"] == pytest.approx(frames, rel=1e-6)
    assert all("frames_per_s" in r["timing"] and "step_share" in r["timing"] for r in epochs)


def test_existing_run_needs_resume_and_resume_needs_the_same_config(tiny, tmp_path):
    cfg, ds = tiny
    short = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1))
    fit.fit(short, tmp_path / "r", progress=False, dataset=ds)
    with pytest.raises(fit.TrainingError, match="--resume"):
        fit.fit(short, tmp_path / "r", progress=False, dataset=ds)
    other = dataclasses.replace(short, model=dataclasses.replace(short.model, z_dim=5))
    with pytest.raises(fit.TrainingError, match="model.z_dim"):
        fit.fit(other, tmp_path / "r", resume=True, progress=False, dataset=ds)
    # more epochs is allowed and continues from where it stopped
    longer = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=2))
    res = fit.fit(longer, tmp_path / "r", resume=True, progress=False, dataset=ds)
    assert res.epochs_run == 2


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tiny, tmp_path):
    cfg, ds = tiny
    # Given an uninterrupted run
    fit.fit(cfg, tmp_path / "a", progress=False, dataset=ds)
    want = _params(tmp_path / "a")
    spe = batches_lib.steps_per_epoch(ds, "train", cfg.train.batch_size, cfg.data.seq_len)
    kill_after = spe + 3 if (spe + 3) % spe else spe + 4  # a checkpoint in the middle of epoch 1
    assert kill_after % spe != 0
    cfg_file = tmp_path / "cfg.json"
    config_lib.save_json(cfg, str(cfg_file))
    # When the same training runs in a process that is SIGKILLed mid-epoch
    b = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, "-m", "dvae_jax.cli", "train", "--config", str(cfg_file),
                             "--workdir", str(b), "--quiet", "--no-report"], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed_at = tiny_runs.sigkill_at_checkpoint(proc, b, kill_after)
    assert killed_at is not None, proc.stderr.read().decode()[-2000:]
    assert killed_at < spe * cfg.train.epochs, "the run finished before it could be killed"
    meta = _params(b).meta
    assert not meta["done"] and 0 < meta["batch"] < spe  # really mid-epoch
    # and is resumed
    res = fit.fit(cfg, b, resume=True, progress=False, dataset=ds)
    # Then the parameters are bitwise those of the uninterrupted run
    got = _params(b)
    assert res.stopped == "epochs" and got.step == want.step
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)),
                           got.variables, want.variables)
    # and the per-epoch logs agree too (the killed process's partial epoch is re-run, not double counted)
    va = [r["val_loss"] for r in fit.read_metrics(tmp_path / "a") if r["kind"] == "epoch"]
    vb = [r["val_loss"] for r in fit.read_metrics(b) if r["kind"] == "epoch"]
    assert va == vb


SAVER = r"""
import sys, jax, jax.numpy as jnp
from dvae_jax import checkpoint
ck = checkpoint.RunCheckpoints(sys.argv[1])
for step in range(1, 10000):
    v = {"w": jnp.full((512, 512), float(step)), "b": jnp.full((7,), float(step))}
    ck.save("latest", step, v, {"step": jnp.asarray(step)}, {"step": step})
    print(step, flush=True)
"""


@pytest.mark.parametrize("delay", [0.3, 0.9, 1.7])
def test_kill_during_saves_leaves_a_loadable_checkpoint(tmp_path, delay):
    # Given a process saving checkpoints back to back
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first = proc.stdout.readline()  # at least one save completed
    assert first.strip()
    time.sleep(delay)
    # When it is SIGKILLed at an arbitrary moment (usually mid-save)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Then the newest complete checkpoint loads and is self-consistent
    ck = checkpoint.RunCheckpoints(tmp_path)
    try:
        template = {"w": np.zeros((512, 512), np.float32), "b": np.zeros((7,), np.float32)}
        got = ck.restore("latest", template)
    finally:
        ck.close()
    s = got.meta["step"]
    assert s == got.step >= 1
    assert np.all(np.asarray(got.variables["w"]) == s) and np.all(np.asarray(got.variables["b"]) == s)


def test_nan_guard_rolls_back_then_stops_without_writing_nan(tiny, tmp_path, monkeypatch):
    cfg, ds = tiny
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=5, nan_patience=2, nan_max_rollbacks=2))
    real = batches_lib.train_batches

    def poisoned(*args, **kwargs):
        for i, b in enumerate(real(*args, **kwargs)):
            if kwargs.get("epoch", args[5] if len(args) > 5 else 0) >= 1:
                b = dict(b, x=np.full_like(b["x"], np.nan))
            yield b

    monkeypatch.setattr(batches_lib, "train_batches", poisoned)
    with pytest.raises(fit.TrainingError, match="non-finite.*rollbacks"):
        fit.fit(cfg, tmp_path / "n", progress=False, dataset=ds)
    ck = _params(tmp_path / "n")
    assert fit.params_finite(ck.variables)
    assert ck.meta["epoch"] == 1 and ck.meta["batch"] == 0  # the last good checkpoint: end of epoch 0


def test_kl_convention_review_prints_validation_in_the_review_s_convention(tiny, tmp_path, capsys):
    cfg, ds = tiny
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1, kl_convention="review"))
    fit.fit(cfg, tmp_path / "run", progress=False, dataset=ds)
    (rec,) = [r for r in fit.read_metrics(tmp_path / "run") if r["kind"] == "epoch"]
    assert rec["val_kl_review"] == pytest.approx(rec["val_kl"] + cfg.model.z_dim / 2)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("epoch 0:"))
    assert "-ELBO (the review's KL convention)" in line
    assert f"KL {rec['val_kl_review']:.4f}" in line and f"{rec['val_loss_review']:.4f}" in line
