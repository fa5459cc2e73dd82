"""MP3 from PCM, in-process, so the offline voices write what the Motion Canvas plugin looks for (``{key}.mp3``).

Encoding is LAME through the ``lameenc`` wheel (imported only when something is encoded: a cache hit never
pays for it). Settings for speech: constant 64 kbit/s per channel (32 kbit/s below 16 kHz), LAME quality 5:
espeak's 22.05 kHz mono at 8 KB a second, no audible loss for synthetic speech, and about twice as fast to
encode as LAME's near-best quality 2.

lameenc writes bare frames: no Xing/"Info" header, so a reader would estimate the length from bitrate and
size, and a player would add LAME's start delay and end padding to the speech (50 ms before it and up to
28 ms after it at 22.05 kHz).
We prepend the header LAME itself writes for a file, with the frame count, the byte count and the LAME tag's
encoder delay and padding. Readers that know the tag (mutagen, ffmpeg and so browsers, mpg123) then agree on
exactly the samples that went in: the delay and padding are trimmed, not counted.
"""

from __future__ import annotations

import functools
import io

from .errors import AudioError

QUALITY = 5  # LAME's -q: 0 best/slowest .. 9 worst/fastest; 5 is LAME's own default
ENCODER_DELAY = 576  # samples LAME puts before the first input sample (its ENCDELAY; decoders add 529 more)
RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)  # what MPEG audio can carry as is
_VERSION = b"LAME3.100"  # the encoder string readers look for before they trust the tag's delay and padding
_BITRATES = {  # kbit/s by bitrate index, for MPEG-1 and for MPEG-2/2.5 layer III
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by version bits


def bitrate_for(rate: int, channels: int) -> int:
    """The constant bitrate (kbit/s) we encode speech at."""
    return (64 if rate >= 16000 else 32) * channels


def pcm_to_mp3(pcm: bytes, rate: int, channels: int = 1) -> bytes:
    """16-bit little-endian PCM (interleaved when stereo) as a CBR MP3 with a LAME "Info" header.

    A rate MPEG audio cannot carry is resampled by LAME to the next one it can (at most 48 kHz).
    """
    if channels not in (1, 2):
        raise AudioError(f"MP3 carries 1 or 2 channels, not {channels}")
    if not 0 < rate <= 1_000_000:
        raise AudioError(f"invalid sample rate {rate}")
    frame_bytes = 2 * channels
    if not pcm or len(pcm) % frame_bytes:
        raise AudioError("no whole 16-bit samples to encode")
    import lameenc  # lazy on purpose: only generation needs it

    out_rate = next((r for r in RATES if r >= rate), RATES[-1])
    kbps = bitrate_for(out_rate, channels)
    try:  # lameenc releases the GIL while it encodes: lines encode side by side on the resolve threads
        encoder = lameenc.Encoder()
        encoder.set_channels(channels)
        encoder.set_in_sample_rate(rate)
        encoder.set_bit_rate(kbps)
        encoder.set_quality(QUALITY)
        if out_rate != rate:
            encoder.set_out_sample_rate(out_rate)
        frames = bytes(encoder.encode(bytes(pcm))) + bytes(encoder.flush())
    except RuntimeError as exc:  # lameenc's only error: settings LAME refuses
        raise AudioError(f"the MP3 encoder refused {rate} Hz, {channels} channel audio: {exc}") from None
    samples = len(pcm) // frame_bytes
    if out_rate != rate:
        samples = round(samples * out_rate / rate)
    return _info_frame(frames, samples) + frames


def pcm_to_wav(pcm: bytes, rate: int, channels: int = 1) -> bytes:
    """16-bit PCM in a WAV file: what ``format = "wav"`` keeps writing."""
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def wav_to_mp3(wav: bytes) -> bytes:
    """A PCM WAV file (8, 16, 24 or 32-bit integer samples, mono or stereo) as MP3; else AudioError."""
    import wave

    try:
        with wave.open(io.BytesIO(wav), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            data = w.readframes(w.getnframes())
    except (wave.Error, EOFError, ValueError, RuntimeError) as exc:  # wave raises a bare RuntimeError on bad chunks
        raise AudioError(f"not a PCM WAV file that can become MP3: {str(exc) or 'damaged chunks'}") from None
    return pcm_to_mp3(_to_16_bit(data, width), rate, channels)


def _to_16_bit(data: bytes, width: int) -> bytes:
    """Little-endian signed 16-bit samples from WAV samples of ``width`` bytes (8-bit WAV is unsigned)."""
    if width == 2:
        return data
    if width not in (1, 3, 4):
        raise AudioError(f"not a PCM WAV file that can become MP3: {8 * width}-bit samples")
    count = len(data) // width
    out = bytearray(2 * count)
    if width == 1:
        out[1::2] = data[:count].translate(bytes((b ^ 0x80) for b in range(256)))
    else:  # keep the two most significant bytes of each sample
        out[0::2] = data[width - 2::width][:count]
        out[1::2] = data[width - 1::width][:count]
    return bytes(out)


def _info_frame(frames: bytes, samples: int) -> bytes:
    """A silent first frame holding the Xing "Info" header and the LAME tag for these CBR ``frames``."""
    if len(frames) < 4 or frames[0] != 0xFF or frames[1] & 0xE0 != 0xE0:
        raise AudioError("the MP3 encoder returned no frames")
    count = _count_frames(frames)  # checks every header first
    b1, b2, b3 = frames[1], frames[2], frames[3]
    version = (b1 >> 3) & 3  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
    rate = _SAMPLE_RATES[version][(b2 >> 2) & 3]
    mono = b3 >> 6 == 3
    per_frame = 1152 if version == 3 else 576
    padding = count * per_frame - ENCODER_DELAY - samples
    if not 0 <= padding < 4096:
        raise AudioError(f"unexpected MP3 encoder output ({count} frames for {samples} samples)")
    offset = 4 + ((32 if not mono else 17) if version == 3 else (17 if not mono else 9))  # after the side info
    table = _BITRATES[1 if version == 3 else 2]
    for index in range((b2 >> 4) & 15, 15):  # the stream's own bitrate, or the next that fits the header
        size = (144 if version == 3 else 72) * table[index] * 1000 // rate
        if size >= offset + 156:
            break
    else:
        raise AudioError("no MP3 frame size holds the Info header")
    header = bytes((0xFF, b1 | 1, (index << 4) | (b2 & 0x0C), b3))  # no CRC, no padding slot, no private bit
    total = size + len(frames)
    info = b"Info" + (15).to_bytes(4, "big") + count.to_bytes(4, "big") + total.to_bytes(4, "big")
    info += bytes(min(255, i * 256 // 100) for i in range(100))  # CBR: time and bytes grow together
    info += (100 - QUALITY).to_bytes(4, "big")
    kbps = table[(b2 >> 4) & 15]
    tag = _VERSION + bytes((0x01, 0))  # tag revision 0, method 1 (CBR); lowpass unknown
    tag += bytes(4 + 2 + 2 + 1)  # peak, two replay gains, flags and ATH type: unknown
    tag += bytes((min(kbps, 255),)) + (ENCODER_DELAY << 12 | padding).to_bytes(3, "big")
    tag += bytes((_rate_code(rate) << 6,)) + bytes(1 + 2)  # source rate; no mp3 gain, preset unknown
    tag += total.to_bytes(4, "big") + _crc16(frames).to_bytes(2, "big")
    head = header + bytes(offset - 4) + info + tag
    head += _crc16(head).to_bytes(2, "big")
    return head + bytes(size - len(head))


def _count_frames(frames: bytes) -> int:
    """MPEG frames in ``frames``, walking their headers (CBR: every frame is the same size but for padding)."""
    count = pos = 0
    while pos + 4 <= len(frames):
        b1, b2 = frames[pos + 1], frames[pos + 2]
        version, index, rate_index = (b1 >> 3) & 3, (b2 >> 4) & 15, (b2 >> 2) & 3
        if frames[pos] != 0xFF or b1 & 0xE6 != 0xE2 or version == 1 or not 0 < index < 15 or rate_index == 3:
            raise AudioError("the MP3 encoder returned a broken stream")  # not layer III, free format, reserved
        kbps = _BITRATES[1 if version == 3 else 2][index]
        pos += (144 if version == 3 else 72) * kbps * 1000 // _SAMPLE_RATES[version][rate_index] + ((b2 >> 1) & 1)
        count += 1
    if pos != len(frames):
        raise AudioError("the MP3 encoder returned a truncated stream")
    return count


def _rate_code(rate: int) -> int:
    """The LAME tag's source sample frequency: <=32 kHz, 44.1 kHz, 48 kHz, higher."""
    return 0 if rate <= 32000 else 1 if rate == 44100 else 2 if rate == 48000 else 3


def _crc16(data: bytes) -> int:
    """CRC-16/ARC (polynomial 0x8005, reflected), what the LAME tag's two checksums use."""
    crc, table = 0, _crc_table()
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


@functools.cache
def _crc_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        for _ in range(8):
            n = (n >> 1) ^ 0xA001 if n & 1 else n >> 1
        table.append(n)
    return tuple(table)
