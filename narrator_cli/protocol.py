"""The narrator events: names, payload checks, and handlers over the store. No sockets here.

Messages use Vite's HMR framing, so one client works against a Vite dev server
running the Motion Canvas narrator plugin and against ``narrator serve``:
``{"type": "custom", "event": NAME, "data": {...}}`` both ways, and
``{"type": "connected"}`` from the server first.
"""

from __future__ import annotations

import binascii
import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from . import __version__
from .audio import MIME_ALIASES  # the plugin accepts audio/mp3 too; we store the standard name
from .costs.ledger import HitCounter
from .keys import is_key
from .motion_canvas import PLUGIN_MIME_TYPES
from .store import META_SUFFIX, MIME_EXT, Entry, Staged, Store
from .ws import strict_b64decode  # the fast extra's C, when installed

SUBPROTOCOL = "vite-hmr"
AUDIO_PREFIX = "/__narrator-audio/"
CONNECTED = '{"type":"connected"}'

CHECK_AVAILABLE = "narrator:check-available"
AVAILABLE = "narrator:available"
CHECK_AUDIO = "narrator:check-audio"
AUDIO_EXISTS = "narrator:audio-exists"
AUDIO_NOT_FOUND = "narrator:audio-not-found"
UPLOAD_AUDIO = "narrator:upload-audio"
UPLOAD_SUCCESS = "narrator:upload-success"
UPLOAD_ERROR = "narrator:upload-error"
ERROR = "narrator:error"  # ours: an unknown event or a message we cannot read

DEFAULT_MIME_TYPES = PLUGIN_MIME_TYPES  # accept what the plugin accepts
SERVER_NAME = "narrator serve"  # in our narrator:available reply (the plugin's is {}), so a client can tell
TOUCH_EVERY = 60.0
CACHED_REPLIES = 4096  # ready-made replies kept per entry, at most
B64_CHUNK = 1 << 22  # base64 characters decoded per step, so an upload never holds the event loop for long


class BadMessage(Exception):
    """A message we answer with an error reply; the connection stays open."""

    def __init__(self, message: str, cache_key: str | None = None, event: str = ERROR) -> None:
        super().__init__(message)
        self.cache_key = cache_key
        self.event = event

    def reply(self) -> str:
        data: dict[str, Any] = {"error": str(self)}
        if self.cache_key is not None:
            data["cacheKey"] = self.cache_key
        return encode(self.event, data)


def encode(event: str, data: dict) -> str:
    return json.dumps({"type": "custom", "event": event, "data": data}, ensure_ascii=False, separators=(",", ":"))


def decode(message: str | bytes | bytearray) -> tuple[str, dict]:
    """(event, data) of a client message; BadMessage for anything else.

    An upload is mostly one huge base64 string, and ``json.loads`` holds the
    interpreter for ~0.2 s on 60 MB. So a large message has its data URL cut
    out first (base64 needs no JSON unescaping), the small rest is parsed, and
    the URL comes back as a zero-copy memoryview in ``data["data"]``.
    """
    event, data, _ = decode_located(message)
    return event, data


def decode_located(message: str | bytes | bytearray, span: tuple[int, int] | None = None,
                   ) -> tuple[str, dict, int | None]:
    """``decode``, plus the offset in ``message`` of the data URL's first character
    when it was spliced out (``data["data"]`` is then a view of exactly that URL), else None.
    ``span``: where its quotes are, from the ``UploadStream`` that read ``message`` (saves two searches)."""
    if len(message) == _CHECK_LEN and not isinstance(message, str):
        m = _CHECK_RE.fullmatch(message)
        if m is not None:  # the commonest message, spelled as every client spells it: no JSON parser needed
            return CHECK_AUDIO, {"cacheKey": m.group(1).decode()}, None
    if len(message) > SPLICE_OVER and not isinstance(message, str):
        spliced = _splice(message, span)
        if spliced is not None:
            return spliced
    try:
        obj = json.loads(message)
    except (ValueError, RecursionError):
        raise BadMessage("invalid JSON") from None
    event, data = _custom(obj)
    return event, data, None


