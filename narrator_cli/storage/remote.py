"""A bucket as the team cache of the command line, the way sccache uses one: ``--server s3://BUCKET/PREFIX``.

``BucketClient`` answers the calls ``speak``, ``check``, ``upload``, ``sync`` and ``stats`` make on a server's
``Client`` (connect, check, download, upload, index, endpoint, close), so those commands need no second code path.
Its errors are the client's: an unreachable or throttling bucket is ``ServerUnavailable`` (``speak`` goes on
without it), a refused object ``ServerRefused``; wrong credentials stay ``Denied`` (configuration: exit 2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Self, TypeVar

from ..client import ServerRefused, ServerUnavailable
from ..errors import UsageError
from ..store import Entry, Store, check_key
from .bucket import HEAD_WORKERS, Bucket, Corrupt, Denied, StorageError, Unavailable

T = TypeVar("T")


@contextmanager
def _as_client_errors() -> Iterator[None]:
    """The bucket's kinds of failure as the server client's, so callers handle one family."""
    try:
        yield
    except Denied:
        raise
    except Unavailable as exc:
        raise ServerUnavailable(str(exc)) from None
    except StorageError as exc:
        raise ServerRefused(str(exc)) from None


class BucketClient:
    """The bucket behind ``url`` with the server client's interface; thread-safe like the bucket itself."""

    narrator_serve = True  # entries of every type are found again (the plugin's MP3-only check is not in play)
    poll_every = 10.0  # sync --watch: each poll lists the whole bucket (a LIST request per 1000 entries, billed)

    def __init__(self, url: str, token: str | None = None, ca_file: str | None = None,
                 insecure: bool | None = None) -> None:
        from .bucket import parse_url

        parse_url(url)  # a bad URL is a UsageError before anything is loaded
        self.url, self.token, self.ca_file, self.insecure = url, token, ca_file, bool(insecure)
        self._bucket: Bucket | None = None

    @property
    def bucket(self) -> Bucket:
        if self._bucket is None:
            self._bucket = Bucket.from_url(self.url, ca_file=self.ca_file, insecure=self.insecure)
        return self._bucket

    def connect(self) -> Self:
        """One probe: wrong credentials or a missing bucket raise ``Denied``, an unreachable one
        ``ServerUnavailable``."""
        with _as_client_errors():
            self.bucket.probe()
        return self

    def close(self) -> None:
        """Nothing held open between requests (boto3 pools its own connections)."""

    def __enter__(self) -> Self:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the client's calls ---------------------------------------------------------------------------------
    def check(self, keys: list[str], use: bool = False) -> dict[str, dict | None]:
        """key -> an audio-exists reply built from the bucket's metadata object, or None; a few GETs at once.
        Metadata that is not valid is a miss here (a download could only refuse it)."""
        for key in keys:
            check_key(key)

        def one(key: str) -> dict | None:
            try:
                meta = self.bucket.meta(key)
            except Corrupt:
                return None
            if meta is None:
                return None
            return {"cacheKey": key, "metadata": meta, "duration": meta.get("duration"),
                    "filePath": self._where(meta["fileName"])}

        return dict(zip(keys, self._parallel(one, keys)))

    def download(self, store: Store, found: dict) -> Entry:
        """The audio a ``check`` reply names, verified against its metadata's size and sha256, stored atomically."""
        key, meta = found.get("cacheKey"), found.get("metadata")
        if not isinstance(key, str) or not isinstance(meta, dict):
            raise ServerRefused("a bucket reply without cacheKey or metadata; not stored")
        with _as_client_errors():
            if found.get("partial"):
                meta = self.bucket.meta(key)
                if meta is None:
                    raise ServerRefused(f"{key} is gone from {self.url}; not stored")
            audio = self.bucket.read_audio(meta)
        if audio is None:
            raise ServerRefused(f"{key}'s audio is gone from {self.url}; not stored")
        return store.put(key, audio, str(meta.get("mimeType") or "audio/mpeg"), float(meta.get("duration") or 0.0),
                         meta)

    def upload(self, entry: Entry, audio: bytes) -> dict:
        """Create the entry in the bucket (never over another writer's: theirs stands, which is no failure)."""
        with _as_client_errors():
            self.bucket.put(entry.meta, audio)
        return {"cacheKey": entry.key, "filePath": self._where(str(entry.meta.get("fileName"))), "size": len(audio)}

    def index(self, after: str | None = None, etag: str | None = None, compact: bool = False) -> dict:
        """The whole bucket as a full compact index (a listing has no cursor): entries carry ``fileName`` and
        ``fileSize`` only and are ``partial``, so ``sync`` GETs the metadata of what it pulls."""
        with _as_client_errors():
            listing = self.bucket.listing()
        entries = [{"cacheKey": key, "partial": True,
                    "metadata": {k: row[k] for k in ("fileName", "fileSize") if k in row}}
                   for key, row in sorted(listing.items()) if "fileName" in row]
        return {"entries": entries, "removed": [], "full": True, "cursor": None, "etag": None}

    def endpoint(self, name: str) -> dict:
        """``health``: what a listing tells (entries and bytes); the bucket keeps no counters."""
        if name != "health":
            raise UsageError(f"a bucket has no {name}: {self.url} is cleaned up by its own lifecycle rules")
        with _as_client_errors():
            listing = self.bucket.listing()
        return {"url": self.url, "bucket": True, "entries": len(listing),
                "bytes": sum(row["bytes"] for row in listing.values()),
                "incomplete": sum(1 for row in listing.values() if "fileName" not in row)}

    # --- helpers ----------------------------------------------------------------------------------------------
    def _where(self, file_name: str) -> str:
        return f"{self.bucket.url}/{file_name}"

    def _parallel(self, fn: Callable[[str], T], keys: list[str]) -> list[T]:
        with _as_client_errors():
            if len(keys) <= 1:
                return [fn(k) for k in keys]
            with ThreadPoolExecutor(min(HEAD_WORKERS, len(keys))) as pool:
                return list(pool.map(fn, keys))

