"""A local stand-in for the ElevenLabs text-to-speech API, for tests and benchmarks.

Standard library only (plus ``audio_fixtures`` for real MP3 / Ogg Opus bytes).
It binds 127.0.0.1 on a free port (or ``port=``), serves from a daemon thread and is used as a
context manager::

    with FakeElevenLabs(latency=0.2) as fake:
        ...  # point the client at fake.url, send fake.api_key
        fake.script(system_busy(retry_after=1), server_error())  # the next two requests
        fake.always(server_error())  # every request after the script (None: succeed again)
        fake.script(timings("null-alignment"), raw_reply(b"not json"))  # a success without ``alignment``, junk

Endpoints: ``POST /v1/text-to-speech/{voice_id}/with-timestamps[?output_format=mp3_44100_128]`` (what
narrator calls) and ``POST /v1/text-to-speech/{voice_id}`` (the plain one: the audio itself).
Normal handling, in order: the ``xi-api-key`` header must equal ``api_key``
(else 401 ``invalid_api_key``); the JSON body needs a non-empty ``text`` and a
``model_id`` (else 422 in the API's validation shape); with ``max_concurrent``
set, a request arriving while that many are being served gets 429
``too_many_concurrent_requests`` (what the real API does); then, after
``latency`` seconds, 200 with ``request-id`` and ``character-cost`` headers and real MP3 (or Ogg Opus)
frames whose duration grows with the text (``seconds_per_char``). The plain endpoint answers with the
audio (``audio/mpeg``); with-timestamps answers JSON as the real API does::

    {"audio_base64": "...", "alignment": {...} | null, "normalized_alignment": {...} | null}

each alignment three parallel arrays ``characters``, ``character_start_times_seconds``,
``character_end_times_seconds``. The spoken text is the input normalised: lower-cased, each run of ASCII
digits spelled out ("77" -> "seventy-seven"); its characters are spread over the audio (a short lead-in
and tail, longer slots for spaces and punctuation, so words are apart), and that is ``normalized_alignment``.
``alignment`` holds the input's own characters, each piece taking the span of what it was spoken as (the
two characters of "77" share the span of "seventy-seven"). Times are rounded to the millisecond and
never go backwards; a word's characters follow each other with no gap. Which alignments a reply carries
(``alignment=`` for every request, or ``timings(mode)`` for one): ``"both"`` (the default),
``"null-alignment"``, ``"null-both"``, ``"ragged"`` (both present, arrays of different lengths) or
``"non-numeric"`` (both present, times as strings). The account's GET endpoints (voices, subscription,
models, history and its audio) are ``fake_elevenlabs_account``'s, on ``fake.account``. Other paths answer 404.

A scripted reply replaces the normal handling of one request (with ``scripted=("POST",)`` only POSTs take
scripted and ``always`` replies, and the account's GETs, which a budget or quota check sends first, are answered
normally; ``statuses("POST")`` and ``posts()`` then look at the paid requests alone); a reply with
status 200 means "handle normally", so ``slow(5)`` is a success that takes 5 s, unless it has ``raw``
bytes (``raw_reply``), which are sent as they are, with its status.
Every request is logged in ``requests`` as a dict: method, path (still percent-encoded), query
(dict), headers (lower-case names; ``xi-api-key`` shows as ``<redacted>``, the key
itself is never logged), json (the parsed body or None), authorized (the key
matched), status and reply_headers of the answer, start and end
(``time.monotonic()``: arrival, and the moment the answer was about to be sent), and for a 200 from
with-timestamps, ``alignments``: the reply's ``alignment`` and ``normalized_alignment`` as sent.
"""

from __future__ import annotations

import base64
import json
import re
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
    from fake_elevenlabs_account import Account
except ImportError:  # imported as part of a ``tests`` package
    from .audio_fixtures import make_mp3, make_ogg_opus  # type: ignore[no-redef]
    from .fake_elevenlabs_account import Account  # type: ignore[no-redef]

TTS_PREFIX = "/v1/text-to-speech/"
TIMESTAMPS = "/with-timestamps"
ALIGNMENTS = ("both", "null-alignment", "null-both", "ragged", "non-numeric")
SECONDS_PER_CHAR = 0.06  # about what a narrator voice takes: "Hello there." -> 0.72 s
MAX_SECONDS = 120.0


class Reply(NamedTuple):
    """One scripted answer. Status 200 means: handle the request normally (auth, validation, audio)."""

    status: int = 200
    body: Any = None  # JSON body of an error reply
    headers: dict = {}
    delay: float = 0.0  # seconds to wait before answering (the request stays in flight)
    alignment: str | None = None  # a normal with-timestamps success: which alignments it carries (ALIGNMENTS)
    raw: bytes | None = None  # sent as the body, as it is (with ``status`` and ``headers``), instead of anything


