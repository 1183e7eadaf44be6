"""Train state, optimizer, and the jitted train_step / eval_step (pure; no I/O)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from dvae_jax import distributed, losses, models, schedules
from dvae_jax.config import ConfigError, ModelConfig, TrainConfig
from dvae_jax.notation import Array, Metrics, PRNGKey


@flax.struct.dataclass
class TrainState:
    """Everything a step changes. No PRNG keys inside: step keys are fold_in(train_key, step).

    ``opt_state`` is that of ``optax.apply_if_finite`` around the optimizer: it skips a
    non-finite update and counts the skips in a row (``nonfinite``); the fit loop rolls back.
    ``plateau`` is ``optax.contrib.reduce_on_plateau``'s state, stepped once per epoch by the fit
    loop with the validation loss (``plateau_step``); its scale multiplies every update.
    ``carry`` is the model's recurrent state at the end of the previous batch with
    ``data.batching=streams`` (the next batch continues it; no gradient flows back through it),
    None otherwise (every batch starts cold).
    """

    step: Array  # int32 scalar: optimizer steps attempted (skipped non-finite ones included)
    params: Any
    opt_state: Any
    lr_scale: Array  # float32 scalar set by the host: halved by each NaN rollback
    plateau: Any  # optax.contrib.ReduceLROnPlateauState
    carry: Any = None  # streams: the model's carry after the last batch (models.build(cfg).initial_carry)

    @property
    def nonfinite(self) -> Array:
        """Non-finite steps in a row (their updates were skipped)."""
        return self.opt_state.notfinite_count


# apply_if_finite applies a non-finite update after this many in a row; the fit loop rolls back
# after train.nan_patience instead, so the library's give-up must never be reached.
_NEVER = 2**30


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int, total_steps: int) -> optax.GradientTransformation:
    """Optional global-norm clipping, then Adam/AdamW on the configured LR schedule, all inside
    ``optax.apply_if_finite`` (a non-finite gradient leaves parameters and moments unchanged)."""
    lr = schedules.learning_rate(cfg, steps_per_epoch, total_steps)
    if cfg.optimizer == "adam":
        opt = optax.adam(lr, eps=cfg.adam_eps)
    elif cfg.optimizer == "adamw":
        opt = optax.adamw(lr, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    else:
        raise ConfigError(f"train.optimizer must be 'adam' or 'adamw', got '{cfg.optimizer}'")
    if cfg.clip_grad_norm > 0:
        opt = optax.chain(optax.clip_by_global_norm(cfg.clip_grad_norm), opt)
    return optax.apply_if_finite(opt, max_consecutive_errors=_NEVER)


def init_state(variables: Any, tx: optax.GradientTransformation, carry: Any = None) -> TrainState:
    """Step 0; ``carry``: the cold state the first batch continues (streams), or None."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=variables,
        opt_state=tx.init(variables),
        lr_scale=jnp.ones((), jnp.float32),
        plateau=schedules.plateau(TrainConfig()).init(jnp.zeros((), jnp.float32)),
        carry=carry,
    )


def plateau_step(cfg: TrainConfig) -> Callable[[TrainState, float], TrainState]:
    """``(state, val_loss) -> state`` with the plateau state advanced by one epoch's validation
    loss (optax.contrib.reduce_on_plateau, accumulation_size=1): the scale drops by
    ``plateau_factor`` after ``plateau_patience`` epochs without improvement."""
    tx = schedules.plateau(cfg)

    @jax.jit
    def step(plateau_state, value):
        _, new = tx.update({}, plateau_state, value=value)
        return new

    return lambda state, value: state.replace(plateau=step(state.plateau, jnp.asarray(value, jnp.float32)))


