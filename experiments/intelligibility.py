"""Intelligibility on real speech (issue 17). Sub-command ``ceiling``: how much each road from
features back to audio loses, before any model.

A *road* is an analysis (log-Mel with 80 / 128 / 160 bands, the 513-bin STFT magnitude, or WORLD
vocoder features) and its way back to a waveform (Mel inverse pinv or NNLS, then fast Griffin-Lim
with 32 / 64 / 128 iterations; the original phase for the STFT reference row; WORLD synthesis).
Every road runs on the same utterances of the ``asterisk`` corpus (one speaker's read prompts,
trimmed and peak-normalised by the project's prepare step; transcripts from the prepared
dataset), and each output is scored against the original: PESQ-wb and ESTOI
(dvae_jax.audio.metrics.compute_all: 0.9 peak, trimmed to the shorter), DNSMOS OVRL and Whisper
WER against the transcript (dvae_jax.audio.quality), and the road's time per second of audio
(analysis + inversion, median; Griffin-Lim compilations are done before timing). The top row is
the original audio (DNSMOS and WER only). A further row, ``evaluate-mel80-pinv-gl64`` (PESQ and
ESTOI only), repeats exactly what ``dvae-jax evaluate`` does for its ceiling (normalise and
de-normalise, clip, Griffin-Lim as the second item of a batch of two) to check the two agree.

Usage (from the repository root; Whisper on CPU is the slow part, about 1 s per utterance and row):
    python experiments/intelligibility.py ceiling --n 6 --out /tmp/ceiling     # a quick check
    python experiments/intelligibility.py ceiling --n 82 --cache-dir cache \\
        --out experiments/results/intelligibility
    python experiments/intelligibility.py ceiling --rows 'mel80-*,world-*' --n 20 --out /tmp/x

Per-utterance results go to OUT.utterances.jsonl as they come (a re-run with the same rows skips
the utterances already there); OUT.json and OUT.md hold the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import math
import os
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from dvae_jax import config as config_lib

SR = 16000
ORIGINAL = "original"
EVALUATE_ROW = "evaluate-mel80-pinv-gl64"
PESQ, ESTOI = "pesq_wb", "estoi"
COLUMNS = {  # short key -> what the cell is
    PESQ: "pesq_wb (pesq package, wide-band, 16 kHz)",
    ESTOI: "estoi (pystoi, extended=True)",
    "dnsmos_ovrl": "dnsmos_ovrl (speechmos DNSMOS P.835, 16 kHz)",
    "wer": "wer (faster-whisper tiny.en, CTranslate2, greedy; jiwer, Whisper EnglishTextNormalizer)",
    "rtf": "CPU seconds per second of audio (analysis + inversion; process CPU time)",
}


@dataclasses.dataclass(frozen=True)
class Road:
    """One way from a waveform to features and back.

    Attributes:
        name: the row's name, e.g. 'mel80-pinv-gl64'.
        kind: 'mel', 'stft', 'world' or 'original'.
        n_mels: Mel bands ('mel').
        inverse: 'pinv' / 'nnls' (Mel inverse), 'gl' / 'phase' (STFT), 'harvest' / 'dio' (WORLD F0).
        n_iter: Griffin-Lim iterations (0 where no Griffin-Lim).
    """

    name: str
    kind: str
    n_mels: int = 0
    inverse: str = ""
    n_iter: int = 0


def all_roads() -> list[Road]:
    """Every road the sub-command knows, in table order."""
    roads = [Road(ORIGINAL, ORIGINAL)]
    for n_mels in (80, 128, 160):
        for inverse in ("pinv", "nnls"):
            roads += [Road(f"mel{n_mels}-{inverse}-gl{k}", "mel", n_mels, inverse, k) for k in (32, 64, 128)]
    roads += [Road(f"stft513-gl{k}", "stft", 0, "gl", k) for k in (32, 64, 128)]
    roads.append(Road("stft513-phase", "stft", 0, "phase"))
    roads += [Road(f"world60-{m}", "world", 0, m) for m in ("harvest", "dio")]
    roads.append(Road(EVALUATE_ROW, "evaluate", 80, "pinv", 64))
    return roads


# The default table (sized for Whisper and DNSMOS on 2 shared CPU cores): the Griffin-Lim sweep
# (32 / 64 / 128) for the project's default road (80 bands, pinv), the best Mel road of the quick
# check (160 bands, NNLS) and the STFT magnitude; 64 iterations elsewhere.
DEFAULT_ROWS = ("mel80-pinv-*,mel80-nnls-gl64,mel128-*-gl64,mel160-pinv-gl64,mel160-nnls-*,stft513-*,"
                "world60-*,evaluate-*")


# DNSMOS and Whisper cost about 1.6 s of CPU per utterance and road; on 2 shared cores they run
# on these roads only (the Griffin-Lim sweeps and the original-phase row get PESQ, ESTOI and time).
QUALITY_ROWS = "original,mel80-*-gl64,mel160-*-gl64,stft513-gl64,world60-*"


def matches(name: str, patterns: str) -> bool:
    """Whether ``name`` matches one of the comma-separated fnmatch ``patterns`` ('all': any)."""
    return patterns == "all" or any(fnmatch.fnmatch(name, p.strip()) for p in patterns.split(","))


def pick_roads(patterns: str | None) -> list[Road]:
    """The roads whose names match one of the comma-separated fnmatch ``patterns`` (None: the
    default table, :data:`DEFAULT_ROWS`; 'all': every road); the original row is always kept."""
    roads = all_roads()
    if patterns == "all":
        return roads
    patterns = patterns or DEFAULT_ROWS
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [r for r in roads if r.name == ORIGINAL or any(fnmatch.fnmatch(r.name, p) for p in pats)]
    unknown = [p for p in pats if not any(fnmatch.fnmatch(r.name, p) for r in roads)]
    if unknown:
        raise SystemExit(f"--rows: no road matches {unknown}; known: {', '.join(r.name for r in roads)}")
    return chosen


def feature_cfg(kind: str, n_mels: int = 80) -> config_lib.FeatureConfig:
    """The project's default analysis (sine 1024 / hop 256 at 16 kHz) as 'mel' with ``n_mels`` or 'stft'."""
    return config_lib.FeatureConfig(kind=kind, n_mels=n_mels if kind == "mel" else 80)


