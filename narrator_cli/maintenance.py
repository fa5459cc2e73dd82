"""What is in the cache, and taking things out of it: ``stats`` and ``cleanup``.

Shared by the command line and the server's cleanup and health endpoints. Both
measure an entry the same way, as what it takes in the folder (audio and
metadata), so the size ``stats`` reports is what ``cleanup --max-size``
compares and what removing everything would free.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from .costs import ledger
from .errors import UsageError
from .store import Entry, Scan, Store

_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
MAX_AGE = 100 * 365 * 86400.0  # older than any file time a cache can hold: beyond it, a typo
MAX_SIZE = 10**15  # 1 PB: beyond any disk, so a typo (and far from a float's overflow)


as_count = ledger.as_count  # where callers have always found it


def parse_age(text: str) -> float:
    """``30d`` -> seconds; units s, m, h, d, w. The unit is required, so ``30`` cannot mean 30 seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text or "")
    if not m:
        raise UsageError(f"invalid age {_shown(text)}: use a number and a unit s, m, h, d or w (e.g. 30d)")
    if not m.group(2):
        raise UsageError(f"invalid age {_shown(text)}: give a unit s, m, h, d or w (e.g. 30d)")
    seconds = float(m.group(1)) * _AGE_UNITS[m.group(2)]
    if seconds > MAX_AGE:
        raise UsageError(f"invalid age {_shown(text)}: at most 100 years ({MAX_AGE / 86400:.0f}d)")
    return seconds


def parse_size(text: str) -> int:
    """``500MB`` -> bytes; B, KB, MB, GB (powers of 1000) and KiB, MiB, GiB.

    The unit is required: a bare ``500`` meant as megabytes would otherwise empty the cache.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text or "")
    unit = m.group(2).lower() if m else ""
    if m and not unit:
        raise UsageError(f"invalid size {_shown(text)}: give a unit B, KB, MB, GB, KiB, MiB or GiB "
                         "(e.g. 500MB; 0B for an empty cache)")
    if not m or unit not in _SIZE_UNITS:
        raise UsageError(f"invalid size {_shown(text)}: use a number and a unit B, KB, MB, GB, KiB, MiB or GiB "
                         "(e.g. 500MB)")
    size = float(m.group(1)) * _SIZE_UNITS[unit]  # inf for a number past float's range: refused below
    if size > MAX_SIZE:
        raise UsageError(f"invalid size {_shown(text)}: at most 1000000GB")
    return int(size)


def _shown(text: str) -> str:
    """The value as typed, quoted, cut short when it is long enough to swamp the error line."""
    return repr(text if len(text or "") <= 40 else f"{text[:24]}...{text[-8:]}")


def stats(store: Store) -> dict:
    """What the cache holds, what it was billed and what its hits saved; ``exists`` is False when there is no
    cache folder yet."""
    scan = store.scan()
    hits, _ = store.read_hits()
    total, groups = ledger.tally(scan.entries, hits)
    costs = ledger.summary(total, groups)
    created = sorted(str(e.meta.get("createdAt", "")) for e in scan.entries if e.meta.get("createdAt"))
    return {
        "path": str(store.root),
        "exists": not scan.missing,
        "entries": total["entries"],
        "bytes": total["bytes"],
        "duration": round(total["duration"], 3),
        "charactersBilled": costs["charactersBilled"],
        "hits": costs["hits"],
        "charactersSaved": costs["charactersSaved"],
        "oldest": created[0] if created else None,
        "newest": created[-1] if created else None,
        "broken": len(scan.broken),
        "temporary": len(scan.temporary),
        "brokenBytes": sum(_size(p) for p in (*scan.broken, *scan.temporary)),  # what cleanup frees besides entries
        "byVoice": costs["byVoice"],
    }


@dataclass
class Cleanup:
    """What a cleanup removed (or, dry, would remove): only what really went, and what could not."""

    expired: list[Entry] = field(default_factory=list)
    evicted: list[Entry] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    temporary: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of each part that stayed
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
            "failed": [{"path": path, "error": reason} for path, reason in self.failed],
            "freedBytes": self.freed,
            "remainingEntries": self.remaining_entries,
            "remainingBytes": self.remaining_bytes,
        }


def cleanup(store: Store, older_than: float | None = None, max_size: int | None = None,
            dry_run: bool = False, now: float | None = None) -> Cleanup:
    """Remove broken parts, entries unused for ``older_than`` seconds, then LRU until ``max_size``; then
    the hits log keeps only the lines of entries that remain, merged one per key.

    An entry's age is the time since its last use (creation or cache hit).
    """
    now = time.time() if now is None else now
    with store.locked():  # no writer commits between the scan and the removals
        return _cleanup(store, store.scan(), older_than, max_size, dry_run, now)


def _cleanup(store: Store, scan: Scan, older_than: float | None, max_size: int | None,
             dry_run: bool, now: float) -> Cleanup:
    result = Cleanup()
    keep = sorted(scan.entries, key=lambda e: e.mtime)  # least recently used first
    expired: list[Entry] = []
    if older_than is not None:
        expired = [e for e in keep if now - e.mtime > older_than]
        keep = [e for e in keep if now - e.mtime <= older_than]
    size = sum(e.disk_size for e in keep)
    evicted: list[Entry] = []
    if max_size is not None:
        while keep and size > max_size:
            victim = keep.pop(0)
            evicted.append(victim)
            size -= victim.disk_size

    def remove(parts: list[Path]) -> Path | None:
        """Remove (or, dry, measure) one entry's parts or one stray file; the part that stayed, if any."""
        if dry_run:
            result.freed += sum(_size(p) for p in parts)
            return None
        removed = store.remove(parts)
        result.freed += removed.freed
        if removed.failed is None:
            return None
        path, reason = removed.failed
        result.failed.append((str(path), reason))
        return path

    for victims, into in ((expired, result.expired), (evicted, result.evicted)):
        for e in victims:
            meta = store.meta_path(e.key)
            stayed = remove([meta, e.path])
            if stayed is None:
                into.append(e)
            elif stayed == meta:  # nothing of it went: still a whole entry
                keep.append(e)
                size += e.disk_size
    result.broken = [p.name for p in scan.broken if remove([p]) is None]
    result.temporary = [p.name for p in scan.temporary if remove([p]) is None]
    result.remaining_entries, result.remaining_bytes = len(keep), size
    if not dry_run:
        store.rewrite_hits({e.key for e in keep})  # the hits of entries gone go too: they can save nothing now
    return result


def _size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0
