"""`dvae-jax bench`: train-step speed of dvae_jax against the PyTorch eager reference and,
optionally, a user's own checkout of the review's code.

Method (also in benchmarks/RESULTS.md):
  * One train step = forward, loss, backward and an Adam update (lr 2e-3). dvae_jax runs the
    project's own jitted ``train.make_steps`` step (noise drawn inside, KL schedule, finiteness
    guard); the reference runs dvae_jax/reference_torch.py (the review's operations) with
    ``torch.optim.Adam``, its noise drawn per frame with ``torch.randn_like`` as the review does;
    ``--review-repo PATH`` adds the review's own builders and loss imported from PATH
    (dvae_jax/review_code.py), once with autograd's anomaly detection off and once on (the
    review's train script turns it on).
  * For each (model, setting) all are warmed up, then timed in turn in the same process, the order
    rotating each round (A B C, B C A, ...), so that load from other processes hits all alike and
    each follows the others equally often; each time is wall-clock
    around one step, synchronised (``block_until_ready``, ``torch.cuda.synchronize``), and the
    process CPU time is recorded too. Medians and ratios of medians.
  * ``--device gpu``: JAX on its first GPU, torch on ``cuda``. ``--precision``: float32 (XLA's
    HIGHEST, torch without TF32), tf32 (GPU only) or bf16 (JAX: bfloat16 operands for every
    matrix product: the model's model.matmul_dtype=bfloat16, dvae_jax/bench_precision.py; torch:
    autocast), with the relative error of
    the loss against a float32 evaluation from the same weights and noise.
  * Compile time: ``jit(...).lower(...).compile()`` of the train step (tracing included).
  * FLOPs per step: counted from the layer sizes (matrix products only: 2 multiply-adds per
    weight per frame forward, twice that backward, less the input gradients of layers fed by the
    data alone), and XLA's own ``cost_analysis()`` of the compiled step for comparison.
  * Ceiling: median time of an n x n @ n x n product in the run's precision on the run's device
    (n = 2048 on CPU, 8192 on GPU) in jax and in torch, measured in the same run; the fraction
    of ceiling is counted FLOPs / median step time / the larger of the two.
  * Memory: peak resident set size above the pre-step level during one step, sampled every
    0.5 ms from /proc/self/statm by a thread (both libraries; host memory, so on GPU it says
    little); XLA's ``memory_analysis()`` temporaries for dvae_jax as well.
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

from dvae_jax import allocator, bench_precision, errors
from dvae_jax import config as config_lib

SETTINGS = {
    # The review's shapes: STFT power, Itakura-Saito likelihood.
    "review": {"batch": 128, "frames": 50, "x_dim": 513, "likelihood": "itakura_saito"},
    # A Mel setting: 80 log-Mel bands, Gaussian likelihood with a learned variance.
    "mel": {"batch": 64, "frames": 100, "x_dim": 80, "likelihood": "gaussian"},
    # The review's layers with 4x the batch (a GPU's occupancy) or 8x the sequence length.
    "review_large": {"batch": 512, "frames": 50, "x_dim": 513, "likelihood": "itakura_saito"},
    "review_long": {"batch": 128, "frames": 400, "x_dim": 513, "likelihood": "itakura_saito"},
}
SETTINGS_HELP = (
    "review (128 x 50 x 513, Itakura-Saito), mel (64 x 100 x 80, Gaussian), "
    "review_large (512 x 50 x 513), review_long (128 x 400 x 513)"
)
TINY = {"batch": 4, "frames": 6}
PRESETS = {"vrnn": "vrnn_review_speech", "srnn": "srnn_review_speech"}
DEVICES = ("cpu", "gpu")


def _load_reference():
    """dvae_jax.reference_torch, or None without PyTorch (the optional extra [torch])."""
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
            cfg,
            x_dim=min(cfg.x_dim, 12),
            z_dim=3,
            dense_x=(8,),
            dense_z=(4, 6),
            dense_x_h=(8,),
            dense_hx_g=(8,),
            dense_gz_z=(6, 4),
            dense_hz_z=(6, 4),
            dense_hz_x=(8,) if cfg.dense_hz_x else (),
            dim_rnn=8,
            dim_rnn_g=8,
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
    weights = sum(
        int(np.prod(s)) for path, s in shapes_.items() if path[-1] in ("kernel", "wi", "wh")
    )
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


def matmul_ceiling(
    n: int = 2048,
    reps: int = 10,
    device: str = "cpu",
    precision: str = "float32",
    with_torch: bool = True,
) -> dict:
    """Median n x n @ n x n time in jax and torch, in ``precision`` on ``device`` -> GFLOP/s.

    float32 / tf32: float32 operands with that precision; bf16: bfloat16 operands."""
    import jax
    import jax.numpy as jnp

    out = {"n": n, "device": device, "precision": precision}
    dtype = jnp.bfloat16 if precision == "bf16" else jnp.float32
    with jax.default_device(_jax_device(device)), bench_precision.jax_precision(precision):
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype)
        b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32).astype(dtype)
        mm = jax.jit(jnp.matmul)
        mm(a, b).block_until_ready()
        out["jax_gflops"] = (
            2 * n**3 / _median_time(lambda: mm(a, b).block_until_ready(), reps) / 1e9
        )
    torch = _torch() if with_torch else None
    if torch is not None:
        dev = _torch_device(device)
        tdtype = torch.bfloat16 if precision == "bf16" else torch.float32
        ta, tb = (
            torch.randn(n, n, device=dev, dtype=tdtype),
            torch.randn(n, n, device=dev, dtype=tdtype),
        )

        def mm_torch():
            torch.mm(ta, tb)
            _sync(torch, device)

        with bench_precision.torch_precision("tf32" if precision == "tf32" else "float32", device):
            mm_torch()
            out["torch_gflops"] = 2 * n**3 / _median_time(mm_torch, reps) / 1e9
    out["gflops"] = max(v for k, v in out.items() if k.endswith("_gflops"))
    return out


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _sync(torch, device: str) -> None:
    if device == "gpu":
        torch.cuda.synchronize()


def _jax_device(device: str):
    """The jax device for --device; one-line ConfigError when jax sees no GPU."""
    import jax

    if device == "cpu":
        return jax.devices("cpu")[0]
    try:
        return jax.devices("gpu")[0]
    except RuntimeError as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise errors.ConfigError(
            f"--device gpu: no GPU visible to jax ({reason}); install jax[cuda12] "
            "(benchmarks/gpu.sh does) or use --device cpu"
        ) from None


def _torch_device(device: str) -> str:
    return "cuda" if device == "gpu" else "cpu"


def _check_torch_gpu(torch) -> None:
    if not torch.cuda.is_available():
        raise errors.ConfigError(
            f"--device gpu: no GPU visible to torch {torch.__version__} (a CPU-only build, or no "
            "driver); install a CUDA build of torch (benchmarks/gpu.sh does) or pass --no-torch"
        )


# ---------------------------------------------------------------------------------------------
# The implementations


class JaxStep:
    """dvae_jax's jitted train step, compiled ahead of time on ``device`` in ``precision``."""

    def __init__(
        self,
        cfg: config_lib.ModelConfig,
        batch: int,
        frames: int,
        seed: int = 0,
        device: str = "cpu",
        precision: str = "float32",
    ):
        import jax
        import jax.numpy as jnp

        from dvae_jax import models, train

        self.jax = jax
        train_cfg = config_lib.TrainConfig(batch_size=batch, kl_schedule="none")
        tx = train.make_optimizer(train_cfg, steps_per_epoch=100, total_steps=10_000)
        run_cfg = bench_precision.model_config(cfg, precision)
        step, _ = train.make_steps(run_cfg, train_cfg, tx, steps_per_epoch=100, total_steps=10_000)
        with jax.default_device(_jax_device(device)), bench_precision.jax_precision(precision):
            variables = models.init(cfg, jax.random.PRNGKey(seed))
            self.state = train.init_state(variables, tx)
            self.batch = {"x": jnp.asarray(_data(cfg, batch, frames, seed))}
            self.key = jax.random.PRNGKey(seed + 1)
            self.loss_rel_err = (
                None
                if precision == "float32"
                else _jax_loss_error(cfg, variables, self.batch["x"], self.key, precision, device)
            )
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


