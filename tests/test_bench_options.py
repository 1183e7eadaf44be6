"""`dvae-jax bench` options beside the defaults: --precision (bf16 works on CPU and reports its loss
error), --device gpu (a one-line error where no GPU is visible), the larger settings, and the bf16
rewrite of a traced step (every matrix product, inside loops too)."""

import argparse
import json

import jax
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


def test_bf16_runs_the_model_s_bfloat16_products_and_reports_the_loss_error():
    # Given the tiny review VRNN at --precision bf16
    cfg = bench.model_config("vrnn", "review", tiny=True)
    assert bench_precision.model_config(cfg, "bf16").matmul_dtype == "bfloat16"
    assert bench_precision.model_config(cfg, "float32").matmul_dtype == "float32"
    # When its step is built and run
    step = bench.JaxStep(cfg, 4, 6, precision="bf16")
    step()
    # Then the compiled step multiplies bfloat16 inputs, and the loss is near float32's, not equal
    assert "bf16" in step.compiled.as_text()
    assert 0 < step.loss_rel_err < 1e-3
    assert np.isfinite(float(step.loss))


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
