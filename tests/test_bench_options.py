"""`dvae-jax bench` options beside the defaults: --precision (bf16 works on CPU and reports its loss
error), --device gpu (a one-line error where no GPU is visible), the larger settings, and the bf16
rewrite of a traced step (every matrix product, inside loops too)."""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dvae_jax import bench, bench_precision, cli, errors


def _args(*extra):
    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", "--tiny", "--steps", "2", "--warmup", "1", *extra])


def test_bf16_on_cpu_reports_a_small_nonzero_loss_error(tmp_path):
    # Given bench at tiny shapes with bf16 matrix products on CPU
    out = tmp_path / "bench.json"
    args = _args(
        "--models", "vrnn,srnn", "--settings", "review", "--precision", "bf16", "--json", str(out)
    )
    # When it runs
    assert args.func(args) == 0
    # Then every row carries the measured relative error of dvae_jax's loss against float32:
    # bf16 operands (8 bits of mantissa) move it, but by far less than a percent
    report = json.loads(out.read_text())
    assert report["ceiling"]["precision"] == "bf16" and report["ceiling"]["jax_gflops"] > 0
    for row in report["rows"]:
        assert row["precision"] == "bf16" and row["device"] == "cpu"
        assert 0 < row["jax_loss_rel_err"] < 1e-2, row["jax_loss_rel_err"]
        assert np.isfinite(row["jax_loss"]) and row["jax_ms"] > 0
        if "torch_ms" in row:  # torch installed: its autocast step is timed and measured too
            assert 0 <= row["torch_loss_rel_err"] < 5e-2


def test_float32_rows_have_no_loss_error_field(tmp_path):
    out = tmp_path / "bench.json"
    args = _args("--models", "vrnn", "--settings", "review", "--no-torch", "--json", str(out))
    assert args.func(args) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["precision"] == "float32" and "jax_loss_rel_err" not in row


@pytest.mark.parametrize(
    "argv,expect",
    [
        (["--device", "gpu"], "--device gpu: no GPU visible to jax"),
        (["--precision", "tf32"], "--precision tf32: TF32 is a format of NVIDIA GPUs"),
        (["--settings", "review,huge"], "--settings: unknown setting 'huge'"),
    ],
)
def test_unusable_device_or_precision_is_one_line(capsys, argv, expect):
    # Given a machine where jax sees no GPU (the tests run with JAX_PLATFORMS=cpu)
    assert not [d for d in jax.devices() if d.platform == "gpu"]
    # When bench is asked for what it cannot do
    with pytest.raises(errors.ConfigError, match=expect):
        bench.run(_args(*argv))
    status = cli.main(["--no-cache", "bench", "--tiny", *argv])
    # Then the CLI says so in one line, exit status 2, before compiling anything
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and expect in err


def test_larger_settings_have_their_documented_shapes():
    assert bench.shapes("review_large", False, None, None) == (512, 50)
    assert bench.shapes("review_long", False, None, None) == (128, 400)
    for name in ("review_large", "review_long"):
        assert bench.model_config("vrnn", name).x_dim == 513
        assert name in bench.SETTINGS_HELP
    assert bench.shapes("review_long", True, None, None) == (4, 6)


def test_bf16_dots_rewrites_products_inside_scans_and_keeps_float32_outside():
    # Given a function whose matrix products sit inside a scan and a nested jit
    w = jax.random.normal(jax.random.PRNGKey(0), (16, 16)) / 4
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 3, 16))

    @jax.jit
    def inner(h, w):
        return jnp.tanh(h @ w)

    def fn(w, x):
        def body(h, xt):
            h = inner(h, w) + xt
            return h, h

        return jax.lax.scan(body, jnp.zeros((3, 16)), x)[1].sum()

    # When every product is given bf16 operands (both result conventions)
    for f32_result in (True, False):
        rewritten = bench_precision.bf16_dots(fn, f32_result=f32_result)
        text = str(jax.make_jaxpr(rewritten)(w, x))
        if f32_result and jax.default_backend() == "cpu":
            # XLA:CPU cannot run bf16 x bf16 -> f32: check the jaxpr only
            assert "preferred_element_type=float32" in text
            continue
        got, want = float(jax.jit(rewritten)(w, x)), float(jax.jit(fn)(w, x))
        # Then the products inside the scan and the nested jit read bf16, the result stays float32
        assert "bf16" in text
        assert jax.eval_shape(rewritten, w, x).dtype == jnp.float32
        assert 0 < abs(got - want) / abs(want) < 3e-2
    grads = jax.jit(bench_precision.bf16_dots(jax.grad(fn), f32_result=False))(w, x)
    assert grads.dtype == jnp.float32 and np.allclose(
        grads, jax.grad(fn)(w, x), rtol=0.1, atol=0.05
    )


def test_timing_order_rotates_so_each_step_follows_each_other_equally_often():
    # Given three implementations that record when they run
    calls = []
    steps = {name: (lambda name=name: calls.append(name)) for name in ("jax", "torch", "review")}
    # When they are timed alternately for 6 rounds
    wall, cpu = bench._time_alternately(steps, 6)
    # Then each ran 6 times, and over every 3 rounds each took each place in the round once
    # (the step right after dvae_jax's pays for XLA's spinning worker threads)
    assert all(len(wall[n]) == len(cpu[n]) == 6 for n in steps)
    rounds = [calls[i : i + 3] for i in range(0, 18, 3)]
    assert rounds[0] == ["jax", "torch", "review"] and rounds[1] == ["torch", "review", "jax"]
    for name in steps:
        assert sorted(r.index(name) for r in rounds[:3]) == [0, 1, 2]
        assert sorted(r.index(name) for r in rounds[3:]) == [0, 1, 2]
