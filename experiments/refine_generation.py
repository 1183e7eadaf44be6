"""Generation refinements on the mini corpus: which choices make primed continuations more intelligible.

Two phases (run both with no arguments):

    python experiments/refine_generation.py train [--epochs 12] [--runs runs/refine] [--only NAME]
    python experiments/refine_generation.py eval  [--n 6] [--runs runs/refine]

``train`` fits four models with dvae_jax.fit.fit on log-Mel features of the mini corpus, all with the
same short-run overrides (epochs, linear KL warm-up): VRNN and SRNN with teacher forcing
(vrnn_mel_gaussian / srnn_mel_gaussian configs) and the same two with scheduled sampling
(train.scheduled_sampling=0.5 per frame, ramped linearly from epoch 0 over the first half).

``eval`` primes every model with the first 1 s of the SAME held-out test utterances (test split =
speakers never seen in training; the first n test utterances longer than prime + continuation),
continues for 2 s with fixed seeds, inverts with Griffin-Lim and measures each refinement:
ASR WER of the whole clip (prime reconstruction + continuation) against the known sentence
(faster-whisper tiny.en), DNSMOS, mean log-Mel distance to real test speech, spectral flux,
voiced-frame ratio and continuity at the prime boundary. Writes experiments/results/generation.md
and generation.json, plus the real-time factor of generating 10 s.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUNS = {
    # name: (config, extra overrides)
    "vrnn_tf": ("vrnn_mel_gaussian", []),
    "srnn_tf": ("srnn_mel_gaussian", []),
    "vrnn_ss": ("vrnn_mel_gaussian", ["train.scheduled_sampling=0.5", "train.ss_start_epochs=0"]),
    "srnn_ss": ("srnn_mel_gaussian", ["train.scheduled_sampling=0.5", "train.ss_start_epochs=0"]),
}


def overrides(name: str, epochs: int) -> list[str]:
    base = [f"train.epochs={epochs}", "train.kl_schedule=linear", "train.kl_warmup_epochs=1",
            f"train.kl_anneal_epochs={max(1, epochs // 2)}", f"train.early_stop_patience={epochs}"]
    extra = list(RUNS[name][1])
    if any(e.startswith("train.scheduled_sampling") for e in extra):
        extra.append(f"train.ss_ramp_epochs={max(1, epochs // 2)}")
    return base + extra


def train(args) -> None:
    from dvae_jax import config as config_lib
    from dvae_jax import fit
    from dvae_jax.data import prepare

    names = [args.only] if args.only else list(RUNS)
    for name in names:
        cfg = config_lib.apply_overrides(config_lib.load_named(RUNS[name][0]), overrides(name, args.epochs))
        ds = prepare.prepare_dataset(cfg.data, cfg.features, progress=False)
        t0 = time.time()
        res = fit.fit(cfg, Path(args.runs) / name, resume=True, progress=False, dataset=ds)
        print(f"[train] {name}: {res.epochs_run} epochs, best val -ELBO/frame {res.best_val:.3f} "
              f"(epoch {res.best_epoch}), {time.time() - t0:.0f} s", flush=True)



# ---------------------------------------------------------------------------------------------
# Evaluation

MEASURES = (
    # (short key, column title, format)
    ("wer", "WER (corpus)", "{:.2f}"),
    ("dnsmos_ovrl", "DNSMOS OVRL", "{:.2f}"),
    ("dnsmos_sig", "SIG", "{:.2f}"),
    ("dnsmos_bak", "BAK", "{:.2f}"),
    ("mean_logmel_distance_db", "log-Mel dist. (dB)", "{:.1f}"),
    ("spectral_flux_continuation_db", "flux, continuation (dB)", "{:.2f}"),
    ("voiced_frame_ratio", "voiced ratio", "{:.2f}"),
    ("boundary_continuity", "boundary jump", "{:.2f}"),
)

BASE = {"temperature": 1.0, "decode": "mean", "latent": "posterior", "n_iter": 32, "mel_inverse": "pinv"}


def conditions(models_present: list[str]) -> list[tuple[str, str, dict]]:
    """(row label, run name, settings) in priority order (the most informative first)."""
    rows = []
    for m in ("vrnn_tf", "srnn_tf"):
        if m not in models_present:
            continue
        rows.append((f"{m}: base (T=1, mean x, posterior prime, GL32, pinv)", m, dict(BASE)))
    for m in ("vrnn_ss", "srnn_ss"):
        if m in models_present:
            rows.append((f"{m}: scheduled sampling 0.5, base generation", m, dict(BASE)))
    for m in ("vrnn_tf", "srnn_tf"):
        if m not in models_present:
            continue
        for t in (0.0, 0.5, 0.8):
            rows.append((f"{m}: temperature {t:g}", m, dict(BASE, temperature=t)))
        rows.append((f"{m}: sampled x decoding (T=1)", m, dict(BASE, decode="sample")))
        rows.append((f"{m}: prior z during priming", m, dict(BASE, latent="prior")))
        if m == "vrnn_tf":  # the inversion does not depend on the model: measured on one
            rows.append((f"{m}: Griffin-Lim 100 iterations", m, dict(BASE, n_iter=100)))
            rows.append((f"{m}: Mel inverse nnls", m, dict(BASE, mel_inverse="nnls")))
    for m in ("vrnn_ss", "srnn_ss"):
        if m in models_present:
            rows.append((f"{m}: scheduled sampling 0.5, temperature 0.5", m, dict(BASE, temperature=0.5)))
    return rows


def pick_utterances(ds, n: int, span: int) -> list[int]:
    """The first n test utterances with >= span frames, alternating between the test speakers."""
    test = ds.split("test")
    by_spk: dict[str, list[int]] = {}
    for i in range(len(test)):
        if test.lengths[i] >= span:
            by_spk.setdefault(test.speakers[i], []).append(i)
    out, k = [], 0
    spks = sorted(by_spk)
    while len(out) < n and any(by_spk.values()):
        lst = by_spk[spks[k % len(spks)]]
        if lst:
            out.append(lst.pop(0))
        k += 1
    return out


def _short(measures: dict) -> dict:
    from dvae_jax.generate_command import measure

    return {k: measure(measures, k) for k, _, _ in MEASURES} | {"asr_transcript": measures.get("asr_transcript")}


def evaluate(args) -> None:
    import jax

    from dvae_jax import checkpoint, generate
    from dvae_jax import config as config_lib
    from dvae_jax.audio import inversion, quality, stats
    from dvae_jax.data import prepare
    from dvae_jax.generate_command import _json_safe, _measures, _peak

    t_start = time.time()
    runs = Path(args.runs)
    present = [m for m in RUNS if (runs / m / "checkpoints").exists()]
    cfg0 = config_lib.load_named("vrnn_mel_gaussian")
    feat = cfg0.features
    ds = prepare.prepare_dataset(cfg0.data, feat, progress=False)
    fps = feat.sample_rate / feat.hop_length
    P, T = round(args.prime_seconds * fps), round(args.seconds * fps)
    test = ds.split("test")
    utts = pick_utterances(ds, args.n, P + T)
    texts = [test.texts[i] for i in utts]
    quality_ok = {m: quality.skip_reason(m) is None for m in ("dnsmos", "asr")}
    notes: list[str] = [f"{m}: {quality.skip_reason(m)}" for m, ok in quality_ok.items() if not ok]
    real_logmel = [stats.logmel(ds.load_wave("test", i), feat) for i in range(len(test)) if i not in utts][:20]
    floor = math.log(feat.log_floor)

    def to_wave(norm_feats, n_iter, mel_inverse, seed):
        raw = ds.denormalize(np.asarray(norm_feats))
        raw = np.clip(np.nan_to_num(raw, nan=floor), floor, 30.0)
        return _peak(inversion.features_to_wave(raw, feat, method="griffin_lim_jax", n_iter=n_iter,
                                                mel_inverse=mel_inverse, seed=seed))

    def measure_clips(waves, boundary):
        per = []
        for k, w in enumerate(waves):
            per.append(_short(_measures(w, feat, real_logmel, boundary, quality_ok, texts[k], notes)))
        return per

    def aggregate(per):
        agg = {}
        for key, _, _ in MEASURES:
            vals = np.array([p[key] for p in per if isinstance(p.get(key), float) and math.isfinite(p[key])])
            agg[key] = {"mean": float(vals.mean()) if vals.size else None,
                        "sd": float(vals.std(ddof=1)) if vals.size > 1 else None, "n": int(vals.size)}
        hyps = [p.get("asr_transcript") for p in per]
        if all(h is not None for h in hyps):
            agg["wer"]["corpus"] = quality.word_error_rate(texts, hyps)
        return agg

    results = {"method": {}, "rows": [], "ceilings": [], "rtf": [], "notes": notes}
    results["method"] = {
        "corpus": "mini (12 synthetic-free read speakers, built offline); test split = 2 speakers held out "
                  "from training and validation",
        "utterances": [test.utt_ids[i] for i in utts], "sentences": texts, "n": len(utts),
        "prime_frames": P, "continuation_frames": T, "frames_per_second": fps,
        "seed": "jax.random.PRNGKey(0) for every condition (same noise across conditions: paired); "
                "Griffin-Lim seed = clip index",
        "training": {m: overrides(m, args.epochs) + [f"config={RUNS[m][0]}"] for m in present},
        "asr": "faster-whisper, Whisper tiny.en (CTranslate2, int8, greedy) on the whole clip "
               "(prime reconstruction + continuation) against the full sentence",
    }
    out_json = ROOT / "experiments" / "results" / "generation.json"

    def save():
        results["wall_s"] = time.time() - t_start
        checkpoint.write_json_atomic(out_json, _json_safe(results))
        (ROOT / "experiments" / "results" / "generation.md").write_text(markdown(results))

    # Ceilings: the originals resynthesised (same span), and the prime alone followed by silence.
    for label, n_iter, prime_only in (("original, resynthesised GL32", 32, False),
                                      ("original, resynthesised GL100", 100, False),
                                      ("prime only (original 1 s resynthesised GL32, then silence)", 32, True)):
        waves = []
        for k, i in enumerate(utts):
            f = np.array(test.utterance(i)[: P + T])
            if prime_only:
                f[P:] = floor
            waves.append(_peak(inversion.features_to_wave(f, feat, method="griffin_lim_jax", n_iter=n_iter, seed=k)))
        per = measure_clips(waves, P)
        results["ceilings"].append({"label": label, "per_clip": per, "aggregate": aggregate(per)})
        print(f"[eval] {label}: {time.time() - t_start:.0f} s", flush=True)
        save()

    loaded = {}
    prime_norm = np.stack([ds.normalize(test.utterance(i)[:P]) for i in utts]).astype(np.float32)
    cache = {}
    for label, run, st in conditions(present):
        if time.time() - t_start > args.budget_s:
            notes.append(f"stopped at the time budget ({args.budget_s:.0f} s) before '{label}'")
            break
        if run not in loaded:
            loaded[run] = checkpoint.load_run(runs / run, "best")
        cfg, variables, meta = loaded[run]
        t0 = time.time()
        gkey = (run, st["temperature"], st["decode"], st["latent"])
        if gkey not in cache:
            feats = generate.primed(cfg.model, variables, jax.random.PRNGKey(0), prime_norm, T,
                                    st["latent"], st["temperature"], st["decode"])
            cache[gkey] = np.asarray(jax.block_until_ready(feats))
        feats = cache[gkey]
        gen_s = time.time() - t0
        waves = [to_wave(feats[k], st["n_iter"], st["mel_inverse"], k) for k in range(len(utts))]
        per = measure_clips(waves, P)
        results["rows"].append({"label": label, "run": run, "settings": st, "per_clip": per,
                                "aggregate": aggregate(per), "checkpoint_epoch": meta.get("epoch"),
                                "seconds": time.time() - t0, "generate_s": gen_s})
        print(f"[eval] {label}: WER {results['rows'][-1]['aggregate']['wer'].get('corpus')} "
              f"({time.time() - t0:.0f} s; total {time.time() - t_start:.0f} s)", flush=True)
        save()

    if not args.no_rtf:
        for run in ("vrnn_tf", "srnn_tf"):
            if run in loaded:
                cfg, variables, _ = loaded[run]
                r = generate.realtime_factor(cfg.model, variables, feat, seconds=10.0, repeats=2,
                                             n_iter=32, denormalize=ds.denormalize)
                results["rtf"].append(r)
                print(f"[eval] RTF {run}: {r['rtf']:.3f}", flush=True)
                save()
    save()
    print(f"[eval] done in {time.time() - t_start:.0f} s", flush=True)


def _cell(agg: dict, key: str, fmt: str) -> str:
    a = agg.get(key) or {}
    if key == "wer" and a.get("corpus") is not None:
        return f"{a['corpus']:.2f} ({fmt.format(a['mean'])} ± {fmt.format(a['sd'] or 0)})"
    if a.get("mean") is None:
        return "–"
    return f"{fmt.format(a['mean'])} ± {fmt.format(a['sd'] or 0)}"


def _reference(row: dict, rows: list[dict]) -> dict | None:
    """The row a refinement is compared with (paired, same utterances and noise): the same
    model's base generation; for scheduled sampling the teacher-forced model with the same
    generation settings."""
    run, st = row["run"], row["settings"]
    ref_run = run.replace("_ss", "_tf")
    ref_st = st if ref_run != run else BASE
    for r in rows:
        if r is not row and r["run"] == ref_run and r["settings"] == ref_st:
            return r
    return None


PAIRED = (("wer", "ΔWER"), ("dnsmos_ovrl", "ΔOVRL"), ("mean_logmel_distance_db", "Δlog-Mel dist."),
          ("spectral_flux_continuation_db", "Δflux"))


def _paired(row: dict, ref: dict | None, key: str) -> str:
    if ref is None:
        return "ref."
    a = [p.get(key) for p in row["per_clip"]]
    b = [p.get(key) for p in ref["per_clip"]]
    d = np.array([x - y for x, y in zip(a, b) if isinstance(x, float) and isinstance(y, float)])
    if d.size < 2:
        return "–"
    return f"{d.mean():+.2f} ± {d.std(ddof=1):.2f}"


def markdown(results: dict) -> str:
    m = results["method"]
    lines = ["# Generation refinements on the mini corpus", "",
             ("Written by `experiments/refine_generation.py` (train, then eval). Each row primes a model with "
             f"the first {m['prime_frames']} frames (1 s) of the same {m['n']} held-out test utterances "
             f"(test speakers never seen in training) and continues freely for {m['continuation_frames']} "
             "frames (2 s); the clip (the model's reconstruction of the prime, then the continuation) is "
             "inverted with the Mel pseudo-inverse and JAX Griffin-Lim unless the row says otherwise."), "",
             f"- utterances: {', '.join(m['utterances'])}",
             f"- seeds: {m['seed']}",
             (f"- ASR: {m['asr']}; WER cell = corpus WER (total edits / total words) and, in brackets, the "
             "per-clip mean ± sd"),
             ("- other cells: mean ± sd over the n clips (sample sd). log-Mel dist.: RMS over bands of the mean "
             "log-Mel spectrum difference to 20 other real test utterances (lower = closer); flux, continuation: "
             "mean frame-to-frame log-Mel change after the prime (real speech ~4-5 dB, a drone ~0); voiced "
             "ratio (read speech 0.3-0.6); boundary jump: change across the prime's end over the median change "
             "(~1 = seamless)."),
             "- training: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in m["training"].items()), ""]
    head = "| refinement | " + " | ".join(t for _, t, _ in MEASURES) + " |"
    sep = "|---|" + "---|" * len(MEASURES)
    lines += ["## Ceilings (no model)", "", head, sep]
    for r in results["ceilings"]:
        lines.append(f"| {r['label']} | " + " | ".join(_cell(r["aggregate"], k, f) for k, _, f in MEASURES) + " |")
    lines += ["", f"## Refinements (n = {m['n']} clips each)", "", head, sep]
    for r in results["rows"]:
        lines.append(f"| {r['label']} | " + " | ".join(_cell(r["aggregate"], k, f) for k, _, f in MEASURES) + " |")
    lines += ["", "### Paired differences against the reference row", "",
              ("Per-clip differences (same utterances, same noise), mean ± sd over the n clips. Reference: the "
              "same model's base row; for scheduled sampling, the teacher-forced model with the same "
              "generation settings. |mean| well below sd means no measurable effect at this n."), "",
              "| refinement | reference | " + " | ".join(t for _, t in PAIRED) + " |",
              "|---|---|" + "---|" * len(PAIRED)]
    for r in results["rows"]:
        ref = _reference(r, results["rows"])
        ref_label = ref["label"].split(" (")[0] if ref else "–"
        cells = " | ".join(_paired(r, ref, k) for k, _ in PAIRED)
        lines.append(f"| {r['label']} | {ref_label} | {cells} |")
    lines.append("")
    if results["rtf"]:
        lines += ["## Real-time factor (10 s, cold start, 1 sequence, + Griffin-Lim 32 on this shared CPU)", "",
                  "| model | generate s | invert s | RTF generate | RTF invert | RTF total |", "|---|---|---|---|---|---|"]
        for r in results["rtf"]:
            lines.append(f"| {r['model']} | {r['generate_s']:.2f} | {r['invert_s']:.2f} | {r['rtf_generate']:.3f} | "
                         f"{r['rtf_invert']:.3f} | {r['rtf']:.3f} |")
        lines.append("")
    if results.get("notes"):
        lines += ["Notes: " + "; ".join(sorted(set(results["notes"]))), ""]
    lines += [f"Evaluation wall time: {results.get('wall_s', 0):.0f} s.", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("phase", nargs="?", choices=("train", "eval", "all", "md"), default="all")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--runs", default=str(ROOT / "runs" / "refine"))
    p.add_argument("--only", default=None, choices=list(RUNS))
    p.add_argument("--n", type=int, default=6)
    p.add_argument("--prime-seconds", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--budget-s", type=float, default=1500.0, help="eval: stop adding rows after this")
    p.add_argument("--no-rtf", action="store_true")
    args = p.parse_args(argv)
    if args.phase in ("train", "all"):
        train(args)
    if args.phase in ("eval", "all"):
        evaluate(args)
    if args.phase == "md":  # re-render the markdown from generation.json
        results = json.loads((ROOT / "experiments" / "results" / "generation.json").read_text())
        (ROOT / "experiments" / "results" / "generation.md").write_text(markdown(results))


if __name__ == "__main__":
    main()
