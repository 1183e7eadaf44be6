"""The four polyphonic piano-roll sets (JSB Chorales, Nottingham, MuseData, Piano-midi.de) in the
SRNN paper's exact splits: reading, checking, and the batches training and evaluation need.

Files: ``NAME_raw_batchsize16_seqlen100.npz`` from the SRNN code (marcofraccaro/srnn, data/, MIT);
JSB ships with the package (dvae_jax/data/pianoroll/), the others are read from a directory.
``x_train`` / ``x_valid``: (N, 100, 88) chunks, laid out so that row i of batch k + 1 (16 rows per
batch) continues row i of batch k: 16 parallel streams, which the SRNN code trains on with the
recurrent state carried from one batch to the next (truncated backpropagation through time).
``x_test``: whole test pieces, zero-padded, ``mask_test`` marking their frames.

The files also hold ``u_*`` = x shifted by one frame (u_t = x_{t-1}, u_1 = 0), the SRNN code's
deterministic input. This project does not need it: SRNN's h_t is computed from x_{t-1} inside
the model (MODELS.md: h_t = LSTM_h(MLP_x_h(x_{t-1}), h_{t-1}), x_0 = 0), and VRNN's h_t summarises
x_{1:t-1}, so feeding x is the same model; the reader checks that u is x shifted, nothing more.
"""

from __future__ import annotations

import pathlib
import zipfile
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from dvae_jax.config import POLYPHONIC_SETS
from dvae_jax.errors import DataError

EMBEDDED = pathlib.Path(__file__).resolve().parent / "pianoroll"
FILE = "{name}_raw_batchsize16_seqlen100.npz"
KEYS = 88  # piano keys A0..C8
STREAMS = 16  # the files' layout: rows i, i + 16, i + 32, ... are one stream
CHUNK = 100  # frames per training chunk
# Published test bounds, nats per time step (Fraccaro et al. 2016, Table 1; SRNN smoothing + Resq).
PAPER_SRNN = {"jsb": -4.74, "nottingham": -2.94, "muse": -6.28, "piano": -8.20}


class PianoRolls(NamedTuple):
    """One set, float32 0/1 arrays of 88 keys per frame."""

    name: str
    x_train: np.ndarray  # (n, 100, 88) chunks, stream layout (see the module docstring)
    x_valid: np.ndarray  # (n, 100, 88) chunks
    x_test: np.ndarray  # (n, t_max, 88) whole pieces, zero-padded
    mask_test: np.ndarray  # (n, t_max) 1 on a piece's frames, then 0

    @property
    def test_lengths(self) -> np.ndarray:
        return self.mask_test.sum(axis=1).astype(np.int64)


def path(name: str, root: str = "") -> pathlib.Path:
    """The file of set ``name``: under ``root`` when given, else the packaged copy (JSB only)."""
    if name not in POLYPHONIC_SETS:
        raise DataError(f"data.set_name={name!r}: must be one of {', '.join(POLYPHONIC_SETS)}")
    if root:
        return pathlib.Path(root) / FILE.format(name=name)
    if name != "jsb":
        raise DataError(f"data.set_name={name}: only jsb ships with dvae_jax; pass --root DIR "
                        f"(data.root) holding {FILE.format(name=name)} (marcofraccaro/srnn, data/)")
    return EMBEDDED / FILE.format(name=name)


def _read(file: pathlib.Path) -> dict[str, np.ndarray]:
    if not file.is_file():
        raise DataError(f"{file}: no such file; data.root must hold {file.name} "
                        "(the SRNN code's data/ folder, github.com/marcofraccaro/srnn)")
    try:
        with np.load(file) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{file}: not a readable .npz file ({e}); download it again") from None


def _check(file: pathlib.Path, d: dict[str, np.ndarray]) -> None:
    """Keys, shapes, 0/1 values, prefix masks and u = x shifted (one line naming what is wrong)."""
    need = ("x_train", "x_valid", "x_test", "mask_test", "u_train", "u_valid", "u_test")
    missing = [k for k in need if k not in d]
    if missing:
        raise DataError(f"{file}: missing arrays {', '.join(missing)}; not an SRNN piano-roll file")
    for k in ("x_train", "x_valid", "x_test"):
        a = d[k]
        if a.ndim != 3 or a.shape[-1] != KEYS or (k != "x_test" and a.shape[1] != CHUNK):
            raise DataError(f"{file}: {k} has shape {a.shape}; expected (n, {CHUNK}, {KEYS}) chunks "
                            f"(x_test: (n, t, {KEYS}))")
        if not np.isin(a, (0.0, 1.0)).all():
            raise DataError(f"{file}: {k} holds values other than 0 and 1; not a piano-roll")
        u = d["u" + k[1:]]
        mask = d["mask_test"] if k == "x_test" else np.ones(a.shape[:2], np.float32)
        # u_test is NaN on the padding (as distributed): compare on real frames only.
        if u.shape != a.shape or np.any(np.where(mask[:, 1:, None] > 0, u[:, 1:] - a[:, :-1], 0.0)):
            raise DataError(f"{file}: u{k[1:]} is not x{k[1:]} shifted by one frame")
    m = d["mask_test"]
    if m.shape != d["x_test"].shape[:2] or np.any(np.diff(m, axis=1) > 0) or np.any(m[:, 0] != 1):
        raise DataError(f"{file}: mask_test must be (n, t) with ones then zeros on every row")


def load(name: str, root: str = "") -> PianoRolls:
    """Reads and checks one set (see :func:`path` for where from).

    Raises:
        DataError: unknown set, missing or unreadable file, or arrays that are not piano-rolls.
    """
    file = path(name, root)
    d = _read(file)
    _check(file, d)
    f32 = lambda a: np.ascontiguousarray(a, np.float32)
    return PianoRolls(name, f32(d["x_train"]), f32(d["x_valid"]), f32(d["x_test"]), f32(d["mask_test"]))


def train_batches(x_train: np.ndarray, batch_size: int = STREAMS) -> Iterator[np.ndarray]:
    """One epoch of training batches in the files' order: batch k = rows [k b, (k + 1) b), so with
    b = 16 row i of each batch continues row i of the previous one (carry the state across).
    A last partial batch is dropped, as the SRNN code does (n // b batches)."""
    for k in range(len(x_train) // batch_size):
        yield x_train[k * batch_size:(k + 1) * batch_size]


class Split(NamedTuple):
    """What training and evaluation read: chunks for training and validation (all frames real),
    whole pieces with masks for test."""

    train: np.ndarray
    valid: np.ndarray
    valid_mask: np.ndarray
    test: np.ndarray
    test_mask: np.ndarray


def split(rolls: PianoRolls) -> Split:
    """The three splits of a set, validation with its all-ones mask."""
    ones = np.ones(rolls.x_valid.shape[:2], np.float32)
    return Split(rolls.x_train, rolls.x_valid, ones, rolls.x_test, rolls.mask_test)


def summary(rolls: PianoRolls) -> str:
    """One paragraph for ``dvae-jax prepare --corpus polyphonic``: the split sizes and the paper's figure."""
    lengths = rolls.test_lengths
    n = len(rolls.x_train) // STREAMS
    return (f"{rolls.name}: {len(rolls.x_train)} training and {len(rolls.x_valid)} validation chunks of "
            f"{CHUNK} frames, {len(lengths)} test pieces ({int(lengths.sum())} frames, longest "
            f"{int(lengths.max())}), {KEYS} keys; {n} batch{'es' if n != 1 else ''} of {STREAMS} "
            f"per epoch; SRNN paper's test bound {PAPER_SRNN[rolls.name]:.2f} nats per step")
