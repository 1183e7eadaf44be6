"""Reading one audio file: validation with one-line reasons, downmixing, soxr resampling."""

from __future__ import annotations

import dataclasses
import os
import struct

import librosa
import numpy as np
import soundfile as sf

from dvae_jax import errors

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".g722")
# Headerless codecs libsndfile cannot read, decoded with PyAV (FFmpeg's raw demuxer of that name).
PYAV_FORMATS = {".g722": "g722"}
MIN_SAMPLE_RATE = 8000  # below this, speech analysed at 16 kHz would be mostly empty bands
MAX_SAMPLE_RATE = 384000  # the highest rate audio interfaces offer; above it the header is wrong
SILENCE_PEAK = 1e-4  # peak |x| under -80 dBFS counts as silent
# Peak |x| of a float file beyond which it is not audio scaled to [-1, 1] (+20 dB over full scale
# leaves room for float masters that clip a little; 1e3 or 3e4 means unscaled integers or garbage).
MAX_PEAK = 10.0
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
        path: a wav / flac / ogg file (libsndfile), or a raw ``.g722`` file (PyAV).
        sample_rate: the rate the caller works at; other rates in [8, 384] kHz are resampled with
            soxr.
        downmix: average several channels to mono; when False a multi-channel file is rejected
            (a speech corpus is mono: several channels usually mean a wrong file).
        min_samples: fewest samples (at ``sample_rate``) accepted.

    Returns:
        (wave, info): float32 mono waveform in [-1, 1] and what was done to it.

    Raises:
        AudioError: empty, corrupt, truncated (header promises more frames than the file holds),
            not audio, rate below 8 kHz or above 384 kHz, multi-channel, NaN / inf samples, peak
            amplitude above ``MAX_PEAK``, silent, constant (DC), or too short.
    """
    name = os.fspath(path)
    data, rate = _decode(name)
    info = AudioInfo(source_rate=int(rate), channels=int(data.shape[1]))
    _check_stream(name, data, rate, downmix)
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    info.downmixed = data.shape[1] > 1
    if rate != sample_rate:
        wave = librosa.resample(wave, orig_sr=rate, target_sr=sample_rate, res_type=RESAMPLE_TYPE)
        info.resampled = True
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak < SILENCE_PEAK:
        raise AudioError(f"{name}: silent (peak {peak:.1e} < {SILENCE_PEAK:.0e}); remove it")
    level = float(np.mean(wave))
    if float(np.max(np.abs(wave - level))) < SILENCE_PEAK:
        raise AudioError(
            f"{name}: constant signal (DC level {level:+.3g}, no variation above {SILENCE_PEAK:.0e}): "
            "no sound in it; remove it"
        )
    if wave.shape[0] < min_samples:
        raise AudioError(
            f"{name}: too short ({wave.shape[0]} samples at {sample_rate} Hz, needs {min_samples}); remove it"
        )
    return wave, info


def _decode(name: str) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 samples and the rate; every failure is a one-line AudioError."""
    try:
        size = os.path.getsize(name)
    except OSError as e:
        raise AudioError(f"{name}: cannot be read ({e.strerror}); check that it exists and its permissions") from None
    if size == 0:
        raise AudioError(f"{name}: empty file (0 bytes); remove it or re-copy it from the source")
    suffix = os.path.splitext(name)[1].lower()
    if suffix in PYAV_FORMATS:
        return decode_pyav(name, PYAV_FORMATS[suffix])
    try:
        with open(name, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise AudioError(f"{name}: cannot be read ({e.strerror}); fix its permissions") from None
    if not any(head[: len(m)] == m for m in _MAGIC):
        raise AudioError(
            f"{name}: not an audio file (starts with {head[:4]!r}) despite its extension; remove it"
        )
    try:
        data, rate = sf.read(name, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, EOFError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AudioError(f"{name}: corrupt or truncated audio ({reason}); re-download or remove it") from None
    if head[:4] in (b"RIFF", b"RIFX"):
        # libsndfile silently returns what is there when the data chunk is cut short.
        promised = _wav_promised_frames(name, head[:4] == b"RIFX")
        if promised is not None and promised > data.shape[0]:
            raise AudioError(
                f"{name}: truncated (header promises {promised} frames, the file holds {data.shape[0]}); "
                "re-copy it from the source or remove it"
            )
    return data, int(rate)


def _check_stream(name: str, data: np.ndarray, rate: int, downmix: bool) -> None:
    """Checks on the decoded samples at their own rate, before any resampling."""
    if data.shape[0] == 0:
        raise AudioError(f"{name}: contains no samples; remove it")
    if rate < MIN_SAMPLE_RATE:
        raise AudioError(
            f"{name}: sample rate {rate} Hz is below {MIN_SAMPLE_RATE} Hz; not usable speech, remove it"
        )
    if rate > MAX_SAMPLE_RATE:
        raise AudioError(
            f"{name}: sample rate {rate} Hz is above {MAX_SAMPLE_RATE} Hz: a broken header or not "
            "audio; fix the header or remove it"
        )
    if data.shape[1] > 1 and not downmix:
        raise AudioError(
            f"{name}: {data.shape[1]} channels, speech must be mono; convert it or set "
            "data.downmix=true to average the channels"
        )
    finite = np.isfinite(data)
    if not np.all(finite):
        raise AudioError(f"{name}: contains NaN or infinite samples ({int(np.sum(~finite))}); remove it")
    peak = float(np.max(np.abs(data)))
    if peak > MAX_PEAK:
        raise AudioError(
            f"{name}: absurd amplitude (peak |x| = {peak:.3g}, float audio should lie in [-1, 1], "
            f"limit {MAX_PEAK:g}): unscaled or garbage samples; rescale it or remove it"
        )


def _wav_promised_frames(name: str, big_endian: bool) -> int | None:
    """Frames the RIFF header's ``data`` chunk promises, or None when unknown or unset.

    Streaming writers leave the size at 0 or 0xFFFFFFFF; those are not taken as promises.
    """
    end = "<" if not big_endian else ">"
    block_align = 0
    try:
        with open(name, "rb") as f:
            f.seek(12)
            while True:
                header = f.read(8)
                if len(header) < 8:
                    return None
                chunk, size = header[:4], struct.unpack(end + "I", header[4:])[0]
                if chunk == b"fmt ":
                    block_align = struct.unpack(end + "H", f.read(16)[12:14])[0]
                    f.seek(size - 16 + (size & 1), os.SEEK_CUR)
                elif chunk == b"data":
                    if block_align <= 0 or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block_align
                else:
                    f.seek(size + (size & 1), os.SEEK_CUR)
    except (OSError, struct.error):
        return None


def decode_pyav(path: str | os.PathLike, fmt: str) -> tuple[np.ndarray, int]:
    """Decodes a file FFmpeg reads (through PyAV) to (frames, channels) float32 in [-1, 1].

    Args:
        path: the file.
        fmt: FFmpeg's demuxer name, needed for headerless streams (``'g722'``).

    Raises:
        AudioError: PyAV is not installed, or the stream is corrupt or holds no audio.
    """
    name = os.fspath(path)
    try:
        import av
    except ImportError:
        raise AudioError(
            f"{name}: decoding {fmt} needs PyAV: pip install 'dvae-jax[asterisk]' (or pip install av)"
        ) from None
    try:
        with av.open(name, format=fmt) as container:
            if not container.streams.audio:
                raise AudioError(f"{name}: no audio stream ({fmt}); remove it")
            stream = container.streams.audio[0]
            rate = int(stream.codec_context.sample_rate or stream.rate)
            blocks = [frame.to_ndarray() for frame in container.decode(stream)]
    except av.error.FFmpegError as e:
        raise AudioError(f"{name}: corrupt or truncated {fmt} audio ({e}); re-copy it or remove it") from None
    if not blocks:
        return np.zeros((0, 1), np.float32), rate
    # Packed formats give (1, frames * channels), planar ones (channels, frames).
    channels = int(stream.codec_context.layout.nb_channels or 1)
    raw = np.concatenate([b.reshape(-1, channels) if b.shape[0] == 1 else b.T for b in blocks])
    if np.issubdtype(raw.dtype, np.integer):
        scale = float(np.iinfo(raw.dtype).max) + 1.0
        return (raw.astype(np.float32) / scale), rate
    return raw.astype(np.float32), rate


def load_audio(path: str | os.PathLike, sample_rate: int, *, downmix: bool = False, min_samples: int = 1) -> np.ndarray:
    """Float32 mono waveform at ``sample_rate``; see :func:`read_audio` for the checks.

    Raises:
        AudioError: the file is unusable (the message names it and says what to do).
    """
    return read_audio(path, sample_rate, downmix=downmix, min_samples=min_samples)[0]