def _jax_loss_error(cfg, variables, x, key, precision: str, device: str) -> float:
    """|loss(precision) - loss(float32)| / |loss(float32)|, same weights and noise."""
    import jax

    from dvae_jax import losses, models

    eps = jax.random.normal(key, (*x.shape[:2], models.noise_dim(cfg)), x.dtype)

    def loss(v, c):
        out, _ = models.forward(c, v, x, eps)
        return losses.elbo(c, out, x)[0]

    with bench_precision.jax_precision("float32"):
        ref = float(jax.jit(loss, static_argnums=1)(variables, bench_precision.model_config(cfg, "float32")))
    with bench_precision.jax_precision(precision):
        got = float(jax.jit(loss, static_argnums=1)(variables, bench_precision.model_config(cfg, precision)))
    return abs(got - ref) / max(abs(ref), 1e-30)


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
    """A torch train step: ``loss_fn(module, x)``, backward, Adam (lr 2e-3), on ``device``.

    The loss is computed in ``precision`` (TF32 switches or bf16 autocast); ``anomaly`` runs the
    forward and backward under ``torch.autograd.set_detect_anomaly(True)`` as the review's
    train script does."""

    def __init__(
        self,
        module,
        loss_fn: Callable,
        x,
        device: str = "cpu",
        precision: str = "float32",
        anomaly: bool = False,
    ):
        torch = _torch()
        self.torch, self.device, self.precision, self.anomaly = torch, device, precision, anomaly
        self.module = module.to(_torch_device(device))
        self.loss_fn = loss_fn
        self.x = x.to(_torch_device(device))
        self.opt = torch.optim.Adam(self.module.parameters(), lr=2e-3)
        self.loss_rel_err = None if precision == "float32" else self._loss_error()
        t0 = time.perf_counter()
        self()
        self.first_s = time.perf_counter() - t0

    def _loss_error(self, seed: int = 1234) -> float:
        """|loss(precision) - loss(float32)| / |loss(float32)|: same weights, same noise (seed)."""
        values = []
        for p in ("float32", self.precision):
            self.torch.manual_seed(seed)
            with self.torch.no_grad(), bench_precision.torch_precision(p, self.device):
                values.append(float(self.loss_fn(self.module, self.x)))
        return abs(values[1] - values[0]) / max(abs(values[0]), 1e-30)

    def __call__(self) -> None:
        torch = self.torch
        with torch.autograd.set_detect_anomaly(self.anomaly):
            self.opt.zero_grad(set_to_none=True)
            with bench_precision.torch_precision(self.precision, self.device):
                loss = self.loss_fn(self.module, self.x)
            loss.backward()
        self.opt.step()
        _sync(torch, self.device)
        self.loss = loss


