"""Evaluate a run: reconstruction of whole test utterances back to audio, speech metrics, the
inversion ceiling, and posterior-collapse diagnostics (KL per latent dimension, active units).

The review's protocol (MODELS.md): each whole utterance (trimmed, peak-normalised) is one
sequence; z is sampled from the posterior; the decoder's point estimate (report.decoded_features)
is de-normalised and turned back into audio; STFT power goes back with the original phase and an
inverse STFT. Log-Mel has no exact phase path: by default its Mel-inverted magnitude goes through
Griffin-Lim (JAX); ``inversion='phase'`` instead borrows the original phase.

Every table holds a *ceiling* row: the original features through the same path back to audio, so
the model's error and the inversion's error are seen apart. Bad input (a silent reference, a frame
or sample count that does not match, a NaN prediction) never stops a table: the utterance's
metrics become NaN and the reason is listed under the table.

Outputs (RUN/evaluation/): results.json (per utterance, aggregates, settings), results.md (the
tables; a section of report.md), kl_per_dim.png.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dvae_jax import checkpoint, errors, losses, models, plots, report
from dvae_jax import config as config_lib
from dvae_jax.audio import griffin_lim as gl_lib
from dvae_jax.audio import inversion, quality, spectral
from dvae_jax.audio import metrics as metrics_lib
from dvae_jax.data import batches as batches_lib
from dvae_jax.data import prepare as prepare_lib

EVAL_DIR = "evaluation"
INVERSIONS = ("phase", "griffin_lim_jax", "griffin_lim_librosa")
ACTIVE_THRESHOLD = 0.01  # nats per frame
DEFAULT_ASR_N = 2  # Whisper on CPU takes seconds per utterance: only the first few by default
ROWS = ("model", "ceiling", "original")  # 'original': the unprocessed audio (non-intrusive measures only)
ROW_TITLES = {
    "model": "model (z from the posterior, decoder mean)",
    "ceiling": "ceiling (original features, same inversion)",
    "original": "original audio",
}


class EvaluationError(errors.ConfigError):
    """A user-facing problem with an evaluation request (unknown option, empty split)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    split: str = "test"
    n: int | None = None  # None or 0 = every utterance of the split
    batch_size: int = 8
    metrics: tuple[str, ...] | None = None  # short keys of audio.metrics.METRICS; None = all
    inversion: str | None = None  # None: 'phase' for STFT power, 'griffin_lim_jax' for log-Mel
    mel_inverse: str = "pinv"
    n_iter: int = 64  # Griffin-Lim iterations
    seed: int = 0
    quality: bool = True  # DNSMOS and ASR WER, when their extras are installed
    asr_n: int = DEFAULT_ASR_N
    active_threshold: float = ACTIVE_THRESHOLD
    checkpoint: str = "best"


# --------------------------------------------------------------------------------------------
# Utterance selection and the model pass


class _Subset:
    """The few members of prepare.Dataset that eval_batches uses, restricted to chosen utterances
    of one split (in memory; a selection is small)."""

    def __init__(self, dataset: prepare_lib.Dataset, split: str, indices: Sequence[int]):
        data = dataset.split(split)
        feats = [data.utterance(int(i)) for i in indices]
        offsets = np.concatenate([[0], np.cumsum([len(f) for f in feats])]).astype(np.int64)
        pick = lambda xs: [xs[int(i)] for i in indices]
        self._split = split
        self._data = dataclasses.replace(
            data, features=np.concatenate(feats, axis=0) if feats else data.features[:0],
            offsets=offsets, utt_ids=pick(data.utt_ids), speakers=pick(data.speakers), texts=pick(data.texts),
            paths=pick(data.paths), trim=data.trim[np.asarray(indices, np.int64)],
        )
        self.n_bins = dataset.n_bins
        self.normalize = dataset.normalize
        self.denormalize = dataset.denormalize

    def split(self, name: str):
        assert name == self._split
        return self._data


def select(n_total: int, n: int | None) -> list[int]:
    """``n`` utterance indices spread evenly over the split (all when n is None, 0 or >= total):
    splits are ordered by speaker, so the first n would often be one speaker."""
    if not n or n >= n_total:
        return list(range(n_total))
    return sorted({int(round(v)) for v in np.linspace(0, n_total - 1, n)})


