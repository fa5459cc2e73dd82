"""The team cache's workflows over the client and the local store: what ``speak``,
``upload`` and the recorded-voice import do with a server."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .client import Client, ServerRefused, ServerUnavailable
from .errors import Interrupted, NarratorError, UsageError
from .store import Entry, Store, check_key, meta_holds

UPLOADS_IN_FLIGHT = 4


def import_file(store: Store, path: Path, line: Any) -> Entry:
    """A recorded file as the narration of ``line``: checked by mutagen, stored atomically."""
    from .audio import SUFFIX_MIME, measure_duration
    from .errors import AudioError

    mime = SUFFIX_MIME.get(path.suffix.lower())
    if mime is None:
        raise UsageError(f"{path}: unknown audio type; use .mp3, .wav or .ogg")
    try:
        audio = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        duration = measure_duration(audio, mime)
    except AudioError as exc:
        raise UsageError(f"{path}: {exc}") from None
    meta = {"text": line.text, "voiceId": line.voice_id, "modelId": line.model_id, "provider": "recorded",
            "source": path.name}
    return store.put(line.key, audio, mime, duration, meta)


def choose(store: Store, keys: list[str], everything: bool) -> list[str]:
    if everything and keys:
        raise UsageError("give keys or --all, not both")
    if everything:
        return sorted(e.key for e in store.scan().entries)
    if not keys:
        raise UsageError("nothing to upload: give keys, --all, or FILE --text")
    return list(dict.fromkeys(map(check_key, keys)))


def plugin_will_miss(client: Client, entry: Entry) -> str | None:
    """The warning an upload of ``entry`` deserves, or None. The Motion Canvas plugin (any server
    that does not name itself narrator serve) stores every type but its check looks only for
    ``{key}.mp3``, so a WAV or Ogg entry it holds is never found again and gets paid for anew."""
    if client.narrator_serve or entry.path.suffix == ".mp3":
        return None
    return (f"{entry.key} is {entry.meta.get('mimeType')}, and {client.url} is not narrator serve: the Motion Canvas "
            "plugin's check looks only for {key}.mp3, so it will never find this or any other non-MP3 entry again; "
            'use MP3 (format = "mp3" in narrator.toml, or NARRATOR_FORMAT=mp3)')


def upload(client: Client, store: Store, keys: list[str], force: bool,
           report: Callable[[dict], None], warn: Callable[[str], None] = lambda message: None) -> list[dict]:
    """Send what the server lacks (everything with ``force``), a few uploads in flight at once.

    Ctrl-C raises ``Interrupted``: no upload starts after it, the rows already reported stand, and
    uploads in flight are dropped when the caller closes the client (the server stores an upload
    whole or not at all)."""
    try:
        on_server = {} if force or not keys else client.check(keys)
    except Interrupted:
        raise Interrupted(0, len(keys), "uploads") from None
    lock = threading.Lock()
    stop = threading.Event()  # Ctrl-C or a lost server: nothing new starts, nothing more is reported
    rows: list[dict] = []
    warned = False

    def done(row: dict) -> dict:
        with lock:
            if not stop.is_set():
                rows.append(row)
                report(row)
        return row

    def one(key: str) -> dict | None:
        nonlocal warned
        if stop.is_set():
            return None
        if on_server.get(key) is not None:
            return done({"cacheKey": key, "status": "present", "filePath": on_server[key].get("filePath")})
        entry = store.get(key)
        audio = store.read_audio(entry) if entry else None
        if entry is None or audio is None:
            return done({"cacheKey": key, "status": "failed", "error": "not in the local cache (or damaged)"})
        if stop.is_set():
            return None
        try:
            reply = client.upload(entry, audio)
        except ServerRefused as exc:
            return done({"cacheKey": key, "status": "failed", "error": str(exc)})
        with lock:
            message = None if warned or stop.is_set() else plugin_will_miss(client, entry)
            warned = warned or message is not None
        if message:
            warn(message)
        return done({"cacheKey": key, "status": "uploaded", "filePath": reply.get("filePath"),
                     "size": reply.get("size")})

    pool = ThreadPoolExecutor(UPLOADS_IN_FLIGHT)
    try:
        for fut in [pool.submit(one, key) for key in keys]:
            fut.result()  # ServerUnavailable stops the batch with its one-line reason
    except BaseException as exc:
        with lock:
            stop.set()
            finished = len(rows)
        pool.shutdown(wait=False, cancel_futures=True)
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(finished, len(keys), "uploads") from None
        raise
    pool.shutdown()
    return rows


class TeamCache:
    """The server's part in ``speak``: best effort. The first time it cannot be reached it is
    switched off with one warning, and the run goes on from the local cache and the provider."""

    def __init__(self, url: str, token: str | None, store: Store, warn: Any, ca_file: str | None = None,
                 insecure: bool | None = None) -> None:
        from .storage import open_remote

        self.client = open_remote(url, token, ca_file=ca_file, insecure=insecure)  # a server or a bucket
        self.store = store
        self.warn = warn
        self.off = False
        self._lock = threading.RLock()  # _ready skips while holding it
        self._connected = False
        self._warned = False  # about non-MP3 uploads to the plugin: once per command

    def _skip(self, exc: NarratorError) -> None:
        with self._lock:
            if not self.off:
                self.off = True
                self.warn(f"team cache skipped: {exc}")

    def _ready(self) -> Client | None:
        with self._lock:
            if self.off:
                return None
            if not self._connected:
                try:
                    self.client.connect()
                except ServerUnavailable as exc:
                    self._skip(exc)
                    return None
                self._connected = True
        return self.client

    def check(self, lines: list, use: bool = True) -> dict[str, dict]:
        """``use``: the lines found will be downloaded (the server counts them as hits); False for a question."""
        client = self._ready()
        if client is None:
            return {}
        try:
            replies = client.check(list(dict.fromkeys(line.key for line in lines)), use=use)
        except Interrupted:
            raise KeyboardInterrupt from None  # Ctrl-C stops the run; it is no reason to go on without the server
        except NarratorError as exc:
            self._skip(exc)
            return {}
        found = {}
        for line in lines:
            data = replies.get(line.key)
            if data is None:
                continue
            meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
            if meta_holds(meta, line.text, line.voice_id, line.model_id):
                found[line.key] = data
            else:
                self.warn(f"the server's {line.key} holds another line ({str(meta.get('text', ''))[:40]!r})")
        return found

    def download(self, found: dict) -> Entry | None:
        if self.off:
            return None
        try:
            return self.client.download(self.store, found)
        except ServerUnavailable as exc:
            self._skip(exc)
        except (ServerRefused, OSError) as exc:
            self.warn(str(exc))
        return None

    def upload(self, entry: Entry) -> None:
        client = self._ready()
        if client is None:
            return
        audio = self.store.read_audio(entry)
        if audio is None:
            return
        try:
            client.upload(entry, audio)
        except ServerUnavailable as exc:
            self._skip(exc)
            return
        except ServerRefused as exc:
            self.warn(str(exc))
            return
        with self._lock:
            message = None if self._warned else plugin_will_miss(client, entry)
            self._warned = self._warned or message is not None
        if message:
            self.warn(message)

    def close(self) -> None:
        self.client.close()
