"""Griffin-Lim speed and quality: librosa.griffinlim vs dvae_jax.audio.griffin_lim (jitted JAX).

Method in benchmarks/GRIFFIN_LIM.md. Usage:
    python benchmarks/griffin_lim.py [--seconds 5] [--n-iter 32] [--repeats 7]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import librosa
import numpy as np

from dvae_jax import config as config_lib
from dvae_jax.audio import griffin_lim as gl_lib
from dvae_jax.audio import spectral, synth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--n-iter", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seeds", type=int, default=5, help="random initial phases for quality")
    args = parser.parse_args()

    cfg = config_lib.FeatureConfig(kind="stft")  # the review's analysis: sine 1024, hop 256, 16 kHz
    wave = synth.speech_like(args.seconds, cfg.sample_rate, seed=0)
    magnitude = np.abs(spectral.stft(wave, cfg))
    length = wave.size
    win = spectral.window(cfg)

    def run_librosa(seed: int) -> np.ndarray:
        return librosa.griffinlim(
            magnitude, n_iter=args.n_iter, hop_length=cfg.hop_length, win_length=cfg.win_length,
            n_fft=cfg.n_fft, window=win, center=True, pad_mode="reflect", length=length,
            momentum=0.99, init="random", random_state=seed,
        )

    def run_jax(seed: int) -> np.ndarray:
        out = gl_lib.griffin_lim_jax(magnitude, cfg, args.n_iter, 0.99, key=seed, length=length)
        return np.asarray(out.block_until_ready())

    t0 = time.perf_counter()
    run_jax(0)
    compile_s = time.perf_counter() - t0
    run_librosa(0)  # warm librosa's caches too

    times = {"librosa": [], "jax": []}
    for r in range(args.repeats):  # alternate so drifts in machine load hit both alike
        for name, fn in (("librosa", run_librosa), ("jax", run_jax)) if r % 2 == 0 else (
            ("jax", run_jax), ("librosa", run_librosa)
        ):
            t0 = time.perf_counter()
            fn(r)
            times[name].append(time.perf_counter() - t0)

    sc = {"librosa": [], "jax": []}
    for seed in range(args.seeds):
        sc["librosa"].append(gl_lib.spectral_convergence(magnitude, run_librosa(seed), cfg))
        sc["jax"].append(gl_lib.spectral_convergence(magnitude, run_jax(seed), cfg))

    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "signal": f"dvae_jax.audio.synth.speech_like({args.seconds} s, 16 kHz, seed 0)",
        "analysis": "sine window 1024, hop 256, n_fft 1024, centred reflect",
        "n_iter": args.n_iter, "momentum": 0.99, "repeats": args.repeats,
        "median_s": med, "speedup_librosa_over_jax": med["librosa"] / med["jax"],
        "jax_first_call_s_including_compile": compile_s,
        "real_time_factor": {k: v / args.seconds for k, v in med.items()},
        "spectral_convergence_per_seed": sc,
        "spectral_convergence_mean": {k: float(np.mean(v)) for k, v in sc.items()},
        "spectral_convergence_median": {k: float(np.median(v)) for k, v in sc.items()},
        "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "jax": jax.__version__, "librosa": librosa.__version__,
    }, indent=2))


if __name__ == "__main__":
    main()