@functools.lru_cache(maxsize=8)  # evaluating the same model again (tests, sweeps) reuses the compilations
def _make_apply(model_cfg: config_lib.ModelConfig):
    @jax.jit  # one compilation per bucket shape (eval_batches pads to a few lengths)
    def apply(variables, x, mask, key):
        out, _ = models.forward(model_cfg, variables, x, key=key)
        kl = losses.kl_per_dim(model_cfg, out) * mask[..., None]  # (b, t, z)
        return out.x_out, jnp.sum(kl, axis=1)  # (b, t, out), (b, z)

    return apply


def run_model(cfg: config_lib.Config, variables: Any, dataset, split: str, batch_size: int, seed: int):
    """Posterior pass over every utterance of ``dataset.split(split)``.

    Returns:
        ({position: de-normalised decoded features (frames, bins)}, {position: KL summed over
        frames (z,)}, {position: frames}); positions index ``dataset.split(split)``.
    """
    apply = _make_apply(cfg.model)
    key = jax.random.PRNGKey(seed)
    feats, kl_sums, frames = {}, {}, {}
    for b, batch in enumerate(batches_lib.eval_batches(dataset, split, batch_size)):
        x_out, kl = apply(variables, jnp.asarray(batch["x"]), jnp.asarray(batch["mask"]),
                          jax.random.fold_in(key, b))
        x_out, kl = np.asarray(x_out), np.asarray(kl)
        for row, u in enumerate(batch["index"]):
            if u < 0:
                continue
            t = int(batch["mask"][row].sum())
            decoded = report.decoded_features(cfg.model, x_out[row, :t])
            feats[int(u)] = dataset.denormalize(decoded)
            kl_sums[int(u)] = kl[row]
            frames[int(u)] = t
    return feats, kl_sums, frames


# --------------------------------------------------------------------------------------------
# Back to audio


def _method(feat_cfg: config_lib.FeatureConfig, inversion_name: str | None) -> str:
    method = inversion_name or ("phase" if feat_cfg.kind == "stft" else "griffin_lim_jax")
    if method not in INVERSIONS:
        raise EvaluationError(f"--inversion must be one of {', '.join(INVERSIONS)}, got '{method}'")
    return method


def describe_inversion(feat_cfg: config_lib.FeatureConfig, method: str, mel_inverse: str, n_iter: int) -> str:
    mag = "magnitude sqrt(power)" if feat_cfg.kind == "stft" else f"Mel inverted by {mel_inverse} (magnitude)"
    if method == "phase":
        how = "the original phase + inverse STFT" + (" (the review's protocol)" if feat_cfg.kind == "stft" else
                                                     " (borrowed: a Mel model has no phase of its own)")
    else:
        impl = "JAX" if method == "griffin_lim_jax" else "librosa"
        how = f"fast Griffin-Lim ({impl}, {n_iter} iterations, momentum 0.99, random initial phase)"
    return f"{mag}, {how}"


