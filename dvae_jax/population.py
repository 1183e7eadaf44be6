"""Populations: K runs whose shapes agree, trained together by one jitted, vmapped step.

Members share the model layout, features, data and batch shape; each has its own seed (its
initialisation, its step keys and its batch order, so member k sees exactly what a lone run with
its config sees), its own learning-rate schedule and peak LR, KL-weight schedule, beta, free bits,
fixed Student-t nu (or learned nu's initial value), weight decay, epochs and early-stopping
patience. The per-member schedules are evaluated on each member's own counters inside the jitted
step and enter the vmapped update as arrays, so members never recompile the step.

train.make_steps bakes one config's schedules, beta and free bits into its step as Python
constants, so this module writes the vmapped step itself with the same pieces: models.forward,
losses.elbo (free bits applied here as elbo does, since elbo takes them as a Python float) and
optax's Adam (``scale_by_adam`` then ``-lr(count)``, as optax.adam with a schedule computes it;
AdamW adds the decayed weights before the LR as optax.adamw does). Non-finite updates are
skipped as train_step skips them; after ``nan_patience`` in a row a member stops ('diverged')
instead of rolling back.

On a device mesh (``train_population(..., mesh='members=2,data=2')``, issue 16) every (K, ...)
array (the state, the keys, the per-member hyper-parameters) is split on the ``members`` axis and
the batch rows on ``data``: each member trains on its own devices, its gradients all-reduced over
``data``, as on one device up to the order of float32 sums. K is padded to a multiple of the
``members`` axis with inactive copies of member 0 that never update and write nothing.

Every member is written as a normal run directory (config.json, metrics.jsonl in fit's format,
checkpoints/best and checkpoints/latest holding parameters), which evaluate and generate accept.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dvae_jax import checkpoint, distributed, errors, losses, models, run_dir, schedules
from dvae_jax import config as config_lib
from dvae_jax.data import batches as batches_lib

# Keys a member may set on its own: they change values, never shapes or the traced program.
MEMBER_KEYS = frozenset({
    "name", "train.seed", "train.lr", "train.lr_schedule", "train.warmup_epochs", "train.decay_rate",
    "train.decay_epochs", "train.plateau_patience", "train.plateau_factor", "train.weight_decay",
    "train.kl_schedule", "train.kl_warmup_epochs", "train.kl_anneal_epochs", "train.kl_cycles",
    "train.beta", "train.free_bits", "train.epochs", "train.early_stop_patience", "model.nu",
})


def _flat(cfg: config_lib.Config) -> dict[str, Any]:
    return {k: _get(cfg, k) for k in config_lib.all_keys(cfg)}


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def shape_key(cfg: config_lib.Config) -> str:
    """Configs with equal keys train in one population."""
    return json.dumps({k: v for k, v in _flat(cfg).items() if k not in MEMBER_KEYS}, sort_keys=True,
                      default=list)


def check_members(cfgs: Sequence[config_lib.Config]) -> None:
    """Raises ConfigError naming the first key that keeps the configs out of one population."""
    if not cfgs:
        raise errors.ConfigError("a population needs at least one member config")
    first = _flat(cfgs[0])
    for i, cfg in enumerate(cfgs[1:], 1):
        for k, v in _flat(cfg).items():
            if k not in MEMBER_KEYS and v != first[k]:
                raise errors.ConfigError(f"population member {i}: {k}={v!r} differs from member 0 "
                                         f"({first[k]!r}); only {', '.join(sorted(MEMBER_KEYS))} may differ")
    for cfg in cfgs:
        if cfg.train.scheduled_sampling > 0 or cfg.train.max_steps:
            raise errors.ConfigError("train.scheduled_sampling and train.max_steps are not supported in a "
                                     "population: train that config alone (dvae-jax train)")
        if cfg.model.lstm_impl == "cudnn":  # jax.experimental.rnn has no vmap rule
            raise errors.ConfigError("model.lstm_impl=cudnn is not supported in a population "
                                     "(cuDNN's LSTM cannot be vmapped): use scan or auto")
        if cfg.data.batching == "streams":  # the population's batches carry no recurrent state
            raise errors.ConfigError("data.batching=streams is not supported in a population: "
                                     "train that config alone (dvae-jax train)")


def _axis(placement: distributed.Placement, name: str) -> str | None:
    """``name`` where the mesh has that axis, else None (that dimension is not split)."""
    return name if placement.mesh is not None and name in placement.mesh.shape else None


def _padded(cfgs: list[config_lib.Config], placement: distributed.Placement) -> list[config_lib.Config]:
    """``cfgs`` and copies of member 0, up to a multiple of the mesh's ``members`` axis: the
    members split evenly over it. The copies never update (their ``active`` is False) and write
    nothing; padding rather than refusing because a sweep's populations come in any size (the
    last of a budget, the members of one shape)."""
    if placement.mesh is not None and jax.process_count() > 1:
        raise errors.ConfigError("a population trains in one process (one multi-device node); --mesh across "
                                 "hosts is for a single run (dvae-jax train --mesh data=N)")
    return cfgs + [cfgs[0]] * (-len(cfgs) % placement.members)


@flax.struct.dataclass
class PopState:
    """Stacked over members (leading axis K)."""

    step: jax.Array  # (K,) steps taken (skipped non-finite ones included), as TrainState.step
    params: Any
    opt_state: Any  # clip (optional) + scale_by_adam states
    count: jax.Array  # (K,) applied updates: the LR schedule's clock, as optax's schedule count
    lr_scale: jax.Array  # (K,) plateau reductions
    nonfinite: jax.Array  # (K,) non-finite steps in a row


@flax.struct.dataclass
class Hyper:
    beta: jax.Array
    free_bits: jax.Array
    weight_decay: jax.Array
    nu: jax.Array


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(tree)]))


class Population:
    """The compiled pieces of one population: ``init()``, ``train_step(state, batch, active)``,
    ``eval_step(params, batch, keys)``; batch leaves are (K, b, t, ...) for training and shared
    (b, t, ...) for validation. With a ``placement`` on a mesh, K is ``n`` (the configs) padded to
    a multiple of the ``members`` axis; the steps place their arguments on the mesh themselves."""

    def __init__(self, cfgs: Sequence[config_lib.Config], steps_per_epoch: int,
                 placement: distributed.Placement | None = None):
        check_members(cfgs)
        self.placement = placement or distributed.Placement()
        self.n = len(cfgs)  # the members asked for; self.k adds the padding (inactive copies)
        self.cfgs = cfgs = _padded(list(cfgs), self.placement)
        self.k = len(self.cfgs)
        self.spe = steps_per_epoch
        self.mc = dataclasses.replace(cfgs[0].model, lstm_impl="scan")  # auto: scan under vmap
        tc0 = cfgs[0].train
        models.build(self.mc)
        self.lr_fns = [schedules.learning_rate(c.train, steps_per_epoch, c.train.epochs * steps_per_epoch)
                       for c in cfgs]
        self.kl_fns = [schedules.kl_weight(c.train, steps_per_epoch) for c in cfgs]
        if tc0.optimizer not in config_lib.OPTIMIZERS:
            raise errors.ConfigError(f"train.optimizer must be one of {config_lib.OPTIMIZERS}")
        self.adamw = tc0.optimizer == "adamw"
        parts = [optax.clip_by_global_norm(tc0.clip_grad_norm)] if tc0.clip_grad_norm > 0 else []
        self.core = optax.chain(*parts, optax.scale_by_adam(eps=tc0.adam_eps))  # adam_eps: shared by members
        self.use_free_bits = any(c.train.free_bits > 0 for c in cfgs)
        self.fixed_nu = self.mc.prior == "student_t" and not self.mc.learn_nu
        self.hyper = Hyper(*(jnp.asarray([v(c) for c in cfgs], jnp.float32) for v in (
            lambda c: c.train.beta, lambda c: c.train.free_bits, lambda c: c.train.weight_decay,
            lambda c: c.model.nu)))
        keys = [jax.random.split(jax.random.PRNGKey(c.train.seed), 3) for c in cfgs]
        self.init_keys = [k[0] for k in keys]
        self.train_keys = jnp.stack([k[1] for k in keys])
        self.eval_keys = jnp.stack([k[2] for k in keys])
        self._compile()

    def _compile(self) -> None:
        """The jitted steps. On a mesh every (K, ...) array (the state, the keys, the per-member
        hyper-parameters, the metrics) is split on ``members`` along K, and the batch rows on
        ``data``: member k runs on its ``members`` slice, XLA all-reduces its gradients over
        ``data``. Without a mesh: plain jit, the single-device program."""
        pl = self.placement
        self._by_member = pl.sharding(_axis(pl, "members"))
        self._train_rows = pl.sharding(_axis(pl, "members"), _axis(pl, "data"))
        self._val_rows = pl.sharding(_axis(pl, "data"))
        if pl.mesh is None:
            self._train = jax.jit(self._train_step, donate_argnums=(0,))
            self._eval = jax.jit(self._eval_step)
            return
        m = self._by_member
        self._train = jax.jit(self._train_step, in_shardings=(m, self._train_rows, m, m, m),
                              out_shardings=(m, m), donate_argnums=(0,))
        self._eval = jax.jit(self._eval_step, in_shardings=(m, self._val_rows, m, m), out_shardings=m)
        self.train_keys, self.eval_keys, self.hyper = self.by_member((self.train_keys, self.eval_keys, self.hyper))

    def by_member(self, tree: Any) -> Any:
        """``tree``'s (K, ...) leaves split on the mesh's ``members`` axis (as they are without a
        mesh); a no-op for leaves already placed so."""
        return tree if self._by_member is None else jax.device_put(tree, self._by_member)

    def train_batch(self, batch: dict) -> dict:
        """A (K, b, ...) training batch on the mesh: members on ``members``, rows on ``data``."""
        return batch if self._train_rows is None else jax.device_put(batch, self._train_rows)

    def val_batch(self, batch: dict) -> dict:
        """A shared (b, ...) validation batch on the mesh: rows on ``data``, every member reads it."""
        return batch if self._val_rows is None else jax.device_put(batch, self._val_rows)

    def active(self, running: Sequence[bool]) -> jax.Array:
        """The (K,) mask of members that update, from the first ``n`` members' flags; padding never does."""
        return self.by_member(jnp.asarray([*running, *[False] * (self.k - len(running))]))

    def train_step(self, state: PopState, batch: dict, active: jax.Array):
        """One step of every active member: ``(state, metrics)``; ``state`` is donated."""
        return self._train(self.by_member(state), self.train_batch(batch), self.by_member(active),
                           self.train_keys, self.hyper)

    def eval_step(self, params: Any, batch: dict, keys: jax.Array) -> dict:
        """elbo's metrics of every member on one shared batch, deterministic, (K, ...) leaves."""
        return self._eval(self.by_member(params), self.val_batch(batch), self.by_member(keys), self.hyper)

    def init(self) -> PopState:
        """Each member's parameters from its own seed (as fit initialises a lone run), stacked."""
        members = [models.init(c.model, key) for c, key in zip(self.cfgs, self.init_keys)]
        params = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *members)
        k = self.k
        return self.by_member(PopState(
            step=jnp.zeros((k,), jnp.int32), params=params, opt_state=jax.vmap(self.core.init)(params),
            count=jnp.zeros((k,), jnp.int32), lr_scale=jnp.ones((k,), jnp.float32),
            nonfinite=jnp.zeros((k,), jnp.int32)))

    def _outputs(self, params, x, key, h, deterministic):
        out, _ = models.forward(self.mc, params, x, key=key, deterministic=deterministic)
        if self.fixed_nu:  # the only place a fixed nu enters the loss (the KL); the model is nu-free
            out = out._replace(nu=jnp.full_like(out.nu, h.nu))
        return out

    def _loss(self, params, batch, key, kl_weight, h):
        out = self._outputs(params, batch["x"], key, h, deterministic=False)
        loss, metrics = losses.elbo(self.mc, out, batch["x"], batch.get("mask"), kl_weight=kl_weight,
                                    beta=h.beta)
        if self.use_free_bits:  # elbo's free bits, with the floor as a per-member array
            floored = jnp.sum(jnp.maximum(metrics["kl_per_dim"], h.free_bits)) + metrics["kl_v"]
            kl_loss = jnp.where(h.free_bits > 0, floored, metrics["kl"])
            loss = metrics["recon"] + kl_weight * h.beta * kl_loss
            metrics = dict(metrics, loss=loss)
        return loss, metrics

    def _member(self, st: PopState, batch, key, lr, kl_weight, h: Hyper, active):
        (loss, metrics), grads = jax.value_and_grad(self._loss, has_aux=True)(st.params, batch, key, kl_weight, h)
        finite = jnp.isfinite(loss) & _all_finite(grads)
        updates, opt_state = self.core.update(grads, st.opt_state, st.params)
        if self.adamw:
            updates = jax.tree_util.tree_map(lambda u, p: u + h.weight_decay * p, updates, st.params)
        updates = jax.tree_util.tree_map(lambda u: jnp.array(-lr, dtype=u.dtype) * u, updates)
        updates = jax.tree_util.tree_map(lambda u: u * st.lr_scale, updates)
        params = optax.apply_updates(st.params, updates)
        ok = finite & active

        def keep(new, old):
            return jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new, old)

        new = PopState(step=st.step + active.astype(jnp.int32), params=keep(params, st.params),
                       opt_state=keep(opt_state, st.opt_state), count=st.count + ok.astype(jnp.int32),
                       lr_scale=st.lr_scale,
                       nonfinite=jnp.where(active, jnp.where(finite, 0, st.nonfinite + 1), st.nonfinite))
        metrics = dict(metrics, grad_norm=optax.tree_utils.tree_norm(grads), lr=lr * st.lr_scale, finite=finite)
        return new, metrics

    def _train_step(self, state: PopState, batch: dict, active: jax.Array, train_keys: jax.Array, hyper: Hyper):
        keys = jax.vmap(jax.random.fold_in)(train_keys, state.step)
        # every member's own schedules, on its own clocks: K scalars, no vmap over closures
        lr = jnp.stack([f(state.count[i]) for i, f in enumerate(self.lr_fns)]).astype(jnp.float32)
        kl = jnp.stack([f(state.step[i]) for i, f in enumerate(self.kl_fns)]).astype(jnp.float32)
        return jax.vmap(self._member)(state, batch, keys, lr, kl, hyper, active)

    def _eval_step(self, params, batch: dict, keys, hyper: Hyper):
        def member(p, key, h):
            out = self._outputs(p, batch["x"], key, h, deterministic=True)
            return losses.elbo(self.mc, out, batch["x"], batch.get("mask"))[1]

        return jax.vmap(member)(params, keys, hyper)

    def member_params(self, state: PopState, i: int) -> Any:
        return jax.tree_util.tree_map(lambda a: np.asarray(a[i]), state.params)


