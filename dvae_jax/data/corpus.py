"""Corpus readers (VCTK, any folder, TFDS) -> utterance records; speaker/utterance selection and splits."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from collections.abc import Iterable

import numpy as np

from dvae_jax import config as config_lib
from dvae_jax import errors
from dvae_jax.data import audio_io

SPLITS = ("train", "val", "test")


class DataError(errors.DataError):
    """A user-facing data problem (missing corpus, nothing usable, impossible split)."""


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One audio file of one speaker. ``gender`` / ``accent`` come from speaker-info when known."""

    utt_id: str
    path: str
    speaker: str
    text: str | None = None
    gender: str | None = None
    accent: str | None = None


@dataclasses.dataclass(frozen=True)
class Skip:
    """A file or folder left out, with a one-line reason (counted in the manifest)."""

    path: str
    reason: str


def _note(skipped: list[Skip] | None, path: str, reason: str) -> None:
    if skipped is not None:
        skipped.append(Skip(str(path), reason))


def _walk(root: pathlib.Path, skipped: list[Skip] | None) -> list[pathlib.Path]:
    """Audio files under ``root`` (sorted); unreadable folders are recorded, not fatal."""

    def onerror(err: OSError) -> None:
        _note(skipped, err.filename, f"folder cannot be read ({err.strerror}); fix its permissions")

    files = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(audio_io.AUDIO_EXTENSIONS) and not name.startswith("."):
                files.append(pathlib.Path(dirpath) / name)
    return files


