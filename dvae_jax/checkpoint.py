"""Every orbax call lives here: run directories, latest / best checkpoints, atomic saves.

A run directory holds ``config.json`` (the resolved Config) and ``checkpoints/latest`` and
``checkpoints/best``, each an orbax CheckpointManager whose steps hold three items:
``params`` (the Flax variables), ``train`` (optimizer state, step, LR scale, plateau state) and
``meta`` (JSON: the fit loop's state, e.g. epoch, position in the epoch, best validation loss).
Orbax writes each step to a temporary folder and renames it when complete, so a kill or a full
disk during a save leaves the previous step loadable; non-finite parameters are refused before
anything is written. A step that cannot be read (truncated, corrupted) is skipped with a message
for the previous one; a write that fails is one :class:`errors.StorageError` line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gc
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from dvae_jax import config as config_lib
from dvae_jax import errors

CONFIG_FILE = "config.json"
KINDS = ("latest", "best")


class CheckpointError(errors.RunError):
    """A run directory or checkpoint that cannot be used; the message says what to do."""


_TS_OS_ERROR = re.compile(r"os_error_code='?(\d+)")


def _os_error(err: BaseException) -> OSError | None:
    """The OSError behind ``err``, or None. Orbax wraps them, and tensorstore (its array
    writer) raises ValueError("RESOURCE_EXHAUSTED: ... [os_error_code='28']") instead."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and not isinstance(err, errors.DvaeError):
            return err
        found = _TS_OS_ERROR.search(str(err))
        if found:
            code = int(found.group(1))
            return OSError(code, os.strerror(code))
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def storage_error(path: str | os.PathLike, err: OSError, kept: str = "") -> errors.StorageError:
    """One line: what could not be written, why, and what to do."""
    reason = err.strerror or str(err) or type(err).__name__
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        todo = "free space on that disk or write elsewhere (another --workdir or output directory)"
    elif err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        todo = "make it writable or write elsewhere (another --workdir or output directory)"
    else:
        todo = "check that disk, or write elsewhere (another --workdir or output directory)"
    return errors.StorageError(f"cannot write {path}: {reason}; {todo}" + (f" ({kept})" if kept else ""))


def _manager(path: Path, max_to_keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False,
        cleanup_tmp_directories=True,  # the leftovers of a save killed or failed half-way
    )
    try:
        return ocp.CheckpointManager(
            path.absolute(), options=options, item_names=("params", "train", "meta")
        )
    except OSError as e:
        raise storage_error(path, e) from e


@contextlib.contextmanager
def _held_stderr(settle_s: float = 0.5):
    """Holds back what is written to stderr (file descriptor 2) meanwhile; replays it unless
    ``held["drop"]`` was set. A save that fails on a full disk logs every failed array write,
    with its traceback, from tensorstore's threads and asyncio's futures (hundreds of lines for
    one cause); the one-line StorageError says it all, so those are dropped: the writes still in
    flight are given ``settle_s`` to fail and the futures are collected before fd 2 returns."""
    held = {"drop": False}
    sys.stderr.flush()
    try:
        saved = os.dup(2)
        sink = tempfile.TemporaryFile()  # noqa: SIM115 - closed below, after fd 2 is restored
    except OSError:  # no descriptor or no temporary file: hold nothing back
        yield held
        return
    os.dup2(sink.fileno(), 2)
    try:
        yield held
    finally:
        if held["drop"]:
            time.sleep(settle_s)
            gc.collect()
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        if not held["drop"]:
            sink.seek(0)
            text = sink.read()
            if text:
                sys.stderr.write(text.decode(errors="replace"))
        sink.close()


def _check_finite(tree: Any, what: str) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        arr = np.asarray(leaf)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise CheckpointError(
                f"refusing to save {what}: non-finite values in {jax.tree_util.keystr(path)}"
            )


def _meta_json(meta: Any) -> dict:
    """A dataclass (the fit loop's state) or a dict, as JSON-ready values."""
    return dataclasses.asdict(meta) if dataclasses.is_dataclass(meta) else dict(meta)


@dataclasses.dataclass
class Checkpoint:
    """What a restore returns. ``train`` is None when only parameters were stored."""

    step: int
    variables: Any
    train: dict | None
    meta: dict


