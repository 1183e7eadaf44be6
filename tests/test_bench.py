"""Smoke test of `dvae-jax bench` at tiny shapes: it runs, alternates both implementations and
writes a JSON report with every field the results table needs (no speed assertions)."""

import argparse
import json

from dvae_jax import bench


def test_bench_tiny_writes_a_complete_report(tmp_path, capsys):
    # Given the bench sub-command registered on a parser
    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "bench.json"
    args = parser.parse_args(
        ["bench", "--tiny", "--models", "vrnn,srnn", "--settings", "review", "--steps", "2",
         "--warmup", "1", "--json", str(out)]
    )
    # When it runs
    assert args.func(args) == 0
    # Then the JSON holds one row per model with times, FLOPs and the ceiling
    report = json.loads(out.read_text())
    assert report["ceiling"]["gflops"] > 0
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == {"vrnn", "srnn"}
    for row in rows.values():
        assert row["jax_ms"] > 0 and row["flops_counted"] > 0 and row["jax_compile_s"] > 0
        assert row["jax_frames_per_s"] > 0
        if "torch_ms" in row:  # torch installed
            assert row["speedup"] > 0 and row["torch_ms"] > 0
    assert "| review | vrnn |" in capsys.readouterr().out


def test_counted_flops_of_the_review_vrnn():
    # 480,097 parameters of which 478,912 are kernel weights; phi_x's 513x256 sees data only
    cfg = bench.model_config("vrnn", "review")
    weights = 513 * 256 + 16 * 32 + 32 * 64 + 384 * 32 + 128 * 32 + 192 * 513 + 320 * 512 + 128 * 512
    assert bench.counted_flops(cfg, 128, 50) == 2.0 * 6400 * (3 * weights - 513 * 256)
