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
