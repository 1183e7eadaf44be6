"""Runs that refuse to mislead and survive storage failures: resume on an empty directory, a
missing best checkpoint, divergence, empty validation split, full or read-only disks, corrupted
checkpoints and config.json, and metrics.jsonl without duplicate rows after a resume."""

import builtins
import contextlib
import dataclasses
import errno
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from dvae_jax import checkpoint, cli, errors, fit, models
from dvae_jax import config as config_lib
from dvae_jax.data import batches as batches_lib
from dvae_jax.data import prepare
from tests import tiny_runs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_runs.tiny_mel(tmp_path_factory.mktemp("cache"), epochs=2, kl_schedule="none")


def _train(cfg, **changes):
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **changes))


def _restore(workdir, kind="latest"):
    cfg = checkpoint.load_config(workdir)
    ck = checkpoint.RunCheckpoints(workdir)
    try:
        return ck.restore(kind, models.init(cfg.model, jax.random.PRNGKey(0)))
    finally:
        ck.close()


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------------------------------------
# Runs that refuse to mislead


def test_resume_on_a_missing_directory_says_it_starts_fresh(tiny, tmp_path, capsys):
    cfg, ds = tiny
    res = fit.fit(_train(cfg, epochs=1), tmp_path / "new", resume=True, progress=False, dataset=ds)
    out = capsys.readouterr().out
    assert f"{tmp_path / 'new'}: no checkpoint to resume; starting a fresh run" in out.splitlines()
    assert res.stopped == "epochs" and res.epochs_run == 1


def test_missing_best_checkpoint_is_a_printed_fallback_or_an_error(tiny, tmp_path, capsys):
    cfg, ds = tiny
    run = tmp_path / "r"
    # Given a run stopped after 2 steps: no validation yet, so no best checkpoint
    fit.fit(cfg, run, progress=False, dataset=ds, stop_after_steps=2)
    capsys.readouterr()
    # When it is loaded for evaluation, the latest is used and a line says so
    _, variables, meta = checkpoint.load_run(run, "best")
    err = capsys.readouterr().err
    assert f"no best checkpoint in {run}; using latest step 2" in err
    assert meta["checkpoint"] == "latest" and meta["step"] == 2
    # Given a run whose only checkpoint is the untrained step 0: refused, never a silent model
    untrained = tmp_path / "u"
    checkpoint.save_config(untrained, fit.resolve_model(cfg, ds.n_bins))
    ck = checkpoint.RunCheckpoints(untrained)
    ck.save("latest", 0, variables, None, fit.LoopState())
    ck.close()
    with pytest.raises(errors.RunError, match="untrained step 0.*--resume"):
        checkpoint.load_run(untrained, "best")


def _fake_validation(monkeypatch, losses):
    """evaluate_split returns the given losses, one per epoch (the real one runs too)."""
    real, it = getattr(fit.evaluate_split, "real", fit.evaluate_split), iter(losses)

    def fake(*args, **kwargs):
        out = real(*args, **kwargs)
        return dict(out, loss=next(it))

    fake.real = real
    monkeypatch.setattr(fit, "evaluate_split", fake)


def test_non_finite_validation_stops_with_the_last_checkpoint_intact(tiny, tmp_path, monkeypatch):
    cfg, ds = tiny
    _fake_validation(monkeypatch, [1.0, float("nan")])
    with pytest.raises(fit.TrainingError, match="epoch 1: validation loss nan is not finite"):
        fit.fit(_train(cfg, epochs=3, checkpoint_every_steps=0), tmp_path / "n", progress=False,
                dataset=ds)
    latest, best = _restore(tmp_path / "n"), _restore(tmp_path / "n", "best")
    assert latest.meta["epoch"] == 1 and latest.meta["batch"] == 0 and latest.meta["last_val"] == 1.0
    assert best.meta["val_loss"] == 1.0 and fit.params_finite(latest.variables)


