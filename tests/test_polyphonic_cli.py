"""Piano-rolls through the main commands: `dvae-jax prepare / train / evaluate` on a slice of JSB,
the streams protocol (carry kept across batches, reset each epoch, exact resume), train.kl_start,
train.adam_eps, model.init=paper, and one-line errors."""

import argparse
import dataclasses
import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dvae_jax import checkpoint, cli, fit, models, schedules, train
from dvae_jax import config as config_lib
from dvae_jax.data import batches as batches_lib
from dvae_jax.data import polyphonic, prepare

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.dim_rnn=8", "model.dim_rnn_g=8", "model.z_dim=4", "model.dense_x_h=16", "model.dense_hx_g=16",
        "model.dense_gz_z=16", "model.dense_hz_z=16", "model.dense_hz_x=16", "train.batch_size=4",
        "train.epochs=2", "train.log_every_steps=1"]


@pytest.fixture(scope="module")
def jsb_slice(tmp_path_factory):
    """A folder holding a JSB file cut to 16 training chunks (4 streams of 4 at batch size 4),
    4 validation chunks and 3 test pieces of at most 40 frames (one of 30)."""
    root = tmp_path_factory.mktemp("rolls")
    with np.load(polyphonic.EMBEDDED / polyphonic.FILE.format(name="jsb")) as d:
        a = {k: d[k] for k in d.files}
    for k in ("x_train", "u_train"):
        a[k] = a[k][:16]
    for k in ("x_valid", "u_valid"):
        a[k] = a[k][:4]
    for k in ("x_test", "u_test", "mask_test"):
        a[k] = a[k][:3, :40]
    a["mask_test"][1, 30:], a["x_test"][1, 30:] = 0, 0
    np.savez(root / polyphonic.FILE.format(name="jsb"), **a)
    return root


def tiny_cfg(root, *extra) -> config_lib.Config:
    return config_lib.apply_overrides(config_lib.load_named("srnn_polyphonic_paper"),
                                      [f"data.root={root}", *TINY, *extra])


