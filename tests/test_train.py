"""Schedules, the jitted train step (no recompiles, NaN skipping), and learning on a sequence task."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dvae_jax import config, losses, models, schedules, synthetic, train

SMALL = {"x_dim": 8, "z_dim": 4, "likelihood": "gaussian", "learn_x_var": True}
VRNN = config.ModelConfig(model="vrnn", dense_x=(32,), dense_z=(16,), dim_rnn=32, **SMALL)
SRNN = config.ModelConfig(model="srnn", dense_x_h=(32,), dense_hx_g=(32,), dense_gz_z=(16,), dense_hz_z=(16,),
                          dense_hz_x=(32,), dim_rnn=32, dim_rnn_g=32, **SMALL)


def test_review_kl_schedule_matches_the_review():
    # Given the review's speech setting and 7 steps per epoch
    cfg = config.TrainConfig(kl_schedule="review", kl_warmup_epochs=10, kl_anneal_epochs=40)
    f = schedules.kl_weight(cfg, steps_per_epoch=7)
    # Then 0 for epochs 0-9, 0.2 from epoch 10, ... 1.0 from epoch 50
    want = {0: 0.0, 9: 0.0, 10: 0.2, 19: 0.2, 20: 0.4, 30: 0.6, 40: 0.8, 49: 0.8, 50: 1.0, 300: 1.0}
    for epoch, w in want.items():
        assert float(f(epoch * 7)) == pytest.approx(w), epoch
        assert float(f(epoch * 7 + 6)) == pytest.approx(w), epoch
    assert schedules.kl_warmup_steps(cfg, 7) == 50 * 7


@pytest.mark.parametrize("name", schedules.KL_SCHEDULES)
def test_kl_schedules_stay_in_unit_interval_and_end_at_one(name):
    cfg = config.TrainConfig(kl_schedule=name, kl_warmup_epochs=2, kl_anneal_epochs=4, kl_cycles=2)
    f = jax.jit(schedules.kl_weight(cfg, steps_per_epoch=5))
    w = np.array([float(f(s)) for s in range(100)])
    assert np.all((w >= 0) & (w <= 1))
    assert w[-1] == pytest.approx(1.0)
    if name != "none":
        assert w[0] == 0.0


def test_cyclical_schedule_restarts():
    cfg = config.TrainConfig(kl_schedule="cyclical", kl_warmup_epochs=0, kl_anneal_epochs=2, kl_cycles=3)
    f = schedules.kl_weight(cfg, steps_per_epoch=10)
    assert float(f(0)) == 0.0 and float(f(10)) == pytest.approx(1.0)
    assert float(f(20)) == 0.0 and float(f(45)) == pytest.approx(0.5)


@pytest.mark.parametrize("name", schedules.LR_SCHEDULES)
def test_lr_schedules(name):
    cfg = config.TrainConfig(lr=1e-3, lr_schedule=name, warmup_epochs=1, decay_epochs=2, decay_rate=0.5)
    f = schedules.learning_rate(cfg, steps_per_epoch=10, total_steps=100)
    lrs = np.array([float(f(s)) for s in range(100)])
    assert np.all(lrs >= 0) and lrs.max() <= 1e-3 * (1 + 1e-6)
    if name in ("warmup_cosine", "warmup_linear"):
        assert lrs[0] == 0.0 and lrs[10] == pytest.approx(1e-3) and lrs[-1] < 1e-4
    if name == "step":
        assert lrs[35] == pytest.approx(1e-3 * 0.5)  # one halving after warm-up + 2 epochs


def test_unknown_schedule_names_are_config_errors():
    with pytest.raises(config.ConfigError, match="kl_schedule"):
        schedules.kl_weight(config.TrainConfig(kl_schedule="sawtooth"), 10)
    with pytest.raises(config.ConfigError, match="lr_schedule"):
        schedules.learning_rate(config.TrainConfig(lr_schedule="zigzag"), 10, 100)


def _setup(mcfg, tcfg=None, spe=10, total=1000):
    tcfg = tcfg or config.TrainConfig(kl_schedule="none")
    tx = train.make_optimizer(tcfg, spe, total)
    state = train.init_state(models.init(mcfg, jax.random.PRNGKey(0)), tx)
    return state, *train.make_steps(mcfg, tcfg, tx, spe, total)


def _batch(n=8, t=20, seed=0):
    x = synthetic.noisy_sinusoids(n, t, 8, seed=seed)
    return {"x": jnp.asarray(x), "mask": jnp.ones((n, t), jnp.float32)}


def test_train_step_compiles_once():
    state, train_step, eval_step = _setup(VRNN)
    for i in range(3):
        state, _ = train_step(state, _batch(seed=i), jax.random.PRNGKey(i))
        eval_step(state.params, _batch(seed=i), jax.random.PRNGKey(i))
    assert train_step._cache_size() == 1
    assert eval_step._cache_size() == 1


def test_non_finite_batch_skips_the_update_and_is_counted():
    state, train_step, _ = _setup(SRNN)
    before = jax.tree_util.tree_map(np.asarray, state.params)
    bad = _batch()
    bad["x"] = bad["x"].at[0, 3, 2].set(jnp.nan)
    state, m = train_step(state, bad, jax.random.PRNGKey(0))
    assert not bool(m["finite"]) and int(state.nonfinite) == 1 and int(state.step) == 1
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), state.params, before)
    state, m = train_step(state, _batch(), jax.random.PRNGKey(1))
    assert bool(m["finite"]) and int(state.nonfinite) == 0


def test_free_bits_floor_the_kl_in_the_loss_only():
    cfg = VRNN
    x = _batch()["x"]
    out, _ = models.forward(cfg, models.init(cfg, jax.random.PRNGKey(0)), x, key=jax.random.PRNGKey(1))
    loss0, m0 = losses.elbo(cfg, out, x)
    loss1, m1 = losses.elbo(cfg, out, x, free_bits=10.0)
    assert float(m1["kl"]) == float(m0["kl"])
    assert float(loss1) == pytest.approx(float(m0["recon"]) + 10.0 * cfg.z_dim, rel=1e-5)
    assert float(loss1) > float(loss0)


@pytest.mark.parametrize("mcfg", [VRNN, SRNN, dataclasses.replace(VRNN, prior="student_t", nu=5.0),
                                  dataclasses.replace(SRNN, prior="student_t", learn_nu=True)],
                         ids=["vrnn-gauss", "srnn-gauss", "vrnn-student", "srnn-student-learned"])
def test_a_few_hundred_steps_lower_the_validation_elbo(mcfg):
    # Given noisy sinusoids with random phase and frequency
    train_x = synthetic.noisy_sinusoids(256, 30, 8, seed=1)
    val = {"x": jnp.asarray(synthetic.noisy_sinusoids(64, 30, 8, seed=2)), "mask": jnp.ones((64, 30))}
    tcfg = config.TrainConfig(kl_schedule="linear", kl_warmup_epochs=0, kl_anneal_epochs=10, lr=3e-3)
    state, train_step, eval_step = _setup(mcfg, tcfg, spe=8, total=200)
    start = float(eval_step(state.params, val, jax.random.PRNGKey(0))["loss"])
    rng = np.random.default_rng(0)
    # When trained for 200 steps of 32 sequences
    for step in range(200):
        idx = rng.choice(256, 32, replace=False)
        state, _ = train_step(state, {"x": jnp.asarray(train_x[idx]), "mask": jnp.ones((32, 30))},
                              jax.random.PRNGKey(step))
    end = float(eval_step(state.params, val, jax.random.PRNGKey(0))["loss"])
    # Then the validation negative ELBO per frame falls by at least 5 nats (from about 12)
    # and below what a model that ignores time can reach (the data's noise floor is about -8).
    assert end < start - 5.0, (start, end)
    assert np.isfinite(end)


def test_scheduled_sampling_training_runs_and_compiles_once():
    tcfg = config.TrainConfig(kl_schedule="none", scheduled_sampling=0.5, ss_ramp_epochs=1)
    state, train_step, _ = _setup(SRNN, tcfg, spe=2, total=10)
    losses_ = []
    for i in range(4):
        state, m = train_step(state, _batch(seed=i), jax.random.PRNGKey(i))
        losses_.append(float(m["loss"]))
    assert np.all(np.isfinite(losses_)) and train_step._cache_size() == 1


def _host_plateau(losses, patience, factor):
    """The fit loop's former hand-written plateau rule, the reference for the optax one."""
    best, bad, scale, out = float("inf"), 0, 1.0, []
    for v in losses:
        if v < best:
            best, bad = v, 0
        else:
            bad += 1
            if bad >= patience:
                scale, bad = scale * factor, 0
        out.append(scale)
    return out


