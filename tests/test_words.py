"""A line's words and their times: what a word is, filling what a source does not say, per-character times
mapped onto the text, and words read back from metadata that anyone could have written."""

from __future__ import annotations

import math

import pytest

from narrator_cli.captions.words import Word, estimate, from_characters, from_meta, place, reader_len, spans


def words_of(text: str) -> list[str]:
    return [text[a:b] for a, b in spans(text)]


@pytest.mark.parametrize(("text", "expected"), [
    ("Hello, world!", ["Hello,", "world!"]),
    ("  two\tspaces\n\nnewline ", ["two", "spaces", "newline"]),
    ("well-known 3.14 don't", ["well-known", "3.14", "don't"]),
    ("日本語のテキスト。", ["日", "本", "語", "の", "テ", "キ", "ス", "ト。"]),
    ("「こんにちは」と言った", ["「こ", "ん", "に", "ち", "は」", "と", "言", "っ", "た"]),
    ("GPU日本 ok", ["GPU", "日", "本", "ok"]),
    ("か\u3099き葛\U000E0100", ["か\u3099", "き", "葛\U000E0100"]),  # a mark or selector stays with its character
    ("👨‍👩‍👧 family 👍🏽!", ["👨‍👩‍👧", "family", "👍🏽!"]),
    ("", []),
    ("   ", []),
])
def test_the_text_decides_what_a_word_is(text, expected):
    assert words_of(text) == expected


def test_reader_length_counts_graphemes():
    assert reader_len("abc") == 3
    assert reader_len("e\u0301te\u0301") == 3  # decomposed accents
    assert reader_len("👨‍👩‍👧👍🏽") == 2  # a ZWJ family and a skin-toned thumb
    assert reader_len("日本") == 2


def test_an_estimate_covers_the_line_in_order_by_character_count():
    words = estimate("a bbbbbbbbb", 2.0)
    assert [w.text for w in words] == ["a", "bbbbbbbbb"]
    assert words[0].start == 0 and words[-1].end == pytest.approx(2.0)
    assert words[0].end == words[1].start
    assert words[1].end - words[1].start > 4 * (words[0].end - words[0].start)  # longer word, longer time


def test_place_fills_unknown_words_between_known_neighbours():
    words = place("one two three four", [(0.5, 0.8), (None, None), (None, None), (2.0, 2.4)], 3.0)
    assert words[0].start == 0.5 and words[3].start == 2.0
    assert 0.8 <= words[1].start < words[2].start < 2.0  # after one's end, before four
    assert words[0].end == 0.8  # a known end is kept
    assert words[-1].end == 2.4


def test_place_ignores_a_start_that_goes_backwards_and_clamps_to_the_duration():
    words = place("a b c", [(1.0, None), (0.2, None), (9.0, 12.0)], 2.0)
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert all(0 <= w.start <= w.end <= 2.0 for w in words)


def test_characters_map_onto_the_text_they_were_spoken_from():
    text = "Hi there."
    chars = list(text)
    starts = [i * 0.1 for i in range(len(chars))]
    ends = [s + 0.1 for s in starts]
    words = from_characters(text, chars, starts, ends, 1.0)
    assert [(w.text, w.start, w.end) for w in words] == [("Hi", 0.0, pytest.approx(0.2)),
                                                         ("there.", pytest.approx(0.3), pytest.approx(0.9))]


def test_a_normalised_number_gives_its_time_to_the_digits_it_replaces():
    text = "I have 77 cats."
    spoken = "i have seventy-seven cats."
    starts = [i * 0.05 for i in range(len(spoken))]
    ends = [s + 0.05 for s in starts]
    words = from_characters(text, list(spoken), starts, ends, 2.0)
    assert [w.text for w in words] == ["I", "have", "77", "cats."]
    number = words[2]
    first, last = spoken.index("seventy"), spoken.index("seven ") + len("seven") - 1
    assert number.start == pytest.approx(starts[first]) and number.end == pytest.approx(ends[last])
    assert words[3].start == pytest.approx(starts[spoken.index("cats")])


@pytest.mark.parametrize("arrays", [
    ([], [], []),
    (["a"], [0.0, 0.1], [0.1]),
    (["a"], ["x"], [0.1]),
    (["a"], [float("nan")], [0.1]),
    (None, None, None),
])
def test_unusable_character_arrays_give_no_words(arrays):
    assert from_characters("a", *arrays, 1.0) is None


def test_words_round_trip_through_metadata():
    text = "Hello, wide world."
    words = estimate(text, 1.5)
    meta = {"words": [w.as_meta() for w in words]}
    back = from_meta(meta, text, 1.5)
    assert [(w.text, w.offset) for w in back] == [(w.text, w.offset) for w in words]
    assert all(math.isclose(a.start, b.start, abs_tol=0.0005) for a, b in zip(back, words))


@pytest.mark.parametrize("bad", [
    None, "words", [], [1], [{"text": "Hello,", "start": 0, "end": 0.2}],
    [{"text": "Hello,", "start": 0, "end": 0.2, "offset": 1}],  # not where the text has it
    [{"text": "Bye", "start": 0, "end": 0.2, "offset": 0}],  # another line's word
    [{"text": "Hello,", "start": -1, "end": 0.2, "offset": 0}],
    [{"text": "Hello,", "start": 0.3, "end": 0.2, "offset": 0}],
    [{"text": "Hello,", "start": float("nan"), "end": 0.2, "offset": 0}],
    [{"text": "Hello,", "start": True, "end": 0.2, "offset": 0}],
    [{"text": "Hello,", "start": 0.5, "end": 0.6, "offset": 0}, {"text": "world", "start": 0.1, "end": 0.2,
                                                                 "offset": 7}],  # backwards
])
def test_metadata_words_that_do_not_fit_the_line_are_refused(bad):
    assert from_meta({"words": bad}, "Hello, world", 1.0) is None


def test_metadata_times_past_the_audio_are_clamped():
    words = from_meta({"words": [{"text": "Hi", "start": 0.1, "end": 9.0, "offset": 0}]}, "Hi", 1.0)
    assert words == [Word("Hi", 0.1, 1.0, 0)]
