"""What the cache saved: the characters each entry was billed, and the hits that did not pay for them again.

ElevenLabs reports what each request bills; the entry keeps it as ``characterCost``. Each time a line is served
from a cache instead of being generated, those characters are saved: a ``speak`` line found in the local folder
or downloaded from the team server (once per key and run), or a ``check-audio`` that ``narrator serve`` answers
with the audio. Entries without ``characterCost`` (free voices, recordings, the editor's uploads) bill and save
nothing known. Hits live in each cache folder's hits log (``Store.record_hits``), keyed by cache key, so they
count for the entry under that key; hits of a key no longer cached count nowhere (``cleanup`` drops them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from ..store import Entry, HitsMark, Store


def count_or_none(value: object) -> int | None:
    """A whole number from JSON someone else wrote (metadata, a server's reply, an API); None for anything else."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def as_count(value: object) -> int:
    """``count_or_none``, with 0 for anything that is not a whole number."""
    return count_or_none(value) or 0


def billed(meta: Mapping) -> int:
    """The characters the request that made this entry was billed; 0 when unknown."""
    return as_count(meta.get("characterCost"))


def voice_of(meta: Mapping) -> tuple[str, str]:
    return str(meta.get("voiceId", "?")), str(meta.get("modelId", "?"))


def tally(entries: Iterable[Entry], hits: Mapping[str, int]) -> tuple[Counter, dict[tuple[str, str], Counter]]:
    """Totals, and sums per (voice, model): entries, bytes, duration, characters (billed), hits, saved."""
    total: Counter = Counter()
    groups: dict[tuple[str, str], Counter] = {}
    for e in entries:
        row = groups.get(voice := voice_of(e.meta))
        if row is None:
            row = groups[voice] = Counter()
        cost, n = billed(e.meta), hits.get(e.key, 0)
        for c in (row, total):
            c["entries"] += 1
            c["bytes"] += e.disk_size
            c["duration"] += e.duration
            c["characters"] += cost
            c["hits"] += n
            c["saved"] += n * cost
    return total, groups


def rows(groups: dict[tuple[str, str], Counter]) -> list[dict]:
    """``byVoice``: one object per voice and model, the largest first."""
    return [
        {"voiceId": v, "modelId": m, "entries": c["entries"], "bytes": c["bytes"], "duration": round(c["duration"], 3),
         "charactersBilled": c["characters"], "hits": c["hits"], "charactersSaved": c["saved"]}
        for (v, m), c in sorted(groups.items(), key=lambda kv: -kv[1]["bytes"])
    ]


def report(entries: Iterable[Entry], hits: Mapping[str, int]) -> dict:
    """The cost fields of ``stats`` and of the server's health: totals and ``byVoice``."""
    return summary(*tally(entries, hits))


def summary(total: Counter, groups: dict[tuple[str, str], Counter]) -> dict:
    """``report`` from a ``tally`` already made."""
    return {"charactersBilled": total["characters"], "hits": total["hits"], "charactersSaved": total["saved"],
            "byVoice": rows(groups)}


class HitCounter:
    """The server's hits: counted in memory (a check must not wait on the disk), appended to the folder's
    hits log by ``flush``, and read back from it, the new lines only, when asked for the counts."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.pending: dict[str, int] = {}  # not in the log yet
        self._logged: dict[str, int] = {}
        self._mark: HitsMark | None = None

    def add(self, key: str) -> None:
        self.pending[key] = self.pending.get(key, 0) + 1

    def flush(self) -> None:
        """Append what memory holds; kept for the next flush if the log cannot be written."""
        if self.pending and self.store.record_hits(self.pending):
            self.pending = {}

    def counts(self) -> dict[str, int]:
        """key -> hits, the log's and memory's."""
        new, mark = self.store.read_hits(self._mark)
        if mark is None or mark.whole:
            self._logged = new
        else:
            for key, n in new.items():
                self._logged[key] = self._logged.get(key, 0) + n
        self._mark = mark
        out = dict(self._logged)
        for key, n in self.pending.items():
            out[key] = out.get(key, 0) + n
        return out