def test_plateau_step_is_optax_reduce_on_plateau_driven_per_epoch():
    # Given validation losses with plateaus, improvements and negative values
    tcfg = config.TrainConfig(lr_schedule="plateau", plateau_patience=2, plateau_factor=0.5)
    losses_ = [3.0, 3.0, 3.5, 2.0, -1.0, -1.0, -0.99999, -1.0, -2.0, -2.0, -2.0, -2.0]
    state, _, _ = _setup(VRNN, tcfg)
    step = train.plateau_step(tcfg)
    got = []
    for v in losses_:
        state = step(state, v)
        got.append(float(state.plateau.scale))
    # Then the scales are those of the former host-side rule (strict improvement)
    assert got == _host_plateau(losses_, 2, 0.5)
    assert got[-1] == 0.125  # three reductions


def test_plateau_scale_multiplies_the_update():
    tcfg = config.TrainConfig(kl_schedule="none", lr_schedule="plateau")
    state, train_step, _ = _setup(VRNN, tcfg)
    before = jax.tree_util.tree_map(np.asarray, state.params)
    half = state.replace(plateau=state.plateau._replace(scale=jnp.asarray(0.5, jnp.float32)))
    full, m_full = train_step(jax.tree_util.tree_map(jnp.copy, state), _batch(), jax.random.PRNGKey(0))
    halved, m_half = train_step(half, _batch(), jax.random.PRNGKey(0))
    d_full = jax.tree_util.tree_map(lambda a, b: np.asarray(a) - b, full.params, before)
    d_half = jax.tree_util.tree_map(lambda a, b: np.asarray(a) - b, halved.params, before)
    jax.tree_util.tree_map(lambda f, h: np.testing.assert_allclose(h, 0.5 * f, rtol=1e-3, atol=1e-7),
                           d_full, d_half)
    assert float(m_half["lr"]) == pytest.approx(0.5 * float(m_full["lr"]))


def test_bad_plateau_factor_is_a_config_error():
    with pytest.raises(config.ConfigError, match="train.plateau_factor"):
        train.plateau_step(config.TrainConfig(lr_schedule="plateau", plateau_factor=1.5))


def test_non_finite_steps_in_a_row_are_counted_and_never_applied():
    # Given many non-finite batches in a row (past any give-up of optax.apply_if_finite)
    state, train_step, _ = _setup(VRNN)
    before = jax.tree_util.tree_map(np.asarray, state.params)
    bad = _batch()
    bad["x"] = bad["x"].at[1, 2, 3].set(jnp.inf)
    for i in range(12):
        state, m = train_step(state, bad, jax.random.PRNGKey(i))
        assert not bool(m["finite"]) and int(state.nonfinite) == i + 1
    # Then no update reached the parameters or the optimizer moments
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), state.params, before)
    assert int(state.opt_state.inner_state[0].count) == 0
    state, m = train_step(state, _batch(), jax.random.PRNGKey(99))
    assert bool(m["finite"]) and int(state.nonfinite) == 0 and int(state.opt_state.total_notfinite) == 12
