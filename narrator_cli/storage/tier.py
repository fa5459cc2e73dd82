"""The server's bucket tier: a miss reads through to the bucket, an upload follows to it through a bounded queue.

The local folder stays the primary copy. Nothing here runs on the event loop: ``fetch`` is called in a worker
thread, uploads go out on one thread of their own. While the bucket is unreachable or throttling, the queue
keeps its keys and retries with backoff (one log line when the outage starts, one when it ends); a key that
finds the queue full is logged and counted, and stays in the folder only.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from ..audio import SUFFIX_MIME
from ..store import Entry, Store
from .bucket import Bucket, Corrupt, StorageError, Unavailable

QUEUE_SIZE = 10_000
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
RETRY_READS = 5.0  # during an outage, a check tries the bucket at most this often: clients never wait on it
Log = Callable[..., None]  # server.Log: (event, message, **fields)


class Landing(NamedTuple):
    """An entry read from the bucket on its way into the folder: ``entry`` is what the folder will hold."""

    entry: Entry
    audio: bytes


class Tier:
    def __init__(self, bucket: Bucket, store: Store, log: Log, queue_size: int = QUEUE_SIZE) -> None:
        self.bucket, self.store, self.log = bucket, store, log
        self.queue: queue.Queue[str | None] = queue.Queue(queue_size)
        self.counts = {"readThrough": 0, "uploaded": 0, "queued": 0, "overflowed": 0, "corrupt": 0, "failed": 0}
        self.down = False
        self._next_read = 0.0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="narrator-bucket-uploads", daemon=True)
        self._thread.start()

    # --- read-through ----------------------------------------------------------
    def download(self, key: str) -> Landing | None:
        """The bucket's entry for ``key``, verified, with the record the folder will hold (``keep`` puts it
        there); None for a miss, a corrupted object (logged) or a bucket that cannot be reached now (the outage
        logged once). Blocking."""
        if self.down and time.monotonic() < self._next_read:
            return None
        try:
            found = self.bucket.get(key)
        except Corrupt as exc:
            self._count("corrupt")
            self.log("error", str(exc), cacheKey=key)
            return None
        except StorageError as exc:
            self._outage(exc)
            return None
        self._back()
        if found is None:
            return None
        meta, audio = found
        mime = SUFFIX_MIME["." + meta["fileName"].rpartition(".")[2]]  # the bucket checked the name's type
        duration = meta.get("duration")
        duration = float(duration) if isinstance(duration, (int, float)) and duration >= 0 else 0.0
        record = self.store.record(key, mime, duration, len(audio), meta["sha256"], meta)
        return Landing(Entry(key, record, self.store.audio_path(key, mime)), audio)

    def keep(self, landing: Landing) -> Entry:
        """Commit a downloaded entry to the folder, exactly as ``download`` said it would be. Blocking."""
        meta = landing.entry.meta
        entry = self.store.put(landing.entry.key, landing.audio, meta["mimeType"], landing.entry.duration, meta,
                               meta["createdAt"])
        self._count("readThrough")
        return entry

    # --- uploads -----------------------------------------------------------------
    def enqueue(self, key: str) -> None:
        """Send the local entry for ``key`` to the bucket soon; never blocks."""
        try:
            self.queue.put_nowait(key)
            self._count("queued")
        except queue.Full:
            self._count("overflowed")
            self.log("error", f"bucket upload queue full ({self.queue.maxsize}): {key} stays in the folder only",
                     cacheKey=key)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"url": self.bucket.url, "reachable": not self.down, "pending": self.queue.qsize(),
                    **self.counts}

    def close(self, grace: float = 5.0) -> None:
        """Stop the upload thread once the keys queued so far are tried (at most ``grace`` seconds)."""
        try:
            self.queue.put(None, timeout=grace)
        except queue.Full:
            return
        self._thread.join(grace)

    def _run(self) -> None:
        while True:
            key = self.queue.get()
            if key is None:
                return
            delay = BACKOFF_FIRST
            while not self._upload(key):
                time.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    def _upload(self, key: str) -> bool:
        """True when done with ``key`` (sent, already there, or gone locally); False to retry later."""
        try:
            entry = self.store.get(key)
            audio = self.store.read_audio(entry) if entry is not None else None
            if entry is None or audio is None:
                return True  # evicted or broken meanwhile: nothing whole to send
            self.bucket.put(entry.meta, audio)
        except Unavailable as exc:
            self._outage(exc)
            return False
        except Exception as exc:  # noqa: BLE001 - one entry failing never stops the queue
            self._count("failed")
            self.log("error", f"bucket upload {key}: {exc}", cacheKey=key)
            return True
        self._back()
        self._count("uploaded")
        return True

    # --- outages -------------------------------------------------------------------
    def _outage(self, exc: Exception) -> None:
        with self._lock:
            first, self.down = not self.down, True
            self._next_read = time.monotonic() + RETRY_READS
        if first:
            self.log("error", f"bucket unavailable, serving from the folder and retrying: {exc}")

    def _back(self) -> None:
        with self._lock:
            was, self.down = self.down, False
        if was:
            self.log("storage", f"bucket {self.bucket.url} reachable again")

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1
