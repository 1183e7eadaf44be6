"""The review's reconstruction comparison on our data: every model of the DVAE review, 3 seeds.

Each model is trained in the review's speech setting (``vrnn_review_speech``: 513-bin STFT
power, sine window, 50-frame chunks, batch 128, Adam 2e-3, Itakura-Saito likelihood), its model
section replaced by the model's ``<model>_review_speech`` preset (the review's
config/speech/cfg_<model>.ini), with the same budget for every model on a corpus (the same
epochs, hence the same optimiser steps on the same chunks), for each seed; the data split is
the same for every run (data.seed 0). Each run is then evaluated by ``dvae_jax.evaluate`` with
the review's protocol: whole test utterances, z sampled from the posterior, decoder mean, back to
audio with the original phase and an inverse STFT. The ceiling row puts the original STFT power
through the same path (the analysis-resynthesis limit of the metrics).

Output: experiments/results/reconstruction_review.md and .json: one table per corpus, rows =
model + ceiling, columns = every metric as mean [min, max] over the seeds of the per-run test
means, the review's WSJ0 figures (from its repository's README) beside them.

Usage (from the repository root; runs are resumed, so a re-run only evaluates what is trained):
    python experiments/compare_reconstruction.py [--corpora asterisk mini] [--seeds 0 1 2]
        [--models vrnn srnn vae dkf storn rvae_causal rvae_noncausal dsae] [--epochs 20] [--n 20]
    python experiments/compare_reconstruction.py --rewrite   # re-render the .md from the .json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dvae_jax import config as config_lib

MODELS = ("vrnn", "srnn", "vae", "dkf", "storn", "rvae_causal", "rvae_noncausal", "dsae")
BASE = "vrnn_review_speech"  # the review's whole speech setting; the model section is replaced
CORPORA = {
    "asterisk": ["data.corpus=asterisk", "data.split_by=utterance"],  # one real speaker, 27 min
    "mini": ["data.corpus=mini"],  # the embedded corpus: eSpeak NG voices, split by speaker
}
# The budget: epochs per corpus, about 140 optimiser steps on each (7 and 21 steps per epoch).
EPOCHS = {"asterisk": 20, "mini": 7}
# The review's WSJ0 test results (github.com/XiaoyuBIE1994/DVAE README, "Main results"):
# SI-SDR dB, PESQ (pypesq, narrow-band), ESTOI.
REVIEW_WSJ0 = {
    "vae": (5.3, 2.97, 0.83), "dkf": (9.3, 3.53, 0.91), "storn": (6.9, 3.42, 0.90),
    "vrnn": (10.0, 3.61, 0.92), "srnn": (11.0, 3.68, 0.93), "rvae_causal": (9.0, 3.49, 0.90),
    "rvae_noncausal": (8.9, 3.58, 0.91), "dsae": (9.2, 3.55, 0.91),
}
SHOWN = ("si_sdr", "pesq_nb", "pesq_wb", "estoi", "stoi", "lsd", "rmse")  # metric key prefixes, in order


def overrides(epochs: int, seed: int) -> list[str]:
    """A short run: the KL weight goes 0 -> 1 linearly from epoch 2 to the budget's middle."""
    return [f"train.epochs={epochs}", f"train.seed={seed}", "train.kl_schedule=linear",
            "train.kl_warmup_epochs=2", f"train.kl_anneal_epochs={max(1, epochs // 2 - 2)}",
            f"train.early_stop_patience={epochs}", "train.log_every_steps=0"]


def run_config(model: str, corpus: str, seed: int, epochs: int = 0) -> config_lib.Config:
    epochs = epochs or EPOCHS[corpus]
    cfg = config_lib.load_named(BASE)
    cfg = dataclasses.replace(cfg, name=f"{model}_{corpus}_s{seed}",
                              model=config_lib.model_preset(f"{model}_review_speech"))
    return config_lib.apply_overrides(cfg, CORPORA[corpus] + overrides(epochs, seed))


def train_all(runs: Path, models: list[str], corpora: list[str], seeds: list[int], epochs: int) -> dict:
    from dvae_jax import fit
    from dvae_jax.data import prepare

    seconds = {}
    for corpus in corpora:
        ds = None
        for model in models:
            for seed in seeds:
                cfg = run_config(model, corpus, seed, epochs)
                ds = ds or prepare.prepare_dataset(cfg.data, cfg.features, progress=False)
                t0 = time.time()
                result = fit.fit(cfg, runs / cfg.name, resume=True, progress=False, dataset=ds)
                seconds[cfg.name] = time.time() - t0
                print(f"[train] {cfg.name}: {result.epochs_run} epochs, best val -ELBO {result.best_val:.2f} "
                      f"(epoch {result.best_epoch}), {seconds[cfg.name]:.0f} s", flush=True)
    return seconds


def evaluate_all(runs: Path, models: list[str], corpora: list[str], seeds: list[int], epochs: int, n: int) -> dict:
    from dvae_jax import evaluate, fit
    from dvae_jax import models as models_lib

    out = {}
    for corpus in corpora:
        rows, ceiling, settings = {}, None, None
        for model in models:
            per_seed = []
            for seed in seeds:
                name = run_config(model, corpus, seed, epochs).name
                res = evaluate.evaluate_run(runs / name, split="test", n=n or None, seed=0, quality=False,
                                            inversion_name="phase", write_report=False)
                epochs_log = [r for r in fit.read_metrics(runs / name) if r.get("kind") == "epoch"]
                per_seed.append({"seed": seed, "aggregate": res["model"]["aggregate"],
                                 "active_units": res["posterior"]["active_units"],
                                 "best_val": min(r["val_loss"] for r in epochs_log),
                                 "seconds": epochs_log[-1].get("seconds")})
                ceiling, settings = ceiling or res["ceiling"]["aggregate"], settings or res["settings"]
                print(f"[eval] {name}: {res['settings']['n_utterances']} utterances", flush=True)
            cfg = run_config(model, corpus, seeds[0], epochs).model
            rows[model] = {"seeds": per_seed, "params": _count(models_lib, cfg)}
        out[corpus] = {"rows": rows, "ceiling": ceiling, "settings": settings}
    return out