def _splice(message: bytes | bytearray, span: tuple[int, int] | None = None) -> tuple[str, dict, int] | None:
    if span is not None:
        start, end = span
    else:
        start = message.find(b'"data:')
        end = message.find(b'"', start + 1) if start >= 0 else -1
        if end < 0 or message.find(b"\\", start, end) >= 0:
            return None
    try:
        obj = json.loads(b"".join((message[:start], _HOLE, message[end + 1:])))
    except (ValueError, RecursionError):
        raise BadMessage("invalid JSON") from None
    event, data = _custom(obj)
    if data.get("data") != _HOLE_TEXT:
        return None  # the URL was somewhere else: parse the plain way
    data["data"] = memoryview(message)[start + 1:end]
    return event, data, start + 1


SPLICE_OVER = 1 << 20
# The spellings ``encode`` (and every client) gives the commonest messages, read and written
# without the JSON codec on hot paths; tests check they agree with ``encode``.
_CHECK_MESSAGE = '{"type":"custom","event":"%s","data":{"cacheKey":"%%s"}}' % CHECK_AUDIO
_CHECK_RE = re.compile(rb'\{"type":"custom","event":"narrator:check-audio","data":\{"cacheKey":"([0-9a-f]{8})"\}\}')
_CHECK_LEN = len(_CHECK_MESSAGE % ("0" * 8))
REPLY_HEAD = re.compile(rb'\{"type":"custom","event":"([a-z:-]+)","data":\{"cacheKey":"([0-9a-f]{8})"')


def check_message(key: str, use: bool = True) -> str:
    """``encode(CHECK_AUDIO, {"cacheKey": key})`` for a valid key, without ``json.dumps``. ``use=False``
    adds ``"use": false``: a question (``check``, ``upload``, a dry run) that serves no line, so the server does
    not count it as a hit (the Motion Canvas plugin ignores the field)."""
    return _CHECK_MESSAGE % key if use else _PEEK_MESSAGE % key


_PEEK_MESSAGE = '{"type":"custom","event":"%s","data":{"cacheKey":"%%s","use":false}}' % CHECK_AUDIO
_HOLE_TEXT = "\x00narrator-data-url"
_HOLE = json.dumps(_HOLE_TEXT).encode()


def _custom(obj: object) -> tuple[str, dict]:
    if not isinstance(obj, dict) or obj.get("type") != "custom" or not isinstance(obj.get("event"), str):
        raise BadMessage('expected {"type": "custom", "event": ..., "data": {...}}')
    data = obj.get("data", {})
    if not isinstance(data, dict):
        raise BadMessage("data must be an object")
    return obj["event"], data


AVAILABLE_REPLY = encode(AVAILABLE, {"server": SERVER_NAME, "version": __version__})


def file_path(entry: Entry) -> str:
    return AUDIO_PREFIX + entry.path.name


def exists_reply(entry: Entry) -> str:
    """The answer to a check of a key the cache holds."""
    return encode(AUDIO_EXISTS, {"cacheKey": entry.key, "filePath": file_path(entry), "duration": entry.duration,
                                 "metadata": entry.meta})


INDEX_PATH = "/__narrator-index"
MAX_TOMBSTONES = 50_000  # removals remembered; a cursor older than the oldest one forgotten gets the whole listing
CACHED_LISTINGS = 64  # delta bodies kept per version of the index (one per client cursor, at most)
COMPACT_FIELDS = ("cacheKey", "fileName", "fileSize", "sha256")  # one array per entry in ``?fields=compact``


def _is_meta_name(name: str) -> bool:
    return len(name) == 8 + len(META_SUFFIX) and name.endswith(META_SUFFIX) and is_key(name[:8])


