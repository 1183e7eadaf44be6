"""Generation from a run (``dvae-jax generate``): cold start or primed on held-out or any other
speech, inverted to audio, with wav files, spectrogram PNGs and summary.json of reference-free
measures. The pipeline only: its command line is in commands/generate.py, its figure in plots.py,
its report section in report.py."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from dvae_jax import errors, report, run_dir

measure = report.measure  # kept here too: experiments/refine_generation.py imports it from this module


def _pick_primes(ds, utterance: str | None, n: int, p_frames: int, want: int = 0) -> list[tuple[str, int]]:
    """(split, index) of the utterances to prime with: ``utterance`` (searched in test, val, train,
    or the one split of other audio) repeated n times, or the first n utterances of the test split
    (of the audio) with at least ``want`` frames (prime + continuation, so the original covers what
    is generated), falling back to those with more than ``p_frames`` frames."""
    names = [s for s in ("test", "val", "train") if s in ds.split_names] or list(ds.split_names)
    if utterance is not None:
        for name in names:
            split = ds.split(name)
            if utterance in split.utt_ids:
                i = split.utt_ids.index(utterance)
                if split.lengths[i] < p_frames:
                    raise errors.ConfigError(f"utterance '{utterance}' has {split.lengths[i]} frames, fewer than the "
                                             f"{p_frames} prime frames: lower --prime-seconds")
                return [(name, i)] * n
        raise errors.DataError(f"utterance '{utterance}' is in no split of {', '.join(names)}: pass an ID "
                               "listed by dvae-jax prepare, or the file's path relative to --audio without extension")
    first = ds.split(names[0])
    long = [i for i in range(len(first)) if first.lengths[i] >= max(want, p_frames + 1)]
    if len(long) < n:
        long = [i for i in range(len(first)) if first.lengths[i] > p_frames]
    if not long:
        raise errors.ConfigError(f"no '{names[0]}' utterance is longer than {p_frames} prime frames: "
                                 "lower --prime-seconds")
    return [(names[0], long[k % len(long)]) for k in range(n)]


def _peak(wave: np.ndarray, peak: float = 0.9) -> np.ndarray:
    m = float(np.max(np.abs(wave))) if wave.size else 0.0
    return (wave * (peak / m)).astype(np.float32) if m > 0 else wave.astype(np.float32)


def _measures(wave, feat_cfg, real_logmel, boundary, quality_ok, transcript, notes) -> dict[str, Any]:
    """Reference-free measures of one clip; ``real_logmel``: real speech's log-Mel (frames, n_mels),
    a list of them, or None (no reference: the distance is left out)."""
    from dvae_jax.audio import quality, stats

    sr = feat_cfg.sample_rate
    lm = stats.logmel(wave, feat_cfg)
    m: dict[str, Any] = {"spectral_flux_db": stats.spectral_flux(lm), "voiced_frame_ratio": stats.voiced_frame_ratio(wave, sr)}
    if real_logmel is not None:
        m["mean_logmel_distance_db"] = stats.mean_logmel_distance(lm, real_logmel)
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
            m["wer"], m["asr_transcript"], m["asr_reference"] = quality.asr_score(wave, sr, transcript)
        except Exception as e:  # noqa: BLE001
            notes.append(f"asr failed: {e}")
    return m


@dataclasses.dataclass(frozen=True)
class Request:
    """What ``generate`` is asked for (the command line's options)."""

    mode: str = "cold"  # 'cold' | 'primed'
    seconds: float = 3.0  # generated after the prime
    prime_seconds: float = 1.0
    utterance: str | None = None  # primed: the utterance ID to prime with
    n: int = 1
    temperature: float = 1.0
    decode: str = "mean"  # 'mean' | 'sample'
    latent: str = "posterior"  # primed: z during the prime, 'posterior' | 'prior'
    seed: int = 0
    which: str = "best"  # checkpoint
    n_iter: int = 64  # Griffin-Lim iterations
    mel_inverse: str = "nnls"  # log-Mel: audio.inversion.MEL_INVERSES
    prime_output: str = "reconstruction"  # primed: the clip's prime part, 'reconstruction' | 'real'
    quality: bool = True
    figures: bool = True
    audio: tuple[str, str] | None = None  # primed: (corpus, root) of other speech to prime with

    def check(self) -> None:
        if self.mode not in ("cold", "primed"):
            raise errors.ConfigError(f"--mode must be 'cold' or 'primed', got {self.mode!r}")
        if self.n < 1 or not self.seconds >= 0 or (self.mode == "primed" and not self.prime_seconds > 0):
            raise errors.ConfigError(f"--n must be >= 1 (got {self.n}), --seconds >= 0 (got {self.seconds:g}) and "
                                     f"--prime-seconds > 0 (got {self.prime_seconds:g})")
        if not self.temperature >= 0 or self.n_iter < 1:
            raise errors.ConfigError(f"--temperature must be >= 0 (got {self.temperature:g}) and "
                                     f"--griffin-lim-iters >= 1 (got {self.n_iter})")
        if self.prime_output not in ("reconstruction", "real"):
            raise errors.ConfigError(f"--prime-output must be 'reconstruction' or 'real', got {self.prime_output!r}")
        if self.mel_inverse not in ("pinv", "nnls"):
            raise errors.ConfigError(f"--mel-inverse must be 'pinv' or 'nnls', got {self.mel_inverse!r}")
        if self.audio is not None and self.mode != "primed":
            raise errors.ConfigError("--audio / --root give speech to prime with: use them with --mode primed")


@dataclasses.dataclass
class _Context:
    """A loaded run and what generation reads from it."""

    cfg: Any
    variables: Any
    meta: dict
    data: run_dir.RunData
    source: Any  # primed: prepare.Dataset or prepare.AudioSet holding the primes; cold: None
    primes: list[tuple[str, int]]
    p_frames: int
    n_frames: int
    notes: list[str]
    quality_ok: dict[str, bool]


def _load(workdir, req: Request, dataset) -> _Context:
    """The run, its stored data, and for primed mode the prime utterances."""
    from dvae_jax import checkpoint
    from dvae_jax.audio import quality as quality_lib
    from dvae_jax.data import prepare

    cfg, variables, meta = checkpoint.load_run(workdir, req.which)
    feat = cfg.features
    if cfg.model.x_dim != feat.n_bins:
        raise errors.ConfigError(f"model.x_dim {cfg.model.x_dim} != {feat.n_bins} feature bins of "
                                 f"features.kind={feat.kind} in {workdir}/config.json")
    frames_per_s = feat.sample_rate / feat.hop_length
    n_frames = round(req.seconds * frames_per_s)
    p_frames = max(1, round(req.prime_seconds * frames_per_s)) if req.mode == "primed" else 0
    source, primes = None, []
    if req.mode == "primed" and req.audio is not None:
        data = run_dir.require(workdir, cfg)
        utterances, root = prepare.list_audio(cfg.data, *req.audio)
        if req.utterance is not None:
            utterances = [u for u in utterances if u.utt_id == req.utterance] or utterances[:0]
            if not utterances:
                raise errors.DataError(f"utterance '{req.utterance}' is not in {root}: pass the file's path "
                                       "relative to it without extension ('/' as '__')")
        source = prepare.featurise(utterances, cfg.data, feat, data.normalizer, root, want=req.n,
                                   min_frames=p_frames + n_frames)
    elif req.mode == "primed":
        source = dataset if dataset is not None else prepare.prepare_dataset(cfg.data, feat, progress=False)
        data = run_dir.require(workdir, cfg, source)
    else:
        data = run_dir.require(workdir, cfg, dataset)
    if source is not None:
        primes = _pick_primes(source, req.utterance, req.n, p_frames, p_frames + n_frames)
    notes: list[str] = []
    quality_ok = {}
    for name in ("dnsmos", "asr"):
        reason = quality_lib.skip_reason(name) if req.quality else "skipped: --no-quality"
        quality_ok[name] = reason is None
        if reason is not None:
            notes.append(f"{name}: {reason}")
    if data.reference_logmel is None:
        notes.append("no real-speech reference stored in the run: mean log-Mel distance left out "
                     "(dvae-jax upgrade-run adds it)")
    return _Context(cfg, variables, meta, data, source, primes, p_frames, n_frames, notes, quality_ok)


def _generate(ctx: _Context, req: Request) -> tuple[np.ndarray, float]:
    """Model-space features (n, frames, bins) and the seconds it took (compilation included)."""
    import jax

    from dvae_jax import generate

    key = jax.random.PRNGKey(req.seed)
    t0 = time.perf_counter()
    if req.mode == "cold":
        feats = generate.cold_start(ctx.cfg.model, ctx.variables, key, ctx.n_frames, req.n, req.temperature,
                                    req.decode)
    else:
        batch = np.stack([ctx.data.normalizer.normalize(ctx.source.split(s).utterance(i)[:ctx.p_frames])
                          for s, i in ctx.primes])
        feats = generate.primed(ctx.cfg.model, ctx.variables, key, batch, ctx.n_frames, req.latent,
                                req.temperature, req.decode, prime_output=req.prime_output)
    feats = np.asarray(jax.block_until_ready(feats))
    gen_s = time.perf_counter() - t0
    if not np.all(np.isfinite(feats)):
        ctx.notes.append("generated features contain non-finite values; they were replaced by the floor")
    return feats, gen_s


def _real(ctx: _Context):
    ref = ctx.data.reference_logmel
    return None if ref is None else ref[None]  # one frame holding the mean: the same mean spectrum


def _primed_item(ctx: _Context, req: Request, k: int, name: str, out_dir: Path) -> dict[str, Any]:
    """The prime's utterance, its original over the generated span and its resynthesis."""
    import soundfile as sf

    from dvae_jax.audio import inversion

    feat = ctx.cfg.features
    split_name, i = ctx.primes[k]
    split = ctx.source.split(split_name)
    item: dict[str, Any] = {"utterance": split.utt_ids[i], "split": split_name, "speaker": split.speakers[i],
                                "prime_frames": ctx.p_frames, "transcript": split.texts[i]}
    span = ctx.p_frames + ctx.n_frames
    orig_feats = split.utterance(i)[:span]
    orig = _peak(ctx.source.load_wave(split_name, i)[: max(0, (orig_feats.shape[0] - 1)) * feat.hop_length])
    # the same path as the generated features, de-normalisation included
    resyn = _peak(inversion.decoded_to_wave(ctx.data.normalizer.normalize(orig_feats), feat,
                                            ctx.data.normalizer.denormalize, fill_nonfinite=True,
                                            method="griffin_lim_jax", n_iter=req.n_iter, seed=req.seed,
                                            mel_inverse=req.mel_inverse))
    sf.write(out_dir / f"{name}_original.wav", orig, feat.sample_rate)
    sf.write(out_dir / f"{name}_resynth.wav", resyn, feat.sample_rate)
    item.update(original_wav=f"{name}_original.wav", resynth_wav=f"{name}_resynth.wav")
    item["resynth"] = _measures(resyn, feat, _real(ctx), None, ctx.quality_ok, item["transcript"], ctx.notes)
    if orig_feats.shape[0] < span:
        ctx.notes.append(f"{item['utterance']} has {orig_feats.shape[0]} frames: its original is shorter "
                         f"than the {span} frames generated")
    return item


def _write_items(ctx: _Context, req: Request, feats: np.ndarray, out_dir: Path) -> tuple[list[dict], float]:
    """Each sequence to wav (+ png, + the prime's original and resynthesis); (items, inversion s)."""
    import soundfile as sf

    from dvae_jax import plots
    from dvae_jax.audio import inversion

    feat = ctx.cfg.features
    items, invert_s = [], 0.0
    for k in range(feats.shape[0]):
        t1 = time.perf_counter()
        wave = _peak(inversion.decoded_to_wave(feats[k], feat, ctx.data.normalizer.denormalize, fill_nonfinite=True,
                                               method="griffin_lim_jax", n_iter=req.n_iter, seed=req.seed + k,
                                               mel_inverse=req.mel_inverse))
        invert_s += time.perf_counter() - t1
        name = f"{req.mode}_{k:02d}"
        sf.write(out_dir / f"{name}.wav", wave, feat.sample_rate)
        item: dict[str, Any] = {"name": name, "wav": f"{name}.wav", "frames": int(feats.shape[1])}
        if req.mode == "primed":
            item.update(_primed_item(ctx, req, k, name, out_dir))
        item["measures"] = _measures(wave, feat, _real(ctx), ctx.p_frames or None, ctx.quality_ok,
                                     item.get("transcript"), ctx.notes)
        if req.figures:
            title = (f"{ctx.cfg.model.model} {req.mode} T={req.temperature} decode={req.decode}"
                     + (f" latent={req.latent} prime={item.get('utterance')}" if req.mode == "primed" else ""))
            raw = inversion.to_raw(feats[k], feat, ctx.data.normalizer.denormalize, fill_nonfinite=True)
            plots.generation_spectrogram(out_dir / f"{name}.png", raw, feat, ctx.p_frames or None, title)
            item["png"] = f"{name}.png"
        items.append(item)
    return items, invert_s


def _inversion_text(feat, req: Request) -> str:
    """How the features went back to audio, for summary.json and the report."""
    if feat.kind == "world":
        return "WORLD synthesis (pyworld, voicing > 0.5; --griffin-lim-iters and --mel-inverse ignored)"
    return (f"griffin_lim_jax n_iter={req.n_iter} momentum=0.99"
            + (f", Mel inverse {req.mel_inverse}" if feat.kind == "mel" else ""))


def _aggregate(items: list[dict], primed: bool) -> dict[str, float]:
    def mean_of(key: str, where: str = "measures") -> float:
        vals = [it[where][key] for it in items if where in it and isinstance(it[where].get(key), float)]
        vals = [v for v in vals if math.isfinite(v)]
        return float(np.mean(vals)) if vals else math.nan

    aggregate = {k: mean_of(k) for k in sorted({k for it in items for k, v in it["measures"].items()
                                                if isinstance(v, float)})}
    if primed:
        for k in sorted({k for it in items for k, v in it["resynth"].items() if isinstance(v, float)}):
            aggregate[f"resynth_{k}"] = mean_of(k, "resynth")
    return aggregate


def generate_run(workdir: str | os.PathLike, out: str | os.PathLike | None = None, dataset=None,
                 request: Request | None = None, **options) -> dict:
    """Generates, inverts, writes ``<out>/{mode}_{k}.wav`` (+ ``.png``), the originals for primed
    mode, and ``<out>/summary.json``; returns the summary.

    Measures (per sequence, and their means under ``aggregate``): mean log-Mel distance (dB) to
    the run's real-speech reference (the mean log-Mel of up to 10 test utterances, stored in
    dataset.json), spectral flux (dB), voiced-frame ratio, and for primed mode the boundary
    continuity at the prime's end; DNSMOS when the [quality] extra is present, and for primed mode
    the ASR word error rate of the generated audio and of the Griffin-Lim resynthesis of the
    original against the utterance's transcript when [asr] is present.

    Args:
        workdir: the run directory. Cold mode needs nothing else (no corpus, no cache).
        out: output folder (default ``<workdir>/generate/<mode>``).
        dataset: the run's own prepared corpus when the caller has it (primed mode; else prepared).
        request: the options as a :class:`Request`, or given as keywords (``options``).
    """
    req = request if request is not None else Request(**options)
    req.check()
    from dvae_jax import checkpoint

    if checkpoint.load_config(workdir).data.corpus == "polyphonic":
        raise errors.ConfigError(f"{workdir} is a piano-roll run (data.corpus=polyphonic): generate writes "
                                 "audio and does not support piano-rolls; dvae_jax.generate.cold_start "
                                 "samples 0/1 frames from Python (decode='sample')")
    ctx = _load(workdir, req, dataset)
    out_dir = Path(out) if out is not None else Path(workdir) / "generate" / req.mode
    out_dir.mkdir(parents=True, exist_ok=True)
    feats, gen_s = _generate(ctx, req)
    items, invert_s = _write_items(ctx, req, feats, out_dir)
    feat = ctx.cfg.features
    audio_s = feats.shape[1] * feat.hop_length / feat.sample_rate
    summary = {
        "workdir": str(workdir), "out": str(out_dir), "mode": req.mode, "model": ctx.cfg.model.model,
        "checkpoint": {k: ctx.meta.get(k) for k in ("checkpoint", "step", "epoch")},
        "settings": {
            "seconds": req.seconds, "prime_seconds": req.prime_seconds if req.mode == "primed" else 0.0, "n": req.n,
            "temperature": req.temperature, "decode": req.decode,
            "latent": req.latent if req.mode == "primed" else None, "seed": req.seed,
            "prime_output": req.prime_output if req.mode == "primed" else None,
            "inversion": _inversion_text(feat, req), "features": feat.kind,
            "primes": None if ctx.source is None else getattr(ctx.source, "root", "the run's corpus"),
        },
        "real_reference": ctx.data.reference_note or None,
        "timing": {"generate_s": gen_s, "invert_s": invert_s, "audio_s_per_sequence": audio_s,
                   "rtf_generate": gen_s / max(audio_s * feats.shape[0], 1e-9),
                   "rtf_invert": invert_s / max(audio_s * feats.shape[0], 1e-9),
                   "note": "generate_s includes compilation"},
        "aggregate": _aggregate(items, req.mode == "primed"),
        "items": items,
        "notes": ctx.notes,
    }
    checkpoint.write_json_atomic(out_dir / "summary.json", _json_safe(summary))
    return summary


# ---------------------------------------------------------------------------------------------
# The demo's generation step: RUN/generation/{cold,primed}/ and RUN/generation/summary.md

GENERATION_DIR = "generation"


def demo_generation(
    workdir: str | os.PathLike, dataset=None, quiet: bool = False, seconds: float = 2.0,
    prime_seconds: float = 1.0, cold_seconds: float = 3.0, quality: bool = True, seed: int = 0,
    n_iter: int = 64,
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
    md = report.generation_markdown([cold, primed], base)
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
