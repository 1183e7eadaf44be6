"""Batches: fixed shapes, deterministic per (seed, epoch), resumable; eval padding; the prefetcher."""

import dataclasses
import time

import numpy as np
import pytest

from dvae_jax import config as config_lib
from dvae_jax.data import batches, fixtures, prepare


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = fixtures.make_vctk(tmp_path_factory.mktemp("v"), n_speakers=3, n_utts=4, seconds=1.5)
    d = config_lib.DataConfig(corpus="vctk", root=str(root), cache_dir=str(tmp_path_factory.mktemp("c")),
                              val_fraction=0.34, test_fraction=0.33, workers=1)
    mel = prepare.prepare_dataset(d, config_lib.FeatureConfig(), progress=False)
    stft = prepare.prepare_dataset(dataclasses.replace(d, batching="chunks"),
                                   config_lib.FeatureConfig(kind="stft"), progress=False)
    return mel, stft


def _all(it):
    return [(b["x"].copy(), b["mask"].copy()) for b in it]


@pytest.mark.parametrize("mode", ["crops", "chunks"])
def test_shapes_fixed_and_deterministic(datasets, mode):
    ds = datasets[0] if mode == "crops" else datasets[1]
    seq = 50 if mode == "chunks" else 40
    got = _all(batches.train_batches(ds, "train", 3, seq, seed=1, epoch=0, mode=mode))
    assert len(got) == batches.steps_per_epoch(ds, "train", 3, seq, mode)
    assert {(x.shape, m.shape, x.dtype) for x, m in got} == {((3, seq, ds.n_bins), (3, seq), np.dtype(np.float32))}
    again = _all(batches.train_batches(ds, "train", 3, seq, seed=1, epoch=0, mode=mode))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(got, again))
    other = _all(batches.train_batches(ds, "train", 3, seq, seed=1, epoch=1, mode=mode))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(got, other))


@pytest.mark.parametrize("mode", ["crops", "chunks"])
def test_resume_mid_epoch_gives_the_remaining_batches(datasets, mode):
    ds = datasets[0] if mode == "crops" else datasets[1]
    full = _all(batches.train_batches(ds, "train", 2, 50, seed=5, epoch=3, mode=mode))
    assert len(full) >= 2
    rest = _all(batches.train_batches(ds, "train", 2, 50, seed=5, epoch=3, start_batch=1, mode=mode))
    assert len(rest) == len(full) - 1
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(full[1:], rest))


def test_crops_are_normalised_and_short_utterances_padded(datasets):
    mel = datasets[0]
    longest = int(mel.split("train").lengths.max())
    x, m = _all(batches.train_batches(mel, "train", 4, longest + 10, seed=0, epoch=0))[0]
    assert np.all(m.sum(1) <= longest) and np.all(x[m == 0] == 0)
    crops = np.concatenate([b[0][b[1] > 0] for b in _all(batches.train_batches(mel, "train", 4, 20, 0, 0))])
    assert abs(crops.mean()) < 0.5 and 0.5 < crops.std() < 1.5


def test_chunks_need_the_prepared_length(datasets):
    with pytest.raises(ValueError, match="chunk length"):
        next(batches.train_batches(datasets[1], "train", 2, 40, 0, 0, mode="chunks"))
    with pytest.raises(prepare.DataError, match="batching=chunks"):
        datasets[0].chunks("train")


def test_eval_batches_cover_every_utterance_with_bucketed_lengths(datasets):
    mel = datasets[0]
    split = mel.split("test")
    seen = {}
    for b in batches.eval_batches(mel, "test", 3, bucket=32):
        assert b["x"].shape[0] == 3 and b["x"].shape[1] % 32 == 0
        for row, i in enumerate(b["index"]):
            if i >= 0:
                seen[int(i)] = int(b["mask"][row].sum())
                np.testing.assert_allclose(b["x"][row, : seen[int(i)]], mel.normalize(split.utterance(i)), atol=1e-6)
            else:
                assert b["mask"][row].sum() == 0
    assert seen == {i: int(n) for i, n in enumerate(split.lengths)}
    capped = list(batches.eval_batches(mel, "test", 3, max_frames=20))
    assert all(b["mask"].sum(1).max() <= 20 for b in capped)


def test_prefetcher_yields_in_order_and_propagates_errors():
    with batches.Prefetcher(iter(range(10)), size=3) as p:
        assert list(p) == list(range(10))

    def boom():
        yield 1
        raise RuntimeError("broken batch")

    p = batches.Prefetcher(boom(), 2)
    assert next(p) == 1
    with pytest.raises(RuntimeError, match="broken batch"):
        next(p)


def test_prefetcher_close_stops_the_producer():
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    p = batches.Prefetcher(endless(), 2)
    next(p)
    p.close()
    n = len(produced)
    time.sleep(0.1)
    assert len(produced) == n and not p._thread.is_alive()