# ------------------------------------------------------------------------------------------------
# The fit loop of a population


@dataclasses.dataclass
class Member:
    """One member's bookkeeping on the host (fit's meta, per member)."""

    cfg: config_lib.Config
    workdir: Path
    warm_epochs: int
    best_val: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    plateau_best: float = math.inf
    plateau_bad: int = 0
    skipped: int = 0
    stopped: str = ""  # '' while training; epochs | early_stopping | pruned | diverged
    sums: dict = dataclasses.field(default_factory=dict)
    count: int = 0
    epochs_run: int = 0

    @property
    def running(self) -> bool:
        return not self.stopped


@dataclasses.dataclass
class MemberResult:
    workdir: Path
    epochs_run: int
    steps: int
    best_val: float
    best_epoch: int
    stopped: str
    seconds: float
    skipped_steps: int


SCALARS = ("loss", "recon", "kl", "kl_weight", "grad_norm", "lr")


def _resolve(cfg: config_lib.Config, n_bins: int) -> config_lib.Config:
    """model.x_dim from the features (fit.resolve_model's job; its checks run when fit has them)."""
    from dvae_jax import fit as fit_lib

    if hasattr(fit_lib, "resolve_model"):
        return fit_lib.resolve_model(cfg, n_bins)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, x_dim=n_bins))