class RunCheckpoints:
    """The 'latest' (kept: 2) and 'best' (kept: 1) checkpoints of one run directory."""

    def __init__(self, workdir: str | os.PathLike):
        self.workdir = Path(workdir)
        self.root = self.workdir / "checkpoints"
        self.latest = _manager(self.root / "latest", max_to_keep=2)
        self.best = _manager(self.root / "best", max_to_keep=1)

    def _mngr(self, kind: str) -> ocp.CheckpointManager:
        return self.latest if kind == "latest" else self.best

    def save(self, kind: str, step: int, variables: Any, train: dict | None, meta: Any) -> None:
        """Saves synchronously; returns when the step is complete on disk.

        Raises:
            CheckpointError: non-finite parameters (nothing is written).
            errors.StorageError: the disk is full or read-only; the previous step is intact.
        """
        _check_finite(variables, "parameters")
        mngr = self._mngr(kind)
        items = {
            "params": ocp.args.StandardSave(variables),
            # orbax refuses an empty item: a parameters-only run stores a marker instead
            "train": ocp.args.StandardSave(
                train if train is not None else {"params_only": np.zeros((), np.int32)}
            ),
            "meta": ocp.args.JsonSave(_meta_json(meta)),
        }
        with _held_stderr() as held:
            failure = self._write(mngr, kind, int(step), items)
            held["drop"] = failure is not None
        if failure is not None:
            raise failure  # raised here, outside the except block: no chain keeps orbax's futures

    def _write(self, mngr, kind: str, step: int, items: dict) -> errors.StorageError | None:
        """Saves ``items`` as ``step``; the StorageError to raise when the disk refused."""
        try:
            mngr.reload()
            if step in mngr.all_steps():
                # Same step with newer metadata (e.g. end of epoch after a periodic save): replace
                # it. The previous kept step stays on disk meanwhile, so a kill here loses nothing.
                mngr.delete(step)
            mngr.save(step, args=ocp.args.Composite(**items), force=True)
            mngr.wait_until_finished()
        except Exception as e:
            cause = _os_error(e)
            if cause is None:
                raise
            return storage_error(self.root / kind / str(step), cause, self._kept(kind))
        return None

    def _kept(self, kind: str) -> str:
        try:
            self._mngr(kind).reload()
            step = self._mngr(kind).latest_step()
        except Exception:  # noqa: BLE001 - only for the message
            step = None
        if step is None:
            return "no earlier checkpoint was saved"
        return f"the last good checkpoint, step {step} in {self.root / kind}, is intact"

    def latest_step(self, kind: str = "latest") -> int | None:
        mngr = self._mngr(kind)
        mngr.reload()
        return mngr.latest_step()

    def read_meta(self, kind: str) -> dict | None:
        """The JSON meta of the newest step of ``kind`` (None: no step, or unreadable)."""
        mngr = self._mngr(kind)
        mngr.reload()
        step = mngr.latest_step()
        if step is None:
            return None
        try:
            restored = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            return dict(restored["meta"])
        except Exception:  # noqa: BLE001 - the full restore reports unreadable steps
            return None

    def restore(self, kind: str, variables_like: Any, train_like: dict | None = None) -> Checkpoint:
        """Restores the newest readable step of ``kind`` onto the structures of the templates.

        A step that cannot be read (truncated or corrupted files) is reported on stderr and the
        previous kept step is used; when none is readable the error says what to do.
        """
        mngr = self._mngr(kind)
        mngr.reload()
        steps = sorted(mngr.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"no '{kind}' checkpoint in {self.workdir}: train this run first")
        for i, step in enumerate(steps):
            try:
                return self._restore_step(mngr, step, variables_like, train_like)
            except Exception as e:  # noqa: BLE001 - any unreadable step: try the previous one
                where = self.root / kind / str(step)
                reason = " ".join(str(e).split())[:200] or type(e).__name__
                if i + 1 < len(steps):
                    print(f"warning: checkpoint {where} is unreadable ({reason}); "
                          f"using the previous step {steps[i + 1]}", file=sys.stderr)
        raise CheckpointError(
            f"no readable '{kind}' checkpoint in {self.root / kind} (last error: {reason}): "
            "restore the directory from a backup, or train again in a new --workdir"
        )

    @staticmethod
    def _restore_step(mngr, step: int, variables_like: Any, train_like: dict | None) -> Checkpoint:
        items = {"params": ocp.args.StandardRestore(variables_like), "meta": ocp.args.JsonRestore()}
        if train_like is not None:
            items["train"] = ocp.args.StandardRestore(train_like)
        restored = mngr.restore(step, args=ocp.args.Composite(**items))
        if restored["meta"] is None:
            raise ValueError("its meta item is missing")
        return Checkpoint(
            step=step,
            variables=restored["params"],
            train=restored.get("train") if train_like is not None else None,
            meta=dict(restored["meta"]),
        )

    def close(self) -> None:
        self.latest.close()
        self.best.close()


