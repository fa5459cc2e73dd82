"""``narrator voices`` and ``narrator quota``: what a provider offers, and what is left to spend."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from ..errors import NarratorError, UsageError
from .output import JsonOpt, ProviderOpt, emit_json, fail, plural, settings_for

SearchOpt = Annotated[str | None, typer.Option(help="Only voices matching every word (name, id, labels, "
                                               "languages; any case).", show_default=False)]
OFFLINE = ("espeak", "mock")  # providers with nothing to pay, hence no quota


def voices(provider: ProviderOpt = None, search: SearchOpt = None, as_json: JsonOpt = False) -> None:
    """The voices a provider offers: name, voice id (what --voice takes), category, languages, labels.

    ElevenLabs: the account's voices (a name works as --voice too: --voice Rachel); espeak: the installed ones.

    Example: narrator voices --provider elevenlabs --search "british narration"
    """
    from ..costs.voices import matching, voices_of

    try:
        settings = settings_for(provider=provider)
        name = settings.provider
        found = voices_of(settings, name)
    except NarratorError as exc:
        raise fail(exc) from None
    shown = matching(found, search) if search else found
    if as_json:
        for voice in shown:
            emit_json({"provider": name, **voice})
    else:
        _table(shown)
    if search and not shown:
        print(f"narrator: no {name} voice matches {search!r} ({plural(len(found), 'voice')} in all)", file=sys.stderr)


def _table(rows: list[dict]) -> None:
    """Aligned columns, those empty for every voice left out (espeak has no preview)."""
    cells = [[v["name"], v["voiceId"], v.get("category") or "", ", ".join(v.get("languages") or []),
              ", ".join((v.get("labels") or {}).values()), v.get("previewUrl") or ""] for v in rows]
    titles = ["NAME", "VOICE ID", "CATEGORY", "LANGUAGES", "LABELS", "PREVIEW"]
    keep = [i for i in range(len(titles)) if i < 2 or any(row[i] for row in cells)]
    table = [[titles[i] for i in keep]] + [[row[i] for i in keep] for row in cells]
    widths = [max(len(row[i]) for row in table) for i in range(len(keep))]
    for row in table if rows else []:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def quota(provider: ProviderOpt = None, as_json: JsonOpt = False) -> None:
    """What the ElevenLabs quota allows this period, what is used and left, and when it resets.

    The offline voices (espeak, mock) have nothing to pay: said in one line, exit 0.

    Example: narrator quota --json
    """
    from ..costs.voices import subscription

    try:
        settings = settings_for(provider=provider)
        name = settings.provider
        if name in OFFLINE:
            if as_json:
                emit_json({"provider": name, "metered": False})
            else:
                print(f"{name} is offline and free: no quota (narrator quota --provider elevenlabs for the "
                      "ElevenLabs account)")
            return
        if name != "elevenlabs":
            raise UsageError(f"narrator quota reads the ElevenLabs account only, not {name}'s "
                             "(narrator quota --provider elevenlabs)")
        sub = subscription(settings)
    except NarratorError as exc:
        raise fail(exc) from None
    if as_json:
        emit_json({"provider": name, "metered": True, **sub.as_dict()})
        return
    share = f" ({100 * sub.used / sub.limit:.1f}%)" if sub.limit else ""
    print(f"tier    {sub.tier}")
    print(f"used    {sub.used:,} of {sub.limit:,} characters{share}")
    print(f"left    {plural(sub.left, 'character')}")
    print(f"resets  {_when(sub.resets_at)}")


def _when(unix: int | None) -> str:
    """A reset time a person reads: local date and time, and how far away it is."""
    if unix is None:
        return "unknown (ElevenLabs did not say)"
    from datetime import datetime

    try:
        at = datetime.fromtimestamp(unix).astimezone()
    except (OverflowError, OSError, ValueError):
        return f"at unix time {unix}"
    days = (unix - time.time()) / 86_400
    away = "today" if 0 <= days < 1 else f"in {plural(round(days), 'day')}" if days >= 1 else "already passed"
    return f"{at:%Y-%m-%d %H:%M %Z} ({away})"
