"""SRT, WebVTT and word JSON, read back by two independent parsers (srt, webvtt-py) and by json."""

import html
import io
import json
from datetime import timedelta

import srt as srt_lib
import webvtt

from narrator_cli.captions.cues import Cue, TimedLine, cues
from narrator_cli.captions.formats import srt, vtt, word_json
from narrator_cli.captions.words import Word, estimate, place

SCRIPT = [
    ("Welcome to the tour. Tom & Jerry <3 each other --> forever, and a<b>c & d>e stays as written.", 6.2),
    ("吾輩は猫である。名前はまだ無い。", 3.1),
    (("Family \U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466 and thumbs \U0001F44D\U0001F3FD, "
      "re\u0301sume\u0301 and caf\u00e9. Wait... what?! No -- really?"), 5.0),
]


def timeline(script=SCRIPT, gap: float = 0.5, first: float = 0.0) -> tuple[list[TimedLine], list[Cue]]:
    """The script's lines one after the other, a gap between them, as the captions command places them."""
    lines, all_cues, at = [], [], first
    for i, (text, duration) in enumerate(script):
        words = estimate(text, duration)
        all_cues += cues(text, words, offset=at)
        absolute = [w._replace(start=w.start + at, end=w.end + at) for w in words]
        lines.append(TimedLine(text, f"key{i:05d}", at, duration, absolute, True))
        at += duration + gap
    return lines, all_cues


def expected(result: list[Cue]) -> list[tuple[int, int, str]]:
    """(start ms, end ms, text) of each cue, as every format must write it."""
    return [(round(c.start * 1000), round(c.end * 1000), "\n".join(c.lines)) for c in result]


