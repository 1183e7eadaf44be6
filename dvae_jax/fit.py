"""The fit loop: epochs, validation, early stopping, checkpoints with exact resume, NaN guard, logs.

Position bookkeeping makes resume exact: an epoch's batches are a pure function of
(seed, epoch) (data/batches.py), the step key is fold_in(train_key, step), and the latest
checkpoint stores params, optimizer state, step, LR scale, (epoch, batch within epoch) and the
running sums of the epoch's metrics. A run killed at any point and resumed with ``resume=True``
therefore takes exactly the steps an uninterrupted run takes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dvae_jax import checkpoint, errors, models, schedules, train
from dvae_jax import config as config_lib
from dvae_jax.data import batches as batches_lib
from dvae_jax.data import prepare as prepare_lib

METRICS_FILE = "metrics.jsonl"
SCALARS = ("loss", "recon", "kl", "kl_weight", "grad_norm", "lr")


TrainingError = errors.TrainingError


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
    if cfg.data.batching == "chunks" and cfg.features.kind != "stft":
        raise config_lib.ConfigError("data.batching=chunks is the review's STFT setting: use features.kind=stft")
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


class _Logger:
    """metrics.jsonl (appended, flushed per line) and TensorBoard event files when available."""

    def __init__(self, workdir: Path):
        self.path = workdir / METRICS_FILE
        self.f = open(self.path, "a")
        self.tb = None
        try:
            from tensorboardX import SummaryWriter  # optional

            self.tb = SummaryWriter(str(workdir / "tensorboard"))
        except Exception:  # noqa: BLE001 - TensorBoard is optional
            self.tb = None

    def write(self, record: dict) -> None:
        self.f.write(json.dumps(record) + "\n")
        self.f.flush()
        if self.tb is not None:
            step = record.get("step", 0)
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record.get('kind', 'train')}/{k}", v, step)

    def close(self) -> None:
        self.f.close()
        if self.tb is not None:
            self.tb.close()


def read_metrics(workdir: str | Path) -> list[dict]:
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def evaluate_split(eval_step, variables, dataset, split: str, batch_size: int, seq_len: int, key) -> dict:
    """Negative ELBO per frame of ``split``, every utterance cut in consecutive ``seq_len``
    windows (one shape: compiled once), as an exact frame-weighted mean over all real frames."""
    tot = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
    kl_dim = None
    frames = 0.0
    for i, batch in enumerate(batches_lib.window_batches(dataset, split, batch_size, seq_len)):
        m = jax.device_get(eval_step(variables, {"x": batch["x"], "mask": batch["mask"]}, jax.random.fold_in(key, i)))
        n = float(m["frames"])
        for k in tot:
            tot[k] += float(m[k]) * n
        kl_dim = m["kl_per_dim"] * n if kl_dim is None else kl_dim + m["kl_per_dim"] * n
        frames += n
    out = {k: v / max(frames, 1.0) for k, v in tot.items()}
    out["kl_per_dim"] = (kl_dim / max(frames, 1.0)).tolist() if kl_dim is not None else []
    out["frames"] = frames
    return out


def fit(
    cfg: config_lib.Config,
    workdir: str | Path,
    resume: bool = False,
    progress: bool = True,
    stop_after_steps: int = 0,
    dataset: prepare_lib.Dataset | None = None,
) -> FitResult:
    """Trains ``cfg`` in ``workdir``; see the module docstring for what resume guarantees.

    Args:
        cfg: the full configuration (model.x_dim is set from the features).
        workdir: the run directory (config.json, checkpoints/, metrics.jsonl, plots).
        resume: continue from the latest checkpoint of ``workdir`` (the saved config is used;
            it must not differ from ``cfg`` except in train.epochs / train.max_steps).
        progress: show a progress bar.
        stop_after_steps: stop (after saving) once this global step is reached; for tests and
            for splitting long runs.
        dataset: an already prepared dataset (else prepared from cfg.data / cfg.features).
    """
    t_start = time.time()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ds = dataset or prepare_lib.prepare_dataset(cfg.data, cfg.features, progress=progress)
    cfg = resolve_model(cfg, ds.n_bins)
    ckpts = checkpoint.RunCheckpoints(workdir)
    has_ckpt = ckpts.latest_step("latest") is not None
    if has_ckpt and not resume:
        ckpts.close()
        raise TrainingError(
            f"{workdir} already holds a run: pass --resume to continue it, or choose a new --workdir"
        )
    if resume and has_ckpt:
        saved = checkpoint.load_config(workdir)
        a = dataclasses.replace(
            saved, train=dataclasses.replace(saved.train, epochs=cfg.train.epochs, max_steps=cfg.train.max_steps)
        )
        if config_lib.to_dict(a) != config_lib.to_dict(cfg):
            diff = [k for k in config_lib.all_keys(cfg) if _get(cfg, k) != _get(a, k)]
            ckpts.close()
            raise TrainingError(f"--resume with a different config than the saved run: {', '.join(diff)}")
        cfg = a
    checkpoint.save_config(workdir, cfg)

    tc, mc = cfg.train, cfg.model
    mode = cfg.data.batching
    spe = batches_lib.steps_per_epoch(ds, "train", tc.batch_size, cfg.data.seq_len, mode)
    total = tc.epochs * spe if not tc.max_steps else min(tc.max_steps, tc.epochs * spe)
    root = jax.random.PRNGKey(tc.seed)
    init_key, train_key, eval_key = jax.random.split(root, 3)
    variables = models.init(mc, init_key)
    tx = train.make_optimizer(tc, spe, total)
    state = train.init_state(variables, tx)
    train_step, eval_step = train.make_steps(mc, tc, tx, spe, total)
    warm_epochs = math.ceil(schedules.kl_warmup_steps(tc, spe) / spe)

    meta = dict(epoch=0, batch=0, seed=tc.seed, best_val=float("inf"), best_epoch=-1, bad_epochs=0,
                plateau_best=float("inf"), plateau_bad=0, skipped=0, rollbacks=0, sums={}, count=0,
                done=False, stopped="")

    def train_tree(st):
        return {"opt_state": st.opt_state, "step": st.step, "lr_scale": st.lr_scale}

    def restore_latest(st):
        ck = ckpts.restore("latest", st.params, train_tree(st))
        st = train.TrainState(step=jnp.asarray(ck.train["step"], jnp.int32), params=ck.variables,
                              opt_state=ck.train["opt_state"],
                              lr_scale=jnp.asarray(ck.train["lr_scale"], jnp.float32),
                              nonfinite=jnp.zeros((), jnp.int32))
        return st, dict(ck.meta)

    if resume and has_ckpt:
        state, meta = restore_latest(state)
        if meta.get("done") and meta.get("stopped") in ("epochs", "max_steps") and (
            meta["epoch"] < tc.epochs and (not tc.max_steps or int(state.step) < tc.max_steps)
        ):
            meta.update(done=False, stopped="")  # a finished run given more epochs / steps goes on
        if meta.get("done"):
            ckpts.close()
            print(f"{workdir}: run already finished ({meta.get('stopped')}); nothing to do")
            return _result(workdir, meta, state, t_start, read_metrics(workdir))

    def save_latest(st, m):
        ckpts.save("latest", int(st.step), st.params, train_tree(st), m)

    if not has_ckpt:
        save_latest(state, meta)  # step 0: a NaN rollback always has somewhere to go

    logger = _Logger(workdir)
    bar = _progress(progress, total, int(state.step))
    stop_reason = ""
    try:
        while meta["epoch"] < tc.epochs and not stop_reason:
            epoch = meta["epoch"]
            it = batches_lib.train_batches(ds, "train", tc.batch_size, cfg.data.seq_len, tc.seed, epoch,
                                           start_batch=meta["batch"], mode=mode)
            rolled_back = False
            with batches_lib.Prefetcher(it, size=max(tc.prefetch, 1)) as fetch:
                for batch in fetch:
                    step = int(state.step)
                    state, m = train_step(state, batch, jax.random.fold_in(train_key, step))
                    m = jax.device_get({k: m[k] for k in (*SCALARS, "finite")})
                    meta["batch"] += 1
                    if not bool(m["finite"]):
                        meta["skipped"] += 1
                        if int(state.nonfinite) >= tc.nan_patience:
                            state, meta = _rollback(state, meta, restore_latest, tc, step, workdir, ckpts, bar)
                            rolled_back = True
                            break
                    else:
                        for k in SCALARS:
                            meta["sums"][k] = meta["sums"].get(k, 0.0) + float(m[k])
                        meta["count"] += 1
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{m['loss']:.3f}", recon=f"{m['recon']:.3f}", kl=f"{m['kl']:.3f}",
                                        lr=f"{m['lr']:.2e}", beta=f"{m['kl_weight']:.2f}", ep=epoch)
                    if tc.log_every_steps and (step + 1) % tc.log_every_steps == 0:
                        logger.write(dict(kind="step", step=step + 1, epoch=epoch,
                                          **{k: float(m[k]) for k in SCALARS}))
                    done_steps = int(state.step)
                    if tc.max_steps and done_steps >= tc.max_steps:
                        stop_reason = "max_steps"
                        break
                    if (tc.checkpoint_every_steps and done_steps % tc.checkpoint_every_steps == 0
                            and meta["batch"] < spe):  # an epoch's end is saved after validation
                        save_latest(state, meta)
                    if stop_after_steps and done_steps >= stop_after_steps:
                        save_latest(state, meta)
                        return _result(workdir, dict(meta, stopped="stop_after_steps"), state, t_start,
                                       read_metrics(workdir))
            if rolled_back:
                continue
            # end of epoch: validation, logs, early stopping, checkpoints
            val = evaluate_split(eval_step, state.params, ds, "val", tc.batch_size, cfg.data.seq_len, eval_key)
            n = max(meta["count"], 1)
            rec = dict(kind="epoch", epoch=epoch, step=int(state.step),
                       **{f"train_{k}": meta["sums"].get(k, float("nan")) / n for k in SCALARS},
                       val_loss=val["loss"], val_recon=val["recon"], val_kl=val["kl"],
                       val_kl_per_dim=val["kl_per_dim"], skipped=meta["skipped"], lr_scale=float(state.lr_scale),
                       seconds=time.time() - t_start)
            logger.write(rec)
            _say(bar, f"epoch {epoch}: train loss {rec['train_loss']:.4f} (KL weight {rec['train_kl_weight']:.2f}) | "
                      f"validation -ELBO {val['loss']:.4f} recon {val['recon']:.4f} KL {val['kl']:.4f} | "
                      f"{rec['seconds']:.0f} s")
            improved = val["loss"] < meta["best_val"]
            if improved and math.isfinite(val["loss"]):
                meta["best_val"], meta["best_epoch"] = val["loss"], epoch
                ckpts.save("best", int(state.step), state.params, train_tree(state),
                           dict(meta, epoch=epoch + 1, batch=0, val_loss=val["loss"]))
            if epoch >= warm_epochs:
                meta["bad_epochs"] = 0 if improved else meta["bad_epochs"] + 1
                if tc.lr_schedule == "plateau":
                    state, meta = _plateau(state, meta, val["loss"], tc)
                if meta["bad_epochs"] >= tc.early_stop_patience:
                    stop_reason = "early_stopping"
            meta.update(epoch=epoch + 1, batch=0, sums={}, count=0, last_val=val["loss"])
            if not stop_reason and meta["epoch"] >= tc.epochs:
                stop_reason = "epochs"
            if stop_reason:
                meta.update(done=True, stopped=stop_reason)
            save_latest(state, meta)
    finally:
        if bar is not None:
            bar.close()
        logger.close()
        ckpts.close()
    history = read_metrics(workdir)
    result = _result(workdir, meta, state, t_start, history)
    try:
        from dvae_jax import plots

        plots.training_curves(history, workdir)
    except Exception as e:  # noqa: BLE001 - a plot failure must not lose a finished run
        print(f"warning: could not draw the training plots: {e}", file=sys.stderr)
    return result


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


def _plateau(state, meta, val_loss, tc):
    if val_loss < meta["plateau_best"]:
        meta["plateau_best"], meta["plateau_bad"] = val_loss, 0
    else:
        meta["plateau_bad"] += 1
        if meta["plateau_bad"] >= tc.plateau_patience:
            state = state.replace(lr_scale=state.lr_scale * tc.plateau_factor)
            meta["plateau_bad"] = 0
    return state, meta


def _rollback(state, meta, restore_latest, tc, step, workdir, ckpts, bar):
    """K non-finite steps in a row: back to the last good checkpoint with half the LR, or stop."""
    rollbacks = meta["rollbacks"] + 1
    skipped = meta["skipped"]
    msg = f"step {step}: {tc.nan_patience} non-finite losses/gradients in a row"
    if rollbacks > tc.nan_max_rollbacks:
        raise TrainingError(
            f"{msg}; stopped after {rollbacks - 1} rollbacks. No non-finite parameter was saved: "
            f"the last good checkpoint in {workdir} is intact. Lower train.lr, set "
            "train.clip_grad_norm, or check the data for extreme values."
        )
    scale = float(state.lr_scale) * 0.5
    state, restored = restore_latest(state)
    state = state.replace(lr_scale=jnp.asarray(scale, jnp.float32))
    restored.update(rollbacks=rollbacks, skipped=skipped)
    print(f"\n{msg}: rolled back to step {int(state.step)} with LR scale {scale:g}", file=sys.stderr)
    if bar is not None:
        bar.n = int(state.step)
        bar.refresh()
    return state, restored


def _result(workdir, meta, state, t_start, history) -> FitResult:
    epochs = [r for r in history if r.get("kind") == "epoch"]
    return FitResult(
        workdir=Path(workdir), epochs_run=len(epochs), steps=int(state.step),
        best_val=float(meta.get("best_val", float("nan"))), best_epoch=int(meta.get("best_epoch", -1)),
        final_val=float(epochs[-1]["val_loss"]) if epochs else float("nan"),
        stopped=meta.get("stopped", ""), seconds=time.time() - t_start,
        skipped_steps=int(meta.get("skipped", 0)), rollbacks=int(meta.get("rollbacks", 0)),
    )


def params_finite(variables: Any) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(a)))) for a in jax.tree_util.tree_leaves(variables))
