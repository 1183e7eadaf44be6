"""Evaluate a run: reconstruction of whole test utterances back to audio, speech metrics, the
inversion ceiling, and posterior-collapse diagnostics (KL per latent dimension, active units).

The review's protocol (MODELS.md): each whole utterance (trimmed, peak-normalised) is one
sequence; z is sampled from the posterior; the decoder's point estimate (report.decoded_features)
is de-normalised and turned back into audio; STFT power goes back with the original phase and an
inverse STFT. Log-Mel has no exact phase path: by default its Mel-inverted magnitude goes through
Griffin-Lim (JAX); ``inversion='phase'`` instead borrows the original phase. WORLD frames go back
by WORLD synthesis (pyworld), whatever the inversion options say.

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

from dvae_jax import checkpoint, errors, losses, models, report, run_dir
from dvae_jax import config as config_lib
from dvae_jax.audio import griffin_lim as gl_lib
from dvae_jax.audio import inversion, quality, spectral
from dvae_jax.audio import metrics as metrics_lib
from dvae_jax.audio.inversion import DEFAULT_MEL_INVERSE
from dvae_jax.data import batches as batches_lib
from dvae_jax.data import prepare as prepare_lib

EVAL_DIR = "evaluation"
INVERSIONS = ("phase", "griffin_lim_jax", "griffin_lim_librosa")
ACTIVE_THRESHOLD = 0.01  # nats per frame
DEFAULT_ASR_N = 2  # Whisper on CPU takes seconds per utterance: only the first few by default
ROWS = report.EVAL_ROWS  # model, ceiling, original (the unprocessed audio: non-intrusive measures only)
ROW_TITLES = report.EVAL_ROW_TITLES


class EvaluationError(errors.ConfigError):
    """A user-facing problem with an evaluation request (unknown option, empty split)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    split: str = "test"
    n: int | None = None  # None or 0 = every utterance of the split
    batch_size: int = 8
    metrics: tuple[str, ...] | None = None  # short keys of audio.metrics.METRICS; None = all
    inversion: str | None = None  # None: 'phase' for STFT power, 'griffin_lim_jax' for log-Mel (WORLD: ignored)
    mel_inverse: str = DEFAULT_MEL_INVERSE
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

    def __init__(self, dataset, split: str, indices: Sequence[int], normalizer: run_dir.Normalizer):
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
        self.normalize = normalizer.normalize
        self.denormalize = normalizer.denormalize

    def split(self, name: str):
        assert name == self._split
        return self._data


def select(n_total: int, n: int | None) -> list[int]:
    """``n`` utterance indices spread evenly over the split (all when n is None, 0 or >= total):
    splits are ordered by speaker, so the first n would often be one speaker."""
    if not n or n >= n_total:
        return list(range(n_total))
    return sorted({round(v) for v in np.linspace(0, n_total - 1, n)})


@functools.lru_cache(maxsize=8)  # evaluating the same model again (tests, sweeps) reuses the compilations
def _make_apply(model_cfg: config_lib.ModelConfig):
    @jax.jit  # one compilation per bucket shape (eval_batches pads to a few lengths)
    def apply(variables, x, mask, key):
        # rows are padded at the end: recurrences that look ahead start at each row's last frame
        lengths = jnp.sum(mask, axis=1).astype(jnp.int32)
        out, _ = models.forward(model_cfg, variables, x, key=key, lengths=lengths)
        kl = losses.kl_per_dim(model_cfg, out) * mask[..., None]  # (b, t, z)
        return out.x_out, jnp.sum(kl, axis=1)  # (b, t, out), (b, z)

    return apply


