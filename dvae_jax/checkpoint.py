"""Every orbax call lives here: run directories, latest / best checkpoints, atomic saves.

A run directory holds ``config.json`` (the resolved Config) and ``checkpoints/latest`` and
``checkpoints/best``, each an orbax CheckpointManager whose steps hold three items:
``params`` (the Flax variables), ``train`` (optimizer state, step, LR scale) and ``meta`` (JSON:
epoch, position in the epoch, seed, best validation loss, ...). Orbax writes each step to a
temporary folder and renames it when complete, so a kill during a save leaves the previous
step loadable; non-finite parameters are refused before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from dvae_jax import config as config_lib
from dvae_jax import errors

CONFIG_FILE = "config.json"


class CheckpointError(errors.RunError):
    """A run directory or checkpoint that cannot be used; the message says what to do."""


def _manager(path: Path, max_to_keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(
        path.absolute(), options=options, item_names=("params", "train", "meta")
    )


def _check_finite(tree: Any, what: str) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        arr = np.asarray(leaf)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise CheckpointError(
                f"refusing to save {what}: non-finite values in {jax.tree_util.keystr(path)}"
            )


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
        root = self.workdir / "checkpoints"
        self.latest = _manager(root / "latest", max_to_keep=2)
        self.best = _manager(root / "best", max_to_keep=1)

    def save(self, kind: str, step: int, variables: Any, train: dict | None, meta: dict) -> None:
        """Saves synchronously; returns when the step is complete on disk."""
        _check_finite(variables, "parameters")
        mngr = self.latest if kind == "latest" else self.best
        items = dict(
            params=ocp.args.StandardSave(variables),
            # orbax refuses an empty item: a parameters-only run stores a marker instead
            train=ocp.args.StandardSave(train if train is not None else {"params_only": np.zeros((), np.int32)}),
            meta=ocp.args.JsonSave(meta),
        )
        mngr.reload()
        if int(step) in mngr.all_steps():
            # Same step with newer metadata (e.g. end of epoch after a periodic save): replace it.
            # The previous kept step stays on disk meanwhile, so a kill here loses nothing.
            mngr.delete(int(step))
        mngr.save(int(step), args=ocp.args.Composite(**items), force=True)
        mngr.wait_until_finished()

    def latest_step(self, kind: str = "latest") -> int | None:
        mngr = self.latest if kind == "latest" else self.best
        mngr.reload()
        return mngr.latest_step()

    def restore(self, kind: str, variables_like: Any, train_like: dict | None = None) -> Checkpoint:
        """Restores the newest step of ``kind`` onto the structures of the given templates."""
        mngr = self.latest if kind == "latest" else self.best
        mngr.reload()
        step = mngr.latest_step()
        if step is None:
            raise CheckpointError(f"no '{kind}' checkpoint in {self.workdir}: train this run first")
        items = dict(
            params=ocp.args.StandardRestore(variables_like),
            meta=ocp.args.JsonRestore(),
        )
        if train_like is not None:
            items["train"] = ocp.args.StandardRestore(train_like)
        restored = mngr.restore(step, args=ocp.args.Composite(**items))
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
    path = Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / (CONFIG_FILE + ".tmp")
    config_lib.save_json(cfg, str(tmp))
    os.replace(tmp, path / CONFIG_FILE)


def load_config(workdir: str | os.PathLike) -> config_lib.Config:
    path = Path(workdir) / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(
            f"{workdir} is not a dvae-jax run directory (no {CONFIG_FILE}); "
            "pass the --workdir of a `dvae-jax train` or `dvae-jax import-review` run"
        )
    return config_lib.load_json(config_lib.Config, str(path))


def load_run(workdir: str | os.PathLike, which: str = "best") -> tuple[config_lib.Config, Any, dict]:
    """(config, variables, meta) of a run; ``which`` is 'best' or 'latest' (falls back to the
    other when one is missing)."""
    from dvae_jax import models  # local: models import jax/flax only when needed

    cfg = load_config(workdir)
    template = models.init(cfg.model, jax.random.PRNGKey(0))
    ckpts = RunCheckpoints(workdir)
    try:
        order = [which, "latest" if which == "best" else "best"]
        for kind in order:
            if ckpts.latest_step(kind) is not None:
                ck = ckpts.restore(kind, template)
                return cfg, ck.variables, dict(ck.meta, checkpoint=kind, step=ck.step)
        raise CheckpointError(f"{workdir} has no checkpoint yet: train it (dvae-jax train) first")
    finally:
        ckpts.close()


def save_imported_run(workdir: str | os.PathLike, cfg: config_lib.Config, variables: Any, meta: dict | None = None) -> None:
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
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)
