"""The team cache from the command line: a blocking client over the sans-I/O WebSocket codec.

One connection carries many requests at once; a reader thread matches replies
to waiting requests by event kind and cacheKey, so a 500-line check costs about
one round trip, not 500. Works against ``narrator serve`` and against a Vite dev
server running the Motion Canvas narrator plugin (same framing).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import socket
import ssl
import threading
from collections import deque
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from . import protocol, ws
from .errors import Interrupted, NarratorError, UsageError
from .keys import is_key
from .store import Entry, Store, check_key

CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 30.0
UPLOAD_SECONDS_PER_MB = 1.0  # on top of REQUEST_TIMEOUT
SEND_EVERY = 64  # messages per write in a batch
CLOSE_WAIT = 1.0  # seconds close() waits for a write in progress before it drops the connection without a goodbye
MAX_DOWNLOAD = 1 << 30  # bytes, when the metadata gives no size (the plugin's own limit is configurable)
# How far a download's duration may be from its metadata's: the plugin's entries come from the browser, which
# measures with an audio element, while mutagen estimates MP3 lengths from frames and headers; they differ by
# a frame or two, or a few per cent for a VBR file without a Xing header. A different recording is further off.
DURATION_SLACK = 0.25  # seconds
DURATION_SLACK_RATIO = 0.05
NO_ENDPOINT = ("the server at {url} has no /__narrator-{name}: the Motion Canvas plugin has no health or cleanup "
               "endpoint (only narrator serve does)")
# Which request a reply answers; an error (for a message it could not read) may answer either.
_KINDS = {protocol.AVAILABLE: ("available",), protocol.AUDIO_EXISTS: ("check",), protocol.AUDIO_NOT_FOUND: ("check",),
          protocol.UPLOAD_SUCCESS: ("upload",), protocol.UPLOAD_ERROR: ("upload",), protocol.ERROR: ("check", "upload")}


class ServerUnavailable(NarratorError):
    """The server cannot be reached or stopped answering; callers may carry on without it."""

    exit_code = 2


class UntrustedServer(UsageError):
    """The server's certificate is not trusted or names another host: configuration (exit 2), never a reason
    to carry on without the server (``speak`` would then pay the provider for what the team has)."""


class ServerRefused(NarratorError):
    """The server answered, and the answer is no (an upload-error, a bad download)."""


def unsafe_file_path(path: object) -> str | None:
    """Why a reply's ``filePath`` may not be fetched, or None when it may.

    narrator serve sends ``/__narrator-audio/{name}``, the plugin ``'/' + audioPath + '/' + name``
    (served by Vite from its root), so any absolute path on the server's own origin is fine: one
    leading ``/``, no scheme or host (``//host/x`` is another host), and nothing that climbs out of a
    folder or reads differently on another system, even once percent-escapes are decoded.
    """
    if not isinstance(path, str) or not path:
        return "no filePath"
    for text in (path, unquote(path)):
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            return "has a control character"
        if "\\" in text:
            return "has a backslash"
        if text.startswith("//"):
            return "starts with '//', which names another host"
        if not text.startswith("/"):
            return "is not an absolute path on this server"
        parts = urlsplit(text)
        if parts.scheme or parts.netloc:
            return "names a scheme or host"
        segments = parts.path.split("/")
        if ".." in segments:
            return "has a '..' segment"
        if "." in segments:
            return "has a '.' segment"
    return None


def parse_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of a server URL; http(s) and ws(s) both accepted."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if scheme is None or not parts.hostname or port == -1:
        raise UsageError(f"invalid server URL {url!r}: use http://host:port")
    return scheme, parts.hostname, port or (443 if scheme == "wss" else 80), parts.path or "/"


def _route(raw: bytearray) -> tuple[str, str, bytearray] | None:
    """(event, cacheKey, raw) of a reply, read from its head when it is spelled the usual way."""
    m = protocol.REPLY_HEAD.match(raw)  # how narrator serve and the Vite plugin start a reply with a key
    if m is not None:
        return m.group(1).decode(), m.group(2).decode(), raw
    try:  # another spelling or order, no key, or not ours at all (Vite's connected, update, full-reload)
        obj = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("type") != "custom" or not isinstance(obj.get("data"), dict):
        return None
    event, key = obj.get("event"), obj["data"].get("cacheKey", "")
    return (event, key if isinstance(key, str) else "", raw) if isinstance(event, str) else None


class Batch:
    """Replies awaited together, with one wake-up when the last one is in: a ``Future``
    per request cost as much as the request. Filled by the reader thread; a reply is
    (event, raw message), parsed by whoever asked (``data``)."""

    __slots__ = ("replies", "left", "error", "done")

    def __init__(self, n: int) -> None:
        self.replies: list[tuple[str, bytearray] | None] = [None] * n
        self.left = n
        self.error: str | None = None
        self.done = threading.Event()
        if not n:
            self.done.set()

    def put(self, i: int, reply: tuple[str, bytearray]) -> None:  # under the client's pending lock
        self.replies[i] = reply
        self.left -= 1
        if not self.left:
            self.done.set()

    def fail(self, why: str) -> None:
        self.error = self.error or why
        self.done.set()


def data(raw: bytes | bytearray) -> dict:
    """The data of a reply the reader routed by its head; a cut-off or malformed one is refused."""
    try:
        obj = json.loads(raw.decode())  # from str: json.loads skips guessing the encoding of bytes
        return obj["data"] if isinstance(obj["data"], dict) else {}
    except (ValueError, KeyError, TypeError):  # UnicodeDecodeError is a ValueError
        raise ServerRefused("the server sent a malformed reply") from None


def is_loopback(host: str) -> bool:
    """Is ``host`` this machine by its name alone (no lookup: a name that resolves to 127.0.0.1 is not)?"""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _configured(name: str) -> object:
    """A setting (``ca_file``, ``insecure``) for a client its caller built without it (``speak``'s team
    cache, ``sync``'s reconnect): the same sources and order as every other setting."""
    from . import config

    return config.load().get(name)


class Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = REQUEST_TIMEOUT,
                 connect_timeout: float = CONNECT_TIMEOUT, ca_file: str | None = None,
                 insecure: bool | None = None) -> None:
        """``ca_file``: PEM certificates to trust for https/wss instead of the system's; ``insecure``: send a
        token over plain http to another machine. None: from the settings (``ca_file``, ``insecure``).
        A token that would travel unencrypted is refused here, before any connection (UsageError)."""
        self.url = url
        self.scheme, self.host, self.port, self.path = parse_url(url)
        self.token = token
        if token and self.scheme == "ws" and not is_loopback(self.host):
            if insecure is None:
                insecure = bool(_configured("insecure"))
            if not insecure:
                raise UsageError(f"refusing to send the token to {url} unencrypted ({self.host} is not this "
                                 "machine): use https:// (narrator serve --tls-cert), or --insecure "
                                 "(NARRATOR_INSECURE=1) to send it anyway")
        self.insecure = bool(insecure)
        self.ca_file = ca_file
        self._context: ssl.SSLContext | None = None
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.http_base = f"{'https' if self.scheme == 'wss' else 'http'}://{self._netloc()}"
        self._sock: socket.socket | None = None
        self._conn = ws.Connection(ws.Role.CLIENT)
        self._lock = threading.Lock()  # the codec and the socket's write side
        self._pending: dict[tuple[str, str], deque[tuple[Batch, int]]] = {}
        self._pending_lock = threading.Lock()
        self._broken: str | None = None
        self._http = threading.local()  # one HTTP client a thread: a shared pool's lock serialises downloads
        self._http_clients: list[Any] = []
        self.narrator_serve = False  # set by connect(): the server named itself narrator serve, not the plugin

    def tls_context(self) -> ssl.SSLContext:
        """The context that verifies the server: the system's trust store, or only ``ca_file``'s."""
        if self._context is None:
            ca_file = self.ca_file if self.ca_file is not None else _configured("ca_file")
            try:
                self._context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            except FileNotFoundError:
                raise UsageError(f"CA file {ca_file}: no such file") from None
            except (OSError, ssl.SSLError) as exc:
                why = _ssl_reason(exc) if isinstance(exc, ssl.SSLError) else (exc.strerror or str(exc)).lower()
                raise UsageError(f"CA file {ca_file}: cannot use it: {why} (PEM certificates expected)") from None
            self.ca_file = str(ca_file) if ca_file else None
        return self._context

    def _untrusted(self, exc: ssl.SSLCertVerificationError) -> UntrustedServer:
        """One line naming the server and why its certificate is refused, and what to do about it."""
        why = exc.verify_message or _ssl_reason(exc)
        trust = f"the CA file {self.ca_file}" if self.ca_file else "the system's trust store"
        hint = "" if "ostname" in why else " (a team's own CA: --ca-file or NARRATOR_CA_FILE)"
        return UntrustedServer(f"cannot trust the server at {self.url}: {why.rstrip('.')}; checked against "
                               f"{trust}{hint}")

    def _netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    # --- connection ------------------------------------------------------------------
    def connect(self) -> Client:
        """Connect, handshake, and confirm the narrator events are served; else ServerUnavailable."""
        where = f"no narrator server at {self.url}"
        sock = None
        try:
            context = self.tls_context() if self.scheme == "wss" else None
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
            if context is not None:
                sock = context.wrap_socket(sock, server_hostname=self.host)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            key = ws.new_key()
            target = self.path + (f"?token={quote(self.token, safe='')}" if self.token else "")
            sock.sendall(ws.client_handshake_request(self._netloc(), target, key, protocol.SUBPROTOCOL))
            received = b""
            while (rest := ws.parse_server_response(received, key, protocol.SUBPROTOCOL)) is None:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("connection closed during the handshake")
                received += chunk
        except ws.HandshakeError as exc:
            sock.close()  # type: ignore[union-attr]  # the handshake needs a socket
            text = str(exc)
            if "401" in text or "403" in text:
                raise ServerUnavailable(f"{where}: refused ({text}; check the token)") from None
            if "400" in text:  # how a Vite dev server refuses a missing or wrong token
                raise ServerUnavailable(f"{where}: refused ({text}; a Vite dev server wants its token: --token)") \
                    from None
            raise ServerUnavailable(f"{where}: {text}") from None
        except (OSError, ssl.SSLError) as exc:
            if sock is not None:
                sock.close()
            if isinstance(exc, ssl.SSLCertVerificationError):
                raise self._untrusted(exc) from None
            if isinstance(exc, ssl.SSLError):
                reason = f"TLS handshake failed: {_ssl_reason(exc)} (is it an https server?)"
            elif isinstance(exc, TimeoutError) and sock is not None:  # Vite ignores upgrades on other paths
                reason = f"connected, but no WebSocket handshake on {self.path!r} within {self.connect_timeout:g} s"
            elif isinstance(exc, TimeoutError):
                reason = "timed out"
            else:
                reason = getattr(exc, "strerror", None) or str(exc)
            raise ServerUnavailable(f"{where}: {reason}") from None
        sock.settimeout(None)
        self._sock = sock
        if rest:
            self._conn.receive_data(rest)
        available = self._requests("available", [("", protocol.encode(protocol.CHECK_AVAILABLE, {}))])
        threading.Thread(target=self._read, name="narrator-client", daemon=True).start()
        if not available.done.wait(self.connect_timeout) or available.error:
            self.close()
            raise ServerUnavailable(f"{where}: it does not answer narrator:check-available")
        reply = available.replies[0]
        with contextlib.suppress(ServerRefused):
            self.narrator_serve = reply is not None and data(reply[1]).get("server") == protocol.SERVER_NAME
        return self

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._lock.acquire(timeout=CLOSE_WAIT):  # a large upload being written: drop it, no goodbye
                try:
                    with contextlib.suppress(OSError):
                        self._conn.send_close(1000)
                        sock.sendall(self._conn.data_to_send())
                finally:
                    self._lock.release()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for http in self._http_clients:
            http.close()
        self._http_clients.clear()
        self._fail_all("connection closed")

    def __enter__(self) -> Client:
        return self.connect() if self._sock is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> None:
        sock = self._sock
        try:
            while sock is not None:
                with self._lock:
                    events = self._conn.events()
                    out = self._conn.data_to_send()  # pongs, the close echo
                    if out:
                        sock.sendall(out)
                replies = [e.data for e in events if isinstance(e, ws.Message) and e.text]
                if replies:
                    self._dispatch(replies)
                if any(isinstance(e, ws.Close) for e in events):
                    self._fail_all(f"the server at {self.url} closed the connection")
                    return
                data = sock.recv(1 << 18)
                with self._lock:
                    self._conn.receive_data(data)
        except OSError:
            self._fail_all(f"lost the connection to {self.url}")
        except Exception as exc:  # noqa: BLE001 - a bug here must fail the waiting requests, not hang them
            self._fail_all(f"lost the connection to {self.url}: {type(exc).__name__}: {exc}")

    def _dispatch(self, replies: list[bytearray]) -> None:
        """Hand each reply to the oldest request waiting for its kind and key; drop the rest."""
        routed = [route for raw in replies if (route := _route(raw)) is not None]
        with self._pending_lock:
            for event, key, raw in routed:
                for kind in _KINDS.get(event, ()):
                    waiting = self._pending.get((kind, "" if kind == "available" else key))
                    if waiting:
                        batch, i = waiting.popleft()
                        batch.put(i, (event, raw))
                        break

    def _fail_all(self, why: str) -> None:
        self._broken = self._broken or why
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        for queue in pending.values():
            for batch, _ in queue:
                batch.fail(why)

    def _requests(self, kind: str, messages: list[tuple[str, str]]) -> Batch:
        """Await replies to (key, message) pairs, then send them all in one write."""
        if self._broken:
            raise ServerUnavailable(self._broken)
        if self._sock is None:
            raise ServerUnavailable(f"not connected to {self.url}")
        batch = Batch(len(messages))
        with self._pending_lock:
            pending = self._pending
            for i, (key, _) in enumerate(messages):
                queue = pending.get((kind, key))
                if queue is None:
                    queue = pending[kind, key] = deque()
                queue.append((batch, i))
        try:
            for start in range(0, len(messages), SEND_EVERY):  # the server starts on the first ones at once
                with self._lock:
                    for _, message in messages[start:start + SEND_EVERY]:
                        self._conn.send_text(message)
                    self._sock.sendall(self._conn.data_to_send())
        except OSError:
            self._fail_all(f"lost the connection to {self.url}")
        return batch

    def _wait(self, batch: Batch, kind: str, keys: list[str], timeout: float) -> list[tuple[str, bytearray]]:
        """All of a batch's replies; ServerUnavailable if the connection broke or ``timeout`` ran out."""
        if not batch.done.wait(timeout):
            with self._pending_lock:  # forget what is still awaited, so late replies go nowhere
                for key in set(keys):
                    queue = self._pending.get((kind, key))
                    if queue:
                        queue = deque(item for item in queue if item[0] is not batch)
                        if queue:
                            self._pending[kind, key] = queue
                        else:
                            del self._pending[kind, key]
            batch.fail(f"no reply from {self.url} within {timeout:g} s")
        if batch.error or batch.left:
            raise ServerUnavailable(batch.error or f"no reply from {self.url}")
        return batch.replies  # type: ignore[return-value]  # all filled: left == 0

    # --- the events ---------------------------------------------------------------------
    def check(self, keys: list[str], use: bool = False) -> dict[str, dict | None]:
        """key -> the server's audio-exists data, or None; all keys in flight at once. ``use``: the lines
        found will be served from the server (a download), so the server counts them as hits."""
        for key in keys:
            check_key(key)  # also what makes check_message safe to build by formatting
        batch = self._requests("check", [(key, protocol.check_message(key, use)) for key in keys])
        try:
            replies = self._wait(batch, "check", keys, self.timeout)
        except KeyboardInterrupt:
            raise Interrupted(len(keys) - batch.left, len(keys), "checks") from None
        found: dict[str, dict | None] = {}
        for key, (event, raw) in zip(keys, replies):
            if event == protocol.ERROR:
                raise ServerRefused(f"the server refused to check {key}: {data(raw).get('error')}")
            found[key] = data(raw) if event == protocol.AUDIO_EXISTS else None
        return found

    def upload(self, entry: Entry, audio: bytes) -> dict:
        """Send a local entry; the upload-success data, or ServerRefused with the server's reason."""
        mime = str(entry.meta.get("mimeType"))
        message = json.dumps({"type": "custom", "event": protocol.UPLOAD_AUDIO, "data": {
            "cacheKey": entry.key, "mimeType": mime, "duration": entry.duration, "metadata": entry.meta,
            "data": f"data:{mime};base64," + base64.b64encode(audio).decode("ascii")}}, ensure_ascii=False)
        batch = self._requests("upload", [(entry.key, message)])
        del message
        [(event, raw)] = self._wait(batch, "upload", [entry.key],
                                    self.timeout + UPLOAD_SECONDS_PER_MB * len(audio) / 1e6)
        reply = data(raw)
        if event != protocol.UPLOAD_SUCCESS:
            raise ServerRefused(f"the server refused {entry.key}: {reply.get('error', 'no reason given')}")
        return reply

    def download(self, store: Store, found: dict) -> Entry:
        """Fetch what an audio-exists reply points at from this server, verify it against its metadata
        (size and sha256 when given; else that it is audio of its type, about as long as it says),
        store it atomically. ServerRefused, naming the key and the reason, stores nothing."""
        from .audio import measure_duration, normalise_mime
        from .errors import AudioError

        key, meta, path = found.get("cacheKey"), found.get("metadata"), found.get("filePath")
        if not is_key(key):
            raise ServerRefused(f"the server's reply names no valid cacheKey ({str(key)[:20]!r}); not stored")
        if not isinstance(meta, dict):
            raise ServerRefused(f"the server's reply for {key} has no metadata; not stored")
        why = unsafe_file_path(path)
        if why is not None:
            raise ServerRefused(f"refused to download {key}: its filePath {str(path)[:80]!r} {why}; not stored")
        size = meta.get("fileSize")
        audio, content_type = self._fetch(str(key), str(path), size if isinstance(size, int) else MAX_DOWNLOAD)
        if size is not None and size != len(audio):
            raise ServerRefused(f"download of {key} is {len(audio)} bytes, its metadata says {size}; not stored")
        digest = meta.get("sha256")
        if digest is not None and hashlib.sha256(audio).hexdigest() != digest:
            raise ServerRefused(f"download of {key} does not match its content hash; not stored")
        mime = normalise_mime(str(meta.get("mimeType") or content_type))
        try:
            duration = measure_duration(audio, mime)
        except AudioError as exc:
            raise ServerRefused(f"download of {key}: {exc}; not stored") from None
        said = meta.get("duration", found.get("duration"))
        if isinstance(said, (int, float)) and not isinstance(said, bool) and math.isfinite(said) \
                and abs(duration - said) > max(DURATION_SLACK, DURATION_SLACK_RATIO * abs(said)):
            raise ServerRefused(f"download of {key} lasts {duration:.2f} s, its metadata says {said:.2f} s; "
                                "not stored")
        return store.put(str(key), audio, mime, duration, meta)

    def _http_client(self) -> Any:
        """This thread's HTTP client to the server's JSON endpoints (index, health, cleanup): no redirects, the
        token as a header, one keep-alive connection; plain http skips loading the CA bundle (a tenth of a
        second at start-up). Downloads, thousands of small GETs, go through ``_connection`` instead."""
        http = getattr(self._http, "client", None)
        if http is None:
            import httpx

            http = self._http.client = httpx.Client(
                base_url=self.http_base, timeout=self.timeout, headers=self._get_headers, follow_redirects=False,
                verify=self.tls_context() if self.scheme == "wss" else False, limits=httpx.Limits(max_connections=1))
            with self._pending_lock:
                self._http_clients.append(http)
        return http

    def _fetch(self, key: str, path: str, limit: int) -> tuple[bytes, str]:
        """(body, content type) of a GET of ``path`` on this server only; never more than ``limit`` bytes.

        The standard library's ``http.client`` on one keep-alive connection per thread: a pull is thousands of
        small GETs, and httpx's per-request work was a third of the CPU a pull took (all under the GIL)."""
        import http.client

        target = quote(path, safe="/%:@!$&'()*+,;=-._~")
        for attempt in (1, 2):  # a kept-alive connection the server closed meanwhile gets one fresh try
            conn = self._connection(fresh=attempt == 2)
            try:
                conn.request("GET", target, headers=self._get_headers)
                response = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._drop_connection()
                if attempt == 2:
                    raise ServerUnavailable(f"cannot download {path} from {self.http_base}: {exc}") from None
                continue
            except http.client.InvalidURL:
                raise ServerRefused(f"refused to download {key}: its filePath {path[:80]!r} is not a valid URL "
                                    "path; not stored") from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                if isinstance(exc, ssl.SSLCertVerificationError):
                    raise self._untrusted(exc) from None
                raise ServerUnavailable(f"cannot download {path} from {self.http_base}: {exc}") from None
            try:
                if response.status != 200:
                    response.read()
                    raise ServerRefused(f"downloading {key} from {path} gave HTTP {response.status}; not stored")
                body = response.read(limit + 1)
                if len(body) > limit:
                    self._drop_connection()  # the rest of the body is still on its way
                    raise ServerRefused(f"download of {key} is over {limit} bytes, more than its metadata says; "
                                        "not stored")
                if not response.isclosed():
                    response.read()  # the end of a body that was exactly ``limit``, if any
                return body, response.getheader("content-type") or ""
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                raise ServerUnavailable(f"cannot download {path} from {self.http_base}: {exc}") from None
        raise AssertionError("unreachable")

    def _connection(self, fresh: bool = False) -> Any:
        """This thread's keep-alive connection to the server's HTTP side."""
        import http.client

        conn = getattr(self._http, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            if self.scheme == "wss":
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                   context=self.tls_context())
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._http.conn = conn
            with self._pending_lock:
                self._http_clients.append(conn)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._http, "conn", None)
        if conn is not None:
            conn.close()
            self._http.conn = None

    def _http_failure(self, exc: BaseException) -> NarratorError:
        """What an HTTP request's failure means: an untrusted certificate (found in the exception's chain)
        or a server that cannot be reached."""
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, ssl.SSLCertVerificationError):
                return self._untrusted(cause)
            cause = cause.__cause__ or cause.__context__
        return ServerUnavailable(f"no narrator server at {self.url}: {exc}")

    @property
    def _get_headers(self) -> dict[str, str]:
        return {"X-Narrator-Token": self.token} if self.token else {}

    # --- HTTP endpoints --------------------------------------------------------------------
    def endpoint(self, name: str) -> dict:
        """GET /__narrator-{name} (health, cleanup) as JSON; needs no WebSocket."""
        import httpx

        try:
            response = self._http_client().get(f"/__narrator-{name}")
        except httpx.HTTPError as exc:
            raise self._http_failure(exc) from None
        if response.status_code == 401:
            raise ServerUnavailable(f"the server at {self.url} refused the token")
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 404 or (response.status_code == 200 and not isinstance(body, dict)):
            raise ServerUnavailable(NO_ENDPOINT.format(url=self.url, name=name))  # Vite's 404 or index.html
        if response.status_code != 200 or not isinstance(body, dict):
            raise ServerUnavailable(f"{self.url} answered /__narrator-{name} with HTTP {response.status_code}; "
                                    "is it a narrator server?")
        return body

    def index(self, after: str | None = None, etag: str | None = None, compact: bool = False) -> dict | None:
        """``GET /__narrator-index`` (what changed after the cursor ``after``); None when it is unchanged
        since ``etag`` (304). The body gains ``etag``. NoIndex when the server cannot list (the Motion Canvas
        plugin: 404 or Vite's index.html); ServerUnavailable when it cannot be reached or refuses the token.
        ``compact``: entries carry only ``cacheKey`` and ``metadata`` with ``fileName, fileSize, sha256``, and
        ``"partial": True`` (``check`` gives the rest); a server that cannot list compactly sends it all."""
        import httpx

        params = {"after": after} if after else {}
        if compact:
            params["fields"] = "compact"
        try:
            response = self._http_client().get(protocol.INDEX_PATH, params=params or None,
                                               headers={"If-None-Match": etag} if etag else None)
        except httpx.HTTPError as exc:
            raise self._http_failure(exc) from None
        if response.status_code == 304:
            return None
        if response.status_code == 401:
            raise ServerUnavailable(f"the server at {self.url} refused the token")
        body = None
        if response.status_code == 200 and response.headers.get("content-type", "").startswith("application/json"):
            with contextlib.suppress(ValueError):
                body = response.json()
        if not isinstance(body, dict) or not isinstance(body.get("entries"), list) \
                or not isinstance(body.get("removed"), list):
            if response.status_code in (200, 404):
                raise NoIndex(f"the server at {self.url} cannot list its entries (only narrator serve can)")
            raise ServerUnavailable(f"{self.url} answered {protocol.INDEX_PATH} with HTTP {response.status_code}")
        if body.get("fields") == list(protocol.COMPACT_FIELDS):
            body["entries"] = [_expand(row) for row in body["entries"] if _compact_row(row)]
        body["etag"] = response.headers.get("etag")
        return body


def _ssl_reason(exc: ssl.SSLError) -> str:
    """An ssl error in words (``wrong version number``), without the library's file and line."""
    return (exc.reason or str(exc)).replace("_", " ").lower() if isinstance(exc.reason, str) else str(exc)


def _compact_row(row: Any) -> bool:
    return isinstance(row, list) and len(row) == 4 and isinstance(row[0], str) and isinstance(row[1], str) \
        and isinstance(row[2], int) and (row[3] is None or isinstance(row[3], str))


def _expand(row: list) -> dict:
    """A compact index row as the entry shape the rest of the client reads (``partial``: no full metadata)."""
    meta = {"fileName": row[1], "fileSize": row[2]}
    if row[3] is not None:
        meta["sha256"] = row[3]
    return {"cacheKey": row[0], "metadata": meta, "partial": True}


class NoIndex(NarratorError):
    """The server has no ``/__narrator-index`` (the Motion Canvas plugin under Vite)."""
