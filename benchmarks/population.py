"""Population throughput: K members in one vmapped step vs the same K runs one after another.

Method (benchmarks/POPULATION.md): the shipped config (default vrnn_mel_gaussian: 80 log-Mel
bands, batch 32 x 50 frames) with model.x_dim = 80; K members differing in seed, peak LR and
beta. Batches are pre-drawn random arrays (the same for both sides), so the data pipeline is out
of the measure. "population": dvae_jax.population's jitted vmapped step on (K, b, t, f) batches.
"sequential": train.make_steps's lone step (the fit loop's step), called for member 1's N steps,
then member 2's N steps, ..., i.e. K runs one after another. Compilation is excluded from the
step timing (each program is warmed up first) and reported apart. For each K the two sides
alternate (population, sequential, population, ...) for --repeats rounds so that both see the
same machine load; throughput = K * N / wall time of a round, median over rounds.

Usage: nice -n 15 python benchmarks/population.py [--ks 1,4,8,16] [--steps 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from dvae_jax import config as config_lib
from dvae_jax import models, population, train

SPE = 100  # steps per epoch assumed by the schedules (does not change the step's cost)


def members(base: config_lib.Config, k: int) -> list[config_lib.Config]:
    out = []
    for i in range(k):
        tc = dataclasses.replace(base.train, seed=i, lr=base.train.lr * (0.5 + i / max(k, 1)),
                                 beta=1.0 + 0.1 * i)
        out.append(dataclasses.replace(base, train=tc))
    return out


def _block(tree) -> None:
    jax.block_until_ready(jax.tree_util.tree_leaves(tree))


def time_population(cfgs, batches, steps: int) -> tuple[float, float]:
    """(compile + first step seconds, seconds for ``steps`` steps) of one population."""
    pop = population.Population(cfgs, SPE)
    state = pop.init()
    active = jnp.ones((len(cfgs),), bool)
    t0 = time.perf_counter()
    state, m = pop.train_step(state, batches[0], active)
    _block(m)
    compile_s = time.perf_counter() - t0

    def run():
        nonlocal state
        t = time.perf_counter()
        for i in range(steps):
            state, m = pop.train_step(state, batches[i % len(batches)], active)
        _block(m)
        return time.perf_counter() - t

    return compile_s, run


def time_sequential(cfgs, batches, steps: int):
    """K lone runs (train.make_steps, as fit builds it), one after another."""
    runs = []
    compile_s = 0.0
    for k, cfg in enumerate(cfgs):
        tx = train.make_optimizer(cfg.train, SPE, SPE * cfg.train.epochs)
        state = train.init_state(models.init(cfg.model, jax.random.PRNGKey(k)), tx)
        step, _ = train.make_steps(cfg.model, cfg.train, tx, SPE, SPE * cfg.train.epochs)
        t0 = time.perf_counter()
        state, m = step(state, _member(batches[0], k), jax.random.PRNGKey(0))
        _block(m)
        compile_s += time.perf_counter() - t0
        runs.append([step, state])

    # each member's batches and step keys exist before timing, as the population's do: only the
    # steps are timed (slicing or making keys on the fly would add dispatches to this side alone)
    mine = [[_member(b, k) for b in batches] for k in range(len(cfgs))]
    keys = [jax.random.PRNGKey(i) for i in range(steps)]
    _block((mine, keys))

    def run():
        t = time.perf_counter()
        for k, r in enumerate(runs):
            for i in range(steps):
                r[1], m = r[0](r[1], mine[k][i % len(batches)], keys[i])
            _block(m)
        return time.perf_counter() - t

    return compile_s, run


def _member(batch, k):
    return {key: v[k] for key, v in batch.items()}


def make_batches(cfg: config_lib.Config, k: int, n: int = 3) -> list[dict]:
    rng = np.random.default_rng(0)
    shape = (k, cfg.train.batch_size, cfg.data.seq_len, cfg.model.x_dim)
    return [{"x": jnp.asarray(rng.standard_normal(shape, np.float32)),
             "mask": jnp.ones(shape[:3], jnp.float32)} for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="vrnn_mel_gaussian")
    ap.add_argument("--ks", default="1,4,8,16")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    base = config_lib.apply_overrides(config_lib.load_named(args.config), args.set)
    n_bins = base.features.n_bins
    base = dataclasses.replace(base, model=dataclasses.replace(base.model, x_dim=n_bins))
    print(f"# {args.config}: {base.model.model} x {n_bins}, batch {base.train.batch_size} x {base.data.seq_len}; "
          f"{args.steps} steps per member per round, {args.repeats} rounds; {jax.devices()[0].platform}, "
          f"{os.cpu_count()} CPUs, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
    rows = []
    for k in (int(s) for s in args.ks.split(",")):
        cfgs = members(base, k)
        batches = make_batches(base, k)
        c_pop, pop_run = time_population(cfgs, batches, args.steps)
        c_seq, seq_run = time_sequential(cfgs, batches, args.steps)
        pop_t, seq_t = [], []
        for _ in range(args.repeats):
            pop_t.append(pop_run())
            seq_t.append(seq_run())
        pop_tp = k * args.steps / statistics.median(pop_t)
        seq_tp = k * args.steps / statistics.median(seq_t)
        rows.append({"k": k, "population": pop_tp, "sequential": seq_tp, "speedup": pop_tp / seq_tp,
                         "compile_population_s": c_pop, "compile_sequential_s": c_seq,
                         "population_rounds_s": pop_t, "sequential_rounds_s": seq_t})
        print(f"K={k:>2}: population {pop_tp:8.2f} member-steps/s | sequential {seq_tp:8.2f} member-steps/s | "
              f"x{pop_tp / seq_tp:.2f} | compile {c_pop:.1f} s vs {c_seq:.1f} s ({k} lone step)", flush=True)
    print("\n| K | population (member-steps/s) | K sequential runs (member-steps/s) | speed-up | "
          "compile: population / K lone steps (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['k']} | {r['population']:.2f} | {r['sequential']:.2f} | {r['speedup']:.2f}x | "
              f"{r['compile_population_s']:.1f} / {r['compile_sequential_s']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "config": args.config, "steps": args.steps, "repeats": args.repeats,
                           "machine": platform.processor() or platform.machine()}, f, indent=2)


if __name__ == "__main__":
    main()
