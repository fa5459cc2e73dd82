"""The offline voices write MP3 whose length every reader agrees on; what a line is keyed with is checked first.

The independent player is ffmpeg (Debian package ``ffmpeg``; ``.ci/run`` installs it): its decoded sample count,
not a header estimate, is what a listener hears.
"""

import array
import io
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import wave

import pytest

from narrator_cli.encode import pcm_to_mp3, pcm_to_wav, wav_to_mp3
from narrator_cli.errors import AudioError, ProviderError, UsageError
from narrator_cli.keys import cache_key
from narrator_cli.providers import NAMES, key_params, load

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg (the independent player) missing")


def narrator(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from narrator_cli.cli import main; main()", *args],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60)


def decoded_samples(path, channels: int = 1) -> int:
    """Samples per channel a player gets out of ``path``: ffmpeg decodes it to raw PCM and we count."""
    proc = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "s16le", "-acodec",
                           "pcm_s16le", "-"], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return len(proc.stdout) // (2 * channels)


def tone(samples: int, rate: int, channels: int = 1, start: int = 0) -> bytes:
    """A 440 Hz tone from sample ``start`` on, silence before: real signal for the encoder."""
    data = array.array("h", bytes(2 * samples * channels))
    for i in range(start, samples):
        data[i * channels: (i + 1) * channels] = array.array("h", [int(9000 * math.sin(i * 2 * math.pi * 440 / rate))]
                                                             * channels)
    return data.tobytes()


def snapshot(root):
    return sorted((p.name, p.stat().st_size) for p in root.rglob("*")) if root.exists() else []


# --- encoding ------------------------------------------------------------------


@needs_ffmpeg
@pytest.mark.parametrize(("rate", "channels", "samples"),
                         [(22050, 1, 22050), (22050, 1, 7919), (8000, 1, 4000), (44100, 2, 30001), (16000, 1, 1153)])
def test_mp3_length_is_the_pcm_length_for_mutagen_and_ffmpeg(tmp_path, rate, channels, samples):
    from mutagen.mp3 import MP3

    mp3 = pcm_to_mp3(tone(samples, rate, channels), rate, channels)
    info = MP3(io.BytesIO(mp3)).info
    assert info.sample_rate == rate and info.channels == channels
    assert round(info.length * rate) == samples  # the Info header's frames, delay and padding: exact
    path = tmp_path / "x.mp3"
    path.write_bytes(mp3)
    assert decoded_samples(path, channels) == samples  # a player trims the same delay and padding


@needs_ffmpeg
def test_encoder_delay_is_trimmed_not_shifted(tmp_path):
    """The speech starts where it started in the PCM: the encoder's delay is cut, not left as a gap."""
    rate, start = 22050, 3000
    path = tmp_path / "x.mp3"
    path.write_bytes(pcm_to_mp3(tone(rate, rate, start=start), rate))
    proc = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "s16le", "-"],
                          capture_output=True, timeout=60)
    out = array.array("h", proc.stdout)
    onset = next(i for i, v in enumerate(out) if abs(v) > 3000)
    assert start <= onset < start + 20  # 440 Hz reaches 3000 within a few samples


@needs_ffmpeg
@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_wav_to_mp3_takes_integer_pcm_of_any_width(tmp_path, width):
    rate, frames = 16000, 12345
    pcm16 = array.array("h", tone(frames, rate))
    raw = bytearray()
    for v in pcm16:
        if width == 1:
            raw.append((v >> 8) + 128)
        else:
            raw += (v << (8 * (width - 2))).to_bytes(width, "little", signed=True)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes(raw))
    path = tmp_path / "x.mp3"
    path.write_bytes(wav_to_mp3(buf.getvalue()))
    assert decoded_samples(path) == frames
    decoded = array.array("h", subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "s16le",
                                               "-"], capture_output=True, timeout=60).stdout)
    assert max(decoded) > 6000  # the signal survived the width conversion


def _huge_rate_wav() -> bytes:
    data = bytearray(pcm_to_wav(bytes(200), 8000))
    data[24:28] = struct.pack("<I", 2**31 + 5)  # the fmt chunk's sample rate
    return bytes(data)


