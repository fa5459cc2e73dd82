"""Caption cues: a line's words grouped by the reading rules (lines, characters, seconds, sentences, pauses)."""

import re
from itertools import pairwise

import pytest

from narrator_cli.captions.cues import Cue, Rules, cues
from narrator_cli.captions.words import Word, estimate, place, reader_len
from narrator_cli.errors import UsageError

LONG = ("Every line of narration becomes captions that a viewer can read comfortably, two lines at most and never "
        "more than forty-two characters each, while the voice keeps going through the whole paragraph without a "
        "single full stop to rest on, so the reading rules alone decide where one caption ends and the next "
        "begins")


def texts(result: list[Cue]) -> list[tuple[str, ...]]:
    return [c.lines for c in result]


DEFAULT = Rules()


def assert_rules(text: str, words: list[Word], result: list[Cue], rules: Rules = DEFAULT, offset: float = 0.0) -> None:
    """What every cue list keeps: rules, order, no word or grapheme split, no text lost or added."""
    assert result
    word_texts = {w.text for w in words}
    for cue in result:
        assert 1 <= len(cue.lines) <= rules.max_lines
        for line in cue.lines:
            assert line and line == " ".join(line.split())
            assert reader_len(line) <= rules.max_chars or line in word_texts, line
        assert cue.end > cue.start
        assert round(cue.start * 1000) == pytest.approx(cue.start * 1000, abs=1e-6)  # whole milliseconds
        inside = [w for w in words if cue.start - 0.0005 <= w.start + offset and w.end + offset <= cue.end + 0.0005]
        assert cue.end - cue.start <= rules.max_seconds + 0.001 or len(inside) == 1
    for before, after in pairwise(result):
        assert before.start < after.start and before.end <= after.start
    lines = [line for cue in result for line in cue.lines]
    assert re.sub(r"\s", "", "".join(lines)) == re.sub(r"\s", "", text)
    assert reader_len("".join(lines)) == sum(map(reader_len, lines))  # no grapheme cut in two
    if " " in text:  # a word is never split: the lines' words are the text's words
        assert [t for line in lines for t in line.split()] == text.split()
    assert result[0].start == round(words[0].start + offset, 3)
    assert result[-1].end == round(max(w.end for w in words) + offset, 3)


def test_a_short_line_is_one_cue_on_one_line_with_its_words_times():
    text = "Hello there."
    words = [Word("Hello", 0.12, 0.5, 0), Word("there.", 0.55, 1.0, 6)]
    assert cues(text, words) == [Cue(0.12, 1.0, ("Hello there.",))]
    assert cues(text, words, offset=2.5) == [Cue(2.62, 3.5, ("Hello there.",))]


def test_a_long_line_keeps_every_rule():
    words = estimate(LONG, 24.0)
    result = cues(LONG, words)
    assert len(result) >= 5
    assert_rules(LONG, words, result)
    assert_rules(LONG, words, cues(LONG, words, offset=61.25), offset=61.25)
    narrow = Rules(max_chars=20, max_lines=3, max_seconds=6.0)
    assert_rules(LONG, words, cues(LONG, words, narrow), narrow)


def test_a_cue_of_two_lines_is_balanced_not_filled():
    text = "The narrator reads every line aloud and writes its captions too."
    (cue,) = cues(text, estimate(text, 3.0))
    # greedy would be 39 + 24 characters: balanced, the top line the shorter
    assert cue.lines == ("The narrator reads every line", "aloud and writes its captions too.")


def test_a_sentence_longer_than_a_cue_is_split_into_even_cues():
    text = "A sentence that is far too long to fit into a single caption cue keeps going on and on until it ends here."
    words = estimate(text, 3.0)
    result = cues(text, words)
    assert_rules(text, words, result)
    # greedy would fill the first cue (80 characters) and leave the second one "until it ends here."
    assert texts(result) == [("A sentence that is far too", "long to fit into a single"),
                             ("caption cue keeps going on", "and on until it ends here.")]


