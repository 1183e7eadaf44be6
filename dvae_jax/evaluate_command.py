"""`dvae-jax evaluate`: reconstruction metrics of a run on whole utterances, with the ceiling row."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from dvae_jax.audio import metrics as metrics_lib


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="reconstruction metrics of a run (whole utterances, ceiling row, KL per dim)",
        description="Runs the best checkpoint over whole utterances (z sampled from the posterior, decoder "
                    "mean), turns the reconstruction and the original features (the ceiling) back into audio "
                    "by the same path, and writes RUN/evaluation/results.{json,md} and report.md.")
    p.add_argument("--workdir", required=True, help="run directory")
    p.add_argument("--split", default="test", choices=("test", "val", "train"))
    p.add_argument("--n", type=int, default=0, help="utterances, spread over the split (0 = all)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--metrics", nargs="+", choices=list(metrics_lib.METRICS), default=None,
                   help="subset of the intrusive metrics (default: all)")
    p.add_argument("--inversion", choices=("phase", "griffin_lim_jax", "griffin_lim_librosa"), default=None,
                   help="default: phase (original phase + inverse STFT) for STFT power, griffin_lim_jax for log-Mel")
    p.add_argument("--mel-inverse", choices=("pinv", "nnls"), default="pinv")
    p.add_argument("--n-iter", type=int, default=64, help="Griffin-Lim iterations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-quality", action="store_true", help="skip DNSMOS and ASR WER")
    p.add_argument("--asr-n", type=int, default=2, help="utterances given to Whisper ASR (slow on CPU)")
    p.add_argument("--active-threshold", type=float, default=0.01,
                   help="KL per frame (nats) above which a latent dimension is active")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dvae_jax import checkpoint, evaluate
    from dvae_jax import config as config_lib
    from dvae_jax.audio import inversion
    from dvae_jax.data import audio_io, corpus, mini

    errors = (evaluate.EvaluationError, checkpoint.CheckpointError, config_lib.ConfigError, corpus.DataError,
              audio_io.AudioError, mini.MiniCorpusError, inversion.InversionError)
    try:
        res = evaluate.evaluate_run(
            args.workdir, split=args.split, n=args.n or None, batch_size=args.batch_size, metrics=args.metrics,
            inversion_name=args.inversion, mel_inverse=args.mel_inverse, n_iter=args.n_iter, seed=args.seed,
            quality=not args.no_quality, asr_n=args.asr_n, active_threshold=args.active_threshold,
            checkpoint_kind=args.checkpoint, progress=not args.quiet,
        )
    except errors as e:
        print(f"dvae-jax evaluate: error: {e}", file=sys.stderr)
        return 2
    s = res["settings"]
    print(f"evaluated {s['n_utterances']} '{s['split']}' utterances; back to audio: {s['inversion_description']}")
    for row in evaluate.ROWS:
        if row not in res:
            continue
        print(f"  {evaluate.ROW_TITLES[row]}:")
        for name, st in res[row]["aggregate"].items():
            mean = st["mean"]
            shown = f"{mean:.3f}" if mean is not None and math.isfinite(mean) else "NaN"
            print(f"    {name}: {shown}" + (f"  ({st['n_nan']} NaN)" if st["n_nan"] else ""))
    post = res["posterior"]
    print(f"  active latent units: {post['active_units']} of {len(post['kl_per_dim'])} (KL > {post['threshold']} nats/frame)")
    for measure, msg in s["quality"].items():
        if msg:
            print(f"  {measure}: {msg}")
    out = Path(args.workdir)
    print(f"results: {out / evaluate.EVAL_DIR / 'results.md'}; report: {out / 'report.md'}")
    return 0