# --------------------------------------------------------------------------------------------
# Roads: waveform -> features -> waveform, timed

_WARM: set = set()


def _griffin_lim(mag: np.ndarray, fcfg, n_iter: int, length: int, seed: int) -> tuple[np.ndarray, float]:
    """JAX fast Griffin-Lim as the project runs it (64-frame buckets); the first call of a bucket
    shape compiles untimed, so the time is the road's, not XLA's."""
    from dvae_jax.audio import griffin_lim as gl_lib
    from dvae_jax.audio import inversion

    # Griffin-Lim reads only the STFT settings: one compilation serves every Mel size and the STFT
    fcfg = dataclasses.replace(fcfg, kind="stft", n_mels=80)
    t, bucket = mag.shape[-1], inversion.GL_BUCKET
    shape_key = (fcfg, -(-t // bucket)) if t % bucket else (fcfg, t, length)
    run = lambda k: np.asarray(gl_lib.griffin_lim_jax(mag, fcfg, n_iter=k, key=seed, length=length,
                                                      bucket=bucket), np.float32)
    if shape_key not in _WARM:
        run(1)
        _WARM.add(shape_key)
    t0 = time.process_time()
    wave = run(n_iter)
    return wave, time.process_time() - t0


def _spectral_roads(wave: np.ndarray, roads: list[Road], seed: int) -> dict[str, tuple]:
    """{name: (wave, seconds)} for the Mel and STFT roads; features and magnitudes computed once
    per analysis and inverse, their time added to every road that shares them."""
    from dvae_jax.audio import inversion, spectral

    out: dict[str, tuple] = {}
    n = len(wave)
    groups = sorted({(r.kind, r.n_mels) for r in roads if r.kind in ("mel", "stft")})
    for kind, n_mels in groups:
        fcfg = feature_cfg(kind, n_mels or 80)
        t0 = time.process_time()
        if kind == "stft":
            spec = spectral.stft(wave, fcfg)  # one analysis gives the magnitude and the phase
            feats = np.maximum(np.abs(spec) ** 2, fcfg.power_floor).T.astype(np.float32)
        else:
            feats = spectral.wave_to_features(wave, fcfg)
        t_analysis = time.process_time() - t0
        mine = [r for r in roads if (r.kind, r.n_mels) == (kind, n_mels)]
        for inverse in sorted({r.inverse for r in mine}):
            t0 = time.process_time()
            mel_inverse = inverse if kind == "mel" else "pinv"
            mag = inversion.features_to_magnitude(inversion.to_raw(feats, fcfg), fcfg, mel_inverse)
            t_mag = time.process_time() - t0
            for road in (r for r in mine if r.inverse == inverse):
                if road.inverse == "phase":
                    t0 = time.process_time()
                    est = inversion.features_to_wave(feats, fcfg, phase=spec.T, length=n, method="phase")
                    out[road.name] = (est, t_analysis + time.process_time() - t0)
                    continue
                est, t_gl = _griffin_lim(mag, fcfg, road.n_iter, n, seed)
                out[road.name] = (est, t_analysis + t_mag + t_gl)
    return out


def _world_road(wave: np.ndarray, road: Road) -> tuple[np.ndarray, float]:
    from dvae_jax.audio import world

    wcfg = world.WorldConfig(sample_rate=SR, hop_length=256, f0_method=road.inverse, sp_dims=60)
    t0 = time.process_time()
    est = world.synthesise(world.analyse(wave, wcfg), wcfg, length=len(wave))
    return est, time.process_time() - t0


def _evaluate_road(wave: np.ndarray, dataset, seed: int) -> tuple[np.ndarray | str, float]:
    """evaluate.to_waves on [features, features] (model and ceiling in one batch, as evaluate runs
    them) with the dataset's normaliser; the second wave is evaluate's ceiling. Not timed."""
    from dvae_jax import evaluate
    from dvae_jax.audio import spectral

    fcfg = feature_cfg("mel", 80)
    norm = dataset.normalize(spectral.wave_to_features(wave, fcfg))
    waves = evaluate.to_waves([norm, norm], fcfg, wave, "griffin_lim_jax", "pinv", 64, seed,
                              denormalize=dataset.denormalize)
    return waves[1], math.nan


def road_waves(wave: np.ndarray, roads: list[Road], dataset, seed: int) -> dict[str, tuple]:
    """{road name: (estimated wave or the reason it failed, seconds)} for one utterance."""
    out: dict[str, tuple] = {}
    try:
        out.update(_spectral_roads(wave, roads, seed))
    except Exception as err:  # noqa: BLE001 - a failed road is a NaN row for this utterance
        out.update({r.name: (f"{type(err).__name__}: {err}", math.nan) for r in roads
                    if r.kind in ("mel", "stft")})
    for road in roads:
        try:
            if road.kind == "world":
                out[road.name] = _world_road(wave, road)
            elif road.kind == "evaluate":
                out[road.name] = _evaluate_road(wave, dataset, seed)
        except Exception as err:  # noqa: BLE001 - as above
            out[road.name] = (f"{type(err).__name__}: {err}", math.nan)
    return out


# --------------------------------------------------------------------------------------------
# Scores of one utterance


def _nan(reason: str) -> float:
    from dvae_jax.audio import metrics as metrics_lib

    return metrics_lib.MetricNaN(reason)


def score(ref: np.ndarray, est: np.ndarray | str, text: str | None, road: Road,
          seconds: float, audio_s: float, with_quality: bool = True
          ) -> tuple[dict[str, float], str | None, dict[str, str]]:
    """(cells by short column key, Whisper's hypothesis, {column: reason} for NaN cells); DNSMOS
    and WER only ``with_quality``."""
    from dvae_jax.audio import metrics as metrics_lib
    from dvae_jax.audio import quality

    if isinstance(est, str):
        cells = {k: _nan(est) for k in COLUMNS}
        return cells, None, {k: est for k in cells}
    cells: dict[str, float] = {"rtf": seconds / audio_s}
    if road.kind != ORIGINAL:
        scores = metrics_lib.compute_all(ref, est, SR, which=(PESQ, ESTOI))
        cells[PESQ] = scores[metrics_lib.metric_name(PESQ)]
        cells[ESTOI] = scores[metrics_lib.metric_name(ESTOI)]
    hypothesis = None
    if with_quality and road.kind != "evaluate":
        try:
            cells["dnsmos_ovrl"] = quality.dnsmos(est, SR)[quality.DNSMOS_NAMES["ovrl_mos"]]
        except Exception as err:  # noqa: BLE001 - one failing measure is a NaN cell
            cells["dnsmos_ovrl"] = _nan(str(err))
        if not text:
            cells["wer"] = _nan("no transcript")
        else:
            try:
                cells["wer"], hypothesis, _ = quality.asr_score(est, SR, text)
            except Exception as err:  # noqa: BLE001 - as above
                cells["wer"] = _nan(str(err))
    reasons = {k: getattr(v, "reason", "NaN") for k, v in cells.items()
               if isinstance(v, float) and math.isnan(v) and k != "rtf"}
    return cells, hypothesis, reasons


def select_utterances(dataset, n: int, max_seconds: float) -> list[tuple[str, int]]:
    """``n`` (split, index) pairs spread evenly (evaluate.select) over the test utterances of at
    most ``max_seconds``, topped up from the validation split when there are fewer than ``n``."""
    from dvae_jax import evaluate

    def short(split: str) -> list[int]:
        lengths = dataset.split(split).lengths * 256 / SR  # frames -> seconds (hop 256)
        return [i for i, s in enumerate(lengths) if not max_seconds or s <= max_seconds]

    test = short("test")
    chosen = [("test", test[i]) for i in evaluate.select(len(test), n)]
    if n > len(test):
        val = short("val")
        chosen += [("val", val[i]) for i in evaluate.select(len(val), n - len(test))]
    return chosen


def _done(path: Path, names: list[str]) -> dict[str, dict]:
    """Utterances already in the jsonl with every road of this run."""
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if all(name in rec["rows"] for name in names):
                done[rec["key"]] = rec
    return done


def _drop_quality(rec: dict, quality_rows: str) -> dict:
    """A stored record restricted to the DNSMOS / WER cells of ``quality_rows`` (a re-run with
    fewer quality rows reuses it)."""
    for name, cells in rec["rows"].items():
        if not matches(name, quality_rows):
            cells.pop("dnsmos_ovrl", None)
            cells.pop("wer", None)
            rec["hypotheses"].pop(name, None)
    return rec


def merge_records(target: Path, sources: list[str]) -> None:
    """Rows of other runs' .utterances.jsonl (e.g. some roads re-run with DNSMOS and WER) merged
    into ``target``'s records of the same utterances: a stored road gains the cells it lacks and
    keeps the ones it has (times measured on a differently loaded machine do not mix)."""
    stored: dict[str, dict] = {}
    if target.exists():
        for line in target.read_text().splitlines():
            rec = json.loads(line)
            stored[rec["key"]] = rec  # a later line supersedes an earlier one
    for source in sources:
        for line in Path(source).read_text().splitlines():
            new = json.loads(line)
            rec = stored.setdefault(new["key"], {**new, "rows": {}, "hypotheses": {}, "reasons": {}})
            for road, cells in new["rows"].items():
                rec["rows"][road] = {**cells, **rec["rows"].get(road, {})}
            for part in ("hypotheses", "reasons"):
                rec[part] = {**new.get(part, {}), **rec.get(part, {})}
    tmp = target.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(rec) + "\n" for rec in stored.values()))
    tmp.replace(target)