def success(delay: float = 0.0) -> Reply:
    return Reply(200, delay=delay)


def timings(mode: str) -> Reply:
    """A normal success whose with-timestamps reply carries the alignments ``mode`` says (see ALIGNMENTS)."""
    if mode not in ALIGNMENTS:
        raise ValueError(f"alignment mode {mode!r} is not one of {ALIGNMENTS}")
    return Reply(200, alignment=mode)


def raw_reply(data: bytes | str, status: int = 200, content_type: str = "application/json") -> Reply:
    """Exactly these bytes as the answer (a malformed 200, say), whatever the request was."""
    return Reply(status, headers={"Content-Type": content_type},
                 raw=data.encode() if isinstance(data, str) else data)


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
        self.server.fake._handle(self, "POST")

    def do_GET(self) -> None:
        if self.path.startswith(TTS_PREFIX):
            self._drain()
            self.send(405, {"detail": "Method Not Allowed"})
        else:
            self.server.fake._handle(self, "GET")

    def _drain(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send(self, status: int, body: Any = None, headers: dict | None = None, data: bytes | None = None) -> None:
        """``data`` as it is (its type in ``headers``), else ``body`` as JSON."""
        headers = {"Content-Type": "application/json", **(headers or {})}
        data = data if data is not None else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, str(value))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client gave up (timeout) or the fake is closing
            self.close_connection = True


class FakeElevenLabs:
    """The fake API server; see the module docstring."""

    def __init__(self, latency: float = 0.0, api_key: str = "test-key", max_concurrent: int | None = None,
                 seconds_per_char: float = SECONDS_PER_CHAR, port: int = 0, alignment: str = "both",
                 scripted: tuple[str, ...] = ("GET", "POST")) -> None:
        if alignment not in ALIGNMENTS:
            raise ValueError(f"alignment mode {alignment!r} is not one of {ALIGNMENTS}")
        self.latency = latency
        self.alignment = alignment  # which alignments a with-timestamps success carries, unless scripted
        self.api_key = api_key
        self.max_concurrent = max_concurrent
        self.seconds_per_char = seconds_per_char
        self.port = port  # 0: any free port; else this one (say, one a test found refusing connections)
        self.scripted = scripted  # the methods whose requests take scripted (and ``always``) replies
        self.account = Account()  # voices, subscription, models, history: the GET endpoints
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

    def statuses(self, method: str | None = None) -> list[int | None]:
        """The status of each request (``method``: of those with that method only), in arrival order."""
        with self._lock:
            return [r["status"] for r in self.requests if method in (None, r["method"])]

    def posts(self) -> list[dict]:
        """The logged POSTs: the paid requests."""
        with self._lock:
            return [r for r in self.requests if r["method"] == "POST"]

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
    def _handle(self, h: _Handler, method: str) -> None:
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
        record = {"method": method, "path": url.path, "query": dict(parse_qsl(url.query)), "headers": headers,
                  "json": body, "authorized": authorized, "status": None, "reply_headers": {},
                  "start": time.monotonic(), "end": None}
        with self._lock:
            self.requests.append(record)
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
            if method not in self.scripted:
                reply = None
            else:
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
            if reply is not None and reply.raw is not None:
                answer(reply.status, headers=reply.headers, data=reply.raw)
                return
            if reply is not None and reply.status != 200:
                answer(reply.status, reply.body, reply.headers)
                return
            if method == "GET":
                self._respond_get(url, authorized, answer)
            else:
                self._respond(url, body, authorized, answer, record, (reply and reply.alignment) or self.alignment)
        finally:
            if not answered:
                self._leave(record, 500)

    def _respond_get(self, url: Any, authorized: bool, answer: Any) -> None:
        """The account endpoints (``fake_elevenlabs_account``), after ``latency``."""
        if not authorized:
            return answer(*unauthorized()[:2])
        if self.latency > 0:
            self._closing.wait(self.latency)
        status, body, headers, data = self.account.answer(url.path, dict(parse_qsl(url.query)))
        return answer(status, body, headers, data=data)

    def _leave(self, record: dict, status: int) -> None:
        with self._lock:
            record["status"] = status
            record["end"] = time.monotonic()
            self._in_flight -= 1

    def _respond(self, url: Any, body: Any, authorized: bool, answer: Any, record: dict, alignment: str) -> None:
        voice = url.path[len(TTS_PREFIX):] if url.path.startswith(TTS_PREFIX) else ""
        timestamps = voice.endswith(TIMESTAMPS)
        voice = voice.removesuffix(TIMESTAMPS)
        if not voice or "/" in voice:
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
        headers = {"request-id": uuid.uuid4().hex, "character-cost": len(text)}
        if not timestamps:
            return answer(200, headers={**headers, "Content-Type": "audio/mpeg" if codec == "mp3" else "audio/ogg"},
                          data=audio)
        record["alignments"] = timing = alignments(text, seconds, alignment)
        reply = {"audio_base64": base64.b64encode(audio).decode("ascii"), **timing}
        answer(200, headers=headers, data=json.dumps(reply).encode())


