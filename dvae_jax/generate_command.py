"""The ``dvae-jax generate`` sub-command: cold or primed generation from a run, to wav, PNG and JSON."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from dvae_jax import config as config_lib


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``generate`` to an argparse sub-parser collection; returns its parser."""
    p = subparsers.add_parser(
        "generate",
        help="generate speech from a trained run (cold start or primed on test utterances)",
        description=(
            "Generates feature sequences with a run's model, inverts them to audio with Griffin-Lim "
            "and writes wav files, spectrogram PNGs (prime marked) and summary.json with "
            "reference-free measures (audio/stats.py; DNSMOS and ASR WER when installed)."
        ),
    )
    p.add_argument("--workdir", required=True, help="run directory (dvae-jax train / import-review)")
    p.add_argument("--mode", choices=("cold", "primed"), default="cold")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds generated after the prime")
    p.add_argument("--prime-seconds", type=float, default=1.0, help="primed mode: seconds of real speech")
    p.add_argument("--utterance", default=None, help="primed mode: utterance ID to prime with (default: test split)")
    p.add_argument("--n", type=int, default=1, help="sequences generated")
    p.add_argument("--temperature", type=float, default=1.0, help="prior scale multiplier")
    p.add_argument("--decode", choices=("mean", "sample"), default="mean")
    p.add_argument("--latent", choices=("posterior", "prior"), default="posterior", help="z during priming")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default: <workdir>/generate/<mode>)")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    p.add_argument("--griffin-lim-iters", type=int, default=32)
    p.add_argument("--no-quality", action="store_true", help="skip DNSMOS and ASR even when installed")
    p.add_argument("--no-figures", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Runs ``generate``; returns the exit status (2 on a user-facing error)."""
    from dvae_jax import checkpoint
    from dvae_jax.data import corpus as corpus_lib

    try:
        summary = generate_run(
            args.workdir, mode=args.mode, seconds=args.seconds, prime_seconds=args.prime_seconds,
            utterance=args.utterance, n=args.n, temperature=args.temperature, decode=args.decode,
            latent=args.latent, seed=args.seed, out=args.out, which=args.checkpoint,
            n_iter=args.griffin_lim_iters, quality=not args.no_quality, figures=not args.no_figures,
        )
    except (checkpoint.CheckpointError, config_lib.ConfigError, corpus_lib.DataError, ValueError) as e:
        print(f"dvae-jax generate: error: {e}", file=sys.stderr)
        return 2
    for note in summary["notes"]:
        print(note)
    agg = summary["aggregate"]
    print(f"wrote {len(summary['items'])} sequence(s) to {summary['out']}: "
          + ", ".join(f"{k} {v:.3g}" for k, v in agg.items() if isinstance(v, float) and math.isfinite(v)))
    return 0


# ---------------------------------------------------------------------------------------------


def _pick_primes(ds, utterance: str | None, n: int, p_frames: int, want: int = 0) -> list[tuple[str, int]]:
    """(split, index) of the utterances to prime with: ``utterance`` (searched in test, val, train)
    repeated n times, or the first n test utterances with at least ``want`` frames (prime +
    continuation, so the original covers what is generated), falling back to those with more
    than ``p_frames`` frames."""
    if utterance is not None:
        for name in ("test", "val", "train"):
            split = ds.split(name)
            if utterance in split.utt_ids:
                i = split.utt_ids.index(utterance)
                if split.lengths[i] < p_frames:
                    raise ValueError(f"utterance '{utterance}' has {split.lengths[i]} frames, fewer than the "
                                     f"{p_frames} prime frames: lower --prime-seconds")
                return [(name, i)] * n
        raise ValueError(f"utterance '{utterance}' is in no split of the prepared corpus")
    test = ds.split("test")
    long = [i for i in range(len(test)) if test.lengths[i] >= max(want, p_frames + 1)]
    if len(long) < n:
        long = [i for i in range(len(test)) if test.lengths[i] > p_frames]
    if not long:
        raise ValueError(f"no test utterance is longer than {p_frames} prime frames: lower --prime-seconds")
    return [("test", long[k % len(long)]) for k in range(n)]


def _peak(wave: np.ndarray, peak: float = 0.9) -> np.ndarray:
    m = float(np.max(np.abs(wave))) if wave.size else 0.0
    return (wave * (peak / m)).astype(np.float32) if m > 0 else wave.astype(np.float32)


def _figure(path: Path, features: np.ndarray, feat_cfg, boundary: int | None, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    img = features.T
    if feat_cfg.kind == "stft":
        img = 10 * np.log10(np.maximum(img, 1e-10))
    fig, ax = plt.subplots(figsize=(max(4.0, features.shape[0] / 60), 3))
    hop_s = feat_cfg.hop_length / feat_cfg.sample_rate
    ax.imshow(img, origin="lower", aspect="auto", cmap="magma",
              extent=(0, features.shape[0] * hop_s, 0, img.shape[0]))
    if boundary is not None:
        ax.axvline(boundary * hop_s, color="cyan", linewidth=1.5, linestyle="--", label="end of prime")
        ax.legend(loc="upper right", fontsize=7)
    ax.set_xlabel("seconds")
    ax.set_ylabel("Mel band" if feat_cfg.kind == "mel" else "STFT bin")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _measures(wave, feat_cfg, real_logmel, boundary, quality_ok, transcript, notes) -> dict[str, Any]:
    from dvae_jax.audio import quality, stats

    sr = feat_cfg.sample_rate
    lm = stats.logmel(wave, feat_cfg)
    m: dict[str, Any] = {
        "mean_logmel_distance_db": stats.mean_logmel_distance(lm, real_logmel),
        "spectral_flux_db": stats.spectral_flux(lm),
        "voiced_frame_ratio": stats.voiced_frame_ratio(wave, sr),
    }
    if boundary is not None and 1 <= boundary < lm.shape[0] - 1:
        m["boundary_continuity"] = stats.boundary_continuity(lm, boundary)
        m["spectral_flux_continuation_db"] = stats.spectral_flux(lm[boundary:])
    if quality_ok.get("dnsmos"):
        try:
            m.update(quality.dnsmos(wave, sr))
        except Exception as e:  # noqa: BLE001 - one bad clip must not stop the run
            notes.append(f"dnsmos failed: {e}")
    if quality_ok.get("asr") and transcript:
        try:
            hyp = quality.transcribe(wave, sr)
            m["asr_transcript"] = hyp
            m["wer"] = quality.word_error_rate(transcript, hyp)
        except Exception as e:  # noqa: BLE001
            notes.append(f"asr failed: {e}")
    return m


def generate_run(
    workdir: str | os.PathLike,
    mode: str = "cold",
    seconds: float = 3.0,
    prime_seconds: float = 1.0,
    utterance: str | None = None,
    n: int = 1,
    temperature: float = 1.0,
    decode: str = "mean",
    latent: str = "posterior",
    seed: int = 0,
    out: str | os.PathLike | None = None,
    which: str = "best",
    n_iter: int = 32,
    quality: bool = True,
    figures: bool = True,
    n_real: int = 10,
    dataset=None,
) -> dict:
    """Generates, inverts, writes ``<out>/{mode}_{k}.wav`` (+ ``.png``), the originals for primed
    mode, and ``<out>/summary.json``; returns the summary.

    Measures (per sequence, and their means under ``aggregate``): mean log-Mel distance (dB) to
    ``n_real`` real test utterances, spectral flux (dB), voiced-frame ratio, and for primed mode
    the boundary continuity at the prime's end; DNSMOS when the [quality] extra is present, and
    for primed mode the ASR word error rate of the generated audio and of the Griffin-Lim
    resynthesis of the original against the utterance's transcript when [asr] is present.
    ``dataset``: the run's prepared dataset when the caller already has it (else prepared here).
    """
    import jax
    import soundfile as sf

    from dvae_jax import checkpoint, generate
    from dvae_jax.audio import inversion, stats
    from dvae_jax.audio import quality as quality_lib
    from dvae_jax.data import prepare

    if mode not in ("cold", "primed"):
        raise ValueError(f"mode must be 'cold' or 'primed', got {mode!r}")
    if n < 1 or seconds < 0 or (mode == "primed" and prime_seconds <= 0):
        raise ValueError("--n must be >= 1, --seconds >= 0 and --prime-seconds > 0")
    cfg, variables, meta = checkpoint.load_run(workdir, which)
    feat = cfg.features
    if cfg.model.x_dim != feat.n_bins:
        raise ValueError(f"model.x_dim {cfg.model.x_dim} != {feat.n_bins} feature bins of features.kind={feat.kind}")
    ds = dataset if dataset is not None else prepare.prepare_dataset(cfg.data, feat, progress=False)
    out_dir = Path(out) if out is not None else Path(workdir) / "generate" / mode
    out_dir.mkdir(parents=True, exist_ok=True)
    frames_per_s = feat.sample_rate / feat.hop_length
    n_frames = round(seconds * frames_per_s)
    sr = feat.sample_rate
    notes: list[str] = []
    key = jax.random.PRNGKey(seed)

    quality_ok = {}
    for measure in ("dnsmos", "asr"):
        reason = quality_lib.skip_reason(measure) if quality else "skipped: --no-quality"
        quality_ok[measure] = reason is None
        if reason is not None:
            notes.append(f"{measure}: {reason}")

    test = ds.split("test")
    real_idx = list(range(min(n_real, len(test))))
    real_logmel = [stats.logmel(ds.load_wave("test", i), feat) for i in real_idx]

    t0 = time.perf_counter()
    primes: list[tuple[str, int]] = []
    p_frames = 0
    if mode == "cold":
        feats = generate.cold_start(cfg.model, variables, key, n_frames, n, temperature, decode)
    else:
        p_frames = max(1, round(prime_seconds * frames_per_s))
        primes = _pick_primes(ds, utterance, n, p_frames, p_frames + n_frames)
        batch = np.stack([ds.normalize(ds.split(s).utterance(i)[:p_frames]) for s, i in primes])
        feats = generate.primed(cfg.model, variables, key, batch, n_frames, latent, temperature, decode)
    feats = np.asarray(jax.block_until_ready(feats))
    gen_s = time.perf_counter() - t0
    if not np.all(np.isfinite(feats)):
        notes.append("generated features contain non-finite values; they were replaced by the floor")

    items = []
    invert_s = 0.0
    for k in range(feats.shape[0]):
        raw = ds.denormalize(feats[k])
        if feat.kind == "mel":
            raw = np.clip(np.nan_to_num(raw, nan=math.log(feat.log_floor)), math.log(feat.log_floor), 30.0)
        else:
            raw = np.clip(np.nan_to_num(raw, nan=feat.power_floor), feat.power_floor, 1e12)
        t1 = time.perf_counter()
        wave = _peak(inversion.features_to_wave(raw, feat, method="griffin_lim_jax", n_iter=n_iter, seed=seed + k))
        invert_s += time.perf_counter() - t1
        name = f"{mode}_{k:02d}"
        sf.write(out_dir / f"{name}.wav", wave, sr)
        item: dict[str, Any] = {"name": name, "wav": f"{name}.wav", "frames": int(feats.shape[1])}
        transcript = None
        if mode == "primed":
            split_name, i = primes[k]
            split = ds.split(split_name)
            transcript = split.texts[i]
            item.update(utterance=split.utt_ids[i], split=split_name, speaker=split.speakers[i],
                        prime_frames=p_frames, transcript=transcript)
            # The original over the same span, and its Griffin-Lim resynthesis (same inversion).
            span = p_frames + n_frames
            orig_feats = split.utterance(i)[:span]
            orig = _peak(ds.load_wave(split_name, i)[: max(0, (orig_feats.shape[0] - 1)) * feat.hop_length])
            resyn = _peak(inversion.features_to_wave(orig_feats, feat, method="griffin_lim_jax", n_iter=n_iter, seed=seed))
            sf.write(out_dir / f"{name}_original.wav", orig, sr)
            sf.write(out_dir / f"{name}_resynth.wav", resyn, sr)
            item["original_wav"] = f"{name}_original.wav"
            item["resynth_wav"] = f"{name}_resynth.wav"
            item["resynth"] = _measures(resyn, feat, real_logmel, None, quality_ok, transcript, notes)
            if orig_feats.shape[0] < span:
                notes.append(f"{item['utterance']} has {orig_feats.shape[0]} frames: its original is shorter "
                             f"than the {span} frames generated")
        item["measures"] = _measures(wave, feat, real_logmel, p_frames or None, quality_ok, transcript, notes)
        if figures:
            title = (f"{cfg.model.model} {mode} T={temperature} decode={decode}"
                     + (f" latent={latent} prime={item.get('utterance')}" if mode == "primed" else ""))
            _figure(out_dir / f"{name}.png", raw, feat, p_frames or None, title)
            item["png"] = f"{name}.png"
        items.append(item)

    def mean_of(key: str, where: str = "measures") -> float:
        vals = [it[where][key] for it in items if where in it and isinstance(it[where].get(key), float)]
        vals = [v for v in vals if math.isfinite(v)]
        return float(np.mean(vals)) if vals else math.nan

    measure_keys = sorted({k for it in items for k, v in it["measures"].items() if isinstance(v, float)})
    aggregate = {k: mean_of(k) for k in measure_keys}
    if mode == "primed":
        for k in sorted({k for it in items for k, v in it["resynth"].items() if isinstance(v, float)}):
            aggregate[f"resynth_{k}"] = mean_of(k, "resynth")
    audio_s = feats.shape[1] * feat.hop_length / sr
    summary = {
        "workdir": str(workdir), "out": str(out_dir), "mode": mode, "model": cfg.model.model,
        "checkpoint": {k: meta.get(k) for k in ("checkpoint", "step", "epoch")},
        "settings": {
            "seconds": seconds, "prime_seconds": prime_seconds if mode == "primed" else 0.0, "n": n,
            "temperature": temperature, "decode": decode, "latent": latent if mode == "primed" else None,
            "seed": seed, "inversion": f"griffin_lim_jax n_iter={n_iter} momentum=0.99", "features": feat.kind,
        },
        "real_reference": f"{len(real_idx)} test utterances (log-Mel of their waves)",
        "timing": {"generate_s": gen_s, "invert_s": invert_s, "audio_s_per_sequence": audio_s,
                   "rtf_generate": gen_s / max(audio_s * feats.shape[0], 1e-9),
                   "rtf_invert": invert_s / max(audio_s * feats.shape[0], 1e-9),
                   "note": "generate_s includes compilation"},
        "aggregate": aggregate,
        "items": items,
        "notes": notes,
    }
    checkpoint.write_json_atomic(out_dir / "summary.json", _json_safe(summary))
    return summary


# ---------------------------------------------------------------------------------------------
# The demo's generation step: RUN/generation/{cold,primed}/ and RUN/generation/summary.md

GENERATION_DIR = "generation"

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


def summary_markdown(summaries: list[dict], base: str | os.PathLike, real_measures: dict | None = None) -> str:
    """The report section for ``generate_run`` summaries (cold and/or primed); links are relative
    to ``base`` (the folder summary.md is written to)."""
    base = Path(base)
    lines = ["## Generation", ""]
    lines += [("Cold start: zero state, z from the prior, each generated frame fed back. Primed: the model runs "
              "over the first part of a held-out test utterance (z from the posterior), then continues freely; "
              "the dashed line in the figure marks the end of the prime. Features are inverted with the Mel "
              "pseudo-inverse and JAX Griffin-Lim. Reference-free measures (audio/stats.py): mean log-Mel "
              "distance to real test speech (lower is closer), spectral flux (real speech is bursty, "
              "a drone is near 0), voiced-frame ratio (read speech ~0.3-0.6), boundary jump (the "
              "spectral change across the prime's end over the median change; ~1 is seamless). ASR WER: "
              "Whisper's transcript of the whole primed clip against the utterance's sentence, next to the "
              "WER of the Griffin-Lim resynthesis of the original (the ceiling); most words of the sentence "
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


def demo_generation(
    workdir: str | os.PathLike, dataset=None, quiet: bool = False, seconds: float = 2.0,
    prime_seconds: float = 1.0, cold_seconds: float = 3.0, quality: bool = True, seed: int = 0,
    n_iter: int = 32,
) -> dict:
    """The demo's generation step: one cold-start and one primed example (prime ``prime_seconds``
    of the first long enough test utterance, continue ``seconds``) into RUN/generation/cold and
    RUN/generation/primed, and RUN/generation/summary.md for report.md. ASR runs on two clips at
    most (the primed continuation and the resynthesised original). Returns {'cold', 'primed', 'summary_md'}."""
    from dvae_jax import checkpoint

    workdir = Path(workdir)
    base = workdir / GENERATION_DIR
    base.mkdir(parents=True, exist_ok=True)
    if dataset is None:
        from dvae_jax.data import prepare

        cfg = checkpoint.load_config(workdir)
        dataset = prepare.prepare_dataset(cfg.data, cfg.features, progress=False)
    t0 = time.perf_counter()
    cold = generate_run(workdir, mode="cold", seconds=cold_seconds, n=1, seed=seed, out=base / "cold",
                        quality=quality, dataset=dataset, n_iter=n_iter)
    primed = generate_run(workdir, mode="primed", seconds=seconds, prime_seconds=prime_seconds, n=1, seed=seed,
                          out=base / "primed", quality=quality, dataset=dataset, n_iter=n_iter)
    md = summary_markdown([cold, primed], base)
    path = base / "summary.md"
    path.write_text(md)
    if not quiet:
        agg = primed["aggregate"]
        wer = agg.get("wer", math.nan)
        print(f"[demo] generation: cold {cold_seconds:g} s and primed {prime_seconds:g}+{seconds:g} s examples "
              f"in {time.perf_counter() - t0:.0f} s; primed WER {wer:.2f} (resynthesis "
              f"{agg.get('resynth_wer', math.nan):.2f}); {path}")
        for note in sorted(set(cold["notes"] + primed["notes"])):
            print(f"[demo] generation: {note}")
    return {"cold": cold, "primed": primed, "summary_md": str(path)}


def _json_safe(obj):
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