def _one_line_error(capsys, argv, match):
    rc = cli.main(["--no-cache", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and match in err, err


def test_prepare_prints_the_sets_summary(capsys, jsb_slice):
    assert cli.main(["prepare", "--corpus", "polyphonic", "--root", str(jsb_slice), "--set-name", "jsb"]) == 0
    out = capsys.readouterr().out
    assert "jsb: 16 training and 4 validation chunks of 100 frames, 3 test pieces (110 frames" in out
    assert "jsb_raw_batchsize16_seqlen100.npz (sha256 " in out and "cache:" not in out


def test_train_then_evaluate_prints_both_bounds_with_k(capsys, jsb_slice, tmp_path):
    # Given the paper's config made tiny, trained by the main command on the JSB slice
    run = tmp_path / "run"
    argv = ["--no-cache", "train", "--config", "srnn_polyphonic_paper", "--workdir", str(run), "--quiet"]
    for s in [f"data.root={jsb_slice}", *TINY]:
        argv += ["--set", s]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "epochs 2  steps 8  stopped: epochs" in out and f"dvae-jax evaluate --workdir {run}" in out
    epochs = [r for r in fit.read_metrics(run) if r["kind"] == "epoch"]
    assert len(epochs) == 2 and all(np.isfinite(r["val_loss"]) for r in epochs)
    steps = [r for r in fit.read_metrics(run) if r["kind"] == "step"]
    assert steps[0]["kl_weight"] == pytest.approx(0.2)  # the config's train.kl_start
    # the run is self-contained: dataset.json fingerprints the set's file
    stored = json.loads((run / "dataset.json").read_text())
    assert stored["fingerprint"]["corpus"] == "polyphonic" and stored["fingerprint"]["set_name"] == "jsb"
    assert stored["fingerprint"]["hash"] and stored["normalizer"] == {"applies": False}
    # When it is evaluated with K = 1 and 3
    assert cli.main(["--no-cache", "evaluate", "--workdir", str(run), "--k", "1,3", "--quiet"]) == 0
    out = capsys.readouterr().out
    # Then both bounds are printed per step and per sequence, K stated, the paper's figure beside
    for text in ("| bound | per step | per sequence |", "| ELBO (K=3 samples) |", "| IWAE K=1 |",
                 "| IWAE K=3 |", "-4.74", "3 sequences, 110 frames"):
        assert text in out, out
    res = json.loads((run / "evaluation" / "results.json").read_text())
    assert res["kind"] == "bounds" and sorted(res["bounds"]) == ["1", "3"]
    b3 = res["bounds"]["3"]
    values = [v for r in res["bounds"].values() for k, v in r.items() if k.endswith(("step", "sequence"))]
    assert all(np.isfinite(values)) and all(v < 0 for v in values)
    assert b3["iwae_per_sequence"] >= b3["elbo_mc_per_sequence"] - 1e-6  # Jensen on the same samples
    assert b3["sequences"] == 3 and b3["frames"] == 110
    # and a second call with another K keeps the first ones
    assert cli.main(["--no-cache", "evaluate", "--workdir", str(run), "--k", "2", "--quiet"]) == 0
    capsys.readouterr()
    assert sorted(json.loads((run / "evaluation" / "results.json").read_text())["bounds"]) == ["1", "2", "3"]
    # generate says it does not do piano-rolls, in one line
    _one_line_error(capsys, ["generate", "--workdir", str(run)], "piano-roll run")
    # experiments/polyphonic.py report reads the run directory
    exp = _experiment_script()
    table = exp.report([run], out=tmp_path / "polyphonic.json")
    assert "| jsb | srnn | 2 |" in table and "IWAE K=3" in table
    row = json.loads((tmp_path / "polyphonic.json").read_text())["results"][0]
    assert row["valid_elbo_per_step"] == pytest.approx(-epochs[-1]["val_loss"])


def _experiment_script():
    spec = importlib.util.spec_from_file_location("poly_exp", ROOT / "experiments" / "polyphonic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_experiment_script_maps_to_the_main_commands():
    exp = _experiment_script()
    ap = argparse.Namespace(config="srnn_polyphonic_paper", out="runs/x", set_name="muse", root="/d", epochs=3,
                            init="", set=["model.z_dim=8"], resume=True)
    assert exp.train_argv(ap) == ["train", "--config", "srnn_polyphonic_paper", "--workdir", "runs/x", "--set",
                                  "data.set_name=muse", "--set", "data.root=/d", "--set", "train.epochs=3",
                                  "--set", "model.z_dim=8", "--resume", "--quiet"]
    ev = argparse.Namespace(out="runs/x", k="1,10", chunk=256, which="latest", pieces=5, root="")
    assert exp.evaluate_argv(ev) == ["evaluate", "--workdir", "runs/x", "--k", "1,10", "--chunk", "256",
                                     "--checkpoint", "latest", "--n", "5"]


def test_streams_batches_are_the_files_order(jsb_slice):
    cfg = tiny_cfg(jsb_slice)
    ds = prepare.prepare_dataset(cfg.data, cfg.features)
    got = [b["x"] for b in batches_lib.train_batches(ds, "train", 4, 100, seed=1, epoch=3, mode="streams")]
    want = list(polyphonic.train_batches(ds.rolls.x_train, 4))
    assert len(got) == 4 == batches_lib.steps_per_epoch(ds, "train", 4, 100, "streams")
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    resumed = list(batches_lib.train_batches(ds, "train", 4, 100, 0, 0, start_batch=2, mode="streams"))
    np.testing.assert_array_equal(resumed[0]["x"], want[2])


def _manual_run(cfg, ds, reset: bool):
    """The SRNN code's loop written out: train_step over the streams batches, the carry passed
    on, and (``reset``) set back to the cold state at each epoch's start."""
    cfg = fit.resolve_model(cfg, ds.n_bins)
    tc, spe = cfg.train, 4
    init_key, train_key, _ = jax.random.split(jax.random.PRNGKey(tc.seed), 3)
    tx = train.make_optimizer(tc, spe, spe * tc.epochs)
    variables = models.init(cfg.model, init_key)
    model = models.build(cfg.model)
    carry0 = jax.tree_util.tree_map(np.asarray, model.initial_carry(model.params(variables), 4))
    cold = lambda: jax.tree_util.tree_map(jnp.array, carry0)  # fresh buffers: train_step donates
    state = train.init_state(variables, tx, cold())  # variables are not used again
    step, _ = train.make_steps(cfg.model, tc, tx, spe, spe * tc.epochs)
    for epoch in range(tc.epochs):
        if reset:
            state = state.replace(carry=cold())
        for b in batches_lib.train_batches(ds, "train", 4, 100, tc.seed, epoch, mode="streams"):
            state, _ = step(state, b, jax.random.fold_in(train_key, int(state.step)))
    return state


def _latest(workdir):
    cfg = checkpoint.load_config(workdir)
    ck = checkpoint.RunCheckpoints(workdir)
    try:
        return ck.restore("latest", models.init(cfg.model, jax.random.PRNGKey(0)))
    finally:
        ck.close()


def _same(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True))


@pytest.fixture(scope="module")
def streams_run(jsb_slice, tmp_path_factory):
    cfg = tiny_cfg(jsb_slice)
    ds = prepare.prepare_dataset(cfg.data, cfg.features)
    workdir = tmp_path_factory.mktemp("streams") / "a"
    fit.fit(cfg, workdir, progress=False, dataset=ds)
    return cfg, ds, workdir


def test_the_carry_is_passed_between_batches_and_reset_each_epoch(streams_run):
    cfg, ds, workdir = streams_run
    # Given the fit loop's parameters after 2 epochs of streams
    got = _latest(workdir).variables
    # Then they are bitwise those of the loop that carries the state and resets it each epoch
    assert _same(got, _manual_run(cfg, ds, reset=True).params)
    # and not those of a loop that never resets it
    assert not _same(got, _manual_run(cfg, ds, reset=False).params)


def test_a_step_continues_the_previous_batch(streams_run):
    cfg, ds, _ = streams_run
    cfg = fit.resolve_model(cfg, ds.n_bins)
    tx = train.make_optimizer(cfg.train, 4, 8)
    variables = models.init(cfg.model, jax.random.PRNGKey(0))
    model = models.build(cfg.model)
    carry0 = jax.tree_util.tree_map(np.asarray, model.initial_carry(model.params(variables), 4))
    cold = lambda: jax.tree_util.tree_map(jnp.array, carry0)  # fresh buffers: train_step donates
    step, _ = train.make_steps(cfg.model, cfg.train, tx, 4, 8)
    b0, b1 = list(batches_lib.train_batches(ds, "train", 4, 100, 0, 0, mode="streams"))[:2]
    key0, key1 = jax.random.PRNGKey(5), jax.random.PRNGKey(6)
    # Given one step on the first batch from the cold state
    copy = lambda tree: jax.tree_util.tree_map(jnp.array, tree)
    s1, _ = step(train.init_state(copy(variables), tx, cold()), b0, key0)
    # Then the state holds the batch's final carry (the pass with the parameters before the step)
    _, want = models.forward(cfg.model, variables, jnp.asarray(b0["x"]), key=key0, deterministic=False,
                             carry=cold())
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), s1.carry, want)
    assert float(jnp.abs(s1.carry.state.h[0]).sum()) > 0
    # and the next batch's loss differs from the same batch started cold
    _, m_carried = step(copy(s1), b1, key1)
    _, m_cold = step(copy(s1).replace(carry=cold()), b1, key1)
    assert float(m_carried["loss"]) != float(m_cold["loss"])
    # and a run without streams keeps no carry
    s_none, _ = step(train.init_state(copy(variables), tx), b0, key0)
    assert s_none.carry is None