def run_ceiling(dataset, roads: list[Road], chosen: list[tuple[str, int]], jsonl: Path,
                seed: int = 0, quality_rows: str = QUALITY_ROWS, quality_every: int = 1,
                table_only: bool = False) -> list[dict]:
    """Every road on the ``chosen`` utterances; one JSON line per utterance appended to ``jsonl``.
    DNSMOS and WER on the ``quality_rows`` of every ``quality_every``-th utterance only; a stored
    utterance that lacks them is run again (its later line supersedes the earlier one).
    Times are process CPU time (robust to other jobs on the machine); Griffin-Lim compiles each
    length bucket untimed before its first timed call; the median over utterances absorbs the
    first call's caches."""
    names = [r.name for r in roads]
    done = _done(jsonl, names)
    records = []
    for pos, (split, index) in enumerate(chosen):
        data = dataset.split(split)
        key = f"{split}/{data.utt_ids[index]}"
        wants_quality = [r.name for r in roads if r.kind != "evaluate" and matches(r.name, quality_rows)
                         and pos % quality_every == 0]
        if key in done and (table_only or all("dnsmos_ovrl" in done[key]["rows"][name] for name in wants_quality)):
            rec = _drop_quality(done[key], quality_rows)
            if rec.get("timing") != "cpu":  # wall-clock times of a shared machine: not comparable
                for cells in rec["rows"].values():
                    cells.pop("rtf", None)
            records.append(rec)
            continue
        if table_only:
            continue
        t0 = time.time()
        ref = dataset.load_wave(split, index)
        text = data.texts[index]
        audio_s = len(ref) / SR
        waves = road_waves(ref, roads, dataset, seed)
        waves[ORIGINAL] = (ref, 0.0)
        rec = {"key": key, "split": split, "index": int(index), "utt_id": data.utt_ids[index], "timing": "cpu",
               "text": text, "seconds": audio_s, "rows": {}, "hypotheses": {}, "reasons": {}}
        for road in roads:
            est, seconds = waves[road.name]
            cells, hyp, reasons = score(ref, est, text, road, seconds, audio_s,
                                        road.name in wants_quality)
            rec["rows"][road.name] = {k: float(v) for k, v in cells.items()}
            if hyp is not None:
                rec["hypotheses"][road.name] = hyp
            if reasons:
                rec["reasons"][road.name] = reasons
        with jsonl.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        records.append(rec)
        print(f"[{pos + 1}/{len(chosen)}] {key} {audio_s:.1f} s audio, {time.time() - t0:.1f} s", flush=True)
    return records


