"""Corpus readers on fixture trees, selection and splits."""

import dataclasses
import os

import pytest

from dvae_jax import config as config_lib
from dvae_jax.data import corpus, fixtures


@pytest.fixture(scope="module")
def vctk_092(tmp_path_factory):
    return fixtures.make_vctk(tmp_path_factory.mktemp("vctk092"), n_speakers=3, n_utts=2, seconds=0.3)


def test_read_vctk_092_mic1_with_text_and_speaker_info(vctk_092):
    utts = corpus.read_vctk(vctk_092)
    assert len(utts) == 6
    u = utts[0]
    assert (u.utt_id, u.speaker, u.text, u.gender, u.accent) == ("p225_001", "p225", "Sentence 1 of p225.", "F", "English")
    assert u.path.endswith("p225_001_mic1.flac")


def test_read_vctk_092_mic2(vctk_092):
    assert all(u.path.endswith("_mic2.flac") for u in corpus.read_vctk(vctk_092, mic="mic2"))


def test_read_vctk_old_layout(tmp_path):
    root = fixtures.make_vctk(tmp_path, n_speakers=2, n_utts=2, layout="old", seconds=0.3)
    utts = corpus.read_vctk(root)
    assert [u.utt_id for u in utts] == ["p225_001", "p225_002", "p226_001", "p226_002"]
    assert utts[2].gender == "M" and utts[2].text == "Sentence 1 of p226."


def test_read_vctk_missing_transcript_gives_none(tmp_path):
    root = fixtures.make_vctk(tmp_path, n_speakers=1, n_utts=2, seconds=0.3)
    (root / "txt" / "p225" / "p225_002.txt").unlink()
    utts = corpus.read_vctk(root)
    assert utts[0].text and utts[1].text is None


def test_read_vctk_missing_root_is_clear(tmp_path):
    with pytest.raises(corpus.DataError, match="does not exist"):
        corpus.read_vctk(tmp_path / "nope")
    with pytest.raises(corpus.DataError, match="wav48"):
        corpus.read_vctk(tmp_path)


def test_read_folder_parent_as_speaker_and_transcripts(tmp_path):
    root = fixtures.make_folder(tmp_path, n_speakers=2, n_utts=2, seconds=0.3)
    utts = corpus.read_folder(root, transcripts=root / "transcripts.tsv")
    assert [u.speaker for u in utts] == ["spk0", "spk0", "spk1", "spk1"]
    assert utts[3].text == "text 1 1"


def test_read_folder_speaker_pattern_and_sidecar_text(tmp_path):
    for name in ("a/S01-x.wav", "a/S02-y.wav", "b/noname.wav"):
        fixtures.write(tmp_path / name, fixtures.speechlike(0.2))
    (tmp_path / "a" / "S01-x.txt").write_text("hello\n")
    skipped = []
    utts = corpus.read_folder(tmp_path, speaker_pattern=r"(?P<speaker>S\d+)-", skipped=skipped)
    assert [(u.speaker, u.text) for u in utts] == [("S01", "hello"), ("S02", None)]
    assert len(skipped) == 1 and "speaker pattern" in skipped[0].reason


@pytest.mark.skipif(os.name != "posix", reason="needs POSIX permissions")
def test_unreadable_folder_is_skipped_with_reason(tmp_path):
    root = fixtures.make_folder(tmp_path, n_speakers=2, n_utts=1, seconds=0.2)
    locked = root / "spk1"
    os.chmod(locked, 0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as root: chmod 000 does not block reading")
        skipped = []
        utts = corpus.read_folder(root, skipped=skipped)
        assert [u.speaker for u in utts] == ["spk0"]
        assert "folder cannot be read" in skipped[0].reason
    finally:
        os.chmod(locked, 0o755)


def test_read_tfds_without_tensorflow_is_clear(tmp_path):
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        with pytest.raises(corpus.DataError, match=r"pip install 'dvae_jax\[tfds\]'"):
            corpus.read_tfds(tmp_path)
    else:
        with pytest.raises(corpus.DataError, match="VCTK-Corpus-0.92.zip"):
            corpus.read_tfds(tmp_path)


def _utts(n_speakers, n_utts):
    return [
        corpus.Utterance(f"s{s:02d}_{u:03d}", f"/x/{s}_{u}.wav", f"s{s:02d}", None, "F" if s % 2 else "M", "A" if s < 3 else "B")
        for s in range(n_speakers) for u in range(n_utts)
    ]


def test_select_speakers_gender_accent_count_and_utts():
    utts = _utts(8, 5)
    cfg = config_lib.DataConfig
    assert corpus.speakers_of(corpus.select(utts, cfg(speakers=("s01", "s03")))) == ["s01", "s03"]
    assert corpus.speakers_of(corpus.select(utts, cfg(genders=("f",)))) == ["s01", "s03", "s05", "s07"]
    assert corpus.speakers_of(corpus.select(utts, cfg(accents=("a",)))) == ["s00", "s01", "s02"]
    picked = corpus.select(utts, cfg(n_speakers=3, utts_per_speaker=2, seed=1))
    assert len(corpus.speakers_of(picked)) == 3 and len(picked) == 6
    assert picked == corpus.select(utts, cfg(n_speakers=3, utts_per_speaker=2, seed=1))
    with pytest.raises(corpus.DataError, match="s99"):
        corpus.select(utts, cfg(speakers=("s99",)))


def test_split_speaker_disjoint_deterministic_nonempty():
    utts = _utts(10, 3)
    cfg = config_lib.DataConfig(seed=3)
    parts = corpus.split(utts, cfg)
    sets = {k: {u.speaker for u in v} for k, v in parts.items()}
    assert all(sets.values())
    assert not (sets["train"] & sets["val"] or sets["train"] & sets["test"] or sets["val"] & sets["test"])
    assert sum(len(v) for v in parts.values()) == len(utts)
    assert parts == corpus.split(list(reversed(utts)), cfg)  # input order does not matter
    assert parts != corpus.split(utts, dataclasses.replace(cfg, seed=4))


def test_split_by_utterance_shares_speakers():
    parts = corpus.split(_utts(2, 20), config_lib.DataConfig(split_by="utterance"))
    assert {u.speaker for u in parts["test"]} <= {u.speaker for u in parts["train"]}
    assert min(len(v) for v in parts.values()) >= 1


def test_split_too_few_speakers_is_clear():
    with pytest.raises(corpus.DataError, match="split_by=utterance"):
        corpus.split(_utts(2, 5), config_lib.DataConfig())
