"""prepare_dataset: bad files skipped with reasons, cache hits and invalidation, features as in MODELS.md."""

import dataclasses
import json
import os
import pathlib
import shutil

import numpy as np
import pytest

from dvae_jax import config as config_lib
from dvae_jax.audio import spectral
from dvae_jax.data import fixtures, prepare


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory):
    """3 speakers x 4 utterances plus one bad file of each kind in speaker p226."""
    root = fixtures.make_vctk(tmp_path_factory.mktemp("vctk"), n_speakers=3, n_utts=4, seconds=1.0)
    d = root / "wav48_silence_trimmed" / "p226"
    bad = {
        "p226_101_mic1.flac": b"",  # empty
        "p226_102_mic1.flac": b"fLaC\x00\x00\x00\x22" + b"\x00" * 40,  # corrupt
        "p226_103_mic1.flac": b"<html>not audio</html>" * 20,  # non-audio
    }
    for name, content in bad.items():
        (d / name).write_bytes(content)
    fixtures.write(d / "p226_104_mic1.flac", np.zeros(16000, np.float32))  # silent
    fixtures.write(d / "p226_105_mic1.flac", fixtures.speechlike(0.5)[4000:4500])  # shorter than a window
    fixtures.write(d / "p226_106_mic1.flac", fixtures.speechlike(1.0, 22050), 22050)  # other rate
    fixtures.write(d / "p226_107_mic1.flac", np.stack([fixtures.speechlike(1.0)] * 2, 1))  # stereo
    return root


def _cfgs(root, cache, **data):
    d = config_lib.DataConfig(corpus="vctk", root=str(root), cache_dir=str(cache), val_fraction=0.34,
                              test_fraction=0.33, seed=0, workers=1, **data)
    return d, config_lib.FeatureConfig()


