"""A local stand-in for the ElevenLabs text-to-speech API, for tests and benchmarks.

Standard library only (plus ``audio_fixtures`` for real MP3 / Ogg Opus bytes).
It binds 127.0.0.1 on a free port (or ``port=``), serves from a daemon thread and is used as a
context manager::

    with FakeElevenLabs(latency=0.2) as fake:
        ...  # point the client at fake.url, send fake.api_key
        fake.script(system_busy(retry_after=1), server_error())  # the next two requests
        fake.always(server_error())  # every request after the script (None: succeed again)

Endpoint: ``POST /v1/text-to-speech/{voice_id}[?output_format=mp3_44100_128]``.
Normal handling, in order: the ``xi-api-key`` header must equal ``api_key``
(else 401 ``invalid_api_key``); the JSON body needs a non-empty ``text`` and a
``model_id`` (else 422 in the API's validation shape); with ``max_concurrent``
set, a request arriving while that many are being served gets 429
``too_many_concurrent_requests`` (what the real API does); then, after
``latency`` seconds, 200 ``audio/mpeg`` with ``request-id`` and
``character-cost`` headers and real MP3 frames whose duration grows with the
text. Other paths answer 404.

A scripted reply replaces the normal handling of one request; a reply with
status 200 means "handle normally", so ``slow(5)`` is a success that takes 5 s.
Every POST is logged in ``requests`` as a dict: method, path (still percent-encoded), query
(dict), headers (lower-case names; ``xi-api-key`` shows as ``<redacted>``, the key
itself is never logged), json (the parsed body or None), authorized (the key
matched), status and reply_headers of the answer, start and end
(``time.monotonic()``: arrival, and the moment the answer was about to be sent).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

try:
    from audio_fixtures import make_mp3, make_ogg_opus
except ImportError:  # imported as part of a ``tests`` package
    from .audio_fixtures import make_mp3, make_ogg_opus  # type: ignore[no-redef]

TTS_PREFIX = "/v1/text-to-speech/"
SECONDS_PER_CHAR = 0.06  # about what a narrator voice takes: "Hello there." -> 0.72 s
MAX_SECONDS = 120.0


class Reply(NamedTuple):
    """One scripted answer. Status 200 means: handle the request normally (auth, validation, audio)."""

    status: int = 200
    body: Any = None  # JSON body of an error reply
    headers: dict = {}
    delay: float = 0.0  # seconds to wait before answering (the request stays in flight)


def success(delay: float = 0.0) -> Reply:
    return Reply(200, delay=delay)


def slow(seconds: float, then: Reply | None = None) -> Reply:
    """Answer ``then`` (default: normal success) only after ``seconds``."""
    return (then or Reply())._replace(delay=seconds)


def error(status: int, status_code: str, message: str, retry_after: float | None = None) -> Reply:
    """An error in the API's usual shape: ``{"detail": {"status": ..., "message": ...}}``."""
    headers = {} if retry_after is None else {"Retry-After": _num(retry_after)}
    return Reply(status, {"detail": {"status": status_code, "message": message}}, headers)


def too_many_concurrent(retry_after: float | None = None) -> Reply:
    return error(429, "too_many_concurrent_requests",
                 "You have too many concurrent requests for your subscription. Please try again later.", retry_after)


def system_busy(retry_after: float | None = None) -> Reply:
    return error(429, "system_busy", "Our services are experiencing high levels of traffic. Please try again.",
                 retry_after)


def unauthorized() -> Reply:
    return error(401, "invalid_api_key", "Invalid API key")


def server_error(status: int = 500) -> Reply:
    return error(status, "internal_server_error", "An internal error occurred. Please try again.")


def validation_error(field: str = "text", msg: str = "field required", kind: str = "value_error.missing") -> Reply:
    return Reply(422, {"detail": [{"loc": ["body", field], "msg": msg, "type": kind}]})


