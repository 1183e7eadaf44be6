"""The embedded mini corpus: eSpeak NG synthesis, VCTK 0.92 layout, byte-identical and atomic rebuilds."""

import hashlib
import json
import os
from pathlib import Path

import pytest
import soundfile as sf

from dvae_jax.data import corpus, mini


def _digest(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return mini.build_mini_corpus(tmp_path_factory.mktemp("m") / "mini", n_speakers=3, n_sentences=4)


def test_ships_enough_sentences():
    assert len(mini.sentences()) >= 60 and len(set(mini.sentences())) == len(mini.sentences())


def test_small_build_is_read_by_read_vctk(small):
    utts = corpus.read_vctk(small)
    assert len(utts) == 12 and corpus.speakers_of(utts) == ["e01", "e02", "e03"]
    assert all(u.text and u.gender in ("M", "F") and u.accent for u in utts)
    info = sf.info(utts[0].path)
    assert info.samplerate == 16000 and info.channels == 1 and info.format == "FLAC"
    assert 0.5 < info.duration < 10


def test_rebuild_is_byte_identical(small, tmp_path):
    again = mini.build_mini_corpus(tmp_path / "mini", n_speakers=3, n_sentences=4, workers=1)
    assert _digest(again) == _digest(small)


def test_build_is_idempotent(small):
    marker = small / mini.MARKER
    before = marker.stat().st_mtime_ns
    mini.build_mini_corpus(small, n_speakers=3, n_sentences=4)
    assert marker.stat().st_mtime_ns == before
    assert json.loads(marker.read_text())["utterances"] == 12


def test_interrupted_build_is_not_complete_and_is_cleaned(tmp_path):
    # given what a killed build leaves: a temp folder of a dead process and no root
    stale = tmp_path / ".mini.tmp-999999999"
    (stale / "wav48_silence_trimmed").mkdir(parents=True)
    assert not mini.is_complete(tmp_path / "mini", 1, 1)
    # when building, then the stale folder is removed and a complete corpus appears
    root = mini.build_mini_corpus(tmp_path / "mini", n_speakers=1, n_sentences=1)
    assert mini.is_complete(root, 1, 1) and not stale.exists()


def test_foreign_folder_is_not_overwritten(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(mini.MiniCorpusError, match="not a mini corpus"):
        mini.build_mini_corpus(tmp_path, n_speakers=1, n_sentences=1)
    assert (tmp_path / "mine.txt").exists()


def test_bad_settings_are_clear(tmp_path):
    with pytest.raises(mini.MiniCorpusError, match="mini_speakers"):
        mini.build_mini_corpus(tmp_path / "m", n_speakers=99)