class Changes:
    """The index's change log, for ``GET /__narrator-index?after=CURSOR``.

    Every add, rewrite and removal gets the next sequence number; the log keeps one
    position per key (its latest change), in sequence order, so a delta is read from
    the end backwards. A cursor is ``{instance}.{seq}``: the instance id is new at
    every start, so a restarted server's cursors are recognisably stale and the
    client is sent everything. Removals stay as tombstones (bounded: when the oldest
    goes, cursors before it are stale too). Bodies are JSON made once per version
    (one fragment per entry, cached by its metadata object) and served by ETag.
    """

    def __init__(self) -> None:
        self.instance = os.urandom(6).hex()
        self.seq = 0
        self.floor = 0  # a cursor below this may have missed a forgotten removal
        self._log: dict[str, int] = {}  # key -> seq of its latest change, oldest first
        self._tombs: dict[str, int] = {}  # removed key -> seq, oldest first
        self._frags: dict[tuple[str, bool], tuple[dict, str]] = {}  # (key, compact) -> (metadata, its JSON)
        self._bodies: dict[tuple[str | None, bool], bytes] = {}  # (after, compact) -> body, for the current seq
        self._bodies_seq = -1

    @property
    def cursor(self) -> str:
        return f"{self.instance}.{self.seq}"

    def etag(self, compact: bool = False) -> str:
        """One per version and representation, so a compact ETag never validates a full body."""
        return f'"{self.instance}-{self.seq}{"-c" if compact else ""}"'

    def mark(self, key: str, entry: Entry | None) -> None:
        """Record that ``key`` was added or rewritten (``entry``) or removed (None)."""
        self.seq += 1
        self._log.pop(key, None)
        self._log[key] = self.seq
        self._tombs.pop(key, None)
        if entry is None:
            self._frags.pop((key, False), None)
            self._frags.pop((key, True), None)
            self._tombs[key] = self.seq
            if len(self._tombs) > MAX_TOMBSTONES:
                old = next(iter(self._tombs))
                self.floor = self._tombs.pop(old)
                self._log.pop(old, None)

    def after(self, cursor: str | None) -> int | None:
        """The sequence number a cursor of this instance stands for; None: list everything."""
        if not cursor or "." not in cursor:
            return None
        instance, _, seq = cursor.partition(".")
        if instance != self.instance or not seq.isdigit() or not self.floor <= int(seq) <= self.seq:
            return None
        return int(seq)

    def listing(self, cursor: str | None, entries: dict[str, Entry], compact: bool = False) -> tuple[str, bytes]:
        """(ETag, body): ``{"server", "instance", "cursor", "full", "entries": [...], "removed": [...]}``.

        Each of ``entries`` is shaped as an audio-exists reply's data (``cacheKey, filePath, duration,
        metadata``), so a client downloads it as it would a checked key. ``full``: everything is listed,
        and a client should drop what it believed about keys not in it. ``compact``: each entry is only
        ``[cacheKey, fileName, fileSize, sha256 or null]`` (named by ``"fields"``), what a comparison needs,
        a quarter of the bytes; a client asks for the full metadata of the few keys it will download."""
        since = self.after(cursor)
        if self._bodies_seq != self.seq:
            self._bodies, self._bodies_seq = {}, self.seq
        cache_key = (cursor if since is not None else None, compact)
        body = self._bodies.get(cache_key)
        if body is None:
            if since is None:
                keys: list[str] = list(entries)
                removed: list[str] = []
            else:
                changed = []
                for key in reversed(self._log):
                    if self._log[key] <= since:
                        break
                    changed.append(key)
                changed.reverse()
                keys = [k for k in changed if k in entries]
                removed = [k for k in changed if k not in entries]
            frags = ",".join(self._fragment(entries[k], compact) for k in keys)
            head: dict[str, Any] = {"server": SERVER_NAME, "instance": self.instance, "cursor": self.cursor,
                                    "full": since is None, "removed": removed}
            if compact:
                head["fields"] = COMPACT_FIELDS
            text = json.dumps(head)
            body = f'{text[:-1]},"entries":[{frags}]}}'.encode()
            if len(self._bodies) >= CACHED_LISTINGS:
                self._bodies.clear()
            self._bodies[cache_key] = body
        return self.etag(compact), body

    def _fragment(self, entry: Entry, compact: bool) -> str:
        cached = self._frags.get((entry.key, compact))
        if cached is None or cached[0] is not entry.meta:
            digest = entry.meta.get("sha256")
            shape: Any = [entry.key, entry.path.name, entry.size, digest if isinstance(digest, str) else None] \
                if compact else {"cacheKey": entry.key, "filePath": file_path(entry), "duration": entry.duration,
                                 "metadata": entry.meta}
            cached = self._frags[(entry.key, compact)] = (
                entry.meta, json.dumps(shape, ensure_ascii=False, separators=(",", ":")))
        return cached[1]


