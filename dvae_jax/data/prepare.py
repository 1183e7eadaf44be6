"""Corpus -> checked, trimmed, max-normalised audio -> features -> memory-mappable on-disk cache."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import time
import uuid
from collections.abc import Iterator
from typing import Any

import librosa
import numpy as np

from dvae_jax import config as config_lib
from dvae_jax import run_dir
from dvae_jax.audio import spectral
from dvae_jax.audio import world as world_lib
from dvae_jax.data import asterisk, audio_io, mini, polyphonic
from dvae_jax.data import corpus as corpus_lib

DataError = corpus_lib.DataError
CACHE_VERSION = 1
_HEADER_BYTES = 128  # fixed .npy header so the shape can be rewritten once the row count is known


# --------------------------------------------------------------------------------------------
# Streaming .npy writer


class _NpyWriter:
    """Appends float32 rows of shape ``row_shape`` to a .npy file whose length is not known ahead."""

    def __init__(self, path: pathlib.Path, row_shape: tuple[int, ...]):
        self.path, self.row_shape, self.rows = path, tuple(row_shape), 0
        self.f = open(path, "wb")  # noqa: SIM115 - held open across append() calls, closed in close()
        self.f.write(self._header(10**12))

    def _header(self, rows: int) -> bytes:
        d = {"descr": "<f4", "fortran_order": False, "shape": (rows, *self.row_shape)}
        text = repr(d).encode("latin1")
        pad = _HEADER_BYTES - 10 - len(text) - 1
        return b"\x93NUMPY\x01\x00" + (_HEADER_BYTES - 10).to_bytes(2, "little") + text + b" " * pad + b"\n"

    def append(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, dtype="<f4")
        assert array.shape[1:] == self.row_shape, (array.shape, self.row_shape)
        self.f.write(array.tobytes())
        self.rows += array.shape[0]

    def close(self) -> None:
        self.f.seek(0)
        self.f.write(self._header(self.rows))
        self.f.close()


def _mmap(path: pathlib.Path) -> np.ndarray:
    """Memory-mapped .npy; an empty array is loaded normally (a 0-byte mmap is refused)."""
    try:
        return np.load(path, mmap_mode="r")
    except ValueError:
        return np.load(path)


# --------------------------------------------------------------------------------------------
# The dataset as seen by training and evaluation


@dataclasses.dataclass
class Stats:
    """Per-bin mean / std of the (log-Mel or WORLD) features over the training split."""

    mean: np.ndarray
    std: np.ndarray


@dataclasses.dataclass
class SplitData:
    """One split: all frames concatenated, ``features[offsets[i]:offsets[i + 1]]`` is utterance i."""

    name: str
    features: np.ndarray  # (N, F) float32, memory-mapped, raw (not normalised)
    offsets: np.ndarray  # (n_utts + 1,) int64
    utt_ids: list[str]
    speakers: list[str]
    texts: list[str | None]
    paths: list[str]
    trim: np.ndarray  # (n_utts, 2) int64: [start, end) samples kept after trimming

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def n_frames(self) -> int:
        return int(self.offsets[-1])

    def __len__(self) -> int:
        return len(self.utt_ids)

    def utterance(self, index: int) -> np.ndarray:
        """(frames, F) raw features of utterance ``index``."""
        return np.asarray(self.features[self.offsets[index] : self.offsets[index + 1]])


@dataclasses.dataclass
class ChunkData:
    """The review's chunks: (n_chunks, frames_per_chunk, F); ``utt_index`` gives each one's utterance."""

    name: str
    features: np.ndarray
    utt_index: np.ndarray

    def __len__(self) -> int:
        return int(self.features.shape[0])


class _FeatureSource:
    """What a prepared corpus and any featurised audio share: features in splits, the feature
    settings, a normaliser, and the waveforms behind the features."""

    feature_cfg: config_lib.FeatureConfig
    data_cfg: config_lib.DataConfig
    normalizer: run_dir.Normalizer

    @property
    def n_bins(self) -> int:
        return self.feature_cfg.n_bins

    def split(self, name: str) -> SplitData:
        raise NotImplementedError

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Features -> model input: (x - mean) / std per bin for log-Mel and WORLD; identity for STFT power."""
        return self.normalizer.normalize(x)

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalize`."""
        return self.normalizer.denormalize(x)

    def load_wave(self, name: str, index: int) -> np.ndarray:
        """The trimmed, peak-1 waveform whose features are utterance ``index`` of split ``name``."""
        s = self.split(name)
        return _load_trimmed(s.paths[index], s.trim[index], self.feature_cfg, self.data_cfg.downmix)


class Dataset(_FeatureSource):
    """A prepared corpus: splits, review chunks, normalisation statistics, manifest."""

    def __init__(self, path: str | os.PathLike, feature_cfg: config_lib.FeatureConfig, data_cfg: config_lib.DataConfig):
        self.path = pathlib.Path(path)
        self.feature_cfg = feature_cfg
        self.data_cfg = data_cfg
        self.manifest: dict[str, Any] = json.loads((self.path / "manifest.json").read_text())
        self._splits: dict[str, SplitData] = {}
        self._chunks: dict[str, ChunkData] = {}
        stats = self.path / "stats.npz"
        if stats.exists():
            with np.load(stats) as s:
                self.stats: Stats | None = Stats(s["mean"].astype(np.float32), s["std"].astype(np.float32))
        else:
            self.stats = None
        self.normalizer = run_dir.Normalizer.for_features(
            feature_cfg, *((self.stats.mean, self.stats.std) if self.stats is not None else ()))

    @property
    def split_names(self) -> tuple[str, ...]:
        return corpus_lib.SPLITS

    def split(self, name: str) -> SplitData:
        if name not in corpus_lib.SPLITS:
            raise KeyError(f"unknown split '{name}' (train, val, test)")
        if name not in self._splits:
            d = self.path / name
            meta = json.loads((d / "meta.json").read_text())
            self._splits[name] = SplitData(
                name, _mmap(d / "features.npy"), np.load(d / "offsets.npy"), meta["utt_ids"],
                meta["speakers"], meta["texts"], meta["paths"], np.load(d / "trim.npy"),
            )
        return self._splits[name]

    def has_chunks(self) -> bool:
        return (self.path / "train" / "chunks.npy").exists()

    def chunks(self, name: str) -> ChunkData:
        """The review's chunks of split ``name``; built when ``data.batching='chunks'``."""
        if not self.has_chunks():
            raise DataError("chunks were not prepared: set data.batching=chunks and prepare again")
        if name not in self._chunks:
            d = self.path / name
            self._chunks[name] = ChunkData(name, _mmap(d / "chunks.npy"), np.load(d / "chunk_utt.npy"))
        return self._chunks[name]

    @property
    def normalizes(self) -> bool:
        return self.normalizer.applies

    def summary(self) -> str:
        return summary(self.manifest)


class PianoRollDataset(_FeatureSource):
    """A piano-roll set (data.corpus=polyphonic, data/polyphonic.py) with the members of
    :class:`Dataset` that the fit loop, its batches and run_dir read; no feature cache (the .npz
    file is the data). Splits: 'train' and 'val' are the 100-frame chunks (each one a sequence;
    ``chunks`` gives them in the file's stream order), 'test' the whole pieces. 0/1 frames are
    the model's input as they are (no normaliser)."""

    def __init__(self, rolls: polyphonic.PianoRolls, file: pathlib.Path,
                 feature_cfg: config_lib.FeatureConfig, data_cfg: config_lib.DataConfig):
        self.rolls, self.path = rolls, pathlib.Path(file)
        self.feature_cfg, self.data_cfg = feature_cfg, data_cfg
        self.normalizer = run_dir.Normalizer()
        self._arrays = {"train": (rolls.x_train, None), "val": (rolls.x_valid, None),
                        "test": (rolls.x_test, rolls.mask_test)}
        self._splits: dict[str, SplitData] = {}
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]
        lengths = {k: self._lengths(k) for k in corpus_lib.SPLITS}
        self.manifest: dict[str, Any] = {
            "corpus": "polyphonic", "set_name": rolls.name, "root": os.path.abspath(self.path.parent),
            "file": os.path.abspath(self.path), "hash": digest, "n_bins": polyphonic.KEYS,
            "sequences": {k: len(v) for k, v in lengths.items()},
            "frames": {k: int(v.sum()) for k, v in lengths.items()},
        }

    @property
    def n_bins(self) -> int:
        return polyphonic.KEYS

    @property
    def split_names(self) -> tuple[str, ...]:
        return corpus_lib.SPLITS

    @property
    def normalizes(self) -> bool:
        return False

    def _lengths(self, name: str) -> np.ndarray:
        x, mask = self._arrays[name]
        return np.full(len(x), x.shape[1], np.int64) if mask is None else mask.sum(1).astype(np.int64)

    def split(self, name: str) -> SplitData:
        if name not in self._arrays:
            raise KeyError(f"unknown split '{name}' (train, val, test)")
        if name not in self._splits:
            x, lengths = self._arrays[name][0], self._lengths(name)
            n = len(x)
            self._splits[name] = SplitData(
                name, np.concatenate([x[i, :t] for i, t in enumerate(lengths)]) if n else x[:0, 0],
                np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                [f"{self.rolls.name}-{name}-{i:04d}" for i in range(n)], [self.rolls.name] * n,
                [None] * n, [str(self.path)] * n, np.zeros((n, 2), np.int64))
        return self._splits[name]

    def has_chunks(self) -> bool:
        return True

    def chunks(self, name: str) -> ChunkData:
        """The 100-frame chunks of 'train' or 'val' in the file's order (stream layout)."""
        if name == "test":
            raise DataError("the piano-roll test split is whole pieces, not chunks")
        x = self._arrays[name][0]
        return ChunkData(name, x, np.arange(len(x)))

    def load_wave(self, name: str, index: int) -> np.ndarray:
        raise DataError(f"{self.path}: piano-rolls have no audio")

    def summary(self) -> str:
        return f"{polyphonic.summary(self.rolls)}\nfile: {self.path} (sha256 {self.manifest['hash']})"


def polyphonic_dataset(data_cfg: config_lib.DataConfig, feat_cfg: config_lib.FeatureConfig) -> PianoRollDataset:
    """The piano-roll set ``data.set_name`` (under ``data.root``, or the packaged JSB).

    Raises:
        DataError: unknown set, missing or unreadable file, arrays that are not piano-rolls.
    """
    rolls = polyphonic.load(data_cfg.set_name, data_cfg.root)
    return PianoRollDataset(rolls, polyphonic.path(data_cfg.set_name, data_cfg.root), feat_cfg, data_cfg)


# --------------------------------------------------------------------------------------------
# Processing one utterance


def chunk_samples(data_cfg: config_lib.DataConfig, feat_cfg: config_lib.FeatureConfig) -> int:
    """Samples of one review chunk: ``seq_len`` centred frames, (50 - 1) * 256 = 12,544 by default."""
    return (data_cfg.seq_len - 1) * feat_cfg.hop_length


def _load_trimmed(path: str, trim, feat_cfg: config_lib.FeatureConfig, downmix: bool) -> np.ndarray:
    wave = audio_io.load_audio(path, feat_cfg.sample_rate, downmix=downmix)
    start, end = (int(v) for v in trim)
    return _peak_normalise(wave[start:end])


def _peak_normalise(x: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return (x / peak).astype(np.float32) if peak > 0 else x.astype(np.float32)


def _trim(wave: np.ndarray, top_db: float) -> tuple[int, int]:
    if top_db <= 0:
        return 0, len(wave)
    _, (start, end) = librosa.effects.trim(wave, top_db=top_db)
    return int(start), int(end)


@dataclasses.dataclass
class _Result:
    features: np.ndarray | None = None
    chunks: np.ndarray | None = None
    trim: tuple[int, int] = (0, 0)
    seconds: float = 0.0
    notes: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None


def wave_to_features(wave: np.ndarray, feat_cfg: config_lib.FeatureConfig) -> np.ndarray:
    """Trimmed, peak-normalised waveform -> raw features (frames, n_bins), ``len // hop + 1``
    frames whatever the kind: STFT power or log-Mel (audio.spectral), or WORLD frames
    (audio.world: log-F0, voicing, coded envelope, coded aperiodicity).

    Raises:
        audio.world.WorldError: WORLD features without pyworld, or a wave WORLD cannot analyse.
    """
    if feat_cfg.kind == "world":
        cfg = world_lib.from_features(feat_cfg)
        return world_lib.to_array(world_lib.analyse(wave, cfg))
    return spectral.wave_to_features(wave, feat_cfg)


def _min_samples(data_cfg, feat_cfg, want_chunks: bool) -> int:
    if want_chunks:
        return chunk_samples(data_cfg, feat_cfg)
    if feat_cfg.kind == "world":  # WORLD analyses two hops at least
        return max(feat_cfg.win_length, 2 * feat_cfg.hop_length)
    return feat_cfg.win_length


def _process(utt: corpus_lib.Utterance, data_cfg, feat_cfg, want_chunks: bool) -> _Result:
    min_samples = _min_samples(data_cfg, feat_cfg, want_chunks)
    try:
        wave, info = audio_io.read_audio(utt.path, feat_cfg.sample_rate, downmix=data_cfg.downmix)
    except audio_io.AudioError as e:
        return _Result(error=str(e))
    start, end = _trim(wave, feat_cfg.trim_db)
    if end - start < min_samples:
        what = "one review chunk" if want_chunks else "one analysis window"
        return _Result(
            error=f"{utt.path}: too short after trimming at {feat_cfg.trim_db:g} dB ({end - start} samples, "
            f"{what} needs {min_samples}); remove it"
        )
    x = _peak_normalise(wave[start:end])
    try:
        res = _Result(features=wave_to_features(x, feat_cfg), trim=(start, end),
                      seconds=len(x) / feat_cfg.sample_rate, notes=info.notes(feat_cfg.sample_rate))
        if want_chunks:
            n = min_samples
            pieces = [_peak_normalise(x[i * n : (i + 1) * n]) for i in range(len(x) // n)]
            res.chunks = np.stack([wave_to_features(p, feat_cfg) for p in pieces])
    except world_lib.WorldError as err:
        if "pyworld" in str(err):  # missing package: no file would do, stop with the remedy
            raise
        return _Result(error=f"{utt.path}: {err}")
    return res


# --------------------------------------------------------------------------------------------
# Corpus resolution and the cache key


def resolve_corpus(
    data_cfg: config_lib.DataConfig, skipped: list[corpus_lib.Skip]
) -> tuple[list[corpus_lib.Utterance], str]:
    """Reads the configured corpus (building ``mini`` on first use). Returns (utterances, root)."""
    kind = data_cfg.corpus
    if kind == "mini":
        root = data_cfg.root or os.path.join(data_cfg.cache_dir, "mini")
        mini.build_mini_corpus(root, data_cfg.mini_speakers, data_cfg.mini_sentences)
        return corpus_lib.read_vctk(root, "mic1", skipped), root
    if kind in ("vctk", "folder"):
        if not data_cfg.root:
            raise DataError(f"corpus '{kind}' needs a location: --root PATH (data.root)")
        if kind == "vctk":
            return corpus_lib.read_vctk(data_cfg.root, data_cfg.mic, skipped), data_cfg.root
        return corpus_lib.read_folder(
            data_cfg.root, data_cfg.speaker_pattern or None, data_cfg.transcripts or None, skipped
        ), data_cfg.root
    if kind == "tfds":
        if not data_cfg.root:
            raise DataError("corpus 'tfds' needs --root pointing at the folder holding VCTK-Corpus-0.92.zip")
        return corpus_lib.read_tfds(data_cfg.root), data_cfg.root
    if kind == "polyphonic":
        raise DataError("data.corpus=polyphonic has no audio: piano-roll runs are evaluated on their "
                        "set's test pieces (dvae-jax evaluate --workdir RUN, without --audio/--corpus)")
    if kind == "asterisk":
        root = data_cfg.root or asterisk.default_root() or ""  # "" -> read_asterisk says what to install
        return asterisk.read_asterisk(root or None, data_cfg.transcripts or None, skipped), root
    raise DataError(f"data.corpus={kind!r}: must be one of {config_lib.CORPORA}")


def _file_key(path: str) -> list:
    try:
        st = os.stat(path)
        return [os.path.abspath(path), st.st_size, st.st_mtime_ns]
    except OSError:
        return [os.path.abspath(path), -1, -1]


def _feature_key(feat_cfg: config_lib.FeatureConfig) -> dict:
    """The feature settings in the cache key: the ``world_*`` fields only for WORLD features, so
    that caches of log-Mel and STFT runs keep the keys they had before those fields existed."""
    d = dataclasses.asdict(feat_cfg)
    if feat_cfg.kind != "world":
        d = {k: v for k, v in d.items() if not k.startswith("world_")}
    return d


def cache_key(
    splits: dict[str, list[corpus_lib.Utterance]],
    data_cfg: config_lib.DataConfig,
    feat_cfg: config_lib.FeatureConfig,
) -> str:
    """Hash of the split file lists (with sizes / mtimes / transcripts) and the settings that shape them."""
    data = dataclasses.asdict(data_cfg)
    for k in ("cache_dir", "workers", "seq_len", "batching"):  # no effect on the stored arrays
        data.pop(k)
    want_chunks = data_cfg.batching == "chunks"
    payload = {
        "version": CACHE_VERSION,
        "data": data,
        "chunk_samples": chunk_samples(data_cfg, feat_cfg) if want_chunks else None,
        "features": _feature_key(feat_cfg),
        "files": {k: [[u.utt_id, u.speaker, u.text, *_file_key(u.path)] for u in v] for k, v in splits.items()},
    }
    blob = json.dumps(payload, sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Building the cache


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    try:
        import tqdm
    except ImportError:
        return None
    return tqdm.tqdm(total=total, desc=desc, unit="utt", leave=False)


def _map_ordered(fn, items, workers: int) -> Iterator:
    """``map`` in order with a bounded look-ahead (numpy FFT and libsndfile release the GIL)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending = []
        it = iter(items)
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 4 * workers:
                yield pending.pop(0).result()
        for fut in pending:
            yield fut.result()


class _StatsSum:
    """Running per-bin sums of the training split's log-Mel or WORLD frames, for the normalisation
    statistics."""

    def __init__(self, n_bins: int):
        self.sum = np.zeros(n_bins, np.float64)
        self.sq = np.zeros(n_bins, np.float64)
        self.n = 0

    def add(self, features: np.ndarray) -> None:
        self.sum += features.sum(0, dtype=np.float64)
        self.sq += np.square(features, dtype=np.float64).sum(0)
        self.n += features.shape[0]

    def save(self, path: pathlib.Path) -> None:
        if not self.n:
            return
        mean = self.sum / self.n
        std = np.sqrt(np.maximum(self.sq / self.n - mean**2, 0.0))
        np.savez(path, mean=mean.astype(np.float32), std=np.maximum(std, 1e-3).astype(np.float32))


@dataclasses.dataclass
class _Job:
    """What building one cache needs besides the split lists."""

    data_cfg: config_lib.DataConfig
    feat_cfg: config_lib.FeatureConfig
    skipped: list[corpus_lib.Skip]
    notes: list[dict]
    bar: Any
    workers: int

    @property
    def want_chunks(self) -> bool:
        return self.data_cfg.batching == "chunks"


def _build_split(d: pathlib.Path, name: str, utts: list[corpus_lib.Utterance], job: _Job,
                 stats: _StatsSum | None) -> tuple[dict, float]:
    """Writes one split's arrays and meta.json into ``d``; returns (its manifest entry, seconds)."""
    n_bins, frames_per_chunk = job.feat_cfg.n_bins, job.data_cfg.seq_len
    feats = _NpyWriter(d / "features.npy", (n_bins,))
    chunks = _NpyWriter(d / "chunks.npy", (frames_per_chunk, n_bins)) if job.want_chunks else None
    offsets, trim, chunk_utt = [0], [], []
    kept: list[corpus_lib.Utterance] = []
    seconds = 0.0
    fn = lambda u: _process(u, job.data_cfg, job.feat_cfg, job.want_chunks)
    for utt, res in zip(utts, _map_ordered(fn, utts, job.workers)):
        if job.bar is not None:
            job.bar.update(1)
        if res.error is not None:
            job.skipped.append(corpus_lib.Skip(utt.path, res.error))
            continue
        job.notes.extend({"path": utt.path, "note": n} for n in res.notes)
        feats.append(res.features)
        offsets.append(offsets[-1] + res.features.shape[0])
        trim.append(res.trim)
        if chunks is not None and res.chunks is not None:
            assert res.chunks.shape[1] == frames_per_chunk, res.chunks.shape
            chunks.append(res.chunks)
            chunk_utt.extend([len(kept)] * res.chunks.shape[0])
        if stats is not None:
            stats.add(res.features)
        kept.append(utt)
        seconds += res.seconds
    feats.close()
    np.save(d / "offsets.npy", np.asarray(offsets, np.int64))
    np.save(d / "trim.npy", np.asarray(trim, np.int64).reshape(-1, 2))
    if chunks is not None:
        chunks.close()
        np.save(d / "chunk_utt.npy", np.asarray(chunk_utt, np.int64))
    meta = {"utt_ids": [u.utt_id for u in kept], "speakers": [u.speaker for u in kept],
            "texts": [u.text for u in kept], "paths": [u.path for u in kept]}
    (d / "meta.json").write_text(json.dumps(meta))
    entry = {"speakers": sorted({u.speaker for u in kept}), "utterances": len(kept), "frames": int(offsets[-1]),
             "hours": round(seconds / 3600, 4), "chunks": len(chunk_utt) if job.want_chunks else None}
    return entry, seconds


def _build(
    out: pathlib.Path,
    splits: dict[str, list[corpus_lib.Utterance]],
    data_cfg: config_lib.DataConfig,
    feat_cfg: config_lib.FeatureConfig,
    skipped: list[corpus_lib.Skip],
    notes: list[dict],
    progress: bool,
) -> dict:
    """Writes every split into ``out`` and the training statistics (log-Mel, WORLD) as stats.npz."""
    total = sum(len(v) for v in splits.values())
    job = _Job(data_cfg, feat_cfg, skipped, notes, _progress(total, progress, "features"),
               data_cfg.workers or os.cpu_count() or 1)
    stats = _StatsSum(feat_cfg.n_bins) if feat_cfg.kind in ("mel", "world") else None
    t0 = time.perf_counter()
    per_split, audio_seconds = {}, 0.0
    try:
        for name in corpus_lib.SPLITS:
            (out / name).mkdir()
            per_split[name], seconds = _build_split(out / name, name, splits[name], job,
                                                    stats if name == "train" else None)
            audio_seconds += seconds
    finally:
        if job.bar is not None:
            job.bar.close()
    if stats is not None:
        stats.save(out / "stats.npz")
    wall = time.perf_counter() - t0
    return {"splits": per_split, "audio_seconds": round(audio_seconds, 2), "extract_seconds": round(wall, 2),
            "throughput_audio_s_per_s": round(audio_seconds / max(wall, 1e-9), 1)}


# --------------------------------------------------------------------------------------------
# Preparing a corpus: plan (read, select, split, key), build, manifest


_SPLIT_REMEDY = ("every split is needed (validation for early stopping and the best checkpoint, test for "
                 "evaluation and priming)")


def _check_settings(data_cfg: config_lib.DataConfig, feat_cfg: config_lib.FeatureConfig) -> None:
    if data_cfg.batching not in ("crops", "chunks"):
        raise DataError(f"data.batching must be 'crops' or 'chunks' for audio, got '{data_cfg.batching}'")
    if data_cfg.batching == "chunks" and data_cfg.seq_len < 2:
        raise DataError("data.seq_len must be >= 2 with data.batching=chunks")
    if feat_cfg.kind not in config_lib.FEATURE_KINDS:
        raise config_lib.ConfigError(f"features.kind must be one of {', '.join(config_lib.FEATURE_KINDS)}, "
                                     f"got '{feat_cfg.kind}'")
    if feat_cfg.kind == "world":
        world_lib.require()  # pyworld importable: else one line, before any work


def _usable(utterances, data_cfg, skipped: list[corpus_lib.Skip], notes: list[dict], root: str) -> list:
    """The utterances left once those without the transcript ``data.require_text`` asks for are out."""
    usable = []
    for u in utterances:
        if u.text is None:
            if data_cfg.require_text:
                skipped.append(corpus_lib.Skip(
                    u.path, f"{u.path}: missing transcript; add it or set data.require_text=false"))
                continue
            notes.append({"path": u.path, "note": "no transcript"})
        usable.append(u)
    if not usable:
        raise DataError(f"no utterance of '{root}' has a transcript and data.require_text=true")
    return usable


def check_splits(splits: dict[str, list], data_cfg: config_lib.DataConfig, after_skipping: bool = False) -> None:
    """Raises a DataError naming the first empty split and the remedy: no split may be empty."""
    for name in corpus_lib.SPLITS:
        if splits[name]:
            continue
        unit = "speakers" if data_cfg.split_by == "speaker" else "utterances"
        if after_skipping:
            why = "every file of it was skipped as unusable (see the reasons with dvae-jax prepare)"
        elif name == "train":
            why = f"the validation and test fractions take all {unit}"
        else:
            why = f"data.{name}_fraction={getattr(data_cfg, name + '_fraction')}"
        fix = (f"set data.{name}_fraction > 0, " if name != "train" and not after_skipping else "")
        raise DataError(f"split '{name}' is empty ({why}): {_SPLIT_REMEDY}; {fix}add {unit} "
                        f"(data.n_speakers, data.speakers), or use data.split_by=utterance")


@dataclasses.dataclass
class _Plan:
    splits: dict[str, list[corpus_lib.Utterance]]
    key: str
    root: str
    skipped: list[corpus_lib.Skip]
    notes: list[dict]


def _plan(data_cfg: config_lib.DataConfig, feat_cfg: config_lib.FeatureConfig) -> _Plan:
    """Reads, selects and splits the corpus; the cache key of the result."""
    _check_settings(data_cfg, feat_cfg)
    skipped: list[corpus_lib.Skip] = []
    utterances, root = resolve_corpus(data_cfg, skipped)
    if not utterances:
        reasons = "; ".join(s.reason for s in skipped[:3])
        raise DataError(f"no audio files found in corpus '{data_cfg.corpus}' at '{root}'"
                        + (f" ({reasons})" if reasons else ""))
    notes: list[dict] = []
    usable = _usable(utterances, data_cfg, skipped, notes, root)
    splits = corpus_lib.split(corpus_lib.select(usable, data_cfg), data_cfg)
    check_splits(splits, data_cfg)
    return _Plan(splits, cache_key(splits, data_cfg, feat_cfg), root, skipped, notes)


def _remove_stale(base: pathlib.Path) -> None:
    """Temporary folders left by killed runs; never taken as a cache."""
    for stale in base.glob(".*.tmp-*"):
        pid = stale.name.split(".tmp-")[-1].split("-")[0]
        if pid.isdigit() and not mini._pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _check_built(info: dict, skipped: list[corpus_lib.Skip], data_cfg: config_lib.DataConfig) -> None:
    if info["splits"]["train"]["utterances"] == 0:
        reasons = "; ".join(s.reason for s in skipped[:3])
        raise DataError(
            f"no usable utterance left for training ({len(skipped)} skipped: {reasons}"
            + ("; ..." if len(skipped) > 3 else "") + ")"
        )
    check_splits({k: [None] * v["utterances"] for k, v in info["splits"].items()}, data_cfg, after_skipping=True)


def _manifest(plan: _Plan, data_cfg, feat_cfg, info: dict) -> dict:
    by_reason: dict[str, int] = {}
    for s in plan.skipped:
        kind = _reason_kind(s.reason)
        by_reason[kind] = by_reason.get(kind, 0) + 1
    per = info["splits"]
    return {
        "version": CACHE_VERSION, "hash": plan.key, "corpus": data_cfg.corpus, "root": os.path.abspath(plan.root),
        "features": dataclasses.asdict(feat_cfg), "data": dataclasses.asdict(data_cfg), "n_bins": feat_cfg.n_bins,
        **{field: {k: v[field] for k, v in per.items()} for field in ("speakers", "utterances", "frames", "hours")},
        "chunks": {k: v["chunks"] for k, v in per.items()} if data_cfg.batching == "chunks" else None,
        "audio_seconds": info["audio_seconds"], "extract_seconds": info["extract_seconds"],
        "throughput_audio_s_per_s": info["throughput_audio_s_per_s"],
        "skipped_count": len(plan.skipped), "skipped_by_reason": by_reason,
        "skipped": [{"path": s.path, "reason": s.reason} for s in plan.skipped],
        "notes": plan.notes, "warnings": [],
    }


def prepare_dataset(
    data_cfg: config_lib.DataConfig, feat_cfg: config_lib.FeatureConfig, progress: bool = True
) -> Dataset:
    """Reads, selects, splits, checks and analyses a corpus; caches the result under ``cache_dir``.

    The cache lives in ``<cache_dir>/features/<hash>/`` where the hash covers the selected files
    (paths, sizes, mtimes, transcripts), the selection / split settings and the feature settings:
    it is reused until one of them changes. It is written in a temporary folder renamed into place.

    Args:
        data_cfg: corpus, selection, split and batching settings.
        feat_cfg: analysis settings (:func:`wave_to_features`).
        progress: show a tqdm progress bar while extracting.

    Returns:
        The prepared :class:`Dataset`; for ``data.corpus=polyphonic`` the piano-roll set
        (:class:`PianoRollDataset`, read from its file, no cache).

    Raises:
        DataError: missing corpus, impossible selection or split, an empty split (before or after
            skipping bad files), or no usable utterance left.
    """
    if data_cfg.corpus == "polyphonic":
        return polyphonic_dataset(data_cfg, feat_cfg)
    plan = _plan(data_cfg, feat_cfg)
    base = pathlib.Path(data_cfg.cache_dir) / "features"
    final = base / plan.key
    if (final / "manifest.json").exists():
        return Dataset(final, feat_cfg, data_cfg)
    base.mkdir(parents=True, exist_ok=True)
    _remove_stale(base)
    tmp = base / f".{plan.key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    try:
        info = _build(tmp, plan.splits, data_cfg, feat_cfg, plan.skipped, plan.notes, progress)
        _check_built(info, plan.skipped, data_cfg)
        # Written last: a folder with manifest.json is complete.
        (tmp / "manifest.json").write_text(json.dumps(_manifest(plan, data_cfg, feat_cfg, info), indent=1))
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "manifest.json").exists():  # someone else finished first otherwise
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Dataset(final, feat_cfg, data_cfg)


def find_cached(data_cfg: config_lib.DataConfig, feat_cfg: config_lib.FeatureConfig) -> Dataset | None:
    """The prepared dataset of these settings when its cache is already complete on disk, else
    None; never builds anything (not even the mini corpus). A piano-roll set is its file."""
    if data_cfg.corpus == "polyphonic":
        try:
            return polyphonic_dataset(data_cfg, feat_cfg)
        except DataError:
            return None
    if data_cfg.corpus == "mini" and not os.path.isdir(data_cfg.root or os.path.join(data_cfg.cache_dir, "mini")):
        return None
    try:
        plan = _plan(data_cfg, feat_cfg)
    except (DataError, config_lib.ConfigError, OSError):
        return None
    final = pathlib.Path(data_cfg.cache_dir) / "features" / plan.key
    return Dataset(final, feat_cfg, data_cfg) if (final / "manifest.json").exists() else None


# --------------------------------------------------------------------------------------------
# Audio a run was not prepared on (evaluate / generate --audio DIR)


class AudioSet(_FeatureSource):
    """Utterances of any folder or corpus featurised in memory with a run's feature settings and
    its stored normaliser (never statistics of the new audio); one split, named ``'audio'``. It
    has the members of :class:`Dataset` that evaluation and primed generation read."""

    SPLIT = "audio"
    split_names = (SPLIT,)

    def __init__(self, data: SplitData, feature_cfg, data_cfg, normalizer: run_dir.Normalizer,
                 skipped: list[corpus_lib.Skip], root: str):
        self._data, self.feature_cfg, self.data_cfg = data, feature_cfg, data_cfg
        self.normalizer, self.skipped, self.root = normalizer, skipped, root

    def split(self, name: str) -> SplitData:
        if name != self.SPLIT:
            raise DataError(f"audio given with --audio/--root has one split, '{self.SPLIT}', not '{name}'")
        return self._data


def list_audio(data_cfg: config_lib.DataConfig, corpus: str, root: str) -> tuple[list[corpus_lib.Utterance], str]:
    """Every utterance of ``corpus`` at ``root`` (no selection, no split); transcripts optional.

    Raises:
        DataError: no such corpus or folder, or no audio in it.
    """
    data_cfg = dataclasses.replace(data_cfg, corpus=corpus, root=str(root), require_text=False,
                                   **({"speaker_pattern": "", "transcripts": ""} if corpus == "folder" else {}))
    skipped: list[corpus_lib.Skip] = []
    utterances, root = resolve_corpus(data_cfg, skipped)
    if not utterances:
        reasons = "; ".join(s.reason for s in skipped[:3])
        raise DataError(f"no audio files found in '{root}'" + (f" ({reasons})" if reasons else "")
                        + ": pass a folder of wav / flac / ogg files")
    return utterances, root


def featurise(
    utterances: list[corpus_lib.Utterance], data_cfg: config_lib.DataConfig, feat_cfg: config_lib.FeatureConfig,
    normalizer: run_dir.Normalizer, root: str = "", want: int | None = None, min_frames: int = 0,
) -> AudioSet:
    """Features of ``utterances`` in order (the corpus reader's checks; bad files skipped with
    their reason), stopping once ``want`` of them have at least ``min_frames`` frames.

    Raises:
        DataError: no utterance could be used.
    """
    skipped: list[corpus_lib.Skip] = []
    feats, trim, kept, long_enough = [], [], [], 0
    for utt in utterances:
        res = _process(utt, data_cfg, feat_cfg, want_chunks=False)
        if res.error is not None:
            skipped.append(corpus_lib.Skip(utt.path, res.error))
            continue
        feats.append(res.features)
        trim.append(res.trim)
        kept.append(utt)
        long_enough += res.features.shape[0] >= min_frames
        if want is not None and long_enough >= want:
            break
    if not kept:
        reasons = "; ".join(s.reason for s in skipped[:3])
        raise DataError(f"no usable audio in '{root}' ({len(skipped)} skipped: {reasons})")
    offsets = np.concatenate([[0], np.cumsum([f.shape[0] for f in feats])]).astype(np.int64)
    data = SplitData(AudioSet.SPLIT, np.concatenate(feats, axis=0), offsets, [u.utt_id for u in kept],
                     [u.speaker for u in kept], [u.text for u in kept], [u.path for u in kept],
                     np.asarray(trim, np.int64).reshape(-1, 2))
    return AudioSet(data, feat_cfg, data_cfg, normalizer, skipped, root)


_REASON_KINDS = (
    ("non-speech prompt", "non-speech"),  # first: the quoted annotation may contain any word
    ("empty file", "empty"), ("contains no samples", "empty"), ("not an audio file", "not audio"),
    ("truncated (header promises", "truncated"), ("constant signal", "constant"),
    ("absurd amplitude", "absurd amplitude"),
    ("corrupt", "corrupt"), ("silent", "silent"), ("too short", "too short"), ("sample rate", "sample rate"),
    ("channels", "multi-channel"), ("missing transcript", "missing transcript"),
    ("folder cannot be read", "unreadable folder"), ("cannot be read", "unreadable file"),
    ("NaN", "non-finite"), ("speaker pattern", "no speaker"),
)


def _reason_kind(reason: str) -> str:
    for needle, kind in _REASON_KINDS:
        if needle in reason:
            return kind
    return "other"


def summary(manifest: dict) -> str:
    """Human-readable summary of a manifest: speakers, utterances, hours, frames, skipped files."""
    lines = [f"corpus {manifest['corpus']} at {manifest['root']}  (cache {manifest['hash']})"]
    lines.append(f"{'split':<6} {'speakers':>8} {'utts':>6} {'hours':>8} {'frames':>10}" + ("  chunks" if manifest.get("chunks") else ""))
    for k in corpus_lib.SPLITS:
        row = (f"{k:<6} {len(manifest['speakers'][k]):>8} {manifest['utterances'][k]:>6} "
               f"{manifest['hours'][k]:>8.3f} {manifest['frames'][k]:>10}")
        if manifest.get("chunks"):
            row += f"  {manifest['chunks'][k]:>6}"
        lines.append(row)
    lines.append(f"features: {manifest['features']['kind']}, {manifest['n_bins']} bins; extraction "
                 f"{manifest['throughput_audio_s_per_s']} s of audio per s")
    lines.append(f"skipped: {manifest['skipped_count']}" + (
        " (" + ", ".join(f"{k}: {v}" for k, v in sorted(manifest["skipped_by_reason"].items())) + ")"
        if manifest["skipped_count"] else ""))
    for s in manifest["skipped"][:20]:
        lines.append(f"  - {s['reason']}")
    if len(manifest["skipped"]) > 20:
        lines.append(f"  ... {len(manifest['skipped']) - 20} more in manifest.json")
    for w in manifest.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)
