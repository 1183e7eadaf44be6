"""Polyphonic music likelihood bounds against the SRNN paper (Fraccaro et al. 2016, Table 1).

Training and evaluation are the package's (``dvae-jax train`` / ``dvae-jax evaluate``); this
script is a thin wrapper over them plus the results table. The configs
(dvae_jax/configs/srnn_polyphonic_paper.json, vrnn_polyphonic.json) carry the SRNN code's protocol
(ml/training/train_srnn_midi.py in marcofraccaro/srnn): the training chunks in the files' order
(``data.batching=streams``: 16 parallel streams whose recurrent state is carried from one batch to
the next, reset each epoch), the KL weight from 0.2 (``train.kl_start``) to 1 over
``train.kl_anneal_epochs`` (per batch), Adam with eps 1e-4 (``train.adam_eps``) after global-norm
clipping, the SRNN code's initialisation (``model.init=paper``). The fit loop validates every
epoch (negative ELBO per frame of the validation chunks = -ELBO per step), keeps the best and the
latest checkpoints, and resumes exactly after a kill. Evaluation: the test ELBO and IWAE bounds
(dvae_jax/bounds.py) per time step with the paper's protocol and per sequence, in
RUN/evaluation/results.json.

Usage (from the repository root; niced, one thread):
    python experiments/polyphonic.py train --config srnn_polyphonic_paper --set-name jsb \\
        --out runs/poly/srnn_jsb [--root ../shared/data/polyphonic] [--epochs 50] [--resume] [--set k=v ...]
      = dvae-jax train --config srnn_polyphonic_paper --workdir runs/poly/srnn_jsb \\
        --set data.set_name=jsb [--set data.root=...] [--set train.epochs=50] [--resume]
    python experiments/polyphonic.py evaluate --out runs/poly/srnn_jsb --k 1,10,100 [--which best] [--pieces N]
      = dvae-jax evaluate --workdir runs/poly/srnn_jsb --k 1,10,100 --checkpoint latest|best [--n N]
    python experiments/polyphonic.py report runs/poly/*   # experiments/results/polyphonic.{md,json}

``report`` reads run directories of ``dvae-jax train`` (config.json, metrics.jsonl,
evaluation/results.json) and, for runs made by the earlier version of this script, its files
(history.json, bounds_final.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dvae_jax import cli, fit
from dvae_jax import config as config_lib
from dvae_jax.data import polyphonic


def train_argv(a: argparse.Namespace) -> list[str]:
    """The ``dvae-jax train`` arguments of ``train``'s options."""
    argv = ["train", "--config", a.config, "--workdir", str(a.out), "--set", f"data.set_name={a.set_name}"]
    sets = ([f"data.root={a.root}"] if a.root else []) + ([f"train.epochs={a.epochs}"] if a.epochs else [])
    sets += [f"model.init={a.init}"] if a.init else []
    for s in [*sets, *a.set]:
        argv += ["--set", s]
    return argv + (["--resume"] if a.resume else []) + ["--quiet"]


def evaluate_argv(a: argparse.Namespace) -> list[str]:
    """The ``dvae-jax evaluate`` arguments of ``evaluate``'s options."""
    argv = ["evaluate", "--workdir", str(a.out), "--k", a.k, "--chunk", str(a.chunk), "--checkpoint", a.which]
    return argv + (["--n", str(a.pieces)] if a.pieces else []) + (["--root", a.root] if a.root else [])


def _history(run: Path) -> list[dict]:
    """Per-epoch rows: epoch (1-based), seconds, train KL and the validation ELBO per step."""
    if (run / fit.METRICS_FILE).is_file():
        return [{"epoch": r["epoch"] + 1, "seconds": r["seconds"], "train_kl": r["train_kl"],
                 "valid_elbo_per_step": -r["val_loss"]}
                for r in fit.read_metrics(run) if r.get("kind") == "epoch"]
    if (run / "history.json").is_file():  # the earlier script's runs
        return json.loads((run / "history.json").read_text())
    return []


def _bounds(run: Path) -> dict | None:
    """{K: bounds} of the run's test evaluation on every piece, or None."""
    res = run / "evaluation" / "results.json"
    if res.is_file():
        d = json.loads(res.read_text())
        if d.get("kind") == "bounds" and d["settings"]["split"] == "test" and not d["settings"]["n"]:
            return d["bounds"]
    for name in ("bounds_final.json", "bounds_best.json"):  # the earlier script's: final, else best
        if (run / name).is_file():
            return json.loads((run / name).read_text())
    return None


