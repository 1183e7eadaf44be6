"""Small synthetic corpora for tests and examples: speech-like signals written as VCTK / folder trees."""

from __future__ import annotations

import pathlib

import numpy as np
import soundfile as sf


def speechlike(seconds: float, sample_rate: int = 16000, f0: float = 120.0, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal with short pauses (float32, peak 0.5)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)), 0, None) ** 0.5
    x = x * envelope + 0.01 * rng.standard_normal(n)
    pad = np.zeros(int(0.2 * sample_rate))  # leading / trailing silence for the trimmer
    x = np.concatenate([pad, x, pad])
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


def write(path: pathlib.Path, wave: np.ndarray, sample_rate: int = 16000) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, sample_rate, subtype="PCM_16")
    return path


def make_vctk(
    root: str | pathlib.Path,
    n_speakers: int = 3,
    n_utts: int = 4,
    layout: str = "0.92",
    seconds: float = 1.0,
    sample_rate: int = 16000,
) -> pathlib.Path:
    """A VCTK tree: 0.92 (flac, mic1 + mic2) or old (wav48 wav), txt/, speaker-info.txt."""
    root = pathlib.Path(root)
    info = ["ID  AGE  GENDER  ACCENTS  REGION  COMMENTS"]
    for s in range(n_speakers):
        spk = f"p{225 + s}"
        gender = "F" if s % 2 == 0 else "M"
        accent = ("English", "Scottish", "American")[s % 3]
        info.append(f"{spk if layout == '0.92' else spk[1:]}  23  {gender}  {accent}  Somewhere")
        for u in range(n_utts):
            utt = f"{spk}_{u + 1:03d}"
            wave = speechlike(seconds, sample_rate, f0=100 + 30 * s, seed=s * 100 + u)
            if layout == "0.92":
                for mic in ("mic1", "mic2"):
                    write(root / "wav48_silence_trimmed" / spk / f"{utt}_{mic}.flac", wave, sample_rate)
            else:
                write(root / "wav48" / spk / f"{utt}.wav", wave, sample_rate)
            (root / "txt" / spk).mkdir(parents=True, exist_ok=True)
            (root / "txt" / spk / f"{utt}.txt").write_text(f"Sentence {u + 1} of {spk}.\n")
    (root / "speaker-info.txt").write_text("\n".join(info) + "\n")
    return root


def make_folder(root: str | pathlib.Path, n_speakers: int = 3, n_utts: int = 4, seconds: float = 1.0) -> pathlib.Path:
    """``root/<speaker>/<utt>.wav`` plus ``root/transcripts.tsv`` (``<stem>\\t<text>``)."""
    root = pathlib.Path(root)
    lines = []
    for s in range(n_speakers):
        for u in range(n_utts):
            stem = f"spk{s}_utt{u}"
            write(root / f"spk{s}" / f"{stem}.wav", speechlike(seconds, f0=110 + 25 * s, seed=7 * s + u))
            lines.append(f"{stem}\ttext {s} {u}")
    (root / "transcripts.tsv").write_text("\n".join(lines) + "\n")
    return root
