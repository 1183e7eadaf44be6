"""What a run directory holds besides its config and checkpoints: the data it needs to be used
without its corpus or the corpus's feature cache.

A run directory (``dvae-jax train``, ``demo``, ``import-review``)::

    config.json      the resolved Config, feature settings included (checkpoint.save_config)
    checkpoints/     orbax checkpoints, latest and best (checkpoint.py)
    dataset.json     this module: the normaliser (per-band mean / std of the training split's
                     log-Mel or WORLD frames), the corpus fingerprint (cache hash, root, counts) and a real-speech
                     reference spectrum for the reference-free generation measures

A piano-roll run (data.corpus=polyphonic) keeps no normaliser (0/1 frames are the model's input)
and no audio reference; its fingerprint names the set, its file and the file's sha256, which
``evaluate`` checks before computing the test bounds.

With these, ``generate --mode cold`` needs nothing else, and ``generate --mode primed`` /
``evaluate`` featurise any audio with the run's own settings and statistics. A run written before
dataset.json existed is upgraded from its corpus (:func:`upgrade`, ``dvae-jax upgrade-run``), or
automatically when the corpus's feature cache is already on disk.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from dvae_jax import config as config_lib
from dvae_jax import errors

DATA_FILE = "dataset.json"
VERSION = 1
N_REFERENCE = 10  # test utterances averaged into the real-speech reference spectrum


def normalises(feat_cfg: config_lib.FeatureConfig) -> bool:
    """Whether these features are standardised per band (log-Mel or WORLD frames with
    ``features.normalize``; never STFT power, whose Itakura-Saito likelihood needs power)."""
    return feat_cfg.kind in ("mel", "world") and feat_cfg.normalize


@dataclasses.dataclass(frozen=True)
class Normalizer:
    """Per-band standardisation of features: ``(x - mean) / std``; identity when ``mean`` is None
    (STFT power, or ``features.normalize=false``). Usable without a Dataset. For WORLD frames the
    voicing flag and log-F0 are standardised like any other dimension."""

    mean: np.ndarray | None = None  # (f,) float32
    std: np.ndarray | None = None  # (f,) float32

    @property
    def applies(self) -> bool:
        return self.mean is not None

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Raw features (..., f) -> model input."""
        if not self.applies:
            return np.asarray(x, dtype=np.float32)
        return ((np.asarray(x, np.float32) - self.mean) / self.std).astype(np.float32)

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        """Model space (..., f) -> raw features; the inverse of :meth:`normalize`."""
        if not self.applies:
            return np.asarray(x, dtype=np.float32)
        return (np.asarray(x, np.float32) * self.std + self.mean).astype(np.float32)

    @classmethod
    def for_features(cls, feat_cfg: config_lib.FeatureConfig, mean=None, std=None) -> Normalizer:
        """The normaliser the feature settings ask for: statistics only for normalised log-Mel / WORLD."""
        if not normalises(feat_cfg) or mean is None:
            return cls()
        return cls(np.asarray(mean, np.float32), np.asarray(std, np.float32))

    def to_json(self) -> dict[str, Any]:
        if not self.applies:
            return {"applies": False}
        # float32 -> Python float -> repr round-trips exactly
        return {"applies": True, "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Normalizer:
        if not d.get("applies"):
            return cls()
        return cls(np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32))


@dataclasses.dataclass(frozen=True)
class RunData:
    """Everything of the training data a run keeps (dataset.json)."""

    normalizer: Normalizer
    fingerprint: dict[str, Any]  # corpus, root, hash, counts per split; {} when unknown
    reference_logmel: np.ndarray | None = None  # (n_mels,) mean natural-log Mel of real test speech
    reference_note: str = ""


def _fingerprint(manifest: dict[str, Any]) -> dict[str, Any]:
    keys = ("hash", "corpus", "root", "n_bins", "speakers", "utterances", "frames", "hours")
    out = {k: manifest.get(k) for k in keys}
    out["speakers"] = {k: len(v) for k, v in (manifest.get("speakers") or {}).items()}
    return out


