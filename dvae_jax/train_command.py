"""The training pipeline of ``dvae-jax train`` and ``dvae-jax demo``: config -> prepared corpus ->
what the run directory keeps of it (run_dir) -> fit -> reconstructions -> report. No command-line
code here (commands/train.py)."""

from __future__ import annotations

import time
from pathlib import Path

from dvae_jax import checkpoint, distributed, fit, report, run_dir
from dvae_jax import config as config_lib


def run_training(cfg: config_lib.Config, workdir: str, resume: bool, quiet: bool, write_report: bool = True,
                 placement: distributed.Placement | None = None):
    """Prepares the corpus, stores its normaliser and fingerprint in the run directory (so the run
    is usable without the corpus), fits, and writes reconstructions and report.md. With several
    processes, process 0 prepares the corpus while the others wait, then every process reads its
    share of each batch; process 0 alone writes the run directory's files and the report.

    Returns:
        (fit.FitResult, the prepared Dataset).
    """
    from dvae_jax.data import prepare

    placement = placement or distributed.Placement()
    if not placement.writer:
        distributed.barrier("dvae_jax: corpus prepared")  # process 0 builds it (once)
    ds = prepare.prepare_dataset(cfg.data, cfg.features, progress=not quiet)
    if placement.writer:
        distributed.barrier("dvae_jax: corpus prepared")
    if not quiet:
        print(ds.summary())
        print(f"devices: {placement.describe()}")
    if placement.writer and not (Path(workdir) / "checkpoints").exists():  # self-contained even if killed
        run_dir.record(workdir, ds)
    result = fit.fit(cfg, workdir, resume=resume, progress=not quiet, dataset=ds, placement=placement)
    if placement.writer:
        run_dir.record(workdir, ds)  # fit accepted the run directory (a resume uses the same corpus)
    if write_report:
        # every process opens the checkpoints (orbax synchronises the processes that do)
        saved, variables, _ = checkpoint.load_run(workdir, "best")
        if placement.writer:
            report.write_reconstructions(saved, variables, ds, workdir,
                                         normalizer=run_dir.load(workdir).normalizer)
            report.write_report(workdir)
    return result, ds


def result_lines(result: fit.FitResult, workdir: str) -> list[str]:
    """The lines printed after training: the outcome, then where the time went."""
    lines = [
        f"run: {workdir}  epochs {result.epochs_run}  steps {result.steps}  stopped: {result.stopped or 'n/a'}",
        (f"best validation -ELBO per frame: {result.best_val:.4f} (epoch {result.best_epoch}); "
        f"final: {result.final_val:.4f}; skipped non-finite steps: {result.skipped_steps}; "
        f"rollbacks: {result.rollbacks}"),
    ]
    t = result.timing
    if t.get("time_wall_s"):
        wall = t["time_wall_s"]
        parts = ", ".join(f"{k} {100 * t[f'time_{k}_s'] / wall:.0f}%"
                          for k in (*fit.Clock.KINDS, "other"))
        lines.append(f"throughput: {t['frames_per_s']:,.0f} frames/s after compilation "
                     f"({t['step_frames_per_s']:,.0f} in the step); {wall:.0f} s in the loop: {parts}")
    return lines


def train(cfg: config_lib.Config, workdir: str, resume: bool = False, quiet: bool = False,
          write_report: bool = True, placement: distributed.Placement | None = None) -> fit.FitResult:
    """``dvae-jax train``: one run, printed summary (by process 0 of a multi-host run)."""
    t0 = time.time()
    result, _ = run_training(cfg, workdir, resume, quiet, write_report, placement)
    if placement is not None and not placement.writer:
        return result
    print("\n".join(result_lines(result, workdir)))
    print(f"wall time: {time.time() - t0:.0f} s; report: {Path(workdir) / 'report.md'}")
    return result


def demo(cfg: config_lib.Config, workdir: str, name: str, quiet: bool = False) -> None:
    """The README's main job on the embedded mini corpus; re-running continues or re-reports."""
    t0 = time.time()
    print(f"[demo] config '{name}': {cfg.model.model.upper()} on {cfg.features.kind} features of the "
          f"'{cfg.data.corpus}' corpus (built offline on first use)")
    result, ds = run_training(cfg, workdir, resume=True, quiet=quiet)
    print("\n".join(result_lines(result, workdir)))
    for extra in _demo_extras():
        extra(workdir, ds, quiet=quiet)
    report.write_report(workdir, title="dvae_jax demo")
    print(f"[demo] done in {time.time() - t0:.0f} s; report: {Path(workdir) / 'report.md'}")


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
