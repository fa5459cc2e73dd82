"""The page ``narrator serve`` answers at ``/``: hear, find and weigh the team cache in a browser.

The HTML, CSS and JavaScript ship in this package and are served as they are: no build step, nothing from
elsewhere. Everything an entry says comes from whoever uploaded it, so the page only ever sets it as text;
the Content-Security-Policy lets the page load its own script, style, audio and data and nothing else, so
even markup that got in could not run. The rows are one compact JSON body (an array per entry, the
per-entry part made once per version of its metadata), which the page filters and sorts itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from ..costs.ledger import count_or_none
from ..store import Entry

PREFIX = "/__narrator-page/"
ROWS_PATH = PREFIX + "rows"
ENTRY_PATH = PREFIX + "entry"
ASSETS = {"/": ("index.html", "text/html; charset=utf-8"),
          PREFIX + "page.js": ("page.js", "text/javascript; charset=utf-8"),
          PREFIX + "page.css": ("page.css", "text/css; charset=utf-8"),
          PREFIX + "icon.svg": ("icon.svg", "image/svg+xml"),
          "/favicon.ico": ("icon.svg", "image/svg+xml")}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; media-src 'self'; connect-src 'self'; "
       "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = [("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
           ("Cache-Control", "no-cache")]
FIELDS = ("cacheKey", "fileName", "text", "voiceId", "modelId", "provider", "duration", "fileSize",
          "characterCost", "createdAt", "lastUsed", "hits", "words")
_assets: dict[str, bytes] = {}
# key -> (metadata object, the row's JSON up to its changing fields, characters billed, words)
_fragments: dict[str, tuple[dict, str, int, int]] = {}


def asset(path: str) -> tuple[bytes, str] | None:
    """(body, content type) of the page's file at ``path``, or None."""
    found = ASSETS.get(path)
    if found is None:
        return None
    name, kind = found
    if name not in _assets:
        _assets[name] = resources.files(__name__).joinpath(name).read_bytes()
    return _assets[name], kind


def rows(entries: Mapping[str, Entry], last_use: Any, hits: Mapping[str, int], version: str,
         size: int) -> bytes:
    """``{"fields", "rows", "version", "totals"}``: one array per entry in ``FIELDS`` order, and the header's
    totals, counted in the same pass (``size``: the cache's bytes). Values are what the metadata holds when of
    the right type, else null: the page never has to guess."""
    if len(_fragments) > 4 * len(entries) + 1024:  # entries come and go: start again rather than grow forever
        _fragments.clear()
    parts = []
    duration = 0.0
    billed = saved = 0
    for key, entry in entries.items():
        cached = _fragments.get(key)
        if cached is None or cached[0] is not entry.meta:
            cached = _fragments[key] = _piece(entry)
        used = hits.get(key, 0)
        duration += entry.duration
        billed += cached[2]
        saved += cached[2] * used
        parts.append(f"{cached[1]},{round(last_use(entry))},{int(used)},{cached[3]}]")
    totals = {"entries": len(entries), "bytes": size, "duration": round(duration, 3), "charactersBilled": billed,
              "charactersSaved": saved}
    head = json.dumps({"fields": FIELDS, "version": version, "totals": totals})
    return f'{head[:-1]},"rows":[{",".join(parts)}]}}'.encode()


def warm(entries: Mapping[str, Entry]) -> None:
    """Make every entry's row piece ahead of the first page load (a server start does it in a thread)."""
    for key, entry in list(entries.items()):
        if key not in _fragments:
            _fragments[key] = _piece(entry)


def _piece(entry: Entry) -> tuple[dict, str, int, int]:
    """(metadata object, the row's JSON from its first field to ``createdAt`` without the closing bracket,
    characters billed, words timed): what ``rows`` keeps per version of an entry's metadata."""
    meta = entry.meta
    billed = count_or_none(meta.get("characterCost"))
    values = [entry.key, entry.path.name, _text(meta.get("text")), _text(meta.get("voiceId")),
              _text(meta.get("modelId")), _text(meta.get("provider")), entry.duration, entry.size,
              billed, _text(meta.get("createdAt"))]
    words = meta.get("words")
    return (meta, json.dumps(values, ensure_ascii=False, separators=(",", ":"))[:-1], billed or 0,
            len(words) if isinstance(words, list) else 0)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def entry_body(entry: Entry) -> bytes:
    """One entry's text and word timings, for the captions of the line being played."""
    meta = entry.meta
    return json.dumps({"cacheKey": entry.key, "text": _text(meta.get("text")), "duration": entry.duration,
                       "words": meta.get("words") if isinstance(meta.get("words"), list) else None},
                      ensure_ascii=False).encode()