@pytest.fixture(scope="module")
def mel(corpus_root, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    d, f = _cfgs(corpus_root, cache)
    return prepare.prepare_dataset(d, f, progress=False)


def test_manifest_counts_and_skip_reasons(mel):
    m = mel.manifest
    assert sum(m["utterances"].values()) == 12 + 1  # the resampled file is kept
    assert all(len(v) == 1 for v in m["speakers"].values())
    kinds = m["skipped_by_reason"]
    for kind in ("empty", "corrupt", "not audio", "silent", "too short", "multi-channel"):
        assert kinds.get(kind) == 1, (kind, m["skipped"])
    assert any("resampled 22050 Hz" in n["note"] for n in m["notes"])
    assert all("\n" not in s["reason"] for s in m["skipped"])
    assert m["frames"]["train"] == mel.split("train").n_frames
    assert "skipped: 6" in mel.summary()


def test_split_arrays_are_memmapped_and_consistent(mel):
    s = mel.split("train")
    assert isinstance(s.features, np.memmap) and s.features.dtype == np.float32
    assert s.features.shape == (s.offsets[-1], 80)
    assert len(s.utt_ids) == len(s.speakers) == len(s.texts) == len(s.paths) == len(s.lengths)
    assert s.texts[0].startswith("Sentence")


def test_features_match_the_waveform_and_the_shared_analysis(mel):
    wave = mel.load_wave("val", 0)
    assert np.max(np.abs(wave)) == pytest.approx(1.0)
    np.testing.assert_allclose(spectral.wave_to_features(wave, mel.feature_cfg), mel.split("val").utterance(0), atol=1e-5)


def test_stats_from_training_split_only(mel):
    train = np.asarray(mel.split("train").features)
    np.testing.assert_allclose(mel.stats.mean, train.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mel.stats.std, train.std(0), rtol=1e-3, atol=1e-3)
    x = np.asarray(mel.split("test").features[:10])
    np.testing.assert_allclose(mel.denormalize(mel.normalize(x)), x, atol=1e-4)


def test_cache_hit_then_recompute_on_change(mel, corpus_root, monkeypatch):
    d, f = _cfgs(corpus_root, mel.path.parent.parent)
    calls = []
    real = prepare._build
    monkeypatch.setattr(prepare, "_build", lambda *a, **k: calls.append(1) or real(*a, **k))
    # same settings: the cache is reused
    assert prepare.prepare_dataset(d, f, progress=False).path == mel.path and not calls
    # a feature setting changes: new cache
    other = prepare.prepare_dataset(d, dataclasses.replace(f, n_mels=40), progress=False)
    assert other.path != mel.path and other.n_bins == 40 and calls == [1]
    # a selection setting changes: new cache
    prepare.prepare_dataset(dataclasses.replace(d, utts_per_speaker=2), f, progress=False)
    assert calls == [1, 1]
    # a corpus file changes (new mtime): new cache
    path = mel.split("train").paths[0]
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        assert prepare.prepare_dataset(d, f, progress=False).path != mel.path
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert prepare.prepare_dataset(d, f, progress=False).path == mel.path


def test_no_leftover_temp_dirs(mel):
    assert not [p for p in mel.path.parent.iterdir() if p.name.startswith(".")]


def test_stft_chunks_follow_the_review(corpus_root, tmp_path):
    d, f = _cfgs(corpus_root, tmp_path, batching="chunks")
    f = dataclasses.replace(f, kind="stft")
    assert prepare.chunk_samples(d, f) == 12544
    ds = prepare.prepare_dataset(d, f, progress=False)
    ch = ds.chunks("train")
    assert ch.features.shape[1:] == (50, 513) and len(ch) >= 1
    assert ds.stats is None and np.array_equal(ds.normalize(ch.features[:1]), ch.features[:1])
    # the first chunk: trimmed wave, first 12,544 samples scaled by their own max, sine-window STFT power
    u = int(ch.utt_index[0])
    wave = ds.load_wave("train", u)[:12544]
    wave = wave / np.max(np.abs(wave))
    n = np.arange(1024)
    win = np.sin(np.pi * (n + 0.5) / 1024)
    padded = np.pad(wave.astype(np.float64), 512, mode="reflect")
    frames = np.stack([padded[i * 256 : i * 256 + 1024] * win for i in range(50)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    np.testing.assert_allclose(ch.features[0], np.maximum(power, 1e-10), rtol=2e-3, atol=1e-6)
    assert "chunks" in ds.summary()


def test_missing_transcript_with_require_text_is_skipped(corpus_root, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(corpus_root, root)
    (root / "txt" / "p225" / "p225_001.txt").unlink()
    d, f = _cfgs(root, tmp_path / "cache", require_text=True)
    m = prepare.prepare_dataset(d, f, progress=False).manifest
    # p225_001 plus the 7 bad fixture files, which have no transcript either
    assert m["skipped_by_reason"]["missing transcript"] == 8
    assert any("p225_001_mic1" in s["path"] and "missing transcript" in s["reason"] for s in m["skipped"])


def test_nothing_usable_is_a_clear_error(tmp_path):
    root = fixtures.make_vctk(tmp_path / "v", n_speakers=3, n_utts=1, seconds=0.3)
    for p in (root / "wav48_silence_trimmed").rglob("*.flac"):
        p.write_bytes(b"")
    d, f = _cfgs(root, tmp_path / "cache")
    with pytest.raises(prepare.DataError, match="no usable utterance.*empty file"):
        prepare.prepare_dataset(d, f, progress=False)
    assert not list((tmp_path / "cache" / "features").iterdir())


def test_missing_root_is_clear(tmp_path):
    with pytest.raises(prepare.DataError, match="--root"):
        prepare.prepare_dataset(config_lib.DataConfig(corpus="vctk", cache_dir=str(tmp_path)), config_lib.FeatureConfig())


def test_manifest_is_json_with_summary_fields(mel):
    m = json.loads((mel.path / "manifest.json").read_text())
    for key in ("speakers", "utterances", "hours", "frames", "skipped", "skipped_count", "hash", "features"):
        assert key in m


def test_killed_run_leftovers_are_ignored_and_cleaned(corpus_root, tmp_path):
    # given the temp folder of a killed run: arrays but no manifest
    d, f = _cfgs(corpus_root, tmp_path)
    stale = tmp_path / "features" / ".0123456789abcdef.tmp-999999999-abcdef"
    (stale / "train").mkdir(parents=True)
    (stale / "train" / "features.npy").write_bytes(b"\x93NUMPY partial")
    # when preparing, then a complete cache is built and the leftover removed
    ds = prepare.prepare_dataset(d, f, progress=False)
    assert (ds.path / "manifest.json").exists() and not stale.exists()


# ---------------------------------------------------------------------------------------------
# No split may be empty: validation drives early stopping and the best checkpoint, test evaluation


@pytest.mark.parametrize("split", ["val", "test"])
def test_a_split_left_empty_by_its_fraction_is_refused_with_the_remedy(corpus_root, tmp_path, split):
    d, f = _cfgs(corpus_root, tmp_path)
    d = dataclasses.replace(d, **{f"{split}_fraction": 0.0})
    with pytest.raises(prepare.DataError, match=rf"split '{split}' is empty \(data.{split}_fraction=0.0\).*"
                                                rf"set data.{split}_fraction > 0.*data.split_by=utterance"):
        prepare.prepare_dataset(d, f, progress=False)
    assert not (tmp_path / "features").exists()  # refused before any work


def test_a_split_emptied_by_bad_files_is_refused(tmp_path):
    from dvae_jax.data import corpus as corpus_lib

    root = fixtures.make_vctk(tmp_path / "v", n_speakers=3, n_utts=2, seconds=0.5)
    d, f = _cfgs(root, tmp_path / "cache")
    test = corpus_lib.split(corpus_lib.read_vctk(root, "mic1"), d)["test"]
    for u in test:  # every file of the test speaker is unusable
        fixtures.write(pathlib.Path(u.path), np.zeros(8000, np.float32))  # silent
    with pytest.raises(prepare.DataError, match=r"split 'test' is empty \(every file of it was skipped"):
        prepare.prepare_dataset(d, f, progress=False)
    assert not list((tmp_path / "cache" / "features").iterdir())  # no cache claims to be complete


def test_an_empty_split_is_one_line_from_the_command(corpus_root, tmp_path, capsys):
    from dvae_jax import cli

    assert cli.main(["prepare", "--corpus", "vctk", "--root", str(corpus_root), "--cache-dir", str(tmp_path),
                     "--set", "data.val_fraction=0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "split 'val' is empty" in err and len(err.strip().splitlines()) == 1
