"""`narrator serve` over real sockets on 127.0.0.1: the `websockets` client for the protocol,
raw socket writes for everything a well-behaved client would never send."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import serve_process
from audio_fixtures import make_mp3, make_wav
import narrator_cli
from narrator_cli import protocol
from narrator_cli import server as server_module
from narrator_cli.server import Options, Server
from narrator_cli.store import Store


@contextmanager
def running(root, **options):
    """A real server on its own event loop thread, on a free port."""
    store = Store(root / "cache")
    server = Server(store, Options(port=0, quiet=True, max_age=None, **options))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    _, port = asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield SimpleNamespace(port=port, store=store, server=server, url=f"ws://127.0.0.1:{port}/")
    finally:
        asyncio.run_coroutine_threadsafe(server.shutdown(2), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def srv(tmp_path):
    with running(tmp_path) as s:
        yield s


@contextmanager
def client(url: str, **kw):
    with connect(url, subprotocols=["vite-hmr"], max_size=None, open_timeout=5, **kw) as ws:
        assert json.loads(ws.recv(5)) == {"type": "connected"}
        yield ws


def send(ws, event: str, **data) -> None:
    ws.send(json.dumps({"type": "custom", "event": event, "data": data}))


def recv(ws) -> tuple[str, dict]:
    obj = json.loads(ws.recv(10))
    assert obj["type"] == "custom"
    return obj["event"], obj["data"]


def upload_msg(key: str, audio: bytes, mime: str = "audio/mpeg", **meta) -> dict:
    return {"cacheKey": key, "mimeType": mime, "duration": 1, "metadata": meta,
            "data": f"data:{mime};base64," + base64.b64encode(audio).decode()}


def no_broken(store: Store) -> None:
    scan = store.scan()
    assert scan.broken == [] and scan.temporary == []
    assert not store.root.exists() or [p.name for p in store.root.glob(".*")] == []  # no staged file, however new


# --- raw sockets ----------------------------------------------------------------------------
def frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True, length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    keyed = (key * (len(payload) // 4 + 1))[:len(payload)]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(keyed, "big")).to_bytes(len(payload), "big")
    return head + key + masked


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    b0, b1 = read_exactly(sock, 2)
    assert not b1 & 0x80, "server frames are never masked"
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", read_exactly(sock, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", read_exactly(sock, 8))[0]
    return b0 & 0x0F, read_exactly(sock, n)


def raw_ws(port: int, path: str = "/", headers: str = "") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                  f"Sec-WebSocket-Protocol: vite-hmr\r\n{headers}\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    assert read_frame(sock) == (1, b'{"type":"connected"}')
    return sock


def close_code(sock: socket.socket) -> int:
    """Read frames until the server's close; its status code."""
    while True:
        opcode, payload = read_frame(sock)
        if opcode == 8:
            return struct.unpack("!H", payload[:2])[0]


def http(port: int, request: str | bytes, host: str = "127.0.0.1") -> tuple[int, dict, bytes]:
    if isinstance(request, str):
        request = request.replace("{host}", host).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", 0))
        if not request.startswith(b"HEAD") and int(lines[0].split()[1]) not in (204, 304):
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
        return int(lines[0].split()[1]), headers, body


def get(port: int, path: str, extra: str = "", method: str = "GET") -> tuple[int, dict, bytes]:
    return http(port, f"{method} {path} HTTP/1.1\r\nHost: {{host}}\r\nConnection: close\r\n{extra}\r\n")


