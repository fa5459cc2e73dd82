"""espeak-ng word timings, checked against the audio they came with.

The speech is real (the offline voice); silence and sound are measured from its PCM, never assumed.
"""

from __future__ import annotations

import array
import io
import itertools
import json
import shutil
import subprocess
import wave
from pathlib import Path

import pytest
from typer.testing import CliRunner

from narrator_cli.captions.words import from_meta, spans
from narrator_cli.cli import app
from narrator_cli.providers.espeak import EspeakProvider, words_from_events

LOUD = 0.01 * 32768  # a sample above 1% of full scale is sound
RATE = 22050
WORD, END = 1, 5  # espeak_EVENT types

LINES = [
    "The quick brown fox jumps over the lazy dog.",
    "First sentence. Second one here.",  # two sentences with a pause between
    "In 1984 pi was 3.14 exactly.",  # numbers: several WORD events in one word
    "A well-known state-of-the-art thing.",  # compounds: the tails give no event
    "Café déjà vu, naïve façade.",  # non-ASCII; "déjà vu" is a dictionary phrase
    'She said: "Yes!"',  # an event past the opening quote; silence after the speech
    "Wait—what?",  # a WORD event of length 0
    "Mr. Smith, Dr. Who & co. at 10:30.",  # abbreviations: an event on a space
    "Hi",  # a single word
]


def speak(text: str, fmt: str = "wav", **options):
    return EspeakProvider(fmt, **options).synthesize(text, "en", "espeak-ng")


def samples_of(wav_bytes: bytes) -> array.array:
    with wave.open(io.BytesIO(wav_bytes)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, RATE)
        return array.array("h", w.readframes(w.getnframes()))


def sound(samples: array.array) -> list[int]:
    return [i for i, x in enumerate(samples) if abs(x) > LOUD]


def longest_silence(samples: array.array) -> tuple[float, float]:
    """(start, end) in seconds of the longest quiet stretch between two sounds."""
    loud = sound(samples)
    a, b = max(itertools.pairwise(loud), key=lambda pair: pair[1] - pair[0])
    return (a + 1) / RATE, b / RATE


def word(words, text: str):
    return next(w for w in words if w.text == text)


def check_against_audio(text: str, words, samples: array.array) -> None:
    """The words are the text's, in order, inside the audio, starting and ending with its speech."""
    duration = len(samples) / RATE
    assert [w.text for w in words] == [text[a:b] for a, b in spans(text)]
    assert [w.offset for w in words] == [a for a, _ in spans(text)]
    for w, nxt in zip(words, words[1:] + [None]):
        assert 0 <= w.start <= w.end <= (nxt.start if nxt else duration), (w, nxt)
    loud = sound(samples)
    assert abs(words[0].start - loud[0] / RATE) <= 0.060
    assert abs(words[-1].end - (loud[-1] + 1) / RATE) <= 0.100
    for w in words:  # every word spans some of the speech: none is put in a pause
        assert any(w.start * RATE <= i < w.end * RATE for i in loud), w


def check_pause(words, samples: array.array, before: str, after: str) -> None:
    quiet_from, quiet_to = longest_silence(samples)
    assert quiet_to - quiet_from > 0.1  # the engine's pause is there, measured from the PCM
    assert quiet_to - 0.02 <= word(words, after).start <= quiet_to + 0.06
    assert quiet_from - 0.1 <= word(words, before).end <= quiet_from + 0.02


@pytest.mark.parametrize("text", LINES)
def test_words_are_the_texts_in_order_inside_the_speech(text):
    synth = speak(text)
    check_against_audio(text, synth.words, samples_of(synth.audio))


PAUSES = [
    ("First sentence. Second one here.", "sentence.", "Second"),
    ("Hello world, this is a test.", "world,", "this"),
    ("Café déjà vu, naïve façade.", "vu,", "naïve"),  # text_position counts characters, not UTF-8 bytes
]


@pytest.mark.parametrize(("text", "before", "after"), PAUSES)
def test_the_pause_after_a_clause_belongs_to_no_word(text, before, after):
    synth = speak(text)
    check_pause(synth.words, samples_of(synth.audio), before, after)


def test_a_number_keeps_all_of_its_events():
    words = speak("In 1984 pi was 3.14 exactly.").words
    length = {w.text: w.end - w.start for w in words}
    assert length["1984"] > 2 * length["pi"] and length["3.14"] > 2 * length["was"]


def test_a_compound_is_one_word_spoken_whole():
    words = speak("A well-known state-of-the-art thing.").words
    assert [w.text for w in words] == ["A", "well-known", "state-of-the-art", "thing."]
    assert word(words, "state-of-the-art").end - word(words, "state-of-the-art").start > \
        word(words, "well-known").end - word(words, "well-known").start


def close(a, b, within: float = 0.025) -> bool:
    """The same words at nearly the same times: two runs of the engine on one line differ by up to ~10 ms."""
    return [w.text for w in a] == [w.text for w in b] and all(
        abs(x.start - y.start) <= within and abs(x.end - y.end) <= within for x, y in zip(a, b))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg (the independent decoder) missing")
