"""Caption files: SRT, WebVTT and word JSON.

Every time is written in whole milliseconds by one function (``cues.ms``), so a cue has the same times in all three
formats (``cues`` already rounded them). A cue's text lines are written with whitespace collapsed, so no cue
holds a blank line (which would end an SRT or WebVTT cue early).

Word JSON (times in integer milliseconds from the start of the script; one object a line)::

    {"lines": [{"text", "cacheKey", "start", "end", "estimated"}],   # one per line of the script
     "cues":  [{"start", "end", "text"}],                             # text: the cue's lines joined by "\\n"
     "words": [{"text", "start", "end", "line", "offset"}]}           # line: index into "lines";
                                                                      # offset: in that line's text
"""

from __future__ import annotations

import json

from .cues import Cue, TimedLine, ms


def _clock(milliseconds: int, separator: str) -> str:
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, rest = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{rest:03d}"


def cue_times(cue: Cue) -> tuple[int, int]:
    """A cue's (start, end) in milliseconds, the end at least a millisecond after the start."""
    start = ms(cue.start)
    return start, max(ms(cue.end), start + 1)


def _lines(cue: Cue) -> list[str]:
    return [line for line in (" ".join(text.split()) for text in cue.lines) if line]


def _blocks(cues: list[Cue], separator: str) -> list[tuple[str, list[str]]]:
    """(timing line, text lines) of each cue that has text."""
    out = []
    for cue in cues:
        lines = _lines(cue)
        if lines:
            start, end = cue_times(cue)
            out.append((f"{_clock(start, separator)} --> {_clock(end, separator)}", lines))
    return out


def srt(cues: list[Cue]) -> str:
    """SubRip: numbered from 1, a blank line between cues. SRT has no escapes: the text is as spoken."""
    return "\n".join(f"{i}\n{timing}\n" + "\n".join(lines) + "\n"
                     for i, (timing, lines) in enumerate(_blocks(cues, ","), 1))


def _escape_vtt(line: str) -> str:
    """WebVTT cue text: ``&`` and ``<`` start markup, and ``>`` is escaped so "-->" never appears in it."""
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def vtt(cues: list[Cue]) -> str:
    """WebVTT: the header, then each cue as a timing line and its escaped text."""
    blocks = [f"{timing}\n" + "\n".join(map(_escape_vtt, lines)) + "\n" for timing, lines in _blocks(cues, ".")]
    return "WEBVTT\n\n" + "\n".join(blocks)


def word_json(lines: list[TimedLine], cues: list[Cue]) -> str:
    """The script's lines, cues and words with their times, for tools that place their own captions."""
    sections = {
        "lines": [{"text": line.text, "cacheKey": line.key, "start": ms(line.start),
                   "end": ms(line.start + line.duration), "estimated": line.estimated} for line in lines],
        "cues": [dict(zip(("start", "end"), cue_times(cue)), text="\n".join(_lines(cue)))
                 for cue in cues if _lines(cue)],
        "words": [{"text": w.text, "start": ms(w.start), "end": max(ms(w.end), ms(w.start)), "line": i,
                   "offset": w.offset} for i, line in enumerate(lines) for w in line.words],
    }
    return "{\n" + ",\n".join(f" {json.dumps(name)}: {_rows(rows)}" for name, rows in sections.items()) + "\n}\n"


def _rows(rows: list[dict]) -> str:
    """A JSON list with one object a line: readable, and a diff shows which word moved."""
    if not rows:
        return "[]"
    return "[\n" + ",\n".join("  " + json.dumps(row, ensure_ascii=False) for row in rows) + "\n ]"
