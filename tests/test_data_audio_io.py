"""Reading one file: every bad input gives one clear AudioError; resampling and downmixing."""

import numpy as np
import pytest
import soundfile as sf

from dvae_jax.data import audio_io, fixtures


def test_reads_mono_float32(tmp_path):
    # given a 16 kHz speech-like wav
    path = fixtures.write(tmp_path / "a.wav", fixtures.speechlike(0.5))
    # when it is loaded at 16 kHz
    wave = audio_io.load_audio(path, 16000)
    # then it is float32 mono with the same number of samples
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == sf.info(path).frames


def test_other_rate_is_resampled_with_soxr_and_recorded(tmp_path):
    # given a 22.05 kHz file
    path = fixtures.write(tmp_path / "a.wav", fixtures.speechlike(0.5, 22050), 22050)
    # when it is read at 16 kHz
    wave, info = audio_io.read_audio(path, 16000)
    # then it is resampled and the note says so
    assert abs(len(wave) - round(sf.info(path).frames * 16000 / 22050)) <= 1
    assert info.resampled and "22050 Hz -> 16000 Hz" in info.notes(16000)[0]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 3), "corrupt"),
        (lambda p: p.write_text("this is a text file, not audio\n" * 10), "not an audio file"),
        (lambda p: fixtures.write(p, np.zeros(16000, np.float32)), "silent"),
        (lambda p: fixtures.write(p, fixtures.speechlike(0.5, 4000), 4000), "below 8000 Hz"),
        (lambda p: fixtures.write(p, np.stack([fixtures.speechlike(0.5)] * 2, 1)), "2 channels"),
        (lambda p: fixtures.write(p, np.zeros((0,), np.float32)), "no samples"),
    ],
    ids=["empty", "corrupt", "not-audio", "silent", "rate-4k", "stereo", "zero-samples"],
)
def test_bad_input_raises_one_line_reason_naming_the_file(tmp_path, make, message):
    # given a bad file with an audio extension
    path = tmp_path / "bad.wav"
    make(path)
    # when it is loaded, then a one-line AudioError names the file and the problem
    with pytest.raises(audio_io.AudioError) as err:
        audio_io.load_audio(path, 16000)
    text = str(err.value)
    assert str(path) in text and message in text and "\n" not in text


def test_too_short_is_rejected(tmp_path):
    path = fixtures.write(tmp_path / "short.wav", fixtures.speechlike(0.01))
    with pytest.raises(audio_io.AudioError, match="too short"):
        audio_io.load_audio(path, 16000, min_samples=16000)


def test_truncated_flac_is_corrupt(tmp_path):
    # given a flac cut after its header
    good = fixtures.write(tmp_path / "good.flac", fixtures.speechlike(1.0))
    bad = tmp_path / "cut.flac"
    bad.write_bytes(good.read_bytes()[:60])
    # then loading it fails with a clear reason, not a libsndfile traceback
    with pytest.raises(audio_io.AudioError, match="cut.flac"):
        audio_io.load_audio(bad, 16000)


def test_stereo_downmixed_when_asked(tmp_path):
    left = fixtures.speechlike(0.5)
    path = fixtures.write(tmp_path / "st.wav", np.stack([left, 0.5 * left], 1))
    wave, info = audio_io.read_audio(path, 16000, downmix=True)
    assert info.downmixed and wave.ndim == 1
    np.testing.assert_allclose(wave, 0.75 * left, atol=2e-4)


# --------------------------------------------------------------------------------------------
# Edge cases: files that decode but are not usable speech


def _float_wav(path, wave, rate=16000):
    sf.write(path, np.asarray(wave, np.float32), rate, subtype="FLOAT")


def _with(wave, where, value):
    wave = wave.copy()
    wave[where] = value
    return wave


def _truncated_wav(path):
    good = path.with_name("whole.wav")
    fixtures.write(good, np.resize(fixtures.speechlike(1.0), 16000))
    path.write_bytes(good.read_bytes()[:10044])  # 44-byte header + 5000 of 16000 int16 frames