def make_steps(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    tx: optax.GradientTransformation,
    steps_per_epoch: int,
    total_steps: int,
    shardings: Shardings | None = None,
) -> tuple[Callable, Callable]:
    """Builds ``train_step(state, batch, key) -> (state, metrics)`` and
    ``eval_step(params, batch, key) -> metrics``, both jitted once (fixed shapes: no recompiles).
    With ``shardings`` (a device mesh: :func:`shardings_for`) both are jitted with them as
    explicit input and output shardings; XLA partitions the program (the gradient's all-reduce
    over the batch's devices included), which computes what the single-device step computes.

    A batch is {'x': (b, t, f), 'mask': (b, t)}. A non-finite loss or gradient leaves params and
    optimizer state unchanged and counts in ``state.nonfinite``; the fit loop decides what to do.
    When ``state.carry`` is not None (``data.batching=streams``) the batch continues it and the
    new state holds the batch's final carry, gradient stopped (truncated backpropagation through
    time); a skipped step keeps the old carry.
    """
    models.build(model_cfg)  # a bad model option fails here, not at the first step
    kl_fn = schedules.kl_weight(train_cfg, steps_per_epoch)
    lr_fn = schedules.learning_rate(train_cfg, steps_per_epoch, total_steps)

    def loss_fn(params, batch, key, kl_weight, step, carry):
        new_carry = None
        if train_cfg.scheduled_sampling > 0:
            # The review's SRNN "generation mode" and its VRNN counterpart (generate.py).
            from dvae_jax import generate

            p = generate.scheduled_sampling_probability(
                step, steps_per_epoch, train_cfg.ss_start_epochs, train_cfg.ss_ramp_epochs,
                train_cfg.scheduled_sampling,
            )
            out = generate.scheduled_sampling_forward(
                model_cfg, params, batch["x"], key, p=p, per=train_cfg.ss_per, deterministic=False
            )
        else:
            out, new_carry = models.forward(model_cfg, params, batch["x"], key=key,
                                            deterministic=False, carry=carry)
        loss, metrics = losses.elbo(
            model_cfg, out, batch["x"], batch.get("mask"), kl_weight=kl_weight,
            beta=train_cfg.beta, free_bits=train_cfg.free_bits,
        )
        return loss, (metrics, None if carry is None else new_carry)

    def train_step(state: TrainState, batch: dict, key: PRNGKey) -> tuple[TrainState, Metrics]:
        kl_weight = kl_fn(state.step)
        (loss, (metrics, carry)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, batch, key, kl_weight, state.step, state.carry
        )
        # apply_if_finite checks the gradients only: a non-finite loss poisons them so that it
        # is skipped (and counted) too.
        grads = jax.tree_util.tree_map(lambda g: jnp.where(jnp.isfinite(loss), g, jnp.nan), grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        scale = state.lr_scale * state.plateau.scale
        updates = jax.tree_util.tree_map(lambda u: u * scale, updates)
        if state.carry is not None:  # streams: the next batch continues this one
            carry = jax.tree_util.tree_map(
                lambda new, old: jnp.where(opt_state.last_finite, jax.lax.stop_gradient(new), old),
                carry, state.carry)
        new_state = state.replace(
            step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state,
            carry=state.carry if state.carry is None else carry,
        )
        metrics = dict(
            metrics,
            grad_norm=optax.tree_utils.tree_norm(grads),
            lr=lr_fn(state.step) * scale,
            finite=opt_state.last_finite,
        )
        return new_state, metrics

    def eval_step(params: Any, batch: dict, key: PRNGKey) -> Metrics:
        """Negative ELBO (KL weight 1), per frame, summed statistics for exact aggregation."""
        out, _ = models.forward(model_cfg, params, batch["x"], key=key)
        _, metrics = losses.elbo(model_cfg, out, batch["x"], batch.get("mask"))
        return metrics

    return _jit_steps(train_step, eval_step, shardings)


def _jit_steps(train_step: Callable, eval_step: Callable, sh: Shardings | None) -> tuple[Callable, Callable]:
    """Both steps jitted (the train state donated), with explicit shardings on a mesh."""
    if sh is None:
        return jax.jit(train_step, donate_argnums=(0,)), jax.jit(eval_step)
    return (
        jax.jit(train_step, donate_argnums=(0,), in_shardings=(sh.state, sh.batch, sh.replicated),
                out_shardings=(sh.state, sh.replicated)),
        jax.jit(eval_step, in_shardings=(sh.replicated, sh.batch, sh.replicated),
                out_shardings=sh.replicated),
    )


@dataclasses.dataclass(frozen=True)
class Shardings:
    """The explicit shardings of the jitted steps on a mesh: ``state`` a TrainState of
    shardings (all replicated but the streams carry, split on ``data`` by rows), ``batch`` rows on
    ``data``, ``replicated`` for keys, parameters at evaluation and metrics."""

    state: Any
    batch: Any
    replicated: Any


def shardings_for(placement: distributed.Placement, state: TrainState, batch_size: int) -> Shardings | None:
    """The steps' shardings for ``state`` on ``placement``'s mesh (None without a mesh)."""
    if placement.mesh is None:
        return None
    rep = placement.sharding()
    tree = jax.tree_util.tree_map(lambda _: rep, state.replace(carry=None))
    tree = tree.replace(carry=None if state.carry is None else placement.row_shardings(state.carry, batch_size))
    return Shardings(state=tree, batch=placement.sharding("data"), replicated=rep)