def _reference_loss(module, x):
    out = module(x)  # the noise is drawn per frame inside, as the review does
    return module.loss(x, out)[0]


def _data(cfg: config_lib.ModelConfig, batch: int, frames: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if cfg.likelihood == "itakura_saito":  # power-spectrum-like: positive, heavy-tailed
        return (rng.gamma(0.5, 1.0, size=(batch, frames, cfg.x_dim)) + 1e-6).astype(np.float32)
    return rng.normal(size=(batch, frames, cfg.x_dim)).astype(np.float32)


def _torch_x(cfg, batch: int, frames: int, seed: int = 0):
    """The same data as dvae_jax's, in the review's (T, B, F) layout."""
    return _torch().from_numpy(np.swapaxes(_data(cfg, batch, frames, seed), 0, 1).copy())


def _torch_steps(cfg, b: int, t: int, opts: argparse.Namespace, ref, review, row: dict) -> dict:
    """The torch steps to time: the reference, and the review's code (anomaly off / on)."""
    torch = _torch()
    steps = {}
    kw = {"device": opts.device, "precision": opts.precision}
    if ref is not None:
        torch.manual_seed(0)
        steps["torch"] = TorchStep(ref.build(cfg), _reference_loss, _torch_x(cfg, b, t), **kw)
    if review is not None:
        from dvae_jax import review_code

        why = review_code.unsupported(cfg)
        if why:
            row["review_skipped"] = why
            return steps

        def loss(module, x):
            return review_code.train_loss(review, module, x)

        dev = _torch_device(opts.device)
        for name, anomaly in (("review", False), ("review_anomaly", True)):
            torch.manual_seed(0)
            try:  # the user's checkout: any failure in its builder or its first step is one line
                module = review_code.build(review, cfg, device=dev)
                steps[name] = TorchStep(module, loss, _torch_x(cfg, b, t), anomaly=anomaly, **kw)
            except Exception as e:  # noqa: BLE001
                raise review_code.failure(review.root, f"its {cfg.model} step failed ({type(e).__name__}: {e})") from None
    return steps


# ---------------------------------------------------------------------------------------------


def _time_alternately(steps: dict, reps: int) -> tuple[dict, dict]:
    """Wall and process-CPU seconds per step of each implementation, run in turn reps times.

    The order rotates each round (A B C, B C A, C A B, ...) so that each implementation follows
    each other equally often: the step right after dvae_jax's pays for XLA's worker threads,
    which spin for a while after their work (process CPU time counts them too)."""
    wall = {k: [] for k in steps}
    cpu = {k: [] for k in steps}
    names = list(steps)
    for i in range(reps):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            step = steps[name]
            c0, t0 = time.process_time(), time.perf_counter()
            step()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return wall, cpu


def bench_one(model: str, setting: str, opts: argparse.Namespace, ref=None, review=None) -> dict:
    """One (model, setting) row: every implementation warmed up, then timed alternately."""
    cfg = dataclasses.replace(model_config(model, setting, opts.tiny), lstm_impl=opts.lstm_impl)
    b, t = shapes(setting, opts.tiny, opts.batch, opts.frames)
    row: dict[str, Any] = {
        "model": model,
        "setting": setting,
        "batch": b,
        "frames": t,
        "x_dim": cfg.x_dim,
        "likelihood": cfg.likelihood,
        "device": opts.device,
        "precision": opts.precision,
    }
    row["flops_counted"] = counted_flops(cfg, b, t)
    jstep = JaxStep(cfg, b, t, device=opts.device, precision=opts.precision)
    row.update(
        jax_compile_s=jstep.compile_s,
        jax_xla_flops=jstep.xla_flops,
        jax_xla_temp_mb=jstep.xla_temp_mb,
    )
    steps = {"jax": jstep, **_torch_steps(cfg, b, t, opts, ref, review, row)}
    for name, step in steps.items():
        if name != "jax":
            row[f"{name}_first_step_s"] = step.first_s
        if step.loss_rel_err is not None:
            row[f"{name}_loss_rel_err"] = step.loss_rel_err
    for _ in range(opts.warmup):
        for step in steps.values():
            step()
    for name, step in steps.items():
        with PeakRSS() as mem:
            step()
        row[f"{name}_peak_rss_mb"] = mem.delta_mb
    wall, cpu = _time_alternately(steps, opts.steps)
    for name, times in wall.items():
        med = statistics.median(times)
        row[f"{name}_ms"] = 1e3 * med
        row[f"{name}_ms_iqr"] = 1e3 * float(np.subtract(*np.percentile(times, [75, 25])))
        row[f"{name}_cpu_ms"] = 1e3 * statistics.median(cpu[name])
        row[f"{name}_frames_per_s"] = b * t / med
        row[f"{name}_gflops"] = row["flops_counted"] / med / 1e9
        row[f"{name}_loss"] = float(steps[name].loss.item())
    for name in ("torch", "review", "review_anomaly"):
        if f"{name}_ms" in row:  # how many times faster dvae_jax is
            row["speedup" if name == "torch" else f"{name}_speedup"] = (
                row[f"{name}_ms"] / row["jax_ms"]
            )
    if (
        "torch_ms" in row and "review_ms" in row
    ):  # > 1: the reference is slower than the review's code
        row["torch_over_review"] = row["torch_ms"] / row["review_ms"]
    return row


def _check_options(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    models_ = [m.strip() for m in args.models.split(",") if m.strip()]
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    for m in models_:
        if m not in PRESETS:
            raise errors.ConfigError(
                f"--models: unknown model '{m}' (choose from {', '.join(PRESETS)})"
            )
    for s in settings:
        if s not in SETTINGS:
            raise errors.ConfigError(
                f"--settings: unknown setting '{s}' (choose from {', '.join(SETTINGS)})"
            )
    if args.precision == "tf32" and args.device != "gpu":
        raise errors.ConfigError(
            "--precision tf32: TF32 is a format of NVIDIA GPUs; use --device gpu, "
            "or --precision float32 / bf16 on CPU"
        )
    return models_, settings


def _implementations(args: argparse.Namespace):
    """The reference module and the review's code (each None when not timed), devices checked."""
    _jax_device(args.device)
    ref = None if args.no_torch else _load_reference()
    if not args.no_torch and (ref is None or _torch() is None):
        print("PyTorch reference unavailable (pip install 'dvae-jax[torch]'): timing dvae_jax only")
        ref = None
    review = None
    if args.review_repo:
        if _torch() is None:
            raise errors.ConfigError(
                f"--review-repo {args.review_repo}: the review's code needs PyTorch "
                "(pip install 'dvae-jax[torch]')"
            )
        from dvae_jax import review_code

        review = review_code.load(args.review_repo)
    torch = _torch()
    if args.device == "gpu" and (ref is not None or review is not None):
        _check_torch_gpu(torch)
    if torch is not None and args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    return ref, review


def _environment(args: argparse.Namespace) -> dict:
    import jax

    torch = _torch()
    env = {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "torch": getattr(torch, "__version__", None),
        "torch_threads": torch.get_num_threads() if torch else None,
        "cpus": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "steps": args.steps,
        "warmup": args.warmup,
        "device": args.device,
        "precision": args.precision,
        "review_repo": args.review_repo or None,
        "lstm_impl": args.lstm_impl,
        # the caching malloc the command preloaded (dvae_jax/allocator.py), None: glibc's
        "allocator": allocator.active(),
    }
    if args.device == "gpu" and torch is not None and torch.cuda.is_available():
        env.update(
            torch_cuda=torch.version.cuda,
            torch_cudnn=torch.backends.cudnn.version(),
            gpu=torch.cuda.get_device_name(0),
        )
    return env


def _ceiling(args: argparse.Namespace, with_torch: bool) -> dict:
    n = 256 if args.tiny else (8192 if args.device == "gpu" else 2048)
    reps = 3 if args.tiny else (20 if args.device == "gpu" else 10)
    return matmul_ceiling(n, reps, args.device, args.precision, with_torch)


def run(args: argparse.Namespace) -> int:
    models_, settings = _check_options(args)
    ref, review = _implementations(args)
    with_torch = ref is not None or review is not None
    env = _environment(args)
    ceiling = _ceiling(args, with_torch)
    print(
        f"matmul ceiling ({args.precision}, {args.device}): jax {ceiling['jax_gflops']:.1f} GFLOP/s, "
        f"torch {ceiling.get('torch_gflops', float('nan')):.1f} GFLOP/s",
        flush=True,
    )
    rows = []
    for s in settings:
        for m in models_:
            row = bench_one(m, s, args, ref, review)
            for name in ("jax", "torch", "review", "review_anomaly"):
                if f"{name}_gflops" in row:
                    row[f"{name}_fraction_of_ceiling"] = row[f"{name}_gflops"] / ceiling["gflops"]
            rows.append(row)
            _print_row(row)
    ceiling_after = _ceiling(args, with_torch)
    result = {"env": env, "ceiling": ceiling, "ceiling_after": ceiling_after, "rows": rows}
    print(_table(rows, ceiling))
    if args.json:
        pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return 0


def _print_row(row: dict) -> None:
    parts = [f"jax {row['jax_ms']:.1f} ms"]
    for name, label in (
        ("torch", "reference"),
        ("review", "review"),
        ("review_anomaly", "review+anomaly"),
    ):
        if f"{name}_ms" in row:
            parts.append(f"{label} {row[f'{name}_ms']:.1f} ms")
    print(f"[{row['setting']}/{row['model']}] " + ", ".join(parts), flush=True)
    print("  " + json.dumps(row), flush=True)


def _ms(row: dict, name: str) -> str:
    return f"{row[f'{name}_ms']:.1f}" if f"{name}_ms" in row else "-"


def _x(row: dict, key: str) -> str:
    return f"{row[key]:.2f}x" if key in row else "-"


def _gf(row: dict, name: str) -> str:
    if f"{name}_gflops" not in row:
        return "-"
    return f"{row[f'{name}_gflops']:.1f} ({100 * row[f'{name}_fraction_of_ceiling']:.0f}%)"


def _err(row: dict) -> str:
    errs = [
        f"{row[f'{n}_loss_rel_err']:.1e}" if f"{n}_loss_rel_err" in row else "-"
        for n in ("jax", "torch", "review")
    ]
    return " / ".join(errs)


def _table(rows: list[dict], ceiling: dict) -> str:
    """The markdown table: the review's columns only when --review-repo was given."""
    review = any("review_ms" in r for r in rows)
    head = "| setting | model | B x T x F | device, precision | dvae_jax ms | reference ms | x reference |"
    if review:
        head += (
            " review ms | x review | review+anomaly ms | x review+anomaly | reference / review |"
        )
    head += (
        " jax GFLOP/s (of ceiling) | reference GFLOP/s (of ceiling) | jax frames/s | compile s "
        "| peak RSS MB jax / reference | loss rel. err. jax / reference / review |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        line = (
            f"| {r['setting']} | {r['model']} | {r['batch']}x{r['frames']}x{r['x_dim']} "
            f"| {r['device']}, {r['precision']} | {r['jax_ms']:.1f} | {_ms(r, 'torch')} | {_x(r, 'speedup')} |"
        )
        if review:
            line += (
                f" {_ms(r, 'review')} | {_x(r, 'review_speedup')} | {_ms(r, 'review_anomaly')} "
                f"| {_x(r, 'review_anomaly_speedup')} | {_x(r, 'torch_over_review')} |"
            )
        t_mem = f"{r['torch_peak_rss_mb']:.0f}" if "torch_peak_rss_mb" in r else "-"
        line += (
            f" {_gf(r, 'jax')} | {_gf(r, 'torch')} | {r['jax_frames_per_s']:.0f} | {r['jax_compile_s']:.2f} "
            f"| {r['jax_peak_rss_mb']:.0f} / {t_mem} | {_err(r)} |"
        )
        lines.append(line)
    lines.append(
        f"\nmatmul ceiling ({ceiling['precision']} {ceiling['n']}^3 on {ceiling['device']}): "
        f"jax {ceiling.get('jax_gflops', 0):.1f} GFLOP/s, torch {ceiling.get('torch_gflops', float('nan')):.1f} GFLOP/s"
    )
    skipped = {r["review_skipped"] for r in rows if "review_skipped" in r}
    lines += [f"review's code not timed where {why}" for why in sorted(skipped)]
    return "\n".join(lines)


def register(subparsers) -> None:
    """The options live in commands/bench.py; kept for callers that register from here."""
    from dvae_jax.commands import bench as command

    command.register(subparsers)