@pytest.mark.parametrize("data", [
    b"", b"RIFF", b"not a wav file at all", pcm_to_wav(b"", 8000), pcm_to_wav(bytes(12), 8000, 3),
    b"RIFF" + struct.pack("<I", 30) + b"WAVEjunk" + struct.pack("<I", 10**6) + bytes(10),  # a chunk past the end
    _huge_rate_wav(),
], ids=["empty", "riff", "text", "no-samples", "3-channels", "bad-chunk", "huge-rate"])
def test_wav_to_mp3_refuses_what_it_cannot_encode(data):
    with pytest.raises(AudioError) as info:
        wav_to_mp3(data)
    assert "\n" not in str(info.value) and str(info.value).strip()


def test_pcm_to_mp3_refuses_bad_shapes():
    for pcm, rate, channels in [(b"\x00\x00" * 10, 8000, 3), (b"\x00" * 3, 8000, 1), (b"", 8000, 1),
                                (b"\x00\x00" * 10, 0, 1)]:
        with pytest.raises(AudioError):
            pcm_to_mp3(pcm, rate, channels)


def test_a_cache_hit_never_imports_the_encoder(tmp_path):
    assert narrator("speak", "--provider", "mock", "A cached line.").returncode == 0
    code = ("import sys\nfrom narrator_cli.cli import main\nsys.argv = ['narrator', 'speak', '--provider', 'mock', "
            "'A cached line.']\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('loaded:', sorted(m for m in ('lameenc', 'narrator_cli.encode', 'mutagen') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "cached" in proc.stdout and "loaded: []" in proc.stdout, proc.stdout + proc.stderr


# --- the offline voices write MP3 -----------------------------------------------


@pytest.mark.parametrize("provider", ["espeak", "mock"])
def test_offline_voices_write_mp3_by_default_and_wav_on_request(tmp_path, provider):
    mp3 = load(provider, {}).synthesize("Two words", *key_params(provider, None, None))
    assert mp3.mime == "audio/mpeg" and mp3.audio[:2] in (b"\xff\xf3", b"\xff\xe3")  # MPEG-2 / 2.5 frames
    assert load(provider, {"format": "mp3"}).synthesize("Two words", *key_params(provider, None, None)).mime == \
        "audio/mpeg"
    wav = load(provider, {"format": "wav"}).synthesize("Two words", *key_params(provider, None, None))
    assert wav.mime == "audio/wav" and wav.audio[:4] == b"RIFF"


@pytest.mark.parametrize("provider", ["espeak", "mock", "elevenlabs"])
@pytest.mark.parametrize("fmt", ["flac", "MP3", "", "ogg"])
def test_an_unknown_format_is_refused_with_the_choices(provider, fmt):
    with pytest.raises(UsageError, match=r"choose from mp3, wav"):
        load(provider, {"format": fmt, "api_key": "k"})


def test_elevenlabs_refuses_wav_naming_its_own_setting():
    with pytest.raises(UsageError, match=r"\[elevenlabs\] output_format"):
        load("elevenlabs", {"format": "wav", "api_key": "k"})


def test_narrator_format_picks_the_file_type_end_to_end(tmp_path):
    wav = narrator("speak", "--provider", "mock", "--json", "One line", env={"NARRATOR_FORMAT": "wav"})
    assert wav.returncode == 0, wav.stderr
    assert json.loads(wav.stdout)["path"].endswith(".wav")
    mp3 = narrator("speak", "--provider", "mock", "--json", "--force", "One line")
    row = json.loads(mp3.stdout)
    assert row["path"].endswith(".mp3") and row["mimeType"] == "audio/mpeg" and row["duration"] == 1.0
    assert [p.suffix for p in (tmp_path / "audio-cache").iterdir() if not p.name.endswith(".json")] == [".mp3"]
    before = snapshot(tmp_path)
    bad = narrator("speak", "--provider", "mock", "Another line", env={"NARRATOR_FORMAT": "flac"})
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "mp3, wav" in bad.stderr
    assert snapshot(tmp_path) == before


# --- duration truth ------------------------------------------------------------


@needs_ffmpeg
@pytest.mark.parametrize(("provider", "text"), [("espeak", "The quick brown fox jumps over the lazy dog."),
                                                ("espeak", "Hi."), ("mock", "four words in here")])
def test_recorded_duration_is_what_a_player_plays_and_what_was_spoken(tmp_path, provider, text):
    proc = narrator("speak", "--provider", provider, "--json", text)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    meta = json.loads((tmp_path / "audio-cache" / f"{row['cacheKey']}.meta.json").read_text())
    from mutagen.mp3 import MP3

    info = MP3(row["path"]).info  # (a) mutagen reads it
    rate = info.sample_rate
    played = decoded_samples(row["path"]) / rate
    assert abs(meta["duration"] - played) <= 0.0005  # (b) the cache's duration is the player's, to the ms
    voice, model = key_params(provider, None, None)
    pcm = load(provider, {"format": "wav"}).synthesize(text, voice, model).audio
    with wave.open(io.BytesIO(pcm)) as w:
        spoken = w.getnframes() / w.getframerate()
    assert abs(meta["duration"] - spoken) < 0.1  # (c) the speech itself, without the encoder's delay and padding
    if provider == "mock":
        assert meta["duration"] == 2.0 == spoken  # 4 words at 120 words a minute, exactly


# --- what a line is keyed with -------------------------------------------------


@pytest.mark.parametrize(("args", "needles"), [
    (["--model", "foo"], ["espeak-ng"]),
    (["--model", ""], ["espeak-ng"]),
    (["--voice", ""], ["empty voice", "en"]),
    (["--voice", "  "], ["empty voice"]),
    (["--provider", "mock", "--voice", ""], ["empty voice"]),
    (["--provider", "elevenlabs", "--voice", ""], ["empty voice"]),
    (["--provider", "elevenlabs", "--voice", "v", "--model", ""], ["empty model", "eleven_flash_v2_5"]),
    (["--provider", "mock", "--model", "120.0"], ["1 to 10000"]),
    (["--provider", "mock", "--model", "0120"], ["1 to 10000"]),
    (["--provider", "mock", "--model", "nan"], ["1 to 10000"]),
    (["--provider", "mock", "--model", "inf"], ["1 to 10000"]),
    (["--provider", "mock", "--model", "1e3"], ["1 to 10000"]),
    (["--provider", "mock", "--model", " 120"], ["1 to 10000"]),
    (["--provider", "mock", "--model", "0.5"], ["1 to 10000"]),
    (["--provider", "mock", "--model", "10001"], ["1 to 10000"]),
    (["--voice", "en\x01"], ["control character"]),
    (["--voice", "en\udcff"], ["not UTF-8"]),  # undecodable bytes on the command line (surrogateescape)
    (["--provider", "mock", "--voice", "\udcff"], ["not UTF-8"]),
    (["--provider", "elevenlabs", "--voice", "v", "--model", "m\x1b"], ["control character"]),
])
def test_a_model_or_voice_the_provider_cannot_honour_is_refused_before_anything(tmp_path, args, needles):
    before = snapshot(tmp_path)
    proc = narrator("speak", *args, "A line")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("narrator: error: ")
    for needle in needles:
        assert needle in proc.stderr
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("provider", "voice", "model"), [("espeak", "", None), ("espeak", None, "foo"),
                                                          ("mock", None, "120.0"), ("elevenlabs", "", None)])