def refused_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens: connections to it are refused (the port stays free
    unless another program takes it meanwhile, which on a test machine is unlikely)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _as_reply(r: Reply | tuple | int) -> Reply:
    if isinstance(r, Reply):
        return r
    if isinstance(r, int):
        return Reply(r)
    return Reply(*r)  # (status, body[, headers[, delay]])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, fake: FakeElevenLabs, port: int = 0) -> None:
        self.fake = fake
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def process_request(self, request, client_address):  # type: ignore[no-untyped-def]
        with self.conn_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):  # type: ignore[no-untyped-def]
        with self.conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive connections."""
        with self.conn_lock:
            conns = list(self.connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real API
    disable_nagle_algorithm = True  # else Nagle + delayed ACK add ~40 ms to each answer
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence the default stderr log
        pass

    def do_POST(self) -> None:
        self.server.fake._handle(self)

    def do_GET(self) -> None:
        self._drain()
        status = 405 if self.path.startswith(TTS_PREFIX) else 404
        self.send(status, {"detail": "Method Not Allowed" if status == 405 else "Not Found"})

    def _drain(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send(self, status: int, body: Any = None, headers: dict | None = None, audio: bytes | None = None,
             mime: str = "audio/mpeg") -> None:
        data = audio if audio is not None else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", mime if audio is not None else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, str(value))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client gave up (timeout) or the fake is closing
            self.close_connection = True


class FakeElevenLabs:
    """The fake API server; see the module docstring."""

    def __init__(self, latency: float = 0.0, api_key: str = "test-key", max_concurrent: int | None = None,
                 seconds_per_char: float = SECONDS_PER_CHAR, port: int = 0) -> None:
        self.latency = latency
        self.api_key = api_key
        self.max_concurrent = max_concurrent
        self.seconds_per_char = seconds_per_char
        self.port = port  # 0: any free port; else this one (say, one a test found refusing connections)
        self.requests: list[dict] = []  # one dict per request, in arrival order
        self._lock = threading.Lock()
        self._script: deque[Reply] = deque()
        self._fallback: Reply | None = None
        self._in_flight = 0
        self._serving = 0  # requests accepted under the concurrency limit and not yet answered
        self._peak = 0
        self._closing = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # --- lifecycle ---------------------------------------------------------
    def start(self) -> FakeElevenLabs:
        self._server = _Server(self, self.port)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-elevenlabs", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is None:
            return
        self._closing.set()  # slow replies stop waiting
        self._server.shutdown()
        self._server.drop_connections()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> FakeElevenLabs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- scripting ---------------------------------------------------------
    def script(self, *replies: Reply | tuple | int) -> FakeElevenLabs:
        """Queue replies, one per POST in arrival order; then back to ``always`` (default: normal handling).

        A reply is a ``Reply`` (see the helpers), a ``(status, body[, headers[, delay]])`` tuple or a status.
        """
        with self._lock:
            self._script.extend(_as_reply(r) for r in replies)
        return self

    def always(self, reply: Reply | tuple | int | None) -> FakeElevenLabs:
        """Answer every unscripted request with ``reply`` (None: normal handling again)."""
        with self._lock:
            self._fallback = None if reply is None else _as_reply(reply)
        return self

    # --- observations ------------------------------------------------------
    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    @property
    def max_concurrency(self) -> int:
        """Peak number of requests in flight at once (rejected ones included)."""
        with self._lock:
            return self._peak

    def statuses(self) -> list[int | None]:
        with self._lock:
            return [r["status"] for r in self.requests]

    def peak_concurrency(self, started_after: float | None = None) -> int:
        """Peak overlap of the requests that arrived after ``started_after`` (a ``time.monotonic()`` value)."""
        with self._lock:
            spans = [(r["start"], r["end"]) for r in self.requests
                     if r["end"] is not None and (started_after is None or r["start"] > started_after)]
        events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])  # an end sorts before a start
        peak = level = 0
        for _, step in events:
            level += step
            peak = max(peak, level)
        return peak

    # --- the request path --------------------------------------------------
    def _handle(self, h: _Handler) -> None:
        raw = h._drain()
        url = urlsplit(h.path)
        headers = {k.lower(): v for k, v in h.headers.items()}
        authorized = headers.get("xi-api-key") == self.api_key
        if "xi-api-key" in headers:
            headers["xi-api-key"] = "<redacted>"  # the key itself is never logged
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = {"method": "POST", "path": url.path, "query": dict(parse_qsl(url.query)), "headers": headers,
                  "json": body, "authorized": authorized, "status": None, "reply_headers": {},
                  "start": time.monotonic(), "end": None}
        with self._lock:
            self.requests.append(record)
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
            reply = self._script.popleft() if self._script else self._fallback
        answered = False

        def answer(status: int, body: Any = None, headers: dict | None = None, **kw: Any) -> None:
            nonlocal answered
            record["reply_headers"] = {k.lower(): str(v) for k, v in (headers or {}).items()}
            self._leave(record, status)  # counts drop before the client can see the answer
            answered = True
            h.send(status, body, headers, **kw)

        try:
            if reply is not None and reply.delay > 0:
                self._closing.wait(reply.delay)
            if reply is not None and reply.status != 200:
                answer(reply.status, reply.body, reply.headers)
                return
            self._respond(h, url, body, authorized, answer)
        finally:
            if not answered:
                self._leave(record, 500)

    def _leave(self, record: dict, status: int) -> None:
        with self._lock:
            record["status"] = status
            record["end"] = time.monotonic()
            self._in_flight -= 1

    def _respond(self, h: _Handler, url: Any, body: Any, authorized: bool, answer: Any) -> None:
        if not url.path.startswith(TTS_PREFIX) or not url.path[len(TTS_PREFIX):].strip("/"):
            return answer(404, {"detail": "Not Found"})
        if not authorized:
            return answer(*unauthorized()[:2])
        if not isinstance(body, dict):
            return answer(*validation_error("", "invalid JSON body", "value_error.jsondecode")[:2])
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            return answer(*validation_error("text")[:2])
        if not isinstance(body.get("model_id"), str) or not body["model_id"]:
            return answer(*validation_error("model_id")[:2])
        fmt = dict(parse_qsl(url.query)).get("output_format", "mp3_44100_128")
        codec = fmt.split("_", 1)[0]
        if codec not in ("mp3", "opus"):
            return answer(*error(400, "invalid_output_format", f"Unsupported output format {fmt}")[:2])
        with self._lock:
            if self.max_concurrent is not None and self._serving >= self.max_concurrent:
                busy = True
            else:
                busy = False
                self._serving += 1
        if busy:
            return answer(*too_many_concurrent()[:3])
        try:
            if self.latency > 0:
                self._closing.wait(self.latency)
            seconds = min(MAX_SECONDS, max(0.2, len(text) * self.seconds_per_char))
            audio = make_mp3(seconds) if codec == "mp3" else make_ogg_opus(seconds)
        finally:
            with self._lock:
                self._serving -= 1
        answer(200, headers={"request-id": uuid.uuid4().hex, "character-cost": len(text)}, audio=audio,
               mime="audio/mpeg" if codec == "mp3" else "audio/ogg")


if __name__ == "__main__":  # a quick manual check: python tests/fake_elevenlabs.py
    import urllib.request

    with FakeElevenLabs() as fake:
        req = urllib.request.Request(f"{fake.url}/v1/text-to-speech/v?output_format=mp3_44100_128", method="POST",
                                     data=json.dumps({"text": "Hello there.", "model_id": "m"}).encode(),
                                     headers={"xi-api-key": fake.api_key, "Content-Type": "application/json"})
        with urllib.request.urlopen(req) as resp:
            print(resp.status, resp.headers["Content-Type"], len(resp.read()), "bytes", fake.requests[0]["query"])