def _stacked_batches(pop: Population, dataset, members: list[Member], epoch: int):
    """Member k's epoch-``epoch`` batches (its own seed: a lone run's order), stacked and placed
    (on the mesh, if any: this runs in the prefetch thread, so the transfer overlaps the step); a
    stopped member and the padding get zeros (their updates are masked out)."""
    tc, dc = members[0].cfg.train, members[0].cfg.data
    iters = [batches_lib.train_batches(dataset, "train", tc.batch_size, dc.seq_len, m.cfg.train.seed, epoch,
                                       mode=dc.batching) if m.running else None for m in members]
    iters += [None] * (pop.k - len(members))
    shape = {"x": (tc.batch_size, dc.seq_len, dataset.n_bins), "mask": (tc.batch_size, dc.seq_len)}
    for _ in range(pop.spe):
        rows = [next(it) if it is not None else {k: np.zeros(s, np.float32) for k, s in shape.items()}
                for it in iters]
        yield pop.train_batch({k: np.stack([r[k] for r in rows]) for k in shape})


def validate(pop: Population, state: PopState, dataset, batch_size: int, seq_len: int) -> list[dict]:
    """fit.evaluate_split for every member at once: frame-weighted -ELBO per frame on 'val'."""
    tot = np.zeros((pop.k, 3))
    kl_dim, frames = None, np.zeros(pop.k)
    for i, batch in enumerate(batches_lib.window_batches(dataset, "val", batch_size, seq_len)):
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(pop.eval_keys, i)
        m = jax.device_get(pop.eval_step(state.params, {"x": batch["x"], "mask": batch["mask"]}, keys))
        n = np.asarray(m["frames"], np.float64)
        tot += np.stack([np.asarray(m[k], np.float64) * n for k in ("loss", "recon", "kl")], axis=1)
        d = np.asarray(m["kl_per_dim"], np.float64) * n[:, None]
        kl_dim = d if kl_dim is None else kl_dim + d
        frames += n
    f = np.maximum(frames, 1.0)
    return [{"loss": tot[k, 0] / f[k], "recon": tot[k, 1] / f[k], "kl": tot[k, 2] / f[k],
             "kl_per_dim": (kl_dim[k] / f[k]).tolist() if kl_dim is not None else []} for k in range(pop.k)]


