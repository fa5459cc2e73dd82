"""Word timings from ElevenLabs' with-timestamps endpoint, against the local stand-in of the API."""

import base64
import json
import os
import re
import subprocess
import sys

import pytest
from audio_fixtures import make_mp3
from fake_elevenlabs import ALIGNMENTS, FakeElevenLabs, alignments, raw_reply, timings

from narrator_cli.captions.words import from_meta
from narrator_cli.errors import ProviderError
from narrator_cli.keys import cache_key
from narrator_cli.providers.elevenlabs import ElevenLabsProvider

KEY = "sk-test-5c1e08d7a93b42f6"  # distinctive, so any leak is easy to find
VOICE = "TestVoiceId000000abc"
MODEL = "eleven_flash_v2_5"
CATS = "I have 77 cats."


@pytest.fixture
def fake():
    with FakeElevenLabs(scripted=("POST",), api_key=KEY) as f:
        yield f


def synthesize(fake, text, **kw):
    p = ElevenLabsProvider(KEY, base_url=fake.url, backoff=0.01, **kw)
    try:
        return p.synthesize(text, VOICE, MODEL)
    finally:
        p.close()


def speak(fake, *args):
    """`narrator speak --provider elevenlabs` in a real process, pointed at the fake."""
    return subprocess.run(
        [sys.executable, "-c", "from narrator_cli.cli import main; main()",
         "speak", "--provider", "elevenlabs", "--voice", VOICE, *args],
        check=False, capture_output=True, text=True, timeout=60,
        env={**os.environ, "ELEVENLABS_API_KEY": KEY, "NARRATOR_ELEVENLABS_BASE_URL": fake.url})


def word_times(text, alignment):
    """(word, start, end, offset) of each whitespace-separated word of ``text``, from an alignment of its own
    characters: the first character's start and the last one's end."""
    starts, ends = alignment["character_start_times_seconds"], alignment["character_end_times_seconds"]
    return [(m.group(), starts[m.start()], ends[m.end() - 1], m.start()) for m in re.finditer(r"\S+", text)]


def spoken_span(alignment, said, occurrence=0):
    """(start, end) of the characters ``said`` in a normalised alignment."""
    spoken = "".join(alignment["characters"])
    at = [m.start() for m in re.finditer(re.escape(said), spoken)][occurrence]
    return alignment["character_start_times_seconds"][at], alignment["character_end_times_seconds"][at + len(said) - 1]


# --- words from the reply ---------------------------------------------------------------


@pytest.mark.parametrize("text", ["The quick brown fox jumps over the lazy dog.", "Hello, world! It's 2024 now.",
                                  "  Spaced   out,\tline  "])
def test_words_come_from_alignment_with_the_fakes_times(fake, text):
    synth = synthesize(fake, text)
    sent = fake.posts()[0]
    assert sent["path"] == f"/v1/text-to-speech/{VOICE}/with-timestamps"
    assert sent["query"] == {"output_format": "mp3_44100_128"} and sent["json"] == {"text": text, "model_id": MODEL}
    assert sent["headers"]["accept"] == "application/json"
    expected = word_times(text, sent["alignments"]["alignment"])
    assert [tuple(w) for w in synth.words] == expected  # punctuation and digits as written, the fake's times
    assert synth.mime == "audio/mpeg" and synth.extra["characterCost"] == len(text)


def test_the_audio_is_the_decoded_base64_and_its_length_bounds_the_words(fake):
    from narrator_cli.audio import measure_duration

    synth = synthesize(fake, CATS)
    duration = measure_duration(synth.audio, synth.mime)
    assert duration == pytest.approx(len(CATS) * 0.06, abs=0.03)
    assert 0 < synth.words[0].start < synth.words[-1].end < duration


