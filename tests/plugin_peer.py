"""A test peer that answers like the Motion Canvas narrator plugin running under a Vite dev server.

A real server on 127.0.0.1 (the ``websockets`` library, on a daemon thread): the WebSocket with
subprotocol ``vite-hmr`` on ``/``, Vite's framing (``{"type":"connected"}`` first, then
``{"type":"custom","event":...,"data":...}``), and the plain HTTP GETs Vite's own static file
serving answers from its root folder. What the plugin does, as observed in its source and a running
Vite 5.4:

- ``narrator:check-available`` -> ``narrator:available`` with ``{}`` (no server name);
- ``narrator:check-audio`` looks only for ``{key}.mp3`` next to ``{key}.meta.json`` in its folder;
  found: ``{cacheKey, filePath, duration, metadata}`` with ``filePath = '/' + audioPath + '/' + fileName``;
  anything else (absent, a WAV entry, unreadable metadata) is ``narrator:audio-not-found``;
- ``narrator:upload-audio`` accepts the listed types (``audio/mp3`` too), decodes base64 leniently,
  limits the size in MiB, and writes ``{cacheKey, duration, mimeType, fileSize, fileName, createdAt,
  ...metadata}`` (the client's metadata last, overriding); errors are ``{error, cacheKey}``;
- no ``/__narrator-health``, ``/__narrator-cleanup`` or ``/__narrator-audio/``: a GET of anything that
  is not a file under the root is a 404, or with ``html_fallback`` Vite's index.html (200, text/html).

Departures, on purpose: a cacheKey that is not a plain file name is refused (the plugin would write
wherever it points), and messages are handled one task each, as Vite's async handlers run.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import mimetypes
import posixpath
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from narrator_cli.motion_canvas import PLUGIN_FOLDER as DEFAULT_AUDIO_PATH
from narrator_cli.motion_canvas import PLUGIN_MIME_TYPES as DEFAULT_TYPES
from narrator_cli.protocol import SUBPROTOCOL
EXTENSIONS = {"audio/mpeg": "mp3", "audio/mp3": "mp3", "audio/wav": "wav", "audio/ogg": "ogg", "audio/webm": "webm"}
INDEX_HTML = b"<!doctype html><html><head><title>vite</title></head><body></body></html>\n"
MAX_MESSAGE = 100 * 2**20  # the ws library's default maxPayload, which Vite keeps


def _js(value: Any) -> str:
    """A value as a JavaScript template literal would show it."""
    return "undefined" if value is None else str(value)


def _lenient_b64(text: str) -> bytes:
    """Node's ``Buffer.from(text, 'base64')``: skips characters outside the alphabet (URL-safe ones
    count), stops at the first ``=``, needs no padding."""
    text = re.sub(r"[^A-Za-z0-9+/]", "", text.split("=", 1)[0].replace("-", "+").replace("_", "/"))
    text = text[: len(text) - len(text) % 4 if len(text) % 4 == 1 else len(text)]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        return b""


def _js_json(value: Any, indent: int | None = None) -> str:
    """``JSON.stringify``: JavaScript has one number type, so 1.0 is written 1."""
    def plain(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return [plain(x) for x in v] if isinstance(v, list) else v

    return json.dumps(plain(value), indent=indent, separators=None if indent else (",", ":"), ensure_ascii=False)


def _iso_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class PluginPeer:
    """The plugin under Vite, on a free 127.0.0.1 port. ``root`` is Vite's root and working directory;
    entries live in ``root / audio_path``. ``upload_delay`` / ``check_delay`` slow each reply down (a
    batch stays mid-way long enough to interrupt it); with ``stall`` it stops reading a connection once it
    has answered narrator:check-available, as a stuck server would. Counts what arrived: ``connected``,
    ``uploads``, ``checks``, ``gets``."""

    def __init__(self, root: Path, audio_path: str = DEFAULT_AUDIO_PATH, max_file_size: float = 50,
                 allowed_mime_types: tuple[str, ...] = DEFAULT_TYPES, html_fallback: bool = False,
                 upload_delay: float = 0.0, check_delay: float = 0.0, stall: bool = False) -> None:
        self.root = Path(root)
        self.audio_path = audio_path
        self.folder = self.root / audio_path
        self.max_file_size = max_file_size
        self.allowed = allowed_mime_types
        self.html_fallback = html_fallback
        self.upload_delay = upload_delay
        self.check_delay = check_delay
        self.stall = stall
        self.uploads = 0
        self.checks = 0
        self.connected = 0  # connections that got their narrator:available
        self.gets: list[str] = []  # paths of plain HTTP requests, as sent
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    # --- life -------------------------------------------------------------------------------
    def start(self) -> PluginPeer:
        self.folder.mkdir(parents=True, exist_ok=True)  # the plugin makes its folder at start
        ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main(ready)), name="plugin-peer",
                                        daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the plugin peer did not start within 10 s")
        return self

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> PluginPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._connection, "127.0.0.1", 0, subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                         process_request=self._http, max_size=MAX_MESSAGE, compression=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"http://127.0.0.1:{port}"
            ready.set()
            await self._stop.wait()
            for connection in server.connections:  # a stalled one would never notice its client is gone
                connection.transport.abort()

    # --- what the plugin writes -------------------------------------------------------------
    def file_path(self, file_name: str) -> str:
        """The plugin's ``'/' + path.join(audioPath, fileName)``."""
        return "/" + posixpath.normpath(posixpath.join(self.audio_path, file_name))

    def put_browser_entry(self, key: str, audio: bytes, duration: float, mime: str = "audio/mpeg") -> Path:
        """An entry as the editor's browser leaves it: the audio and the seven fields, nothing else."""
        name = f"{key}.{EXTENSIONS.get(mime, 'mp3')}"
        (self.folder / name).write_bytes(audio)
        meta = {"cacheKey": key, "duration": duration, "mimeType": mime, "fileSize": len(audio), "fileName": name,
                "createdAt": _iso_now(), "generatedAt": _iso_now()}
        path = self.folder / f"{key}.meta.json"
        path.write_text(_js_json(meta, indent=2))
        return path

    # --- HTTP: Vite's static serving of its root --------------------------------------------
    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket" and urlsplit(request.path).path == "/":
            return None  # the HMR socket: go on with the handshake
        self.gets.append(request.path)
        path = unquote(urlsplit(request.path).path)
        target = (self.root / path.lstrip("/")).resolve()
        if target.is_relative_to(self.root.resolve()) and target.is_file() and "\\" not in path:
            body = target.read_bytes()
            kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            return Response(200, "OK", Headers({"Content-Type": kind, "Content-Length": str(len(body))}), body)
        accept = request.headers.get("Accept", "")
        if self.html_fallback and (not accept or "text/html" in accept or "*/*" in accept):
            headers = {"Content-Type": "text/html", "Content-Length": str(len(INDEX_HTML))}
            return Response(200, "OK", Headers(headers), INDEX_HTML)
        return Response(404, "Not Found", Headers({"Content-Length": "0"}), b"")

    # --- the WebSocket events ---------------------------------------------------------------
    async def _connection(self, ws: ServerConnection) -> None:
        await ws.send('{"type":"connected"}')
        tasks: set[asyncio.Task] = set()
        async for raw in ws:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue  # Vite drops what it cannot parse
            if not isinstance(msg, dict) or msg.get("type") != "custom" or not isinstance(msg.get("event"), str):
                continue
            handler = {"narrator:check-available": self._available, "narrator:check-audio": self._check,
                       "narrator:upload-audio": self._upload}.get(msg["event"])
            if handler is not None:  # an event nobody listens to gets no answer
                task = asyncio.create_task(handler(ws, msg.get("data")))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    @staticmethod
    async def _send(ws: ServerConnection, event: str, data: dict) -> None:
        data = {k: v for k, v in data.items() if v is not None}  # JSON.stringify drops undefined
        await ws.send(_js_json({"type": "custom", "event": event, "data": data}))

    async def _available(self, ws: ServerConnection, data: Any) -> None:
        await self._send(ws, "narrator:available", {})
        self.connected += 1
        if self.stall:
            ws.transport.pause_reading()

    async def _check(self, ws: ServerConnection, data: Any) -> None:
        self.checks += 1
        if self.check_delay:
            await asyncio.sleep(self.check_delay)
        key = data.get("cacheKey") if isinstance(data, dict) else None
        name = f"{_js(key)}.mp3"  # the plugin looks for MP3 only, whatever the entry's type
        audio, meta_path = self.folder / name, self.folder / f"{_js(key)}.meta.json"
        try:
            if not (audio.is_file() and meta_path.is_file()):
                raise FileNotFoundError
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            await self._send(ws, "narrator:audio-not-found", {"cacheKey": key})
            return
        duration = meta.get("duration") if isinstance(meta, dict) else None
        await self._send(ws, "narrator:audio-exists", {"cacheKey": key, "filePath": self.file_path(name),
                                                      "duration": duration, "metadata": meta})

    async def _upload(self, ws: ServerConnection, data: Any) -> None:
        self.uploads += 1
        if not isinstance(data, dict):
            return
        key, mime = data.get("cacheKey"), data.get("mimeType")
        if self.upload_delay:
            await asyncio.sleep(self.upload_delay)
        if mime not in self.allowed:
            await self._send(ws, "narrator:upload-error", {"error": f"Unsupported mime type: {_js(mime)}",
                                                           "cacheKey": key})
            return
        url = data.get("data")
        if not isinstance(url, str):  # what the plugin's handler throws, and answers
            error = ("Cannot read properties of undefined (reading 'slice')" if url is None
                     else "data.slice is not a function")
            await self._send(ws, "narrator:upload-error", {"error": error, "cacheKey": key})
            return
        if not isinstance(key, str) or not re.fullmatch(r"[^/\\.][^/\\]*", key):
            await self._send(ws, "narrator:upload-error", {"error": "not a plain file name", "cacheKey": key})
            return
        audio = _lenient_b64(url[url.find(",") + 1:])
        size_mb = len(audio) / (1024 * 1024)
        if size_mb > self.max_file_size:
            await self._send(ws, "narrator:upload-error", {
                "error": f"File too large: {size_mb:.2f}MB (max: {self.max_file_size:g}MB)", "cacheKey": key})
            return
        name = f"{key}.{EXTENSIONS.get(mime, 'mp3')}"
        (self.folder / name).write_bytes(audio)  # in place, as the plugin writes
        meta = {"cacheKey": key, "duration": data.get("duration"), "mimeType": mime, "fileSize": len(audio),
                "fileName": name, "createdAt": _iso_now()}
        meta = {k: v for k, v in meta.items() if v is not None}
        if isinstance(data.get("metadata"), dict):
            meta.update(data["metadata"])  # ...metadata comes last: the client's fields win
        (self.folder / f"{key}.meta.json").write_text(_js_json(meta, indent=2))
        await self._send(ws, "narrator:upload-success", {"cacheKey": key, "filePath": self.file_path(name),
                                                        "duration": data.get("duration"), "size": len(audio)})