def from_srt(text: str) -> list[tuple[int, int, str]]:
    return [(s.start // _MS, s.end // _MS, s.content) for s in srt_lib.parse(text)]


def from_vtt(text: str) -> list[tuple[int, int, str]]:
    """webvtt-py leaves character references as written: html.unescape decodes them."""
    return [(c.start_time.in_milliseconds(), c.end_time.in_milliseconds(), html.unescape(c.text))
            for c in webvtt.from_buffer(io.StringIO(text))]


_MS = timedelta(milliseconds=1)


def test_srt_and_webvtt_read_back_by_two_parsers_give_the_same_cues():
    _, result = timeline(first=3590.0)  # crosses the hour
    assert len(result) >= 6
    want = expected(result)
    assert from_srt(srt(result)) == want
    assert from_vtt(vtt(result)) == want
    assert any(start >= 3_600_000 for start, _, _ in want)


def test_markup_characters_and_arrows_in_the_narration_survive_both_formats():
    text = "Tom & Jerry <3 each other --> forever; a<b>c & d>e. <i>Not</i> a tag &amp; not an entity."
    result = cues(text, estimate(text, 6.0))
    want = expected(result)
    assert "-->" in "".join(t for _, _, t in want) and "&amp;" in "".join(t for _, _, t in want)
    assert from_srt(srt(result)) == want
    assert from_vtt(vtt(result)) == want
    body = vtt(result).splitlines()
    # WebVTT: no raw markup in cue text, and "-->" only on timing lines
    assert all(" --> " in line or ("<" not in line and ">" not in line) for line in body)
    assert all(line.count("-->") == (1 if line[:2].isdigit() else 0) for line in body)


def test_srt_layout():
    result = [Cue(0.0, 1.5, ("Hello",)), Cue(3725.25, 3726.0, ("two", "lines")), Cue(360000.0, 360000.5, ("x",))]
    assert srt(result) == ("1\n00:00:00,000 --> 00:00:01,500\nHello\n\n"
                           "2\n01:02:05,250 --> 01:02:06,000\ntwo\nlines\n\n"
                           "3\n100:00:00,000 --> 100:00:00,500\nx\n")


def test_webvtt_layout():
    result = [Cue(0.0, 1.5, ("Hello & <bye>",)), Cue(3725.25, 3726.0, ("two", "lines"))]
    assert vtt(result) == ("WEBVTT\n\n"
                           "00:00:00.000 --> 00:00:01.500\nHello &amp; &lt;bye&gt;\n\n"
                           "01:02:05.250 --> 01:02:06.000\ntwo\nlines\n")


def test_a_cue_never_holds_a_blank_line_and_never_ends_before_it_starts():
    result = [Cue(1.0, 1.0, ("a\n\nb", "", " c ")), Cue(2.0, 3.0, ("", "  "))]
    assert srt(result) == "1\n00:00:01,000 --> 00:00:01,001\na b\nc\n"
    assert from_srt(srt(result)) == from_vtt(vtt(result)) == [(1000, 1001, "a b\nc")]


def test_no_cues():
    assert srt([]) == ""
    assert vtt([]) == "WEBVTT\n\n"
    assert from_vtt(vtt([])) == []
    assert json.loads(word_json([], [])) == {"lines": [], "cues": [], "words": []}


def test_word_json_has_each_line_cue_and_word_in_milliseconds():
    lines, result = timeline(gap=0.25)
    doc = json.loads(word_json(lines, result))
    assert doc["lines"] == [{"text": line.text, "cacheKey": line.key, "start": round(line.start * 1000),
                             "end": round((line.start + line.duration) * 1000), "estimated": True}
                            for line in lines]
    assert doc["lines"][1]["start"] == 6200 + 250 and doc["lines"][2]["start"] == 6200 + 250 + 3100 + 250
    assert [(c["start"], c["end"], c["text"]) for c in doc["cues"]] == from_srt(srt(result)) == expected(result)
    assert len(doc["words"]) == sum(len(line.words) for line in lines)
    for word in doc["words"]:
        line = lines[word["line"]]
        assert line.text[word["offset"]:word["offset"] + len(word["text"])] == word["text"]
        assert isinstance(word["start"], int) and isinstance(word["end"], int)
        assert doc["lines"][word["line"]]["start"] <= word["start"] <= word["end"] <= doc["lines"][word["line"]]["end"]
    # each cue starts with one of its line's words and ends with one: the same milliseconds everywhere
    starts = {w["start"] for w in doc["words"]}
    ends = {w["end"] for w in doc["words"]}
    assert all(c["start"] in starts and c["end"] in ends for c in doc["cues"])
    assert len(word_json(lines, result).splitlines()) == 3 * 2 + 2 + len(lines) + len(doc["cues"]) + len(doc["words"])


def test_times_on_a_half_millisecond_round_the_same_in_every_format():
    text = "Half a millisecond. Again here."
    words = place(text, [(0.0005, 0.5015), (0.6, 1.2), (1.2, 1.5), (1.5, 2.0025)], 2.1)
    line = TimedLine(text, "abcdefgh", 0.0, 2.1, words, False)
    result = cues(text, words)
    doc = json.loads(word_json([line], result))
    want = [(c["start"], c["end"], c["text"]) for c in doc["cues"]]
    assert from_srt(srt(result)) == from_vtt(vtt(result)) == want
    assert want[0][0] == doc["words"][0]["start"] and want[-1][1] == doc["words"][-1]["end"]
    assert doc["lines"][0]["estimated"] is False
    (late,) = json.loads(word_json([TimedLine("x", "k", 1.0004, 2.0004, [], True)], []))["lines"]
    assert (late["start"], late["end"]) == (1000, 3001)  # the end rounded once, not start and duration apart


def test_word_json_keeps_words_a_provider_timed_by_hand():
    text = "Seventy-seven 77 trombones."
    words = [Word("Seventy-seven", 1.0, 1.6, 0), Word("77", 1.7, 2.4, 14), Word("trombones.", 2.5, 3.25, 17)]
    doc = json.loads(word_json([TimedLine(text, "k", 1.0, 2.5, words, False)], cues(text, words)))
    assert doc["words"] == [{"text": "Seventy-seven", "start": 1000, "end": 1600, "line": 0, "offset": 0},
                            {"text": "77", "start": 1700, "end": 2400, "line": 0, "offset": 14},
                            {"text": "trombones.", "start": 2500, "end": 3250, "line": 0, "offset": 17}]
    assert doc["cues"] == [{"start": 1000, "end": 3250, "text": "Seventy-seven 77 trombones."}]
