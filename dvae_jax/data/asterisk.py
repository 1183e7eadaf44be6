"""Corpus reader ``asterisk``: Debian's Asterisk core sound prompts, one US English speaker.

Real human read speech that installs without a download form: ``apt-get install
asterisk-core-sounds-en-g722 asterisk-core-sounds-en`` gives 568 prompts (about 27 minutes) by
one female speaker (Allison Smith), 16 kHz G.722 at 64 kbit/s, CC-BY-SA-3.0. The first package
holds the audio (``/usr/share/asterisk/sounds/en_US_f_Allison/**/*.g722``), the second the
transcripts (``/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz``), one
``key: text`` line per prompt, the key being the file's path without extension.

Non-speech prompts are left out and recorded as skips: entries whose whole transcript is an
annotation (``[ascending tones]``, ``<beep ascending>``, ``(1 second of silence)``) and entries
whose annotation says the recording holds a tone, beep or sound (``vm-intro``). Other inline
annotations are dropped from the text (``at [@]`` -> ``at``, ``IAX (note: ...)`` -> ``IAX``).
Audio is decoded by :func:`dvae_jax.data.audio_io.read_audio` through PyAV (``[asterisk]`` extra).
With one speaker, split by utterance (``data.split_by='utterance'``).
"""

from __future__ import annotations

import gzip
import os
import pathlib
import re

from dvae_jax.data import corpus as corpus_lib

SOUNDS_DIRS = ("/usr/share/asterisk/sounds/en_US_f_Allison", "/usr/share/asterisk/sounds/en")
TRANSCRIPTS = "/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
TRANSCRIPT_NAMES = ("core-sounds-en.txt", "core-sounds-en.txt.gz")
SPEAKER = "en_US_f_Allison"
INSTALL = "apt-get install asterisk-core-sounds-en-g722 asterisk-core-sounds-en"

_ANNOTATION = re.compile(r"\[[^\]]*\]|<[^>]*>|\([^)]*\)")
_NON_SPEECH = re.compile(r"\b(tones?|beeps?|sounds?|silence)\b", re.IGNORECASE)


def parse_transcripts(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, str]]:
    """Reads ``core-sounds-en.txt`` (plain or gzipped).

    Returns:
        (texts, non_speech): {key: spoken text} for speech prompts, with inline annotations
        removed; {key: the annotation} for prompts left out as tones, beeps or silence.

    Raises:
        DataError: the file cannot be read.
    """
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise corpus_lib.DataError(
            f"Asterisk transcripts '{path}' cannot be read ({e}); {INSTALL}"
        ) from None
    texts: dict[str, str] = {}
    non_speech: dict[str, str] = {}
    for line in raw.decode("utf-8", errors="replace").splitlines():
        key, sep, text = line.partition(":")
        key, text = key.strip(), text.strip()
        if not sep or not key or key.startswith(";") or " " in key:
            continue
        notes = _ANNOTATION.findall(text)
        spoken = " ".join(_ANNOTATION.sub(" ", text).split())
        if not spoken or any(_NON_SPEECH.search(n) for n in notes):
            non_speech[key] = " ".join(notes) or text
        else:
            texts[key] = spoken
    return texts, non_speech


def default_root() -> str | None:
    """The installed prompts folder, or None when the Debian package is absent."""
    for folder in SOUNDS_DIRS:
        if os.path.isdir(folder):
            return folder
    return None


def _find_transcripts(root: pathlib.Path, transcripts: str | os.PathLike | None) -> pathlib.Path:
    if transcripts:
        return pathlib.Path(transcripts)
    for name in TRANSCRIPT_NAMES:  # a copy next to the audio wins over the Debian doc file
        if (root / name).is_file():
            return root / name
    return pathlib.Path(TRANSCRIPTS)


def read_asterisk(
    root: str | os.PathLike | None = None,
    transcripts: str | os.PathLike | None = None,
    skipped: list[corpus_lib.Skip] | None = None,
) -> list[corpus_lib.Utterance]:
    """Reads the Asterisk English core prompts (G.722) as one speaker's utterances.

    Args:
        root: the prompts folder (default: the Debian package's, see :data:`SOUNDS_DIRS`).
        transcripts: ``core-sounds-en.txt[.gz]`` (default: one in ``root``, else :data:`TRANSCRIPTS`).
        skipped: if given, non-speech prompts (tones, beeps, silence) are appended with the reason.

    Returns:
        Utterances sorted by id (the key with ``/`` -> ``__``, e.g. ``digits__7``), speaker
        :data:`SPEAKER`, gender F, accent US; ``text`` None for a file the transcripts lack.

    Raises:
        DataError: the prompts folder or the transcripts are missing (the message says which
            package to install), or the folder holds no ``.g722`` file.
    """
    if root is None or not os.fspath(root):
        root = default_root()
        if root is None:
            raise corpus_lib.DataError(
                f"corpus 'asterisk' is not installed (no {SOUNDS_DIRS[0]}); {INSTALL}, "
                "or pass --root to a copy of the prompts folder"
            )
    root = pathlib.Path(root)
    if not root.is_dir():
        raise corpus_lib.DataError(f"Asterisk prompts folder '{root}' does not exist; {INSTALL}")
    texts, non_speech = parse_transcripts(_find_transcripts(root, transcripts))
    files = sorted(p for p in root.rglob("*.g722") if p.is_file())
    if not files:
        raise corpus_lib.DataError(f"'{root}' holds no .g722 prompt; apt-get install asterisk-core-sounds-en-g722")
    out = []
    for f in files:
        key = f.relative_to(root).with_suffix("").as_posix()
        if key in non_speech:
            if skipped is not None:
                skipped.append(corpus_lib.Skip(
                    str(f), f"{f}: non-speech prompt {non_speech[key]!r} (tone, beep or silence); left out"))
            continue
        out.append(corpus_lib.Utterance(key.replace("/", "__"), str(f), SPEAKER, texts.get(key), "F", "US"))
    out.sort(key=lambda u: u.utt_id)
    return out
