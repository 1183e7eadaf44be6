"""Fixed-shape NumPy batches (random crops, the review's chunks, whole utterances) and a prefetcher.

Every training epoch is a pure function of (seed, epoch): the whole epoch's plan is drawn up front
from ``np.random.default_rng([seed, epoch])``, so resuming at batch k replays exactly the batches
k, k + 1, ... of an uninterrupted run. ``streams`` (piano-rolls) has no randomness: batch k is
chunks [k B, (k + 1) B) in the file's order, so row i of batch k + 1 continues row i of batch k.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Self

import numpy as np

from dvae_jax.data import prepare as prepare_lib

Batch = dict[str, np.ndarray]


MODES = ("crops", "chunks", "streams")
CHUNKED = ("chunks", "streams")  # modes that read dataset.chunks(split)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"batching mode must be one of {', '.join(MODES)}, got '{mode}'")


def steps_per_epoch(
    dataset: prepare_lib.Dataset, split: str, batch_size: int, seq_len: int, mode: str = "crops"
) -> int:
    """Batches in one epoch (at least 1).

    ``crops``: ``total_frames // seq_len`` crops per epoch, in full batches. ``chunks`` and
    ``streams``: every chunk once, the last partial batch dropped (when there are fewer chunks than
    ``batch_size`` there is one batch, padded with mask-0 rows).
    """
    _check_mode(mode)
    if mode in CHUNKED:
        n = len(dataset.chunks(split))
    else:
        n = dataset.split(split).n_frames // seq_len
    return max(1, n // batch_size)


def _crop_plan(lengths: np.ndarray, n: int, seq_len: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(utterance, start) of ``n`` crops; utterances drawn proportionally to their length."""
    p = lengths / lengths.sum()
    utt = rng.choice(len(lengths), size=n, p=p)
    room = np.maximum(lengths[utt] - seq_len, 0) + 1
    start = np.floor(rng.random(n) * room).astype(np.int64)
    return utt, start


def train_batches(
    dataset: prepare_lib.Dataset,
    split: str,
    batch_size: int,
    seq_len: int,
    seed: int,
    epoch: int,
    start_batch: int = 0,
    mode: str = "crops",
    rows: tuple[int, int] | None = None,
) -> Iterator[Batch]:
    """One epoch of training batches ``{'x': (B, T, F) float32 normalised, 'mask': (B, T) float32}``.

    Args:
        dataset: a prepared dataset.
        split: usually ``'train'``.
        batch_size: B (every batch has exactly B rows).
        seq_len: T; in ``chunks`` mode it must equal the prepared chunk length.
        seed, epoch: the only sources of randomness.
        start_batch: skip the first batches (resuming mid-epoch).
        mode: ``'crops'`` (random crops, short utterances padded with mask 0), ``'chunks'``
            (shuffled) or ``'streams'`` (in order; see the module docstring).
        rows: only rows [lo, hi) of every batch are read and returned (one host's share of a
            batch split over several processes); the plan, hence every row, is the same.
    """
    _check_mode(mode)
    lo, hi = rows or (0, batch_size)
    n_rows = hi - lo
    steps = steps_per_epoch(dataset, split, batch_size, seq_len, mode)
    rng = np.random.default_rng([seed, epoch])
    if mode in CHUNKED:
        chunks = dataset.chunks(split)
        if chunks.features.shape[1] != seq_len:
            raise ValueError(
                f"seq_len {seq_len} differs from the prepared chunk length {chunks.features.shape[1]}; "
                "prepare again with data.seq_len set to it"
            )
        order = rng.permutation(len(chunks)) if mode == "chunks" else np.arange(len(chunks))
        for b in range(start_batch, steps):
            idx = order[b * batch_size : (b + 1) * batch_size]
            if mode == "chunks":
                idx = np.sort(idx)  # sequential memmap reads
            idx = idx[lo:hi]
            x = np.zeros((n_rows, seq_len, dataset.n_bins), np.float32)
            mask = np.zeros((n_rows, seq_len), np.float32)
            x[: len(idx)] = dataset.normalize(chunks.features[idx])
            mask[: len(idx)] = 1.0
            yield {"x": x, "mask": mask}
        return
    data = dataset.split(split)
    lengths = data.lengths
    utt, start = _crop_plan(lengths, steps * batch_size, seq_len, rng)
    feats, offsets = data.features, data.offsets
    for b in range(start_batch, steps):
        x = np.zeros((n_rows, seq_len, dataset.n_bins), np.float32)
        mask = np.zeros((n_rows, seq_len), np.float32)
        for row in range(n_rows):
            i = b * batch_size + lo + row
            u, s = utt[i], start[i]
            t = min(seq_len, int(lengths[u]) - s)
            begin = offsets[u] + s
            x[row, :t] = feats[begin : begin + t]
            mask[row, :t] = 1.0
        x = dataset.normalize(x) * mask[..., None]  # padding stays exactly 0 after normalising
        yield {"x": x.astype(np.float32), "mask": mask}