def test_key_params_refuses_before_a_key_exists(provider, voice, model):
    with pytest.raises(UsageError):
        key_params(provider, voice, model)


@pytest.mark.parametrize(("model", "seconds"), [("1", 60.0), ("150.5", 0.399), ("10000", 0.006), ("60", 1.0)])
def test_mock_rates_in_range_are_keyed_as_written(tmp_path, model, seconds):
    proc = narrator("speak", "--provider", "mock", "--model", model, "--json", "word")
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert row["modelId"] == model and row["cacheKey"] == cache_key("word", "mock", model)
    assert row["duration"] == seconds


def test_an_unknown_espeak_voice_names_real_voices_in_one_line(tmp_path):
    before = snapshot(tmp_path)
    proc = narrator("speak", "--voice", "en-gb", "A line")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    suggested = re.search(r"try ([^(]+) \(", proc.stderr).group(1).split(", ")
    assert len(suggested) >= 3 and "en" in suggested and "voices in all" in proc.stderr
    assert snapshot(tmp_path) == before
    espeak = load("espeak", {"format": "wav"})
    for voice in suggested:  # every suggestion is a voice espeak-ng takes
        assert espeak.synthesize("ok", voice, "espeak-ng").mime == "audio/wav"


@pytest.mark.parametrize("name", sorted(NAMES))
def test_every_provider_can_be_cancelled(name):
    provider = load(name, {"api_key": "k"})
    try:
        provider.cancel()
        if name in ("elevenlabs", "minimax"):  # no request after cancel: this one never leaves the machine
            with pytest.raises(ProviderError, match="^cancelled$"):
                provider.synthesize("no request", "voice", "model")
        else:  # nothing to stop offline: cancel is a no-op
            assert provider.synthesize("still works", *key_params(name, None, None)).audio
    finally:
        provider.close()
