"""`dvae-jax train` and `dvae-jax demo`: config -> fit -> reconstructions -> report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dvae_jax import checkpoint, fit, report
from dvae_jax import config as config_lib
from dvae_jax.data import audio_io, corpus, mini

USER_ERRORS = (config_lib.ConfigError, corpus.DataError, audio_io.AudioError, mini.MiniCorpusError,
               fit.TrainingError, checkpoint.CheckpointError)


def run_training(cfg: config_lib.Config, workdir: str, resume: bool, quiet: bool, write_report: bool = True):
    from dvae_jax.data import prepare

    ds = prepare.prepare_dataset(cfg.data, cfg.features, progress=not quiet)
    if not quiet:
        print(ds.summary())
    result = fit.fit(cfg, workdir, resume=resume, progress=not quiet, dataset=ds)
    if write_report:
        saved, variables, _ = checkpoint.load_run(workdir, "best")
        report.write_reconstructions(saved, variables, ds, workdir)
        report.write_report(workdir)
    return result, ds


def _print_result(result: fit.FitResult, workdir: str) -> None:
    print(f"run: {workdir}  epochs {result.epochs_run}  steps {result.steps}  stopped: {result.stopped or 'n/a'}")
    print(f"best validation -ELBO per frame: {result.best_val:.4f} (epoch {result.best_epoch}); "
          f"final: {result.final_val:.4f}; skipped non-finite steps: {result.skipped_steps}; "
          f"rollbacks: {result.rollbacks}")


def train(args: argparse.Namespace) -> int:
    try:
        cfg = config_lib.apply_overrides(config_lib.load_named(args.config), args.set)
        t0 = time.time()
        result, _ = run_training(cfg, args.workdir, args.resume, args.quiet, not args.no_report)
    except USER_ERRORS as e:
        print(f"dvae-jax train: error: {e}", file=sys.stderr)
        return 2
    _print_result(result, args.workdir)
    print(f"wall time: {time.time() - t0:.0f} s; report: {Path(args.workdir) / 'report.md'}")
    return 0


def demo(args: argparse.Namespace) -> int:
    """The README's main job on the embedded mini corpus; re-running continues or re-reports."""
    t0 = time.time()
    try:
        cfg = config_lib.apply_overrides(config_lib.load_named(args.config), args.set)
        print(f"[demo] config '{args.config}': {cfg.model.model.upper()} on {cfg.features.kind} features of the "
              f"'{cfg.data.corpus}' corpus (built offline on first use)")
        result, ds = run_training(cfg, args.workdir, resume=True, quiet=args.quiet)
        _print_result(result, args.workdir)
        for extra in _demo_extras():
            extra(args.workdir, ds, quiet=args.quiet)
        report.write_report(args.workdir, title="dvae_jax demo")
    except USER_ERRORS as e:
        print(f"dvae-jax demo: error: {e}", file=sys.stderr)
        return 2
    print(f"[demo] done in {time.time() - t0:.0f} s; report: {Path(args.workdir) / 'report.md'}")
    return 0


def _demo_extras():
    """Steps that evaluation and generation add to the demo (registered as they land)."""
    return [_demo_evaluate, _demo_generate]


def _demo_evaluate(workdir, dataset, quiet: bool = False) -> None:
    """The evaluation table on a few test utterances (about a minute); ASR on one utterance."""
    from dvae_jax import evaluate

    res = evaluate.evaluate_run(workdir, split="test", n=4, asr_n=1, dataset=dataset, write_report=False,
                                progress=not quiet)
    if not quiet:
        print(f"[demo] evaluation: {res['settings']['n_utterances']} test utterances, "
              f"{res['posterior']['active_units']} active latent units; "
              f"{Path(workdir) / evaluate.EVAL_DIR / 'results.md'}")


def _demo_generate(workdir, dataset, quiet: bool = False) -> None:
    """Cold-start and primed (1 s prime, 2 s continuation) examples with their measures
    (RUN/generation/summary.md, a report section); ASR on two clips at most."""
    from dvae_jax import generate_command

    generate_command.demo_generation(workdir, dataset=dataset, quiet=quiet)