def _count(models_lib, cfg) -> int:
    import jax

    return models_lib.count_params(models_lib.init(cfg, jax.random.PRNGKey(0)))


def _metrics(agg: dict) -> list[str]:
    """The aggregate's metric names in SHOWN's order (then any others)."""
    names = list(agg)
    ordered = [m for prefix in SHOWN for m in names if m.startswith(prefix)]
    return ordered + [m for m in names if m not in ordered]


def _over_seeds(values: list[float]) -> str:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], float)
    if v.size == 0:
        return "NaN"
    return f"{v.mean():.3f} [{v.min():.2f}, {v.max():.2f}]" if v.size > 1 else f"{v[0]:.3f}"


def table(result: dict) -> list[str]:
    metrics = _metrics(result["ceiling"])
    head = ["model", "parameters", *metrics, "active units", "best val -ELBO", "review WSJ0: SI-SDR / PESQ / ESTOI"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, row in result["rows"].items():
        cells = [_over_seeds([s["aggregate"][m]["mean"] for s in row["seeds"]]) for m in metrics]
        au = _over_seeds([s["active_units"] for s in row["seeds"]])
        val = _over_seeds([s["best_val"] for s in row["seeds"]])
        rev = " / ".join(str(v) for v in REVIEW_WSJ0.get(model, ()))
        lines.append(f"| {model.upper().replace('_', '-')} | {row['params']:,} | " + " | ".join(cells)
                     + f" | {au} | {val} | {rev} |")
    ceil = [f"{result['ceiling'][m]['mean']:.3f}" for m in metrics]
    lines.append("| ceiling (original power, same path) | - | " + " | ".join(ceil) + " | - | - | - |")
    return lines


def _budget(epochs: int) -> str:
    return ", ".join(f"{c} {epochs or e} epochs" for c, e in EPOCHS.items())


def write_table(out: dict, path: Path, epochs: int, seeds: list[int]) -> None:
    lines = ["# The review's models on our data: reconstruction, 3 seeds", "",
             ("Generated by `experiments/compare_reconstruction.py`. Each cell: mean over the seeds "
             f"({', '.join(map(str, seeds))}) of the run's mean over the test utterances [lowest, highest seed]."),
             "",
             (f"- setting: the review's (`{BASE}`: 513-bin STFT power, sine window, 50-frame chunks, batch 128, "
             "Adam 2e-3, Itakura-Saito), each model's `<model>_review_speech` preset (the review's "
             "config/speech/cfg_*.ini; parameter counts equal the review modules');"),
             (f"- budget, the same for every model on a corpus: {_budget(epochs)} (about 140 Adam steps), "
             "`train.kl_schedule=linear`, KL warm-up 2 epochs then a ramp to 1 by mid-run, no early stop "
             "(the review trains up to 500 epochs with a 50-epoch KL warm-up: these runs are far from converged);"),
             ("- evaluation: `dvae_jax.evaluate`, the review's protocol: whole test utterances, z from the "
             "posterior, decoder mean, the original phase and an inverse STFT; PESQ by the `pesq` package "
             "(nb and wb modes named), (E)STOI by pystoi."), ""]
    for corpus, result in out.items():
        s = result["settings"]
        lines += [f"## {corpus}: {s['n_utterances']} test utterances", "", *table(result), ""]
    lines += ["## The review's WSJ0 column, for orientation only", "",
              ("The review's numbers (its repository's README) come from WSJ0 (read speech of many speakers, "
              "~25 h of training data), about 500 epochs with early stopping, and pypesq's narrow-band PESQ. "
              "Here: the asterisk prompts (one speaker, 27 minutes) or the embedded eSpeak NG corpus, a few "
              "minutes of training per model on 2 CPU cores, and the `pesq` package. Compare the rows of one "
              "table with each other and with the ceiling; the ranking, not the level, is what can be "
              "set beside the review's."), ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/compare_review", help="where the run directories go")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--corpora", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=0,
                   help="the budget of every model on every corpus (0: asterisk 20, mini 7: ~140 steps each)")
    p.add_argument("--n", type=int, default=20, help="test utterances per run, spread over the split (0 = all)")
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "reconstruction_review"))
    p.add_argument("--rewrite", action="store_true", help="only re-render the .md from the saved .json")
    p.add_argument("--train-only", action="store_true")
    args = p.parse_args(argv)
    base = Path(args.out)
    if args.rewrite:
        saved = json.loads(base.with_suffix(".json").read_text())
        write_table(saved["results"], base.with_suffix(".md"), saved["epochs"], saved["seeds"])
        return 0
    runs = Path(args.runs)
    train_all(runs, args.models, args.corpora, args.seeds, args.epochs)
    if args.train_only:
        return 0
    out = evaluate_all(runs, args.models, args.corpora, args.seeds, args.epochs, args.n)
    base.parent.mkdir(parents=True, exist_ok=True)
    if base.with_suffix(".json").exists():  # the other corpora's tables of an earlier call stay
        saved = json.loads(base.with_suffix(".json").read_text())
        if (saved["epochs"], saved["seeds"]) == (args.epochs, args.seeds):
            out = {**saved["results"], **out}
    payload = {"results": out, "epochs": args.epochs, "seeds": args.seeds}
    base.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=float))
    write_table(out, base.with_suffix(".md"), args.epochs, args.seeds)
    print(base.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