# --- the event protocol --------------------------------------------------------------------------
def test_handshake_events_and_round_trip(srv):
    with client(srv.url) as ws:
        assert ws.subprotocol == "vite-hmr"
        send(ws, protocol.CHECK_AVAILABLE)
        assert recv(ws) == (protocol.AVAILABLE, {"server": protocol.SERVER_NAME, "version": narrator_cli.__version__})
        send(ws, protocol.CHECK_AUDIO, cacheKey="5f5ac131")
        assert recv(ws) == (protocol.AUDIO_NOT_FOUND, {"cacheKey": "5f5ac131"})
        audio = make_mp3(3)
        send(ws, protocol.UPLOAD_AUDIO, **upload_msg("5f5ac131", audio, text="Hello world"))
        event, data = recv(ws)
        assert event == protocol.UPLOAD_SUCCESS and data["cacheKey"] == "5f5ac131"
        assert data["filePath"] == "/__narrator-audio/5f5ac131.mp3" and data["size"] == len(audio)
        assert abs(data["duration"] - 3) < 0.05
        send(ws, protocol.CHECK_AUDIO, cacheKey="5f5ac131")
        event, data = recv(ws)
        assert event == protocol.AUDIO_EXISTS and data["metadata"]["text"] == "Hello world"
    status, headers, body = get(srv.port, "/__narrator-audio/5f5ac131.mp3")
    assert status == 200 and body == audio
    assert headers["content-type"] == "audio/mpeg" and headers["content-length"] == str(len(audio))
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    assert headers["x-content-type-options"] == "nosniff" and headers["etag"].startswith('"')
    no_broken(srv.store)


def test_many_requests_in_flight_on_one_connection_are_matched_by_key(srv):
    present = {f"{i:08x}" for i in range(0, 40, 3)}
    for key in present:
        srv.store.put(key, make_wav(0.1), "audio/wav", 0.1)
    with client(srv.url) as ws:
        keys = [f"{i:08x}" for i in range(40)]
        for key in keys:
            send(ws, protocol.CHECK_AUDIO, cacheKey=key)
        replies = dict((data["cacheKey"], event) for event, data in (recv(ws) for _ in keys))
    assert replies == {k: protocol.AUDIO_EXISTS if k in present else protocol.AUDIO_NOT_FOUND for k in keys}


def test_a_long_batch_in_one_write_gets_every_reply_in_order(srv):
    srv.store.put("00000003", make_wav(0.1), "audio/wav", 0.1)
    keys = [f"{i % 7:08x}" for i in range(3 * 64 + 5)]  # more than one flush's worth, repeats included
    sock = raw_ws(srv.port)
    sock.sendall(b"".join(frame(1, json.dumps({"type": "custom", "event": protocol.CHECK_AUDIO,
                                                "data": {"cacheKey": k}}, separators=(",", ":")).encode())
                          for k in keys))
    replies = [json.loads(read_frame(sock)[1]) for _ in keys]
    assert [r["data"]["cacheKey"] for r in replies] == keys
    assert [r["event"] for r in replies] == [protocol.AUDIO_EXISTS if k == "00000003" else protocol.AUDIO_NOT_FOUND
                                             for k in keys]


def test_bad_messages_get_error_replies_and_the_connection_stays(srv):
    with client(srv.url) as ws:
        ws.send("{not json")
        assert recv(ws)[0] == protocol.ERROR
        send(ws, "narrator:self-destruct", cacheKey="0000abcd")
        assert recv(ws) == (protocol.ERROR, {"error": "unknown event 'narrator:self-destruct'",
                                             "cacheKey": "0000abcd"})
        ws.send(b"\x00binary")
        assert recv(ws)[0] == protocol.ERROR
        send(ws, protocol.UPLOAD_AUDIO, **upload_msg("0000abcd", b"\xff\xfb" + os.urandom(5000)))
        event, data = recv(ws)
        assert event == protocol.UPLOAD_ERROR and data["cacheKey"] == "0000abcd" and "not valid" in data["error"]
        send(ws, protocol.UPLOAD_AUDIO, **upload_msg("0000abcd", make_wav(1), "text/html"))
        assert recv(ws)[0] == protocol.UPLOAD_ERROR
        send(ws, protocol.CHECK_AVAILABLE)
        assert recv(ws) == (protocol.AVAILABLE, {"server": protocol.SERVER_NAME, "version": narrator_cli.__version__})
    assert not srv.store.root.exists() or list(srv.store.root.iterdir()) == []


def test_upload_over_the_size_limit_is_refused(tmp_path):
    with running(tmp_path, max_file_size=100_000) as srv, client(srv.url) as ws:
        send(ws, protocol.UPLOAD_AUDIO, **upload_msg("0000abcd", make_mp3(7)))  # ~112 kB, under the frame limit
        event, data = recv(ws)
        assert event == protocol.UPLOAD_ERROR and "larger than" in data["error"]
        assert srv.store.get("0000abcd") is None


