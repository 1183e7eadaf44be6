"""Learning-rate and KL-weight schedules: plain step -> value functions (optax style).

Epoch-based settings are converted to steps with ``steps_per_epoch`` when a schedule is built,
so every schedule is a jittable function of the global step alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp
import optax

from dvae_jax.config import ConfigError, TrainConfig

Schedule = Callable[[jnp.ndarray], jnp.ndarray]

LR_SCHEDULES = ("constant", "warmup_cosine", "warmup_linear", "exponential", "step", "plateau")
KL_SCHEDULES = ("none", "review", "linear", "sigmoid", "cyclical")


def learning_rate(cfg: TrainConfig, steps_per_epoch: int, total_steps: int) -> Schedule:
    """The configured optax learning-rate schedule. 'plateau' is constant here: its reductions
    come from :func:`plateau`, stepped once per epoch by the fit loop (train.plateau_step)."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    total = max(total_steps, warmup + 1)
    name = cfg.lr_schedule
    if name in ("constant", "plateau"):
        if warmup:
            return optax.join_schedules(
                [optax.linear_schedule(0.0, cfg.lr, warmup), optax.constant_schedule(cfg.lr)], [warmup]
            )
        return optax.constant_schedule(cfg.lr)
    if name == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, max(warmup, 1), total, end_value=cfg.lr * 0.01)
    if name == "warmup_linear":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, cfg.lr, max(warmup, 1)),
             optax.linear_schedule(cfg.lr, cfg.lr * 0.01, total - max(warmup, 1))],
            [max(warmup, 1)],
        )
    period = max(1, round(cfg.decay_epochs * steps_per_epoch))
    if name in ("exponential", "step"):
        return optax.exponential_decay(
            cfg.lr, transition_steps=period, decay_rate=cfg.decay_rate, staircase=name == "step",
            transition_begin=warmup,
        )
    raise ConfigError(f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got '{name}'")


def plateau(cfg: TrainConfig) -> optax.GradientTransformationExtraArgs:
    """``optax.contrib.reduce_on_plateau`` for the 'plateau' schedule, fed one validation loss
    per epoch: after ``plateau_patience`` epochs without improvement the LR scale is multiplied
    by ``plateau_factor``.

    Improvement is strict (atol 1e-8, rtol 0): a relative tolerance would count a slightly
    worse epoch as an improvement whenever the loss is negative (log-Mel Gaussian losses are).
    """
    try:
        return optax.contrib.reduce_on_plateau(
            factor=cfg.plateau_factor, patience=cfg.plateau_patience, rtol=0.0, atol=1e-8,
            accumulation_size=1,
        )
    except ValueError:
        raise ConfigError(
            f"train.plateau_factor must be in (0, 1), got {cfg.plateau_factor}"
        ) from None


def kl_weight(cfg: TrainConfig, steps_per_epoch: int) -> Schedule:
    """The KL-annealing weight as a function of the global step: ``kl_start + (1 - kl_start) x
    ramp(step)`` with the ramp of ``kl_schedule`` (``kl_start`` = 0, the default: the ramp itself;
    the SRNN code starts at 0.2, its tempKL_start)."""
    ramp = _kl_ramp(cfg, steps_per_epoch)
    start = cfg.kl_start
    if start == 0:
        return ramp
    return lambda step: start + (1.0 - start) * ramp(step)


def _kl_ramp(cfg: TrainConfig, steps_per_epoch: int) -> Schedule:
    """The KL-annealing ramp from 0 to 1 as a function of the global step.

    - none: 1.
    - review: 0 for ``kl_warmup_epochs``, then +0.2 every ``kl_anneal_epochs / 4`` epochs up to 1
      (the review's speech setting: 0 for epochs 0-9, 0.2 from 10, ..., 1.0 from 50).
    - linear: 0 for ``kl_warmup_epochs``, then linear to 1 over ``kl_anneal_epochs``.
    - sigmoid: a logistic ramp centred halfway through the annealing window.
    - cyclical (Fu et al. 2019): ``kl_cycles`` cycles over the run's first ``kl_anneal_epochs``
      x cycles epochs; in each, linear 0 -> 1 over the first half, then 1.
    """
    spe = float(steps_per_epoch)
    warm = cfg.kl_warmup_epochs * spe
    span = max(cfg.kl_anneal_epochs * spe, 1.0)
    name = cfg.kl_schedule

    if name == "none":
        return lambda step: jnp.ones((), jnp.float32)
    if name == "review":
        def review(step):
            epoch = jnp.floor(jnp.asarray(step, jnp.float32) / spe)
            stage = jnp.floor((epoch - cfg.kl_warmup_epochs) / (cfg.kl_anneal_epochs / 4.0)) + 1.0
            return jnp.where(epoch < cfg.kl_warmup_epochs, 0.0, jnp.clip(0.2 * stage, 0.0, 1.0))
        return review
    if name == "linear":
        return lambda step: jnp.clip((jnp.asarray(step, jnp.float32) - warm) / span, 0.0, 1.0)
    if name == "sigmoid":
        def sigmoid(step):
            u = (jnp.asarray(step, jnp.float32) - warm) / span
            return jnp.where(u <= 0, 0.0, jnp.where(u >= 1, 1.0, 1.0 / (1.0 + jnp.exp(-12.0 * (u - 0.5)))))
        return sigmoid
    if name == "cyclical":
        def cyclical(step):
            s = jnp.asarray(step, jnp.float32) - warm
            pos = jnp.mod(s, span) / span
            in_cycles = s < span * cfg.kl_cycles
            return jnp.where(s < 0, 0.0, jnp.where(in_cycles, jnp.minimum(2.0 * pos, 1.0), 1.0))
        return cyclical
    raise ConfigError(f"train.kl_schedule must be one of {', '.join(KL_SCHEDULES)}, got '{name}'")


def kl_annealing_epochs(cfg: TrainConfig) -> float:
    """Epochs before the KL weight reaches 1 for good: warm-up plus annealing (every cycle)."""
    if cfg.kl_schedule == "none":
        return 0.0
    return cfg.kl_warmup_epochs + cfg.kl_anneal_epochs * (cfg.kl_cycles if cfg.kl_schedule == "cyclical" else 1)


def kl_warmup_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """Steps before the KL weight reaches 1 (early stopping counts patience only after this)."""
    return round(kl_annealing_epochs(cfg) * steps_per_epoch)


def warm_epochs(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """Whole epochs before early stopping starts counting (the epoch in which the annealing ends
    still counts as warm-up)."""
    return math.ceil(kl_warmup_steps(cfg, steps_per_epoch) / steps_per_epoch)