def eval_batches(
    dataset: prepare_lib.Dataset, split: str, batch_size: int, max_frames: int | None = None, bucket: int = 32
) -> Iterator[Batch]:
    """Whole utterances ``{'x', 'mask', 'index'}``, padded to a multiple of ``bucket`` frames.

    Utterances are grouped by length (longest first) so a batch wastes little padding and there
    are few distinct shapes. The last batch is filled with mask-0 rows whose ``index`` is -1.
    Utterances longer than ``max_frames`` are cut to their first ``max_frames`` frames.
    """
    data = dataset.split(split)
    lengths = data.lengths.copy()
    if max_frames:
        lengths = np.minimum(lengths, max_frames)
    order = np.argsort(-lengths, kind="stable")
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        t_max = int(lengths[idx].max())
        t_pad = max(bucket, -(-t_max // bucket) * bucket)
        x = np.zeros((batch_size, t_pad, dataset.n_bins), np.float32)
        mask = np.zeros((batch_size, t_pad), np.float32)
        index = np.full(batch_size, -1, np.int64)
        for row, u in enumerate(idx):
            t = int(lengths[u])
            x[row, :t] = dataset.normalize(data.features[data.offsets[u] : data.offsets[u] + t])
            mask[row, :t] = 1.0
            index[row] = u
        yield {"x": x, "mask": mask, "index": index}


class Prefetcher:
    """Runs an iterator in a background thread, ``size`` items ahead.

    Exceptions raised by the producer are re-raised in the consumer; ``close()`` (or leaving a
    ``with`` block) stops the thread even when the consumer stops early.
    """

    _DONE = object()

    def __init__(self, iterable: Iterable[Any], size: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, args=(iter(iterable),), daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, it: Iterator[Any]) -> None:
        try:
            for item in it:
                if not self._put(item):
                    return
            self._put(self._DONE)
        except BaseException as e:  # noqa: BLE001 (handed to the consumer)
            self._put(_Raised(e))

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Any:
        if self._closed:
            raise StopIteration
        item = self._queue.get()
        if item is self._DONE:
            self.close()
            raise StopIteration
        if isinstance(item, _Raised):
            self.close()
            raise item.error
        return item

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self._stop.set()


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


def window_batches(dataset: prepare_lib.Dataset, split: str, batch_size: int, seq_len: int,
                   rows: tuple[int, int] | None = None) -> Iterator[Batch]:
    """Every utterance of ``split`` cut into consecutive ``seq_len``-frame windows (the last one
    padded with mask 0), in order, in full batches: one fixed shape, so a jitted validation step
    compiles once. Deterministic; the last batch is filled with all-mask-0 rows. ``rows``: only
    rows [lo, hi) of every batch (as train_batches)."""
    data = dataset.split(split)
    lo, hi = rows or (0, batch_size)
    windows = [(u, s) for u in range(len(data)) for s in range(0, int(data.lengths[u]), seq_len)]
    for b in range(0, len(windows), batch_size):
        x = np.zeros((hi - lo, seq_len, dataset.n_bins), np.float32)
        mask = np.zeros((hi - lo, seq_len), np.float32)
        for row, (u, s) in enumerate(windows[b + lo : b + hi]):
            seg = data.features[data.offsets[u] + s : data.offsets[u] + min(s + seq_len, int(data.lengths[u]))]
            x[row, : len(seg)] = dataset.normalize(seg)
            mask[row, : len(seg)] = 1.0
        yield {"x": x, "mask": mask}
