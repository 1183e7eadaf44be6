"""`dvae-jax report --study DIR`: a markdown report of one or more sweeps (experiments/REPORT.md).

Per study (one question each): what was run; a table per searched factor grouping the finished
trials by its value (mean of the first objective, a 95% t interval and, from 3 trials, a
bootstrap interval via scipy.stats, the seeds, active latent units); a table per setting (all
factors but the seed) over its seeds; Optuna's matplotlib importance / slice / contour /
intermediate-value plots as small PNGs next to the report; and conclusion lines computed from
the numbers (difference of means with a Welch interval), to be read and completed by a person.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dvae_jax import errors

DEFAULT_OUT = Path("experiments") / "REPORT.md"
CONFIDENCE = 0.95
MAX_LEVELS = 8  # a numeric factor with more distinct values is binned into terciles


# ------------------------------------------------------------------------------------------------
# Loading


def load(study_dir: str | Path, storage: str | None = None) -> tuple[Any, dict]:
    """(the Optuna study, the study file as stored) of a sweep directory."""
    import optuna

    from dvae_jax import sweep as sweep_lib

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_dir = Path(study_dir)
    info_path = study_dir / "study.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    url = storage or info.get("storage") or sweep_lib.default_storage(study_dir)
    if url.startswith("sqlite") and not (study_dir / "study.db").exists() and not info:
        raise errors.RunError(f"{study_dir} holds no sweep (no study.db nor study.json): pass the --study-dir "
                              "of a `dvae-jax sweep`, or --storage URL")
    try:
        names = optuna.get_all_study_names(storage=url)
    except Exception as e:  # noqa: BLE001 - driver errors: one line
        raise errors.StorageError(f"cannot read the study storage {url}: {type(e).__name__}") from None
    name = info.get("name") or (names[0] if len(names) == 1 else None)
    if name not in names:
        raise errors.RunError(f"{url}: no study '{name}' (found: {', '.join(names) or 'none'})")
    study = optuna.load_study(study_name=name, storage=url)
    return study, study.user_attrs.get("spec", info.get("spec", {}))


# ------------------------------------------------------------------------------------------------
# Numbers


def interval(values: Sequence[float]) -> tuple[float, float, float, tuple[float, float] | None]:
    """(mean, t-interval low, high, bootstrap interval or None) at CONFIDENCE."""
    from scipy import stats

    x = np.asarray(values, np.float64)
    mean = float(np.mean(x))
    if len(x) < 2:
        return mean, math.nan, math.nan, None
    if np.ptp(x) == 0:  # identical values: a zero-width interval (scipy would warn and give NaN)
        return mean, mean, mean, (mean, mean)
    lo, hi = stats.t.interval(CONFIDENCE, len(x) - 1, loc=mean, scale=stats.sem(x))
    boot = None
    if len(x) >= 3 and np.ptp(x) > 0:
        res = stats.bootstrap((x,), np.mean, confidence_level=CONFIDENCE, n_resamples=2000,
                              method="percentile", rng=np.random.default_rng(0))
        boot = (float(res.confidence_interval.low), float(res.confidence_interval.high))
    return mean, float(lo), float(hi), boot


def difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float] | None:
    """mean(a) - mean(b) with its Welch t interval; None with fewer than 2 values a side."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return None
    res = stats.ttest_ind(np.asarray(a, float), np.asarray(b, float), equal_var=False)
    ci = res.confidence_interval(CONFIDENCE)
    return float(np.mean(a) - np.mean(b)), float(ci.low), float(ci.high)


def _levels(trials: list, name: str) -> dict[str, list]:
    """Trials grouped by the value of parameter ``name`` (terciles for a many-valued number)."""
    have = [t for t in trials if name in t.params]
    values = [t.params[name] for t in have]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    groups: dict[str, list] = {}
    if numeric and len(set(values)) > MAX_LEVELS:
        edges = np.quantile(values, [1 / 3, 2 / 3])
        for t, v in zip(have, values):
            i = int(np.searchsorted(edges, v, side="right"))
            groups.setdefault(i, []).append(t)
        labels = [f"<= {edges[0]:.3g}", f"({edges[0]:.3g}, {edges[1]:.3g}]", f"> {edges[1]:.3g}"]
        return {labels[i]: groups[i] for i in sorted(groups)}
    for t, v in sorted(zip(have, values), key=lambda p: (str(type(p[1])), p[1])):
        groups.setdefault(_short(v), []).append(t)
    return groups