def test_diverging_validation_loss_stops_the_cli_with_one_line(tiny, tmp_path, monkeypatch, capsys):
    cfg, ds = tiny
    # Given validation losses that fall, then stay above twice the lowest for 2 epochs
    _fake_validation(monkeypatch, [-3.0, -4.0, 0.5, 1.0, 2.0])
    monkeypatch.setattr(prepare, "prepare_dataset", lambda *a, **k: ds)
    cfg_file = tmp_path / "cfg.json"
    config_lib.save_json(_train(cfg, epochs=5, early_stop_patience=10, diverge_patience=2), str(cfg_file))
    # When trained from the command line
    rc = cli.main(["train", "--config", str(cfg_file), "--workdir", str(tmp_path / "d"), "--quiet",
                   "--no-report"])
    # Then it stops with status 2 and one line, and the best checkpoint stays loadable
    assert rc == 2
    line = _one_line(capsys.readouterr().err)
    assert "epoch 3: validation loss 1.0000 above 0.0000" in line and "diverged" in line
    assert _restore(tmp_path / "d", "best").meta["val_loss"] == -4.0


def test_divergence_counts_only_epochs_in_a_row(tiny, tmp_path, monkeypatch):
    cfg, ds = tiny
    _fake_validation(monkeypatch, [-4.0, 1.0, -3.9, 1.0])  # never two bad epochs in a row
    res = fit.fit(_train(cfg, epochs=4, early_stop_patience=10, diverge_patience=2), tmp_path / "ok", progress=False,
                  dataset=ds)
    assert res.stopped == "epochs" and res.epochs_run == 4


def test_empty_validation_split_is_refused(tiny, tmp_path, monkeypatch):
    cfg, ds = tiny
    # Given a prepared corpus whose validation split holds no frame
    data = ds.split("val")
    empty = dataclasses.replace(data, offsets=data.offsets[:1], utt_ids=[], speakers=[], texts=[],
                                paths=[], trim=data.trim[:0], features=data.features[:0])
    real = ds.split
    monkeypatch.setattr(ds, "split", lambda name: empty if name == "val" else real(name))
    # Then training refuses before the first step, with the remedy
    with pytest.raises(errors.DataError, match=r"val split .* is empty \(0 frames\).*val_fraction"):
        fit.fit(cfg, tmp_path / "e", progress=False, dataset=ds)
    assert not (tmp_path / "e" / "checkpoints").exists()
    # and a validation pass over it never reports a 0.0 loss
    monkeypatch.setattr(batches_lib, "window_batches", lambda *a, **k: iter(()))
    with pytest.raises(errors.DataError, match="empty"):
        fit.evaluate_split(None, None, ds, "val", 8, 20, jax.random.PRNGKey(0))


