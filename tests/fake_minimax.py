"""A local stand-in for MiniMax's T2A v2 text-to-speech API, for tests.

Standard library only (plus ``audio_fixtures`` for real MP3 / WAV bytes). It binds
127.0.0.1 on a free port, serves from a daemon thread and is a context manager::

    with FakeMinimax() as fake:
        ...  # endpoint fake.endpoint, key fake.api_key
        fake.script(rate_limited(), http_error(503))  # the next two requests
        fake.always(api_error(1004, "invalid api key"))  # every request after the script (None: normal)

Endpoint: ``POST /v1/t2a_v2``. Normal handling, in order: ``Authorization`` must be
``Bearer <api_key>`` (else HTTP 200 with ``base_resp`` 1004, as MiniMax answers);
the JSON body must be the one the Motion Canvas plugin sends (``model``, non-empty
``text``, ``stream`` false, ``voice_setting.voice_id``, ``audio_setting.format`` of
mp3/wav/flac, ``output_format`` "hex"; else 2013 "invalid params"); then HTTP 200
``{"data": {"audio": HEX, "status": 2}, "extra_info": {...}, "trace_id": ...,
"base_resp": {"status_code": 0, "status_msg": "success"}}`` with real MP3 or WAV
bytes whose duration grows with the text. Other paths answer 404.

A scripted reply replaces the normal handling of one request. Every POST is logged in
``requests``: path, headers (``authorization`` shows as ``<redacted>``; the key is never
logged), json (the parsed body or None), authorized, status and code (base_resp) answered.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

try:
    from audio_fixtures import make_mp3, make_wav
except ImportError:  # imported as part of a ``tests`` package
    from .audio_fixtures import make_mp3, make_wav  # type: ignore[no-redef]

PATH = "/v1/t2a_v2"
SECONDS_PER_CHAR = 0.06


class Reply(NamedTuple):
    """One scripted answer: an HTTP status and a JSON body (None with status 200: handle normally)."""

    status: int = 200
    body: Any = None
    headers: dict = {}


def api_error(code: int, message: str, status: int = 200) -> Reply:
    """An API error as MiniMax sends them: HTTP 200, ``base_resp.status_code`` != 0."""
    return Reply(status, {"trace_id": uuid.uuid4().hex, "base_resp": {"status_code": code, "status_msg": message}})


def rate_limited() -> Reply:
    return api_error(1002, "rate limit exceeded(RPM)")


def unauthorized() -> Reply:
    return api_error(1004, "login fail: Please carry the API secret key in the 'Authorization' field")


def http_error(status: int, retry_after: float | None = None) -> Reply:
    return Reply(status, {"error": "service unavailable"}, {} if retry_after is None else {"Retry-After": retry_after})


def raw_audio(hex_text: str) -> Reply:
    """A success whose ``data.audio`` is exactly ``hex_text`` (e.g. odd length, not hex)."""
    return Reply(200, {"data": {"audio": hex_text, "status": 2}, "trace_id": "t",
                       "base_resp": {"status_code": 0, "status_msg": "success"}})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Any

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence the default stderr log
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        status, body, headers = self.server.fake._handle(self.path, dict(self.headers.items()), raw)
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, str(value))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True


class FakeMinimax:
    """The fake API server; see the module docstring."""

    def __init__(self, api_key: str = "test-minimax-key") -> None:
        self.api_key = api_key
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._script: deque[Reply] = deque()
        self._fallback: Reply | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = self.endpoint = ""

    def start(self) -> FakeMinimax:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self.endpoint = self.url + PATH
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-minimax", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread:
                self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> FakeMinimax:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def script(self, *replies: Reply) -> FakeMinimax:
        with self._lock:
            self._script.extend(replies)
        return self

    def always(self, reply: Reply | None) -> FakeMinimax:
        with self._lock:
            self._fallback = reply
        return self

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def _handle(self, path: str, headers: dict, raw: bytes) -> tuple[int, Any, dict]:
        headers = {k.lower(): v for k, v in headers.items()}
        authorized = headers.get("authorization") == f"Bearer {self.api_key}"
        if "authorization" in headers:
            headers["authorization"] = "<redacted>"
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = {"path": path, "headers": headers, "json": body, "authorized": authorized}
        with self._lock:
            self.requests.append(record)
            reply = self._script.popleft() if self._script else self._fallback
        if reply is not None and (reply.status != 200 or reply.body is not None):
            status, answer, extra = reply
        else:
            status, answer, extra = 200, self._respond(path, body, authorized), {}
        if path != PATH:
            status, answer = 404, {"error": "not found"}
        record["status"] = status
        record["code"] = (answer.get("base_resp") or {}).get("status_code") if isinstance(answer, dict) else None
        return status, answer, extra

    def _respond(self, path: str, body: Any, authorized: bool) -> dict:
        if not authorized:
            return unauthorized().body
        problem = _invalid(body)
        if problem:
            return api_error(2013, f"invalid params, {problem}").body
        text, fmt = body["text"], body["audio_setting"]["format"]
        seconds = min(120.0, max(0.2, len(text) * SECONDS_PER_CHAR))
        audio = make_wav(seconds) if fmt == "wav" else make_mp3(seconds)  # flac: the fake answers MP3 bytes
        return {
            "data": {"audio": audio.hex(), "status": 2, "ced": ""},
            "extra_info": {"audio_length": round(seconds * 1000), "audio_sample_rate": 32000,
                           "audio_size": len(audio), "bitrate": 128000, "word_count": len(text.split()),
                           "invisible_character_ratio": 0, "usage_characters": len(text), "audio_format": fmt,
                           "audio_channel": 1},
            "trace_id": uuid.uuid4().hex,
            "base_resp": {"status_code": 0, "status_msg": "success"},
        }


def _invalid(body: Any) -> str | None:
    """What is wrong with a request body, or None."""
    if not isinstance(body, dict):
        return "body is not a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model is required"
    if not isinstance(body.get("text"), str) or not body["text"].strip():
        return "text is required"
    if body.get("stream") is not False:
        return "stream must be false"
    voice = body.get("voice_setting")
    if not isinstance(voice, dict) or not isinstance(voice.get("voice_id"), str) or not voice["voice_id"]:
        return "voice_setting.voice_id is required"
    audio = body.get("audio_setting")
    if not isinstance(audio, dict) or audio.get("format") not in ("mp3", "wav", "flac"):
        return "audio_setting.format must be mp3, wav or flac"
    if body.get("output_format") != "hex":
        return "output_format must be hex"
    return None