def _fmt(x: float, digits: int = 4) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _row(label: str, group: list, objective: str) -> str:
    vals = [t.values[0] for t in group]
    mean, lo, hi, boot = interval(vals)
    seeds = sorted({t.user_attrs.get("seed") for t in group if t.user_attrs.get("seed") is not None})
    units = [t.user_attrs.get("active_units") for t in group if t.user_attrs.get("active_units") is not None]
    b = f"[{_fmt(boot[0])}, {_fmt(boot[1])}]" if boot else "n/a"
    return (f"| {label} | {len(vals)} | {_fmt(mean)} | [{_fmt(lo)}, {_fmt(hi)}] | {b} | {_fmt(min(vals))} | "
            f"{', '.join(map(str, seeds))} | {_fmt(float(np.mean(units)), 1) if units else 'n/a'} |")


def _table_head(what: str, objective: str) -> list[str]:
    return [f"| {what} | n | mean {objective} | 95% t interval | 95% bootstrap | best | seeds | active units |",
            "|---|---|---|---|---|---|---|---|"]


def _conclusion(name: str, groups: dict[str, list], minimize: bool) -> str:
    """The best level against each other level: difference of means and its Welch interval."""
    means = {k: float(np.mean([t.values[0] for t in g])) for k, g in groups.items()}
    if len(means) < 2:
        return f"- {name}: one level only; nothing to compare."
    best = min(means, key=means.get) if minimize else max(means, key=means.get)
    parts = []
    for other, g in groups.items():
        if other == best:
            continue
        d = difference([t.values[0] for t in groups[best]], [t.values[0] for t in g])
        if d is None:
            parts.append(f"{best} vs {other}: n too small for an interval (n={len(groups[best])} vs {len(g)})")
            continue
        verdict = "interval excludes 0" if d[1] > 0 or d[2] < 0 else "interval includes 0: no clear difference"
        parts.append(f"{best} vs {other}: difference {d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}], "
                     f"n={len(groups[best])} vs {len(g)} ({verdict})")
    return f"- **{name}**: best level {best}; " + "; ".join(parts) + "."


# ------------------------------------------------------------------------------------------------
# Posterior collapse and early stopping (from what the trials recorded)


def _collapse_table(complete: list, factors: list[str]) -> list[str]:
    """Per setting: KL of the best epoch, active units and the sorted KL-per-dimension profile."""
    have = [t for t in complete if t.user_attrs.get("kl_per_dim")]
    if not have:
        return []
    groups: dict[str, list] = {}
    for t in have:
        key = ", ".join(f"{k}={_short(t.params[k])}" for k in factors if k in t.params) or "(base)"
        groups.setdefault(key, []).append(t)
    lines = ["### Posterior collapse", "",
             ("KL per latent dimension at each run's best epoch (validation, nats per frame), sorted from the "
             "largest, averaged over the setting's seeds; a dimension is active above 0.01 nats per frame."), "",
             "| setting | n | KL (nats/frame) | active units | KL per dimension, sorted |", "|---|---|---|---|---|"]
    for key, group in sorted(groups.items()):
        profile = np.mean([sorted(t.user_attrs["kl_per_dim"], reverse=True) for t in group], axis=0)
        kl = [t.user_attrs.get("val_kl", math.nan) for t in group]
        units = [t.user_attrs.get("active_units", math.nan) for t in group]
        lines.append(f"| {key} | {len(group)} | {_fmt(float(np.mean(kl)), 2)} | {_fmt(float(np.mean(units)), 1)} | "
                     + " ".join(f"{v:.2f}" for v in profile) + " |")
    return lines + [""]