def to_waves(
    feature_list: Sequence[np.ndarray], feat_cfg: config_lib.FeatureConfig, wave_ref: np.ndarray, method: str,
    mel_inverse: str = "pinv", n_iter: int = 64, seed: int = 0,
) -> list[np.ndarray | str]:
    """Several feature arrays of one utterance back to audio by the same path; an entry that
    cannot be inverted (NaN, wrong shape, frames that do not match the reference) becomes the
    reason as a string. Griffin-Lim (JAX) runs them as one batch: one compilation per length."""
    length = len(wave_ref)
    mags: list[np.ndarray | str] = []
    phase = spectral.stft(wave_ref, feat_cfg).T if method == "phase" else None
    ref_frames = 1 + length // feat_cfg.hop_length
    for feats in feature_list:
        try:
            if np.asarray(feats).ndim == 2 and np.asarray(feats).shape[0] != ref_frames:
                raise inversion.InversionError(
                    f"length mismatch: {np.asarray(feats).shape[0]} feature frames but the reference waveform "
                    f"({length} samples) has {ref_frames} frames")
            mags.append(inversion.features_to_magnitude(feats, feat_cfg, mel_inverse))
        except (inversion.InversionError, config_lib.ConfigError) as err:
            mags.append(f"cannot invert: {err}")
    good = [i for i, m in enumerate(mags) if not isinstance(m, str)]
    out: list[Any] = list(mags)
    if not good:
        return out
    if method == "griffin_lim_jax":
        # failed entries ride along as zeros so the batch shape, hence the compilation, is the same
        shape = (feat_cfg.n_fft // 2 + 1, ref_frames)
        stacked = np.stack([np.zeros(shape, np.float32) if isinstance(m, str) else m for m in mags])
        waves = np.asarray(gl_lib.griffin_lim_jax(stacked, feat_cfg, n_iter=n_iter, key=seed, length=length,
                                                   bucket=inversion.GL_BUCKET),
                           np.float32)
        for i in good:
            out[i] = waves[i]
        return out
    for i in good:
        mag = mags[i]
        if method == "phase":
            spec = mag * np.exp(1j * np.angle(phase)).T.astype(np.complex64)
            out[i] = spectral.istft(spec, feat_cfg, length=length)
        else:
            import librosa

            out[i] = librosa.griffinlim(
                mag, n_iter=n_iter, hop_length=feat_cfg.hop_length, win_length=feat_cfg.win_length,
                n_fft=feat_cfg.n_fft, window=spectral.window(feat_cfg), center=True, pad_mode="reflect",
                length=length, momentum=0.99, init="random", random_state=seed,
            ).astype(np.float32)
    return out


# --------------------------------------------------------------------------------------------
# Metrics of one utterance


def _nan_row(reason: str, keys: Iterable[str]) -> dict[str, float]:
    return {metrics_lib.metric_name(k): metrics_lib.MetricNaN(reason) for k in keys}


def _quality_plan(settings: Settings) -> dict[str, str | None]:
    """{'dnsmos': None or skip message, 'asr': ...}."""
    if not settings.quality:
        msg = "skipped: --no-quality"
        return {"dnsmos": msg, "asr": msg}
    plan = {m: quality.skip_reason(m) for m in ("dnsmos", "asr")}
    if plan["asr"] is None and settings.asr_n <= 0:
        plan["asr"] = "skipped: --asr-n 0"
    return plan


def _quality_row(wave, sr: int, text: str | None, do_dnsmos: bool, do_asr: bool) -> dict[str, float]:
    row: dict[str, float] = {}
    if do_dnsmos:
        try:
            row.update(quality.dnsmos(wave, sr))
        except (metrics_lib.MetricError, quality.SkippedMeasure) as err:
            row.update({name: metrics_lib.MetricNaN(str(err)) for name in quality.DNSMOS_NAMES.values()})
    if do_asr:
        if not text:
            row[quality.WER_NAME] = metrics_lib.MetricNaN("no transcript for this utterance")
        else:
            try:
                row[quality.WER_NAME] = quality.asr_wer(wave, sr, text)
            except (metrics_lib.MetricError, quality.SkippedMeasure) as err:
                row[quality.WER_NAME] = metrics_lib.MetricNaN(str(err))
    return row


def score_utterance(
    wave: np.ndarray, estimates: dict[str, np.ndarray | str], sr: int, keys: Sequence[str]
) -> dict[str, dict[str, float]]:
    """compute_all for every estimate (a string estimate is a failure reason: all NaN)."""
    rows = {}
    for name, est in estimates.items():
        if isinstance(est, str):
            rows[name] = _nan_row(est, keys)
            rows[name][metrics_lib.TRIMMED] = 0.0
        else:
            rows[name] = metrics_lib.compute_all(wave, est, sr, which=keys)
    return rows


# --------------------------------------------------------------------------------------------
# The whole evaluation


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def posterior_diagnostics(kl_sums: dict[int, np.ndarray], frames: dict[int, int], threshold: float) -> dict:
    """Mean KL per latent dimension (nats per frame) over the valid frames of the utterances
    whose KL is finite, and the active units (KL > threshold)."""
    finite = [u for u in kl_sums if np.all(np.isfinite(kl_sums[u]))]
    n_frames = int(sum(frames[u] for u in finite))
    if not finite or n_frames == 0:
        z = len(next(iter(kl_sums.values()))) if kl_sums else 0
        kl = np.full(z, np.nan)
    else:
        kl = np.sum([kl_sums[u] for u in finite], axis=0) / n_frames
    active = [int(i) for i in np.flatnonzero(kl > threshold)]
    return dict(
        kl_per_dim=[float(v) for v in kl], kl_total=float(np.sum(kl)), active_units=len(active),
        active_dims=active, threshold=threshold, frames=n_frames,
        excluded_utterances=len(kl_sums) - len(finite),
    )


def evaluate_run(
    workdir: str | Path,
    split: str = "test",
    n: int | None = None,
    batch_size: int = 8,
    metrics: Sequence[str] | None = None,
    inversion_name: str | None = None,
    mel_inverse: str = "pinv",
    n_iter: int = 64,
    seed: int = 0,
    quality: bool = True,
    asr_n: int = DEFAULT_ASR_N,
    active_threshold: float = ACTIVE_THRESHOLD,
    checkpoint_kind: str = "best",
    dataset: prepare_lib.Dataset | None = None,
    write_report: bool = True,
    progress: bool = False,
) -> dict:
    """Evaluates the run in ``workdir``; writes RUN/evaluation/{results.json, results.md,
    kl_per_dim.png} and (``write_report``) re-renders RUN/report.md.

    Args:
        workdir: a run directory (``dvae-jax train`` or an imported run).
        split: 'test' (default), 'val' or 'train'.
        n: utterances, spread evenly over the split; None / 0 = all.
        batch_size: utterances per model batch.
        metrics: short metric keys (audio.metrics.METRICS) or None for all.
        inversion_name: 'phase', 'griffin_lim_jax' or 'griffin_lim_librosa'; None = 'phase' for
            STFT power (the review's protocol), 'griffin_lim_jax' for log-Mel.
        mel_inverse: 'pinv' or 'nnls' (log-Mel only).
        n_iter: Griffin-Lim iterations.
        seed: posterior samples and Griffin-Lim's initial phase.
        quality: DNSMOS (all utterances) and Whisper WER (the first ``asr_n``) when installed.
        asr_n: utterances given to ASR (slow on CPU).
        active_threshold: KL per frame (nats) above which a latent dimension counts as active.
        checkpoint_kind: 'best' or 'latest'.
        dataset: an already prepared dataset for the run's config (else prepared from the cache).
        write_report: re-render report.md with the evaluation section.
        progress: print a line per utterance.

    Returns:
        The results.json content as a dict (NaN metrics as MetricNaN floats, not None).

    Raises:
        EvaluationError: an unknown option or an empty split.
        checkpoint.CheckpointError: not a run directory, no checkpoint.
    """
    t0 = time.time()
    try:
        keys = list(metrics_lib._resolve(metrics)) if metrics else list(metrics_lib.METRICS)
    except KeyError as err:
        raise EvaluationError(str(err.args[0])) from None
    settings = Settings(split=split, n=n or None, batch_size=batch_size, metrics=tuple(keys),
                        inversion=inversion_name, mel_inverse=mel_inverse, n_iter=n_iter, seed=seed,
                        quality=quality, asr_n=asr_n, active_threshold=active_threshold,
                        checkpoint=checkpoint_kind)
    if mel_inverse not in inversion.MEL_INVERSES:
        raise EvaluationError(f"--mel-inverse must be one of {', '.join(inversion.MEL_INVERSES)}, got '{mel_inverse}'")
    if batch_size < 1:
        raise EvaluationError(f"--batch-size must be >= 1, got {batch_size}")
    workdir = Path(workdir)
    cfg, variables, meta = checkpoint.load_run(workdir, checkpoint_kind)
    feat_cfg = cfg.features
    method = _method(feat_cfg, inversion_name)
    if dataset is None:
        dataset = prepare_lib.prepare_dataset(cfg.data, feat_cfg, progress=False)
    if split not in dataset.split_names:
        raise EvaluationError(f"unknown split '{split}': one of {', '.join(dataset.split_names)}")
    data = dataset.split(split)
    if len(data) == 0:
        raise EvaluationError(f"split '{split}' has no utterances")
    indices = select(len(data), n)
    subset = _Subset(dataset, split, indices)
    feats, kl_sums, frames = run_model(cfg, variables, subset, split, batch_size, seed)
    t_model = time.time() - t0

    plan = _quality_plan(settings)
    sr = feat_cfg.sample_rate
    utterances = []
    for pos, u in enumerate(indices):
        uid = data.utt_ids[u]
        raw = data.utterance(u)
        try:
            wave = dataset.load_wave(split, u)
        except (OSError, ValueError) as err:  # a missing or unreadable file: flag it, go on
            wave = None
            reason = f"cannot load the reference audio: {err}"
        if wave is None:
            scores = {"model": _nan_row(reason, keys), "ceiling": _nan_row(reason, keys)}
        else:
            model_wave, ceiling_wave = to_waves([feats[pos], raw], feat_cfg, wave, method, mel_inverse, n_iter, seed)
            scores = score_utterance(wave, {"model": model_wave, "ceiling": ceiling_wave}, sr, keys)
            do_asr = plan["asr"] is None and pos < asr_n
            if plan["dnsmos"] is None or do_asr:
                for row, w in (("model", model_wave), ("ceiling", ceiling_wave), ("original", wave)):
                    if isinstance(w, str):
                        continue
                    scores.setdefault(row, {}).update(
                        _quality_row(w, sr, data.texts[u], plan["dnsmos"] is None, do_asr))
        reasons = {row: metrics_lib.reasons(vals) for row, vals in scores.items()}
        utterances.append(dict(
            utt_id=uid, index=int(u), speaker=data.speakers[u], text=data.texts[u], frames=int(frames[pos]),
            samples=None if wave is None else len(wave), metrics=scores,
            reasons={k: v for k, v in reasons.items() if v},
        ))
        if progress:
            si = scores["model"].get(metrics_lib.metric_name("si_sdr")) if "si_sdr" in keys else None
            print(f"[evaluate] {pos + 1}/{len(indices)} {uid}" + (f"  model SI-SDR {si:.2f} dB" if si is not None else ""),
                  flush=True)

    names = {row: [] for row in ROWS}
    for utt in utterances:
        for row, vals in utt["metrics"].items():
            names[row].extend(k for k in vals if k not in names[row] and k != metrics_lib.TRIMMED)
    aggregate = {
        row: metrics_lib.summarize([{k: v for k, v in utt["metrics"].get(row, {}).items() if k != metrics_lib.TRIMMED}
                                    for utt in utterances if row in utt["metrics"]], seed=seed)
        for row in ROWS if names[row]
    }
    posterior = posterior_diagnostics({p: kl_sums[p] for p in range(len(indices))},
                                      {p: frames[p] for p in range(len(indices))}, active_threshold)
    settings_out = dict(
        dataclasses.asdict(settings), n_utterances=len(indices), n_split=len(data), utterance_indices=indices,
        features=feat_cfg.kind, n_bins=feat_cfg.n_bins, sample_rate=sr, inversion=method,
        inversion_description=describe_inversion(feat_cfg, method, mel_inverse, n_iter),
        z="sampled from the posterior", decoder="point estimate (" + (
            "expected power exp(log-variance)" if cfg.model.likelihood == "itakura_saito" else "Gaussian mean") + ")",
        metric_names=[metrics_lib.metric_name(k) for k in keys],
        active_threshold=active_threshold, quality=plan, asr_utterances=min(asr_n, len(indices)) if plan["asr"] is None else 0,
        checkpoint=dict(kind=meta.get("checkpoint"), step=meta.get("step"), epoch=meta.get("epoch")),
        model=dict(model=cfg.model.model, prior=cfg.model.prior, likelihood=cfg.model.likelihood, z_dim=cfg.model.z_dim),
        seconds=dict(model=round(t_model, 2), total=round(time.time() - t0, 2)),
    )
    results = dict(
        settings=settings_out,
        **{row: dict(aggregate=aggregate[row]) for row in aggregate},
        posterior=posterior,
        utterances=utterances,
    )
    write_results(workdir, results)
    if write_report:
        report.write_report(workdir)
    return results


# --------------------------------------------------------------------------------------------
# Writing


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
    s = results["settings"]
    post = results["posterior"]
    rows = [r for r in ROWS if r in results]
    names: list[str] = []
    for r in rows:
        names.extend(k for k in results[r]["aggregate"] if k not in names)
    lines = [
        f"## Evaluation: {s['n_utterances']} of {s['n_split']} '{s['split']}' utterances",
        "",
        f"- protocol: whole utterances (trimmed, peak-normalised), z {s['z']}, decoder {s['decoder']}, "
        f"de-normalised; back to audio: {s['inversion_description']}; metrics on both signals scaled to 0.9 peak",
        f"- checkpoint: {s['checkpoint']['kind']} (epoch {s['checkpoint']['epoch']}, step {s['checkpoint']['step']}); "
        f"seed {s['seed']}; {s['seconds']['total']:.0f} s",
        "- cells: mean [95% bootstrap interval of the mean] over utterances; NaN values are excluded and counted",
        "- the ceiling row is the original features through the same path back to audio: the model's error is "
        "the gap between the two rows",
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
        lines.append(f"| {ROW_TITLES[r]} | " + " | ".join(_cell(agg.get(k)) for k in names) + " |")
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


def write_results(workdir: str | Path, results: dict) -> Path:
    out = Path(workdir) / EVAL_DIR
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.write_json_atomic(out / "results.json", _jsonable(results))
    kl = np.asarray(results["posterior"]["kl_per_dim"], float)
    if kl.size:
        plots.kl_per_dim(np.nan_to_num(kl, nan=0.0)[None], out / "kl_per_dim.png",
                         threshold=results["posterior"]["threshold"])
    path = out / "results.md"
    path.write_text(results_markdown(results))
    return path
