"""Generation refined and measured on real speech (issue 17): which choices make primed
continuations more intelligible, with paired differences over 3 training seeds.

    python experiments/generation_study.py run   [--runs runs/speech160] [--n 32] [--shard 0/2]
    python experiments/generation_study.py table [--runs runs/speech160]

``run`` needs the models of experiments/studies/train_speech160.sh: ``<runs>/<model>_s<seed>`` for
model in vrnn (teacher forcing), srnn, vrnn_ss (scheduled sampling) and seeds 0, 1, 2 (160-band
log-Mel of the asterisk prompts, the study's best settings). Each clip spans a whole held-out
utterance: the model is primed with its first ``prime_s`` seconds and continues freely to the
utterance's own length, so Whisper's transcript of the clip (prime reconstruction +
continuation) is scored against the utterance's full transcript. Next to the model rows:

- the **floor**: the prime alone (the original's features, resynthesised by the same road)
  followed by silence, for each prime length;
- the **ceiling**: the whole utterance resynthesised by the same road, and the original audio.

Every condition of one training seed uses the same noise (one key per seed, the same latent noise
shape for every condition), so differences between conditions are paired clip by clip. Measures:
Whisper tiny.en WER (faster-whisper, greedy, Whisper's English normaliser), DNSMOS P.835, spectral
flux of the continuation, voiced-frame ratio, continuity at the prime boundary, log-Mel distance
to real speech, words recognised. Clips are stored one JSON line each (resumable, shardable
across processes); ``table`` writes experiments/results/generation_speech.{md,json}.
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
sys.path.insert(0, str(ROOT / "experiments"))

RESULTS = ROOT / "experiments" / "results"
SEEDS = (0, 1, 2)
MIN_SECONDS, MAX_SECONDS = 2.0, 8.0  # utterances long enough for a 1.5 s prime + 0.5 s of continuation
BASE = {"temperature": 1.0, "decode": "mean", "latent": "posterior", "prime_s": 1.0, "n_iter": 64,
        "mel_inverse": "nnls", "prime_output": "reconstruction"}


@dataclasses.dataclass(frozen=True)
class Condition:
    """One row: a model (run prefix) or None for the reference rows, its settings, and the row
    it is paired with."""

    name: str
    model: str | None
    settings: dict
    ref: str | None = None
    what: str = ""
    extra: bool = False  # run only with --all (the 2-core CPU's time)


def _c(model: str, label: str, what: str, ref: str | None = "", extra: bool = False, **change) -> Condition:
    """A model row; its reference defaults to the same model's base row."""
    return Condition(f"{model}/{label}", model, dict(BASE, **change), f"{model}/base" if ref == "" else ref, what,
                     extra)


def conditions() -> list[Condition]:
    """All rows, in the order they run (the most informative first)."""
    rows = [Condition("original", None, {"kind": "original"}, None, "the original audio"),
            Condition("ceiling", None, dict(BASE, kind="resynth"), None,
                      "the whole utterance resynthesised (NNLS + GL 64)"),
            Condition("floor", None, dict(BASE, kind="floor"), None,
                      "prime (1 s) resynthesised, then silence"),
            Condition("floor/prime=0.5", None, dict(BASE, kind="floor", prime_s=0.5), "floor", "0.5 s prime, then silence"),
            Condition("floor/prime=1.5", None, dict(BASE, kind="floor", prime_s=1.5), "floor", "1.5 s prime, then silence")]
    rows += [_c(m, "base", "T 1, mean x, posterior prime, 1 s, NNLS + GL 64", ref=None if m == "vrnn" else "vrnn/base")
             for m in ("vrnn", "srnn", "vrnn_ss")]
    rows += [_c("vrnn", "T=0.5", "temperature 0.5", temperature=0.5),
             _c("vrnn", "T=0", "temperature 0 (prior mean)", temperature=0.0, extra=True),
             _c("vrnn", "sample", "sampled x decoding", decode="sample"),
             _c("vrnn", "prior-prime", "z from the prior during the prime", latent="prior"),
             _c("vrnn", "real-prime", "the real prime frames in the clip, not their reconstruction",
                prime_output="real"),
             _c("vrnn", "prime=0.5", "0.5 s prime", prime_s=0.5),
             _c("vrnn", "prime=1.5", "1.5 s prime", prime_s=1.5),
             _c("vrnn", "gl32", "Griffin-Lim 32 iterations", n_iter=32),
             _c("vrnn", "gl128", "Griffin-Lim 128 iterations", n_iter=128, extra=True),
             _c("vrnn", "pinv", "Mel pseudo-inverse (the old road)", mel_inverse="pinv"),
             _c("srnn", "T=0.5", "temperature 0.5", temperature=0.5),
             _c("srnn", "sample", "sampled x decoding", decode="sample", extra=True),
             _c("srnn", "prior-prime", "z from the prior during the prime", latent="prior", extra=True),
             _c("srnn", "real-prime", "the real prime frames in the clip", prime_output="real"),
             _c("vrnn_ss", "T=0.5", "scheduled sampling, temperature 0.5", ref="vrnn/T=0.5", temperature=0.5),
]
    return rows