def _epoch_record(m: Member, epoch: int, step: int, val: dict, lr_scale: float, t0: float) -> dict:
    n = max(m.count, 1)
    return dict(kind="epoch", epoch=epoch, step=step,
                **{f"train_{k}": m.sums.get(k, float("nan")) / n for k in SCALARS},
                val_loss=float(val["loss"]), val_recon=float(val["recon"]), val_kl=float(val["kl"]),
                val_kl_per_dim=val["kl_per_dim"], skipped=m.skipped, lr_scale=lr_scale,
                seconds=time.time() - t0)


def _train_epoch(pop: Population, state: PopState, dataset, members: list[Member], epoch: int, prefetch: int):
    """One epoch of every running member; returns the new state."""
    active = pop.active([m.running for m in members])
    with batches_lib.Prefetcher(_stacked_batches(pop, dataset, members, epoch), size=max(prefetch, 1)) as it:
        for batch in it:
            state, metrics = pop.train_step(state, batch, active)
            metrics = jax.device_get({k: metrics[k] for k in (*SCALARS, "finite")})
            nonfinite = np.asarray(jax.device_get(state.nonfinite))
            for i, m in enumerate(members):
                if not m.running:
                    continue
                if not metrics["finite"][i]:
                    m.skipped += 1
                    if nonfinite[i] >= m.cfg.train.nan_patience:
                        m.stopped = "diverged"  # no rollback in a population: the member ends here
                        active = active.at[i].set(False)
                    continue
                for k in SCALARS:
                    m.sums[k] = m.sums.get(k, 0.0) + float(metrics[k][i])
                m.count += 1
    return state


