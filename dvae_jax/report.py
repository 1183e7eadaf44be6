"""The run report (report.md in the run directory): training, reconstructions, and the sections
that `evaluate` and `generate` add. Re-rendered from the artefacts each time, so commands can run
in any order and the report always shows what the run directory holds."""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import soundfile as sf

from dvae_jax import config as config_lib
from dvae_jax import fit as fit_lib
from dvae_jax import models, plots
from dvae_jax.audio import inversion, spectral
from dvae_jax.audio import metrics as metrics_lib

RECON_DIR = "reconstructions"
# Sections other commands write as markdown files in the run directory, in report order.
EXTRA_SECTIONS = ("evaluation/results.md", "generation/summary.md")


def decoded_features(cfg: config_lib.ModelConfig, x_out: np.ndarray) -> np.ndarray:
    """The decoder's point estimate in model space: the expected power (IS) or the mean."""
    if cfg.likelihood == "itakura_saito":
        return np.exp(x_out)
    return x_out[..., : cfg.x_dim]


def reconstruct(cfg: config_lib.Config, variables: Any, dataset, split: str, index: int, seed: int = 0,
                normalizer=None):
    """(original raw features, reconstructed raw features) of one utterance, posterior z sampled;
    ``normalizer``: the run's (run_dir.Normalizer), else the dataset's own."""
    norm = normalizer if normalizer is not None else dataset.normalizer
    data = dataset.split(split)
    raw = np.asarray(data.utterance(index), np.float32)
    x = norm.normalize(raw)[None]
    out, _ = jax.jit(functools.partial(models.forward, cfg.model))(variables, jnp.asarray(x), key=jax.random.PRNGKey(seed))
    rec = decoded_features(cfg.model, np.asarray(out.x_out[0]))
    return raw, inversion.to_raw(rec, cfg.features, norm.denormalize)


def to_wave(cfg: config_lib.Config, feats: np.ndarray, wave_ref: np.ndarray | None) -> np.ndarray:
    """Raw features back to audio as the review does for STFT power (original phase) or by
    Griffin-Lim (Mel), through inversion.decoded_to_wave like every command."""
    if cfg.features.kind == "stft" and wave_ref is not None:
        phase = spectral.stft(wave_ref, cfg.features).T
        return inversion.decoded_to_wave(feats, cfg.features, phase=phase, length=len(wave_ref), method="phase")
    return inversion.decoded_to_wave(feats, cfg.features, length=None if wave_ref is None else len(wave_ref),
                                     method="griffin_lim_jax", n_iter=64)


def write_reconstructions(cfg: config_lib.Config, variables: Any, dataset, workdir: str | Path, n: int = 2,
                          split: str = "val", normalizer=None) -> list[dict]:
    """Figures and wav files of the original, the original through the inversion path (ceiling)
    and the model's reconstruction, for the first ``n`` utterances of ``split``."""
    out_dir = Path(workdir) / RECON_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    sr, kind = cfg.features.sample_rate, cfg.features.kind
    show = ((lambda f: np.log(np.maximum(f, 1e-10))) if kind == "stft" else
            functools.partial(plots.feature_image, kind=kind))
    what = {"stft": "log power", "mel": "log-Mel"}.get(kind) or (
        f"WORLD frames z-scored per dim; {plots.world_layout(cfg.features)}")
    items = []
    for i in range(min(n, len(dataset.split(split)))):
        raw, rec = reconstruct(cfg, variables, dataset, split, i, normalizer=normalizer)
        wave = dataset.load_wave(split, i)
        uid = dataset.split(split).utt_ids[i]
        ceiling = to_wave(cfg, raw, wave)
        recon = to_wave(cfg, rec, wave)
        files = {}
        for name, w in (("original", wave), ("inverted_original", ceiling), ("reconstruction", recon)):
            files[name] = f"{RECON_DIR}/{uid}_{name}.wav"
            sf.write(Path(workdir) / files[name], np.clip(w, -1, 1), sr, subtype="PCM_16")
        fig = plots.spectrograms(
            [(f"{uid}: original ({what})", show(raw)),
             ("reconstruction (decoder mean, z from the posterior)", show(rec))],
            out_dir / f"{uid}_spectrogram.png", ylabel=plots.feature_ylabel(kind),
        )
        items.append(dict(utt_id=uid, figure=f"{RECON_DIR}/{fig.name}", **files))
    with open(out_dir / "index.json", "w") as f:
        json.dump(items, f, indent=2)
    return items


