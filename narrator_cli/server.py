"""``narrator serve``: asyncio glue around the sans-I/O HTTP and WebSocket codecs.

One port serves the audio files, the cleanup and health endpoints, and the
WebSocket upgrade that speaks the narrator events. Everything that decides
anything lives in ``http``, ``ws`` and ``protocol``; this module reads,
writes, times out and schedules.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import ipaddress
import json
import os
import signal
import ssl
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from . import __version__, http, page, protocol, ws
from .errors import NarratorError, UsageError
from .keys import is_key
from .maintenance import cleanup
from .store import Entry, Store

READ_CHUNK = 1 << 17
INLINE_BODY = 1 << 18  # files up to this size go out in the same write as their head; bigger ones by sendfile
HEADER_TIMEOUT = 10.0
FLUSH_EVERY = 32  # replies
SLOWEST_READER = 16 * 1024  # bytes/s a download may take before its idle timeout runs
CACHED_REPLIES = protocol.CACHED_REPLIES
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
# An upload is held whole in memory as base64 (4/3 of the file) while it is checked, and decoded beside it:
# 2 GB of audio is already ~2.7 GB of message, and no narration line comes near it.
MAX_FILE_SIZE = 2048 * 1_000_000
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# The HTTP routes besides the audio files and the page's own files: path -> (handler, who needs the token:
# the name the log gives a refusal, or None for everyone).
ROUTES: dict[str, tuple[str, str | None]] = {
    "/__narrator-health": ("_health", None),
    protocol.INDEX_PATH: ("_listing", "index"),
    "/__narrator-cleanup": ("_cleanup_request", "cleanup"),
    page.ROWS_PATH: ("_page_rows", "page rows"),
    page.ENTRY_PATH: ("_page_entry", "page entry"),
}
CACHE_UNREADABLE = "the server cannot read its cache"  # what a client is told; the log names the path


@dataclass
class Options:
    host: str = "127.0.0.1"
    port: int = 8790
    token: str | None = None
    allow_origins: list[str] = field(default_factory=list)
    allow_hosts: list[str] = field(default_factory=list)
    allowed_mime_types: tuple[str, ...] = protocol.DEFAULT_MIME_TYPES
    max_file_size: int = 50_000_000
    max_age: float | None = 30 * 86400.0
    max_cache_size: int | None = None
    idle_timeout: float = 120.0
    quiet: bool = False
    json_log: bool = False
    storage: Any = None  # a storage.bucket.Bucket behind the folder (``--storage``), or None
    tls_cert: str | None = None  # PEM certificate chain: serve https:// and wss:// on the same port
    tls_key: str | None = None  # its private key (PEM); None: in tls_cert
    flush_every: float = protocol.TOUCH_EVERY  # hits and uses only memory knows reach the disk at least this often


class Log:
    """Console lines for uploads, hits, misses, refusals and cleanups; never a secret."""

    def __init__(self, quiet: bool, as_json: bool) -> None:
        self.quiet, self.as_json = quiet, as_json
        self.console = None
        self._second, self._stamp = -1, ""
        if not as_json and sys.stderr.isatty():
            from rich.console import Console

            self.console = Console(stderr=True, soft_wrap=True, highlight=False)

    def __call__(self, event: str, message: str, **fields: Any) -> None:
        if self.quiet and event not in ("listening", "error"):
            return
        if self.as_json:
            line = json.dumps({"time": round(time.time(), 3), "event": event, **fields, "message": message})
        elif self.console is None:  # plain lines when not a terminal: a busy server logs thousands a second
            line = f"{self.timestamp(time.time())} {event:<9} {message}"
        else:
            from rich.markup import escape

            style = _STYLES.get(event, "none")
            self.console.print(f"[{style}]{event:<9}[/] {escape(message)}")
            return
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def timestamp(self, now: float) -> str:
        """ISO 8601 UTC with milliseconds, e.g. ``2026-11-30T08:01:13.123Z``; the date part is made once a second."""
        second = int(now)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{min(int((now - second) * 1000), 999):03d}Z"


_STYLES = {"upload": "green", "hit": "cyan", "miss": "yellow", "refused": "red", "cleanup": "magenta",
           "error": "bold red"}


class Watchdog:
    """Closes a connection that stays silent past its deadline.

    One timer per connection, re-armed lazily: a read only stores a later
    deadline (a float), and the timer, when it fires early, sleeps again until
    the current one. ``asyncio.timeout`` around every read cost a timer and a
    context manager per message, a tenth of a small request's time.
    """

    def __init__(self, task: asyncio.Task) -> None:
        self.task = task
        self.expired = False
        self.deadline = 0.0
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None

    def until(self, deadline: float) -> None:
        self.deadline = deadline
        if self._handle is None or deadline < self._handle.when():
            if self._handle is not None:
                self._handle.cancel()
            self._handle = self._loop.call_at(deadline, self._fire)

    def after(self, seconds: float) -> None:
        self.until(self._loop.time() + seconds)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def expire(self) -> None:
        """What silence ends in (a WebSocket says goodbye first): the connection's task is
        cancelled wherever it waits, a read, a drain or a sendfile, and its socket then aborted
        (``expired``): nothing is flushed to a peer that stopped reading. Cancelling first
        matters: aborting under a running ``loop.sendfile`` leaves it waiting forever (3.11)."""
        self.expired = True
        self.task.cancel()

    def _fire(self) -> None:
        self._handle = None
        if self._loop.time() < self.deadline:
            self._handle = self._loop.call_at(self.deadline, self._fire)
        else:
            self.expire()


class Server:
    def __init__(self, store: Store, options: Options) -> None:
        self.store = store
        self.options = options
        self.log = Log(options.quiet, options.json_log)
        self.index = protocol.Index(store)
        self.handler = protocol.Handler(self.index, options.allowed_mime_types, options.max_file_size)
        self.handler.on_mismatch = lambda message, key: self.log("mismatch", message, cacheKey=key)
        self.server: asyncio.Server | None = None
        self.uploads: set[asyncio.Task] = set()
        self._flusher: asyncio.Task | None = None
        self.connections: set[asyncio.Task] = set()
        self._good_hosts: set[str] = set()
        self._heads: dict[str, tuple[dict, str, list[tuple[str, str]], bytes]] = {}  # key -> (meta, _audio_heads)
        self.tier = None
        self._fetching: dict[str, asyncio.Future] = {}  # key -> its read-through in flight (one per key)
        if options.storage is not None:
            from .storage.tier import Tier

            self.tier = Tier(options.storage, store, self.log)

    # --- lifecycle -------------------------------------------------------------
    async def start(self) -> tuple[str, int]:
        """Bind, then run the start-up cleanup: a server that cannot listen deletes nothing."""
        host, port = self.options.host, self.options.port
        context = tls_context(self.options.tls_cert, self.options.tls_key) if self.options.tls_cert else None
        try:
            self.server = await asyncio.start_server(self._connection, host, port, limit=READ_CHUNK,
                                                     reuse_address=True, ssl=context,
                                                     ssl_handshake_timeout=min(self.options.idle_timeout, 60.0)
                                                     if context else None)
        except (OSError, OverflowError) as exc:  # OverflowError: a port beyond 65535
            raise UsageError(f"cannot serve on {_host_port(host, port)}: {_bind_error(exc)}") from None
        if self.options.max_age is not None:
            try:
                self._cleanup(self.options.max_age, None, "start-up")
            except BaseException:
                self.server.close()
                raise
        self._flusher = asyncio.create_task(self._flush_every(self.options.flush_every))
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    async def _flush_every(self, seconds: float) -> None:
        """Writes what only memory knows (hits, uses) on a timer too: otherwise it waits for the next request
        after a minute, so an idle server that is killed hard would lose it."""
        while True:
            await asyncio.sleep(seconds)
            try:
                self.index.flush()
            except (OSError, NarratorError) as exc:  # tried again at the next tick; serving goes on
                self.log("error", f"cannot record hits and uses: {getattr(exc, 'strerror', None) or exc}")

    async def run(self, announce: Callable[[str], None] | None = None, signalled: list[int] | None = None) -> None:
        """Serve until SIGINT or SIGTERM, both a normal stop. ``announce(url)`` runs once the socket is bound;
        ``signalled``: signals that came before the loop could handle them (the server then stops at once)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:  # before the start-up cleanup, so a signal during it is a stop like any other
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
        if signalled:  # while the index was read: stop before listening at all
            return
        host, port = await self.start()
        url = f"{'https' if self.options.tls_cert else 'http'}://{_host_port(host, port)}"
        warming = asyncio.create_task(asyncio.to_thread(page.warm, dict(self.index.entries)))  # the first page load
        if announce is not None:
            announce(url)
        self.log("listening", f"narrator serve {__version__} on {url} ({len(self.index.entries)} entries in "
                 f"{self.store.root}); the page: {url}/", url=url, entries=len(self.index.entries))
        await stop.wait()
        warming.cancel()
        await self.shutdown()

    async def shutdown(self, grace: float = 10.0) -> None:
        """Stop accepting, let uploads finish (their writes are atomic either way), close the rest."""
        if self.server:
            self.server.close()
        if self._flusher is not None:
            self._flusher.cancel()
        if self.uploads:
            await asyncio.wait(self.uploads, timeout=grace)
        for task in list(self.connections):
            task.cancel()
        if self.connections:
            await asyncio.wait(self.connections, timeout=grace)
        self.index.flush()  # the next start rebuilds the LRU order from file times
        if self.tier is not None:
            await asyncio.to_thread(self.tier.close, grace)
        self.log("stopped", "server stopped")

    # --- connections -------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        dog = Watchdog(task)
        try:
            await self._http(reader, writer, dog)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, asyncio.CancelledError):
            pass
        except Exception as exc:  # noqa: BLE001 - one bad peer never takes the server down
            self.log("error", f"connection failed: {type(exc).__name__}: {exc}")
        finally:
            dog.cancel()
            self.connections.discard(task)
            if dog.expired:
                writer.transport.abort()
            else:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dog: Watchdog) -> None:
        parser = http.RequestParser()
        loop = asyncio.get_running_loop()
        while True:
            request = None
            deadline = loop.time() + HEADER_TIMEOUT
            while request is None:
                try:
                    request = parser.next_request()
                except http.HTTPError as exc:
                    await self._send(writer, exc.status, {"error": str(exc) or "bad request"}, keep_alive=False)
                    return
                if request is not None:
                    break
                dog.until(deadline if parser.has_partial() else loop.time() + self.options.idle_timeout)
                data = await reader.read(READ_CHUNK)
                if not data:
                    return
                parser.receive_data(data)
            if request.header("upgrade", "").lower() == "websocket":
                await self._upgrade(request, parser.trailing_data(), reader, writer, dog)
                return
            try:
                keep = await self._route(request, writer, dog)
            except NarratorError as exc:  # the cache cannot be read (permissions): this request fails, not the server
                self.log("error", str(exc))
                await self._send(writer, 503, {"error": CACHE_UNREADABLE})
                keep = True
            if not (keep and request.keep_alive):
                return

    async def _route(self, request: http.Request, writer: asyncio.StreamWriter, dog: Watchdog) -> bool:
        refusal = self._check_host(request)
        if refusal:
            await self._send(writer, 400, {"error": refusal}, keep_alive=False)
            return False
        cors = self._cors(request)
        if request.method == "OPTIONS":
            await self._send(writer, 204, None, cors + [
                ("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS"),
                ("Access-Control-Allow-Headers", "Range, If-None-Match, Authorization, X-Narrator-Token"),
                ("Access-Control-Max-Age", "600")])
            return True
        if request.method not in ("GET", "HEAD"):
            await self._send(writer, 405, {"error": "method not allowed"}, [("Allow", "GET, HEAD, OPTIONS")])
            return True
        if request.target.startswith(protocol.AUDIO_PREFIX):
            return await self._audio(request, writer, cors, dog)
        route = ROUTES.get(request.path)
        if route is None:
            return await self._page_asset(request, writer, cors)
        handler, who = route
        if who is not None and not self._authorised(request):
            self.log("refused", f"{who} without a valid token")
            await self._send(writer, 401, {"error": "unauthorized"}, cors)
            return True
        await getattr(self, handler)(request, writer, cors)
        return True

    async def _health(self, request: http.Request, writer: asyncio.StreamWriter, cors: list) -> None:
        await self._send(writer, 200, self._health_body(), cors, head=request.method == "HEAD")

    def _health_body(self) -> dict:
        from .costs import ledger

        self.index.sync()
        costs = ledger.report(list(self.index.entries.values()), self.index.hits.counts())
        body = {"status": "ok", "version": __version__, "entries": len(self.index.entries),
                "bytes": self.index.total_size(), **costs}
        if self.tier is not None:
            body["storage"] = self.tier.stats()
        return body

    async def _cleanup_request(self, request: http.Request, writer: asyncio.StreamWriter, cors: list) -> None:
        self.index.flush()  # the cleanup reads file times: give it the uses only memory knows
        result = await asyncio.to_thread(self._cleanup, self.options.max_age, self.options.max_cache_size, "request")
        await self._send(writer, 200, result, cors, head=request.method == "HEAD")

    async def _page_asset(self, request: http.Request, writer: asyncio.StreamWriter, cors: list) -> bool:
        """The page's own files (``/``, its script and style), each with the page's Content-Security-Policy."""
        found = page.asset(request.path)
        if found is None:
            await self._send(writer, 404, {"error": "not found"}, cors, head=request.method == "HEAD")
            return True
        body, kind = found
        await self._send_bytes(writer, request, body, kind, page.HEADERS)
        return True

    async def _page_rows(self, request: http.Request, writer: asyncio.StreamWriter, cors: list) -> None:
        """Every entry as a row of the page, with the header's totals."""
        self.index.sync()
        body = page.rows(self.index.entries, self.index.last_use, self.index.hits.counts(), __version__,
                         self.index.total_size())
        await self._send_bytes(writer, request, body, "application/json", [*cors, ("Cache-Control", "no-store")])

    async def _page_entry(self, request: http.Request, writer: asyncio.StreamWriter, cors: list) -> None:
        """One entry's text and word timings (``?key=``), for the captions of the line being played."""
        key = request.query.get("key", "")
        entry = self.index.get(key) if is_key(key) else None
        if entry is None:
            await self._send(writer, 404, {"error": "not found"}, cors, head=request.method == "HEAD")
            return
        await self._send_bytes(writer, request, page.entry_body(entry), "application/json",
                               [*cors, ("Cache-Control", "no-store")])

    async def _send_bytes(self, writer: asyncio.StreamWriter, request: http.Request, body: bytes, kind: str,
                          headers: list[tuple[str, str]]) -> None:
        head = http.response_head(200, [*headers, ("Content-Type", kind), ("Content-Length", str(len(body)))])
        writer.write(head + (b"" if request.method == "HEAD" else body))
        await writer.drain()

    async def _audio(self, request: http.Request, writer: asyncio.StreamWriter, cors: list, dog: Watchdog) -> bool:
        head = request.method == "HEAD"
        name = http.safe_file_name(request.target, protocol.AUDIO_PREFIX)
        if name and self._fetching:
            await self._landed(name[:8])
        entry = self.index.get(name[:8]) if name else None
        if entry is None or entry.path.name != name:
            if name is None:
                self.log("refused", f"bad audio path {request.target[:80]!r}")
            await self._send(writer, 404, {"error": "not found"}, cors, head=head)
            return True
        etag, fixed, plain = self._audio_heads(entry)
        headers = cors + fixed
        if http.etag_matches(request.header("if-none-match"), etag):
            writer.write(http.response_head(304, headers))
            await writer.drain()
            self.index.use(entry)  # a client checking its copy is still using it
            return True
        size = entry.size
        rng = http.parse_range(request.header("range"), size) if request.header("if-range") in (None, etag) else None
        if rng == http.UNSATISFIABLE:
            await self._send(writer, 416, None, headers + [("Content-Range", f"bytes */{size}")], head=True)
            return True
        start, end, status = (0, size - 1, 200) if rng is None else (rng[0], rng[1], 206)
        length = end - start + 1 if size else 0
        if status == 200 and not cors:
            response = plain  # the usual request: its head is made once per entry
        else:
            headers.append(("Content-Length", str(length)))
            if status == 206:
                headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
            response = http.response_head(status, headers)
        try:
            fh = open(entry.path, "rb")
        except OSError:
            await self._send(writer, 404, {"error": "not found"}, cors, head=head)
            return True
        if not head:  # a slow reader is not a silent one: it has until the body could go at SLOWEST_READER
            dog.after(self.options.idle_timeout + length / SLOWEST_READER)
        with fh:
            if head or length <= INLINE_BODY:
                body = b"" if head else os.pread(fh.fileno(), length, start)
                writer.write(response + body)
            else:
                writer.write(response)
                await writer.drain()
                await asyncio.get_running_loop().sendfile(writer.transport, fh, start, length)
            await writer.drain()
        self.index.use(entry)
        return True

    async def _listing(self, request: http.Request, writer: asyncio.StreamWriter, cors: list) -> bool:
        """``GET /__narrator-index[?after=CURSOR][&fields=compact]``: every entry's metadata (or with
        ``fields=compact`` only what a comparison needs), or what changed after the cursor (removals as
        ``removed``), by ETag; the same token rules as the WebSocket."""
        fields = request.query.get("fields", "full")
        if fields not in ("full", "compact"):
            await self._send(writer, 400, {"error": "fields must be full or compact"}, cors)
            return True
        etag, body = self.index.listing(request.query.get("after"), fields == "compact")
        headers = [*cors, ("ETag", etag), ("Cache-Control", "no-cache")]
        if http.etag_matches(request.header("if-none-match"), etag):
            writer.write(http.response_head(304, headers))
            await writer.drain()
            return True
        headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        writer.write(http.response_head(200, headers) + (b"" if request.method == "HEAD" else body))
        await writer.drain()
        return True

    def _audio_heads(self, entry: Entry) -> tuple[str, list[tuple[str, str]], bytes]:
        """(ETag, the headers every response for this file carries, the whole head of a plain 200),
        made once per version of the entry's metadata."""
        cached = self._heads.get(entry.key)
        if cached is None or cached[0] is not entry.meta:
            etag = _etag(entry)
            fixed = [
                ("Content-Type", entry.meta.get("mimeType", "application/octet-stream")),
                ("ETag", etag),
                ("Cache-Control", "public, max-age=31536000, immutable"),
                ("X-Content-Type-Options", "nosniff"),
                ("Accept-Ranges", "bytes"),
            ]
            plain = http.response_head(200, [*fixed, ("Content-Length", str(entry.size))])
            if len(self._heads) >= CACHED_REPLIES:
                self._heads.clear()
            cached = self._heads[entry.key] = (entry.meta, etag, fixed, plain)
        return cached[1], list(cached[2]), cached[3]

    async def _send(self, writer: asyncio.StreamWriter, status: int, body: dict | None,
                    headers: list | None = None, keep_alive: bool = True, head: bool = False) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        hdrs = list(headers or [])
        if body is not None:
            hdrs.append(("Content-Type", "application/json"))
        if not any(k.lower() == "content-length" for k, _ in hdrs):
            hdrs.append(("Content-Length", str(len(payload))))
        if not keep_alive:
            hdrs.append(("Connection", "close"))
        writer.write(http.response_head(status, hdrs) + (b"" if head else payload))
        await writer.drain()

    # --- checks --------------------------------------------------------------------
    def _check_host(self, request: http.Request) -> str | None:
        """Against DNS rebinding: the Host must be loopback, an IP address, or allowed by name."""
        host = request.header("host", "")
        if host in self._good_hosts:
            return None
        name = urlsplit(f"//{host}").hostname or ""
        good = name in LOOPBACK_HOSTS or name.endswith(".localhost") or name in self.options.allow_hosts
        if not good:
            with contextlib.suppress(ValueError):
                good = bool(ipaddress.ip_address(name))
        if good:
            if len(self._good_hosts) < 64:  # the few Host values clients really send
                self._good_hosts.add(host)
            return None
        self.log("refused", f"request for host {host[:80]!r}")
        return "host not allowed"

    def _origin_allowed(self, origin: str | None) -> bool:
        if origin is None:
            return True  # not a browser
        if origin in self.options.allow_origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.hostname in LOOPBACK_HOSTS \
            and not parts.path.strip("/")

    def _cors(self, request: http.Request) -> list[tuple[str, str]]:
        origin = request.header("origin")
        if origin and self._origin_allowed(origin):
            return [("Access-Control-Allow-Origin", origin), ("Vary", "Origin"),
                    ("Access-Control-Expose-Headers", "Content-Length, Content-Range, ETag")]
        return [("Vary", "Origin")] if origin else []

    def _authorised(self, request: http.Request) -> bool:
        token = self.options.token
        if not token:
            return True
        given = request.query.get("token") or request.header("x-narrator-token") or ""
        auth = request.header("authorization", "")
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode(), token.encode())

    # --- websocket -------------------------------------------------------------------
    async def _upgrade(self, request: http.Request, rest: bytes, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter, dog: Watchdog) -> None:
        refusal = self._check_host(request)
        status = 400
        if refusal is None and not self._origin_allowed(request.header("origin")):
            refusal, status = "origin not allowed", 403
            self.log("refused", f"WebSocket from origin {request.header('origin', '')[:80]!r}")
        if refusal is None and not self._authorised(request):
            refusal, status = "unauthorized", 401
            self.log("refused", "WebSocket without a valid token")
        key = request.header("sec-websocket-key")
        if refusal is None and (request.method != "GET" or not key or request.header("sec-websocket-version") != "13"
                                or "upgrade" not in request.header("connection", "").lower()):
            refusal = "bad WebSocket handshake"
        if refusal is not None:
            await self._send(writer, status, {"error": refusal}, keep_alive=False)
            return
        offered = [p.strip() for p in request.header("sec-websocket-protocol", "").split(",") if p.strip()]
        subprotocol = protocol.SUBPROTOCOL if protocol.SUBPROTOCOL in offered else None
        writer.write(ws.server_handshake_response(key, subprotocol))
        conn = ws.Connection(ws.Role.SERVER, max_message_size=self.handler.max_message_size())
        conn.send_text(protocol.CONNECTED)
        await self._websocket(conn, rest, reader, writer, dog)

    async def _websocket(self, conn: ws.Connection, data: bytes, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter, dog: Watchdog) -> None:
        def goodbye() -> None:  # silent too long: a close frame, then the socket (aborted if it cannot flush)
            conn.send_close(1001, "idle timeout")
            writer.write(conn.data_to_send())
            writer.transport.close()
            del dog.expire  # a second silence, of the peer that should answer the close: the default
            dog.after(1.0)

        dog.expire = goodbye  # type: ignore[method-assign]
        tasks: set[asyncio.Task] = set()
        stream: protocol.UploadStream | None = None
        if data:
            conn.receive_data(data)  # frames that came with the handshake
        try:
            while True:
                stream = self._dispatch(conn, writer, tasks, stream)
                stream = self._stream(conn, stream)
                out = conn.data_to_send()
                if out:
                    writer.write(out)
                    await writer.drain()
                if conn.closed:
                    return
                dog.after(self.options.idle_timeout)
                data = await reader.read(READ_CHUNK)
                conn.receive_data(data)  # b"" at EOF: the codec reports a 1006 close
                if len(data) == READ_CHUNK:
                    await asyncio.sleep(0)  # a large message arrives in many chunks: let others run between them
        finally:
            if stream is not None:
                stream.close()  # a message cut off mid-upload: delete what it staged
            for task in tasks:
                task.cancel()

    def _dispatch(self, conn: ws.Connection, writer: asyncio.StreamWriter, tasks: set[asyncio.Task],
                  stream: protocol.UploadStream | None) -> protocol.UploadStream | None:
        """Act on the codec's events. A method of its own so that no local keeps a message
        (tens of MB for an upload) alive while the connection waits for more."""
        for n, event in enumerate(conn.events(), 1):
            if isinstance(event, ws.Message):
                if stream is not None and stream.buf is event.data:
                    self._on_message(conn, event, writer, tasks, stream)
                    stream = None
                else:
                    self._on_message(conn, event, writer, tasks, None)
                if n % FLUSH_EVERY == 0:  # a long batch of requests: the first replies go out while it runs
                    writer.write(conn.data_to_send())
            elif isinstance(event, ws.Close) and event.code not in (1000, 1001, 1005, 1006, None):
                self.log("refused", f"WebSocket closed with {event.code}: {event.reason}")
        return stream

    def _stream(self, conn: ws.Connection, stream: protocol.UploadStream | None) -> protocol.UploadStream | None:
        """While a large text message arrives, decode the base64 already in: the decode
        then overlaps the receive instead of following it. One bounded step per read."""
        buf = conn.partial
        if stream is not None and stream.buf is not buf:  # its message was cut off: delete what it staged
            stream.close()
            stream = None
        if buf is None or len(buf) <= protocol.SPLICE_OVER:
            return None
        if stream is None:
            stream = self.handler.upload_stream(buf)
        stream.step()
        return stream

    def _on_message(self, conn: ws.Connection, message: ws.Message, writer: asyncio.StreamWriter,
                    tasks: set[asyncio.Task], stream: protocol.UploadStream | None = None) -> None:
        data: dict = {}
        try:
            if not message.text:
                raise protocol.BadMessage("expected a JSON text message")
            span = stream.finish(message.data) if stream is not None else None  # the stream knows where the URL is
            event, data, url_at = protocol.decode_located(message.data, span)
            if event == protocol.UPLOAD_AUDIO:
                key, mime, b64, meta = self.handler.parse_upload(data)
                head = stream.take(message.data, url_at, len(b64)) if stream is not None else None
                task = asyncio.create_task(self._upload(conn, writer, key, mime, b64, meta, head))
                tasks.add(task)
                self.uploads.add(task)
                task.add_done_callback(tasks.discard)
                task.add_done_callback(self.uploads.discard)
                return
            reply = self.handler.handle(event, data)
            if event == protocol.CHECK_AUDIO:
                hit = '"narrator:audio-exists"' in reply[:48]
                if not hit and self.tier is not None:  # answered once the bucket has been asked
                    task = asyncio.create_task(self._read_through(conn, writer, data, reply))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    return
                self.log("hit" if hit else "miss", data["cacheKey"], cacheKey=data["cacheKey"])
        except protocol.BadMessage as exc:
            self.log("refused", str(exc), cacheKey=exc.cache_key)
            reply = exc.reply()
        except NarratorError as exc:  # an entry or the folder cannot be read: this request fails, the connection stays
            key = data.get("cacheKey") if isinstance(data.get("cacheKey"), str) else None
            self.log("error", str(exc), cacheKey=key)
            reply = protocol.BadMessage(CACHE_UNREADABLE, key).reply()
        finally:
            if stream is not None:
                stream.close()  # done with it either way: drop the buffer, and the file unless taken
        conn.send_text(reply)

    async def _upload(self, conn: ws.Connection, writer: asyncio.StreamWriter, key: str, mime: str, b64: memoryview,
                      meta: dict, head: protocol.StreamedHead | None = None) -> None:
        try:
            staged = None
            steps = self.handler.decode_steps(key, b64, head)
            del b64, head  # the generator holds them only as long as it needs them
            try:
                for step in steps:
                    if step is None:
                        await asyncio.sleep(0)
                    else:
                        staged = step
            finally:
                steps.close()  # cancelled mid-decode: the generator deletes what it staged
            del steps
            assert staged is not None
            size, commit = staged.size, asyncio.to_thread(self.handler.store_upload, key, mime, staged, meta)
            # the thread owns it now, and finishes even if this task is cancelled
            reply = await asyncio.shield(commit)
            self.log("upload", f"{key} ({size} bytes, {mime})", cacheKey=key, size=size)
            if self.tier is not None:
                self.tier.enqueue(key)  # after the local commit: the bucket follows, never in the client's way
            await self._evict()
        except protocol.BadMessage as exc:
            self.log("refused", f"upload {key}: {exc}", cacheKey=key)
            reply = exc.reply()
        except (OSError, NarratorError) as exc:
            self.log("error", f"upload {key}: cannot write: {getattr(exc, 'strerror', None) or exc}", cacheKey=key)
            reply = protocol.encode(protocol.UPLOAD_ERROR, {"cacheKey": key, "error": "server could not store it"})
        except Exception as exc:  # noqa: BLE001 - a bug in one upload: its client still gets an answer
            self.log("error", f"upload {key} failed: {type(exc).__name__}: {exc}", cacheKey=key)
            reply = protocol.encode(protocol.UPLOAD_ERROR, {"cacheKey": key, "error": "server error"})
        if not conn.closed:
            conn.send_text(reply)
            with contextlib.suppress(ConnectionError):
                writer.write(conn.data_to_send())
                await writer.drain()

    async def _read_through(self, conn: ws.Connection, writer: asyncio.StreamWriter, data: dict, miss: str) -> None:
        """A check the folder misses: the bucket's entry, verified, answers it; one fetch per key however many
        ask at once. The answer goes as soon as the entry is verified, while its copy is committed to the
        folder (an audio request meanwhile waits for that commit). The event loop never waits on the bucket."""
        key = data["cacheKey"]
        reply, commit = miss, None
        try:
            fetch = self._fetching.get(key)
            if fetch is None:
                fetch = self._fetching[key] = asyncio.ensure_future(self._land(key))
            entry, commit = await asyncio.shield(fetch)
            if entry is not None:
                reply = protocol.exists_reply(entry)
        except (OSError, NarratorError) as exc:
            self.log("error", f"read-through {key}: {getattr(exc, 'strerror', None) or exc}", cacheKey=key)
        hit = commit is not None
        self.log("hit" if hit else "miss", key + (" (from the bucket)" if hit else ""), cacheKey=key)
        if not conn.closed:
            conn.send_text(reply)
            with contextlib.suppress(ConnectionError):
                writer.write(conn.data_to_send())
                await writer.drain()
        if commit is not None and data.get("use") is not False:
            with contextlib.suppress(Exception):  # a failed commit is logged by _land
                self.index.hit(await asyncio.shield(commit))

    async def _land(self, key: str) -> tuple[Entry | None, asyncio.Future | None]:
        """(the entry as the folder will hold it, its commit) for a key the bucket holds, else (None, None).
        The key stays in ``_fetching`` until its commit is over, so later checks and audio requests find it."""
        assert self.tier is not None
        try:
            landing = await asyncio.to_thread(self.tier.download, key)
            if landing is None:
                self._fetching.pop(key, None)
                return None, None
        except BaseException:
            self._fetching.pop(key, None)
            raise
        commit = asyncio.ensure_future(asyncio.to_thread(self.tier.keep, landing))

        def landed(done: asyncio.Future) -> None:
            self._fetching.pop(key, None)
            if done.cancelled():
                return
            if (exc := done.exception()) is None:
                self.index.add(done.result())
            else:
                why = getattr(exc, "strerror", None) or exc
                self.log("error", f"read-through {key}: cannot keep it in the folder: {why}", cacheKey=key)

        commit.add_done_callback(landed)
        return landing.entry, commit

    async def _landed(self, key: str) -> None:
        """Wait for a read-through of ``key`` under way, if any, to be in the folder (or to have failed)."""
        fetch = self._fetching.get(key)
        if fetch is not None:
            with contextlib.suppress(Exception):
                _, commit = await asyncio.shield(fetch)
                if commit is not None:
                    await asyncio.shield(commit)

    # --- maintenance ---------------------------------------------------------------
    async def _evict(self) -> None:
        """LRU eviction after an upload; a failure here is logged and never turns the stored upload into an error."""
        if self.options.max_cache_size is None:
            return
        try:
            evicted = await asyncio.to_thread(self.handler.evict, self.options.max_cache_size)
        except Exception as exc:  # noqa: BLE001 - e.g. a cache folder made unreadable under us
            self.log("error", f"eviction failed: {getattr(exc, 'strerror', None) or exc}")
            return
        if evicted:
            self.log("cleanup", f"evicted {len(evicted)} least recently used entries",
                     evicted=[e.key for e in evicted])

    def _cleanup(self, max_age: float | None, max_size: int | None, why: str) -> dict:
        result = cleanup(self.store, max_age, max_size)
        self.index.reload()
        summary = result.as_dict()
        removed = len(result.expired) + len(result.evicted) + len(result.broken) + len(result.temporary)
        self.log("cleanup", f"{why}: removed {removed} files, freed {result.freed} bytes", **summary)
        return summary