def _end_of_epoch(m: Member, i: int, epoch: int, val: dict, state: PopState, pop: Population, ckpts, t0: float,
                  on_epoch) -> PopState:
    """fit's end of epoch for one member: log, best checkpoint, plateau, early stopping, pruning."""
    tc = m.cfg.train
    step = int(state.step[i])
    record = _epoch_record(m, epoch, step, val, float(state.lr_scale[i]), t0)
    with open(m.workdir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    m.epochs_run += 1
    improved = val["loss"] < m.best_val and math.isfinite(val["loss"])
    if improved:
        m.best_val, m.best_epoch = float(val["loss"]), epoch
        ckpts.save("best", step, pop.member_params(state, i), None,
                   {"epoch": epoch + 1, "batch": 0, "seed": tc.seed, "best_val": m.best_val,
                    "best_epoch": epoch, "val_loss": m.best_val, "population": pop.k})
    if epoch >= m.warm_epochs:
        m.bad_epochs = 0 if improved else m.bad_epochs + 1
        if tc.lr_schedule == "plateau":
            if val["loss"] < m.plateau_best:
                m.plateau_best, m.plateau_bad = val["loss"], 0
            else:
                m.plateau_bad += 1
                if m.plateau_bad >= tc.plateau_patience:
                    state = state.replace(lr_scale=state.lr_scale.at[i].multiply(tc.plateau_factor))
                    m.plateau_bad = 0
        if m.bad_epochs >= tc.early_stop_patience:
            m.stopped = "early_stopping"
    if not m.stopped and epoch + 1 >= tc.epochs:
        m.stopped = "epochs"
    if on_epoch is not None and on_epoch(i, record) and not m.stopped:
        m.stopped = "pruned"
    m.sums, m.count = {}, 0
    return state


def _start(cfgs: Sequence[config_lib.Config], workdirs: Sequence[str | Path], dataset, spe: int) -> list[Member]:
    """Every member's run directory (its config and data record) and host bookkeeping."""
    members = []
    for cfg, wd in zip(cfgs, workdirs):
        wd = Path(wd)
        if (wd / "checkpoints").exists():
            raise errors.RunError(f"{wd} already holds a run: choose a new directory for the population member")
        checkpoint.save_config(wd, cfg)
        run_dir.record(wd, dataset)  # self-contained like a trained run: evaluate / generate need no corpus
        members.append(Member(cfg=cfg, workdir=wd, warm_epochs=schedules.warm_epochs(cfg.train, spe)))
    return members


def train_population(cfgs: Sequence[config_lib.Config], workdirs: Sequence[str | Path], dataset,
                     on_epoch: Callable[[int, dict], bool] | None = None, quiet: bool = True,
                     mesh: str | None = None) -> list[MemberResult]:
    """Trains the members together until each has stopped; writes each member's run directory.

    Args:
        cfgs: member configs; only MEMBER_KEYS may differ.
        workdirs: one new run directory per member.
        dataset: the prepared dataset of the (shared) data and feature configs.
        on_epoch: ``on_epoch(member_index, epoch_record) -> stop`` after each member's
            validation (e.g. an Optuna pruner); True stops that member ('pruned').
        quiet: no per-epoch lines.
        mesh: e.g. ``'members=2,data=2'`` (or ``data=auto``...): members split over the first
            axis (padded with inactive copies to a multiple of it), batch rows over the second.
    """
    t0 = time.time()
    if len(cfgs) != len(workdirs):
        raise errors.ConfigError("train_population: one workdir per member config")
    placement = distributed.Placement.from_text(mesh, distributed.AXES)
    cfgs = [_resolve(c, dataset.n_bins) for c in cfgs]
    tc, dc = cfgs[0].train, cfgs[0].data
    placement.check_batch(tc.batch_size)  # the validation batches have the same rows
    spe = batches_lib.steps_per_epoch(dataset, "train", tc.batch_size, dc.seq_len, dc.batching)
    pop = Population(cfgs, spe, placement)
    members = _start(cfgs, workdirs, dataset, spe)
    state = pop.init()
    ckpts = [checkpoint.RunCheckpoints(m.workdir) for m in members]
    try:
        epoch = 0
        while any(m.running for m in members):
            running = [i for i, m in enumerate(members) if m.running]
            state = _train_epoch(pop, state, dataset, members, epoch, tc.prefetch)
            vals = validate(pop, state, dataset, tc.batch_size, dc.seq_len)
            for i in running:
                if members[i].stopped != "diverged":
                    state = _end_of_epoch(members[i], i, epoch, vals[i], state, pop, ckpts[i], t0, on_epoch)
            if not quiet:
                best = min(vals[i]["loss"] for i in running)
                print(f"[population] epoch {epoch}: {len(running)}/{pop.n} members training, best validation "
                      f"-ELBO {best:.4f} | {time.time() - t0:.0f} s", flush=True)
            epoch += 1
        for i, m in enumerate(members):
            params = pop.member_params(state, i)
            if all(np.all(np.isfinite(a)) for a in jax.tree_util.tree_leaves(params)):
                ckpts[i].save("latest", int(state.step[i]), params, None,
                              {"epoch": m.epochs_run, "batch": 0, "seed": m.cfg.train.seed, "done": True,
                               "stopped": m.stopped, "best_val": m.best_val, "best_epoch": m.best_epoch})
    finally:
        for c in ckpts:
            c.close()
    _plots(members)
    return [MemberResult(workdir=m.workdir, epochs_run=m.epochs_run, steps=int(state.step[i]), best_val=m.best_val,
                         best_epoch=m.best_epoch, stopped=m.stopped, seconds=time.time() - t0,
                         skipped_steps=m.skipped) for i, m in enumerate(members)]


def _plots(members: list[Member]) -> None:
    """fit's training figures in every member's directory (a failure loses no run)."""
    import sys

    from dvae_jax import fit as fit_lib
    from dvae_jax import plots

    for m in members:
        try:
            plots.training_curves(fit_lib.read_metrics(m.workdir), m.workdir)
        except Exception as e:  # noqa: BLE001 - a plot failure must not lose a finished run
            print(f"warning: could not draw the training plots of {m.workdir}: {e}", file=sys.stderr)


# ------------------------------------------------------------------------------------------------
# Optuna: ask K, train the members whose shapes agree together, tell K


def _heartbeats(study, trials):
    """Optuna records heartbeats only inside study.optimize; ask/tell trials get them here, so
    that a killed population's trials are failed and re-queued like any other."""
    import contextlib

    stack = contextlib.ExitStack()
    try:
        from optuna.storages._heartbeat import get_heartbeat_thread  # no public equivalent
    except ImportError:
        return stack
    for t in trials:
        stack.enter_context(get_heartbeat_thread(t._trial_id, study._storage))
    return stack


def optimize_population(spec, study, study_dir: Path, n_trials: int, timeout_s: float | None, datasets,
                        mesh: str | None = None) -> None:
    """Asks ``spec.population`` trials at a time, groups them by shape, trains every group as one
    population (one member per trial, in ``<study_dir>/trials/<number>``; on ``mesh``, e.g.
    ``members=2,data=2``) and tells each result: pruned members are told PRUNED, a group that
    raises is told FAIL."""
    import optuna

    from dvae_jax import sweep as sweep_lib

    t0 = time.time()
    single = len(spec.objectives) == 1  # Optuna prunes single-objective trials only
    while sweep_lib.finished(study) < n_trials and (timeout_s is None or time.time() - t0 < timeout_s):
        want = min(spec.population, n_trials - sweep_lib.finished(study))
        if want <= 0:
            break
        with warnings.catch_warnings():  # heartbeats are recorded by _heartbeats below
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trials = [study.ask() for _ in range(want)]
        cfgs = [sweep_lib.trial_config(spec, sweep_lib.suggest(t, spec), sweep_lib.trial_seed(spec, t))
                for t in trials]
        groups: dict[str, list[int]] = {}
        for i, cfg in enumerate(cfgs):
            groups.setdefault(shape_key(cfg), []).append(i)
        for idx in groups.values():
            group = [trials[i] for i in idx]
            dirs = [sweep_lib.trial_dir(study_dir, t.number) for t in group]
            for t, d in zip(group, dirs):
                t.set_user_attr("workdir", str(d))
                t.set_user_attr("population", len(group))

            def on_epoch(i: int, record: dict, group=group) -> bool:
                if not single or not math.isfinite(record["val_loss"]):
                    return False
                group[i].report(float(record["val_loss"]), int(record["epoch"]))
                return group[i].should_prune()

            dataset = datasets.get(cfgs[idx[0]])
            try:
                with _heartbeats(study, group):
                    results = train_population([cfgs[i] for i in idx], dirs, dataset, on_epoch, mesh=mesh)
            except Exception:
                for t in group:
                    _told(study, t, state=optuna.trial.TrialState.FAIL)
                raise
            for t, res in zip(group, results):
                _tell(spec, study, t, res, dataset)


def _tell(spec, study, trial, res: MemberResult, dataset) -> None:
    import optuna

    from dvae_jax import sweep as sweep_lib

    trial.set_user_attr("stopped", res.stopped)
    if res.stopped == "pruned":
        for k, v in sweep_lib.run_metrics(res.workdir).items():
            trial.set_user_attr(k, v)
        _told(study, trial, state=optuna.trial.TrialState.PRUNED)
        return
    try:
        values = sweep_lib._objective_values(spec, trial, res.workdir, dataset, res)
    except errors.DvaeError:
        _told(study, trial, state=optuna.trial.TrialState.FAIL)
        return
    _told(study, trial, values)


def _told(study, trial, values=None, state=None) -> None:
    """study.tell; the grid sampler calls study.stop() once its grid is used up, which Optuna
    allows only inside study.optimize: the result is stored before that error, so it is ignored."""
    try:
        study.tell(trial, values, state=state)
    except RuntimeError as e:
        if "Study.stop" not in str(e):
            raise