def _features_line(f: config_lib.FeatureConfig) -> str:
    if f.kind == "world":
        return (f"- features: world ({f.n_bins} dims: log-F0, voicing, {f.world_env_dims}-dim coded envelope, "
                f"coded aperiodicity; F0 by {f.world_f0_method}, {f.sample_rate} Hz, hop {f.hop_length})")
    return (f"- features: {f.kind} ({f.n_bins} bins, {f.sample_rate} Hz, n_fft {f.n_fft}, hop {f.hop_length}, "
            f"{f.window} window)")


_RECON_ROAD = {  # how write_reconstructions' to_wave takes each kind back to audio
    "stft": "STFT power: original phase + inverse STFT (the review's protocol).",
    "mel": (f"Log-Mel: Mel inverse ({inversion.DEFAULT_MEL_INVERSE}) + JAX fast Griffin-Lim (64 "
            "iterations)."),
    "world": "WORLD frames: WORLD synthesis (pyworld; voicing > 0.5); figures z-scored per dimension.",
}


def write_report(workdir: str | Path, title: str | None = None) -> Path:
    """Renders report.md from what the run directory holds."""
    workdir = Path(workdir)
    from dvae_jax import checkpoint

    cfg = checkpoint.load_config(workdir)
    history = fit_lib.read_metrics(workdir)
    epochs = [r for r in history if r.get("kind") == "epoch"]
    lines = [f"# {title or 'Run report'}: `{workdir.name}`", ""]
    m = cfg.model
    lines += [
        (f"- model: **{m.model.upper()}**, prior {m.prior}{' (nu learned)' if m.learn_nu else ''}, "
        f"likelihood {m.likelihood}, z_dim {m.z_dim}"
        f"{f', RNN {m.dim_rnn} x {m.num_rnn}' if m.model in ('vrnn', 'srnn') else ''}"
        f"{f', v_dim {m.v_dim}' if m.model == 'dsae' else ''}, "
        f"{models.count_params(models.init(m, jax.random.PRNGKey(0)))} parameters"),
        _features_line(cfg.features),
        (f"- data: corpus `{cfg.data.corpus}`, {cfg.data.batching} of {cfg.data.seq_len} frames, "
        f"split by {cfg.data.split_by}"),
        (f"- training: {cfg.train.optimizer} lr {cfg.train.lr} ({cfg.train.lr_schedule}), batch "
        f"{cfg.train.batch_size}, KL schedule {cfg.train.kl_schedule}, seed {cfg.train.seed}"),
        "- resolved configuration: [config.json](config.json)",
        "",
        "## Training",
        "",
    ]
    if epochs:
        best = min(epochs, key=lambda r: r["val_loss"])
        last = epochs[-1]
        lines += [
            "| | epoch | step | validation -ELBO / frame | recon | KL |",
            "|---|---|---|---|---|---|",
            f"| best | {best['epoch']} | {best['step']} | {best['val_loss']:.4f} | {best['val_recon']:.4f} | {best['val_kl']:.4f} |",
            f"| last | {last['epoch']} | {last['step']} | {last['val_loss']:.4f} | {last['val_recon']:.4f} | {last['val_kl']:.4f} |",
            "",
            (f"Wall time of training: {last.get('seconds', float('nan')):.0f} s; skipped non-finite steps: "
            f"{last.get('skipped', 0)}. Full log: [metrics.jsonl](metrics.jsonl)."),
            "",
        ]
        if last.get("val_kl_per_dim"):
            kl = np.asarray(last["val_kl_per_dim"])
            lines += [f"Active latent dimensions (validation KL > 0.01 nats/frame): {int((kl > 0.01).sum())} of {len(kl)}.", ""]
        for png in ("loss.png", "kl_per_dim.png"):
            if (workdir / png).exists():
                lines += [f"![{png}]({png})", ""]
    else:
        lines += ["No completed epoch yet.", ""]
    index = workdir / RECON_DIR / "index.json"
    if index.exists():
        lines += ["## Reconstructions (validation speakers)", "",
                  "Original, the original features through the same inversion path (the ceiling), and the model's "
                  "reconstruction. " + _RECON_ROAD[cfg.features.kind], ""]
        for it in json.loads(index.read_text()):
            lines += [f"### {it['utt_id']}", "", f"![spectrogram]({it['figure']})", "",
                      (f"[original]({it['original']}) · [original, inverted]({it['inverted_original']}) · "
                      f"[reconstruction]({it['reconstruction']})"), ""]
    for rel in EXTRA_SECTIONS:
        p = workdir / rel
        if p.exists():
            text = p.read_text()
            base = str(Path(rel).parent)
            # links inside a section file are relative to its folder
            lines += [_rebase_links(text, base), ""]
    path = workdir / "report.md"
    path.write_text("\n".join(lines))
    return path