def test_stop_mid_epoch_then_resume_is_exact_under_streams(streams_run, tmp_path):
    cfg, ds, uninterrupted = streams_run
    want = _latest(uninterrupted)
    # Given the same run stopped (checkpoint saved, process state dropped) in the middle of epoch 2
    b = tmp_path / "b"
    res = fit.fit(cfg, b, progress=False, dataset=ds, stop_after_steps=6)
    assert res.stopped == "stop_after_steps"
    mid = checkpoint.RunCheckpoints(b)
    try:
        meta = mid.read_meta("latest")
    finally:
        mid.close()
    assert meta["epoch"] == 1 and meta["batch"] == 2  # mid-epoch: the carry matters
    # When it is resumed from its checkpoint
    res = fit.fit(cfg, b, resume=True, progress=False, dataset=ds)
    # Then parameters, optimizer step and logged validation losses are bitwise the same
    got = _latest(b)
    assert res.stopped == "epochs" and got.step == want.step == 8
    assert _same(got.variables, want.variables)
    val = lambda w: [r["val_loss"] for r in fit.read_metrics(w) if r["kind"] == "epoch"]
    assert val(b) == val(uninterrupted)


def test_kl_start_raises_the_ramp_and_default_zero_changes_nothing():
    tc = config_lib.TrainConfig(kl_schedule="linear", kl_warmup_epochs=0, kl_anneal_epochs=2, kl_start=0.2)
    w = schedules.kl_weight(tc, steps_per_epoch=10)
    assert [float(w(s)) for s in (0, 10, 20, 100)] == pytest.approx([0.2, 0.6, 1.0, 1.0])
    assert float(schedules.kl_weight(config_lib.TrainConfig(kl_schedule="none", kl_start=0.3), 5)(0)) == 1.0
    for name in config_lib.KL_SCHEDULES:  # kl_start=0 is each ramp itself, bit for bit
        c = config_lib.TrainConfig(kl_schedule=name, kl_warmup_epochs=1, kl_anneal_epochs=4)
        assert schedules.kl_weight(c, 3).__code__ is schedules._kl_ramp(c, 3).__code__
        steps = jnp.arange(40)
        np.testing.assert_array_equal(jax.vmap(schedules.kl_weight(c, 3))(steps),
                                      jax.vmap(schedules._kl_ramp(c, 3))(steps))


