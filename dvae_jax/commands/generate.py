"""``dvae-jax generate``: cold or primed generation from a run (pipeline: generate_command.py)."""

from __future__ import annotations

import argparse
import math

from dvae_jax.commands import _options


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "generate",
        help="generate speech from a trained run (cold start, or primed on held-out or any speech)",
        description=(
            "Generates feature sequences with a run's model, inverts them to audio with Griffin-Lim "
            "and writes wav files, spectrogram PNGs (prime marked) and summary.json with "
            "reference-free measures (audio/stats.py; DNSMOS and ASR WER when installed). Cold start "
            "needs only the run directory; primed mode primes with the run's test split or with any "
            "speech (--audio, --corpus/--root), featurised with the run's own settings and statistics."
        ),
    )
    p.add_argument("--workdir", required=True, help="run directory (dvae-jax train / import-review)")
    p.add_argument("--mode", choices=("cold", "primed"), default="cold")
    p.add_argument("--seconds", type=_options.float_in(0.0, _options.MAX_SECONDS, lo_open=True), default=3.0,
                   help=f"seconds generated after the prime (at most {_options.MAX_SECONDS:g})")
    p.add_argument("--prime-seconds", type=_options.float_in(0.0, _options.MAX_SECONDS, lo_open=True), default=1.0, help="primed mode: seconds of real speech")
    p.add_argument("--utterance", default=None, help="primed mode: utterance ID to prime with (default: test split)")
    p.add_argument("--n", type=_options.int_in(1, 256), default=1, help="sequences generated")
    p.add_argument("--temperature", type=_options.float_in(0.0, 100.0), default=1.0, help="prior scale multiplier (0: the prior mean)")
    p.add_argument("--decode", choices=("mean", "sample"), default="mean")
    p.add_argument("--latent", choices=("posterior", "prior"), default="posterior", help="z during priming")
    p.add_argument("--prime-output", choices=("reconstruction", "real"), default="reconstruction",
                   help="primed mode: the clip's prime part is the model's reconstruction (default) or the real "
                        "frames (+0.10 DNSMOS on real speech: experiments/results/generation_speech.md)")
    p.add_argument("--seed", type=_options.int_in(0, 2**31 - 1), default=0)
    p.add_argument("--out", default=None, help="output folder (default: <workdir>/generate/<mode>)")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    p.add_argument("--griffin-lim-iters", type=_options.int_in(1, 10_000), default=64)
    p.add_argument("--mel-inverse", choices=("pinv", "nnls"), default="nnls",
                   help="log-Mel: the Mel inverse before Griffin-Lim: nnls (default; non-negative least squares) or pinv (faster, worse)")
    p.add_argument("--no-quality", action="store_true", help="skip DNSMOS and ASR even when installed")
    p.add_argument("--no-figures", action="store_true")
    _options.add_audio(p, "primed mode: prime with")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from dvae_jax import generate_command

    request = generate_command.Request(
        mode=args.mode, seconds=args.seconds, prime_seconds=args.prime_seconds, utterance=args.utterance, n=args.n,
        temperature=args.temperature, decode=args.decode, latent=args.latent, prime_output=args.prime_output,
        seed=args.seed, which=args.checkpoint,
        n_iter=args.griffin_lim_iters, mel_inverse=args.mel_inverse, quality=not args.no_quality, figures=not args.no_figures,
        audio=_options.audio_source(args),
    )
    summary = generate_command.generate_run(args.workdir, out=args.out, request=request)
    for note in summary["notes"]:
        print(note)
    agg = summary["aggregate"]
    print(f"wrote {len(summary['items'])} sequence(s) to {summary['out']}: "
          + ", ".join(f"{k} {v:.3g}" for k, v in agg.items() if isinstance(v, float) and math.isfinite(v)))
    return 0