def test_a_word_longer_than_a_line_gets_a_line_of_its_own_and_is_never_split():
    text = "The Pneumonoultramicroscopicsilicovolcanoconiosis case is a long word indeed"
    words = estimate(text, 3.5)
    rules = Rules(max_chars=20)
    result = cues(text, words, rules)
    assert_rules(text, words, result, rules)
    lines = [line for cue in result for line in cue.lines]
    assert "Pneumonoultramicroscopicsilicovolcanoconiosis" in lines
    assert all(reader_len(line) <= 20 for line in lines if "Pneumono" not in line)


def test_a_word_longer_than_the_time_limit_is_a_cue_of_its_own():
    text = "Hmmmmmmmm okay then"
    words = [Word("Hmmmmmmmm", 0.0, 5.0, 0), Word("okay", 5.1, 5.5, 10), Word("then", 5.6, 6.0, 15)]
    assert cues(text, words) == [Cue(0.0, 5.0, ("Hmmmmmmmm",)), Cue(5.1, 6.0, ("okay then",))]


def test_japanese_is_split_between_characters_and_keeps_small_kana_with_the_one_before():
    text = "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。何でも薄暗いじめじめした所でニャーニャー泣いていた事だけは記憶している。"
    words = estimate(text, 12.0)
    rules = Rules(max_chars=10)
    result = cues(text, words, rules)
    assert_rules(text, words, result, rules)
    lines = [line for cue in result for line in cue.lines]
    assert all(" " not in line for line in lines)  # CJK joins without spaces
    assert texts(result)[:2] == [("吾輩は猫である。",), ("名前はまだ無い。",)]  # a new cue after each 。
    assert all(cue.lines[-1].endswith("。") for cue in result if any("。" in line for line in cue.lines))
    assert not any(line[0] in "ゃゅょっャュョッー" for line in lines)  # kinsoku: never at a line's start
    assert any(len(cue.lines) == 2 for cue in result)


def test_chinese_without_spaces_is_split_between_characters_and_at_sentence_ends():
    text = ("我们今天要讨论的是人工智能在教育领域的应用以及它对未来社会可能产生的深远影响，这是一个非常重要的话题，"
            "值得我们每一个人认真思考。真的吗！当然。")
    words = estimate(text, 16.0)
    result = cues(text, words)
    assert_rules(text, words, result)
    assert len(result) >= 4
    assert texts(result)[-2:] == [("真的吗！",), ("当然。",)]
    assert all(" " not in line for cue in result for line in cue.lines)


def test_emoji_with_modifiers_and_zwj_families_count_as_one_character_each():
    family, thumb = "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466", "\U0001F44D\U0001F3FD"
    text = " ".join([thumb] * 6 + [family] * 2)
    words = estimate(text, 3.0)
    rules = Rules(max_chars=5, max_lines=1, max_seconds=10.0)
    result = cues(text, words, rules)
    assert_rules(text, words, result, rules)
    # three emoji to a line: five characters for a reader (eight or more code points)
    assert len(result) == 3 and any(len(cue.lines[0]) > 5 for cue in result)
    assert sum(cue.lines[0].count(family) for cue in result) == 2


def test_emoji_next_to_cjk_is_never_split():
    text = "日本\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466語\U0001F44D\U0001F3FDです"
    words = estimate(text, 2.0)
    rules = Rules(max_chars=2)
    result = cues(text, words, rules)
    assert_rules(text, words, result, rules)
    assert "".join(line for cue in result for line in cue.lines) == text


def test_decomposed_accents_count_as_one_character():
    text = " ".join(["re\u0301sume\u0301"] * 6)  # six characters for a reader, eight code points
    words = estimate(text, 3.0)
    rules = Rules(max_chars=20, max_lines=1)
    result = cues(text, words, rules)
    assert_rules(text, words, result, rules)
    assert texts(result) == [(" ".join(["re\u0301sume\u0301"] * 3),)] * 2


def test_a_combining_mark_after_kana_stays_with_its_character():
    text = "か\u3099" * 4  # four decomposed が: the text's words split each in two; the lines must not
    words = estimate(text, 2.0)
    rules = Rules(max_chars=3)
    result = cues(text, words, rules)
    assert_rules(text, words, result, rules)
    assert texts(result) == [("か\u3099か\u3099", "か\u3099か\u3099")]