class Index:
    """What a check needs, in memory: key -> entry, with last use, kept in step with the store.

    Entries another process writes into the folder are found on a miss; entries
    it deletes are noticed by the ``stat`` on a hit. The LRU order follows every
    use, while the disk (the audio file's mtime, which the next start and
    ``narrator cleanup`` read) is written at most once per ``TOUCH_EVERY`` per entry.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.entries: dict[str, Entry] = {}
        self._used: dict[str, float] = {}  # key -> a use newer than its entry's mtime, not yet on disk
        self.hits = HitCounter(store)  # check-audio hits, appended to the hits log at most once per TOUCH_EVERY
        self._hits_due = time.time() + TOUCH_EVERY
        self.changes = Changes()
        self.reload()

    def reload(self) -> None:
        self._seen = self._folder_stamp()
        old, self.entries = self.entries, {e.key: e for e in self.store.scan().entries}
        self._inodes = self._meta_inodes()
        self._used = {k: t for k, t in list(self._used.items()) if k in self.entries}
        for key in old.keys() - self.entries.keys():
            self.changes.mark(key, None)
        for key, entry in self.entries.items():
            if key not in old or old[key].meta != entry.meta:
                self.changes.mark(key, entry)

    def sync(self) -> None:
        """Catch up with other writers of the folder (a ``narrator speak``, the Vite plugin)
        before counting, evicting or listing; only the new and rewritten entries are read
        (a rewrite renames a new metadata file in: its inode, free from the listing, changes)."""
        stamp = self._folder_stamp()
        if stamp == self._seen:
            return
        self._seen = stamp
        inodes = self._meta_inodes()
        for key in self.entries.keys() - inodes.keys():
            del self.entries[key]
            self.changes.mark(key, None)
        for key, inode in inodes.items():
            if key not in self.entries or self._inodes.get(key) != inode:
                entry = self.store.get(key)
                known = self.entries.get(key)
                if entry is not None:
                    self.entries[key] = entry
                    if known is None or known.meta != entry.meta:
                        self.changes.mark(key, entry)
                elif known is not None:
                    del self.entries[key]
                    self.changes.mark(key, None)
        self._inodes = inodes

    def _meta_inodes(self) -> dict[str, int]:
        """key -> inode of its metadata file, from one listing (no stat)."""
        try:
            with os.scandir(self.store.root) as found:
                return {name[:8]: d.inode() for d in found if _is_meta_name(name := d.name)}
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise self.store._unreadable(self.store.root, exc) from None

    def listing(self, after: str | None, compact: bool = False) -> tuple[str, bytes]:
        """(ETag, JSON body) of ``GET /__narrator-index``: see ``Changes.listing``."""
        self.sync()
        return self.changes.listing(after, self.entries, compact)

    def _folder_stamp(self) -> int | None:
        try:
            return os.stat(self.store.root).st_mtime_ns
        except OSError:
            return None

    def get(self, key: str) -> Entry | None:
        entry = known = self.entries.get(key)
        if entry is not None:
            try:
                if os.stat(entry.path).st_size == entry.size:
                    return entry
            except OSError:
                pass
            del self.entries[key]
        entry = self.store.get(key)
        if entry is not None:
            self.entries[key] = entry
        if (entry is None) != (known is None) or (entry is not None and known is not None
                                                   and entry.meta != known.meta):
            self.changes.mark(key, entry)
        return entry

    def use(self, entry: Entry) -> None:
        """Record a use for LRU eviction: in memory every time, on disk at most once a minute per entry
        (and the hits counted meanwhile, at most once a minute in all)."""
        now = time.time()
        if now - entry.mtime > TOUCH_EVERY:
            self.store.touch(entry)
            self.entries[entry.key] = entry._replace(mtime=now)
            self._used.pop(entry.key, None)
        else:
            self._used[entry.key] = now
        if now >= self._hits_due:
            self._hits_due = now + TOUCH_EVERY
            self.hits.flush()

    def hit(self, entry: Entry) -> None:
        """A check answered with the audio: a use, and a hit (a line not paid for again)."""
        self.hits.add(entry.key)
        self.use(entry)

    def last_use(self, entry: Entry) -> float:
        return max(entry.mtime, self._used.get(entry.key, 0.0))

    def flush(self) -> None:
        """Write the uses only memory knows to the disk, so a cleanup that reads file times
        (and the next start) sees the same order; and the hits, to the hits log."""
        self.hits.flush()
        for key, when in list(self._used.items()):
            entry = self.entries.get(key)
            if entry is not None and when > entry.mtime:
                with contextlib.suppress(OSError):
                    os.utime(entry.path, (when, when))
                    self.entries[key] = entry._replace(mtime=when)
            self._used.pop(key, None)

    def add(self, entry: Entry) -> None:
        self.entries[entry.key] = entry
        self._used.pop(entry.key, None)
        self.changes.mark(entry.key, entry)

    def discard(self, key: str) -> None:
        if self.entries.pop(key, None) is not None:
            self.changes.mark(key, None)
        self._used.pop(key, None)

    def total_size(self) -> int:
        """Audio and metadata, as ``stats`` and ``cleanup`` count an entry."""
        return sum(e.disk_size for e in list(self.entries.values()))  # a copy: eviction counts from another thread

    def lru(self) -> Iterator[Entry]:
        """Least recently used first."""
        return iter(sorted(self.entries.values(), key=self.last_use))


_PAD = ord("=")
STREAM_MIN = 1 << 18  # base64 characters worth a decode step while a message arrives
STREAM_FIND = 1 << 16  # the data URL must start within this many bytes of the message


class StreamedHead(NamedTuple):
    """What an ``UploadStream`` decoded: the audio of the first ``chars`` base64 characters, written to ``staged``."""

    staged: Staged
    chars: int


class UploadStream:
    """Decodes the base64 of a large upload's data URL while the message is still arriving.

    ``buf`` is the message payload being assembled (``ws.Connection.partial``):
    it only grows, and it is read here between arrivals, never kept as a view.
    The stream finds the data URL the way ``decode`` will (the first ``"data:``,
    the comma ``_base64_of`` would take), then decodes each newly arrived
    4-character-aligned region strictly, stopping at the closing quote. On
    anything unexpected it gives up: the whole message is then decoded the
    normal way, which also produces the error reply. The audio goes straight
    into a staged file, so by the last byte it is written and hashed. ``take``
    hands the decoded head over only if it is exactly the start of the base64
    the message holds; otherwise the staged file is deleted.
    """

    def __init__(self, buf: bytearray, max_chars: int, store: Store) -> None:
        self.buf: bytearray | None = buf
        self.max_chars = max_chars
        self.store = store
        self.url = -1  # offset of the data URL's first character
        self.begin = -1  # offset of its first base64 character
        self.pos = -1  # offset of the first character not decoded yet
        self.scanned = -1  # no closing quote before this offset: each byte is searched once
        self.staged: Staged | None = None
        self.done = False  # reached the closing quote
        self.failed = False

    def step(self, budget: int = B64_CHUNK) -> None:
        """Decode what has arrived, at most ``budget`` characters (so one step stays short)."""
        buf = self.buf
        if buf is None or self.failed or self.done:
            return
        if self.begin < 0 and not self._find(buf):
            return
        avail = min(len(buf), self.pos + budget)
        quote = buf.find(b'"', max(self.pos, self.scanned), avail)
        self.scanned = avail
        if quote >= 0:
            stop, final = quote, True
            if (stop - self.begin) % 4:
                return self._give_up()
        else:  # keep the last quad back: it may hold the padding, which only the end may have
            stop, final = self.pos + (avail - self.pos) // 4 * 4 - 4, False
            if stop - self.pos < STREAM_MIN:
                return
        if stop - self.begin > self.max_chars:
            return self._give_up()
        try:
            with memoryview(buf)[self.pos:stop] as piece:
                if not final and piece[-1] == _PAD:
                    raise ValueError("padding before the end")
                if stop > self.pos:
                    audio = strict_b64decode(piece)
                    if self.staged is None:
                        self.staged = self.store.stage()
                    self.staged.write(audio)
        except (binascii.Error, ValueError, OSError):
            return self._give_up()
        self.pos = stop
        self.done = final

    def _give_up(self) -> None:
        self.failed = True
        self._drop()

    def _drop(self) -> None:
        if self.staged is not None:
            self.staged.discard()
            self.staged = None

    def _find(self, buf: bytearray) -> bool:
        quote = buf.find(b'"data:', 0, STREAM_FIND)
        if quote < 0:
            self.failed = len(buf) >= STREAM_FIND
            return False
        url = quote + 1
        head = bytes(buf[url:url + URL_HEAD])
        end = head.find(b'"')
        if end >= 0:
            head = head[:end]
        elif len(head) < URL_HEAD:
            return False  # wait for the whole head
        begin = _base64_start(head)
        if begin is None:
            self.failed = True
            return False
        self.url, self.begin = url, url + begin
        self.pos = self.begin
        return True

    def finish(self, message: bytes | bytearray) -> tuple[int, int] | None:
        """Once ``message`` is whole: decode what came since the last step (``decode_steps`` would do it
        next) and tell where the data URL's quotes are, the offsets of the opening and closing ``"`` that
        ``decode_located`` would otherwise find by searching the whole message twice (~8 ms on 60 MB, after
        the last byte). None unless this stream read ``message`` up to the closing quote; between the quotes
        it saw only the URL's head, checked here for a backslash, and base64, which has none."""
        if self.buf is message:
            self.step()
        if self.failed or not self.done or self.buf is not message or b"\\" in message[self.url:self.begin]:
            return None
        return self.url - 1, self.pos

    def take(self, message: bytes | bytearray, url_at: int | None, b64_len: int) -> StreamedHead | None:
        """The decoded head, if this stream read ``message`` and its data URL starts at ``url_at``
        (from ``decode_located``) with ``b64_len`` base64 characters; None otherwise. Ends the stream."""
        ok = (not self.failed and self.buf is message and url_at is not None and url_at == self.url
              and self.staged is not None and self.pos - self.begin <= b64_len)
        head = None
        if ok:
            head, self.staged = StreamedHead(self.staged, self.pos - self.begin), None
        self.close()
        return head

    def close(self) -> None:
        """End the stream, handing nothing over: what it staged is deleted. Safe to repeat."""
        self._drop()
        self.buf, self.failed = None, True