def from_dataset(dataset, n_reference: int = N_REFERENCE) -> RunData:
    """The RunData of a prepared ``data.prepare.Dataset``: its training statistics, fingerprint,
    and the mean log-Mel of the waves of its first ``n_reference`` test utterances."""
    if dataset.manifest.get("corpus") == "polyphonic":
        keys = ("corpus", "set_name", "root", "file", "hash", "n_bins", "sequences", "frames")
        return RunData(Normalizer(), {k: dataset.manifest[k] for k in keys}, None,
                       "piano-rolls: no audio reference")
    from dvae_jax.audio import stats  # local: audio pulls librosa

    feat = dataset.feature_cfg
    test = dataset.split("test")
    idx = list(range(min(n_reference, len(test))))
    reference, note = None, "no test utterance"
    if idx:
        logmel = np.concatenate([stats.logmel(dataset.load_wave("test", i), feat) for i in idx], axis=0)
        reference = logmel.mean(axis=0).astype(np.float32)
        note = f"{len(idx)} test utterances of corpus '{dataset.manifest['corpus']}' (log-Mel of their waves)"
    return RunData(dataset.normalizer, _fingerprint(dataset.manifest), reference, note)


def save(workdir: str | os.PathLike, data: RunData) -> Path:
    """Writes ``workdir/dataset.json`` atomically."""
    from dvae_jax import checkpoint

    path = Path(workdir) / DATA_FILE
    payload = {
        "version": VERSION,
        "normalizer": data.normalizer.to_json(),
        "fingerprint": data.fingerprint,
        "reference": None if data.reference_logmel is None else {
            "logmel_mean": [float(v) for v in data.reference_logmel], "note": data.reference_note},
    }
    Path(workdir).mkdir(parents=True, exist_ok=True)
    try:
        checkpoint.write_json_atomic(path, payload)
    except OSError as e:
        raise errors.StorageError(f"cannot write {path}: {e.strerror or e}; free space or fix permissions") from None
    return path


def load(workdir: str | os.PathLike) -> RunData | None:
    """The run's stored data, or None for a run of the older layout (no dataset.json)."""
    path = Path(workdir) / DATA_FILE
    if not path.exists():
        return None
    try:
        d = json.loads(path.read_text())
        ref = d.get("reference")
        return RunData(Normalizer.from_json(d["normalizer"]), d.get("fingerprint") or {},
                       None if not ref else np.asarray(ref["logmel_mean"], np.float32),
                       "" if not ref else ref.get("note", ""))
    except (ValueError, KeyError, TypeError) as e:
        raise errors.RunError(f"{path} is corrupt ({e}); rewrite it with `dvae-jax upgrade-run --workdir "
                              f"{workdir}` (needs the run's corpus)") from None


def record(workdir: str | os.PathLike, dataset) -> RunData:
    """Stores what the run needs of ``dataset`` (its own prepared corpus) in the run directory."""
    data = from_dataset(dataset)
    save(workdir, data)
    return data


def upgrade(workdir: str | os.PathLike, progress: bool = False) -> RunData:
    """Recomputes dataset.json from the run's original corpus (prepared, or taken from its cache).

    Raises:
        DataError: the corpus named in config.json is not there any more.
    """
    from dvae_jax import checkpoint
    from dvae_jax.data import prepare

    cfg = checkpoint.load_config(workdir)
    return record(workdir, prepare.prepare_dataset(cfg.data, cfg.features, progress=progress))


def require(workdir: str | os.PathLike, cfg: config_lib.Config, dataset=None, quiet: bool = False) -> RunData:
    """The run's data; a run of the older layout is upgraded from ``dataset`` (the run's own
    prepared corpus) or from its corpus's feature cache when present, printing that it did.

    Raises:
        RunError: older layout, normalised features, and neither the dataset nor the cache at hand.
    """
    from dvae_jax.data import prepare

    data = load(workdir)
    if data is not None:
        return data
    if not isinstance(dataset, prepare.Dataset):
        dataset = prepare.find_cached(cfg.data, cfg.features)
    if dataset is not None:
        data = record(workdir, dataset)
        if not quiet:
            print(f"upgraded {workdir}: wrote {DATA_FILE} (normalisation statistics of cache {dataset.path.name})")
        return data
    if not normalises(cfg.features):
        return RunData(Normalizer(), {})  # nothing to de-normalise: usable as it is
    where = (f"'{cfg.data.corpus}' at '{cfg.data.root}') in place" if cfg.data.root else
             f"'{cfg.data.corpus}', rebuilt offline under '{cfg.data.cache_dir}')")
    raise errors.RunError(
        f"{workdir} has no {DATA_FILE} (a run of an older layout: its normalisation statistics lived in the "
        f"feature cache, now gone): run `dvae-jax upgrade-run --workdir {workdir}` (its corpus: {where}")
