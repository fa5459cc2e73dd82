"""A line's words and when each is spoken.

The line's own text decides what a word is (a run of non-space characters, punctuation kept with it; CJK
ideographs and kana, written without spaces, are one word each); a provider only says *when*. Every source
of timing (ElevenLabs' per-character times, espeak-ng's word events, an estimate) ends in ``place``, which
fills the words a source said nothing about by character count between their neighbours.

In an entry's metadata the words are a list ``words`` of ``{"text", "start", "end", "offset"}`` (seconds,
rounded to the millisecond; ``offset``: where the word starts in the line's text, in Unicode characters).
The Motion Canvas plugin forwards metadata as it is, so the layout stays the plugin's.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from typing import NamedTuple

MAX_WORDS = 100_000  # more words than any line a provider takes: metadata claiming more is not a line's


class Word(NamedTuple):
    text: str
    start: float  # seconds from the start of the line's audio
    end: float
    offset: int  # index of the word's first character in the line's text

    def as_meta(self) -> dict:
        return {"text": self.text, "start": round(self.start, 3), "end": round(self.end, 3), "offset": self.offset}


def is_cjk(char: str) -> bool:
    """Ideographs and kana: scripts written without spaces, where a caption may break between any two."""
    o = ord(char)
    return (0x3040 <= o <= 0x30FF or 0x31F0 <= o <= 0x31FF or 0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF
            or 0xF900 <= o <= 0xFAFF or 0xFF66 <= o <= 0xFF9F or 0x20000 <= o <= 0x3134F)


def _opens(char: str) -> bool:
    return unicodedata.category(char) in ("Ps", "Pi")


def _joins(char: str) -> bool:
    """A mark or selector that belongs to the character before it (a dakuten, a variation selector)."""
    return unicodedata.category(char).startswith("M") or 0xFE00 <= ord(char) <= 0xFE0F \
        or 0xE0100 <= ord(char) <= 0xE01EF or char == "\u200d"


def _punctuation(char: str) -> bool:
    return unicodedata.category(char).startswith("P")


def spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each word in ``text``: runs of non-space characters, split around CJK characters
    (punctuation stays with the word before it; an opening bracket or quote with the word after it)."""
    out: list[tuple[int, int]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        start = i
        while i < n and not text[i].isspace():
            c = text[i]
            if i > start:
                prev = text[i - 1]
                split = ((is_cjk(c) and not _opens(prev)) or (is_cjk(prev) and not _punctuation(c))) \
                    and not _joins(c)
                if split and not (_opens(prev) and all(_opens(x) for x in text[start:i])):
                    out.append((start, i))
                    start = i
            i += 1
        out.append((start, i))
    return out


def reader_len(text: str) -> int:
    """Characters as a reader counts them: grapheme clusters (an emoji with its modifiers, a letter with
    its accents: one each)."""
    if text.isascii():
        return len(text)
    import regex

    return len(regex.findall(r"\X", text))


def place(text: str, known: Sequence[tuple[float | None, float | None]], duration: float) -> list[Word]:
    """The words of ``text`` with times: ``known[i]`` is what a source says of word i (start, end; None
    where it says nothing). A start that goes backwards is ignored; words without a start share the span
    between their neighbours' by character count; a word without an end ends where the next one starts
    (the last one: where the source says speech ends, else at ``duration``)."""
    words = spans(text)
    n = len(words)
    if not n:
        return []
    duration = max(0.0, duration)
    weights = [reader_len(text[a:b]) + 1 for a, b in words]
    starts: list[float | None] = [None] * n
    ends: list[float | None] = [None] * n
    latest = 0.0
    for i, (s, e) in enumerate(list(known)[:n]):
        if _finite(s) and latest <= s <= duration:  # type: ignore[operator]
            starts[i] = latest = float(s)  # type: ignore[arg-type]
        if _finite(e):
            ends[i] = min(float(e), duration)  # type: ignore[arg-type]
    last_end = ends[-1] if ends[-1] is not None and starts[-1] is not None else duration
    anchors = [i for i in range(n) if starts[i] is not None]
    if not anchors:
        _share(starts, weights, 0, n, 0.0, duration)
    else:
        _share(starts, weights, 0, anchors[0], 0.0, starts[anchors[0]])  # type: ignore[arg-type]
        for a, b in zip(anchors, anchors[1:] + [n]):
            lo = starts[a]
            hi = starts[b] if b < n else last_end
            if b - a > 1 and ends[a] is not None and lo <= ends[a] <= hi:  # type: ignore[operator]
                _share(starts, weights, a + 1, b, ends[a], hi)  # type: ignore[arg-type]
            else:
                _share(starts, weights, a, b, lo, hi, keep_first=True)  # type: ignore[arg-type]
    out = []
    for i, (a, b) in enumerate(words):
        s = starts[i]
        nxt = starts[i + 1] if i + 1 < n else max(last_end, s)  # type: ignore[type-var]
        e = ends[i]
        if e is None or not s <= e <= nxt:  # type: ignore[operator]
            e = nxt
        out.append(Word(text[a:b], s, e, a))  # type: ignore[arg-type]
    return out


def _share(starts: list[float | None], weights: list[int], i: int, j: int, lo: float, hi: float,
           keep_first: bool = False) -> None:
    """Words i..j-1 take the span lo..hi in turn, each as long as its characters make it."""
    total = sum(weights[i:j])
    t = lo
    for k in range(i, j):
        if not (keep_first and k == i):
            starts[k] = t
        t += (hi - lo) * weights[k] / total if total else 0.0


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0


def estimate(text: str, duration: float) -> list[Word]:
    """Words spread over the line's duration by character count: for audio that came with no timing."""
    return place(text, [], duration)


def from_characters(text: str, chars: Sequence[str], starts: Sequence[float], ends: Sequence[float],
                    duration: float) -> list[Word] | None:
    """The words of ``text`` from per-character times of the text as the provider spoke it (which may differ:
    a normalised "seventy-seven" for "77"). Characters are matched to the text; a stretch that differs gives
    its time to the text it replaces. None when the arrays are not three of one length."""
    if not (isinstance(chars, list) and isinstance(starts, list) and isinstance(ends, list)
            and len(chars) == len(starts) == len(ends) and chars):
        return None
    if not all(isinstance(c, str) for c in chars) or not all(map(_finite, starts)) or not all(map(_finite, ends)):
        return None
    from difflib import SequenceMatcher

    timed: list[tuple[float, float] | None] = [None] * len(text)
    spoken = [c.lower() for c in chars]
    written = [c.lower() for c in text]  # one item per character: "İ".lower() is two
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, written, spoken, autojunk=False).get_opcodes():
        if tag == "equal":
            for k in range(i2 - i1):
                timed[i1 + k] = (float(starts[j1 + k]), float(ends[j1 + k]))
        elif tag == "replace":
            lo, hi = float(starts[j1]), float(ends[j2 - 1])
            step = (hi - lo) / (i2 - i1)
            for k in range(i2 - i1):
                timed[i1 + k] = (lo + step * k, lo + step * (k + 1))
    known: list[tuple[float | None, float | None]] = []
    for a, b in spans(text):
        times = [t for t in timed[a:b] if t is not None]
        known.append((min(t[0] for t in times), max(t[1] for t in times)) if times else (None, None))
    return place(text, known, duration)


def to_meta(words: Sequence[Word]) -> list[dict]:
    return [w.as_meta() for w in words]


def from_meta(meta: dict, text: str, duration: float) -> list[Word] | None:
    """The words an entry's metadata holds for ``text``, or None when it holds none that fit: metadata
    comes from anyone who can upload, so every word is checked against the text and the clock."""
    raw = meta.get("words")
    if not isinstance(raw, list) or not raw or len(raw) > MAX_WORDS:
        return None
    out: list[Word] = []
    offset, latest = 0, 0.0
    for item in raw:
        if not isinstance(item, dict):
            return None
        word, start, end, at = item.get("text"), item.get("start"), item.get("end"), item.get("offset")
        if not (isinstance(word, str) and word and _finite(start) and _finite(end)
                and isinstance(at, int) and not isinstance(at, bool)):
            return None
        if at < offset or text[at:at + len(word)] != word or start < latest or end < start:  # type: ignore[operator]
            return None
        start, end = min(float(start), duration), min(float(end), duration)  # type: ignore[arg-type]
        out.append(Word(word, start, end, at))
        offset, latest = at + len(word), start
    return out
