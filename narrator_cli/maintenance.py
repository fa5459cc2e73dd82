"""What is in the cache, and taking things out of it: ``stats`` and ``cleanup``.

Shared by the command line and the server's cleanup and health endpoints.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from .errors import UsageError
from .store import Entry, Scan, Store

_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_age(text: str) -> float:
    """``30d`` -> seconds; units s, m, h, d, w."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not m:
        raise UsageError(f"invalid age {text!r}: use a number and a unit s, m, h, d or w (e.g. 30d)")
    return float(m.group(1)) * _AGE_UNITS[m.group(2)]


def parse_size(text: str) -> int:
    """``500MB`` -> bytes; B, KB, MB, GB (powers of 1000) and KiB, MiB, GiB."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text or "")
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _SIZE_UNITS:
        raise UsageError(f"invalid size {text!r}: use a number and a unit B, KB, MB, GB, KiB, MiB or GiB (e.g. 500MB)")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def stats(store: Store) -> dict:
    scan = store.scan()
    groups: dict[tuple[str, str], Counter] = defaultdict(Counter)
    total = Counter()
    for e in scan.entries:
        row = groups[(str(e.meta.get("voiceId", "?")), str(e.meta.get("modelId", "?")))]
        for c in (row, total):
            c["entries"] += 1
            c["bytes"] += e.size
            c["duration"] += e.duration
            c["characters"] += _int(e.meta.get("characterCost"))
    created = sorted(str(e.meta.get("createdAt", "")) for e in scan.entries if e.meta.get("createdAt"))
    return {
        "path": str(store.root),
        "entries": total["entries"],
        "bytes": total["bytes"],
        "duration": round(total["duration"], 3),
        "charactersBilled": total["characters"],
        "oldest": created[0] if created else None,
        "newest": created[-1] if created else None,
        "broken": len(scan.broken),
        "temporary": len(scan.temporary),
        "byVoice": [
            {"voiceId": v, "modelId": m, "entries": c["entries"], "bytes": c["bytes"],
             "duration": round(c["duration"], 3), "charactersBilled": c["characters"]}
            for (v, m), c in sorted(groups.items(), key=lambda kv: -kv[1]["bytes"])
        ],
    }


@dataclass
class Cleanup:
    expired: list[Entry] = field(default_factory=list)
    evicted: list[Entry] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    temporary: list[str] = field(default_factory=list)
    freed: int = 0
    remaining_entries: int = 0
    remaining_bytes: int = 0

    def as_dict(self, dry_run: bool = False) -> dict:
        return {
            "dryRun": dry_run,
            "expired": [e.key for e in self.expired],
            "evicted": [e.key for e in self.evicted],
            "broken": self.broken,
            "temporary": self.temporary,
            "freedBytes": self.freed,
            "remainingEntries": self.remaining_entries,
            "remainingBytes": self.remaining_bytes,
        }


def cleanup(store: Store, older_than: float | None = None, max_size: int | None = None,
            dry_run: bool = False, now: float | None = None) -> Cleanup:
    """Remove broken parts, entries unused for ``older_than`` seconds, then LRU until ``max_size``.

    An entry's age is the time since its last use (creation or cache hit).
    """
    now = time.time() if now is None else now
    with store.locked():  # no writer commits between the scan and the removals
        return _cleanup(store, store.scan(), older_than, max_size, dry_run, now)


def _cleanup(store: Store, scan: Scan, older_than: float | None, max_size: int | None,
             dry_run: bool, now: float) -> Cleanup:
    result = Cleanup(broken=[p.name for p in scan.broken], temporary=[p.name for p in scan.temporary])
    keep = sorted(scan.entries, key=lambda e: e.mtime)  # least recently used first
    if older_than is not None:
        result.expired = [e for e in keep if now - e.mtime > older_than]
        keep = [e for e in keep if now - e.mtime <= older_than]
    size = sum(e.size for e in keep)
    if max_size is not None:
        while keep and size > max_size:
            victim = keep.pop(0)
            result.evicted.append(victim)
            size -= victim.size
    doomed = [*scan.broken, *scan.temporary]
    for e in (*result.expired, *result.evicted):
        doomed += [store.meta_path(e.key), e.path]
    if dry_run:
        result.freed = sum(_size(p) for p in doomed)
    else:
        result.freed = store.remove(doomed)
    result.remaining_entries, result.remaining_bytes = len(keep), size
    return result


def _size(path) -> int:  # type: ignore[no-untyped-def]
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
