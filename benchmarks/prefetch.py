"""Train-step time with and without background prefetching of batches (issue 3).

Method: the real jitted train step on the real mini-corpus batches (log-Mel crops, or the
review's STFT chunks), one epoch-long stream each, alternating "plain" and "prefetch" passes
so both see the same machine load; the time per step is wall time over the whole pass divided by
its steps (that is what prefetching changes: the step waiting on data), median over passes.

Usage: python benchmarks/prefetch.py [--features mel|stft] [--passes 4] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from dvae_jax import config as config_lib
from dvae_jax import fit, models, train
from dvae_jax.data import batches, prepare


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", default="mel", choices=("mel", "stft"))
    ap.add_argument("--passes", type=int, default=4)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--cache-dir", default="cache")
    args = ap.parse_args()
    name = "vrnn_mel_gaussian" if args.features == "mel" else "vrnn_stft_gaussian"
    cfg = config_lib.apply_overrides(config_lib.load_named(name), [f"data.cache_dir={args.cache_dir}"])
    ds = prepare.prepare_dataset(cfg.data, cfg.features, progress=False)
    cfg = fit.resolve_model(cfg, ds.n_bins)
    tc = cfg.train
    tx = train.make_optimizer(tc, 100, 1000)
    state = train.init_state(models.init(cfg.model, jax.random.PRNGKey(0)), tx)
    step, _ = train.make_steps(cfg.model, tc, tx, 100, 1000)

    def stream(epoch):
        it = batches.train_batches(ds, "train", tc.batch_size, cfg.data.seq_len, 0, epoch, mode=cfg.data.batching)
        return (b for i, b in zip(range(args.steps), it))

    for b in stream(0):  # compile and warm up
        state, m = step(state, b, jax.random.PRNGKey(0))
    jax.block_until_ready(m)
    res = {"plain": [], "prefetch": []}
    for p in range(args.passes):
        for kind in ("plain", "prefetch"):
            src = stream(p + 1) if kind == "plain" else batches.Prefetcher(stream(p + 1), size=2)
            t0 = time.perf_counter()
            n = 0
            for b in src:
                state, m = step(state, b, jax.random.PRNGKey(n))
                n += 1
            jax.block_until_ready(m)
            res[kind].append((time.perf_counter() - t0) / n * 1000)
    out = {k: float(np.median(v)) for k, v in res.items()}
    out.update(features=args.features, batch=tc.batch_size, seq_len=cfg.data.seq_len, passes=args.passes,
               steps_per_pass=args.steps, ratio_plain_over_prefetch=out["plain"] / out["prefetch"])
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