def _checkpoint(run: Path) -> str:
    """Which parameters the test bounds are of: 'latest' (final) or 'best' (validation)."""
    res = run / "evaluation" / "results.json"
    if res.is_file():
        return (json.loads(res.read_text())["settings"].get("checkpoint") or {}).get("checkpoint") or "latest"
    return "latest" if (run / "bounds_final.json").is_file() else "best"


def _summary(run: Path) -> dict:
    """One row of the results: the run's set, model, epochs, times and test bounds per K."""
    cfg = json.loads((run / "config.json").read_text())
    hist = _history(run)
    name = cfg["data"]["set_name"]
    last = hist[-1]
    valid = [h["valid_elbo_per_step"] for h in hist if "valid_elbo_per_step" in h]
    return {
        "run": str(run), "set": name, "model": cfg["model"]["model"], "epochs": last["epoch"],
        "checkpoint": _checkpoint(run),
        "setting": {k: cfg[s].get(k) for s, ks in (("model", ("activation", "rnn_cell", "separate_heads",
                    "share_x_embedding", "dropout_p")), ("train", ("lr", "warmup_epochs", "kl_anneal_epochs")))
                    for k in ks},
        "train_wall_s": last["seconds"], "train_cpu_s": last.get("cpu_seconds"),
        "valid_elbo_per_step": valid[-1] if valid else None,
        "paper_srnn_per_step": polyphonic.PAPER_SRNN[name],
        "bounds": _bounds(run),
        "subsets": {f.stem.split("_")[-1]: json.loads(f.read_text())
                    for f in sorted(run.glob("bounds_final_first*.json"))},
        "history": [{k: h[k] for k in ("epoch", "train_kl", "valid_elbo_per_step") if k in h} for h in hist],
    }


def report(runs: list[Path], out: Path = ROOT / "experiments" / "results" / "polyphonic.json") -> str:
    """Writes the rows of ``runs`` to ``out`` (JSON) and returns the Markdown table."""
    rows = [_summary(r) for r in runs if _bounds(r) is not None and _history(r)]
    variants = [  # short diagnostic runs without test bounds: their training curves
        {"run": str(r), "config": json.loads((r / "config.json").read_text())["model"], "history": _history(r)}
        for r in runs if _bounds(r) is None and _history(r)]
    out.write_text(json.dumps({"results": rows, "variants": variants}, indent=1))
    ks = sorted({int(k) for r in rows for k in r["bounds"]})
    head = ["set", "model", "epochs", "train wall / CPU (s)", "ELBO (closed-form KL)"]
    head += [f"IWAE K={k}" for k in ks] + ["paper SRNN", "ELBO / IWAE per sequence"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        b = r["bounds"]
        first, top = b[str(ks[0])] if str(ks[0]) in b else next(iter(b.values())), b[str(max(int(k) for k in b))]
        iw = [f"{b[str(k)]['iwae_per_step']:.3f}" if str(k) in b else "-" for k in ks]
        lines.append("| " + " | ".join([
            r["set"], r["model"], str(r["epochs"]), f"{r['train_wall_s']:.0f} / {r['train_cpu_s'] or 0:.0f}",
            f"{first['elbo_per_step']:.3f}", *iw, f"{r['paper_srnn_per_step']:.2f}",
            f"{first['elbo_per_sequence']:.1f} / {top['iwae_per_sequence']:.1f}"]) + " |")
    table = "\n".join(lines)
    print(table)
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="= dvae-jax train (see the module docstring)")
    t.add_argument("--config", default="srnn_polyphonic_paper")
    t.add_argument("--set-name", default="jsb", choices=config_lib.POLYPHONIC_SETS)
    t.add_argument("--root", default="")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--epochs", type=int, default=0)
    t.add_argument("--resume", action="store_true")
    t.add_argument("--eval-every", type=int, default=1,
                   help="ignored: the fit loop validates every epoch (kept for earlier command lines)")
    t.add_argument("--set", action="append", default=[])
    t.add_argument("--init", default="", choices=("", "paper", "torch"),
                   help="model.init (default: the config's; paper: Glorot-normal / orthogonal / zero biases)")
    e = sub.add_parser("evaluate", help="= dvae-jax evaluate (see the module docstring)")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--root", default="")
    e.add_argument("--k", default="1,10")
    e.add_argument("--chunk", type=int, default=16384)
    e.add_argument("--which", default="latest", choices=("best", "latest"),
                   help="latest: the final parameters (as the SRNN code reports); best: best validation ELBO")
    e.add_argument("--pieces", type=int, default=0, help="only N test pieces, spread evenly (0 = all)")
    r = sub.add_parser("report")
    r.add_argument("runs", type=Path, nargs="+")
    a = ap.parse_args(argv)
    if a.cmd == "train":
        return cli.main(train_argv(a))
    if a.cmd == "evaluate":
        return cli.main(evaluate_argv(a))
    report(a.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