def _learned_nu_table(complete: list) -> list[str]:
    """The degrees of freedom learned by trials with a learned-nu Student-t prior (the trial's
    record, or its run directory's best checkpoint for a study run before it was recorded)."""
    from dvae_jax import sweep as sweep_lib

    rows = []
    for t in complete:
        nu = t.user_attrs.get("learned_nu")
        if nu is None and t.user_attrs.get("workdir") and Path(t.user_attrs["workdir"]).exists():
            nu = sweep_lib.learned_nu(t.user_attrs["workdir"])
        if nu:
            rows.append(f"| {t.number} | {t.user_attrs.get('seed', '?')} | {np.mean(nu):.2f} | {min(nu):.2f} | "
                        f"{max(nu):.2f} |")
    if not rows:
        return []
    return ["### Learned degrees of freedom", "",
            ("nu of the Student-t prior per latent dimension at the best checkpoint (nu = 2 + softplus(raw), "
            "learned with the other weights by Adam)."), "",
            "| trial | seed | mean nu | min | max |", "|---|---|---|---|---|", *rows, ""]


def replay_early_stopping(val_losses: Sequence[float], patience: int, warm_epochs: int) -> tuple[int, int]:
    """(last epoch trained, best epoch kept) had early stopping with ``patience`` been on: the fit
    loop's rule (dvae_jax.fit._end_epoch): epochs without a strictly lower validation loss are
    counted from ``warm_epochs`` (the KL annealing) on, and training stops when they reach
    ``patience``. Training before the stop does not depend on the patience, so replaying it on an
    unstopped run's curve is exact."""
    best, best_epoch, bad = math.inf, -1, 0
    for epoch, loss in enumerate(val_losses):
        improved = loss < best
        if improved:
            best, best_epoch = loss, epoch
        if epoch >= warm_epochs:
            bad = 0 if improved else bad + 1
            if bad >= patience:
                return epoch, best_epoch
    return len(val_losses) - 1, best_epoch


def _trial_train(spec: dict, trial: Any) -> Any:
    """The TrainConfig a trial ran with (rebuilt from the stored study file), or None."""
    from dvae_jax import sweep as sweep_lib

    try:
        return sweep_lib.trial_config(sweep_lib.spec_from_json(spec), dict(trial.params),
                                      int(trial.user_attrs.get("seed", 0))).train
    except Exception:  # noqa: BLE001 - a study file of another version
        return None


def _warm_epochs(spec: dict, trial: Any) -> int:
    """Epochs of KL warm-up and annealing of a trial (early stopping waits for them)."""
    from dvae_jax import schedules

    tc = _trial_train(spec, trial)
    return 0 if tc is None else math.ceil(schedules.kl_annealing_epochs(tc))


def _never_stops(spec: dict, trial: Any) -> bool:
    """Whether the study trained without early stopping (patience >= epochs): its curves can be replayed."""
    tc = _trial_train(spec, trial)
    return tc is not None and tc.early_stop_patience >= tc.epochs


PATIENCES = (2, 4, 8, 16)
CURVE_EPOCHS = (2, 4, 8, 12, 16, 24, 32, 48, 64, 100)


