"""`dvae-jax bench`: train-step speed of dvae_jax against the PyTorch eager reference.

Method (also in benchmarks/RESULTS.md):
  * One train step = forward, loss, backward and an Adam update (lr 2e-3). dvae_jax runs the
    project's own jitted ``train.make_steps`` step (noise drawn inside, KL schedule, finiteness
    guard); the reference runs dvae_jax/reference_torch.py with ``torch.optim.Adam`` and draws
    its noise with ``torch.randn`` inside the timed step, as the review's code does.
  * For each (model, setting) both are warmed up, then timed alternately A, B, A, B, ... in the
    same process, so that load from other processes hits both alike; each time is wall-clock
    around one step, synchronised (``block_until_ready``). Medians and the ratio of medians.
  * Compile time: ``jit(...).lower(...).compile()`` of the train step (tracing included).
  * FLOPs per step: counted from the layer sizes (matrix products only: 2 multiply-adds per
    weight per frame forward, twice that backward, less the input gradients of layers fed by the
    data alone), and XLA's own ``cost_analysis()`` of the compiled step for comparison.
  * Ceiling: median time of a float32 2048x2048 @ 2048x2048 product in jax and in torch,
    measured in the same run; the fraction of ceiling is counted FLOPs / median step time /
    the larger of the two.
  * Memory: peak resident set size above the pre-step level during one step, sampled every
    0.5 ms from /proc/self/statm by a thread (both libraries); XLA's ``memory_analysis()``
    temporaries for dvae_jax as well.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from dvae_jax import config as config_lib
from dvae_jax import errors

SETTINGS = {
    # The review's shapes: STFT power, Itakura-Saito likelihood.
    "review": {"batch": 128, "frames": 50, "x_dim": 513, "likelihood": "itakura_saito"},
    # A Mel setting: 80 log-Mel bands, Gaussian likelihood with a learned variance.
    "mel": {"batch": 64, "frames": 100, "x_dim": 80, "likelihood": "gaussian"},
}
TINY = {"batch": 4, "frames": 6}
PRESETS = {"vrnn": "vrnn_review_speech", "srnn": "srnn_review_speech"}


def _load_reference():
    """dvae_jax.reference_torch, or None without PyTorch (the optional extra [torch])."""
    from dvae_jax import errors

    try:
        from dvae_jax import reference_torch
    except errors.DvaeError:
        return None
    return reference_torch


def model_config(model: str, setting: str, tiny: bool = False) -> config_lib.ModelConfig:
    s = SETTINGS[setting]
    cfg = config_lib.model_preset(PRESETS[model])
    cfg = dataclasses.replace(cfg, x_dim=s["x_dim"], likelihood=s["likelihood"])
    if tiny:
        cfg = dataclasses.replace(
            cfg, x_dim=min(cfg.x_dim, 12), z_dim=3, dense_x=(8,), dense_z=(4, 6), dense_x_h=(8,),
            dense_hx_g=(8,), dense_gz_z=(6, 4), dense_hz_z=(6, 4),
            dense_hz_x=(8,) if cfg.dense_hz_x else (), dim_rnn=8, dim_rnn_g=8,
        )
    return cfg


def shapes(setting: str, tiny: bool, batch: int | None, frames: int | None) -> tuple[int, int]:
    s = dict(SETTINGS[setting], **(TINY if tiny else {}))
    return batch or s["batch"], frames or s["frames"]


# ---------------------------------------------------------------------------------------------
# FLOPs counted from the layer sizes


def counted_flops(cfg: config_lib.ModelConfig, batch: int, frames: int) -> float:
    """Matrix-product FLOPs of one train step (forward + backward), from the layer sizes."""
    from dvae_jax import interop, models  # noqa: F401  (models: shapes via interop's template)

    shapes_ = interop._template_shapes(cfg)
    weights = sum(int(np.prod(s)) for path, s in shapes_.items() if path[-1] in ("kernel", "wi", "wh"))
    # Layers fed by the data alone need no gradient with respect to their input.
    x = cfg.x_dim
    if cfg.model == "vrnn":
        data_only = x * (cfg.dense_x[0] if cfg.dense_x else 0)
    else:
        data_only = x * (cfg.dense_x_h[0] if cfg.dense_x_h else 4 * cfg.dim_rnn)
        data_only += x * (cfg.dense_hx_g[0] if cfg.dense_hx_g else 4 * cfg.dim_rnn_g)
    n = batch * frames
    return 2.0 * n * (3 * weights - data_only)


# ---------------------------------------------------------------------------------------------
# Measurement helpers


class PeakRSS:
    """Peak resident set size above the level at entry, sampled from /proc/self/statm."""

    def __init__(self, interval: float = 0.0005):
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.peak = 0

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self.page
        except OSError:
            return 0

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self):
        self.base = self._rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def _median_time(fn: Callable[[], Any], reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_ceiling(n: int = 2048, reps: int = 10) -> dict:
    """Median float32 n x n @ n x n time in jax and torch -> GFLOP/s."""
    import jax
    import jax.numpy as jnp

    out = {"n": n}
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    mm = jax.jit(jnp.matmul)
    mm(a, b).block_until_ready()
    out["jax_gflops"] = 2 * n**3 / _median_time(lambda: mm(a, b).block_until_ready(), reps) / 1e9
    torch = _torch()
    if torch is not None:
        ta, tb = torch.randn(n, n), torch.randn(n, n)
        torch.mm(ta, tb)
        out["torch_gflops"] = 2 * n**3 / _median_time(lambda: torch.mm(ta, tb), reps) / 1e9
    out["gflops"] = max(v for k, v in out.items() if k.endswith("_gflops"))
    return out


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


# ---------------------------------------------------------------------------------------------
# The two implementations


class JaxStep:
    def __init__(self, cfg: config_lib.ModelConfig, batch: int, frames: int, seed: int = 0):
        import jax
        import jax.numpy as jnp

        from dvae_jax import models, train

        self.jax = jax
        train_cfg = config_lib.TrainConfig(batch_size=batch, kl_schedule="none")
        tx = train.make_optimizer(train_cfg, steps_per_epoch=100, total_steps=10_000)
        variables = models.init(cfg, jax.random.PRNGKey(seed))
        self.state = train.init_state(variables, tx)
        step, _ = train.make_steps(cfg, train_cfg, tx, steps_per_epoch=100, total_steps=10_000)
        self.batch = {"x": jnp.asarray(_data(cfg, batch, frames, seed))}
        self.key = jax.random.PRNGKey(seed + 1)
        t0 = time.perf_counter()
        self.compiled = step.lower(self.state, self.batch, self.key).compile()
        self.compile_s = time.perf_counter() - t0
        self.xla_flops = _cost(self.compiled, "flops")
        self.xla_temp_mb = _temp_mb(self.compiled)
        self.n = 0

    def __call__(self) -> None:
        key = self.jax.random.fold_in(self.key, self.n)
        self.n += 1
        self.state, metrics = self.compiled(self.state, self.batch, key)
        self.jax.block_until_ready((self.state, metrics))
        self.loss = metrics["loss"]


def _cost(compiled, key: str) -> float | None:
    try:
        ca = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    value = (ca or {}).get(key)
    return float(value) if value is not None else None


def _temp_mb(compiled) -> float | None:
    try:
        ma = compiled.memory_analysis()
        return float(ma.temp_size_in_bytes) / 2**20
    except Exception:  # noqa: BLE001
        return None


class TorchStep:
    def __init__(self, ref, cfg: config_lib.ModelConfig, batch: int, frames: int, seed: int = 0):
        torch = _torch()
        self.torch = torch
        torch.manual_seed(seed)
        self.module = ref.build(cfg)
        self.opt = torch.optim.Adam(self.module.parameters(), lr=2e-3)
        self.x = torch.from_numpy(np.swapaxes(_data(cfg, batch, frames, seed), 0, 1).copy())
        self.eps_shape = (frames, batch, cfg.z_dim)
        t0 = time.perf_counter()
        self()
        self.first_s = time.perf_counter() - t0

    def __call__(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        out = self.module(self.x, self.torch.randn(self.eps_shape))
        loss, _, _ = self.module.loss(self.x, out)
        loss.backward()
        self.opt.step()
        self.loss = loss


def _data(cfg: config_lib.ModelConfig, batch: int, frames: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if cfg.likelihood == "itakura_saito":  # power-spectrum-like: positive, heavy-tailed
        return (rng.gamma(0.5, 1.0, size=(batch, frames, cfg.x_dim)) + 1e-6).astype(np.float32)
    return rng.normal(size=(batch, frames, cfg.x_dim)).astype(np.float32)


# ---------------------------------------------------------------------------------------------


def bench_one(model: str, setting: str, steps: int, warmup: int, ref, tiny: bool = False,
              batch: int | None = None, frames: int | None = None) -> dict:
    cfg = model_config(model, setting, tiny)
    b, t = shapes(setting, tiny, batch, frames)
    row: dict[str, Any] = {"model": model, "setting": setting, "batch": b, "frames": t, "x_dim": cfg.x_dim,
                               "likelihood": cfg.likelihood}
    row["flops_counted"] = counted_flops(cfg, b, t)
    jstep = JaxStep(cfg, b, t)
    row["jax_compile_s"] = jstep.compile_s
    row["jax_xla_flops"] = jstep.xla_flops
    row["jax_xla_temp_mb"] = jstep.xla_temp_mb
    tstep = TorchStep(ref, cfg, b, t) if ref is not None and _torch() is not None else None
    if tstep is not None:
        row["torch_first_step_s"] = tstep.first_s
    for _ in range(warmup):
        jstep()
        if tstep is not None:
            tstep()
    with PeakRSS() as mem:
        jstep()
    row["jax_peak_rss_mb"] = mem.delta_mb
    if tstep is not None:
        with PeakRSS() as mem:
            tstep()
        row["torch_peak_rss_mb"] = mem.delta_mb
    jt, tt = [], []
    for _ in range(steps):  # A, B, A, B, ...
        t0 = time.perf_counter()
        jstep()
        jt.append(time.perf_counter() - t0)
        if tstep is not None:
            t0 = time.perf_counter()
            tstep()
            tt.append(time.perf_counter() - t0)
    frames_per_step = b * t
    for name, times in (("jax", jt), ("torch", tt)):
        if not times:
            continue
        med = statistics.median(times)
        row[f"{name}_ms"] = 1e3 * med
        row[f"{name}_ms_iqr"] = 1e3 * float(np.subtract(*np.percentile(times, [75, 25])))
        row[f"{name}_frames_per_s"] = frames_per_step / med
        row[f"{name}_gflops"] = row["flops_counted"] / med / 1e9
    row["jax_loss"] = float(jstep.loss)
    if tt:
        row["speedup"] = row["torch_ms"] / row["jax_ms"]
        row["torch_loss"] = tstep.loss.item()
    return row


def run(args: argparse.Namespace) -> int:
    import jax

    models_ = [m.strip() for m in args.models.split(",") if m.strip()]
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    for m in models_:
        if m not in PRESETS:
            raise errors.ConfigError(f"--models: unknown model '{m}' (choose from {', '.join(PRESETS)})")
    for s in settings:
        if s not in SETTINGS:
            raise errors.ConfigError(f"--settings: unknown setting '{s}' (choose from {', '.join(SETTINGS)})")
    ref = None if args.no_torch else _load_reference()
    if ref is None or _torch() is None:
        print("PyTorch reference unavailable (pip install 'dvae-jax[torch]'): timing dvae_jax only")
        ref = None
    torch = _torch()
    if torch is not None and args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    env = {
        "jax": jax.__version__, "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
        "torch": getattr(torch, "__version__", None), "torch_threads": torch.get_num_threads() if torch else None,
        "cpus": os.cpu_count(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "steps": args.steps, "warmup": args.warmup,
    }
    ceiling = matmul_ceiling(256 if args.tiny else 2048, reps=3 if args.tiny else 10)
    print(f"matmul ceiling: jax {ceiling['jax_gflops']:.1f} GFLOP/s, "
          f"torch {ceiling.get('torch_gflops', float('nan')):.1f} GFLOP/s", flush=True)
    rows = []
    for s in settings:
        for m in models_:
            row = bench_one(m, s, args.steps, args.warmup, ref, tiny=args.tiny,
                            batch=args.batch, frames=args.frames)
            for name in ("jax", "torch"):
                if f"{name}_gflops" in row:
                    row[f"{name}_fraction_of_ceiling"] = row[f"{name}_gflops"] / ceiling["gflops"]
            rows.append(row)
            _print_row(row)
    ceiling_after = matmul_ceiling(256 if args.tiny else 2048, reps=3 if args.tiny else 10)
    result = {"env": env, "ceiling": ceiling, "ceiling_after": ceiling_after, "rows": rows}
    print(_table(rows, ceiling))
    if args.json:
        pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return 0


def _print_row(row: dict) -> None:
    torch_part = f", torch {row['torch_ms']:.1f} ms, x{row['speedup']:.2f}" if "torch_ms" in row else ""
    print(f"[{row['setting']}/{row['model']}] jax {row['jax_ms']:.1f} ms{torch_part}", flush=True)
    print("  " + json.dumps(row), flush=True)


def _table(rows: list[dict], ceiling: dict) -> str:
    head = ("| setting | model | B x T x F | dvae_jax ms | torch ms | speedup | jax GFLOP/s (of ceiling) "
            "| torch GFLOP/s (of ceiling) | jax frames/s | compile s | peak RSS MB jax / torch |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        t_ms = f"{r['torch_ms']:.1f}" if "torch_ms" in r else "-"
        sp = f"{r['speedup']:.2f}x" if "speedup" in r else "-"
        t_gf = (f"{r['torch_gflops']:.1f} ({100 * r['torch_fraction_of_ceiling']:.0f}%)"
                if "torch_gflops" in r else "-")
        t_mem = f"{r['torch_peak_rss_mb']:.0f}" if "torch_peak_rss_mb" in r else "-"
        lines.append(
            f"| {r['setting']} | {r['model']} | {r['batch']}x{r['frames']}x{r['x_dim']} | {r['jax_ms']:.1f} "
            f"| {t_ms} | {sp} | {r['jax_gflops']:.1f} ({100 * r['jax_fraction_of_ceiling']:.0f}%) | {t_gf} "
            f"| {r['jax_frames_per_s']:.0f} | {r['jax_compile_s']:.2f} | {r['jax_peak_rss_mb']:.0f} / {t_mem} |"
        )
    lines.append(
        f"\nmatmul ceiling (float32 {ceiling['n']}^3): jax {ceiling.get('jax_gflops', 0):.1f} GFLOP/s, "
        f"torch {ceiling.get('torch_gflops', float('nan')):.1f} GFLOP/s"
    )
    return "\n".join(lines)


def register(subparsers) -> None:
    """The options live in commands/bench.py; kept here for callers that register from this module."""
    from dvae_jax.commands import bench as command

    command.register(subparsers)