def run_model(cfg: config_lib.Config, variables: Any, dataset, split: str, batch_size: int, seed: int):
    """Posterior pass over every utterance of ``dataset.split(split)``.

    Returns:
        ({position: decoded features in model space (frames, bins)}, {position: KL summed over
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
            feats[int(u)] = report.decoded_features(cfg.model, x_out[row, :t])
            kl_sums[int(u)] = kl[row]
            frames[int(u)] = t
    return feats, kl_sums, frames


# --------------------------------------------------------------------------------------------
# Back to audio


WORLD_METHOD = "world"  # WORLD frames go back to audio by WORLD synthesis, whatever --inversion says


def _method(feat_cfg: config_lib.FeatureConfig, inversion_name: str | None) -> str:
    method = inversion_name or ("phase" if feat_cfg.kind == "stft" else "griffin_lim_jax")
    if method not in INVERSIONS:
        raise EvaluationError(f"--inversion must be one of {', '.join(INVERSIONS)}, got '{method}'")
    return WORLD_METHOD if feat_cfg.kind == "world" else method


def describe_inversion(feat_cfg: config_lib.FeatureConfig, method: str, mel_inverse: str, n_iter: int) -> str:
    if feat_cfg.kind == "world":
        return ("WORLD synthesis (pyworld: coded envelope and aperiodicity decoded, F0 where voicing > 0.5, "
                "values clipped into audio.world.feature_bounds; Griffin-Lim, phase and Mel-inverse options "
                "do not apply and are ignored)")
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
    mel_inverse: str = DEFAULT_MEL_INVERSE, n_iter: int = 64, seed: int = 0, denormalize=None,
) -> list[np.ndarray | str]:
    """Several feature arrays of one utterance back to audio by the same path (inversion.to_raw:
    ``denormalize`` and the clipping, then the magnitude and ``method``); an entry that cannot be
    inverted (NaN, wrong shape, frames that do not match the reference) becomes the reason as a
    string. Griffin-Lim (JAX) runs them as one batch: one compilation per length."""
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
            raw = inversion.to_raw(feats, feat_cfg, denormalize)
            if feat_cfg.kind == "world":  # a vocoder: straight to the wave, no magnitude
                mags.append(inversion.world_to_wave(raw, feat_cfg, length))
                continue
            mags.append(inversion.features_to_magnitude(raw, feat_cfg, mel_inverse))
        except (inversion.InversionError, config_lib.ConfigError) as err:
            mags.append(f"cannot invert: {err}")
    if feat_cfg.kind == "world":
        return mags
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


def _quality_row(
    wave, sr: int, text: str | None, do_dnsmos: bool, do_asr: bool
) -> tuple[dict[str, float], str | None]:
    """(DNSMOS / WER cells, Whisper's hypothesis or None); a failing measure is a NaN cell."""
    row: dict[str, float] = {}
    hypothesis = None
    if do_dnsmos:
        try:
            row.update(quality.dnsmos(wave, sr))
        except Exception as err:  # noqa: BLE001 - one failing measure is a NaN cell, never a crash
            row.update({name: metrics_lib.MetricNaN(str(err)) for name in quality.DNSMOS_NAMES.values()})
    if do_asr:
        if not text:
            row[quality.WER_NAME] = metrics_lib.MetricNaN("no transcript for this utterance")
        else:
            try:
                row[quality.WER_NAME], hypothesis, _ = quality.asr_score(wave, sr, text)
            except Exception as err:  # noqa: BLE001 - as above
                row[quality.WER_NAME] = metrics_lib.MetricNaN(str(err))
    return row, hypothesis


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
    return {
        "kl_per_dim": [float(v) for v in kl], "kl_total": float(np.sum(kl)), "active_units": len(active),
        "active_dims": active, "threshold": threshold, "frames": n_frames,
        "excluded_utterances": len(kl_sums) - len(finite),
    }


@dataclasses.dataclass
class _Selection:
    """The utterances evaluated: ``subset.split(split)`` holds them in order."""

    source: Any  # prepare.Dataset (the run's corpus) or prepare.AudioSet (any audio)
    split: str
    indices: list[int]  # positions in ``source.split(split)``
    n_total: int  # utterances the split (or the audio folder) holds
    normalizer: run_dir.Normalizer
    description: str


def _settings(split, n, batch_size, metrics, inversion_name, mel_inverse, n_iter, seed, quality, asr_n,
              active_threshold, checkpoint_kind) -> Settings:
    try:
        keys = list(metrics_lib._resolve(metrics)) if metrics else list(metrics_lib.METRICS)
    except KeyError as err:
        raise EvaluationError(str(err.args[0])) from None
    if mel_inverse not in inversion.MEL_INVERSES:
        raise EvaluationError(f"--mel-inverse must be one of {', '.join(inversion.MEL_INVERSES)}, got '{mel_inverse}'")
    if batch_size < 1:
        raise EvaluationError(f"--batch-size must be >= 1, got {batch_size}")
    if n is not None and n < 0:
        raise EvaluationError(f"--n must be >= 0 (0 = all), got {n}")
    return Settings(split=split, n=n or None, batch_size=batch_size, metrics=tuple(keys),
                    inversion=inversion_name, mel_inverse=mel_inverse, n_iter=n_iter, seed=seed,
                    quality=quality, asr_n=asr_n, active_threshold=active_threshold, checkpoint=checkpoint_kind)


def select_utterances(workdir, cfg: config_lib.Config, split: str, n: int | None, dataset=None,
                      audio: tuple[str, str] | None = None, quiet: bool = True) -> _Selection:
    """The utterances to evaluate and the normaliser to use: ``n`` spread over ``split`` of the
    run's corpus (``dataset``, else prepared), or over the audio of ``audio = (corpus, root)``
    featurised with the run's feature settings and its stored statistics."""
    if audio is not None:
        data = run_dir.require(workdir, cfg, quiet=quiet)
        utterances, root = prepare_lib.list_audio(cfg.data, *audio)
        chosen = [utterances[i] for i in select(len(utterances), n)]
        aset = prepare_lib.featurise(chosen, cfg.data, cfg.features, data.normalizer, root)
        return _Selection(aset, aset.SPLIT, list(range(len(aset.split(aset.SPLIT)))), len(utterances),
                          data.normalizer, f"audio of corpus '{audio[0]}' at {root}")
    if dataset is None:
        dataset = prepare_lib.prepare_dataset(cfg.data, cfg.features, progress=False)
    data = run_dir.require(workdir, cfg, dataset, quiet=quiet)
    if split not in dataset.split_names:
        raise EvaluationError(f"unknown split '{split}': one of {', '.join(dataset.split_names)}")
    n_total = len(dataset.split(split))
    if n_total == 0:
        raise EvaluationError(f"split '{split}' has no utterances")
    return _Selection(dataset, split, select(n_total, n), n_total, data.normalizer,
                      f"'{split}' split of the run's corpus")


def _score_one(sel: _Selection, pos: int, u: int, feats, frames, settings: Settings, plan, feat_cfg,
               method: str, keys: list[str]) -> dict:
    """Metrics of the model and ceiling rows (and quality rows) of one utterance."""
    data = sel.source.split(sel.split)
    sr = feat_cfg.sample_rate
    try:
        wave = sel.source.load_wave(sel.split, u)
    except (OSError, ValueError) as err:  # a missing or unreadable file: flag it, go on
        wave, reason = None, f"cannot load the reference audio: {err}"
    hypotheses: dict[str, str] = {}  # Whisper's transcript per row, saved beside the reference
    if wave is None:
        scores = {"model": _nan_row(reason, keys), "ceiling": _nan_row(reason, keys)}
    else:
        # the ceiling takes the same path as the model's output, de-normalisation included
        model_wave, ceiling_wave = to_waves(
            [feats[pos], sel.normalizer.normalize(data.utterance(u))], feat_cfg, wave, method,
            settings.mel_inverse, settings.n_iter, settings.seed, denormalize=sel.normalizer.denormalize)
        scores = score_utterance(wave, {"model": model_wave, "ceiling": ceiling_wave}, sr, keys)
        do_asr = plan["asr"] is None and pos < settings.asr_n
        if plan["dnsmos"] is None or do_asr:
            for row, w in (("model", model_wave), ("ceiling", ceiling_wave), ("original", wave)):
                if not isinstance(w, str):
                    cells, hypothesis = _quality_row(w, sr, data.texts[u], plan["dnsmos"] is None, do_asr)
                    scores.setdefault(row, {}).update(cells)
                    if hypothesis is not None:
                        hypotheses[row] = hypothesis
    reasons = {row: metrics_lib.reasons(vals) for row, vals in scores.items()}
    return {"utt_id": data.utt_ids[u], "index": int(u), "speaker": data.speakers[u], "text": data.texts[u],
                "asr_hypotheses": hypotheses, "frames": int(frames[pos]), "samples": None if wave is None else len(wave), "metrics": scores,
                "reasons": {k: v for k, v in reasons.items() if v}}


def _aggregate(utterances: list[dict], seed: int) -> dict:
    names: dict[str, list[str]] = {row: [] for row in ROWS}
    for utt in utterances:
        for row, vals in utt["metrics"].items():
            names[row].extend(k for k in vals if k not in names[row] and k != metrics_lib.TRIMMED)
    return {
        row: metrics_lib.summarize([{k: v for k, v in utt["metrics"].get(row, {}).items() if k != metrics_lib.TRIMMED}
                                    for utt in utterances if row in utt["metrics"]], seed=seed)
        for row in ROWS if names[row]
    }


def _settings_out(settings: Settings, sel: _Selection, cfg: config_lib.Config, meta: dict, method: str,
                  plan: dict, seconds: dict) -> dict:
    feat_cfg, keys, n = cfg.features, settings.metrics, len(sel.indices)
    return dict(
        dataclasses.asdict(settings), split=sel.split, n_utterances=n, n_split=sel.n_total,
        utterance_indices=sel.indices, source=sel.description,
        features=feat_cfg.kind, n_bins=feat_cfg.n_bins, sample_rate=feat_cfg.sample_rate, inversion=method,
        inversion_description=describe_inversion(feat_cfg, method, settings.mel_inverse, settings.n_iter),
        z="sampled from the posterior", decoder="point estimate (" + (
            "expected power exp(log-variance)" if cfg.model.likelihood == "itakura_saito" else "Gaussian mean") + ")",
        metric_names=[metrics_lib.metric_name(k) for k in keys],
        active_threshold=settings.active_threshold, quality=plan,
        asr_utterances=min(settings.asr_n, n) if plan["asr"] is None else 0,
        checkpoint={"kind": meta.get("checkpoint"), "step": meta.get("step"), "epoch": meta.get("epoch")},
        model={"model": cfg.model.model, "prior": cfg.model.prior, "likelihood": cfg.model.likelihood, "z_dim": cfg.model.z_dim},
        seconds=seconds,
    )


def evaluate_run(
    workdir: str | Path,
    split: str = "test",
    n: int | None = None,
    batch_size: int = 8,
    metrics: Sequence[str] | None = None,
    inversion_name: str | None = None,
    mel_inverse: str = DEFAULT_MEL_INVERSE,
    n_iter: int = 64,
    seed: int = 0,
    quality: bool = True,
    asr_n: int = DEFAULT_ASR_N,
    active_threshold: float = ACTIVE_THRESHOLD,
    checkpoint_kind: str = "best",
    dataset: prepare_lib.Dataset | None = None,
    write_report: bool = True,
    progress: bool = False,
    audio: tuple[str, str] | None = None,
) -> dict:
    """Evaluates the run in ``workdir``; writes RUN/evaluation/{results.json, results.md,
    kl_per_dim.png} and (``write_report``) re-renders RUN/report.md.

    Args:
        workdir: a run directory (``dvae-jax train`` or an imported run).
        split, n: 'test' (default), 'val' or 'train' of the run's corpus, and how many of its
            utterances, spread evenly (None / 0 = all).
        batch_size, seed: utterances per model batch; posterior samples and Griffin-Lim's phase.
        metrics: short metric keys (audio.metrics.METRICS) or None for all.
        inversion_name: 'phase', 'griffin_lim_jax' or 'griffin_lim_librosa'; None = 'phase' for
            STFT power (the review's protocol), 'griffin_lim_jax' for log-Mel. WORLD frames always
            go back by WORLD synthesis (the option is checked, then ignored).
        mel_inverse, n_iter: 'pinv' or 'nnls' (log-Mel only); Griffin-Lim iterations.
        quality, asr_n: DNSMOS and Whisper WER (the first ``asr_n`` utterances) when installed.
        active_threshold: KL per frame (nats) above which a latent dimension counts as active.
        checkpoint_kind: 'best' or 'latest'.
        dataset: the run's own prepared corpus when at hand (else prepared from the config).
        write_report, progress: re-render report.md; print a line per utterance.
        audio: (corpus, root) of other audio to evaluate on instead of ``split`` ('folder' for any
            folder), featurised with the run's settings and stored statistics.

    Returns:
        The results.json content as a dict (NaN metrics as MetricNaN floats, not None).

    Raises:
        EvaluationError: an unknown option or an empty split.
        checkpoint.CheckpointError: not a run directory, no checkpoint.
    """
    t0 = time.time()
    settings = _settings(split, n, batch_size, metrics, inversion_name, mel_inverse, n_iter, seed, quality, asr_n,
                         active_threshold, checkpoint_kind)
    keys = list(settings.metrics)
    workdir = Path(workdir)
    cfg, variables, meta = checkpoint.load_run(workdir, checkpoint_kind)
    method = _method(cfg.features, inversion_name)
    sel = select_utterances(workdir, cfg, split, n, dataset, audio, quiet=not progress)
    subset = _Subset(sel.source, sel.split, sel.indices, sel.normalizer)
    feats, kl_sums, frames = run_model(cfg, variables, subset, sel.split, batch_size, seed)
    t_model = time.time() - t0
    plan = _quality_plan(settings)
    utterances = []
    for pos, u in enumerate(sel.indices):
        utterances.append(_score_one(sel, pos, u, feats, frames, settings, plan, cfg.features, method, keys))
        if progress:
            si = utterances[-1]["metrics"]["model"].get(metrics_lib.metric_name("si_sdr"))
            print(f"[evaluate] {pos + 1}/{len(sel.indices)} {utterances[-1]['utt_id']}"
                  + (f"  model SI-SDR {si:.2f} dB" if si is not None else ""), flush=True)
    aggregate = _aggregate(utterances, seed)
    positions = range(len(sel.indices))
    posterior = posterior_diagnostics({p: kl_sums[p] for p in positions}, {p: frames[p] for p in positions},
                                      active_threshold)
    seconds = {"model": round(t_model, 2), "total": round(time.time() - t0, 2)}
    results = dict(settings=_settings_out(settings, sel, cfg, meta, method, plan, seconds),
                   **{row: {"aggregate": aggregate[row]} for row in aggregate},
                   posterior=posterior, utterances=utterances)
    write_results(workdir, results)
    if write_report:
        report.write_report(workdir)
    return results


# --------------------------------------------------------------------------------------------
# Writing


def write_results(workdir: str | Path, results: dict) -> Path:
    """RUN/evaluation/results.json, and its table and figure (report.write_evaluation)."""
    out = Path(workdir) / EVAL_DIR
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.write_json_atomic(out / "results.json", _jsonable(results))
    return report.write_evaluation(out, results)


# --------------------------------------------------------------------------------------------
# Piano-roll runs: likelihood bounds instead of audio (data.corpus=polyphonic)

DEFAULT_KS = (1, 10)
BOUNDS_PROTOCOL = ("each piece's bound / its own length, averaged over pieces (per step: the SRNN "
                   "paper's Table 1), and the mean bound per piece (per sequence); every piece from a "
                   "cold start; ELBO with the KL in closed form given the sampled past, averaged over "
                   "the K samples; IWAE_K = log mean_k w_k (Burda et al. 2016)")


def _bounds_data(cfg: config_lib.Config, workdir: Path, split: str, n: int | None, root: str | None):
    """(x, mask or None, set file) of the run's piano-roll set, its fingerprint checked."""
    from dvae_jax.data import polyphonic

    data_cfg = cfg.data if root is None else dataclasses.replace(cfg.data, root=root)
    ds = prepare_lib.polyphonic_dataset(data_cfg, cfg.features)
    stored = (run_dir.load(workdir) or run_dir.RunData(run_dir.Normalizer(), {})).fingerprint
    if stored.get("hash") and stored["hash"] != ds.manifest["hash"]:
        raise errors.RunError(
            f"{ds.path} (sha256 {ds.manifest['hash']}) is not the file {workdir} was trained on "
            f"({stored.get('file')}, sha256 {stored['hash']}): pass --root DIR holding that file")
    rolls = ds.rolls
    x, mask = {"test": (rolls.x_test, rolls.mask_test), "val": (rolls.x_valid, None),
               "train": (rolls.x_train, None)}[split]
    if n:
        pick = select(len(x), n)
        x, mask = x[pick], None if mask is None else mask[pick]
    if not len(x):
        raise EvaluationError(f"the {split} split of {ds.path} holds no sequence")
    if mask is not None:  # cut the padding no kept piece reaches (fewer frames to run)
        t = int(mask.sum(1).max())
        x, mask = x[:, :t], mask[:, :t]
    return x, mask, ds.path, polyphonic.PAPER_SRNN[rolls.name]


def evaluate_bounds_run(
    workdir: str | Path, ks: Sequence[int] = DEFAULT_KS, chunk: int = 16384, split: str = "test",
    n: int | None = None, seed: int = 0, checkpoint_kind: str = "best", root: str | None = None,
    log=print,
) -> dict:
    """The ELBO and IWAE_K bounds (dvae_jax/bounds.py) of a piano-roll run on its set's ``split``,
    for each K; merged into RUN/evaluation/results.json (results of other K with the same
    checkpoint, split, n and seed are kept) with a table in results.md.

    Args:
        workdir: a run directory with data.corpus=polyphonic.
        ks: the numbers of importance samples (each >= 1).
        chunk: the most frames (rows x length) per call (memory, not the result).
        split, n: 'test' (whole pieces), 'val' or 'train' (chunks); n sequences spread evenly
            (None / 0 = all).
        seed, checkpoint_kind: the posterior samples' key; 'best' or 'latest'.
        root: where the set's file is, instead of the run's data.root.

    Raises:
        EvaluationError: a K below 1, or an empty split.
        errors.RunError: the set's file is not the one the run was trained on.
    """
    from dvae_jax import bounds

    if not ks or any(int(k) != k or k < 1 for k in ks):
        raise EvaluationError(f"--k {','.join(map(str, ks))}: every K must be an integer >= 1")
    workdir = Path(workdir)
    cfg, variables, meta = checkpoint.load_run(workdir, checkpoint_kind)
    x, mask, file, paper = _bounds_data(cfg, workdir, split, n, root)
    settings = {"set": cfg.data.set_name, "file": str(file), "split": split, "n": n or 0, "seed": seed,
                "checkpoint": {k: meta.get(k) for k in ("checkpoint", "step", "epoch")},
                "protocol": BOUNDS_PROTOCOL}
    path = workdir / EVAL_DIR / "results.json"
    old = _read_json(path)
    merged = old.get("bounds", {}) if old.get("settings") == settings else {}
    for k in ks:
        t0 = time.time()
        r = bounds.evaluate_bounds(cfg.model, variables, x, mask, int(k), jax.random.PRNGKey(seed), chunk=chunk)
        merged[str(k)] = dict(r, seconds=round(time.time() - t0, 2))
        if log is not None:
            log(f"[evaluate] K={k}: ELBO {r['elbo_per_step']:.4f}, IWAE {r['iwae_per_step']:.4f} "
                f"nats per step ({time.time() - t0:.1f} s)")
    results = {"kind": "bounds", "settings": settings, "paper_srnn_per_step": paper,
               "bounds": dict(sorted(merged.items(), key=lambda kv: int(kv[0])))}
    out = workdir / EVAL_DIR
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.write_json_atomic(path, results)
    (out / "results.md").write_text(bounds_table(results) + "\n")
    return results


def _read_json(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def bounds_table(results: dict) -> str:
    """The bounds of :func:`evaluate_bounds_run` as a Markdown table, K stated on every row."""
    s, b = results["settings"], results["bounds"]
    ks = sorted(b, key=int)
    first = b[ks[-1]]  # the ELBO averaged over the most samples
    c = s["checkpoint"]
    title = (f"Bounds on log p(x) of the {s['set']} {s['split']} split ({first['sequences']} sequences, "
             f"{first['frames']} frames; checkpoint {c['checkpoint']} step {c['step']}), nats:")
    lines = [title, "",
             "| bound | per step | per sequence |", "|---|---|---|",
             f"| ELBO (K={ks[-1]} samples) | {first['elbo_per_step']:.4f} | {first['elbo_per_sequence']:.2f} |"]
    lines += [f"| IWAE K={k} | {b[k]['iwae_per_step']:.4f} | {b[k]['iwae_per_sequence']:.2f} |" for k in ks]
    lines += [f"| SRNN paper, test split (Fraccaro et al. 2016, Table 1) | {results['paper_srnn_per_step']:.2f} | |", "",
              f"Protocol: {s['protocol']}."]
    return "\n".join(lines)
