"""A line's words grouped into caption cues by the reading rules.

Cue boundaries come first from the speech (a sentence end, a pause) and then from what a reader can take in
(``max_lines`` lines of ``max_chars`` characters, ``max_seconds`` on screen). Within those, a sentence that
needs several cues gets the fewest cues, as even in length as the words allow, and a cue that needs several
lines gets the fewest lines, as even as the words allow (a shorter top line on a tie): balanced cues and lines
read better than full ones followed by an orphan word. A word is never split; a word longer than a line gets
a line of its own. Cue times are rounded to the millisecond here, once, so every format writes the same ones.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable
from itertools import accumulate
from typing import NamedTuple

from ..errors import UsageError
from .words import Word

_SENTENCE_ENDS = frozenset(".!?…。！？")
_QUOTES = frozenset("\"'")
# Japanese line-breaking rules (kinsoku): small kana, the long-vowel mark and iteration marks never begin a line
_NO_LINE_START = frozenset("ぁぃぅぇぉっゃゅょゎゕゖァィゥェォッャュョヮヵヶㇰㇱㇲㇳㇴㇵㇶㇷㇸㇹㇺㇻㇼㇽㇾㇿーヽヾゝゞ々ｧｨｩｪｫｬｭｮｯｰ")


class Rules(NamedTuple):
    """The reading rules; the defaults are common broadcast practice."""

    max_chars: int = 42  # per caption line, as a reader counts them (graphemes)
    max_lines: int = 2
    max_seconds: float = 4.0  # from a cue's first word's start to its last word's end
    pause: float = 0.8  # a longer silence between two words starts a new cue

    def check(self) -> Rules:
        """These rules, or a UsageError naming the first one that cannot be followed."""
        for name in ("max_chars", "max_lines"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UsageError(f"caption rule {name} must be a whole number of at least 1, not {value!r}")
        for name, least in (("max_seconds", "above 0"), ("pause", "0 or more")):
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not number or value < 0 or (value == 0 and name == "max_seconds"):
                raise UsageError(f"caption rule {name} must be a number of seconds {least}, not {value!r}")
        return self


class Cue(NamedTuple):
    start: float  # seconds, absolute (the line's offset added), whole milliseconds
    end: float  # always at least a millisecond after start
    lines: tuple[str, ...]  # the caption's text lines


class TimedLine(NamedTuple):
    """One line of a script, placed on the script's timeline."""

    text: str
    key: str  # the line's cache key
    start: float  # seconds from the start of the script
    duration: float
    words: list[Word]  # times absolute (start added)
    estimated: bool  # the word times are estimated (no provider timings)


class _Unit(NamedTuple):
    """Words that must stay together (a grapheme that ``spans`` cut in two, a small kana and the kana before
    it), as one."""

    first: int  # offset of its first character in the text
    stop: int  # offset after its last character
    start: float
    end: float
    size: int  # graphemes, as words.reader_len counts
    space_before: int  # 1 when whitespace separates it from the unit before, else 0 (CJK)


DEFAULT_RULES = Rules()


def cues(text: str, words: list[Word], rules: Rules = DEFAULT_RULES, offset: float = 0.0) -> list[Cue]:
    """One line of narration's cues; ``words`` as from words.py (offsets into ``text``), ``offset`` added to
    every time."""
    rules.check()
    units = _units(text, words)
    out: list[Cue] = []
    begin = 0
    for k in range(len(units)):
        if k + 1 == len(units) or _hard_break(text, units[k], units[k + 1], rules):
            for a, b in _split_cues(units, begin, k + 1, rules):
                out.append(_cue(text, units[a:b], rules, offset))
            begin = k + 1
    return out


def _units(text: str, words: list[Word]) -> list[_Unit]:
    """The words, with any that begin inside a grapheme (a combining mark or variation selector that
    followed a CJK character) or with a character that may not begin a line joined to the word before."""
    counts = _graphemes_before(text)
    out: list[_Unit] = []
    for w in sorted(words, key=lambda w: w.offset):
        first, stop = w.offset, w.offset + len(w.text)
        if counts is None:
            size, glued = stop - first, False
        else:
            size = counts[stop] - counts[first]
            glued = counts[first + 1] == counts[first] or w.text[0] in _NO_LINE_START
        if out and out[-1].stop == first and glued:
            u = out[-1]
            out[-1] = u._replace(stop=stop, end=max(u.end, w.end), size=u.size + size)
        else:
            out.append(_Unit(first, stop, w.start, w.end, size, 0 if not out or out[-1].stop == first else 1))
    return out


def _graphemes_before(text: str) -> list[int] | None:
    """For each offset in ``text`` (and its end), how many graphemes start before it: a span's length as a
    reader counts it (None for ASCII, where that is its length)."""
    if text.isascii():
        return None
    import regex

    starts = bytearray(len(text) + 1)
    for m in regex.finditer(r"\X", text):
        starts[m.start()] = 1
    counts, n = [], 0
    for flag in starts:
        counts.append(n)
        n += flag
    return counts


def _hard_break(text: str, unit: _Unit, after: _Unit, rules: Rules) -> bool:
    """A new cue must start between these two: a pause, or a sentence end (unless what follows begins in
    lower case, as after "e.g." or "Wait... what")."""
    if after.start - unit.end > rules.pause:
        return True
    if not _ends_sentence(text[unit.first:unit.stop]):
        return False
    letter = next((c for c in text[after.first:after.stop] if c.isalpha()), "")
    return not letter.islower()