def _etag(entry: Entry) -> str:
    digest = entry.meta.get("sha256")
    if isinstance(digest, str) and digest.isalnum():
        return f'"{digest[:32]}"'
    created = zlib.crc32(str(entry.meta.get("createdAt", "")).encode())
    return f'"{entry.size:x}-{created:08x}"'


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind_error(exc: OSError | OverflowError) -> str:
    """Why a bind failed, in a few words (asyncio wraps the reason in a long sentence of its own)."""
    code = getattr(exc, "errno", None)
    if code == errno.EADDRINUSE:
        return "address already in use (another server? choose another port)"
    if code == errno.EADDRNOTAVAIL:
        return "not an address of this machine"
    if isinstance(code, int) and code > 0:
        return os.strerror(code).lower()
    return str(getattr(exc, "strerror", None) or exc)  # a host name that does not resolve, a port out of range


def tls_context(cert: str, key: str | None) -> ssl.SSLContext:
    """The server's TLS context from PEM files, or a one-line UsageError naming the file and why: checked
    before binding, so a server with a bad certificate never listens."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for path, what in ((cert, "--tls-cert"), (key, "--tls-key")):
        if path is not None and not os.path.isfile(path):
            why = "no such file" if not os.path.exists(path) else "not a file"
            raise UsageError(f"{what} {path}: {why}")
    try:
        context.load_cert_chain(cert, key)
    except OSError as exc:
        raise UsageError(f"cannot use {cert}{f' with {key}' if key else ''}: {_ssl_reason(exc)}") from None
    return context


def _ssl_reason(exc: OSError) -> str:
    """An ssl error's reason in words (``key values mismatch``), without the library's file and line."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        return reason.replace("_", " ").lower() + " (is it a PEM certificate and its private key?)"
    if isinstance(exc, ssl.SSLError):
        return "not a PEM certificate and its private key"
    return str(exc.strerror or exc).lower()


def generate_token() -> str:
    import secrets

    return secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(store: Store, options: Options, announce: Callable[[str], None] | None = None) -> None:
    """Run a server until SIGINT or SIGTERM. Both are a normal stop from the first instant: one that
    comes while the index is read or the start-up cleanup runs stops the server once that is done."""
    signalled: list[int] = []
    previous = {}
    with contextlib.suppress(ValueError):  # not the main thread: whoever runs us handles signals
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, lambda signum, frame: signalled.append(signum))
    try:
        server = Server(store, options)
        asyncio.run(server.run(announce, signalled))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = ["Options", "Server", "serve", "generate_token", "is_loopback"]
