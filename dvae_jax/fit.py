"""The fit loop: epochs, validation, early stopping, checkpoints with exact resume, NaN guard, logs.

Position bookkeeping makes resume exact: an epoch's batches are a pure function of
(seed, epoch) (data/batches.py), the step key is fold_in(train_key, step), and the latest
checkpoint stores params, optimizer state (plateau state included), step, LR scale, the model's
carry with ``data.batching=streams`` (the state the next batch continues) and the loop's
:class:`LoopState` ((epoch, batch within epoch), the running sums of the epoch's metrics, the
length of metrics.jsonl at that point, ...). A run killed at any point and resumed with
``resume=True`` therefore takes exactly the steps an uninterrupted run takes, and its log rows
past the checkpoint are dropped before they are written again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dvae_jax import checkpoint, distributed, errors, losses, models, schedules, train
from dvae_jax import config as config_lib
from dvae_jax.data import batches as batches_lib
from dvae_jax.data import polyphonic as polyphonic_lib
from dvae_jax.data import prepare as prepare_lib

METRICS_FILE = "metrics.jsonl"
SCALARS = ("loss", "recon", "kl", "kl_weight", "grad_norm", "lr")

TrainingError = errors.TrainingError


@dataclasses.dataclass
class LoopState:
    """Where the fit loop is and what it has seen; saved as each checkpoint's JSON meta."""

    epoch: int = 0  # the epoch being trained (epochs finished so far)
    batch: int = 0  # batches of that epoch already taken
    seed: int = 0
    best_val: float = math.inf  # lowest validation loss, and its epoch
    best_epoch: int = -1
    bad_epochs: int = 0  # epochs without improvement after the KL warm-up (early stopping)
    post_warmup_best: float | None = None  # reference of the divergence check
    diverging: int = 0  # epochs in a row past the divergence bound
    skipped: int = 0  # non-finite steps skipped, all epochs
    rollbacks: int = 0  # NaN rollbacks so far
    sums: dict[str, float] = dataclasses.field(default_factory=dict)  # this epoch's finite steps
    count: int = 0  # finite steps in ``sums``
    last_val: float | None = None
    metrics_bytes: int | None = None  # length of metrics.jsonl at this checkpoint
    done: bool = False
    stopped: str = ""  # 'epochs' | 'max_steps' | 'early_stopping' (saved once done)

    @classmethod
    def from_meta(cls, meta: dict) -> LoopState:
        """The loop state of a checkpoint's meta (keys of older runs that are gone are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        state = cls(**{k: v for k, v in meta.items() if k in names})
        state.sums = dict(state.sums)
        return state


def resolve_model(cfg: config_lib.Config, n_bins: int) -> config_lib.Config:
    """Sets model.x_dim from the features and checks the likelihood fits them."""
    model = cfg.model
    if cfg.features.kind == "mel" and model.likelihood == "itakura_saito":
        raise config_lib.ConfigError(
            "model.likelihood=itakura_saito needs power spectra: use features.kind=stft, or "
            "model.likelihood=gaussian for log-Mel features"
        )
    if model.x_dim != n_bins:
        model = dataclasses.replace(model, x_dim=n_bins)
    polyphonic = cfg.data.corpus == "polyphonic"
    if cfg.data.batching == "chunks" and cfg.features.kind != "stft" and not polyphonic:
        raise config_lib.ConfigError(
            "data.batching=chunks is the review's STFT setting: use features.kind=stft"
        )
    if polyphonic and cfg.data.batching in batches_lib.CHUNKED and cfg.data.seq_len != polyphonic_lib.CHUNK:
        raise config_lib.ConfigError(
            f"data.seq_len={cfg.data.seq_len}: must be {polyphonic_lib.CHUNK} (the piano-roll chunks' "
            f"length) with data.batching={cfg.data.batching}"
        )
    return dataclasses.replace(cfg, model=model)


@dataclasses.dataclass
class FitResult:
    workdir: Path
    epochs_run: int
    steps: int
    best_val: float
    best_epoch: int
    final_val: float
    stopped: str  # 'epochs' | 'max_steps' | 'early_stopping' | 'stop_after_steps'
    seconds: float
    skipped_steps: int
    rollbacks: int
    timing: dict = dataclasses.field(default_factory=dict)  # Clock.summary() of this process


class Clock:
    """Where the fit loop's wall time goes: the jitted train step (dispatch to the end of the
    step's computation: its metrics are fetched), its first call (compilation, or a load from the
    compilation cache), waiting for input, validation (its first call compiles too), checkpoints,
    and the rest (logging, bookkeeping); plus the frames trained. Per process: a resumed run
    counts from its restart."""

    KINDS = ("step", "compile", "input", "validation", "checkpoint")

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(self.KINDS, 0.0)
        self.frames = 0
        self.steps = 0
        self.t0 = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, kind: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[kind] += time.perf_counter() - t

    def summary(self) -> dict[str, float]:
        """Seconds per activity, their shares of the wall time, and frames per second (of the
        wall time and of the time in the step)."""
        wall = max(time.perf_counter() - self.t0, 1e-9)
        out = {f"time_{k}_s": v for k, v in self.seconds.items()}
        out["time_other_s"] = max(wall - sum(self.seconds.values()), 0.0)
        out["time_wall_s"] = wall
        out["step_share"] = self.seconds["step"] / wall
        out["frames_per_s"] = self.frames / max(wall - self.seconds["compile"], 1e-9)
        out["step_frames_per_s"] = self.frames / max(self.seconds["step"], 1e-9)
        return out


class _Logger:
    """metrics.jsonl (appended, flushed per line) and TensorBoard event files when available."""

    def __init__(self, workdir: Path, keep_bytes: int | None):
        self.path = workdir / METRICS_FILE
        try:
            self.f = open(self.path, "a")  # noqa: SIM115 - open for the whole run
            if keep_bytes is not None and self.f.tell() > keep_bytes:
                self.f.truncate(keep_bytes)  # rows past the checkpoint: written again on resume
        except OSError as e:
            raise checkpoint.storage_error(self.path, e) from e
        self.tb = None
        try:
            from tensorboardX import SummaryWriter  # optional

            self.tb = SummaryWriter(str(workdir / "tensorboard"))
        except Exception:  # noqa: BLE001 - TensorBoard is optional
            self.tb = None

    def tell(self) -> int:
        return self.f.tell()

    def truncate(self, size: int | None) -> None:
        if size is not None and self.f.tell() > size:
            self.f.truncate(size)

    def write(self, record: dict) -> None:
        try:
            self.f.write(json.dumps(record) + "\n")
            self.f.flush()
        except OSError as e:
            raise checkpoint.storage_error(self.path, e, "the checkpoints are intact") from e
        if self.tb is not None:
            step = record.get("step", 0)
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record.get('kind', 'train')}/{k}", v, step)

    def close(self) -> None:
        try:
            self.f.close()
        except OSError:  # the write that failed was already reported
            pass
        if self.tb is not None:
            self.tb.close()


class _NullLogger:
    """The logger of processes other than 0 on a multi-host mesh: process 0 writes the logs."""

    def tell(self) -> int:
        return 0

    def truncate(self, size: int | None) -> None:
        pass

    def write(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


def read_metrics(workdir: str | Path) -> list[dict]:
    """The rows of metrics.jsonl; a line cut by a kill is ignored."""
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def evaluate_split(eval_step, variables, dataset, split: str, batch_size: int, seq_len: int, key,
                   placement: distributed.Placement | None = None) -> dict:
    """Negative ELBO per frame of ``split``, every utterance cut in consecutive ``seq_len``
    windows (one shape: compiled once), as an exact frame-weighted mean over all real frames.
    With a mesh (``placement``) each process reads its rows of every batch.

    Raises:
        errors.DataError: the split has no frame (a loss of 0.0 would be meaningless).
    """
    tot = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
    kl_dim = None
    frames = 0.0
    placement = placement or distributed.Placement()
    rows = placement.rows(batch_size)
    for i, batch in enumerate(batches_lib.window_batches(dataset, split, batch_size, seq_len, rows=rows)):
        x = placement.put_batch({"x": batch["x"], "mask": batch["mask"]})
        m = jax.device_get(eval_step(variables, x, jax.random.fold_in(key, i)))
        n = float(m["frames"])
        for k in tot:
            tot[k] += float(m[k]) * n
        kl_dim = m["kl_per_dim"] * n if kl_dim is None else kl_dim + m["kl_per_dim"] * n
        frames += n
    if frames == 0:
        raise errors.DataError(_empty_split_message(dataset, split))
    out = {k: v / frames for k, v in tot.items()}
    out["kl_per_dim"] = (kl_dim / frames).tolist()
    out["frames"] = frames
    return out


def _empty_split_message(dataset, split: str) -> str:
    return (
        f"the {split} split of the prepared corpus {dataset.path} is empty (0 frames): give it "
        "speakers (raise data.val_fraction / data.test_fraction, or use a corpus with more "
        "speakers, e.g. data.mini_speakers) and prepare again"
    )


def _check_splits(dataset) -> None:
    """Training needs frames in 'train' and 'val' (validation drives best and early stopping)."""
    for split in ("train", "val"):
        try:
            n = dataset.split(split).n_frames
        except FileNotFoundError:
            n = 0
        if n == 0:
            raise errors.DataError(_empty_split_message(dataset, split))


@dataclasses.dataclass
class _Run:
    """What stays fixed during one call of :func:`fit`."""

    cfg: config_lib.Config
    ds: Any
    workdir: Path
    ckpts: checkpoint.RunCheckpoints
    spe: int  # steps per epoch
    total: int
    warm_epochs: int
    train_key: Any
    eval_key: Any
    train_step: Callable
    eval_step: Callable
    plateau_step: Callable
    t_start: float
    carry0: Any = None  # streams: the cold carry each epoch starts from
    placement: distributed.Placement = dataclasses.field(default_factory=distributed.Placement)
    logger: _Logger | None = None
    bar: Any = None
    clock: Clock = dataclasses.field(default_factory=Clock)
    on_epoch: Callable[[dict], None] | None = None

    def place(self, state: train.TrainState) -> train.TrainState:
        """``state`` where the jitted step wants it (no copy when it is there already)."""
        if self.placement.mesh is None:
            return state
        sh = train.shardings_for(self.placement, state, self.cfg.train.batch_size)
        return jax.device_put(state, sh.state)


def fit(
    cfg: config_lib.Config,
    workdir: str | Path,
    resume: bool = False,
    progress: bool = True,
    stop_after_steps: int = 0,
    dataset: prepare_lib.Dataset | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    placement: distributed.Placement | None = None,
) -> FitResult:
    """Trains ``cfg`` in ``workdir``; see the module docstring for what resume guarantees.

    Args:
        cfg: the full configuration (model.x_dim is set from the features).
        workdir: the run directory (config.json, checkpoints/, metrics.jsonl, plots).
        resume: continue from the latest checkpoint of ``workdir`` (the saved config is used;
            it must not differ from ``cfg`` except in train.epochs / train.max_steps). With no
            checkpoint there, a fresh run starts (and says so).
        progress: show a progress bar.
        stop_after_steps: stop (after saving) once this global step is reached; for tests and
            for splitting long runs.
        dataset: an already prepared dataset (else prepared from cfg.data / cfg.features).
        on_epoch: called with each epoch's metrics record once the epoch is saved (a sweep's
            pruner reports there); an exception it raises stops the run, checkpoints intact.
        placement: the device mesh to train on (``distributed.Placement.from_text('data=4')``):
            the batch split by rows on its ``data`` axis, the rest replicated; the checkpoints
            do not depend on it (a run saved on 4 devices resumes on 1 and the reverse). Only
            its process 0 writes the logs and plots (every process writes its checkpoint shards).

    Raises:
        TrainingError: a refused resume, divergence, or non-finite steps after every rollback.
        errors.DataError: an empty train or validation split.
        errors.StorageError: a write failed; the last good checkpoint stays loadable.
    """
    t_start = time.time()
    workdir = Path(workdir)
    ds = dataset or prepare_lib.prepare_dataset(cfg.data, cfg.features, progress=progress)
    cfg = resolve_model(cfg, ds.n_bins)
    _check_splits(ds)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise checkpoint.storage_error(workdir, e) from e
    placement = placement or distributed.Placement()
    placement.check_batch(cfg.train.batch_size)
    progress = progress and placement.writer
    ckpts = checkpoint.RunCheckpoints(workdir)
    try:
        cfg, has_ckpt = _resolve_resume(cfg, workdir, ckpts, resume)
        if placement.writer:
            checkpoint.save_config(workdir, cfg)
        run, state = _setup(cfg, ds, workdir, ckpts, t_start, placement)
        run.on_epoch = on_epoch
        loop = LoopState(seed=cfg.train.seed, metrics_bytes=0)
        if has_ckpt:
            state, loop = _restore_latest(run, state)
            if _finished(loop, state, cfg.train):
                if placement.writer:
                    print(f"{workdir}: run already finished ({loop.stopped}); nothing to do")
                return _result(run, loop, state)
        state, loop = _train(run, state, loop, progress, stop_after_steps, fresh=not has_ckpt)
    finally:
        ckpts.close()
    if loop.stopped != "stop_after_steps" and placement.writer:
        _draw_curves(workdir)
    return _result(run, loop, state)


def _resolve_resume(cfg, workdir: Path, ckpts, resume: bool) -> tuple[config_lib.Config, bool]:
    """(the config to train, whether a checkpoint is resumed); refuses what would mislead."""
    has_ckpt = ckpts.latest_step("latest") is not None
    if has_ckpt and not resume:
        raise TrainingError(
            f"{workdir} already holds a run: pass --resume to continue it, or choose a new --workdir"
        )
    if not has_ckpt:
        if resume:
            print(f"{workdir}: no checkpoint to resume; starting a fresh run")
        return cfg, False
    saved = checkpoint.load_config(workdir)
    train_cfg = dataclasses.replace(saved.train, epochs=cfg.train.epochs, max_steps=cfg.train.max_steps)
    merged = dataclasses.replace(saved, train=train_cfg)
    if config_lib.to_dict(merged) != config_lib.to_dict(cfg):
        diff = [k for k in config_lib.all_keys(cfg) if _get(cfg, k) != _get(merged, k)]
        raise TrainingError(f"--resume with a different config than the saved run: {', '.join(diff)}")
    return merged, True


def _setup(cfg, ds, workdir: Path, ckpts, t_start: float,
           placement: distributed.Placement) -> tuple[_Run, train.TrainState]:
    """Keys, model, optimizer and the jitted steps; the initial train state (on the mesh)."""
    tc = cfg.train
    spe = batches_lib.steps_per_epoch(ds, "train", tc.batch_size, cfg.data.seq_len, cfg.data.batching)
    total = tc.epochs * spe if not tc.max_steps else min(tc.max_steps, tc.epochs * spe)
    init_key, train_key, eval_key = jax.random.split(jax.random.PRNGKey(tc.seed), 3)
    tx = train.make_optimizer(tc, spe, total)
    variables = models.init(cfg.model, init_key)
    carry0 = None
    if cfg.data.batching == "streams":  # the SRNN code's protocol: the state runs on between batches
        model = models.build(cfg.model)
        # host copies: train_step donates the state's buffers, so each epoch gets fresh ones
        carry0 = jax.tree_util.tree_map(
            np.asarray, model.initial_carry(model.params(variables), tc.batch_size))
    state = train.init_state(variables, tx, _on_device(carry0))
    shardings = train.shardings_for(placement, state, tc.batch_size)
    train_step, eval_step = train.make_steps(cfg.model, tc, tx, spe, total, shardings)
    run = _Run(
        cfg=cfg, ds=ds, workdir=workdir, ckpts=ckpts, spe=spe, total=total,
        warm_epochs=schedules.warm_epochs(tc, spe),
        train_key=train_key, eval_key=eval_key, train_step=train_step, eval_step=eval_step,
        plateau_step=train.plateau_step(tc), t_start=t_start, carry0=carry0, placement=placement,
    )
    return run, run.place(state)


def _on_device(tree: Any) -> Any:
    return None if tree is None else jax.tree_util.tree_map(jnp.array, tree)  # copies


def _finished(loop: LoopState, state, tc) -> bool:
    """Whether a resumed run has nothing left to do; a finished run given more epochs or steps
    is reopened."""
    if loop.done and loop.stopped in ("epochs", "max_steps") and (
        loop.epoch < tc.epochs and (not tc.max_steps or int(state.step) < tc.max_steps)
    ):
        loop.done, loop.stopped = False, ""
    return loop.done


def _train_tree(state: train.TrainState) -> dict:
    """What a checkpoint stores besides the parameters; the streams carry only when there is one
    (the checkpoints of every other run keep their layout)."""
    tree = {"opt_state": state.opt_state, "step": state.step, "lr_scale": state.lr_scale,
            "plateau": state.plateau}
    if state.carry is not None:
        tree["carry"] = state.carry
    return tree


def _restore_latest(run: _Run, state: train.TrainState) -> tuple[train.TrainState, LoopState]:
    meta = run.ckpts.read_meta("latest") or {}
    if meta.get("imported"):
        raise TrainingError(f"{run.workdir} holds imported parameters only, with no training state "
                            "to resume: train in a new --workdir")
    if meta and "metrics_bytes" not in meta:
        raise TrainingError(f"{run.workdir} was trained by an older dvae_jax whose optimizer state "
                            "cannot be resumed (evaluate and generate still work): train in a new "
                            "--workdir")
    ck = run.ckpts.restore("latest", state.params, _train_tree(state))
    t = ck.train
    state = state.replace(
        step=jnp.asarray(t["step"], jnp.int32), params=ck.variables, opt_state=t["opt_state"],
        lr_scale=jnp.asarray(t["lr_scale"], jnp.float32), plateau=t["plateau"],
        carry=t.get("carry"),
    )
    return run.place(state), LoopState.from_meta(ck.meta)


def _save_latest(run: _Run, state: train.TrainState, loop: LoopState) -> None:
    loop.metrics_bytes = run.logger.tell()
    with run.clock("checkpoint"):
        run.ckpts.save("latest", int(state.step), state.params, _train_tree(state), loop)


def _train(run: _Run, state, loop: LoopState, progress: bool, stop_after_steps: int, fresh: bool):
    """Epochs until done; returns the final (state, loop)."""
    run.logger = (_Logger(run.workdir, 0 if fresh else loop.metrics_bytes) if run.placement.writer
                  else _NullLogger())
    run.bar = _progress(progress, run.total, int(state.step))
    try:
        if fresh:
            _save_latest(run, state, loop)  # step 0: a NaN rollback always has somewhere to go
        while loop.epoch < run.cfg.train.epochs and not loop.done:
            state, loop, outcome = _train_epoch(run, state, loop, stop_after_steps)
            if outcome == "stop_after_steps":
                return state, dataclasses.replace(loop, stopped=outcome)
            if outcome != "rolled_back":
                state, loop = _end_epoch(run, state, loop, outcome)
    finally:
        if run.bar is not None:
            run.bar.close()
        run.logger.close()
    return state, loop


def _train_epoch(run: _Run, state, loop: LoopState, stop_after_steps: int):
    """The rest of the current epoch: (state, loop, outcome), outcome '' at the epoch's end,
    or 'max_steps', 'stop_after_steps', 'rolled_back'."""
    tc, data = run.cfg.train, run.cfg.data
    if run.carry0 is not None and loop.batch == 0:  # streams: every epoch starts cold
        state = run.place(state.replace(carry=_on_device(run.carry0)))
    it = batches_lib.train_batches(run.ds, "train", tc.batch_size, data.seq_len, tc.seed, loop.epoch,
                                   start_batch=loop.batch, mode=data.batching,
                                   rows=run.placement.rows(tc.batch_size))
    with batches_lib.Prefetcher(it, size=max(tc.prefetch, 1)) as fetch:
        batches = iter(fetch)
        while True:
            with run.clock("input"):
                batch = next(batches, None)
            if batch is None:
                break
            step = int(state.step)
            with run.clock("step" if run.clock.steps else "compile"):
                state, m = run.train_step(state, run.placement.put_batch(batch),
                                          jax.random.fold_in(run.train_key, step))
                m = jax.device_get({k: m[k] for k in (*SCALARS, "finite")})
            if run.clock.steps:  # the first call's frames go with its compilation
                run.clock.frames += _frames(batch) * jax.process_count()  # every host's rows
            run.clock.steps += 1
            loop.batch += 1
            if not bool(m["finite"]):
                loop.skipped += 1
                if int(state.nonfinite) >= tc.nan_patience:
                    state, loop = _rollback(run, state, loop, step)
                    return state, loop, "rolled_back"
            else:
                for k in SCALARS:
                    loop.sums[k] = loop.sums.get(k, 0.0) + float(m[k])
                loop.count += 1
            _log_step(run, m, step, loop.epoch)
            done = int(state.step)
            if tc.max_steps and done >= tc.max_steps:
                return state, loop, "max_steps"
            if (tc.checkpoint_every_steps and done % tc.checkpoint_every_steps == 0
                    and loop.batch < run.spe):  # an epoch's end is saved after validation
                _save_latest(run, state, loop)
            if stop_after_steps and done >= stop_after_steps:
                _save_latest(run, state, loop)
                return state, loop, "stop_after_steps"
    return state, loop, ""


def _frames(batch: dict) -> int:
    """Real frames of a batch (padding excluded)."""
    mask = batch.get("mask")
    return int(np.prod(np.shape(batch["x"])[:2])) if mask is None else int(np.sum(mask))


def _log_step(run: _Run, m: dict, step: int, epoch: int) -> None:
    if run.bar is not None:
        run.bar.update(1)
        run.bar.set_postfix(loss=f"{m['loss']:.3f}", recon=f"{m['recon']:.3f}", kl=f"{m['kl']:.3f}",
                            lr=f"{m['lr']:.2e}", beta=f"{m['kl_weight']:.2f}", ep=epoch)
    every = run.cfg.train.log_every_steps
    if every and (step + 1) % every == 0:
        run.logger.write(dict(kind="step", step=step + 1, epoch=epoch,
                              **{k: float(m[k]) for k in SCALARS}))


def _end_epoch(run: _Run, state, loop: LoopState, stop: str):
    """Validation, logs, best checkpoint, plateau, early stopping, divergence; saves latest."""
    tc = run.cfg.train
    epoch = loop.epoch
    with run.clock("validation"):
        val = evaluate_split(run.eval_step, state.params, run.ds, "val", tc.batch_size,
                             run.cfg.data.seq_len, run.eval_key, run.placement)
    rec = _log_epoch(run, state, loop, val)
    _check_finite_validation(run, loop, val["loss"])
    improved = val["loss"] < loop.best_val
    if improved:
        loop.best_val, loop.best_epoch = val["loss"], epoch
        best = dataclasses.replace(loop, epoch=epoch + 1, batch=0, sums={}, count=0)
        with run.clock("checkpoint"):
            run.ckpts.save("best", int(state.step), state.params, _train_tree(state),
                           dict(dataclasses.asdict(best), val_loss=val["loss"]))
    if epoch >= run.warm_epochs:
        loop.bad_epochs = 0 if improved else loop.bad_epochs + 1
        if tc.lr_schedule == "plateau":
            state = run.place(run.plateau_step(state, val["loss"]))
        _check_divergence(run, loop, val["loss"])
        if loop.bad_epochs >= tc.early_stop_patience:
            stop = "early_stopping"
    loop.epoch, loop.batch, loop.sums, loop.count, loop.last_val = epoch + 1, 0, {}, 0, val["loss"]
    if not stop and loop.epoch >= tc.epochs:
        stop = "epochs"
    if stop:
        loop.done, loop.stopped = True, stop
    _save_latest(run, state, loop)
    if run.on_epoch is not None:
        run.on_epoch(rec)
    return state, loop


def _log_epoch(run: _Run, state, loop: LoopState, val: dict) -> dict:
    n = max(loop.count, 1)
    offset = losses.review_kl_offset(run.cfg.model, run.cfg.data.seq_len)
    rec = dict(kind="epoch", epoch=loop.epoch, step=int(state.step),
               **{f"train_{k}": loop.sums.get(k, float("nan")) / n for k in SCALARS},
               val_loss=val["loss"], val_recon=val["recon"], val_kl=val["kl"],
               # the same in the review's convention (its KL omits the -1: +z_dim/2 per frame)
               val_kl_review=val["kl"] + offset, val_loss_review=val["loss"] + offset,
               val_kl_per_dim=val["kl_per_dim"], skipped=loop.skipped,
               lr_scale=float(state.lr_scale * state.plateau.scale), devices=run.placement.devices,
               seconds=time.time() - run.t_start, timing=run.clock.summary())
    run.logger.write(rec)
    if not run.placement.writer:
        return rec
    review = run.cfg.train.kl_convention == "review"
    tag = " (the review's KL convention)" if review else ""
    loss_, kl_ = (rec["val_loss_review"], rec["val_kl_review"]) if review else (val["loss"], val["kl"])
    _say(run.bar, f"epoch {loop.epoch}: train loss {rec['train_loss']:.4f} "
                  f"(KL weight {rec['train_kl_weight']:.2f}) | validation -ELBO{tag} {loss_:.4f} "
                  f"recon {val['recon']:.4f} KL {kl_:.4f} | {rec['seconds']:.0f} s, "
                  f"{rec['timing']['frames_per_s']:,.0f} frames/s, {rec['timing']['step_share']:.0%} in the step")
    return rec


def _kept(run: _Run, loop: LoopState) -> str:
    best = f"best: epoch {loop.best_epoch}" if loop.best_epoch >= 0 else "no best yet"
    return f"the last good checkpoints in {run.workdir / 'checkpoints'} are intact ({best})"


def _check_finite_validation(run: _Run, loop: LoopState, val_loss: float) -> None:
    if not math.isfinite(val_loss):
        raise TrainingError(
            f"epoch {loop.epoch}: validation loss {val_loss} is not finite, training diverged; "
            f"{_kept(run, loop)}. Lower train.lr or set train.clip_grad_norm"
        )


def _check_divergence(run: _Run, loop: LoopState, val_loss: float) -> None:
    """Stops a run whose validation loss stays far above its post-warm-up low: after the KL
    warm-up, train.diverge_patience epochs in a row whose validation loss exceeds the lowest one
    since the warm-up by more than train.diverge_margin x max(1, |lowest|) nats per frame (early
    stopping would wait train.early_stop_patience epochs, 50 in the review)."""
    tc = run.cfg.train
    patience, margin = tc.diverge_patience, tc.diverge_margin
    ref = loop.post_warmup_best
    if ref is None or val_loss < ref:
        loop.post_warmup_best, loop.diverging = val_loss, 0
        return
    bound = ref + margin * max(1.0, abs(ref))
    loop.diverging = loop.diverging + 1 if val_loss > bound else 0
    if patience and loop.diverging >= patience:
        raise TrainingError(
            f"epoch {loop.epoch}: validation loss {val_loss:.4f} above {bound:.4f} (lowest after "
            f"the KL warm-up {ref:.4f} + {margin:g} x max(1, |lowest|)) for {loop.diverging} epochs "
            f"in a row, training diverged; {_kept(run, loop)}. Lower train.lr or set "
            "train.clip_grad_norm"
        )


def _rollback(run: _Run, state, loop: LoopState, step: int):
    """K non-finite steps in a row: back to the last good checkpoint with half the LR, or stop."""
    tc = run.cfg.train
    rollbacks = loop.rollbacks + 1
    msg = f"step {step}: {tc.nan_patience} non-finite losses/gradients in a row"
    if rollbacks > tc.nan_max_rollbacks:
        raise TrainingError(
            f"{msg}; stopped after {rollbacks - 1} rollbacks. No non-finite parameter was saved: "
            f"the last good checkpoint in {run.workdir} is intact. Lower train.lr, set "
            "train.clip_grad_norm, or check the data for extreme values."
        )
    scale = float(state.lr_scale) * 0.5
    state, restored = _restore_latest(run, state)
    # the restored count of skips in a row may be > 0: a fresh budget after a rollback
    opt_state = state.opt_state._replace(notfinite_count=jnp.zeros((), jnp.int32))
    state = run.place(state.replace(lr_scale=jnp.asarray(scale, jnp.float32), opt_state=opt_state))
    restored.rollbacks, restored.skipped = rollbacks, loop.skipped
    run.logger.truncate(restored.metrics_bytes)  # the steps after it are taken again
    run.logger.write({"kind": "rollback", "step": int(state.step), "at_step": step, "lr_scale": scale})
    if run.placement.writer:
        print(f"\n{msg}: rolled back to step {int(state.step)} with LR scale {scale:g}", file=sys.stderr)
    if run.bar is not None:
        run.bar.n = int(state.step)
        run.bar.refresh()
    return state, restored


def _draw_curves(workdir: Path) -> None:
    try:
        from dvae_jax import plots

        plots.training_curves(read_metrics(workdir), workdir)
    except Exception as e:  # noqa: BLE001 - a plot failure must not lose a finished run
        print(f"warning: could not draw the training plots: {e}", file=sys.stderr)


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _progress(enabled: bool, total: int, initial: int):
    """A tqdm bar on a terminal; none when output is redirected (the epoch lines still print)."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)


def _say(bar, text: str) -> None:
    if bar is not None:
        bar.write(text)
    else:
        print(text, flush=True)


def _result(run: _Run, loop: LoopState, state) -> FitResult:
    epochs = [r for r in read_metrics(run.workdir) if r.get("kind") == "epoch"]
    return FitResult(
        workdir=run.workdir, epochs_run=len(epochs), steps=int(state.step),
        best_val=float(loop.best_val), best_epoch=int(loop.best_epoch),
        final_val=float(epochs[-1]["val_loss"]) if epochs else float("nan"),
        stopped=loop.stopped, seconds=time.time() - run.t_start,
        skipped_steps=int(loop.skipped), rollbacks=int(loop.rollbacks), timing=run.clock.summary(),
    )


def params_finite(variables: Any) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(a)))) for a in jax.tree_util.tree_leaves(variables))