# ---------------------------------------------------------------------------------------------
# Clips


def select_utterances(ds, n: int) -> list[tuple[str, int]]:
    """n utterances of the held-out splits (test, then validation: neither was trained on) whose
    length lies in [MIN_SECONDS, MAX_SECONDS], spread evenly over them in a fixed order."""
    fps = ds.feature_cfg.sample_rate / ds.feature_cfg.hop_length
    pool = []
    for split in ("test", "val"):
        s = ds.split(split)
        pool += [(split, i) for i in range(len(s))
                 if MIN_SECONDS <= s.lengths[i] / fps <= MAX_SECONDS and s.texts[i]]
    pool.sort(key=lambda si: ds.split(si[0]).utt_ids[si[1]])
    if len(pool) <= n:
        return pool
    return [pool[int(k)] for k in np.linspace(0, len(pool) - 1, n).round()]


class Clips:
    """Turns features of the chosen utterances into waveforms and measures them."""

    def __init__(self, ds, chosen, notes):
        from dvae_jax.audio import quality, stats

        self.ds, self.chosen, self.notes = ds, chosen, notes
        self.feat = ds.feature_cfg
        self.fps = self.feat.sample_rate / self.feat.hop_length
        self.feats = [np.asarray(ds.split(s).utterance(i), np.float32) for s, i in chosen]
        self.texts = [ds.split(s).texts[i] for s, i in chosen]
        self.ids = [ds.split(s).utt_ids[i] for s, i in chosen]
        train = ds.split("train")
        self.real_logmel = [stats.logmel(ds.load_wave("train", i), self.feat) for i in range(0, len(train), 25)][:20]
        self.dnsmos_ok = quality.skip_reason("dnsmos") is None
        self.asr_ok = quality.skip_reason("asr") is None and quality.skip_reason("wer") is None

    def frames(self, seconds: float) -> int:
        return round(seconds * self.fps)

    def raw_to_wave(self, raw: np.ndarray, st: dict, k: int) -> np.ndarray:
        from dvae_jax.audio import inversion
        from dvae_jax.generate_command import _peak

        return _peak(inversion.features_to_wave(raw, self.feat, method="griffin_lim_jax", n_iter=st["n_iter"], seed=k,
                                                 mel_inverse=st["mel_inverse"]))

    def measure(self, wave: np.ndarray, k: int, boundary: int | None) -> dict:
        from dvae_jax.audio import quality
        from dvae_jax.generate_command import _measures

        m = _measures(wave, self.feat, self.real_logmel, boundary, {"dnsmos": self.dnsmos_ok}, None, self.notes)
        m = {key.split(" ")[0]: v for key, v in m.items()}  # 'dnsmos_ovrl (speechmos ...)' -> 'dnsmos_ovrl'
        if self.asr_ok:
            hyp = quality.transcribe(wave, self.feat.sample_rate, cpu_threads=1)
            m["wer"] = quality.word_error_rate(self.texts[k], hyp)
            m["asr_transcript"] = hyp
            m["words"] = float(len(quality.normalise_words(hyp)))
        return m


def reference_waves(clips: Clips, cond: Condition) -> list[np.ndarray]:
    """The original, its resynthesis, or the prime followed by silence (no model)."""
    st, waves = cond.settings, []
    floor = math.log(clips.feat.log_floor)
    for k, (split, i) in enumerate(clips.chosen):
        f = clips.feats[k].copy()
        if st["kind"] == "original":
            from dvae_jax.generate_command import _peak

            w = clips.ds.load_wave(split, i)[: (f.shape[0] - 1) * clips.feat.hop_length]
            waves.append(_peak(w))
            continue
        if st["kind"] == "floor":
            f[clips.frames(st["prime_s"]):] = floor
        waves.append(clips.raw_to_wave(f, st, k))
    return waves


