"""Corpus reader 'asterisk': transcript parsing, G.722 decoding, and the real Debian corpus."""

import gzip
import os

import numpy as np
import pytest

from dvae_jax import config as config_lib
from dvae_jax.data import asterisk, audio_io, corpus

TRANSCRIPT = """; Core Asterisk Sounds in English

activated: Activated.
beep: [this is a simple beep tone]
confbridge-join: <beep ascending>
silence/1: (1 second of silence)
vm-intro: Please leave your message after the tone. (simple tone sound plays)
letters/at: at [@]
spy-iax2: IAX (note: does not say "2")
digits/7: seven
at-tone-time-exactly: At the sound of the tone, the time will be exactly...
"""


def _g722(path, seconds=0.5, f0=220.0):
    av = pytest.importorskip("av", reason="PyAV not installed: pip install 'dvae-jax[asterisk]'")
    n = int(16000 * seconds)
    wave = 0.4 * np.sin(2 * np.pi * f0 * np.arange(n) / 16000) * np.hanning(n)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="g722") as out:
        stream = out.add_stream("g722", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray((wave * 32767).astype(np.int16)[None], format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return path


def test_transcripts_keep_speech_and_leave_out_tones(tmp_path):
    # given a transcript file in the Debian format, gzipped as the package ships it
    path = tmp_path / "core-sounds-en.txt.gz"
    path.write_bytes(gzip.compress(TRANSCRIPT.encode()))
    # when it is parsed
    texts, non_speech = asterisk.parse_transcripts(path)
    # then bracketed-only and tone entries are non-speech, inline notes are dropped from the text
    assert set(non_speech) == {"beep", "confbridge-join", "silence/1", "vm-intro"}
    assert texts == {
        "activated": "Activated.", "letters/at": "at", "spy-iax2": "IAX", "digits/7": "seven",
        "at-tone-time-exactly": "At the sound of the tone, the time will be exactly...",
    }


def test_reader_returns_one_speaker_and_records_the_left_out(tmp_path):
    # given a tiny prompts folder with G.722 files and a plain-text transcript next to them
    root = tmp_path / "sounds"
    for key in ("activated", "beep", "digits/7", "letters/at", "untranscribed"):
        _g722(root / f"{key}.g722")
    (root / "core-sounds-en.txt").write_text(TRANSCRIPT)
    skipped = []
    # when it is read
    utts = asterisk.read_asterisk(root, skipped=skipped)
    # then speech prompts are utterances of one speaker, the beep a recorded skip
    assert [u.utt_id for u in utts] == ["activated", "digits__7", "letters__at", "untranscribed"]
    assert {u.speaker for u in utts} == {asterisk.SPEAKER}
    assert [u.text for u in utts] == ["Activated.", "seven", "at", None]
    assert len(skipped) == 1 and "beep.g722" in skipped[0].reason and "non-speech" in skipped[0].reason
    # and each file decodes to 0.5 s at 16 kHz
    wave, info = audio_io.read_audio(utts[1].path, 16000)
    assert len(wave) == 8000 and info.source_rate == 16000
    # and one speaker splits by utterance with a fixed seed
    cfg = config_lib.DataConfig(split_by="utterance", val_fraction=0.25, test_fraction=0.25)
    parts = corpus.split(utts, cfg)
    assert [len(parts[k]) for k in corpus.SPLITS] == [2, 1, 1]
    assert parts == corpus.split(list(reversed(utts)), cfg)


def test_missing_corpus_names_the_packages(tmp_path, monkeypatch):
    with pytest.raises(corpus.DataError, match="apt-get install asterisk-core-sounds-en-g722"):
        asterisk.read_asterisk(tmp_path / "absent")
    monkeypatch.setattr(asterisk, "SOUNDS_DIRS", (str(tmp_path / "nowhere"),))
    with pytest.raises(corpus.DataError, match="not installed"):
        asterisk.read_asterisk(None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(corpus.DataError, match="core-sounds-en"):
        asterisk.read_asterisk(tmp_path / "empty", transcripts=tmp_path / "none.txt.gz")


@pytest.mark.skipif(
    asterisk.default_root() is None or not os.path.isfile(asterisk.TRANSCRIPTS),
    reason=f"Debian corpus absent: {asterisk.INSTALL}",
)
def test_real_debian_corpus():
    pytest.importorskip("av", reason="PyAV not installed: pip install 'dvae-jax[asterisk]'")
    # given the installed packages (568 prompts, 18 of them tones, beeps or silence)
    skipped = []
    utts = asterisk.read_asterisk(skipped=skipped)
    # then 550 speech prompts of one speaker, every one with a transcript
    assert len(utts) == 550 and len(skipped) == 18
    assert all(u.text for u in utts) and len({u.speaker for u in utts}) == 1
    # and they decode to about 24 minutes of 16 kHz speech, none rejected
    seconds = sum(len(audio_io.read_audio(u.path, 16000)[0]) for u in utts) / 16000
    assert 23.5 < seconds / 60 < 25.0