def test_punctuation_heavy_text():
    text = "Wait... what?! No -- really?"
    words = estimate(text, 3.0)
    result = cues(text, words)
    assert_rules(text, words, result)
    # "Wait..." is followed by a lower-case word: the sentence goes on
    assert texts(result) == [("Wait... what?!",), ("No -- really?",)]


def test_a_sentence_end_starts_a_new_cue_even_inside_quotes_and_brackets():
    text = 'One. Two! Three? Four\u2026 Five\u3002 He said "Stop!" (Really?) Then left. Take a tool, e.g. this one.'
    words = estimate(text, 12.0)
    result = cues(text, words)
    assert_rules(text, words, result)
    assert [" ".join(cue.lines) for cue in result] == [
        "One.", "Two!", "Three?", "Four\u2026", "Five\u3002", 'He said "Stop!"', "(Really?)", "Then left.",
        "Take a tool, e.g. this one."]


def test_a_pause_longer_than_the_rule_starts_a_new_cue():
    text = "one two three four"

    def spoken(gap: float) -> list[Word]:
        return place(text, [(0.0, 0.3), (0.4, 0.7), (0.7 + gap, 1.0 + gap), (1.1 + gap, 1.4 + gap)], 1.5 + gap)

    assert texts(cues(text, spoken(1.0))) == [("one two",), ("three four",)]
    assert cues(text, spoken(1.0))[0].end == 0.7
    assert texts(cues(text, spoken(0.5))) == [("one two three four",)]
    assert texts(cues(text, spoken(1.0), Rules(pause=1.5))) == [("one two three four",)]


def test_no_cue_lasts_longer_than_the_time_limit():
    text = " ".join("abcdefghijklmnopqrst")  # fits one line; only the clock splits it
    words = place(text, [(i * 0.5, i * 0.5 + 0.4) for i in range(20)], 10.0)
    result = cues(text, words)
    assert_rules(text, words, result)
    assert len(result) == 3 and all(cue.end - cue.start <= 4.0 for cue in result)
    assert len(cues(text, words, Rules(max_seconds=10.0))) == 1


def test_zero_length_words_still_give_cues_that_last():
    text = "Nothing to hear. At all."
    result = cues(text, estimate(text, 0.0), offset=1.0)
    assert texts(result) == [("Nothing to hear.",), ("At all.",)]
    assert all(cue.end > cue.start for cue in result)
    assert result[0] == Cue(1.0, 1.001, ("Nothing to hear.",))


def test_times_are_whole_milliseconds_with_the_offset_added():
    text = "Rounded once."
    words = [Word("Rounded", 0.12345, 0.5, 0), Word("once.", 0.6, 0.98765, 8)]
    assert cues(text, words, offset=10.0) == [Cue(10.123, 10.988, ("Rounded once.",))]


def test_whitespace_runs_and_newlines_collapse_to_one_space():
    text = "Hello,\n\n  world\tagain."
    assert texts(cues(text, estimate(text, 1.0))) == [("Hello, world again.",)]


def test_no_words_no_cues():
    assert cues("", []) == []
    assert cues("   \n", estimate("   \n", 1.0)) == []


@pytest.mark.parametrize("rules, message", [
    (Rules(max_chars=0), "max_chars must be a whole number of at least 1, not 0"),
    (Rules(max_lines=1.5), "max_lines must be a whole number of at least 1, not 1.5"),
    (Rules(max_seconds=0), "max_seconds must be a number of seconds above 0, not 0"),
    (Rules(max_seconds=float("nan")), "max_seconds must be a number of seconds above 0, not nan"),
    (Rules(pause=-1.0), "pause must be a number of seconds 0 or more, not -1.0"),
])
def test_rules_that_cannot_be_followed_are_a_usage_error(rules, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        cues("Some words.", estimate("Some words.", 1.0), rules)
    assert Rules(max_chars=30, max_lines=3, max_seconds=6.0, pause=0.0).check() == (30, 3, 6.0, 0.0)