def model_waves(clips: Clips, cond: Condition, runs: Path, seed: int, loaded: dict) -> list[np.ndarray]:
    """Primed generation of every chosen utterance by one training seed's model, one batch."""
    import jax

    from dvae_jax import checkpoint, generate
    from dvae_jax.audio import inversion
    from dvae_jax.generate_command import _peak

    run = runs / f"{cond.model}_s{seed}"
    if run not in loaded:
        loaded.clear()  # one model in memory at a time
        loaded[run] = checkpoint.load_run(run, "best")
    cfg, variables, _ = loaded[run]
    st = cond.settings
    p = clips.frames(st["prime_s"])
    longest = max(f.shape[0] for f in clips.feats)
    prime = np.stack([clips.ds.normalize(f[:p]) for f in clips.feats]).astype(np.float32)
    key = jax.random.PRNGKey(1000 + seed)  # the same noise for every condition of this seed: paired
    feats = np.asarray(generate.primed(cfg.model, variables, key, prime, longest - p, st["latent"],
                                       st["temperature"], st["decode"], prime_output=st["prime_output"]))
    waves = []
    for k, f in enumerate(clips.feats):
        waves.append(_peak(inversion.decoded_to_wave(
            feats[k, : f.shape[0]], clips.feat, clips.ds.denormalize, fill_nonfinite=True,
            method="griffin_lim_jax", n_iter=st["n_iter"], seed=k, mel_inverse=st["mel_inverse"])))
    return waves