def test_many_clients_uploading_and_checking_same_and_different_keys(srv):
    audio = {k: make_mp3(0.5 + i / 10) for i, k in enumerate(["0000000a", "0000000b", "0000000c"])}
    errors: list[str] = []

    def member(n: int) -> None:
        try:
            with client(srv.url) as ws:
                for round_ in range(5):
                    key = list(audio)[(n + round_) % 3]
                    send(ws, protocol.UPLOAD_AUDIO, **upload_msg(key, audio[key], text=key))
                    send(ws, protocol.CHECK_AUDIO, cacheKey=key)
                    replies = dict(recv(ws) for _ in range(2))
                    upload = replies.get(protocol.UPLOAD_SUCCESS)
                    if not upload or upload["cacheKey"] != key or upload["size"] != len(audio[key]):
                        errors.append(f"{n}: upload {replies}")
                    check = replies.get(protocol.AUDIO_EXISTS) or replies.get(protocol.AUDIO_NOT_FOUND)
                    if not check or check["cacheKey"] != key:  # answered before or after the upload landed
                        errors.append(f"{n}: check {replies}")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{n}: {exc!r}")

    threads = [threading.Thread(target=member, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    no_broken(srv.store)
    for key, data in audio.items():
        entry = srv.store.get(key)
        assert srv.store.read_audio(entry) == data and entry.meta["text"] == key
        assert get(srv.port, f"/__narrator-audio/{key}.mp3")[2] == data


# --- frames --------------------------------------------------------------------------------------
def test_unmasked_client_frame_is_closed_1002(srv):
    sock = raw_ws(srv.port)
    sock.sendall(frame(1, b'{"type":"custom","event":"narrator:check-available","data":{}}', mask=False))
    assert close_code(sock) == 1002


def test_invalid_utf8_is_closed_1007(srv):
    sock = raw_ws(srv.port)
    sock.sendall(frame(1, b'{"type":"custom","event":"\xc3\x28"}'))
    assert close_code(sock) == 1007


def test_oversize_length_header_is_closed_1009_without_sending_the_payload(tmp_path):
    with running(tmp_path, max_file_size=1_000_000) as srv:
        sock = raw_ws(srv.port)
        sock.sendall(frame(1, b"", length=1 << 40)[:14])  # header and mask only: 1 TiB announced
        assert close_code(sock) == 1009
        with client(srv.url) as ws:  # still serving
            send(ws, protocol.CHECK_AVAILABLE)
            assert recv(ws)[0] == protocol.AVAILABLE


def test_fragments_with_a_ping_between_and_close_handshake(srv):
    sock = raw_ws(srv.port)
    msg = '{"type":"custom","event":"narrator:check-audio","data":{"cacheKey":"0000abcd","note":"é"}}'.encode()
    cut = msg.index(b"\xa9")  # split inside the two-byte é
    sock.sendall(frame(1, msg[:10], fin=False) + frame(0, msg[10:cut], fin=False) + frame(9, b"are you there")
                 + frame(0, msg[cut:]))
    assert read_frame(sock) == (10, b"are you there")
    opcode, payload = read_frame(sock)
    assert opcode == 1 and json.loads(payload)["event"] == protocol.AUDIO_NOT_FOUND
    sock.sendall(frame(8, struct.pack("!H", 1000) + b"bye"))
    opcode, payload = read_frame(sock)
    assert opcode == 8 and struct.unpack("!H", payload[:2])[0] == 1000
    sock.settimeout(5)
    assert sock.recv(10) == b""  # the server closes the TCP connection after the handshake


def test_truncated_frames_and_garbage_do_not_hurt_other_clients(srv):
    with client(srv.url) as ws:
        bad = raw_ws(srv.port)
        bad.sendall(frame(1, b"x" * 1000)[:300])
        bad.close()
        junk = socket.create_connection(("127.0.0.1", srv.port))
        junk.sendall(os.urandom(4096))
        send(ws, protocol.CHECK_AVAILABLE)
        assert recv(ws)[0] == protocol.AVAILABLE
        junk.close()


def test_idle_and_half_open_clients_are_closed(tmp_path):
    with running(tmp_path, idle_timeout=1.0) as srv:
        sock = raw_ws(srv.port)
        slow = raw_ws(srv.port)
        slow.sendall(frame(1, b"{" * 100)[:20])  # a slow sender that stops mid-frame
        silent = socket.create_connection(("127.0.0.1", srv.port), timeout=5)  # never says anything
        t0 = time.monotonic()
        assert close_code(sock) == 1001
        assert close_code(slow) == 1001
        assert silent.recv(10) == b""
        assert time.monotonic() - t0 < 4


def test_a_request_head_that_never_ends_is_closed_after_the_header_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(server_module, "HEADER_TIMEOUT", 0.5)
    with running(tmp_path, idle_timeout=30.0) as srv:
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        sock.sendall(b"GET /__narrator-health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
        t0 = time.monotonic()
        assert sock.recv(10) == b""
        assert time.monotonic() - t0 < 3  # the header deadline, not the 30 s idle timeout


@pytest.mark.parametrize("repeat", range(3))  # the abort can land in any phase of the sendfile
def test_a_peer_that_stops_reading_is_dropped_and_the_server_serves_on(tmp_path, caplog, monkeypatch, repeat):
    monkeypatch.setattr(server_module, "SLOWEST_READER", 10_000_000)  # ~1 MB: 0.1 s on top of the idle timeout
    with running(tmp_path, idle_timeout=1.0) as srv:
        audio = make_mp3(65)  # ~1 MB: sendfile, and more than the socket buffers hold
        srv.store.put("0000abcd", audio, "audio/mpeg", 65.0)
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /__narrator-audio/0000abcd.mp3 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 8)
        deadline = time.monotonic() + 6
        while srv.server.connections and time.monotonic() < deadline:  # stuck writing to us, until the timeout
            time.sleep(0.05)
        assert not srv.server.connections
        status, _, body = get(srv.port, "/__narrator-audio/0000abcd.mp3")
        assert status == 200 and body == audio
        sock.close()
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []  # nothing asyncio complained of


def test_a_slow_but_steady_download_outlasts_the_idle_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(server_module, "SLOWEST_READER", 1_000_000)  # 20 MB: 20 s on top of the idle timeout
    with running(tmp_path, idle_timeout=1.0) as srv:
        audio = make_mp3(1250)  # ~20 MB, far more than the socket buffers: sendfile waits on the reader
        srv.store.put("0000abcd", audio, "audio/mpeg", 1250.0)
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /__narrator-audio/0000abcd.mp3 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received, t0 = bytearray(), time.monotonic()
        while len(received) < len(audio) + 200 and (chunk := sock.recv(65536)):
            received += chunk
            time.sleep(0.01)  # ~6 MB/s at most: the body takes about three idle timeouts
        elapsed = time.monotonic() - t0
        sock.close()
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and len(body) == len(audio) and body == audio
    assert elapsed > 1.5  # it really was slower than the idle timeout


# --- HTTP ----------------------------------------------------------------------------------------
@pytest.fixture
def with_file(srv):
    audio = make_mp3(2)
    srv.store.put("5f5ac131", audio, "audio/mpeg", 2.0, {"text": "Hello world"})
    return srv, audio


def test_conditional_range_and_head(with_file):
    srv, audio = with_file
    status, headers, _ = get(srv.port, "/__narrator-audio/5f5ac131.mp3", method="HEAD")
    assert status == 200 and headers["content-length"] == str(len(audio)) and headers["accept-ranges"] == "bytes"
    etag = headers["etag"]
    assert get(srv.port, "/__narrator-audio/5f5ac131.mp3", f"If-None-Match: {etag}\r\n")[0] == 304
    assert get(srv.port, "/__narrator-audio/5f5ac131.mp3", 'If-None-Match: "other"\r\n')[0] == 200
    status, headers, body = get(srv.port, "/__narrator-audio/5f5ac131.mp3", "Range: bytes=100-199\r\n")
    assert status == 206 and body == audio[100:200] and headers["content-range"] == f"bytes 100-199/{len(audio)}"
    status, headers, body = get(srv.port, "/__narrator-audio/5f5ac131.mp3", "Range: bytes=-10\r\n")
    assert status == 206 and body == audio[-10:]
    status, headers, _ = get(srv.port, "/__narrator-audio/5f5ac131.mp3", f"Range: bytes={len(audio)}-\r\n")
    assert status == 416 and headers["content-range"] == f"bytes */{len(audio)}"
    status, _, body = get(srv.port, "/__narrator-audio/5f5ac131.mp3", "Range: bytes=9-1\r\n")
    assert status == 200 and body == audio  # invalid range: ignored


def test_keep_alive_serves_several_requests_on_one_connection(with_file):
    srv, audio = with_file
    req = b"GET /__narrator-audio/5f5ac131.mp3 HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(req * 3)
        data = b""
        while data.count(audio) < 3:
            chunk = sock.recv(1 << 16)
            assert chunk
            data += chunk


@pytest.mark.parametrize("path", [
    "/__narrator-audio/../cache/5f5ac131.mp3", "/__narrator-audio/%2e%2e/5f5ac131.mp3",
    "/__narrator-audio/..%2f5f5ac131.mp3", "/__narrator-audio/..\\5f5ac131.mp3",
    "/__narrator-audio/5f5ac131.mp3%00", "/__narrator-audio/5F5AC131.mp3", "/__narrator-audio/5f5ac131.meta.json",
    "/__narrator-audio/5f5ac131.wav", "/__narrator-audio/5f5ac131.mp3/", "/__narrator-audio//5f5ac131.mp3",
    "/__narrator-audio/%35f5ac131.mp3", "/__narrator-audio/", "/etc/passwd", "/__narrator-audio/0000abcd.mp3",
])
def test_anything_but_an_existing_cache_file_is_404(with_file, path):
    status, _, body = get(with_file[0].port, path)
    assert status == 404 and b"ID3" not in body and b"\xff\xfb" not in body


def test_malformed_http_gets_a_status_and_the_server_stays(srv):
    assert http(srv.port, "GARBAGE\r\n\r\n")[0] == 400
    assert http(srv.port, "GET / HTTP/2.0\r\nHost: x\r\n\r\n")[0] == 505
    assert http(srv.port, "GET /" + "a" * 20000 + " HTTP/1.1\r\n\r\n")[0] == 414
    assert http(srv.port, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "X-A: b\r\n" * 3000 + "\r\n")[0] == 431
    assert http(srv.port, "POST /__narrator-health HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n")[0] == 405
    status, _, body = get(srv.port, "/__narrator-health")
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_health_cleanup_and_cors(with_file):
    srv, audio = with_file
    status, headers, body = get(srv.port, "/__narrator-health")
    health = json.loads(body)
    on_disk = sum(p.stat().st_size for p in srv.store.root.iterdir())  # audio and metadata, as stats counts
    assert status == 200 and health["entries"] == 1 and health["bytes"] == on_disk > len(audio) and health["version"]
    old = srv.store.put("0000abcd", make_wav(1), "audio/wav", 1.0)
    os.utime(old.path, (time.time() - 40 * 86400,) * 2)
    (srv.store.root / ".0000abce.mp3.tmp").write_bytes(b"partial")
    os.utime(srv.store.root / ".0000abce.mp3.tmp", (time.time() - 3600,) * 2)
    srv.server.options.max_age = 30 * 86400
    status, _, body = get(srv.port, "/__narrator-cleanup")
    summary = json.loads(body)
    assert status == 200 and "0000abcd" in json.dumps(summary) and srv.store.get("0000abcd") is None
    assert srv.store.get("5f5ac131") is not None and not (srv.store.root / ".0000abce.mp3.tmp").exists()
    status, headers, _ = get(srv.port, "/__narrator-audio/5f5ac131.mp3", "Origin: http://localhost:9000\r\n")
    assert headers["access-control-allow-origin"] == "http://localhost:9000"
    status, headers, _ = get(srv.port, "/__narrator-audio/5f5ac131.mp3", "Origin: https://evil.example\r\n")
    assert status == 200 and "access-control-allow-origin" not in headers
    status, headers, _ = get(srv.port, "/__narrator-audio/5f5ac131.mp3", "Origin: http://localhost:9000\r\n",
                             method="OPTIONS")
    assert status == 204 and "Range" in headers["access-control-allow-headers"]


def test_dns_rebinding_host_is_refused(srv):
    assert http(srv.port, "GET /__narrator-health HTTP/1.1\r\nHost: evil.example\r\n\r\n")[0] == 400
    assert http(srv.port, "GET /__narrator-health HTTP/1.1\r\nHost: evil.example:8790\r\n\r\n")[0] == 400
    assert http(srv.port, "GET /__narrator-health HTTP/1.1\r\nHost: localhost:8790\r\n\r\n")[0] == 200
    assert http(srv.port, "GET /__narrator-health HTTP/1.1\r\nHost: [::1]:8790\r\n\r\n")[0] == 200


def test_allowed_host_and_origin_options(tmp_path):
    with running(tmp_path, allow_hosts=["narrator.internal"], allow_origins=["https://editor.example"]) as srv:
        assert http(srv.port, "GET /__narrator-health HTTP/1.1\r\nHost: narrator.internal:80\r\n\r\n")[0] == 200
        with client(srv.url, origin="https://editor.example") as ws:
            send(ws, protocol.CHECK_AVAILABLE)
            assert recv(ws)[0] == protocol.AVAILABLE


def test_foreign_origin_websocket_is_refused(srv):
    with pytest.raises(InvalidStatus) as info, client(srv.url, origin="https://evil.example"):
        pass
    assert info.value.response.status_code == 403
    with client(srv.url, origin="http://localhost:5173") as ws:
        send(ws, protocol.CHECK_AVAILABLE)
        assert recv(ws)[0] == protocol.AVAILABLE


def test_token(tmp_path):
    with running(tmp_path, token="s3cret-token") as srv:
        for url in (srv.url, srv.url + "?token=wrong", srv.url + "?token=s3cret-toke"):
            with pytest.raises(InvalidStatus) as info, client(url):
                pass
            assert info.value.response.status_code == 401
            assert b"s3cret" not in info.value.response.body
        with client(srv.url + "?token=s3cret-token") as ws:
            send(ws, protocol.CHECK_AVAILABLE)
            assert recv(ws)[0] == protocol.AVAILABLE
        assert get(srv.port, "/__narrator-cleanup")[0] == 401
        assert get(srv.port, "/__narrator-cleanup?token=nope")[0] == 401
        assert get(srv.port, "/__narrator-cleanup?token=s3cret-token")[0] == 200
        assert get(srv.port, "/__narrator-cleanup", "X-Narrator-Token: s3cret-token\r\n")[0] == 200
        assert get(srv.port, "/__narrator-cleanup", "Authorization: Bearer s3cret-token\r\n")[0] == 200


# --- cache management ------------------------------------------------------------------------------
def test_start_up_removes_old_entries(tmp_path):
    store = Store(tmp_path / "cache")
    old = store.put("0000000a", make_wav(1), "audio/wav", 1.0)
    store.put("0000000b", make_wav(1), "audio/wav", 1.0)
    os.utime(old.path, (time.time() - 31 * 86400,) * 2)
    server = Server(store, Options(port=0, quiet=True, max_age=30 * 86400))

    async def start_stop() -> None:
        await server.start()
        await server.shutdown(1)

    asyncio.run(start_stop())
    assert [e.key for e in store.scan().entries] == ["0000000b"]


def test_eviction_after_upload_keeps_recently_used(tmp_path):
    size = len(make_wav(1))
    with running(tmp_path, max_cache_size=int(2.5 * size)) as srv:
        for i, key in enumerate(["0000000a", "0000000b"]):
            entry = srv.store.put(key, make_wav(1), "audio/wav", 1.0)
            os.utime(entry.path, (time.time() - 3600 + i,) * 2)
        with client(srv.url) as ws:
            send(ws, protocol.CHECK_AUDIO, cacheKey="0000000a")  # a use: b is now least recent
            assert recv(ws)[0] == protocol.AUDIO_EXISTS
            send(ws, protocol.UPLOAD_AUDIO, **upload_msg("0000000c", make_wav(1), "audio/wav"))
            assert recv(ws)[0] == protocol.UPLOAD_SUCCESS
        assert sorted(e.key for e in srv.store.scan().entries) == ["0000000a", "0000000c"]


# --- the real command ----------------------------------------------------------------------------
def start_serve(*args: str, cwd) -> tuple[subprocess.Popen, int]:
    proc, url = serve_process.start_serve(*args, cwd=cwd)
    return proc, serve_process.port_of(url)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])  # Ctrl-C is a stop like any other