def _epochs_section(spec: dict, complete: list) -> list[str]:
    """Validation curves of runs that never stopped early, and early stopping replayed on them."""
    curves = {t.number: [t.intermediate_values[e] for e in sorted(t.intermediate_values)]
              for t in complete if t.intermediate_values and t.user_attrs.get("stopped") == "epochs"}
    if not curves or len(curves) < len(complete):
        return []
    n_epochs = min(len(c) for c in curves.values())
    if n_epochs < 4:  # too short a curve to say anything about epochs
        return []
    trials = [t for t in complete if t.number in curves]
    at = [e for e in CURVE_EPOCHS if e <= n_epochs] + ([n_epochs] if n_epochs not in CURVE_EPOCHS else [])
    lines = ["### Validation curve", "",
             (f"Validation -ELBO per frame after a number of epochs ({len(trials)} runs, mean and 95% t interval); "
             "the last column is the change over the last quarter of the run, in nats per frame per epoch."), "",
             "| " + " | ".join(f"epoch {e}" for e in at) + " | slope, last quarter |", "|" + "---|" * (len(at) + 1)]
    cells = []
    for e in at:
        m, lo, hi, _ = interval([curves[t.number][e - 1] for t in trials])
        cells.append(f"{_fmt(m, 2)} [{_fmt(lo, 2)}, {_fmt(hi, 2)}]")
    q = max(2, n_epochs // 4)
    slopes = [float(np.polyfit(np.arange(q), np.asarray(curves[t.number][n_epochs - q:n_epochs]), 1)[0]) for t in trials]
    m, lo, hi, _ = interval(slopes)
    lines += ["| " + " | ".join(cells) + f" | {_fmt(m, 3)} [{_fmt(lo, 3)}, {_fmt(hi, 3)}] |", ""]
    if not _never_stops(spec, trials[0]):
        return lines
    lines += ["### Early stopping replayed", "",
              ("Each run's curve replayed with the fit loop's early-stopping rule (patience counted after the KL "
              "annealing): the epoch it would stop at, the best validation -ELBO it would keep, what that costs "
              "against the best of the whole run (nats per frame, mean and 95% t interval over runs) and the "
              "share of the epochs it saves."), "",
              "| patience | runs stopped | stop epoch (mean) | kept best | cost vs whole run | epochs saved |",
              "|---|---|---|---|---|---|"]
    for p in PATIENCES:
        stops, kept, costs, saved = [], [], [], []
        for t in trials:
            c = curves[t.number][:n_epochs]
            stop, best_epoch = replay_early_stopping(c, p, _warm_epochs(spec, t))
            stops.append(stop)
            kept.append(c[best_epoch])
            costs.append(c[best_epoch] - min(c))
            saved.append(1 - (stop + 1) / n_epochs)
        m, lo, hi, _ = interval(costs)
        lines.append(f"| {p} | {sum(s < n_epochs - 1 for s in stops)} of {len(stops)} | {np.mean(stops):.1f} | "
                     f"{_fmt(float(np.mean(kept)), 3)} | {_fmt(m, 3)} [{_fmt(lo, 3)}, {_fmt(hi, 3)}] | "
                     f"{100 * np.mean(saved):.0f}% |")
    return lines + [""]


# ------------------------------------------------------------------------------------------------
# Run directories: test metrics (dvae-jax evaluate) and generation measures (dvae-jax generate)

EVAL_ROWS = ("model", "ceiling", "original")  # evaluate's rows; original: the unprocessed audio (DNSMOS, WER)
EVAL_METRICS = ("pesq_wb", "estoi", "stoi", "si_sdr_db", "lsd_db", "mcd_db", "dnsmos_ovrl", "wer")
GEN_MEASURES = ("dnsmos_ovrl", "dnsmos_sig", "mean_logmel_distance_db", "spectral_flux_db", "voiced_frame_ratio",
                "boundary_continuity", "wer", "resynth_wer")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _find(agg: dict, short: str) -> float:
    """The mean of measure ``short`` in an aggregate whose keys may be descriptive ("estoi (pystoi,
    ...)"): the first key whose first word is ``short``; a {"mean": ...} cell or a bare number."""
    for key, value in agg.items():
        if key.split(" ")[0] == short:
            value = value.get("mean") if isinstance(value, dict) else value
            return float(value) if isinstance(value, (int, float)) else math.nan
    return math.nan


def _model_of(workdir: Path) -> str:
    """The model name in a run directory's config.json ('?' without one)."""
    cfg = _read_json(workdir / "config.json") or {}
    return str(cfg.get("model", {}).get("model", "?"))


def _paired_differences(evals: list, names: list[str]) -> list[str]:
    """Each run against the first run of the same model listed before it: per-utterance paired
    differences of the model row (later minus earlier) over the utterances both scored, with a
    95% t interval."""
    def per_utt(res: dict) -> dict[str, dict[str, float]]:
        return {u["utt_id"]: {m: _find(u["metrics"].get("model", {}), m) for m in names}
                for u in res.get("utterances", [])}

    rows, first_of = [], {}
    for label, workdir, res in evals:
        kind = _model_of(workdir)
        if kind not in first_of:
            first_of[kind] = (label, res)
            continue
        base_label, base = first_of[kind]
        a, b = per_utt(base), per_utt(res)
        cells = []
        for m in names:
            d = [b[u][m] - a[u][m] for u in a.keys() & b.keys() if math.isfinite(a[u][m]) and math.isfinite(b[u][m])]
            mean, lo, hi, _ = interval(d) if d else (math.nan, math.nan, math.nan, None)
            cells.append(f"{_fmt(mean, 3)} [{_fmt(lo, 3)}, {_fmt(hi, 3)}] (n={len(d)})")
        rows.append(f"| {label} - {base_label} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [("Paired differences of the model row (per test utterance, later run minus the first run of the same "
            "model; mean and 95% t interval over the utterances both runs scored):"), "",
            "| runs | " + " | ".join(names) + " |", "|---|" + "---|" * len(names), *rows, ""]


def runs_section(runs: Sequence[tuple[str, str | Path]], heading: str = "Best settings against the defaults") -> list[str]:
    """Tables of labelled run directories: their evaluation (RUN/evaluation/results.json, model and
    ceiling rows) and their generation summaries (RUN/generate/{cold,primed}/summary.json)."""
    lines = [f"## {heading}", ""]
    evals, gens = [], []
    for label, workdir in runs:
        workdir = Path(workdir)
        res = _read_json(workdir / "evaluation" / "results.json")
        if res is None:
            raise errors.RunError(f"{workdir}: no evaluation/results.json: run `dvae-jax evaluate --workdir {workdir}` "
                                  "first (or drop this --run)")
        evals.append((label, workdir, res))
        for mode in ("cold", "primed"):
            summary = _read_json(workdir / "generate" / mode / "summary.json")
            if summary is not None:
                gens.append((label, mode, summary))
    names = [m for m in EVAL_METRICS if any(math.isfinite(_find(r.get(row, {}).get("aggregate", {}), m))
                                             for _, _, r in evals for row in EVAL_ROWS)]
    first = evals[0][2].get("settings", {})
    roads = {label: r.get("settings", {}).get("inversion_description", "?") for label, _, r in evals}
    road = (first.get("inversion_description", "?") if len(set(roads.values())) == 1
            else "it differs by run: " + "; ".join(f"{label}: {d}" for label, d in roads.items()))
    lines += [(f"Test split, {first.get('n_utterances', '?')} whole utterances per run (Whisper WER on "
               f"{first.get('asr_utterances', '?')} of them); back to audio: "
              f"{road}. The ceiling row puts the original features through the "
              "same inversion: the best the model's features could score; the original row is the unprocessed audio "
              "(non-intrusive measures only)."), "",
              "| run | row | " + " | ".join(names) + " | active units | run directory |",
              "|---|---|" + "---|" * (len(names) + 2)]
    for label, workdir, res in evals:
        for row in EVAL_ROWS:
            agg = res.get(row, {}).get("aggregate", {})
            if not any(math.isfinite(_find(agg, m)) for m in names):
                continue
            cells = [_fmt(_find(agg, m), 3) for m in names]
            units = res.get("posterior", {}).get("active_units", "n/a") if row == "model" else ""
            lines.append(f"| {label} | {row} | " + " | ".join(cells) + f" | {units} | `{workdir}` |")
    lines.append("")
    lines += _paired_differences(evals, names)
    if gens:
        shown = [m for m in GEN_MEASURES if any(math.isfinite(_find(g["aggregate"], m)) for _, _, g in gens)]
        lines += [("Generation (`dvae-jax generate`; Griffin-Lim back to audio). Primed: the model's state warmed on "
                  "real test speech, then free-running; its WER is Whisper's transcript of the whole clip (prime and "
                  "continuation) against the utterance's sentence, next to the resynthesised original's "
                  "(`resynth_wer`). Cold: no context; no sentence to score."), "",
                  "| run | mode | n | " + " | ".join(shown) + " |", "|---|---|---|" + "---|" * len(shown)]
        for label, mode, g in gens:
            cells = [_fmt(_find(g["aggregate"], m), 3) for m in shown]
            lines.append(f"| {label} | {mode} | {g.get('settings', {}).get('n', '?')} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += _generation_differences(gens, {label: w for label, w, _ in evals})
    return lines


def _generation_differences(gens: list, workdirs: dict) -> list[str]:
    """Each run's generation against the first run of the same model: primed clips paired by
    their prime utterance (t interval of the paired differences), cold clips compared as two
    samples (Welch interval)."""
    names = [m for m in GEN_MEASURES if not m.startswith("resynth_")]
    first: dict[tuple[str, str], tuple[str, dict]] = {}
    rows = []
    for label, mode, g in gens:
        key = (_model_of(Path(workdirs.get(label, ""))), mode)
        if key not in first:
            first[key] = (label, g)
            continue
        base_label, base = first[key]
        cells = []
        for m in names:
            if mode == "primed":
                a = {it.get("utterance"): _find(it["measures"], m) for it in base.get("items", [])}
                b = {it.get("utterance"): _find(it["measures"], m) for it in g.get("items", [])}
                d = [b[u] - a[u] for u in a.keys() & b.keys() if math.isfinite(a[u]) and math.isfinite(b[u])]
                mean, lo, hi, _ = interval(d) if d else (math.nan, math.nan, math.nan, None)
                n = len(d)
            else:
                va = [v for it in base.get("items", []) if math.isfinite(v := _find(it["measures"], m))]
                vb = [v for it in g.get("items", []) if math.isfinite(v := _find(it["measures"], m))]
                mean, lo, hi = difference(vb, va) or (math.nan, math.nan, math.nan)
                n = min(len(va), len(vb))
            cells.append("n/a" if not math.isfinite(mean) else f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}] (n={n})")
        rows.append(f"| {label} - {base_label} | {mode} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [("Generation differences (later run minus the first run of the same model; primed: paired by prime "
            "utterance, t interval; cold: Welch interval of two samples):"), "",
            "| runs | mode | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names), *rows, ""]


# ------------------------------------------------------------------------------------------------
# Figures


def _plots(study: Any, params: list[str], out_dir: Path, stem: str) -> list[tuple[str, str]]:
    """Optuna's matplotlib figures that the study supports, saved small; (caption, file name)."""
    import matplotlib

    matplotlib.use("Agg")
    import warnings

    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    varying = [p for p in params if len({str(t.params.get(p)) for t in complete}) > 1]
    wanted = []
    if len(complete) >= 2 and varying:
        wanted.append(("parameter importances (fANOVA)", "importance",
                       lambda: ovm.plot_param_importances(study, params=varying)))
        wanted.append(("objective against each parameter", "slice", lambda: ovm.plot_slice(study, params=varying)))
    if len(complete) >= 3 and len(varying) >= 2:
        wanted.append(("objective over pairs of parameters", "contour",
                       lambda: ovm.plot_contour(study, params=varying[:3])))
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        wanted.append(("validation -ELBO per epoch of every trial (pruned ones end early)", "epochs",
                       lambda: ovm.plot_intermediate_values(study)))
    out = []
    for caption, kind, draw in wanted:
        try:
            ax = draw()
        except Exception as e:  # noqa: BLE001 - a figure Optuna cannot draw is skipped, said in the report
            out.append((f"{caption}: not drawn ({type(e).__name__}: {str(e)[:80]})", ""))
            continue
        fig = (ax.flat[0] if isinstance(ax, np.ndarray) else ax).get_figure()
        # a slice panel per parameter, a contour grid of pairs: wide enough to read the ticks
        fig.set_size_inches({"slice": (max(7, 2.8 * len(varying)), 3.5), "contour": (8, 7)}.get(kind, (7, 4)))
        name = f"{stem}_{kind}.png"
        fig.savefig(out_dir / name, dpi=72, bbox_inches="tight")
        plt.close(fig)
        out.append((caption, name))
    return out


# ------------------------------------------------------------------------------------------------
# The report


def study_section(study: Any, spec: dict, out_dir: Path) -> list[str]:
    """The markdown section of one study (figures written into ``out_dir``)."""
    import optuna

    ts = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == ts.COMPLETE]
    objectives = spec.get("objectives") or [{"metric": "val_loss", "direction": "minimize"}]
    objective = objectives[0]["metric"]
    minimize = objectives[0].get("direction", "minimize") == "minimize"
    params = [p["name"] for p in spec.get("space", [])] or sorted({k for t in trials for k in t.params})
    factors = [p for p in params if p != "train.seed"]
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in ts}
    timed = [t for t in trials if t.datetime_complete and t.datetime_start]
    hours = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in timed) / 3600
    wall = ((max(t.datetime_complete for t in timed) - min(t.datetime_start for t in timed)).total_seconds() / 3600
            if timed else 0.0)
    lines = [f"## {spec.get('question') or study.study_name}: study `{study.study_name}`", "",
             spec.get("description", ""), "",
             f"Base config `{spec.get('base_config', '?')}`, fixed overrides `{json.dumps(spec.get('overrides', {}))}`; "
             f"sampler {spec.get('sampler', {}).get('name', 'tpe')}, pruner {spec.get('pruner', {}).get('name', 'median')}"
             f", population {spec.get('population', 1)}. Trials: "
             + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + f"; {hours:.2f} trial-hours in {wall:.2f} h of wall "
             "time (parallel workers and population members overlap). Objective: "
             + ", ".join(f"{o['metric']} ({o.get('direction', 'minimize')})" for o in objectives)
             + " (val_loss: the best validation -ELBO per frame of the run). Means over complete trials; "
             "pruned trials are counted above, not averaged.", ""]
    if not complete:
        return lines + ["No complete trial yet.", ""]
    for name in factors:
        groups = _levels(complete, name)
        if not groups:
            continue
        lines += [f"### {name}", "", *_table_head(name, objective)]
        lines += [_row(label, g, objective) for label, g in groups.items()]
        lines += ["", _conclusion(name, groups, minimize), ""]
    lines += _settings_table(complete, factors, objective)
    lines += _collapse_table(complete, factors)
    lines += _learned_nu_table(complete)
    lines += _epochs_section(spec, complete)
    lines += _best_table(study, complete, minimize)
    for caption, name in _plots(study, params, out_dir, study.study_name):
        lines += [f"![{caption}]({name})" if name else f"*{caption}*", ""]
    return lines


