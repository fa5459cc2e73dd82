"""What mutagen says about audio bytes: is it really this type, and how long is it.

Imported lazily: the cache-hit path of ``speak`` never needs it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

from .errors import AudioError
from .store import MIME_EXT

MIME_ALIASES = {"audio/mp3": "audio/mpeg", "audio/x-wav": "audio/wav", "audio/wave": "audio/wav",
                "audio/vnd.wave": "audio/wav"}
SUFFIX_MIME = {".mp3": "audio/mpeg", ".wav": "audio/wav", ".ogg": "audio/ogg", ".oga": "audio/ogg",
               ".opus": "audio/ogg", ".webm": "audio/webm"}  # what a file's name says it holds


def sniff_mime(head: bytes) -> str | None:
    """The audio type the first bytes of a file announce (RIFF/WAVE, OggS, an ID3 tag or an MPEG frame sync),
    or None. Only a hint: ``measure_duration`` still checks the whole file parses as that type."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[:4] == b"OggS":
        return "audio/ogg"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    return None


def normalise_mime(mime: str) -> str:
    base = mime.split(";", 1)[0].strip().lower()
    return MIME_ALIASES.get(base, base)


def measure_duration(data: bytes | Path, mime: str) -> float:
    """Seconds of audio in ``data`` (bytes, or a file: mutagen reads only what it needs),
    which must parse as ``mime``; else AudioError."""
    mime = normalise_mime(mime)
    if mime not in MIME_EXT:
        raise AudioError(f"unsupported audio type {mime!r}")
    if isinstance(data, Path):
        try:
            with open(data, "rb") as fileobj:
                return _measure(fileobj, mime)
        except OSError as exc:
            raise AudioError(f"cannot read {data.name}: {exc.strerror or exc}") from None
    return _measure(io.BytesIO(data), mime)


def _measure(fileobj: BinaryIO, mime: str) -> float:
    if mime == "audio/webm":
        return _webm_duration(fileobj.read(4))
    from mutagen import MutagenError  # noqa: PLC0415 - lazy on purpose

    try:
        info = _parse(fileobj, mime)
    except (MutagenError, ValueError, EOFError, IndexError, OverflowError, ZeroDivisionError) as exc:
        raise AudioError(f"not valid {mime} audio: {exc}") from None
    length = float(getattr(info, "length", 0.0) or 0.0)
    if not length > 0:
        raise AudioError(f"not valid {mime} audio: no playable length")
    return round(length, 3)


def _parse(fileobj: BinaryIO, mime: str) -> object:
    if mime == "audio/mpeg":
        from mutagen.mp3 import MP3

        start = fileobj.read(3)
        fileobj.seek(0)
        if not start == b"ID3" and not (len(start) > 1 and start[0] == 0xFF and start[1] & 0xE0 == 0xE0):
            raise ValueError("no ID3 tag or MPEG frame sync at the start")
        return MP3(fileobj).info
    if mime == "audio/wav":
        from mutagen.wave import WAVE

        return WAVE(fileobj).info
    from mutagen.oggflac import OggFLAC
    from mutagen.oggopus import OggOpus
    from mutagen.oggspeex import OggSpeex
    from mutagen.oggvorbis import OggVorbis

    for kind in (OggVorbis, OggOpus, OggFLAC, OggSpeex):
        fileobj.seek(0)
        try:
            return kind(fileobj).info
        except Exception:  # noqa: BLE001 - try the next Ogg codec
            continue
    raise ValueError("no Vorbis, Opus, FLAC or Speex stream")


def _webm_duration(magic: bytes) -> float:
    """mutagen has no Matroska reader; we check the EBML magic and refuse to guess a length."""
    if magic != b"\x1a\x45\xdf\xa3":
        raise AudioError("not valid audio/webm audio: no EBML header")
    raise AudioError("audio/webm is accepted by name only: its duration cannot be measured here")