class Handler:
    """Answers the narrator events over an index. Cheap events are plain calls;
    an upload is a generator that yields between steps so the server can serve
    others while it decodes."""

    def __init__(self, index: Index, allowed_mime_types: tuple[str, ...] = DEFAULT_MIME_TYPES,
                 max_file_size: int = 50_000_000) -> None:
        self.index = index
        self.allowed = tuple(allowed_mime_types)
        self.max_file_size = max_file_size
        self._replies: dict[str, tuple[dict, str]] = {}  # key -> (metadata it was made from, audio-exists reply)
        self.on_mismatch: Callable[[str, str], None] | None = None  # (message, key): the server logs it

    def max_message_size(self) -> int:
        """The largest WebSocket message an allowed upload needs (base64 plus the JSON around it)."""
        return (self.max_file_size + 2) // 3 * 4 + 64 * 1024

    def handle(self, event: str, data: dict) -> str:
        if event == CHECK_AUDIO:
            return self.check_audio(data)
        if event == CHECK_AVAILABLE:
            return AVAILABLE_REPLY
        raise BadMessage(f"unknown event {event!r}", _key_of(data))

    def check_audio(self, data: dict) -> str:
        key = data.get("cacheKey")
        if not is_key(key):
            raise BadMessage("cacheKey must be 8 lowercase hex characters", _key_of(data))
        entry = self.index.get(key)
        if entry is None:
            return encode(AUDIO_NOT_FOUND, {"cacheKey": key})
        if data.get("use") is not False:
            self.index.hit(entry)
        cached = self._replies.get(key)
        if cached is None or cached[0] is not entry.meta:  # an entry's metadata object changes when it is rewritten
            if len(self._replies) >= CACHED_REPLIES:  # keys come and go: start again rather than grow forever
                self._replies.clear()
            cached = self._replies[key] = (entry.meta, exists_reply(entry))
        return cached[1]

    # --- upload ----------------------------------------------------------------
    def parse_upload(self, data: dict) -> tuple[str, str, memoryview, dict]:
        """Checks everything that needs no decoding: (key, mime, base64 text, client metadata)."""
        key = data.get("cacheKey")
        if not is_key(key):
            raise BadMessage("cacheKey must be 8 lowercase hex characters", _key_of(data), UPLOAD_ERROR)
        mime = data.get("mimeType")
        if not isinstance(mime, str) or mime not in self.allowed or MIME_ALIASES.get(mime, mime) not in MIME_EXT:
            raise BadMessage(f"mimeType {mime!r} is not allowed (allowed: {', '.join(self.allowed)})", key,
                             UPLOAD_ERROR)
        b64 = _base64_of(data.get("data"))
        if b64 is None:
            raise BadMessage("data must be a base64 data URL (data:<mime>;base64,...)", key, UPLOAD_ERROR)
        if len(b64) // 4 * 3 - 2 > self.max_file_size:
            raise BadMessage(f"file larger than the {self.max_file_size / 1e6:g} MB limit", key, UPLOAD_ERROR)
        meta = data.get("metadata", {})
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            raise BadMessage("metadata must be an object", key, UPLOAD_ERROR)
        return key, MIME_ALIASES.get(mime, mime), b64, meta

    def decode_steps(self, key: str, b64: memoryview, head: StreamedHead | None = None) -> Iterator[Staged | None]:
        """Decode base64 into a staged file a bounded chunk at a time; yields None between
        chunks, the staged file last (for ``store_upload``). On any error it is deleted.

        ``head``: the start of ``b64`` an ``UploadStream`` already decoded (strictly, as here).
        """
        if len(b64) % 4:
            raise BadMessage("invalid base64 data", key, UPLOAD_ERROR)
        staged, skip = (head.staged, head.chars) if head is not None else (self.index.store.stage(), 0)
        del head
        try:
            for start in range(skip, len(b64), B64_CHUNK):
                piece = b64[start:start + B64_CHUNK]
                if start + B64_CHUNK < len(b64) and piece[-1] == _PAD:
                    raise ValueError("padding before the end")  # strict mode sees one chunk, not this
                staged.write(strict_b64decode(piece))
                del piece
                if staged.size > self.max_file_size:
                    raise BadMessage(f"file larger than the {self.max_file_size / 1e6:g} MB limit", key,
                                     UPLOAD_ERROR)
                yield None
            if not staged.size:
                raise BadMessage("empty audio", key, UPLOAD_ERROR)
        except (binascii.Error, ValueError):
            staged.discard()
            raise BadMessage("invalid base64 data", key, UPLOAD_ERROR) from None
        except BaseException:  # including GeneratorExit: a cancelled upload
            staged.discard()
            raise
        del b64  # the message buffer can go before the file is committed
        yield staged

    def upload_stream(self, buf: bytearray) -> UploadStream:
        """A decoder for the data URL of the upload arriving in ``buf``, bounded by the size limit."""
        return UploadStream(buf, (self.max_file_size + 2) // 3 * 4, self.index.store)

    def store_upload(self, key: str, mime: str, staged: Staged, meta: dict) -> str:
        """Measure, commit, index; the success reply. Blocking: run it off the event loop.
        Owns ``staged`` from here: it is committed or deleted, whatever happens.

        The editor's browser labels every upload ``audio/mpeg`` whatever it holds (a MiniMax line in WAV,
        say): bytes of another allowed type are stored as what they are, and the entry records what the
        client declared (``uploadedAs``), so the mismatch is told to ``on_mismatch`` once per key, not at
        every re-upload (the server sets ``on_mismatch`` to its log)."""
        from .audio import measure_duration, sniff_mime
        from .errors import AudioError

        try:
            with open(staged.path, "rb") as fh:
                actual = sniff_mime(fh.read(12)) or mime
            if actual != mime and actual not in {MIME_ALIASES.get(m, m) for m in self.allowed}:
                raise AudioError(f"declared {mime}, but the bytes are {actual}, which is not allowed")
            duration = measure_duration(staged.path, actual)
            told = None
            if actual != mime:
                before = self.index.get(key)
                told = before is not None and (before.meta.get("uploadedAs"), before.meta.get("mimeType")) == (
                    mime, actual)
                meta = {**meta, "uploadedAs": mime}
            entry = self.index.store.commit(staged, key, actual, duration, meta)
        except AudioError as exc:
            raise BadMessage(str(exc), key, UPLOAD_ERROR) from None
        finally:
            staged.discard()
        self.index.add(entry)
        if told is False and self.on_mismatch is not None:
            self.on_mismatch(f"upload {key}: declared {mime}, the bytes are {actual}: stored as {entry.path.name}", key)
        return encode(UPLOAD_SUCCESS, {"cacheKey": key, "filePath": file_path(entry), "duration": duration,
                                       "size": entry.size})

    def evict(self, max_cache_size: int | None) -> list[Entry]:
        """Least recently used entries removed until the cache fits; one that cannot be removed stays indexed."""
        if max_cache_size is None:
            return []
        self.index.sync()
        total = self.index.total_size()
        victims = []
        for entry in self.index.lru():
            if total <= max_cache_size:
                break
            victims.append(entry)
            total -= entry.disk_size
        removed = []
        if victims:
            store = self.index.store
            with store.locked():
                for entry in victims:
                    if store.remove([store.meta_path(entry.key), entry.path]).failed is None:
                        self.index.discard(entry.key)
                        removed.append(entry)
        return removed


def _base64_of(url: object) -> memoryview | None:
    """The base64 part of a data URL. Its own mime type is not trusted (browsers
    often say application/octet-stream); the declared one is checked against the bytes."""
    if isinstance(url, str):
        if not url.isascii():
            return None
        url = url.encode()
    if not isinstance(url, (bytes, memoryview)):
        return None
    view = memoryview(url)
    begin = _base64_start(bytes(view[:URL_HEAD]))
    return None if begin is None else view[begin:]


URL_HEAD = 128  # "data:<mime>;base64," must end within this many characters


def _base64_start(head: bytes) -> int | None:
    """Where the base64 starts in a data URL, given its first ``URL_HEAD`` characters (or all, if shorter)."""
    comma = head.find(b",")
    if comma < 0 or not head.startswith(b"data:") or not head.endswith(b";base64", 0, comma):
        return None
    return comma + 1


def _key_of(data: dict) -> str | None:
    key = data.get("cacheKey")
    return key if isinstance(key, str) and len(key) <= 64 else None