def _settings_table(complete: list, factors: list[str], objective: str) -> list[str]:
    """Every setting (all factors but the seed) with its mean and interval over seeds."""
    groups: dict[str, list] = {}
    for t in complete:
        key = ", ".join(f"{k}={_short(t.params[k])}" for k in factors if k in t.params) or "(base)"
        groups.setdefault(key, []).append(t)
    if len(groups) == len(complete) and len(complete) > 1:
        return ["Every setting ran once (no repeated seeds): see the factor tables.", ""]
    return ["### Settings over seeds", "", *_table_head("setting", objective),
            *(_row(k, g, objective) for k, g in sorted(groups.items())), ""]


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _best_table(study: Any, complete: list, minimize: bool) -> list[str]:
    try:
        best = study.best_trials
    except (ValueError, RuntimeError):
        best = []
    if len(best) <= 1:
        best = sorted(complete, key=lambda t: t.values[0], reverse=not minimize)[:5]
    lines = ["### Best trials", "", "| trial | values | parameters | seed | best epoch / epochs | stopped | run |",
             "|---|---|---|---|---|---|---|"]
    for t in best[:5]:
        u = t.user_attrs
        lines.append(f"| {t.number} | {', '.join(_fmt(v) for v in t.values)} | "
                     f"{', '.join(f'{k}={_short(v)}' for k, v in t.params.items())} | {u.get('seed', '?')} | "
                     f"{int(u.get('best_epoch', -1))} / {int(u.get('epochs', 0))} | {u.get('stopped', '')} | "
                     f"`{u.get('workdir', '')}` |")
    return lines + [""]