@pytest.mark.parametrize(("text", "before", "after"), PAUSES)
def test_mp3_words_fit_the_audio_a_player_decodes(tmp_path, text, before, after):
    """The encoder's delay and padding are trimmed by players: the words are not shifted by them."""
    mp3 = speak(text, "mp3")
    path = tmp_path / "line.mp3"
    path.write_bytes(mp3.audio)
    proc = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "s16le", "-acodec",
                           "pcm_s16le", "-"], check=False, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    samples = array.array("h", proc.stdout)
    check_against_audio(text, mp3.words, samples)
    check_pause(mp3.words, samples, before, after)
    assert close(mp3.words, speak(text, "wav").words)


def test_without_timings_the_engine_gives_audio_only():
    text = "Timings cost nothing in the audio."
    plain, timed = speak(text, words=False), speak(text)
    assert plain.words is None and timed.words
    assert abs(len(samples_of(plain.audio)) - len(samples_of(timed.audio))) < RATE * 0.005


def test_speak_stores_the_words_and_from_meta_reads_them_back(tmp_path):
    text = "Café déjà vu. Then 1984, well-known!"
    result = CliRunner().invoke(app, ["speak", text, "--provider", "espeak", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    meta = json.loads((Path(row["path"]).with_suffix(".meta.json")).read_text())
    stored = from_meta(meta, text, meta["duration"])
    assert stored is not None and [w.as_meta() for w in stored] == meta["words"]
    assert close(stored, speak(text, "mp3").words)


# --- the events as espeak-ng 1.52 gives them, over PCM whose sound and silence are known ----------------------


def pcm(*parts: tuple[str, float]) -> bytes:
    """("sound" | "silence", seconds) in turn, as 16-bit PCM at espeak's rate."""
    out = array.array("h")
    for kind, seconds in parts:
        n = round(seconds * RATE)
        out.extend([3000, -3000] * (n // 2) + [3000] * (n % 2) if kind == "sound" else [0] * n)
    return out.tobytes()


def times(words) -> dict[str, tuple[float, float]]:
    return {w.text: (round(w.start, 3), round(w.end, 3)) for w in words}


def test_a_dictionary_phrase_gives_its_second_word_the_event_inside_the_first():
    # "The déjà vu feeling.": espeak-ng says "vu" starts one character into "déjà"
    marks = [(WORD, 1, 0), (WORD, 5, 133), (WORD, 6, 450), (WORD, 13, 654), (END, 20, 1101)]
    got = times(words_from_events("The déjà vu feeling.", marks, pcm(("sound", 1.1)), RATE))
    assert got["déjà"] == (0.133, 0.45) and got["vu"] == (0.45, 0.654)


def test_an_event_on_a_space_goes_to_the_next_word_only_when_it_has_none():
    # "co. at 10": the event for "at" points at the space before it
    got = times(words_from_events("co. at 10", [(WORD, 1, 0), (WORD, 4, 220), (WORD, 8, 400)],
                                  pcm(("sound", 0.7)), RATE))
    assert got["at"][0] == 0.22
    # an emoji read as two words: the second event points at the space, and "here" has its own
    got = times(words_from_events("Emoji 😀 here", [(WORD, 1, 0), (WORD, 7, 357), (WORD, 8, 688), (WORD, 9, 982)],
                                  pcm(("sound", 1.3)), RATE))
    assert got["😀"] == (0.357, 0.982) and got["here"][0] == 0.982


def test_a_numbers_extra_events_stay_with_it():
    got = times(words_from_events("Call 1984 then", [(WORD, 1, 0), (WORD, 6, 300), (WORD, 7, 900)],
                                  pcm(("sound", 2.0)), RATE))
    assert got["1984"][0] == 0.3 and abs(got["then"][0] - 0.9) > 0.1  # "then" is placed, not given a digit's time


def test_events_that_point_nowhere_or_back_in_time_are_ignored():
    text = "one two three"
    marks = [(WORD, 0, 100), (WORD, -3, 100), (WORD, 99, 100), (WORD, 5, 5000), (WORD, 1, 0), (WORD, 5, 700),
             (WORD, 9, 600)]  # "three" before "two": back in time
    got = words_from_events(text, marks, pcm(("sound", 1.0)), RATE)
    assert [w.text for w in got] == ["one", "two", "three"]
    assert got[0].start == 0 and got[1].start == 0.7 and 0.7 < got[2].start < 1.0 and got[2].end == 1.0


def test_no_word_event_means_no_timings():
    audio = pcm(("sound", 0.5))
    assert words_from_events("two words", [], audio, RATE) is None
    assert words_from_events("two words", [(END, 10, 500)], audio, RATE) is None
    assert words_from_events("   ", [(WORD, 1, 0)], audio, RATE) is None


def test_words_start_and_end_with_the_sound_around_a_pause():
    audio = pcm(("silence", 0.03), ("sound", 0.47), ("silence", 0.3), ("sound", 0.4), ("silence", 0.2))
    marks = [(WORD, 3, 0), (WORD, 7, 250), (END, 12, 800), (WORD, 12, 800), (END, 18, 1400)]
    got = times(words_from_events("  One two, three", marks, audio, RATE))
    assert got == {"One": (0.03, 0.25), "two,": (0.25, 0.5), "three": (0.8, 1.2)}