# --- with-timestamps: what was spoken, and when ------------------------------------------

ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(n: int) -> str:
    """English words for 0 <= n < 10**9: 77 -> "seventy-seven"."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("-" + ONES[n % 10] if n % 10 else "")
    for size, name in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            rest = n % size
            return f"{number_words(n // size)} {name}" + (f" {number_words(rest)}" if rest else "")
    raise AssertionError(n)


def spoken_pieces(text: str) -> list[tuple[str, str]]:
    """(piece of the text, what it is spoken as): ASCII digit runs spelled out, every other character
    lower-cased."""
    out = []
    for piece in re.findall(r"[0-9]+|.", text, re.DOTALL):
        if piece.isdigit() and piece.isascii():
            said = (number_words(int(piece)) if len(piece) <= 9 and (piece == "0" or piece[0] != "0")
                    else " ".join(ONES[int(d)] for d in piece))
        else:
            said = piece.lower()
        out.append((piece, said))
    return out


def _slot(char: str) -> float:
    """How long a spoken character takes, in slots: a space or punctuation is a pause between words."""
    if char.isspace():
        return 0.6
    if char in "-'":
        return 0.3
    return 2.0 if not char.isalnum() else 1.0


def alignments(text: str, seconds: float, mode: str = "both") -> dict:
    """``alignment`` and ``normalized_alignment`` of ``text`` spoken over ``seconds`` (see the module docstring)."""
    pieces = spoken_pieces(text)
    spoken = "".join(said for _, said in pieces)
    lead = min(0.05, seconds * 0.05)
    unit = (seconds - 2 * lead) / sum(_slot(c) for c in spoken)
    starts, ends, t = [], [], lead
    for c in spoken:
        starts.append(round(t, 3))
        t += _slot(c) * unit
        ends.append(round(t, 3))
    chars, own_starts, own_ends, j = [], [], [], 0
    for piece, said in pieces:  # each piece of the text takes the span of what it was spoken as
        lo, hi = starts[j], ends[j + len(said) - 1]
        j += len(said)
        for k, c in enumerate(piece):
            chars.append(c)
            own_starts.append(round(lo + (hi - lo) * k / len(piece), 3))
            own_ends.append(round(lo + (hi - lo) * (k + 1) / len(piece), 3))
    own = {"characters": chars, "character_start_times_seconds": own_starts, "character_end_times_seconds": own_ends}
    normal = {"characters": list(spoken), "character_start_times_seconds": starts,
              "character_end_times_seconds": ends}
    if mode in ("ragged", "non-numeric"):
        for a in (own, normal):
            if mode == "ragged":
                a["character_end_times_seconds"] = a["character_end_times_seconds"][:-1]
            else:
                a["character_start_times_seconds"] = [str(x) for x in a["character_start_times_seconds"]]
    return {"alignment": None if mode in ("null-alignment", "null-both") else own,
            "normalized_alignment": None if mode == "null-both" else normal}


if __name__ == "__main__":  # a quick manual check: python tests/fake_elevenlabs.py
    import urllib.request

    with FakeElevenLabs() as fake:
        req = urllib.request.Request(f"{fake.url}/v1/text-to-speech/v/with-timestamps?output_format=mp3_44100_128",
                                     data=json.dumps({"text": "I have 77 cats.", "model_id": "m"}).encode(),
                                     headers={"xi-api-key": fake.api_key, "Content-Type": "application/json"},
                                     method="POST")
        with urllib.request.urlopen(req) as resp:
            reply = json.loads(resp.read())
            print(resp.status, resp.headers["Content-Type"], len(base64.b64decode(reply["audio_base64"])),
                  "bytes of audio", fake.requests[0]["query"])
            for name in ("alignment", "normalized_alignment"):
                print(name, "".join(reply[name]["characters"]), reply[name]["character_start_times_seconds"][:4])
