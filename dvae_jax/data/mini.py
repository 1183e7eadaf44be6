"""The embedded corpus ``mini``: multi-speaker English synthesised offline with eSpeak NG, VCTK 0.92 layout.

eSpeak NG keeps synthesis state across utterances (echo buffers, intonation, its random
generator), so one speaker's sentences are always synthesised in the same order in a fresh
process: that is what makes a rebuild byte-identical, whatever the number of workers.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import hashlib
import json
import multiprocessing
import os
import pathlib
import shutil
import time

import numpy as np

from dvae_jax import errors

SAMPLE_RATE = 16000
FORMAT_VERSION = 1
MARKER = ".mini-complete.json"
SENTENCES_FILE = pathlib.Path(__file__).with_name("sentences.txt")

# (voice, accent (one word, as VCTK), gender, region, pitch 0-100, rate words/min)
SPEAKERS: tuple[tuple[str, str, str, str, int, int], ...] = (
    ("en+m3", "English", "M", "Southern England", 45, 165),
    ("en-us+f2", "American", "F", "California", 55, 175),
    ("en-gb-scotland+m1", "Scottish", "M", "Edinburgh", 40, 160),
    ("en-gb-x-rp+f3", "English", "F", "Received Pronunciation", 60, 170),
    ("en-029+m2", "Caribbean", "M", "Jamaica", 50, 180),
    ("en-us-nyc+f1", "American", "F", "New York", 50, 185),
    ("en-gb-x-gbclan+m4", "English", "M", "Lancashire", 35, 155),
    ("en-gb-x-gbcwmd+f4", "English", "F", "West Midlands", 65, 165),
    ("en-us+m5", "American", "M", "Ohio", 55, 190),
    ("en+f5", "English", "F", "Kent", 45, 160),
    ("en-gb-scotland+f2", "Scottish", "F", "Glasgow", 58, 170),
    ("en-029+f3", "Caribbean", "F", "Trinidad", 52, 175),
    ("en-gb-x-rp+m6", "English", "M", "Oxford", 42, 150),
    ("en-us+m7", "American", "M", "Texas", 48, 170),
    ("en-gb-x-gbcwmd+m1", "English", "M", "Birmingham", 52, 185),
    ("en-us-nyc+m2", "American", "M", "Brooklyn", 38, 180),
)


class MiniCorpusError(errors.DataError):
    """The mini corpus cannot be built (bad settings, eSpeak NG missing, root taken)."""


def sentences() -> list[str]:
    """The shipped sentence list (comments and blank lines dropped)."""
    lines = SENTENCES_FILE.read_text(encoding="utf-8").splitlines()
    return [s.strip() for s in lines if s.strip() and not s.startswith("#")]


def speaker_id(i: int) -> str:
    return f"e{i + 1:02d}"


def sentence_indices(speaker: int, n_sentences: int, n_total: int) -> list[int]:
    """Which sentences speaker ``speaker`` reads: a window that starts 7 further on per speaker."""
    return [(speaker * 7 + j) % n_total for j in range(n_sentences)]


def _settings(n_speakers: int, n_sentences: int) -> dict:
    text = SENTENCES_FILE.read_bytes()
    return {
        "version": FORMAT_VERSION,
        "n_speakers": n_speakers,
        "n_sentences": n_sentences,
        "sample_rate": SAMPLE_RATE,
        "sentences_sha256": hashlib.sha256(text).hexdigest(),
        "speakers": [list(s) for s in SPEAKERS[:n_speakers]],
    }


class _Espeak:
    """Minimal ctypes driver of libespeak-ng in synchronous mode (audio returned by callback)."""

    _CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self):
        try:
            import espeakng_loader
        except ImportError:
            raise MiniCorpusError("the mini corpus needs espeakng-loader: pip install espeakng-loader") from None
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        # AUDIO_OUTPUT_SYNCHRONOUS = 2; espeakINITIALIZE_DONT_EXIT = 0x8000
        self.rate = self.lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0x8000)
        if self.rate <= 0:
            raise MiniCorpusError("eSpeak NG failed to initialise (its data folder may be missing)")
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        self._chunks: list[np.ndarray] = []
        self._cb = self._CALLBACK(self._collect)  # kept alive as long as self
        self.lib.espeak_SetSynthCallback(self._cb)

    def _collect(self, wav, n, _events):
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def synth(self, text: str, voice: str, pitch: int, rate: int) -> np.ndarray:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise MiniCorpusError(f"eSpeak NG has no voice '{voice}'")
        self.lib.espeak_SetParameter(1, rate, 0)  # espeakRATE
        self.lib.espeak_SetParameter(3, pitch, 0)  # espeakPITCH
        self._chunks = []
        # Its noise generator is seeded from the clock otherwise.
        self.lib.espeak_ng_SetRandSeed(ctypes.c_long(1))
        data = text.encode("utf-8")
        # POS_CHARACTER = 1, espeakCHARS_UTF8 = 1
        if self.lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 1, None, None) != 0:
            raise MiniCorpusError(f"eSpeak NG failed on: {text!r}")
        self.lib.espeak_Synchronize()
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


def _synth_speaker(job: tuple[int, list[tuple[int, str]], str]) -> float:
    """Worker: all sentences of one speaker, in order, in a fresh process. Returns seconds of audio."""
    import soundfile as sf
    import soxr

    index, items, out = job
    voice, _accent, _gender, _region, pitch, rate = SPEAKERS[index]
    spk = speaker_id(index)
    engine = _Espeak()
    wav_dir = pathlib.Path(out) / "wav48_silence_trimmed" / spk
    txt_dir = pathlib.Path(out) / "txt" / spk
    wav_dir.mkdir(parents=True)
    txt_dir.mkdir(parents=True)
    seconds = 0.0
    for number, text in items:
        raw = engine.synth(text, voice, pitch, rate).astype(np.float32) / 32768.0
        wave = soxr.resample(raw, engine.rate, SAMPLE_RATE, quality="HQ")
        pcm = np.clip(np.round(wave * 32767.0), -32768, 32767).astype(np.int16)
        utt = f"{spk}_{number:03d}"
        sf.write(wav_dir / f"{utt}_mic1.flac", pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        (txt_dir / f"{utt}.txt").write_text(text + "\n", encoding="utf-8")
        seconds += len(pcm) / SAMPLE_RATE
    return seconds


def is_complete(root: str | os.PathLike, n_speakers: int = 12, n_sentences: int = 40) -> bool:
    """True when ``root`` holds a finished build with exactly these settings."""
    marker = pathlib.Path(root) / MARKER
    try:
        return json.loads(marker.read_text())["settings"] == _settings(n_speakers, n_sentences)
    except (OSError, ValueError, KeyError):
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def build_mini_corpus(
    root: str | os.PathLike, n_speakers: int = 12, n_sentences: int = 40, workers: int = 0
) -> pathlib.Path:
    """Builds (or finds) the mini corpus at ``root``: VCTK 0.92 layout, 16 kHz flac, transcripts.

    Idempotent: a finished build with the same settings is reused. Atomic: files are written in a
    sibling temporary folder renamed into place at the end, so a killed build is never mistaken
    for a complete one. Deterministic: a rebuild gives byte-identical files.

    Args:
        root: destination folder.
        n_speakers: 1 to 16 (accent x voice-variant combinations).
        n_sentences: sentences per speaker, 1 to the number of shipped sentences.
        workers: synthesis processes (0 = min(CPUs, speakers)).

    Returns:
        ``root`` as a Path.

    Raises:
        MiniCorpusError: settings out of range, eSpeak NG unavailable, or ``root`` is a non-empty
            folder that is not a mini build.
    """
    root = pathlib.Path(root).absolute()
    texts = sentences()
    if not 1 <= n_speakers <= len(SPEAKERS):
        raise MiniCorpusError(f"data.mini_speakers must be 1..{len(SPEAKERS)}, got {n_speakers}")
    if not 1 <= n_sentences <= len(texts):
        raise MiniCorpusError(f"data.mini_sentences must be 1..{len(texts)}, got {n_sentences}")
    if is_complete(root, n_speakers, n_sentences):
        return root
    if root.exists() and any(root.iterdir()) and not (root / MARKER).exists():
        raise MiniCorpusError(
            f"'{root}' exists and is not a mini corpus build; remove it or set data.root elsewhere"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    for stale in root.parent.glob(f".{root.name}.tmp-*"):  # left by killed builds
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _synthesise(tmp, texts, n_speakers, n_sentences, workers)
        _move_into_place(tmp, root, n_speakers, n_sentences)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _synthesise(tmp: pathlib.Path, texts: list[str], n_speakers: int, n_sentences: int, workers: int) -> None:
    """Every speaker's recordings, speaker-info.txt, a README and, last, the completion marker."""
    jobs = [
        (i, [(k + 1, texts[k]) for k in sentence_indices(i, n_sentences, len(texts))], str(tmp))
        for i in range(n_speakers)
    ]
    workers = workers or min(n_speakers, os.cpu_count() or 1)
    # spawn + one task per child: each speaker starts from a fresh eSpeak NG state.
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1
    ) as pool:
        seconds = sum(pool.map(_synth_speaker, jobs))
    lines = ["ID  AGE  GENDER  ACCENTS  REGION  COMMENTS"]
    for i in range(n_speakers):
        voice, accent, gender, region, pitch, rate = SPEAKERS[i]
        lines.append(f"{speaker_id(i)}  30  {gender}  {accent}  {region}  (espeak-ng {voice} pitch {pitch} rate {rate})")
    (tmp / "speaker-info.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp / "README.txt").write_text(
        "Synthetic speech made by dvae_jax.data.mini with eSpeak NG; see speaker-info.txt.\n"
    )
    marker = {
        "settings": _settings(n_speakers, n_sentences),
        "utterances": n_speakers * n_sentences,
        "minutes": round(seconds / 60, 3),
    }
    # Written last: its presence means every other file is complete. Timing is kept out of it
    # so the bytes of a rebuild match.
    (tmp / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n")


def _move_into_place(tmp: pathlib.Path, root: pathlib.Path, n_speakers: int, n_sentences: int) -> None:
    """Renames the finished build over ``root`` (a concurrent build may win if it is complete)."""
    old = None
    if root.exists():
        old = root.parent / f".{root.name}.old-{os.getpid()}"
        os.rename(root, old)
    try:
        os.rename(tmp, root)
    except OSError:
        if not is_complete(root, n_speakers, n_sentences):
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="Build the dvae_jax mini corpus.")
    p.add_argument("root")
    p.add_argument("--speakers", type=int, default=12)
    p.add_argument("--sentences", type=int, default=40)
    a = p.parse_args()
    t0 = time.perf_counter()
    path = build_mini_corpus(a.root, a.speakers, a.sentences)
    print(f"{path} ready in {time.perf_counter() - t0:.1f} s")