# --------------------------------------------------------------------------------------------
# The table

DEFAULT_ROAD = "mel80-pinv-gl64"  # the project's default: features.n_mels=80, evaluate's pinv, 64 iterations


def _values(records: list[dict], name: str, col: str) -> np.ndarray:
    return np.array([r["rows"][name].get(col, math.nan) for r in records if name in r["rows"]], np.float64)


def _paired(records: list[dict], name: str, col: str, base: str = DEFAULT_ROAD) -> dict:
    """Mean of (row - base) over utterances where both are finite, with a 95 % t interval."""
    from scipy import stats as sps

    pairs = [(r["rows"][name].get(col, math.nan), r["rows"][base].get(col, math.nan))
             for r in records if name in r["rows"] and base in r["rows"]]
    d = np.array([a - b for a, b in pairs if math.isfinite(a) and math.isfinite(b)], np.float64)
    if d.size < 2:
        return {"mean": math.nan, "ci95_low": math.nan, "ci95_high": math.nan, "n": int(d.size)}
    half = float(sps.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return {"mean": float(d.mean()), "ci95_low": float(d.mean() - half), "ci95_high": float(d.mean() + half),
            "n": int(d.size)}


def aggregate(records: list[dict], roads: list[Road]) -> dict[str, dict]:
    """Per road and column: summarize (mean, median, 95 % BCa bootstrap interval, n, n_nan); the
    corpus WER (total edits / total words); paired differences against the default road."""
    from dvae_jax.audio import metrics as metrics_lib
    from dvae_jax.audio import quality

    table = {}
    for road in roads:
        cells = {}
        for col in COLUMNS:
            vals = _values(records, road.name, col)
            if np.isfinite(vals).any():
                cells[col] = metrics_lib.summarize([{col: v} for v in vals], seed=0)[col]
        refs = [r["text"] for r in records if road.name in r.get("hypotheses", {})]
        hyps = [r["hypotheses"][road.name] for r in records if road.name in r.get("hypotheses", {})]
        if refs:
            cells["corpus_wer"] = float(quality.word_error_rate(refs, hyps))
        if road.kind not in (ORIGINAL, "evaluate") and road.name != DEFAULT_ROAD and any(
                DEFAULT_ROAD in r["rows"] for r in records):
            cells["vs_default"] = {c: _paired(records, road.name, c) for c in (PESQ, ESTOI, "wer")}
        table[road.name] = cells
    return table


def evaluate_check(records: list[dict], results_json: Path | None) -> dict:
    """The default road against evaluate's ceiling: this script's replica of evaluate's path on
    the same utterances, and (when given) a stored ``evaluation/results.json``, matched by utt_id."""
    out: dict = {"replica_vs_default": {c: _paired(records, EVALUATE_ROW, c) for c in (PESQ, ESTOI)}}
    if results_json is None or not results_json.exists():
        return out
    stored = json.loads(results_json.read_text())
    by_id = {u["utt_id"]: u["metrics"].get("ceiling", {}) for u in stored["utterances"]}
    names = {PESQ: COLUMNS[PESQ], ESTOI: COLUMNS[ESTOI]}
    shared = [r for r in records if r["utt_id"] in by_id and DEFAULT_ROAD in r["rows"]]
    for col, full in names.items():
        theirs = np.array([by_id[r["utt_id"]].get(full, math.nan) for r in shared], np.float64)
        for row in (DEFAULT_ROAD, EVALUATE_ROW):
            mine = np.array([r["rows"].get(row, {}).get(col, math.nan) for r in shared], np.float64)
            ok = np.isfinite(theirs) & np.isfinite(mine)
            out[f"{row} vs stored evaluate ceiling, {col}"] = {
                "n": int(ok.sum()), "mine_mean": float(mine[ok].mean()) if ok.any() else math.nan,
                "stored_mean": float(theirs[ok].mean()) if ok.any() else math.nan,
                "max_abs_diff": float(np.max(np.abs(mine[ok] - theirs[ok]))) if ok.any() else math.nan}
    out["stored"] = str(results_json)
    return out


def _cell(stats: dict | None, digits: int = 2) -> str:
    if not stats or not math.isfinite(stats.get("mean", math.nan)):
        return "-"
    text = f"{stats['mean']:.{digits}f}"
    if math.isfinite(stats.get("ci95_low", math.nan)):
        text += f" [{stats['ci95_low']:.{digits}f}, {stats['ci95_high']:.{digits}f}]"
    return text


def _describe(road: Road) -> tuple[str, str, str]:
    if road.kind == ORIGINAL:
        return "the original audio (trimmed, peak 1)", "-", "-"
    if road.kind in ("mel", "evaluate"):
        extra = " (evaluate's exact path)" if road.kind == "evaluate" else ""
        return f"log-Mel {road.n_mels}{extra}", road.inverse, str(road.n_iter)
    if road.kind == "stft":
        return "STFT magnitude 513", "-", "original phase" if road.inverse == "phase" else str(road.n_iter)
    return f"WORLD ({road.inverse} F0, 60-d coded envelope, coded aperiodicity)", "-", "WORLD synthesis"


DISCUSSION = "## Which road should be the default"


def markdown(table: dict, roads: list[Road], meta: dict, check: dict, keep: str = "") -> str:
    lines = [
        "# Intelligibility ceiling: the road from features back to audio, on real speech", "",
        (f"Run {meta['date']} on {meta['machine']}; {meta['n']} utterances of the asterisk corpus "
        f"({meta['source']}), the same for every row; wall time {meta['wall_s'] / 60:.1f} min."),
        f"Command: `{meta['command']}`", "",
        ("Cells: mean [95 % BCa bootstrap interval of the mean] over utterances. PESQ-wb and ESTOI "
        "against the original (both 0.9 peak); DNSMOS OVRL of the output; WER of Whisper tiny.en "
        "(faster-whisper, greedy) against the transcript, Whisper's English normaliser, per "
        "utterance (corpus WER = total edits / total words); time = CPU seconds (process time) per "
        "second of audio, analysis + inversion, median (one niced CPU thread, shared machine; Griffin-Lim "
        "in JAX, compiled before timing). Analysis: sine window 1024, hop 256, 16 kHz. DNSMOS and "
         f"WER were computed on the roads {meta.get('quality_rows', 'all')} only ('-' elsewhere: "
         "their cost on 2 shared CPU cores)."), "",
        ("| road | features | Mel inverse | Griffin-Lim iterations | PESQ-wb | ESTOI | DNSMOS OVRL "
        "| WER | corpus WER | time / s audio (median) |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for road in roads:
        c = table[road.name]
        feats, inverse, iters = _describe(road)
        rtf = c.get("rtf", {}).get("median", math.nan)
        corpus_wer = f"{c['corpus_wer']:.3f}" if "corpus_wer" in c else "-"
        lines.append(
            f"| {road.name} | {feats} | {inverse} | {iters} | {_cell(c.get(PESQ))} | {_cell(c.get(ESTOI))} "
            f"| {_cell(c.get('dnsmos_ovrl'))} | {_cell(c.get('wer'))} | {corpus_wer} | "
            + (f"{rtf:.4f} |" if math.isfinite(rtf) else "- |"))
    lines += ["", f"## Paired differences against the default road ({DEFAULT_ROAD})", "",
              "Mean of (row - default) over the same utterances, 95 % t interval.", "",
              "| road | PESQ-wb | ESTOI | WER |", "|---|---|---|---|"]
    for road in roads:
        vs = table[road.name].get("vs_default")
        if vs:
            lines.append(f"| {road.name} | " + " | ".join(_cell(vs[c], 3) for c in (PESQ, ESTOI, "wer")) + " |")
    lines += ["", "## Agreement with `dvae-jax evaluate`'s ceiling", "", "```",
              json.dumps(check, indent=1), "```", ""]
    return "\n".join(lines) + (keep or f"\n{DISCUSSION}\n\n(to be written from the numbers above)\n")


def _kept_discussion(md_path: Path) -> str:
    if not md_path.exists():
        return ""
    text = md_path.read_text()
    at = text.find(DISCUSSION)
    return "\n" + text[at:] if at >= 0 else ""


def _dnsmos_one_thread() -> None:
    """speechmos builds its ONNX sessions with onnxruntime's defaults (a spinning thread per
    core); on a CPU shared with other jobs that burns time: the same models on one thread."""
    try:
        import onnxruntime as ort
        from speechmos import dnsmos as speechmos_dnsmos
    except ImportError:
        return
    from dvae_jax.audio import quality

    quality.dnsmos(0.1 * np.sin(np.arange(SR) * 0.05), SR)  # makes speechmos build its model
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model = speechmos_dnsmos.dnsmos
    folder = os.path.dirname(model.primary_model_path)
    model.onnx_sess = ort.InferenceSession(model.primary_model_path, opts)
    model.p808_onnx_sess = ort.InferenceSession(os.path.join(folder, "model_v8.onnx"), opts)


def ceiling(args: argparse.Namespace) -> None:
    from dvae_jax.data import prepare as prepare_lib

    roads = pick_roads(args.rows)
    data_cfg = config_lib.DataConfig(corpus="asterisk", split_by="utterance", cache_dir=args.cache_dir)
    dataset = prepare_lib.prepare_dataset(data_cfg, config_lib.FeatureConfig(), progress=False)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    chosen = select_utterances(dataset, args.n, args.max_seconds)
    if args.shard:  # 'i/k': every k-th utterance from the i-th, to share the work among processes
        i, k = (int(v) for v in args.shard.split("/"))
        chosen = chosen[i::k]
    if args.merge:
        merge_records(Path(f"{out}.utterances.jsonl"), args.merge)
    if not args.table_only:
        _dnsmos_one_thread()
    records = run_ceiling(dataset, roads, chosen, Path(f"{out}.utterances.jsonl"), args.seed,
                          args.quality_rows, args.quality_every, args.table_only)
    table = aggregate(records, roads)
    check = evaluate_check(records, Path(args.evaluate_results) if args.evaluate_results else None)
    n_test = len(dataset.split("test"))
    longer = int(np.sum(dataset.split("test").lengths * 256 / SR > args.max_seconds)) if args.max_seconds else 0
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), {platform.platform()}",
            "n": len(records), "source": f"test split: {n_test} utterances, {longer} longer than "
            f"{args.max_seconds:g} s left out, {len(records)} spread evenly over the rest",
            "wall_s": float(args.wall_s if args.wall_s else time.time() - t0),
            "command": args.command or " ".join(["python", *sys.argv]), "columns": COLUMNS,
            "default_road": DEFAULT_ROAD, "quality_rows": args.quality_rows,
            "utterances": [r["key"] for r in records]}
    result = {"meta": meta, "roads": [dataclasses.asdict(r) for r in roads], "table": table,
              "evaluate_check": check, "per_utterance": records}
    Path(f"{out}.json").write_text(json.dumps(result, indent=1))
    md = Path(f"{out}.md")
    md.write_text(markdown(table, roads, meta, check, _kept_discussion(md)))
    print(f"wrote {out}.json and {out}.md ({len(records)} utterances, {time.time() - t0:.0f} s)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command_name", required=True)
    p = sub.add_parser("ceiling", help="each road from features back to audio, before any model")
    p.add_argument("--n", type=int, default=82, help="utterances (test split, then val; default 82)")
    p.add_argument("--rows", default=None, help="comma-separated fnmatch patterns of road names, or 'all' (default: DEFAULT_ROWS)")
    p.add_argument("--out", default="experiments/results/intelligibility", help="output prefix")
    p.add_argument("--cache-dir", default="cache", help="data.cache_dir of the prepared asterisk corpus")
    p.add_argument("--max-seconds", type=float, default=20.0,
                   help="leave out utterances longer than this (0: none); the test split holds one of 71 s")
    p.add_argument("--quality-rows", default=QUALITY_ROWS,
                   help="roads (fnmatch patterns, or 'all') that also get DNSMOS and Whisper WER")
    p.add_argument("--quality-every", type=int, default=1,
                   help="DNSMOS and WER on every k-th utterance only (of this process's share)")
    p.add_argument("--table-only", action="store_true",
                   help="compute nothing: the table from the utterances already in OUT.utterances.jsonl")
    p.add_argument("--shard", default="", help="'i/k': run only utterances i, i+k, ... (merge "
                   "the .utterances.jsonl files and re-run without --shard for the table)")
    p.add_argument("--merge", nargs="+", default=[], metavar="JSONL",
                   help="first merge these .utterances.jsonl files (e.g. of --shard runs of some --rows) into OUT's")
    p.add_argument("--seed", type=int, default=0, help="Griffin-Lim initial phase seed")
    p.add_argument("--evaluate-results", default=None,
                   help="a run's evaluation/results.json to compare the default road's ceiling with")
    p.add_argument("--command", default=None, help="the command line to record (default: this one)")
    p.add_argument("--wall-s", type=float, default=0.0, help="wall time to record (default: this run's)")
    args = parser.parse_args(argv)
    missing = [m for m in args.merge if not Path(m).is_file()]
    if missing:
        parser.error(f"--merge {missing[0]}: no such file (a .utterances.jsonl written by a ceiling run)")
    if args.shard and not re.fullmatch(r"\d+/\d+", args.shard):
        parser.error(f"--shard {args.shard!r}: expected i/k, e.g. 0/2")
    ceiling(args)


if __name__ == "__main__":
    main()