def _done(out: Path) -> set[tuple[str, int]]:
    done = set()
    for path in out.glob("clips*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            done.add((rec["cond"], rec["seed"]))
    return done


def run(args: argparse.Namespace) -> None:
    from dvae_jax import config as config_lib
    from dvae_jax.data import prepare

    out = Path(args.runs) / "generation_study"
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    shard, n_shards = (int(v) for v in args.shard.split("/"))
    cfg = config_lib.load_named("vrnn_mel160_speech")
    ds = prepare.prepare_dataset(cfg.data, cfg.features, progress=False)
    chosen = select_utterances(ds, args.n)
    notes: list[str] = []
    clips = Clips(ds, chosen, notes)
    if args.one_thread:
        from intelligibility import _dnsmos_one_thread

        _dnsmos_one_thread()
    jobs = []
    for cond in conditions():
        if cond.extra and not args.all:
            continue
        for seed in ((-1,) if cond.model is None else SEEDS):
            jobs.append((cond, seed))
    done, t0, loaded = _done(out), time.time(), {}
    meta = {"utterances": clips.ids, "texts": clips.texts, "n": len(chosen), "runs": str(args.runs),
            "min_seconds": MIN_SECONDS, "max_seconds": MAX_SECONDS}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    for j, (cond, seed) in enumerate(jobs):
        if j % n_shards != shard or (cond.name, seed) in done:
            continue
        if cond.model is not None and not (Path(args.runs) / f"{cond.model}_s{seed}" / "trained").exists():
            print(f"[gen] skipped {cond.name} seed {seed}: {cond.model}_s{seed} is not trained", flush=True)
            continue
        if time.time() - t0 > args.max_minutes * 60:
            print(f"[gen] stopped at the time budget before {cond.name} seed {seed}", flush=True)
            break
        t1 = time.time()
        waves = reference_waves(clips, cond) if cond.model is None else model_waves(clips, cond, Path(args.runs), seed, loaded)
        boundary = None if cond.settings.get("kind") in ("original", "resynth") else clips.frames(cond.settings["prime_s"])
        lines = []
        for k, w in enumerate(waves):
            m = clips.measure(w, k, boundary)
            if cond.settings.get("kind") == "floor":  # silence after the prime: no continuity to speak of
                m.pop("boundary_continuity", None)
            lines.append(json.dumps({"cond": cond.name, "seed": seed, "utt": clips.ids[k], "k": k,
                                     "measures": {a: (b if not isinstance(b, float) or math.isfinite(b) else None)
                                                  for a, b in m.items()}}))
            if k == 0 and seed in (-1, 0):
                import soundfile as sf

                sf.write(out / "wavs" / f"{cond.name.replace('/', '__')}.wav", w, clips.feat.sample_rate, subtype="PCM_16")
        with open(out / f"clips.shard{shard}.jsonl", "a") as fh:
            fh.write("\n".join(lines) + "\n")
        wers = [json.loads(x)["measures"].get("wer") for x in lines]
        print(f"[gen] {cond.name} seed {seed}: mean WER {np.nanmean([w for w in wers if w is not None] or [np.nan]):.3f} "
              f"({time.time() - t1:.0f} s, total {time.time() - t0:.0f} s)", flush=True)
    if notes:
        print("[gen] notes: " + "; ".join(sorted(set(notes))[:10]))


# ---------------------------------------------------------------------------------------------
# Tables

COLUMNS = (("wer", "WER", 2), ("dnsmos_ovrl", "DNSMOS OVRL", 2), ("spectral_flux_continuation_db", "flux cont. (dB)", 2),
           ("voiced_frame_ratio", "voiced", 2), ("boundary_continuity", "boundary jump", 2),
           ("mean_logmel_distance_db", "log-Mel dist. (dB)", 1), ("words", "words", 1))
PAIRED = ("wer", "dnsmos_ovrl", "spectral_flux_continuation_db", "boundary_continuity")


def load_records(out: Path) -> list[dict]:
    recs = []
    for path in sorted(out.glob("clips*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            rec["measures"] = {k.split(" ")[0]: v for k, v in rec["measures"].items()}
            recs.append(rec)
    return recs


def per_utterance(recs: list[dict], cond: str, col: str) -> dict[str, float]:
    """{utterance: the mean over training seeds} of one column of one condition."""
    acc: dict[str, list[float]] = {}
    for r in recs:
        v = r["measures"].get(col)
        if r["cond"] == cond and isinstance(v, (int, float)) and math.isfinite(v):
            acc.setdefault(r["utt"], []).append(float(v))
    return {u: float(np.mean(v)) for u, v in acc.items()}


def summarise(recs: list[dict], cond: Condition) -> dict:
    from dvae_jax.audio import metrics as metrics_lib
    from dvae_jax.audio import quality

    row: dict = {"name": cond.name, "model": cond.model, "what": cond.what, "settings": cond.settings, "ref": cond.ref}
    mine = [r for r in recs if r["cond"] == cond.name]
    row["seeds"] = sorted({r["seed"] for r in mine})
    for col, _, _ in COLUMNS:
        per = per_utterance(recs, cond.name, col)
        if per:
            vals = np.array(list(per.values()))
            lo, hi = metrics_lib.mean_interval(vals)
            row[col] = {"mean": float(vals.mean()), "ci95_low": lo, "ci95_high": hi, "n": len(vals)}
            seed_means = []
            for s in row["seeds"]:
                v = [r["measures"].get(col) for r in mine if r["seed"] == s]
                v = [x for x in v if isinstance(x, (int, float)) and math.isfinite(x)]
                if v:
                    seed_means.append(float(np.mean(v)))
            row[col]["seed_means"] = seed_means
    hyps = [(r["measures"].get("asr_transcript"), r["utt"]) for r in mine if r["measures"].get("asr_transcript") is not None]
    if hyps:
        texts = dict(zip(META["utterances"], META["texts"]))
        row["corpus_wer"] = float(quality.word_error_rate([texts[u] for _, u in hyps], [h for h, _ in hyps]))
    if cond.ref:
        row["vs_ref"] = {col: paired(recs, cond.name, cond.ref, col) for col in PAIRED}
    if cond.model is not None:  # does the continuation beat silence after the same prime?
        row["floor"] = floor_of(cond)
        row["vs_floor"] = {col: paired(recs, cond.name, row["floor"], col) for col in ("wer", "dnsmos_ovrl", "words")}
    return row


def floor_of(cond: Condition) -> str:
    """The floor row with the same prime length as a model row."""
    p = cond.settings["prime_s"]
    return "floor" if p == BASE["prime_s"] else f"floor/prime={p:g}"


def paired(recs: list[dict], a: str, b: str, col: str) -> dict:
    """Mean over utterances of (a - b), each utterance's difference averaged over the training
    seeds both rows share (same noise per seed: paired), with a 95 % t interval over utterances."""
    from dvae_jax.study_report import interval

    def by_key(cond):
        return {(r["seed"], r["utt"]): r["measures"].get(col) for r in recs if r["cond"] == cond}

    va, vb = by_key(a), by_key(b)
    diffs: dict[str, list[float]] = {}
    for (seed, utt), x in va.items():
        y = vb.get((seed, utt), vb.get((-1, utt)))
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and math.isfinite(x) and math.isfinite(y):
            diffs.setdefault(utt, []).append(x - y)
    d = [float(np.mean(v)) for v in diffs.values()]
    mean, lo, hi, _ = interval(d) if d else (math.nan, math.nan, math.nan, None)
    return {"mean": mean, "ci95_low": lo, "ci95_high": hi, "n": len(d)}


META: dict = {}


def _cell(s: dict | None, digits: int) -> str:
    if not s or s.get("mean") is None or not math.isfinite(s["mean"]):
        return "-"
    f = f"{{:.{digits}f}}"
    ci = f" [{f.format(s['ci95_low'])}, {f.format(s['ci95_high'])}]" if math.isfinite(s.get("ci95_low", math.nan)) else ""
    return f.format(s["mean"]) + ci


def _diff(s: dict | None, digits: int = 2) -> str:
    if not s or not math.isfinite(s.get("mean", math.nan)):
        return "-"
    f = f"{{:+.{digits}f}}"
    mark = " *" if s["ci95_low"] > 0 or s["ci95_high"] < 0 else ""
    return f"{f.format(s['mean'])} [{f.format(s['ci95_low'])}, {f.format(s['ci95_high'])}]{mark}"


def markdown(rows: list[dict], meta: dict) -> str:
    lines = ["# Generation refined and measured on real speech", "",
             (f"Written by `python experiments/generation_study.py table` from the clips of `run` "
             f"({meta['n_clips']} clips; {meta['when']}). Models: `experiments/studies/train_speech160.sh` "
             "(160-band log-Mel of the asterisk prompts, the study's best settings; VRNN, SRNN and VRNN with "
             "scheduled sampling, training seeds 0, 1, 2)."), "",
             (f"**Clips.** {meta['n']} held-out utterances (test and validation splits, {MIN_SECONDS:g}-{MAX_SECONDS:g} s, "
             "spread evenly by ID). Each clip spans the whole utterance: the model is primed with its first "
             "1 s (unless the row says otherwise) and continues freely to the utterance's length; the clip is "
             "the model's reconstruction of the prime followed by the continuation, inverted by NNLS + JAX "
             "Griffin-Lim 64 unless the row says otherwise. Whisper's transcript of the clip is scored "
             "against the utterance's full transcript, so the **floor** (the prime alone, resynthesised, "
             "then silence) and the **ceiling** (the whole utterance resynthesised) bracket what a model can do."), "",
             ("**Cells.** Each utterance's value is averaged over the training seeds (one clip per seed), then "
             "the mean over utterances with its 95 % BCa bootstrap interval. WER: per-utterance Whisper tiny.en "
             "WER (faster-whisper, greedy, Whisper's English normaliser); corpus WER = total edits / total words "
             "over all clips. DNSMOS: P.835 overall. flux cont.: mean frame-to-frame log-Mel change after the "
             "prime (dB; real speech about 4-6, a drone about 0). voiced: voiced-frame ratio. boundary jump: "
             "the log-Mel change across the prime's end over the clip's median change (1 = seamless). "
             "log-Mel dist.: distance of the mean log-Mel spectrum to 20 real training utterances. words: "
             "words Whisper recognised."), "",
             "![Example clips](generation_speech.png)", "",
             "| row | what | seeds | " + " | ".join(t for _, t, _ in COLUMNS) + " | corpus WER |",
             "|---|---|---|" + "---|" * (len(COLUMNS) + 1)]
    for r in rows:
        cells = " | ".join(_cell(r.get(c), d) for c, _, d in COLUMNS)
        cw = f"{r['corpus_wer']:.3f}" if "corpus_wer" in r else "-"
        seeds = ",".join(str(s) for s in r["seeds"]) if r["seeds"] != [-1] else "-"
        lines.append(f"| {r['name']} | {r['what']} | {seeds} | {cells} | {cw} |")
    lines += ["", "## Paired differences (row - reference)", "",
              ("Per utterance: the difference of the two rows' clips of the same training seed (same noise), "
              "averaged over the seeds; mean over utterances with a 95 % t interval. `*`: the interval "
              "excludes 0. Lower WER is better; higher DNSMOS is better."), "",
              "| row | reference | " + " | ".join(f"Δ {t}" for c, t, _ in COLUMNS if c in PAIRED) + " |",
              "|---|---|" + "---|" * len(PAIRED)]
    for r in rows:
        if r.get("vs_ref"):
            lines.append(f"| {r['name']} | {r['ref']} | " + " | ".join(_diff(r["vs_ref"][c]) for c in PAIRED) + " |")
    lines += ["", "## Against the floor: does the continuation beat silence?", "",
              ("Paired as above, against the floor row of the same prime length (the prime resynthesised, then "
              "silence; one clip per utterance, so each seed's clip is paired with the same floor clip). A "
              "continuation that Whisper hears as the right words would lower the WER below the floor; babble "
              "that it hears as other words raises it."), "",
              "| row | floor | Δ WER | Δ DNSMOS OVRL | Δ words |", "|---|---|---|---|---|"]
    for r in rows:
        if r.get("vs_floor"):
            v = r["vs_floor"]
            lines.append(f"| {r['name']} | {r['floor']} | {_diff(v['wer'])} | {_diff(v['dnsmos_ovrl'])} | {_diff(v['words'], 1)} |")
    lines += ["", "## Seed spread", "", "Mean WER and DNSMOS of each training seed (all its clips).", "",
              "| row | WER by seed | DNSMOS by seed |", "|---|---|---|"]
    for r in rows:
        if r.get("model") is not None or r["seeds"] != [-1]:
            w = ", ".join(f"{v:.2f}" for v in (r.get("wer") or {}).get("seed_means", []))
            d = ", ".join(f"{v:.2f}" for v in (r.get("dnsmos_ovrl") or {}).get("seed_means", []))
            lines.append(f"| {r['name']} | {w} | {d} |")
    return "\n".join(lines) + "\n"


FIGURE_ROWS = ("original", "ceiling", "floor", "vrnn/base", "vrnn/T=0.5", "vrnn/real-prime", "srnn/base")


def figure(out: Path) -> Path | None:
    """Log-Mel spectrograms (the analysis of stats.logmel) of the example clips of one utterance
    (training seed 0), the end of the prime marked: experiments/results/generation_speech.png."""
    import soundfile as sf

    from dvae_jax import config as config_lib
    from dvae_jax import plots
    from dvae_jax.audio import stats

    feat = config_lib.load_named("vrnn_mel160_speech").features
    panels, marks = [], {}
    for name in FIGURE_ROWS:
        wav = out / "wavs" / f"{name.replace('/', '__')}.wav"
        if not wav.exists():
            continue
        wave, _ = sf.read(wav, dtype="float32")
        if name not in ("original", "ceiling"):
            marks[len(panels)] = round(BASE["prime_s"] * feat.sample_rate / feat.hop_length)
        panels.append((f"{name} ({META['utterances'][0]}, seed 0)", stats.logmel(wave, feat)))
    if not panels:
        return None
    return plots.spectrograms(panels, RESULTS / "generation_speech.png", marks, ylabel="log-Mel band")


def table(args: argparse.Namespace) -> None:
    out = Path(args.runs) / "generation_study"
    META.update(json.loads((out / "meta.json").read_text()))
    recs = load_records(out)
    names = {r["cond"] for r in recs}
    rows = [summarise(recs, c) for c in conditions() if c.name in names]
    meta = dict(META, n_clips=len(recs), when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "generation_speech.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    md = RESULTS / "generation_speech.md"
    keep = ""
    if md.exists() and "\n## Findings" in md.read_text():
        keep = md.read_text()[md.read_text().index("\n## Findings"):]
    md.write_text(markdown(rows, meta) + keep)
    figure(out)
    print(md.read_text())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("phase", choices=("run", "table"))
    p.add_argument("--runs", default=str(ROOT / "runs" / "speech160"))
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--shard", default="0/1", help="i/k: this process runs jobs i, i+k, ...")
    p.add_argument("--max-minutes", type=float, default=60.0)
    p.add_argument("--all", action="store_true", help="also the extra rows (temperature 0, GL 128, SRNN sampling and prior prime)")
    p.add_argument("--one-thread", action="store_true", help="DNSMOS and Whisper on one thread each")
    args = p.parse_args(argv)
    shard = args.shard.split("/")
    if len(shard) != 2 or not all(v.isdigit() for v in shard) or not int(shard[0]) < int(shard[1]):
        p.error(f"--shard {args.shard!r}: expected i/k with 0 <= i < k, e.g. 0/2")
    if args.phase == "table" and not (Path(args.runs) / "generation_study" / "meta.json").exists():
        p.error(f"--runs {args.runs}: no generation_study/meta.json there: run the 'run' phase first")
    if args.phase == "run" and not Path(args.runs).is_dir():
        p.error(f"--runs {args.runs}: no such folder: train the models with experiments/studies/train_speech160.sh")
    (run if args.phase == "run" else table)(args)


if __name__ == "__main__":
    main()
