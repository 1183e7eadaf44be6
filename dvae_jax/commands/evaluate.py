"""``dvae-jax evaluate``: reconstruction metrics of a run (pipeline: dvae_jax/evaluate.py)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from dvae_jax.commands import _options


def register(subparsers) -> None:
    from dvae_jax.audio import metrics as metrics_lib

    p = subparsers.add_parser(
        "evaluate", help="reconstruction metrics of a run (whole utterances, ceiling row, KL per dim)",
        description="Runs the best checkpoint over whole utterances (z sampled from the posterior, decoder "
                    "mean), turns the reconstruction and the original features (the ceiling) back into audio "
                    "by the same path, and writes RUN/evaluation/results.{json,md} and report.md. The "
                    "utterances come from the run's corpus (--split) or from any other speech (--audio, "
                    "--corpus/--root), featurised with the run's own settings and statistics. A piano-roll run "
                    "(data.corpus=polyphonic) gets its likelihood bounds instead: the ELBO and IWAE with K "
                    "importance samples (--k), per step and per sequence, in RUN/evaluation/results.{json,md}.")
    p.add_argument("--workdir", required=True, help="run directory")
    p.add_argument("--split", default="test", choices=("test", "val", "train"),
                   help="split of the run's corpus (ignored with --audio / --corpus)")
    p.add_argument("--n", type=_options.int_in(0), default=0, help="utterances, spread over the split (0 = all)")
    p.add_argument("--batch-size", type=_options.int_in(1, 4096), default=8)
    p.add_argument("--metrics", nargs="+", choices=list(metrics_lib.METRICS), default=None,
                   help="subset of the intrusive metrics (default: all)")
    p.add_argument("--inversion", choices=("phase", "griffin_lim_jax", "griffin_lim_librosa"), default=None,
                   help="default: phase (original phase + inverse STFT) for STFT power, griffin_lim_jax for log-Mel; "
                        "WORLD features always go back by WORLD synthesis (ignored)")
    p.add_argument("--mel-inverse", choices=("pinv", "nnls"), default="nnls",
                   help="log-Mel: the Mel inverse before Griffin-Lim: nnls (default; non-negative least squares) or pinv (faster, worse)")
    p.add_argument("--n-iter", type=_options.positive_int, default=64, help="Griffin-Lim iterations")
    p.add_argument("--seed", type=_options.int_in(0, 2**31 - 1), default=0)
    p.add_argument("--no-quality", action="store_true", help="skip DNSMOS and ASR WER")
    p.add_argument("--asr-n", type=_options.int_in(0), default=2, help="utterances given to Whisper ASR (slow on CPU)")
    p.add_argument("--active-threshold", type=_options.float_in(0.0, 1e6), default=0.01,
                   help="KL per frame (nats) above which a latent dimension is active")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    p.add_argument("--quiet", action="store_true")
    g = p.add_argument_group("piano-roll runs (data.corpus=polyphonic)")
    g.add_argument("--k", type=k_list, default=None, metavar="K[,K...]",
                   help="importance samples of the IWAE bound, e.g. 1,10,100 (default: 1,10)")
    g.add_argument("--chunk", type=_options.int_in(1), default=16384,
                   help="the most frames (sequences x length) per model call: bounds memory")
    _options.add_audio(p, "evaluate on")
    p.set_defaults(func=run)


def k_list(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated integers >= 1 (the K of IWAE bounds), each read by
    :func:`_options.positive_int`."""
    try:
        ks = [_options.positive_int(t.strip()) for t in text.split(",")]
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"'{text}': every K must be an integer >= 1 ({e})") from None
    return tuple(dict.fromkeys(ks))


def run(args: argparse.Namespace) -> int:
    from dvae_jax import checkpoint, errors, evaluate

    if checkpoint.load_config(args.workdir).data.corpus == "polyphonic":
        if args.audio is not None or args.corpus is not None:
            raise errors.ConfigError("a piano-roll run is evaluated on its own set: --root DIR (where the "
                                     "set's file is) is the only source option")
        res = evaluate.evaluate_bounds_run(
            args.workdir, args.k or evaluate.DEFAULT_KS, args.chunk, args.split, args.n or None, args.seed,
            args.checkpoint, args.root, log=None if args.quiet else print)
        print(evaluate.bounds_table(res))
        print(f"results: {Path(args.workdir) / evaluate.EVAL_DIR / 'results.json'}")
        return 0
    if args.k is not None:
        raise errors.ConfigError("--k applies to piano-roll runs (data.corpus=polyphonic) only")
    res = evaluate.evaluate_run(
        args.workdir, split=args.split, n=args.n or None if args.n >= 0 else args.n, batch_size=args.batch_size,
        metrics=args.metrics, inversion_name=args.inversion, mel_inverse=args.mel_inverse, n_iter=args.n_iter,
        seed=args.seed, quality=not args.no_quality, asr_n=args.asr_n, active_threshold=args.active_threshold,
        checkpoint_kind=args.checkpoint, progress=not args.quiet, audio=_options.audio_source(args),
    )
    _print(res, args.workdir)
    return 0


def _print(res: dict, workdir: str) -> None:
    from dvae_jax import evaluate

    s = res["settings"]
    print(f"evaluated {s['n_utterances']} utterances ({s['source']}); back to audio: {s['inversion_description']}")
    for row in evaluate.ROWS:
        if row not in res:
            continue
        print(f"  {evaluate.ROW_TITLES[row]}:")
        for name, st in res[row]["aggregate"].items():
            mean = st["mean"]
            shown = f"{mean:.3f}" if mean is not None and math.isfinite(mean) else "NaN"
            print(f"    {name}: {shown}" + (f"  ({st['n_nan']} NaN)" if st["n_nan"] else ""))
    post = res["posterior"]
    print(f"  active latent units: {post['active_units']} of {len(post['kl_per_dim'])} "
          f"(KL > {post['threshold']} nats/frame)")
    for measure, msg in s["quality"].items():
        if msg:
            print(f"  {measure}: {msg}")
    out = Path(workdir)
    print(f"results: {out / evaluate.EVAL_DIR / 'results.md'}; report: {out / 'report.md'}")
