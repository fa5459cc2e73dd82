"""A script's lines on one timeline: each line starts after the lines before it plus a gap, and its words are
those its entry holds (or an estimate, marked as one)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..errors import UsageError
from .cues import Cue, Rules, TimedLine, cues
from .words import Word, estimate, from_meta

FORMATS = {"srt": "srt", "vtt": "vtt", "json": "json"}  # --format -> file extension
LIMITS = {  # setting -> (smallest, largest) a user may set
    "max_chars": (8, 1000),
    "max_lines": (1, 10),
    "max_seconds": (0.5, 60.0),
    "pause": (0.05, 60.0),
    "gap": (0.0, 3600.0),
}


def rules_and_gap(settings: Any, **given: float | None) -> tuple[Rules, float]:
    """Cue rules and the gap between lines: options given here, else ``[captions]`` in the settings, else
    the defaults; UsageError naming a value out of bounds."""
    values: dict[str, float | int] = {"gap": 0.0, **Rules()._asdict()}
    for name in values:
        value = given.get(name)
        if value is None:
            value = settings.get(f"captions.{name}")
        if value is None:
            continue
        lo, hi = LIMITS[name]
        whole = name in ("max_chars", "max_lines")
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and not whole)) \
                or not (math.isfinite(value) and lo <= value <= hi):
            kind = "a whole number" if whole else "a number"
            raise UsageError(f"captions {name.replace('_', '-')} must be {kind} from {lo:g} to {hi:g}, got {value!r}")
        values[name] = value
    gap = float(values.pop("gap"))
    return Rules(**values), gap  # type: ignore[arg-type]


def caption_format(value: str | None, settings: Any = None) -> str:
    """The format asked for (``--format``, else ``[captions] format``, else SRT); UsageError for others."""
    chosen = value or (settings.get("captions.format") if settings is not None else None) or "srt"
    if chosen not in FORMATS:
        raise UsageError(f"unknown caption format {chosen!r} (choose from {', '.join(FORMATS)})")
    return str(chosen)


def line_words(text: str, meta: dict, duration: float) -> tuple[list[Word], bool]:
    """The words of a line whose audio is the entry with ``meta``: the entry's own timings, or an estimate by
    character count (True: estimated) for audio that came without (recordings, the editor's uploads)."""
    words = from_meta(meta, text, duration)
    return (words, False) if words is not None else (estimate(text, duration), True)


def timeline(lines: Sequence[tuple[str, str, dict, float]], rules: Rules, gap: float
             ) -> tuple[list[TimedLine], list[Cue]]:
    """``lines``: (text, key, metadata, duration) in script order. Each line starts at the sum of the durations
    before it plus ``gap`` between consecutive lines (none before the first)."""
    timed: list[TimedLine] = []
    all_cues: list[Cue] = []
    start = 0.0
    for n, (text, key, meta, duration) in enumerate(lines):
        if n:
            start += gap
        words, estimated = line_words(text, meta, duration)
        all_cues.extend(cues(text, words, rules, start))
        shifted = [w._replace(start=w.start + start, end=w.end + start) for w in words]
        timed.append(TimedLine(text, key, start, duration, shifted, estimated))
        start += duration
    return timed, all_cues


def render(fmt: str, timed: list[TimedLine], all_cues: list[Cue]) -> str:
    from . import formats

    if fmt == "json":
        return formats.word_json(timed, all_cues)
    return formats.srt(all_cues) if fmt == "srt" else formats.vtt(all_cues)
