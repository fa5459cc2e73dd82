"""``narrator sync``: the local folder and a team server hold the same entries.

The server's ``/__narrator-index`` says what it holds (with a cursor, so a watcher
learns only what changed); the folder is read from one listing, and a local
metadata file is read only for a key both sides hold (to compare content). What
moves goes the way ``speak`` moves it: ``Client.download`` (verified, atomic) and
``Client.upload`` (the server stores it whole or not at all). A key whose content
differs on the two sides is reported, never overwritten.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .client import Client, NoIndex, ServerRefused, ServerUnavailable
from .errors import Interrupted
from .store import META_SUFFIX, Store

PULLS_IN_FLIGHT = 8
PUSHES_IN_FLIGHT = 4
POLL_EVERY = 1.0  # seconds between index polls in --watch
MAX_BACKOFF = 30.0  # seconds between tries while the server is away
NO_PULL = "the server cannot list its entries (the Motion Canvas plugin cannot): pushing only; pulling needs " \
          "narrator serve"

Report = Callable[[dict], None]


def _local_meta(store: Store, key: str) -> dict | None:
    raw = store.meta_bytes(key)
    try:
        meta = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


_SHA_KEY = b'"sha256": "'


def _local_digest(store: Store, key: str, size: int) -> dict | None:
    """``{"sha256", "fileSize"}`` of a local entry without a JSON parse: ``Store.commit`` writes ``sha256``
    last, and an unescaped ``"sha256": "`` can only be a key. None when it is not there (parse it then).
    """
    raw = store.meta_bytes(key)
    if raw is None:
        return None
    at = raw.rfind(_SHA_KEY)
    digest = raw[at + len(_SHA_KEY):at + len(_SHA_KEY) + 64] if at >= 0 else b""
    if len(digest) != 64 or raw[at + len(_SHA_KEY) + 64:at + len(_SHA_KEY) + 65] != b'"' or not digest.isalnum():
        return None
    return {"sha256": digest.decode(), "fileSize": size}


def differs(local: dict, remote: dict) -> str | None:
    """Why two entries of one key hold different content (sha256 when both have it, else size), or None."""
    a, b = local.get("sha256"), remote.get("sha256")
    if isinstance(a, str) and isinstance(b, str):
        return None if a == b else "different content (sha256) here and on the server"
    if local.get("fileSize") != remote.get("fileSize"):
        return f"different sizes: {local.get('fileSize')} bytes here, {remote.get('fileSize')} on the server"
    return None


class Syncer:
    """One folder and one server. Knows what the server holds (``remote``: key -> its index entry) and
    the cursor it learned it at; each ``round`` moves what differs among the keys it is asked about."""

    def __init__(self, client: Client, store: Store, pull: bool = True, push: bool = True, dry_run: bool = False,
                 report: Report = lambda row: None, warn: Callable[[str], None] = lambda m: None) -> None:
        self.client, self.store = client, store
        self.pull, self.push, self.dry_run = pull, push, dry_run
        self.report, self.warn = report, warn
        self.remote: dict[str, dict] = {}
        self.listable: bool | None = None
        self.cursor: str | None = None
        self.etag: str | None = None
        self.connected = False
        self.counts = {"pulled": 0, "pushed": 0, "conflict": 0, "failed": 0, "equal": 0}
        self._conflicts: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # --- what the server holds ----------------------------------------------------------
    def refresh(self) -> set[str] | None:
        """Catch up with the server's index; the keys that changed (None: everything, a full listing)."""
        if self.listable is False:
            return set()
        try:
            body = self.client.index(self.cursor, self.etag, compact=True)
        except NoIndex:
            self.listable = False
            self.warn(NO_PULL)
            return None
        self.listable = True
        if body is None:
            return set()
        entries = {e["cacheKey"]: e for e in body["entries"]
                   if isinstance(e, dict) and isinstance(e.get("cacheKey"), str)}
        self.cursor, self.etag = body.get("cursor"), body.get("etag")
        if body.get("full"):
            self.remote = entries
            return None
        for key in body["removed"]:
            self.remote.pop(key, None)
        self.remote.update(entries)
        return set(entries)

    def _ws(self) -> Client:
        if not self.connected:
            self.client.connect()
            self.connected = True
        return self.client

    # --- one round ----------------------------------------------------------------------
    def round(self, remote_keys: set[str] | None = None, local_keys: set[str] | None = None) -> None:
        """Move what differs: ``remote_keys`` / ``local_keys`` limit it to those (None: all)."""
        local = self.store.listing()
        pulls, pushes = [], []
        if self.pull and self.listable:
            for key in self.remote if remote_keys is None else remote_keys & self.remote.keys():
                found = self.remote[key]
                if key not in local:
                    pulls.append(found)
                else:
                    self._compare(key, local[key], found)
        if self.push:
            candidates = local.keys() if local_keys is None else local_keys & local.keys()
            if self.listable:
                pushes = sorted(k for k in candidates if k not in self.remote)
                if not self.pull:
                    for key in candidates & self.remote.keys():
                        self._compare(key, local[key], self.remote[key])
            elif candidates:
                found = self._ws().check(sorted(candidates))
                for key, reply in found.items():
                    if reply is None:
                        pushes.append(key)
                    elif isinstance(reply.get("metadata"), dict):
                        self._compare(key, local[key], reply)
        if pulls and not self.dry_run:
            pulls = self._complete(pulls)
        with self.store.batch():
            self._run(self._pull_one, pulls, PULLS_IN_FLIGHT)
        if pushes and not self.dry_run:
            self._ws()  # one connection for every upload, opened before the threads share it
        self._run(self._push_one, pushes, PUSHES_IN_FLIGHT)

    def _complete(self, pulls: list[dict]) -> list[dict]:
        """The entries to pull with their whole metadata: the compact index has only what a comparison
        needs, so the keys to download are checked on the WebSocket, all at once (gone since: not pulled)."""
        partial = [e["cacheKey"] for e in pulls if e.get("partial")]
        if not partial:
            return pulls
        found = self._ws().check(partial)
        for key, reply in found.items():
            if reply is None or not isinstance(reply.get("metadata"), dict):
                self.remote.pop(key, None)
            else:
                self.remote[key] = reply
        return [self.remote[k] for e in pulls if (k := e["cacheKey"]) in self.remote]

    def _compare(self, key: str, here: tuple[str, int], found: dict) -> None:
        meta = found.get("metadata") if isinstance(found.get("metadata"), dict) else {}
        local = _local_digest(self.store, key, here[1]) if isinstance(meta.get("sha256"), str) else None
        if local is None:
            local = _local_meta(self.store, key)
            if local is None or local.get("fileSize") != here[1]:
                return  # damaged here: nothing to compare (cleanup removes it; a pull then restores it)
        why = differs(local, meta)
        if why is None:
            self.counts["equal"] += 1
        elif key not in self._conflicts:
            self._conflicts.add(key)
            self._done({"cacheKey": key, "status": "conflict", "error": why})

    def _done(self, row: dict) -> None:
        with self._lock:
            self.counts[row["status"]] = self.counts.get(row["status"], 0) + 1
            self.report(row)

    def _run(self, fn: Callable[[Any], None], items: list, workers: int) -> None:
        if not items:
            return
        if self.dry_run:
            for item in items:
                fn(item)
            return
        pool = ThreadPoolExecutor(workers)
        try:
            for fut in [pool.submit(fn, item) for item in items]:
                fut.result()
        except BaseException as exc:
            self._stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            if isinstance(exc, KeyboardInterrupt):
                done = self.counts["pulled"] + self.counts["pushed"] + self.counts["failed"]
                raise Interrupted(done, done + len(items), "transfers") from None
            raise
        pool.shutdown()

    def _pull_one(self, found: dict) -> None:
        key = found["cacheKey"]
        if self._stop.is_set():
            return
        if self.dry_run:
            return self._done({"cacheKey": key, "status": "would pull", "size": found["metadata"].get("fileSize")})
        try:
            entry = self.client.download(self.store, found)
        except (ServerRefused, OSError) as exc:
            return self._done({"cacheKey": key, "status": "failed", "error": str(exc)})
        self._done({"cacheKey": key, "status": "pulled", "size": entry.size, "path": str(entry.path)})

    def _push_one(self, key: str) -> None:
        if self._stop.is_set():
            return
        entry = self.store.get(key)
        if self.dry_run:
            if entry is not None:
                self._done({"cacheKey": key, "status": "would push", "size": entry.size})
            return
        audio = self.store.read_audio(entry) if entry else None
        if entry is None or audio is None:
            return  # being written, or damaged: not an entry to send
        try:
            reply = self._ws().upload(entry, audio)
        except ServerRefused as exc:
            return self._done({"cacheKey": key, "status": "failed", "error": str(exc)})
        if self.listable:  # known now, so the next index poll does not pull it back
            self.remote.setdefault(key, {"cacheKey": key, "filePath": reply.get("filePath"),
                                         "metadata": entry.meta})
        self._done({"cacheKey": key, "status": "pushed", "size": entry.size})

    def close(self) -> None:
        self.client.close()
        self.connected = False

    def reset(self) -> None:
        """After the server went away: a fresh client (a closed one stays broken), and a full listing next."""
        self.close()
        from .storage import open_remote

        self.client = open_remote(self.client.url, self.client.token, ca_file=self.client.ca_file,
                                  insecure=self.client.insecure)
        self.cursor = self.etag = None