def read_speaker_info(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """VCTK ``speaker-info.txt`` -> {speaker: {'gender', 'accent', 'age', 'region'}}.

    Both releases are read: 0.92 ids look like ``p225`` / ``s5``, older ones like ``225``.
    """
    info: dict[str, dict[str, str]] = {}
    try:
        lines = pathlib.Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return info
    for line in lines:
        tok = line.split()
        if len(tok) < 3 or tok[0].upper() == "ID":
            continue
        sid = tok[0]
        if sid.isdigit():
            sid = "p" + sid
        info[sid] = {
            "age": tok[1],
            "gender": tok[2].upper(),
            "accent": tok[3] if len(tok) > 3 and not tok[3].startswith("(") else "",
            "region": " ".join(t for t in tok[4:] if not t.startswith("(")),
        }
    return info


def _read_text(path: pathlib.Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip() or None
    except OSError:
        return None


def read_vctk(
    root: str | os.PathLike, mic: str = "mic1", skipped: list[Skip] | None = None
) -> list[Utterance]:
    """Reads VCTK 0.92 (``wav48_silence_trimmed/pNNN/pNNN_MMM_mic1.flac``) or the older ``wav48/`` layout.

    Args:
        root: the folder holding ``txt/``, ``speaker-info.txt`` and the audio folder.
        mic: ``mic1`` or ``mic2`` (0.92 only).
        skipped: if given, unreadable folders are appended to it.

    Returns:
        Utterances sorted by id; ``text`` is None where the transcript is missing (VCTK's p315).

    Raises:
        DataError: the root or its audio folder is missing.
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise DataError(f"VCTK root '{root}' does not exist; pass --root to the unpacked VCTK folder")
    if mic not in ("mic1", "mic2"):
        raise DataError(f"data.mic must be 'mic1' or 'mic2', got '{mic}'")
    new, old = root / "wav48_silence_trimmed", root / "wav48"
    if new.is_dir():
        audio_dir, pattern = new, re.compile(r"^(?P<utt>(?P<spk>[^_]+)_[^_]+)_(?P<mic>mic[12])$")
    elif old.is_dir():
        audio_dir, pattern = old, re.compile(r"^(?P<utt>(?P<spk>[^_]+)_[^_.]+)$")
    else:
        raise DataError(
            f"'{root}' has neither wav48_silence_trimmed/ (VCTK 0.92) nor wav48/ (older VCTK); "
            "point --root at the folder that holds them"
        )
    speakers = read_speaker_info(root / "speaker-info.txt")
    out = []
    for f in _walk(audio_dir, skipped):
        m = pattern.match(f.stem)
        if not m or (m.groupdict().get("mic") not in (None, mic)):
            continue
        utt, spk = m.group("utt"), m.group("spk")
        meta = speakers.get(spk, {})
        text = _read_text(root / "txt" / spk / f"{utt}.txt")
        out.append(Utterance(utt, str(f), spk, text, meta.get("gender") or None, meta.get("accent") or None))
    out.sort(key=lambda u: u.utt_id)
    return out


def _read_transcripts(path: str | os.PathLike) -> dict[str, str]:
    table = {}
    try:
        lines = pathlib.Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise DataError(f"transcript file '{path}' cannot be read ({e.strerror})") from None
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        for sep in ("\t", "|"):
            if sep in line:
                key, text = line.split(sep, 1)
                break
        else:
            key, _, text = line.partition(" ")
        table[key.strip()] = text.split("|")[-1].strip()
    return table


def read_folder(
    root: str | os.PathLike,
    speaker_pattern: str | None = None,
    transcripts: str | os.PathLike | None = None,
    skipped: list[Skip] | None = None,
) -> list[Utterance]:
    """Reads any folder of wav / flac / ogg files.

    Args:
        root: the folder; files are found recursively.
        speaker_pattern: regex searched in the path relative to root; group ``speaker`` (or group 1)
            names the speaker. By default the speaker is the parent folder (``root`` itself -> the
            folder's own name).
        transcripts: optional file of ``<key><tab or |><text>`` lines, key = the file's stem or its
            relative path without extension. A ``.txt`` / ``.lab`` next to an audio file also counts.
        skipped: if given, unreadable folders and files whose speaker cannot be found are appended.

    Returns:
        Utterances sorted by id (the relative path without extension).
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise DataError(f"folder corpus root '{root}' does not exist; pass --root to a folder of audio files")
    regex = re.compile(speaker_pattern) if speaker_pattern else None
    table = _read_transcripts(transcripts) if transcripts else {}
    out = []
    for f in _walk(root, skipped):
        rel = f.relative_to(root).with_suffix("").as_posix()
        if regex is not None:
            m = regex.search(rel)
            if not m:
                _note(skipped, f, f"speaker pattern '{speaker_pattern}' does not match; fix data.speaker_pattern")
                continue
            spk = m.groupdict().get("speaker") or (m.group(1) if m.groups() else m.group(0))
        else:
            spk = f.parent.name if f.parent != root else root.name
        text = table.get(rel, table.get(f.stem))
        if text is None:
            for ext in (".txt", ".lab"):
                if f.with_suffix(ext).is_file():
                    text = _read_text(f.with_suffix(ext))
                    break
        out.append(Utterance(rel.replace("/", "__"), str(f), spk, text))
    out.sort(key=lambda u: u.utt_id)
    return out


def read_tfds(manual_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[Utterance]:
    """TFDS ``vctk`` from an already downloaded ``VCTK-Corpus-0.92.zip`` in ``manual_dir``.

    TFDS yields decoded audio, so the examples are written once as flac in the VCTK 0.92 layout
    under ``out_dir`` (default ``<manual_dir>/tfds_vctk``) and read back with :func:`read_vctk`.

    Raises:
        DataError: tensorflow-datasets is not installed (``pip install 'dvae_jax[tfds]'``) or the
            zip is missing.
    """
    manual_dir = pathlib.Path(manual_dir)
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError(
            "corpus 'tfds' needs tensorflow and tensorflow-datasets: pip install 'dvae_jax[tfds]' "
            "(or unzip VCTK-Corpus-0.92.zip and use --corpus vctk)"
        ) from None
    if not (manual_dir / "VCTK-Corpus-0.92.zip").is_file():
        raise DataError(f"'{manual_dir}' has no VCTK-Corpus-0.92.zip; download it there first (TFDS manual_dir)")
    out = pathlib.Path(out_dir) if out_dir else manual_dir / "tfds_vctk"
    marker = out / ".complete"
    if not marker.exists():
        import soundfile as sf

        ds = tfds.load(
            "vctk", split="train", data_dir=str(manual_dir / "tfds_data"),
            download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(manual_dir=str(manual_dir))},
        )
        lines = {}
        for ex in tfds.as_numpy(ds):
            utt = ex["id"].decode()
            spk = ex["speaker"].decode()
            d = out / "wav48_silence_trimmed" / spk
            d.mkdir(parents=True, exist_ok=True)
            sf.write(d / f"{utt}_mic1.flac", ex["speech"], 48000, subtype="PCM_16")
            t = out / "txt" / spk
            t.mkdir(parents=True, exist_ok=True)
            (t / f"{utt}.txt").write_text(ex["text"].decode() + "\n")
            lines[spk] = f"{spk}  0  {'F' if ex['gender'] == 1 else 'M'}  {ex['accent']}"
        (out / "speaker-info.txt").write_text("ID  AGE  GENDER  ACCENTS\n" + "\n".join(lines[k] for k in sorted(lines)) + "\n")
        marker.write_text("ok\n")
    return read_vctk(out)


# --------------------------------------------------------------------------------------------
# Selection and splits


def speakers_of(utterances: Iterable[Utterance]) -> list[str]:
    return sorted({u.speaker for u in utterances})


def select(utterances: list[Utterance], data_cfg: config_lib.DataConfig) -> list[Utterance]:
    """Speaker and utterance subset: ids, gender, accent, count (seeded), utterances per speaker.

    Speaker count: the eligible speakers are shuffled with ``data_cfg.seed`` and the first
    ``n_speakers`` kept. Utterances per speaker: the first ``utts_per_speaker`` by id.

    Raises:
        DataError: a requested speaker id does not exist, or no speaker is left.
    """
    by_spk: dict[str, list[Utterance]] = {}
    for u in utterances:
        by_spk.setdefault(u.speaker, []).append(u)
    names = sorted(by_spk)
    if data_cfg.speakers:
        missing = [s for s in data_cfg.speakers if s not in by_spk]
        if missing:
            raise DataError(
                f"data.speakers: {', '.join(missing)} not in the corpus (it has {', '.join(names[:10])}"
                + (", ..." if len(names) > 10 else "") + ")"
            )
        names = sorted(set(data_cfg.speakers))
    if data_cfg.genders:
        want = {g.upper() for g in data_cfg.genders}
        names = [s for s in names if (by_spk[s][0].gender or "").upper() in want]
    if data_cfg.accents:
        want = {a.lower() for a in data_cfg.accents}
        names = [s for s in names if (by_spk[s][0].accent or "").lower() in want]
    if not names:
        raise DataError("no speaker matches data.speakers / data.genders / data.accents; loosen the selection")
    if data_cfg.n_speakers and data_cfg.n_speakers < len(names):
        order = np.random.default_rng(data_cfg.seed).permutation(len(names))
        names = sorted(names[i] for i in order[: data_cfg.n_speakers])
    out = []
    for s in names:
        utts = sorted(by_spk[s], key=lambda u: u.utt_id)
        if data_cfg.utts_per_speaker:
            utts = utts[: data_cfg.utts_per_speaker]
        out.extend(utts)
    return out


def _counts(n: int, val_fraction: float, test_fraction: float, what: str) -> tuple[int, int, int]:
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise DataError(
            f"data.val_fraction ({val_fraction}) and data.test_fraction ({test_fraction}) must be >= 0 "
            "and sum to less than 1"
        )
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise DataError(
            f"{n} {what} cannot fill train/val/test ({n_val} val + {n_test} test leaves none for training); "
            "use more speakers, smaller fractions, or data.split_by=utterance"
        )
    return n - n_val - n_test, n_val, n_test


def split(utterances: list[Utterance], data_cfg: config_lib.DataConfig) -> dict[str, list[Utterance]]:
    """Deterministic train / val / test split from ``data_cfg.seed``.

    ``split_by='speaker'`` (default): no speaker appears in two splits. ``'utterance'``: utterances
    are shuffled regardless of speaker. A split with a fraction > 0 gets at least one speaker
    (utterance); a fraction of 0 leaves it empty on purpose.

    Raises:
        DataError: too few speakers / utterances for the fractions, or an unknown ``split_by``.
    """
    if not utterances:
        raise DataError("no utterances to split")
    rng = np.random.default_rng(data_cfg.seed)
    utterances = sorted(utterances, key=lambda u: u.utt_id)
    if data_cfg.split_by == "speaker":
        names = speakers_of(utterances)
        n_train, n_val, _ = _counts(len(names), data_cfg.val_fraction, data_cfg.test_fraction, "speakers")
        order = [names[i] for i in rng.permutation(len(names))]
        groups = {
            "train": set(order[:n_train]),
            "val": set(order[n_train : n_train + n_val]),
            "test": set(order[n_train + n_val :]),
        }
        return {k: [u for u in utterances if u.speaker in g] for k, g in groups.items()}
    if data_cfg.split_by == "utterance":
        n_train, n_val, _ = _counts(len(utterances), data_cfg.val_fraction, data_cfg.test_fraction, "utterances")
        order = rng.permutation(len(utterances))
        parts = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
        return {k: [utterances[i] for i in sorted(idx)] for k, idx in parts.items()}
    raise DataError(f"data.split_by must be 'speaker' or 'utterance', got '{data_cfg.split_by}'")