def test_null_alignment_maps_seventy_seven_back_onto_77(fake):
    both = synthesize(fake, CATS)
    fake.script(timings("null-alignment"))
    synth = synthesize(fake, CATS)
    normal = fake.posts()[1]["alignments"]["normalized_alignment"]
    assert fake.posts()[1]["alignments"]["alignment"] is None
    assert "".join(normal["characters"]) == "i have seventy-seven cats."
    assert [(w.text, w.offset) for w in synth.words] == [("I", 0), ("have", 2), ("77", 7), ("cats.", 10)]
    i, have, number, cats = synth.words
    assert (number.start, number.end) == spoken_span(normal, "seventy-seven")  # the whole spoken number
    assert (i.start, i.end) == spoken_span(normal, "i")
    assert (have.start, have.end) == spoken_span(normal, "have")  # the neighbours keep their own times
    assert (cats.start, cats.end) == spoken_span(normal, "cats.")
    assert synth.words == both.words  # the same as the fake's alignment says, which gives "77" that span too


def test_a_malformed_alignment_falls_back_to_the_normalised_one(fake):
    timing = alignments(CATS, 0.9)
    timing["alignment"]["character_end_times_seconds"].pop()
    fake.script(raw_reply(json.dumps({"audio_base64": base64.b64encode(make_mp3(0.9)).decode(), **timing})))
    synth = synthesize(fake, CATS)
    assert synth.words[2].text == "77"
    assert (synth.words[2].start, synth.words[2].end) == spoken_span(timing["normalized_alignment"], "seventy-seven")


@pytest.mark.parametrize("mode", ["null-both", "ragged", "non-numeric"])
def test_no_usable_alignment_gives_no_words_but_the_audio(mode):
    with FakeElevenLabs(scripted=("POST",), api_key=KEY, alignment=mode) as fake:
        synth = synthesize(fake, CATS)
        assert fake.statuses("POST") == [200]  # not retried: the audio is good
        assert fake.posts()[0]["path"].endswith("/with-timestamps")
    assert synth.words is None and synth.mime == "audio/mpeg" and synth.audio.startswith(b"\xff\xfb")


@pytest.mark.parametrize("alignment", [None, "no dict", {"characters": "I have", "character_start_times_seconds": [0],
                                                         "character_end_times_seconds": [1]}, {}])
def test_alignments_of_the_wrong_shape_are_ignored(fake, alignment):
    reply = {"audio_base64": base64.b64encode(make_mp3(0.5)).decode(), "alignment": alignment,
             "normalized_alignment": alignment}
    fake.script(raw_reply(json.dumps(reply)))
    synth = synthesize(fake, CATS)
    assert synth.words is None and synth.audio == make_mp3(0.5)


def test_a_letter_that_lowers_to_two_characters_keeps_the_words(fake):
    synth = synthesize(fake, "İstanbul has 15 million people.")
    assert [w.text for w in synth.words] == ["İstanbul", "has", "15", "million", "people."]


def test_opus_audio_is_timed_too(fake):
    synth = synthesize(fake, CATS, output_format="opus_48000_64")
    assert synth.mime == "audio/ogg" and [w.text for w in synth.words] == CATS.split()


# --- replies that hold no audio -----------------------------------------------------------------


@pytest.mark.parametrize(("body", "says"), [
    (b"", "an empty response"),
    (b"<html>Bad gateway</html>", "not JSON"),
    (b"[1, 2]", "without audio_base64"),
    (json.dumps({"alignment": None, "normalized_alignment": None}), "without audio_base64"),
    (json.dumps({"audio_base64": 12}), "without audio_base64"),
    (json.dumps({"audio_base64": "not base64 at all!"}), "not valid base64"),
    (json.dumps({"audio_base64": "QUJDRA"}), "not valid base64"),  # padding missing
    (json.dumps({"audio_base64": ""}), "empty audio"),
    (json.dumps({"audio_base64": base64.b64encode(b"hello, not audio").decode()}), "does not play (not valid audio/mpeg"),
], ids=["empty", "html", "array", "no-audio", "number", "junk", "padding", "empty-audio", "not-audio"])
def test_a_200_without_audio_is_one_line_and_not_retried(fake, body, says):
    fake.script(raw_reply(body))
    with pytest.raises(ProviderError) as info:
        synthesize(fake, CATS, retries=3)
    message = str(info.value)
    assert message.startswith("ElevenLabs returned ") and says in message and "\n" not in message
    assert KEY not in message and KEY[3:] not in message
    assert fake.statuses("POST") == [200]  # billed once; asking again would pay again