# ---------------------------------------------------------------------------------------------
# Storage failures


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_during_a_checkpoint_save(tiny, tmp_path, monkeypatch, capsys):
    cfg, ds = tiny
    assert batches_lib.steps_per_epoch(ds, "train", cfg.train.batch_size, cfg.data.seq_len) > 6
    run = tmp_path / "full"
    real, calls = ocp.CheckpointManager.save, []

    def save(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2:  # step 0 and step 3 are saved, then the disk is full
            _enospc()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    monkeypatch.setattr(prepare, "prepare_dataset", lambda *a, **k: ds)
    cfg_file = tmp_path / "cfg.json"
    config_lib.save_json(cfg, str(cfg_file))
    rc = cli.main(["train", "--config", str(cfg_file), "--workdir", str(run), "--quiet", "--no-report"])
    assert rc == 2
    line = _one_line(capsys.readouterr().err)
    assert f"cannot write {run / 'checkpoints' / 'latest' / '6'}: No space left on device" in line
    assert "free space on that disk" in line and "step 3" in line and "is intact" in line
    # the last good checkpoint loads, and a resume once there is space again goes on from it
    monkeypatch.setattr(ocp.CheckpointManager, "save", real)
    assert _restore(run).step == 3
    res = fit.fit(cfg, run, resume=True, progress=False, dataset=ds)
    assert res.stopped == "epochs"


class _FailingFile:
    """A file whose writes fail with ENOSPC after ``ok`` of them."""

    def __init__(self, f, ok):
        self.f, self.ok = f, ok

    def write(self, text):
        self.ok -= 1
        if self.ok < 0:
            _enospc()
        return self.f.write(text)

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_disk_full_while_logging_metrics(tiny, tmp_path, monkeypatch):
    cfg, ds = tiny

    def failing_open(path, *args, **kwargs):
        f = builtins.open(path, *args, **kwargs)  # noqa: SIM115 - the logger closes it
        return _FailingFile(f, 4) if str(path).endswith(fit.METRICS_FILE) else f

    monkeypatch.setattr(fit, "open", failing_open, raising=False)
    with pytest.raises(errors.StorageError, match=r"cannot write .*metrics\.jsonl: No space left"):
        fit.fit(cfg, tmp_path / "m", progress=False, dataset=ds)
    assert _restore(tmp_path / "m").step == 3  # the periodic save before the failure


def test_disk_full_writing_config_json_and_reports(tiny, tmp_path, monkeypatch):
    cfg, _ = tiny
    monkeypatch.setattr(config_lib, "save_json", _enospc)
    with pytest.raises(errors.StorageError, match=r"cannot write .*config\.json: No space left"):
        checkpoint.save_config(tmp_path / "c", cfg)
    with pytest.raises(errors.StorageError, match=r"cannot write .*results\.json"):
        checkpoint.write_json_atomic(tmp_path / "no" / "such" / "dir" / "results.json", {"a": 1})


@contextlib.contextmanager
def _tmpfs(path: Path, options: str):
    """A tiny tmpfs at ``path`` (needs root and mount rights; the test is skipped otherwise)."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command: the tmpfs tests need one (the injected failures still run)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, f"dvae{uuid.uuid4().hex[:6]}", str(path)],
                       check=False, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}): the injected failures still run")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def test_read_only_workdir_is_one_line(tiny, tmp_path, capsys):
    cfg, ds = tiny
    with (_tmpfs(tmp_path / "ro", "size=1m,ro") as ro,
          pytest.raises(errors.StorageError, match=r"cannot write .*ro.*Read-only file system")):
        fit.fit(cfg, ro / "run", progress=False, dataset=ds)


def test_really_full_tmpfs_keeps_the_last_checkpoint(tiny, tmp_path):
    cfg, ds = tiny
    with _tmpfs(tmp_path / "small", "size=1200k") as small:
        run = small / "run"
        with pytest.raises(errors.StorageError, match="No space left on device") as err:
            fit.fit(_train(cfg, epochs=50, checkpoint_every_steps=1), run, progress=False, dataset=ds)
        assert "free space" in str(err.value)
        shutil.rmtree(run / "tensorboard", ignore_errors=True)  # room to read back
        ck = _restore(run)
        assert ck.step >= 1 and ck.meta["epoch"] * 1000 + ck.meta["batch"] >= 1


# ---------------------------------------------------------------------------------------------
# Corrupted files


def _corrupt(step_dir: Path) -> None:
    for f in step_dir.rglob("*"):
        if f.is_file() and ("ocdbt" in str(f) or f.parent.name == "d" or f.name == "metadata"):
            f.write_bytes(f.read_bytes()[: max(0, f.stat().st_size // 3)])


def test_corrupted_latest_step_falls_back_to_the_previous_one(tiny, tmp_path, capsys):
    cfg, ds = tiny
    run = tmp_path / "c"
    fit.fit(cfg, run, progress=False, dataset=ds, stop_after_steps=6)
    latest = run / "checkpoints" / "latest"
    assert sorted(int(p.name) for p in latest.iterdir() if p.name.isdigit()) == [3, 6]
    _corrupt(latest / "6")
    ck = _restore(run)
    assert ck.step == 3
    assert f"checkpoint {latest / '6'} is unreadable" in capsys.readouterr().err
    # every kept step corrupted: one error naming the directory and what to do
    _corrupt(latest / "3")
    with pytest.raises(errors.RunError, match=r"no readable 'latest' checkpoint in .*latest.*backup"):
        _restore(run)


def test_corrupted_config_json_is_one_line(tiny, tmp_path, capsys):
    cfg, ds = tiny
    run = tmp_path / "j"
    fit.fit(cfg, run, progress=False, dataset=ds, stop_after_steps=1)
    text = (run / "config.json").read_text()
    (run / "config.json").write_text(text[: len(text) // 2])
    rc = cli.main(["evaluate", "--workdir", str(run)])
    assert rc == 2
    line = _one_line(capsys.readouterr().err)
    assert f"{run / 'config.json'} is corrupted or truncated" in line and "backup" in line


# ---------------------------------------------------------------------------------------------
# metrics.jsonl after a resume


def test_metrics_have_no_duplicate_rows_after_a_kill_and_resume(tiny, tmp_path, monkeypatch):
    cfg, ds = tiny
    fit.fit(cfg, tmp_path / "a", progress=False, dataset=ds)
    want = fit.read_metrics(tmp_path / "a")
    # Given a run that dies at step 8, after logging steps past its checkpoint at step 6
    real, taken = batches_lib.train_batches, []

    def dying(*args, **kwargs):
        for b in real(*args, **kwargs):
            taken.append(1)
            if len(taken) == 9:
                raise KeyboardInterrupt  # as a kill, after steps 7 and 8 were logged
            yield b

    monkeypatch.setattr(batches_lib, "train_batches", dying)
    with pytest.raises(KeyboardInterrupt):
        fit.fit(cfg, tmp_path / "b", progress=False, dataset=ds)
    monkeypatch.setattr(batches_lib, "train_batches", real)
    logged = [r["step"] for r in fit.read_metrics(tmp_path / "b") if r["kind"] == "step"]
    assert max(logged) == 8 and _restore(tmp_path / "b").step == 6
    # When it is resumed
    fit.fit(cfg, tmp_path / "b", resume=True, progress=False, dataset=ds)
    got = fit.read_metrics(tmp_path / "b")
    # Then every row appears once, as in the uninterrupted run
    key = lambda r: (r["kind"], r["step"])
    assert [key(r) for r in got] == [key(r) for r in want]
    strip = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "timing")}  # wall-clock
    assert [strip(r) for r in got] == [strip(r) for r in want]
    assert json.loads((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()[-1])["kind"] == "epoch"


def test_plateau_state_is_checkpointed_and_resumes_bitwise(tiny, tmp_path, monkeypatch):
    cfg, ds = tiny
    cfg = _train(cfg, epochs=3, lr_schedule="plateau", plateau_patience=1, plateau_factor=0.5,
                 early_stop_patience=10)
    spe = batches_lib.steps_per_epoch(ds, "train", cfg.train.batch_size, cfg.data.seq_len)
    # Given a validation loss that never improves: the LR halves after every epoch but the first,
    # and a run killed in the epoch that trains at half the LR
    _fake_validation(monkeypatch, [1.0, 1.0, 1.0])
    fit.fit(cfg, tmp_path / "a", progress=False, dataset=ds)
    _fake_validation(monkeypatch, [1.0, 1.0, 1.0])
    fit.fit(cfg, tmp_path / "b", progress=False, dataset=ds, stop_after_steps=2 * spe + 1)
    _fake_validation(monkeypatch, [1.0])
    fit.fit(cfg, tmp_path / "b", resume=True, progress=False, dataset=ds)
    epochs = [r for r in fit.read_metrics(tmp_path / "a") if r["kind"] == "epoch"]
    # (each row holds the scale its epoch trained with: the first epoch sets the best)
    assert [r["lr_scale"] for r in epochs] == [1.0, 1.0, 0.5]
    a, b = _restore(tmp_path / "a"), _restore(tmp_path / "b")
    assert a.step == b.step == 3 * spe
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)),
                           a.variables, b.variables)


def test_resuming_a_run_of_an_older_layout_or_an_imported_run_is_refused(tiny, tmp_path):
    cfg, ds = tiny
    resolved = fit.resolve_model(cfg, ds.n_bins)
    variables = models.init(resolved.model, jax.random.PRNGKey(0))
    old_meta = {"epoch": 1, "batch": 0, "seed": 0, "best_val": 1.0, "best_epoch": 0, "bad_epochs": 0,
                "plateau_best": 1.0, "plateau_bad": 0, "skipped": 0, "rollbacks": 0, "sums": {},
                "count": 0, "done": False, "stopped": ""}  # the meta dict of the former fit loop
    for name, meta, match in [("old", old_meta, "older dvae_jax.*new --workdir"),
                              ("imported", {"epoch": 0, "imported": True}, "imported parameters")]:
        run = tmp_path / name
        checkpoint.save_config(run, resolved)
        ck = checkpoint.RunCheckpoints(run)
        ck.save("latest", 5, variables, {"step": np.asarray(5)}, meta)
        ck.close()
        with pytest.raises(fit.TrainingError, match=match):
            fit.fit(cfg, run, resume=True, progress=False, dataset=ds)