# ---------------------------------------------------------------------------------------------
# Run directories


def save_config(workdir: str | os.PathLike, cfg: config_lib.Config) -> None:
    """Writes ``config.json`` atomically (a failed write leaves the previous file)."""
    path = Path(workdir)
    tmp = path / (CONFIG_FILE + ".tmp")
    try:
        path.mkdir(parents=True, exist_ok=True)
        config_lib.save_json(cfg, str(tmp))
        os.replace(tmp, path / CONFIG_FILE)
    except OSError as e:
        _remove(tmp)
        raise storage_error(path / CONFIG_FILE, e) from e


def load_config(workdir: str | os.PathLike) -> config_lib.Config:
    path = Path(workdir) / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(
            f"{workdir} is not a dvae-jax run directory (no {CONFIG_FILE}); "
            "pass the --workdir of a `dvae-jax train` or `dvae-jax import-review` run"
        )
    try:  # a run's own file: damage is named as such (a user's config file gets ConfigError)
        json.loads(path.read_text(encoding="utf-8"))
        return config_lib.load_json(config_lib.Config, str(path))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError) as e:
        raise CheckpointError(
            f"{path} is corrupted or truncated ({type(e).__name__}: {e}): restore it from a backup "
            "or write it again with the run's settings (dvae-jax train writes it on start)"
        ) from None


def load_run(workdir: str | os.PathLike, which: str = "best") -> tuple[config_lib.Config, Any, dict]:
    """(config, variables, meta) of a run; ``which`` is 'best' or 'latest'.

    When that checkpoint is missing the other one is used and a line on stderr says so; a run
    whose only checkpoint is the untrained step 0 is refused rather than returning a model that
    never trained.
    """
    from dvae_jax import models  # local: models import jax/flax only when needed

    cfg = load_config(workdir)
    template = models.init(cfg.model, jax.random.PRNGKey(0))
    ckpts = RunCheckpoints(workdir)
    try:
        other = "latest" if which == "best" else "best"
        kind = which if ckpts.latest_step(which) is not None else other
        step = ckpts.latest_step(kind)
        if step is None:
            raise CheckpointError(f"{workdir} has no checkpoint yet: train it (dvae-jax train) first")
        ck = ckpts.restore(kind, template)
        imported = bool(ck.meta.get("imported"))
        if kind != which and ck.step == 0 and not imported:
            raise CheckpointError(
                f"no {which} checkpoint in {workdir} and the {kind} one is the untrained step 0: "
                f"train it first (dvae-jax train --workdir {workdir} --resume)"
            )
        if kind != which:
            print(f"no {which} checkpoint in {workdir}; using {kind} step {ck.step}", file=sys.stderr)
        return cfg, ck.variables, dict(ck.meta, checkpoint=kind, step=ck.step)
    finally:
        ckpts.close()


def save_imported_run(
    workdir: str | os.PathLike, cfg: config_lib.Config, variables: Any, meta: dict | None = None
) -> None:
    """Writes a run directory holding only parameters (e.g. imported from the review's code),
    which ``evaluate`` and ``generate`` accept like a trained run."""
    save_config(workdir, cfg)
    ckpts = RunCheckpoints(workdir)
    try:
        info = dict(meta or {}, epoch=0, imported=True)
        ckpts.save("best", 0, variables, None, info)
        ckpts.save("latest", 0, variables, None, info)
    finally:
        ckpts.close()


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Writes JSON through a temporary file; a full or read-only disk is a StorageError."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise storage_error(path, e) from e


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # a read-only directory: nothing was written there either
        pass