@pytest.mark.parametrize(
    "make, message",
    [
        (_truncated_wav, "truncated (header promises 16000 frames, the file holds 5000)"),
        (lambda p: fixtures.write(p, np.full(16000, 0.25, np.float32)), "constant signal (DC level +0.25"),
        (lambda p: _float_wav(p, np.full(16000, -0.5)), "constant signal (DC level -0.5"),
        (lambda p: fixtures.write(p, fixtures.speechlike(0.5), 500000), "sample rate 500000 Hz is above 384000 Hz"),
        (lambda p: _float_wav(p, _with(fixtures.speechlike(0.5), [9], np.nan)),
         "contains NaN or infinite samples (1)"),
        (lambda p: _float_wav(p, _with(fixtures.speechlike(0.5), [0, 1, 2], -np.inf)),
         "contains NaN or infinite samples (3)"),
        (lambda p: _float_wav(p, 3e4 * fixtures.speechlike(0.5)), "absurd amplitude"),
    ],
    ids=["truncated", "dc-int16", "dc-float", "rate-500k", "nan", "inf", "unscaled-float"],
)
def test_decodable_but_unusable_file_is_skipped_with_its_reason(tmp_path, make, message):
    # given a file libsndfile decodes without complaint
    path = tmp_path / "odd.wav"
    make(path)
    # when it is read, then a one-line AudioError names the file and the specific problem
    with pytest.raises(audio_io.AudioError) as err:
        audio_io.read_audio(path, 16000)
    text = str(err.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text


def test_float_file_slightly_over_full_scale_is_kept(tmp_path):
    # given a float wav peaking at 1.5 (a float master that clips a little, not garbage)
    wave = fixtures.speechlike(0.5)
    path = tmp_path / "hot.wav"
    _float_wav(path, 1.5 * wave / np.max(np.abs(wave)))
    # then it is read as is
    out, _ = audio_io.read_audio(path, 16000)
    assert np.max(np.abs(out)) == pytest.approx(1.5, rel=1e-6)


def test_streaming_wav_with_unset_data_size_is_not_called_truncated(tmp_path):
    # given a wav whose data chunk size was left at 0xFFFFFFFF by a streaming writer
    path = fixtures.write(tmp_path / "stream.wav", np.resize(fixtures.speechlike(0.5), 8000))
    raw = bytearray(path.read_bytes())
    at = raw.index(b"data") + 4
    raw[at : at + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(raw))
    # then the promise is not taken at its word (libsndfile reads what is there)
    wave, _ = audio_io.read_audio(path, 16000)
    assert len(wave) == 8000


def test_speech_on_a_dc_offset_is_not_constant(tmp_path):
    path = fixtures.write(tmp_path / "dc.wav", 0.3 + 0.2 * fixtures.speechlike(0.5))
    wave, _ = audio_io.read_audio(path, 16000)
    assert wave.std() > 0.01


def test_g722_is_decoded_with_pyav(tmp_path):
    av = pytest.importorskip("av", reason="PyAV not installed: pip install 'dvae-jax[asterisk]'")
    # given 1 s of a 440 Hz sine encoded with FFmpeg's G.722 encoder (64 kbit/s, 16 kHz)
    sine = 0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    path = tmp_path / "tone.g722"
    with av.open(str(path), "w", format="g722") as out:
        stream = out.add_stream("g722", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray((sine * 32767).astype(np.int16)[None], format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    assert path.stat().st_size == 8000  # 64 kbit/s
    # when it is read at 16 kHz
    wave, info = audio_io.read_audio(path, 16000)
    # then it is the same sine (G.722 delays it by 22 samples), not resampled
    assert info.source_rate == 16000 and not info.resampled and len(wave) == 16000
    lag = 22
    assert np.corrcoef(wave[lag + 100 : 15000], sine[100 : 15000 - lag])[0, 1] > 0.999
    # and an empty G.722 file is skipped like an empty wav (any bytes decode as G.722)
    bad = tmp_path / "zero.g722"
    bad.write_bytes(b"")
    with pytest.raises(audio_io.AudioError, match="empty file"):
        audio_io.read_audio(bad, 16000)