# --------------------------------------------------------------------------------------------
# The evaluation section (evaluate.py computes, this renders)

EVAL_ROWS = ("model", "ceiling", "original")  # 'original': the unprocessed audio (non-intrusive measures only)
EVAL_ROW_TITLES = {
    "model": "model (z from the posterior, decoder mean)",
    "ceiling": "ceiling (original features, same inversion)",
    "original": "original audio",
}


def _cell(stats: dict | None) -> str:
    if not stats:
        return "-"
    mean = stats.get("mean")
    if mean is None or not math.isfinite(mean):
        return f"NaN ({stats.get('n_nan', 0)} of {stats.get('n', 0) + stats.get('n_nan', 0)})"
    text = f"{mean:.3f}"
    lo, hi = stats.get("ci95_low"), stats.get("ci95_high")
    if lo is not None and math.isfinite(lo):
        text += f" [{lo:.2f}, {hi:.2f}]"
    if stats.get("n_nan"):
        text += f" ({stats['n_nan']} NaN)"
    return text


def results_markdown(results: dict) -> str:
    """The evaluation section (RUN/evaluation/results.md) of ``evaluate.evaluate_run``'s results."""
    s = results["settings"]
    post = results["posterior"]
    rows = [r for r in EVAL_ROWS if r in results]
    names: list[str] = []
    for r in rows:
        names.extend(k for k in results[r]["aggregate"] if k not in names)
    lines = [
        f"## Evaluation: {s['n_utterances']} of {s['n_split']} '{s['split']}' utterances",
        "",
        (f"- protocol: whole utterances (trimmed, peak-normalised), z {s['z']}, decoder {s['decoder']}, "
        f"de-normalised; back to audio: {s['inversion_description']}; metrics on both signals scaled to 0.9 peak"),
        (f"- checkpoint: {s['checkpoint']['kind']} (epoch {s['checkpoint']['epoch']}, step {s['checkpoint']['step']}); "
        f"seed {s['seed']}; {s['seconds']['total']:.0f} s"),
        "- cells: mean [95% bootstrap interval of the mean] over utterances; NaN values are excluded and counted",
        ("- the ceiling row is the original features through the same path back to audio: the model's error is "
        "the gap between the two rows"),
    ]
    for measure, msg in s["quality"].items():
        if msg:
            lines.append(f"- {measure}: {msg}")
        elif measure == "asr":
            lines.append(f"- asr: Whisper WER on the first {s['asr_utterances']} utterance(s) only (slow on CPU; "
                         "`--asr-n` sets it)")
    lines += ["", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r in rows:
        agg = results[r]["aggregate"]
        lines.append(f"| {EVAL_ROW_TITLES[r]} | " + " | ".join(_cell(agg.get(k)) for k in names) + " |")
    flagged = []
    for utt in results["utterances"]:
        for row, reasons in utt.get("reasons", {}).items():
            groups: dict[str, list[str]] = {}
            for metric, reason in reasons.items():
                groups.setdefault(reason, []).append(metric.split(" ")[0])
            for reason, metrics in groups.items():
                flagged.append(f"- `{utt['utt_id']}`, {row}: {', '.join(metrics)}: NaN because {reason}")
        trimmed = {row: vals.get(metrics_lib.TRIMMED) for row, vals in utt["metrics"].items()}
        for row, t in trimmed.items():
            if t:
                flagged.append(f"- `{utt['utt_id']}`, {row}: length mismatch, {int(t)} samples trimmed")
    if flagged:
        lines += ["", "NaN values and their reasons:", ""] + flagged
    kl = np.asarray(post["kl_per_dim"], float)
    lines += [
        "",
        "### Posterior collapse",
        "",
        f"Active latent units: **{post['active_units']} of {len(kl)}** (mean KL over the {post['frames']} evaluated "
        f"frames above {post['threshold']} nats per frame); total KL {post['kl_total']:.3f} nats per frame."
        + (f" {post['excluded_utterances']} utterance(s) with a non-finite KL excluded." if post["excluded_utterances"] else ""),
        "",
        "KL per dimension (nats/frame): " + ", ".join(f"{i}: {v:.3g}" for i, v in enumerate(kl)),
        "",
        "![KL per latent dimension](kl_per_dim.png)",
        "",
        "Full results, per utterance: [results.json](results.json).",
        "",
    ]
    return "\n".join(lines)


def write_evaluation(out: str | Path, results: dict) -> Path:
    """``out``/results.md and kl_per_dim.png of an evaluation; returns results.md's path."""
    out = Path(out)
    kl = np.asarray(results["posterior"]["kl_per_dim"], float)
    if kl.size:
        plots.kl_per_dim(np.nan_to_num(kl, nan=0.0)[None], out / "kl_per_dim.png",
                         threshold=results["posterior"]["threshold"])
    path = out / "results.md"
    path.write_text(results_markdown(results))
    return path


# --------------------------------------------------------------------------------------------
# The generation section (generate_command.py computes, this renders)

_MD_MEASURES = (
    # (key in measures, column title, format)
    ("wer", "ASR WER", "{:.2f}"),
    ("dnsmos_ovrl", "DNSMOS OVRL", "{:.2f}"),
    ("dnsmos_sig", "SIG", "{:.2f}"),
    ("dnsmos_bak", "BAK", "{:.2f}"),
    ("mean_logmel_distance_db", "log-Mel dist. to real (dB)", "{:.1f}"),
    ("spectral_flux_db", "spectral flux (dB)", "{:.2f}"),
    ("voiced_frame_ratio", "voiced ratio", "{:.2f}"),
    ("boundary_continuity", "boundary jump / median", "{:.2f}"),
)


def measure(measures: dict, key: str):
    """A measure by its short name; DNSMOS keys carry a description after the name
    ('dnsmos_ovrl (speechmos DNSMOS P.835, 16 kHz)')."""
    if key in measures:
        return measures[key]
    return next((v for k, v in measures.items() if k.split(" ", 1)[0] == key), None)


def _fmt(value, fmt: str) -> str:
    return fmt.format(value) if isinstance(value, (int, float)) and math.isfinite(value) else "–"


def _inversion_of(summaries: list[dict]) -> str:
    roads = sorted({s.get("settings", {}).get("inversion") or "" for s in summaries} - {""})
    return "; ".join(roads) if roads else "the run's inversion"


def generation_markdown(summaries: list[dict], base: str | os.PathLike, real_measures: dict | None = None) -> str:
    """The report section for ``generate_run`` summaries (cold and/or primed); links are relative
    to ``base`` (the folder summary.md is written to)."""
    base = Path(base)
    lines = ["## Generation", ""]
    lines += [("Cold start: zero state, z from the prior, each generated frame fed back. Primed: the model runs "
              "over the first part of a held-out test utterance (z from the posterior), then continues freely; "
              "the dashed line in the figure marks the end of the prime. Features go back to audio by "
              f"{_inversion_of(summaries)}. Reference-free measures (audio/stats.py): mean log-Mel "
              "distance to real test speech (lower is closer), spectral flux (real speech is bursty, "
              "a drone is near 0), voiced-frame ratio (read speech ~0.3-0.6), boundary jump (the "
              "spectral change across the prime's end over the median change; ~1 is seamless). ASR WER: "
              "Whisper's transcript of the whole primed clip against the utterance's sentence, next to the "
              "WER of the original resynthesised by the same road (the ceiling); most words of the sentence "
              "lie in the continuation, so WER near 1 is expected from a short run."), ""]
    rows = []
    for s in summaries:
        st = s["settings"]
        for it in s["items"]:
            label = f"{s['mode']} `{it['name']}`" + (f" (prime {st['prime_seconds']:g} s of {it['utterance']})"
                                                    if s["mode"] == "primed" else "")
            rows.append((label, it["measures"]))
            if "resynth" in it:
                rows.append((f"original {it['utterance']}, resynthesised (ceiling)", it["resynth"]))
    if real_measures:
        rows.append(("real test speech (originals)", real_measures))
    keys = [k for k in _MD_MEASURES if any(isinstance(measure(m, k[0]), float) for _, m in rows)]
    lines += ["| clip | " + " | ".join(t for _, t, _ in keys) + " |", "|---|" + "---|" * len(keys)]
    for label, m in rows:
        lines.append(f"| {label} | " + " | ".join(_fmt(measure(m, k), f) for k, _, f in keys) + " |")
    lines.append("")
    for s in summaries:
        rel = os.path.relpath(s["out"], base)
        st = s["settings"]
        lines += [f"### {s['mode'].capitalize()} ({s['model'].upper()}, temperature {st['temperature']:g}, "
                  f"{st['decode']} decoding, {st['seconds']:g} s generated"
                  + (f" after a {st['prime_seconds']:g} s prime" if s["mode"] == "primed" else "") + ")", ""]
        for it in s["items"]:
            if "png" in it:
                lines += [f"![{it['name']}]({rel}/{it['png']})", ""]
            links = [f"[generated]({rel}/{it['wav']})"]
            if "original_wav" in it:
                links += [f"[original]({rel}/{it['original_wav']})", f"[original resynthesised]({rel}/{it['resynth_wav']})"]
            lines += [" · ".join(links), ""]
            if it["measures"].get("asr_transcript") is not None:
                lines += [f"Sentence: \"{it.get('transcript', '')}\"; ASR of the generated clip: "
                          f"\"{it['measures']['asr_transcript']}\""
                          + (f"; of the resynthesis: \"{it['resynth'].get('asr_transcript', '')}\""
                             if "resynth" in it else ""), ""]
        t = s["timing"]
        lines += [(f"Timing: generation {t['generate_s']:.1f} s (with compilation), inversion "
                   f"{t['invert_s']:.1f} s. Full measures: [summary.json]({rel}/summary.json)."), ""]
    notes = sorted({n for s in summaries for n in s["notes"]})
    if notes:
        lines += ["Notes: " + "; ".join(notes), ""]
    return "\n".join(lines)


def _rebase_links(text: str, base: str) -> str:
    import re

    return re.sub(r"\]\((?!http)([^)#]+)\)", lambda mt: f"]({base}/{mt.group(1)})", text)
