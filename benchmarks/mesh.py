"""Data-parallel throughput: the fit loop's train step on meshes of 1, 2, 4, ... devices.

Method (benchmarks/MESH.md):
- **The step:** train.make_steps's jitted step (forward, ELBO, backward, Adam), with the explicit
  shardings of a `--mesh data=N` run (train.shardings_for), on the review's VRNN or SRNN preset
  and shapes (bench.SETTINGS).
- **Strong scaling:** the global batch is fixed (default 128, the review's), split over N
  devices. **Weak scaling:** the batch is N x `--per-device` rows.
- **Data:** batches are pre-drawn random arrays already placed on the mesh, so input is out of
  the measure.
- **Timing:** compilation is excluded: each program is compiled and run once first, and the
  compile time is reported apart. The meshes alternate (1, 2, 4, 1, 2, 4, ...) for `--repeats`
  rounds so that all of them see the same machine load. A round times `--steps` steps and
  blocks on the last; the figure is the median over rounds.
- **Figures:** frames/s, the speed-up over 1 device measured in the same run, and the scaling
  efficiency (speed-up / N).
- **Ceiling:** the run also times one device's float32 matmul ceiling (bench.matmul_ceiling).
  The counted FLOPs of a step (bench.counted_flops) divided by N x that ceiling is the share of
  the N devices' matmul ceiling reached.

Usage: python benchmarks/mesh.py [--model vrnn] [--setting review] [--devices 1,2,4]
       [--per-device 32] [--steps 10] [--repeats 5] [--out benchmarks/results/mesh.json]
On CPU, XLA_FLAGS=--xla_force_host_platform_device_count=4 splits ONE processor into 4 devices
that share its cores: that checks the script, it measures no scaling.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import jax
import numpy as np

from dvae_jax import bench, distributed, models, train
from dvae_jax import config as config_lib


class MeshStep:
    """The train step compiled for one mesh size and global batch, its state and batch placed."""

    def __init__(self, model_cfg, n: int, batch: int, frames: int):
        self.n, self.batch, self.frames = n, batch, frames
        placement = distributed.Placement.from_text(f"data={n}")
        tc = config_lib.TrainConfig(batch_size=batch, kl_schedule="none")
        tx = train.make_optimizer(tc, steps_per_epoch=100, total_steps=10_000)
        state = train.init_state(models.init(model_cfg, jax.random.PRNGKey(0)), tx)
        sh = train.shardings_for(placement, state, batch)
        step, _ = train.make_steps(model_cfg, tc, tx, 100, 10_000, sh)
        self.state = jax.device_put(state, sh.state)
        x = np.random.default_rng(0).gamma(1.0, 1.0, (batch, frames, model_cfg.x_dim)).astype(np.float32)
        self.data = placement.put_batch({"x": x})
        self.key = jax.random.PRNGKey(1)
        t0 = time.perf_counter()
        self.compiled = step.lower(self.state, self.data, self.key).compile()
        self.run(1)
        self.compile_s = time.perf_counter() - t0

    def run(self, steps: int) -> float:
        """Seconds for ``steps`` steps (blocked on the last)."""
        t0 = time.perf_counter()
        for i in range(steps):
            self.state, m = self.compiled(self.state, self.data, jax.random.fold_in(self.key, i))
        jax.block_until_ready((self.state, m))
        return time.perf_counter() - t0


def measure(model_cfg, sizes: list[int], batches: dict[int, int], frames: int, steps: int, repeats: int) -> list[dict]:
    """Alternating rounds over the mesh sizes; one row per size."""
    runs = {n: MeshStep(model_cfg, n, batches[n], frames) for n in sizes}
    times: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(repeats):
        for n in sizes:
            times[n].append(runs[n].run(steps) / steps)
    rows = []
    for n in sizes:
        step_s = statistics.median(times[n])
        rows.append({"devices": n, "batch": batches[n], "per_device": batches[n] // n, "step_ms": 1e3 * step_s,
                     "frames_per_s": batches[n] * frames / step_s, "compile_s": runs[n].compile_s,
                     "flops": bench.counted_flops(model_cfg, batches[n], frames)})
    base = rows[0]["frames_per_s"] / rows[0]["devices"]
    for r in rows:
        r["speedup"] = r["frames_per_s"] / rows[0]["frames_per_s"]
        r["efficiency"] = r["frames_per_s"] / (base * r["devices"])
    return rows


def table(title: str, rows: list[dict], ceiling_gflops: float) -> str:
    header = ("| devices | batch (per device) | step ms (median) | frames/s | speed-up vs 1 | efficiency | "
              "% of N x 1-device matmul ceiling | compile s |")
    lines = [f"**{title}**", "", header, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = 100 * r["flops"] / (r["step_ms"] / 1e3) / (r["devices"] * ceiling_gflops * 1e9)
        lines.append(f"| {r['devices']} | {r['batch']} ({r['per_device']}) | {r['step_ms']:.1f} | "
                     f"{r['frames_per_s']:,.0f} | {r['speedup']:.2f}x | {100 * r['efficiency']:.0f} % | "
                     f"{share:.1f} % | {r['compile_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="vrnn", choices=sorted(bench.PRESETS))
    p.add_argument("--setting", default="review", choices=sorted(bench.SETTINGS))
    p.add_argument("--devices", help="mesh sizes, e.g. 1,2,4 (default: powers of 2 up to every device)")
    p.add_argument("--per-device", type=int, default=32, help="rows per device in the weak-scaling table")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", help="write the rows and environment as JSON here")
    a = p.parse_args()
    n_dev = jax.device_count()
    sizes = ([int(v) for v in a.devices.split(",")] if a.devices
             else [2**i for i in range(n_dev.bit_length()) if 2**i <= n_dev])
    model_cfg = bench.model_config(a.model, a.setting)
    batch, frames = bench.shapes(a.setting, False, None, None)
    platform_name = jax.devices()[0].platform
    ceiling = bench.matmul_ceiling(device="gpu" if platform_name == "gpu" else "cpu", with_torch=False)
    strong = measure(model_cfg, sizes, {n: batch for n in sizes}, frames, a.steps, a.repeats)
    weak = measure(model_cfg, sizes, {n: a.per_device * n for n in sizes}, frames, a.steps, a.repeats)
    env = {"devices": [str(d) for d in jax.devices()], "platform": platform_name, "jax": jax.__version__,
           "python": platform.python_version(), "machine": platform.platform(),
           "matmul_ceiling_gflops": ceiling["gflops"], "model": a.model, "setting": a.setting,
           "frames": frames, "steps": a.steps, "repeats": a.repeats}
    print(f"{a.model.upper()} {a.setting} ({batch} x {frames} x {model_cfg.x_dim}) on {n_dev} {platform_name} "
          f"device(s); one device's float32 matmul ceiling {ceiling['gflops']:,.0f} GFLOP/s\n")
    print(table(f"Strong scaling: global batch {batch}", strong, ceiling["gflops"]) + "\n")
    print(table(f"Weak scaling: {a.per_device} rows per device", weak, ceiling["gflops"]))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"environment": env, "strong": strong, "weak": weak}, indent=2))


if __name__ == "__main__":
    main()