def test_a_200_without_audio_fails_the_line_through_the_cli(fake, tmp_path):
    fake.script(raw_reply("{}"))
    proc = speak(fake, CATS)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("narrator: error: ") and "audio_base64" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and KEY not in proc.stdout + proc.stderr
    assert not (tmp_path / "audio-cache").exists() or not any((tmp_path / "audio-cache").iterdir())


# --- through `narrator speak` -------------------------------------------------------------------


def test_speak_stores_the_words_and_from_meta_reads_them_back(fake, tmp_path):
    proc = speak(fake, "--json", CATS)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    key = cache_key(CATS, VOICE, MODEL)
    assert row["cacheKey"] == key and row["status"] == "generated"
    meta = json.loads((tmp_path / "audio-cache" / f"{key}.meta.json").read_text())
    expected = word_times(CATS, fake.posts()[0]["alignments"]["alignment"])
    assert meta["words"] == [{"text": t, "start": s, "end": e, "offset": o} for t, s, e, o in expected]
    words = from_meta(meta, CATS, meta["duration"])
    assert [tuple(w) for w in words] == expected


def test_speak_stores_no_words_when_the_reply_has_no_timings(tmp_path):
    with FakeElevenLabs(scripted=("POST",), api_key=KEY, alignment="null-both") as fake:
        proc = speak(fake, "--json", CATS)
        assert fake.posts()[0]["path"].endswith("/with-timestamps")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((tmp_path / "audio-cache" / f"{json.loads(proc.stdout)['cacheKey']}.meta.json").read_text())
    assert "words" not in meta and meta["text"] == CATS and meta["duration"] > 0


# --- the stand-in itself ------------------------------------------------------------------------


def post(fake, path, text):
    import urllib.request

    req = urllib.request.Request(fake.url + path, data=json.dumps({"text": text, "model_id": MODEL}).encode(),
                                 headers={"xi-api-key": KEY, "Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.headers["Content-Type"], resp.read()


def test_the_fake_serves_timings_as_the_api_does(fake):
    from narrator_cli.audio import measure_duration

    text = "Chapter 3: it's 1,250 miles -- or 0042 km."
    kind, body = post(fake, f"/v1/text-to-speech/{VOICE}/with-timestamps", text)
    reply = json.loads(body)
    assert kind == "application/json" and set(reply) == {"audio_base64", "alignment", "normalized_alignment"}
    duration = measure_duration(base64.b64decode(reply["audio_base64"]), "audio/mpeg")
    own, normal = reply["alignment"], reply["normalized_alignment"]
    assert "".join(own["characters"]) == text
    assert "".join(normal["characters"]) == ("chapter three: it's one,two hundred fifty miles -- or zero zero four two "
                                             "km.")
    for a in (own, normal):
        starts, ends = a["character_start_times_seconds"], a["character_end_times_seconds"]
        assert len(a["characters"]) == len(starts) == len(ends)
        assert all(s <= e for s, e in zip(starts, ends)) and starts == sorted(starts)
        assert 0 < starts[0] and ends[-1] < duration
        for i, c in enumerate(a["characters"][:-1]):
            assert ends[i] == starts[i + 1]  # no gap: a word's characters follow each other
            if c == " ":
                assert ends[i] > starts[i]  # a space is a pause between words
    kind, body = post(fake, f"/v1/text-to-speech/{VOICE}", text)  # the plain endpoint: the audio itself
    assert kind == "audio/mpeg" and measure_duration(body, kind) == pytest.approx(duration)
    assert fake.posts()[1].get("alignments") is None


def test_the_fakes_alignment_modes():
    for mode in ALIGNMENTS:
        timing = alignments(CATS, 1.0, mode)
        present = [k for k in ("alignment", "normalized_alignment") if timing[k] is not None]
        assert present == {"both": ["alignment", "normalized_alignment"], "null-alignment": ["normalized_alignment"],
                           "null-both": []}.get(mode, ["alignment", "normalized_alignment"])
        for k in present:
            starts, ends = timing[k]["character_start_times_seconds"], timing[k]["character_end_times_seconds"]
            ragged = len(starts) != len(ends)
            strings = any(isinstance(x, str) for x in starts)
            assert (ragged, strings) == (mode == "ragged", mode == "non-numeric")
    with pytest.raises(ValueError, match="alignment mode"):
        FakeElevenLabs(alignment="sometimes")