def test_serve_command_stop_signal_mid_upload_leaves_nothing_partial(tmp_path, sig):
    proc, port = start_serve("--audio-path", "cache", cwd=tmp_path)
    try:
        assert json.loads(get(port, "/__narrator-health")[2])["entries"] == 0
        big = json.dumps({"type": "custom", "event": protocol.UPLOAD_AUDIO,
                          "data": upload_msg("0000abcd", make_mp3(300))}).encode()
        done = raw_ws(port)
        done.sendall(frame(1, big))  # complete: stored (or not) whole
        half = raw_ws(port)
        half.sendall(frame(1, big)[: len(big) // 2])  # still arriving when the signal comes
        time.sleep(0.3)
        proc.send_signal(sig)
        assert proc.wait(15) == 0
    finally:
        proc.kill()
    cache = tmp_path / "cache"
    no_broken(Store(cache))
    names = sorted(p.name for p in cache.iterdir()) if cache.exists() else []
    assert names in ([], ["0000abcd.meta.json", "0000abcd.mp3"])
    assert not any(n.startswith(".") for n in names)


def test_serve_command_log_lines(tmp_path):
    proc, port = start_serve("--audio-path", "cache", cwd=tmp_path)
    try:
        with client(f"ws://127.0.0.1:{port}/") as ws:
            send(ws, protocol.CHECK_AUDIO, cacheKey="0000abcd")
            recv(ws)
            send(ws, protocol.UPLOAD_AUDIO, **upload_msg("0000abcd", make_wav(1), "audio/wav"))
            recv(ws)
            send(ws, protocol.UPLOAD_AUDIO, **upload_msg("0000abce", b"junk", "audio/wav"))
            recv(ws)
        http(port, "GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    events = [json.loads(line)["event"] for line in proc.stderr.read().splitlines()]
    assert {"miss", "upload", "refused", "stopped"} <= set(events)


def test_serve_command_refuses_bad_options(tmp_path):
    for args, needle in ((["--max-age", "3 fortnights"], "invalid age"), (["--max-cache-size", "lots"], "invalid size"),
                         (["--allowed-mime-type", "text/html"], "text/html")):
        r = subprocess.run([sys.executable, "-c", "from narrator_cli.cli import main; main()", "serve", *args],
                           cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert "Traceback" not in r.stderr


def test_non_loopback_bind_that_fails_shows_no_token(tmp_path):
    # 192.0.2.1 (TEST-NET-1) is never a local address: the bind fails, nothing listens beyond loopback, and a
    # token is only shown once the socket is bound (tests/test_serve_cli.py sees it shown)
    r = subprocess.run([sys.executable, "-c", "from narrator_cli.cli import main; main()", "serve", "--host",
                        "192.0.2.1", "--port", "0"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.splitlines() == ["narrator: error: cannot serve on 192.0.2.1:0: not an address of this machine"]


# --- large uploads: base64 decoded while the message arrives ----------------------------------
@pytest.fixture
def taken(monkeypatch):
    """What each UploadStream.take handed over (None: the upload was decoded the normal way)."""
    heads = []
    original = protocol.UploadStream.take

    def take(self, message, url_at, b64_len):
        head = original(self, message, url_at, b64_len)
        if b64_len:
            heads.append(head)
        return head

    monkeypatch.setattr(protocol.UploadStream, "take", take)
    return heads


def send_in_pieces(sock: socket.socket, frames: list[bytes], pieces: int = 6) -> None:
    """Frames written in a few pieces with pauses, so the server sees the message grow."""
    data = b"".join(frames)
    step = len(data) // pieces + 1
    for start in range(0, len(data), step):
        sock.sendall(data[start:start + step])
        time.sleep(0.05)


def upload_bytes(key: str, audio: bytes, **extra) -> bytes:
    return json.dumps({"type": "custom", "event": protocol.UPLOAD_AUDIO,
                       "data": {**extra, **upload_msg(key, audio, text="streamed")}}).encode()


@pytest.mark.parametrize("fragments", [1, 5])
def test_large_upload_decoded_while_arriving_is_stored_byte_identical(srv, taken, fragments):
    audio = make_mp3(200)  # ~3.2 MB
    raw = upload_bytes("0000beef", audio)
    cut = len(raw) // fragments + 1
    parts = [raw[i:i + cut] for i in range(0, len(raw), cut)]
    frames = [frame(1 if i == 0 else 0, p, fin=i == len(parts) - 1) for i, p in enumerate(parts)]
    sock = raw_ws(srv.port)
    send_in_pieces(sock, frames)
    opcode, payload = read_frame(sock)
    event, data = json.loads(payload)["event"], json.loads(payload)["data"]
    assert event == protocol.UPLOAD_SUCCESS and data["size"] == len(audio)
    assert len(taken) == 1 and taken[0] is not None and taken[0].chars > 0  # the streamed path was used
    assert srv.store.read_audio(srv.store.get("0000beef")) == audio
    no_broken(srv.store)


def test_invalid_base64_mid_stream_is_refused_and_nothing_stored(srv, taken):
    raw = bytearray(upload_bytes("0000beef", make_mp3(200)))
    raw[len(raw) // 2] = ord("!")
    sock = raw_ws(srv.port)
    send_in_pieces(sock, [frame(1, bytes(raw))])
    opcode, payload = read_frame(sock)
    reply = json.loads(payload)
    assert reply["event"] == protocol.UPLOAD_ERROR and reply["data"] == {"cacheKey": "0000beef",
                                                                         "error": "invalid base64 data"}
    assert taken == [None] and srv.store.get("0000beef") is None
    no_broken(srv.store)
    sock.sendall(frame(1, json.dumps({"type": "custom", "event": protocol.CHECK_AUDIO,
                                      "data": {"cacheKey": "0000beef"}}).encode()))
    assert json.loads(read_frame(sock)[1])["event"] == protocol.AUDIO_NOT_FOUND  # the connection stays


def test_large_upload_with_the_data_url_elsewhere_falls_back(srv, taken):
    audio = make_mp3(200)
    raw = upload_bytes("0000beef", audio, note="data:text/plain;base64,QUFB")  # a decoy "data: first
    assert raw.index(b'"data:text/plain') < raw.index(b'"data:audio/mpeg')
    sock = raw_ws(srv.port)
    send_in_pieces(sock, [frame(1, raw)])
    reply = json.loads(read_frame(sock)[1])
    assert reply["event"] == protocol.UPLOAD_SUCCESS
    assert taken == [None] and srv.store.read_audio(srv.store.get("0000beef")) == audio


def test_client_gone_mid_upload_leaves_no_staged_file(srv, taken):
    raw = upload_bytes("0000beef", make_mp3(300))  # ~4.8 MB
    sock = raw_ws(srv.port)
    data = frame(1, raw)
    sock.sendall(data[:len(data) * 2 // 3])  # most of it: the stream has started writing
    deadline = time.monotonic() + 5
    while not list(srv.store.root.glob(".*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(srv.store.root.glob(".*")), "the upload was not being staged"
    sock.close()
    while list(srv.store.root.glob(".*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    no_broken(srv.store)
    assert srv.store.get("0000beef") is None
    with client(srv.url) as ws:  # still serving
        send(ws, protocol.CHECK_AUDIO, cacheKey="0000beef")
        assert recv(ws)[0] == protocol.AUDIO_NOT_FOUND