def test_adam_eps_reaches_the_optimizer():
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    grads = {"w": jnp.array([1e-5, -2e-4, 0.5])}

    def update(tx):
        u, _ = tx.update(grads, tx.init(params), params)
        return np.asarray(u["w"])

    for opt in ("adam", "adamw"):
        default = train.make_optimizer(config_lib.TrainConfig(optimizer=opt), 1, 1)
        paper = train.make_optimizer(config_lib.TrainConfig(optimizer=opt, adam_eps=1e-4), 1, 1)
        assert not np.array_equal(update(default), update(paper))
    np.testing.assert_array_equal(update(train.make_optimizer(config_lib.TrainConfig(adam_eps=1e-4), 1, 1)),
                                  update(optax.apply_if_finite(optax.adam(2e-3, eps=1e-4), 2**30)))
    np.testing.assert_array_equal(update(train.make_optimizer(config_lib.TrainConfig(), 1, 1)),
                                  update(optax.apply_if_finite(optax.adam(2e-3), 2**30)))


def test_paper_init_zero_biases_orthogonal_gates_default_unchanged():
    cfg = config_lib.ModelConfig(model="srnn", x_dim=6, z_dim=3, dim_rnn=5, dim_rnn_g=4, dense_x_h=(7,),
                                 dense_hx_g=(7,), dense_gz_z=(6,), dense_hz_z=(6,), likelihood="bernoulli")
    key = jax.random.PRNGKey(3)
    # The default is the model's own (PyTorch-style) initialisation, unchanged
    assert _same(models.init(cfg, key), models.build(cfg).init(key))
    paper = models.init(dataclasses.replace(cfg, init="paper"), key)["params"]
    leaves = jax.tree_util.tree_leaves_with_path(paper)
    names = {jax.tree_util.keystr(p): np.asarray(a) for p, a in leaves}
    assert all(not a.any() for n, a in names.items() if n.endswith(("['bias']", "['bi']", "['bh']")))
    wh = np.asarray(paper["rnn_h"]["layer0"]["wh"])  # (H, 4H): each gate's block is orthogonal
    for g in range(4):
        block = wh[:, g * 5:(g + 1) * 5]
        np.testing.assert_allclose(block.T @ block, np.eye(5), atol=1e-5)
    kernel = np.asarray(paper["mlp_x_h"]["linear0"]["kernel"])
    assert kernel.std() > 0 and not np.array_equal(kernel, models.init(cfg, key)["params"]["mlp_x_h"]["linear0"]["kernel"])
    # A GRU (the SRNN code's cell) has three gates r, z, n: one orthogonal block each
    gru = models.init(dataclasses.replace(cfg, init="paper", rnn_cell="gru"), key)["params"]
    for name in ("wi", "wh"):
        w = np.asarray(gru["rnn_g"]["layer0"][name])  # (in, 3 x 4)
        assert w.shape[1] == 12
        for g in range(3):
            block = w[:, g * 4:(g + 1) * 4]
            np.testing.assert_allclose(block.T @ block, np.eye(4), atol=1e-5)


def test_bad_values_are_one_line_errors(capsys, tmp_path):
    w = str(tmp_path / "w")
    base = ["train", "--config", "srnn_polyphonic_paper", "--workdir", w, "--set"]
    _one_line_error(capsys, [*base, "data.corpus=mini"], "data.batching=streams: must be crops or chunks")
    _one_line_error(capsys, [*base, "train.kl_start=2"], "train.kl_start=2: must be a number in [0, 1]")
    _one_line_error(capsys, [*base, "model.init=foo"], "model.init=foo: must be one of torch, paper")
    _one_line_error(capsys, [*base, "train.adam_eps=0"], "train.adam_eps=0: must be a finite number > 0")
    _one_line_error(capsys, [*base, "train.scheduled_sampling=0.5"], "train.scheduled_sampling=0.5: must be 0")
    _one_line_error(capsys, ["prepare", "--corpus", "polyphonic", "--set-name", "bad"], "data.set_name=bad")
    _one_line_error(capsys, ["prepare", "--corpus", "polyphonic", "--set-name", "muse"], "--root DIR")
    _one_line_error(capsys, ["train", "--config", "srnn_polyphonic_paper", "--workdir", w, "--set",
                             "data.set_name=muse"], "only jsb ships with dvae_jax")
    for k in ("0", "-1", "1.5", "1,x"):
        with pytest.raises(SystemExit) as e:
            cli.main(["evaluate", "--workdir", w, "--k", k])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and "integer >= 1" in err, err
