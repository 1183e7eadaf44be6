"""Reading one audio file: validation with one-line reasons, downmixing, soxr resampling."""

from __future__ import annotations

import dataclasses
import os

import librosa
import numpy as np
import soundfile as sf

from dvae_jax import errors

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
MIN_SAMPLE_RATE = 8000  # below this, speech analysed at 16 kHz would be mostly empty bands
SILENCE_PEAK = 1e-4  # peak |x| under -80 dBFS counts as silent
RESAMPLE_TYPE = "soxr_hq"

# First bytes of the containers libsndfile reads; anything else is not audio.
_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"FORM", b".snd")


class AudioError(errors.DataError):
    """A file that cannot be used as speech; the message is one line naming the file and the fix."""


@dataclasses.dataclass
class AudioInfo:
    """What :func:`read_audio` did to a file besides decoding it (recorded in the manifest)."""

    source_rate: int = 0
    channels: int = 1
    resampled: bool = False
    downmixed: bool = False

    def notes(self, sample_rate: int) -> list[str]:
        out = []
        if self.resampled:
            out.append(f"resampled {self.source_rate} Hz -> {sample_rate} Hz ({RESAMPLE_TYPE})")
        if self.downmixed:
            out.append(f"downmixed {self.channels} channels to mono")
        return out


def read_audio(
    path: str | os.PathLike,
    sample_rate: int,
    *,
    downmix: bool = False,
    min_samples: int = 1,
) -> tuple[np.ndarray, AudioInfo]:
    """Reads, validates and resamples one file.

    Args:
        path: a wav / flac / ogg file.
        sample_rate: the rate the caller works at; other rates >= 8 kHz are resampled with soxr.
        downmix: average several channels to mono; when False a multi-channel file is rejected
            (a speech corpus is mono: several channels usually mean a wrong file).
        min_samples: fewest samples (at ``sample_rate``) accepted.

    Returns:
        (wave, info): float32 mono waveform in [-1, 1] and what was done to it.

    Raises:
        AudioError: empty, corrupt, not audio, silent, too short, rate below 8 kHz, or multi-channel.
    """
    path = os.fspath(path)
    name = path
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise AudioError(f"{name}: cannot be read ({e.strerror}); check that it exists and its permissions") from None
    if size == 0:
        raise AudioError(f"{name}: empty file (0 bytes); remove it or re-copy it from the source")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise AudioError(f"{name}: cannot be read ({e.strerror}); fix its permissions") from None
    if not any(head[: len(m)] == m for m in _MAGIC):
        raise AudioError(
            f"{name}: not an audio file (starts with {head!r}) despite its extension; remove it"
        )
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, EOFError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AudioError(f"{name}: corrupt or truncated audio ({reason}); re-download or remove it") from None
    info = AudioInfo(source_rate=int(rate), channels=int(data.shape[1]))
    if data.shape[0] == 0:
        raise AudioError(f"{name}: contains no samples; remove it")
    if rate < MIN_SAMPLE_RATE:
        raise AudioError(
            f"{name}: sample rate {rate} Hz is below {MIN_SAMPLE_RATE} Hz; not usable speech, remove it"
        )
    if data.shape[1] > 1:
        if not downmix:
            raise AudioError(
                f"{name}: {data.shape[1]} channels, speech must be mono; convert it or set "
                "data.downmix=true to average the channels"
            )
        wave = data.mean(axis=1)
        info.downmixed = True
    else:
        wave = data[:, 0]
    if not np.all(np.isfinite(wave)):
        raise AudioError(f"{name}: contains NaN or infinite samples; remove it")
    if rate != sample_rate:
        wave = librosa.resample(wave, orig_sr=rate, target_sr=sample_rate, res_type=RESAMPLE_TYPE)
        info.resampled = True
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak < SILENCE_PEAK:
        raise AudioError(f"{name}: silent (peak {peak:.1e} < {SILENCE_PEAK:.0e}); remove it")
    if wave.shape[0] < min_samples:
        raise AudioError(
            f"{name}: too short ({wave.shape[0]} samples at {sample_rate} Hz, needs {min_samples}); remove it"
        )
    return wave, info


def load_audio(path: str | os.PathLike, sample_rate: int, *, downmix: bool = False, min_samples: int = 1) -> np.ndarray:
    """Float32 mono waveform at ``sample_rate``; see :func:`read_audio` for the checks.

    Raises:
        AudioError: the file is unusable (the message names it and says what to do).
    """
    return read_audio(path, sample_rate, downmix=downmix, min_samples=min_samples)[0]
