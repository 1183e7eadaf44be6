"""Populations: a member's trajectory equals the same config trained alone by train.make_steps,
and train_population writes a normal run directory per member."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dvae_jax import config as config_lib
from dvae_jax import models, population, train

SPE, STEPS, B, T, F = 4, 6, 4, 8, 6  # steps per epoch (schedules), steps compared, batch shape
RTOL, ATOL = 1e-5, 1e-6  # float32; vmap batches the matmuls, so bits may differ, not values


def _base() -> config_lib.Config:
    return config_lib.Config(
        model=config_lib.ModelConfig(model="vrnn", x_dim=F, z_dim=3, dense_x=(8,), dense_z=(8,), dim_rnn=8,
                                     likelihood="gaussian", prior="student_t", nu=5.0),
        train=config_lib.TrainConfig(batch_size=B, epochs=3, kl_schedule="linear", kl_warmup_epochs=0,
                                     kl_anneal_epochs=1),
    )


def _members() -> list[config_lib.Config]:
    """Three members that differ in everything a member may change."""
    base = _base()
    t = base.train
    trains = [
        dataclasses.replace(t, seed=0, lr=2e-3),
        dataclasses.replace(t, seed=1, lr=5e-3, lr_schedule="warmup_cosine", warmup_epochs=0.5,
                            kl_schedule="cyclical", kl_anneal_epochs=0.5, beta=0.5, free_bits=0.05),
        dataclasses.replace(t, seed=2, lr=1e-3, lr_schedule="step", decay_epochs=0.5, kl_schedule="none",
                            beta=2.0),
    ]
    nus = [5.0, 10.0, 3.0]
    return [dataclasses.replace(base, train=tr, model=dataclasses.replace(base.model, nu=nu))
            for tr, nu in zip(trains, nus)]


def _batches(k: int) -> np.ndarray:
    rng = np.random.default_rng(k)
    x = rng.standard_normal((STEPS, B, T, F)).astype(np.float32)
    mask = np.ones((STEPS, B, T), np.float32)
    mask[:, 0, T // 2:] = 0.0  # a padded row: masks must be honoured the same way
    return x, mask


def _alone(cfg: config_lib.Config):
    """The reference: fit's own pieces (make_optimizer, init_state, make_steps), step keys
    fold_in(train_key, step) as fit draws them."""
    total = cfg.train.epochs * SPE
    init_key, train_key, _ = jax.random.split(jax.random.PRNGKey(cfg.train.seed), 3)
    tx = train.make_optimizer(cfg.train, SPE, total)
    state = train.init_state(models.init(cfg.model, init_key), tx)
    step, _ = train.make_steps(cfg.model, cfg.train, tx, SPE, total)
    x, mask = _batches(cfg.train.seed)
    losses = []
    for i in range(STEPS):
        state, m = step(state, {"x": jnp.asarray(x[i]), "mask": jnp.asarray(mask[i])},
                        jax.random.fold_in(train_key, i))
        losses.append(float(m["loss"]))
    return state.params, losses


def test_each_member_follows_the_trajectory_of_its_config_trained_alone():
    # given three members differing in seed, LR schedule and peak, KL schedule, beta, free bits, nu
    cfgs = _members()
    pop = population.Population(cfgs, SPE)
    state = pop.init()
    data = [_batches(c.train.seed) for c in cfgs]
    active = jnp.ones((len(cfgs),), bool)
    # when they train together for STEPS steps
    pop_losses = []
    for i in range(STEPS):
        batch = {"x": jnp.stack([d[0][i] for d in data]), "mask": jnp.stack([d[1][i] for d in data])}
        state, m = pop.train_step(state, batch, active)
        pop_losses.append(np.asarray(m["loss"]))
    # then every member's losses and parameters equal its lone run's
    for k, cfg in enumerate(cfgs):
        params, losses = _alone(cfg)
        np.testing.assert_allclose([p[k] for p in pop_losses], losses, rtol=RTOL)
        mine = pop.member_params(state, k)
        for a, b in zip(jax.tree_util.tree_leaves(mine), jax.tree_util.tree_leaves(params)):
            np.testing.assert_allclose(a, np.asarray(b), rtol=RTOL, atol=ATOL)
    # and the members did move apart (the test would catch a shared update)
    assert not np.allclose(pop.member_params(state, 0)["params"]["phi_x"]["linear0"]["kernel"],
                           pop.member_params(state, 1)["params"]["phi_x"]["linear0"]["kernel"])
    # when member 1 has stopped, then its parameters and step stay put while the others go on
    frozen = pop.member_params(state, 1)
    state, _ = pop.train_step(state, batch, jnp.asarray([True, False, True]))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(frozen),
                                                     jax.tree_util.tree_leaves(pop.member_params(state, 1))))
    assert np.asarray(state.step).tolist() == [STEPS + 1, STEPS, STEPS + 1]


def test_members_whose_shapes_differ_are_refused_by_name():
    a, b = _members()[:2]
    b = dataclasses.replace(b, model=dataclasses.replace(b.model, z_dim=5))
    with pytest.raises(config_lib.ConfigError, match="model.z_dim"):
        population.Population([a, b], SPE)
    assert population.shape_key(_members()[0]) == population.shape_key(_members()[2])


def test_adam_eps_reaches_the_members_and_streams_are_refused():
    # given members sharing a large Adam epsilon (the SRNN code uses 1e-4; 0.1 makes it visible)
    cfgs = [dataclasses.replace(c, train=dataclasses.replace(c.train, adam_eps=0.1)) for c in _members()[:2]]
    pop = population.Population(cfgs, SPE)
    state = pop.init()
    data = [_batches(c.train.seed) for c in cfgs]
    for i in range(STEPS):
        batch = {"x": jnp.stack([d[0][i] for d in data]), "mask": jnp.stack([d[1][i] for d in data])}
        state, _ = pop.train_step(state, batch, jnp.ones((2,), bool))
    # then each member still follows its lone run (which optax.adam(eps=0.1) drives)
    params, _ = _alone(cfgs[0])
    for a, b in zip(jax.tree_util.tree_leaves(pop.member_params(state, 0)), jax.tree_util.tree_leaves(params)):
        np.testing.assert_allclose(a, np.asarray(b), rtol=RTOL, atol=ATOL)
    # and a piano-roll config trained in carried streams is refused by name
    streams = config_lib.load_named("srnn_polyphonic_paper")
    with pytest.raises(config_lib.ConfigError, match="data.batching=streams is not supported in a population"):
        population.check_members([streams])