def sync_once(syncer: Syncer) -> None:
    """One whole sync: everything on both sides."""
    syncer.refresh()
    syncer.round()


def watch(syncer: Syncer, say: Callable[[str], None], stop: threading.Event | None = None) -> None:
    """Keep syncing until ``stop`` (or Ctrl-C): local changes (``{key}.meta.json`` appearing, which
    every writer writes last) are pushed as they come; the index is polled every ``POLL_EVERY``
    with its cursor and ETag (a bucket, which has no cursor, every ``poll_every`` of its client). A server that goes away is said once, retried with backoff up to
    ``MAX_BACKOFF``, and said once more when it is back; then everything is compared again."""
    import watchfiles

    stop = stop or threading.Event()
    syncer.store.root.mkdir(parents=True, exist_ok=True)
    changed: set[str] = set()
    lock = threading.Lock()
    wake = threading.Event()

    def watcher() -> None:
        for batch in watchfiles.watch(syncer.store.root, stop_event=stop, debounce=100, step=50,
                                      raise_interrupt=False):
            keys = {os.path.basename(p)[:8] for kind, p in batch
                    if kind != watchfiles.Change.deleted and os.path.basename(p).endswith(META_SUFFIX)}
            if keys:
                with lock:
                    changed.update(keys)
                wake.set()

    thread = threading.Thread(target=watcher, name="narrator-watch", daemon=True)
    thread.start()
    away = False
    backoff = 1.0
    full = True
    while not stop.is_set():
        with lock:
            local_keys = set(changed)
            changed.clear()
        try:
            if full:
                syncer.refresh()
                syncer.round()
                full = False
            else:
                remote_keys = syncer.refresh()
                syncer.round(remote_keys, local_keys)
            if away:
                say("the server is back")
                away = False
            backoff = 1.0
            wake.wait(getattr(syncer.client, "poll_every", POLL_EVERY))
            wake.clear()
        except ServerUnavailable as exc:
            with lock:
                changed.update(local_keys)  # pushed once the server is back (the full round covers them too)
            if not away:
                say(f"the server is unreachable, retrying: {exc}")
                away = True
            syncer.reset()
            full = True
            stop.wait(backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)
    thread.join(5)
