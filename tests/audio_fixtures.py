"""Real audio bytes for tests, made without any system package.

WAV through the standard library, MP3 as valid MPEG-1 Layer III frames of
silence, Ogg Opus as real Ogg pages (mutagen writes the pages and their CRCs).
Each is parsed by mutagen exactly as a file from a provider would be.
"""

from __future__ import annotations

import io
import struct
import wave

MP3_FRAME_SECONDS = 1152 / 44100


def make_wav(seconds: float = 1.0, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(2 * round(seconds * rate)))
    return buf.getvalue()


def make_mp3(seconds: float = 1.0) -> bytes:
    """MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, mono frames (417 bytes each)."""
    header = bytes([0xFF, 0xFB, 0x90, 0xC4])
    frame = header + bytes(417 - len(header))
    return frame * max(1, round(seconds / MP3_FRAME_SECONDS))


def make_ogg_opus(seconds: float = 1.0) -> bytes:
    from mutagen.ogg import OggPage

    head = OggPage()
    head.packets = [b"OpusHead" + struct.pack("<BBHIhB", 1, 1, 312, 48000, 0, 0)]
    head.first = True
    head.position = 0
    tags = OggPage()
    tags.packets = [b"OpusTags" + struct.pack("<I", 8) + b"narrator" + struct.pack("<I", 0)]
    tags.sequence = 1
    tags.position = 0
    data = OggPage()
    data.packets = [b"\xfc" + bytes(3)] * 10  # silent 20 ms Opus packets; only the granule position counts
    data.sequence = 2
    data.position = 312 + round(seconds * 48000)
    data.last = True
    for page in (head, tags, data):
        page.serial = 0x4E415252
    return b"".join(page.write() for page in (head, tags, data))