def _ends_sentence(word: str) -> bool:
    """The word ends in . ! ? … 。 ！ ？, maybe followed by closing quotes and brackets."""
    core = word.rstrip()
    if not core or core[-1] in _SENTENCE_ENDS or core[-1].isalnum():
        return bool(core) and core[-1] in _SENTENCE_ENDS
    while core and (core[-1] in _QUOTES or unicodedata.category(core[-1]) in ("Pe", "Pf")):
        core = core[:-1]
    return bool(core) and core[-1] in _SENTENCE_ENDS


def _line_count(units: list[_Unit], a: int, b: int, max_chars: int) -> int:
    """Lines that units a..b-1 need, filled greedily (the fewest possible)."""
    lines, width = 0, 0
    for k in range(a, b):
        u = units[k]
        if lines and width + u.space_before + u.size <= max_chars:
            width += u.space_before + u.size
        else:
            lines, width = lines + 1, u.size
    return lines


def _split_cues(units: list[_Unit], a: int, b: int, rules: Rules) -> list[tuple[int, int]]:
    """Units a..b-1 (no hard break inside) as (start, stop) cues: the fewest that keep the rules, then the
    most even in length (least sum of squared lengths). A unit that breaks a rule on its own is a cue."""
    max_chars, max_lines, max_seconds = rules.max_chars, rules.max_lines, rules.max_seconds
    if (_line_count(units, a, b, max_chars) <= max_lines
            and max(u.end for u in units[a:b]) - units[a].start <= max_seconds):
        return [(a, b)]
    sizes = [u.size for u in units[a:b]]
    spaces = [u.space_before for u in units[a:b]]
    ends = list(accumulate((u.end for u in units[a:b]), max))  # ends[j]: the latest end of units 0..j
    n = b - a
    total = sum(sizes) + sum(spaces)
    per_cue = total * total + 1  # more than any sum of squared lengths: one cue fewer always wins
    best = [0] + [per_cue * (n + 1)] * n  # best[j]: least cost of units 0..j-1
    back = [0] * (n + 1)
    for i in range(n):
        base = best[i] + per_cue
        first_start = units[a + i].start
        lines, width, size = 1, sizes[i], sizes[i]
        for j in range(i, n):
            if j > i:
                step = spaces[j] + sizes[j]
                size += step
                if width + step <= max_chars:
                    width += step
                else:
                    lines, width = lines + 1, sizes[j]
                if lines > max_lines or ends[j] - first_start > max_seconds:
                    break
            cost = base + size * size
            if cost < best[j + 1]:
                best[j + 1], back[j + 1] = cost, i
    out = []
    j = n
    while j > 0:
        out.append((a + back[j], a + j))
        j = back[j]
    return out[::-1]


def _break_lines(units: list[_Unit], max_chars: int) -> list[tuple[int, int]]:
    """The cue's units as (start, stop) lines: the fewest lines, then the most even (least sum of squared
    lengths; on a tie the shorter top line). A unit longer than a line is a line of its own."""
    n = len(units)
    count = _line_count(units, 0, n, max_chars)
    if count == 1:
        return [(0, n)]
    edge = [0]  # edge[k]: width of units 0..k-1 as one line (with the spaces between them)
    for k, u in enumerate(units):
        edge.append(edge[-1] + (u.space_before if k else 0) + u.size)

    def width(j: int, k: int) -> int:  # units j..k-1 as one line
        return edge[k] - edge[j] - (units[j].space_before if j else 0)

    if count == 2:
        return _two_lines(units, max_chars, width)
    inf = math.inf
    # best[lines][j]: least cost of units j..n-1 in that many lines; nxt: where the first of them ends
    best = [[inf] * (n + 1) for _ in range(count + 1)]
    nxt = [[n] * (n + 1) for _ in range(count + 1)]
    best[0][n] = 0
    for lines in range(1, count + 1):
        for j in range(n - 1, -1, -1):
            for k in range(j + 1, n + 1):
                w = width(j, k)
                if k > j + 1 and w > max_chars:
                    break
                cost = w * w + best[lines - 1][k]
                if cost < best[lines][j]:  # <: on a tie the earlier break, the shorter top line, wins
                    best[lines][j], nxt[lines][j] = cost, k
    out, j = [], 0
    for lines in range(count, 0, -1):
        out.append((j, nxt[lines][j]))
        j = nxt[lines][j]
    return out


def _two_lines(units: list[_Unit], max_chars: int, width: Callable[[int, int], int]) -> list[tuple[int, int]]:
    """``_break_lines`` for two lines, in one pass over the possible breaks."""
    n = len(units)
    best, at = math.inf, 1
    for k in range(1, n):
        top, bottom = width(0, k), width(k, n)
        if top > max_chars and k > 1:
            break
        if bottom <= max_chars or k == n - 1:
            cost = top * top + bottom * bottom
            if cost < best:
                best, at = cost, k
    return [(0, at), (at, n)]


def _cue(text: str, units: list[_Unit], rules: Rules, offset: float) -> Cue:
    lines = tuple(" ".join(text[units[a].first:units[b - 1].stop].split())
                  for a, b in _break_lines(units, rules.max_chars))
    start = ms(units[0].start + offset)
    end = max(ms(max(u.end for u in units) + offset), start + 1)
    return Cue(start / 1000, end / 1000, lines)


def ms(seconds: float) -> int:
    """Seconds as whole milliseconds: the one rounding every caption time goes through."""
    return max(0, round(seconds * 1000))