def write_report(study_dirs: Sequence[str | Path], out: str | Path = DEFAULT_OUT, storage: str | None = None,
                 title: str = "Hyper-parameter studies", summary: str | Path | None = None,
                 runs: Sequence[tuple[str, str | Path]] = ()) -> Path:
    """Writes the report of the given sweeps and its figures; returns its path.

    ``summary``: a markdown file written by a person from these numbers (the answers), put after
    the header; ``runs``: (label, run directory) pairs whose evaluation and generation results
    get a section of their own (best settings against the defaults).
    """
    out = Path(out)
    intro = ""
    if summary is not None:
        try:
            intro = Path(summary).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise errors.RunError(f"summary file {summary} cannot be read ({e.strerror or e})") from None
    studies = [load(d, storage) for d in study_dirs]  # every input checked before anything is written
    run_lines = (runs_section(runs) if studies else runs_section(runs, "Runs")) if runs else []
    out.parent.mkdir(parents=True, exist_ok=True)
    how = ("from the studies below. Intervals: 95% Student t over the trials of a group (and a percentile "
           "bootstrap from 3 trials); differences: Welch's t interval between the best level and each other."
           if studies else "from the run directories below.")
    lines = [f"# {title}", "", f"Generated by `dvae-jax report` {how}", ""]
    if intro:
        lines += [intro, ""]
    lines += run_lines
    for study, spec in studies:
        lines += study_section(study, spec, out.parent)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out

