"""Time to the first train step with JAX's persistent compilation cache: cold, warm, off.

Method (benchmarks/COMPILE_CACHE.md): each measurement is a fresh Python process (what a user
runs), so nothing is shared in memory. The process enables the cache (dvae_jax.compile_cache)
in a given directory, builds the model and optimizer of a named config, and runs one jitted
train step and one eval step on a synthetic batch of the config's shapes (no corpus needed).
Reported: seconds from the process start to the first train step done (imports included) and
the time of that first step call alone (trace + compile or cache load + run). "cold" is a first
process with an empty cache directory, "warm" the following processes on the same directory,
"off" a process with DVAE_JAX_NO_COMPILE_CACHE=1. Rounds alternate the three so that they see
the same machine load; medians over rounds.

Usage: python benchmarks/compile_cache.py [--config demo] [--rounds 3] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, sys, time
t0 = float(sys.argv[1])
from dvae_jax import compile_cache
used = compile_cache.enable(sys.argv[2])
import jax, jax.numpy as jnp
from dvae_jax import config as config_lib, models, train
cfg = config_lib.apply_overrides(config_lib.load_named(sys.argv[3]), json.loads(sys.argv[4]))
mc, tc = cfg.model, cfg.train
x_dim = cfg.features.n_bins
import dataclasses
mc = dataclasses.replace(mc, x_dim=x_dim)
tx = train.make_optimizer(tc, 100, 1000)
state = train.init_state(models.init(mc, jax.random.PRNGKey(0)), tx)
train_step, eval_step = train.make_steps(mc, tc, tx, 100, 1000)
batch = {"x": jnp.ones((tc.batch_size, cfg.data.seq_len, x_dim), jnp.float32),
         "mask": jnp.ones((tc.batch_size, cfg.data.seq_len), jnp.float32)}
t1 = time.time()
state, m = train_step(state, batch, jax.random.PRNGKey(0))
jax.block_until_ready(m)
t2 = time.time()
jax.block_until_ready(eval_step(state.params, batch, jax.random.PRNGKey(1)))
t3 = time.time()
print(json.dumps({"to_first_step_s": t2 - t0, "first_step_s": t2 - t1, "first_eval_s": t3 - t2,
                  "cache": str(used) if used else None}))
"""


def _child(cache: Path, config: str, sets: list[str], off: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    if off:
        env["DVAE_JAX_NO_COMPILE_CACHE"] = "1"
    r = subprocess.run([sys.executable, "-c", CHILD, repr(time.time()), str(cache), config, json.dumps(sets)],
                       capture_output=True, text=True, env=env, check=False)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="demo")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warm", type=int, default=2, help="warm processes per round")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    rows: dict[str, list[dict]] = {"cold": [], "warm": [], "off": []}
    for _ in range(args.rounds):
        cache = Path(tempfile.mkdtemp(prefix="dvae_cc_bench_"))
        try:
            rows["off"].append(_child(cache / "unused", args.config, args.set, off=True))
            rows["cold"].append(_child(cache, args.config, args.set))
            for _ in range(args.warm):
                rows["warm"].append(_child(cache, args.config, args.set))
            size = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    out = {kind: {k: float(np.median([r[k] for r in rs])) for k in ("to_first_step_s", "first_step_s",
                                                                    "first_eval_s")}
           for kind, rs in rows.items()}
    out.update(config=args.config, sets=args.set, rounds=args.rounds, cache_bytes=size)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
