"""The ``fast`` extra's C code (websockets' unmasking, pybase64's base64) against the standard-library paths
it stands in for: the same frames and uploads through both give the same events, errors, close codes and
stored bytes, in the codec, in the upload decoder and in a real `narrator serve` process each way."""

from __future__ import annotations

import base64
import binascii
import json
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.sync.client import connect

from audio_fixtures import make_mp3
from serve_process import start_serve
from narrator_cli import protocol, ws
from narrator_cli.protocol import BadMessage, Handler, Index
from narrator_cli.store import Store
from narrator_cli.ws import Connection, Role

KEY4 = b"\x37\xfa\x21\x3d"
ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def on_path(fast: bool):  # type: ignore[no-untyped-def]
    """Run a function with the C paths on or off, putting back what was chosen before."""
    def run(fn, *args):  # type: ignore[no-untyped-def]
        before = ws.use_speedups(fast)
        try:
            return fn(*args)
        finally:
            ws.use_speedups(before)
    return run


fast, pure = on_path(True), on_path(False)


def outcome(fn, *args):  # type: ignore[no-untyped-def]
    """What a call gives: its value, or its exception's type and message."""
    try:
        return "ok", fn(*args)
    except (binascii.Error, ValueError, BadMessage) as exc:
        return type(exc).__name__, str(exc)


# --- the extra itself ---------------------------------------------------------------------
def test_the_test_environment_has_both_c_paths():
    """CI installs the test extra, which must bring the fast extra's packages: otherwise every "fast"
    case below would quietly test the standard library twice."""
    assert fast(ws.speedups) == {"mask": True, "base64": True}, "pip install -e '.[test]' (websockets, pybase64)"
    assert pure(ws.speedups) == {"mask": False, "base64": False}


def test_the_c_paths_are_the_ones_taken(monkeypatch):
    calls = []
    before = ws.use_speedups(True)
    try:
        real_mask, real_b64 = ws._c_mask, ws._c_b64decode
        monkeypatch.setattr(ws, "_c_mask", lambda *a: calls.append("mask") or real_mask(*a))
        monkeypatch.setattr(ws, "_c_b64decode", lambda *a, **k: calls.append("base64") or real_b64(*a, **k))
        conn = Connection(Role.SERVER)
        conn.receive_data(bytes([0x81, 0x80 | 4]) + KEY4 + ws._mask(b"QUFB", KEY4))
        assert [bytes(e.data) for e in conn.events()] == [b"QUFB"]
        assert ws.strict_b64decode(b"QUFB") == b"AAA"
        assert calls == ["mask", "mask", "base64"]
    finally:
        ws.use_speedups(before)


def test_a_client_that_only_checks_never_imports_the_extra(tmp_path):
    """Importing websockets costs a command ~40 ms: a client masking small frames does without it."""
    code = ("import sys; from narrator_cli import ws; c = ws.Connection(ws.Role.CLIENT); c.send_text('x' * 1000); "
            "c.data_to_send(); print('websockets' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


# --- unmasking ----------------------------------------------------------------------------------
def masked_by_hand(data: bytes, key: bytes, offset: int) -> bytes:
    return bytes(b ^ key[(i + offset) % 4] for i, b in enumerate(data))


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 7, 125, 126, 4097, 65535, 65536, 65537])
@pytest.mark.parametrize("offset", [0, 1, 2, 3, 6])
def test_mask_is_the_same_on_both_paths(size, offset):
    data = random.Random(size).randbytes(size)
    want = masked_by_hand(data, KEY4, offset)
    assert fast(ws._mask, data, KEY4, offset) == want
    assert pure(ws._mask, data, KEY4, offset) == want
    view = memoryview(bytearray(b"xx" + data))[2:]  # how the codec hands it a piece of a read
    assert fast(ws._mask, view, KEY4, offset) == want


def test_mask_of_a_large_payload_in_pieces_is_the_same_on_both_paths():
    data = random.Random(9).randbytes((3 << 20) + 3)
    whole = pure(ws._mask, data, KEY4, 0)
    assert fast(ws._mask, data, KEY4, 0) == whole
    rng, pos, pieces = random.Random(10), 0, []
    while pos < len(data):
        n = rng.choice([1, 3, 4096, 131072, 1 << 20])
        pieces.append(fast(ws._mask, memoryview(data)[pos:pos + n], KEY4, pos))
        pos += n
    assert b"".join(pieces) == whole


# --- base64 -------------------------------------------------------------------------------
EDGES = [b"", b"QQ==", b"QUI=", b"QUJD", b"QR==", b"QUJ=", b"QQ=", b"QQ", b"Q", b"Q===", b"====", b"=QQQ",
         b"QQ=Q", b"QQ==QUJD", b"QUJD====", b"QUJD=", b"QUJD==", b"QUJDQ===", b"QQ==\n", b" QUJD", b"QU\x00D",
         b"QUJD\xff", b"QU-_", b"QUJD\r\n", b"QU JD", b"QUJD" * 1000 + b"=", b"QUJD" * 1000 + b"QQ=="]


def mutations(seed: int, count: int) -> list[bytes]:
    """Valid base64 broken in every way a sender might: odd characters, padding anywhere, any length."""
    rng, extra, out = random.Random(seed), b"====\n\r -_\x00\xff.\t", []
    for _ in range(count):
        s = bytearray(rng.choice(ALPHABET) for _ in range(rng.choice([0, 1, 3, 4, 8, 12, 20, 64, 200])))
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            if s:
                s[rng.randrange(len(s))] = rng.choice(ALPHABET + extra)
        if s and rng.random() < 0.4:
            k = min(rng.choice([1, 2, 3, 4]), len(s))
            s[-k:] = b"=" * k
        out.append(bytes(s))
    return out


@pytest.mark.parametrize("data", EDGES)
def test_strict_base64_is_the_same_on_both_paths(data):
    want = outcome(lambda: binascii.a2b_base64(data, strict_mode=True))  # the standard library's strict mode
    assert fast(outcome, ws.strict_b64decode, data) == want
    assert pure(outcome, ws.strict_b64decode, data) == want
    assert fast(outcome, ws.strict_b64decode, memoryview(bytearray(data))) == want


def test_strict_base64_keeps_what_the_standard_library_lets_through():
    """pybase64 refuses ``=`` after a whole quad; strict_mode does not: the fast path must agree with it."""
    assert fast(ws.strict_b64decode, b"QUJD====") == pure(ws.strict_b64decode, b"QUJD====") == b"ABC"


def test_strict_base64_of_thousands_of_broken_inputs_is_the_same_on_both_paths():
    inputs = mutations(1, 4000)
    ours_fast = fast(lambda: [outcome(ws.strict_b64decode, s) for s in inputs])
    ours_pure = pure(lambda: [outcome(ws.strict_b64decode, s) for s in inputs])
    assert ours_fast == ours_pure
    assert {kind for kind, _ in ours_fast} == {"ok", "Error"}  # both kinds were tried


# --- the codec: the same frames through both paths ---------------------------------------------------
def masked(first: int, payload: bytes, key: bytes = KEY4) -> bytes:
    n = len(payload)
    length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n) if n < 65536 \
        else bytes([0x80 | 127]) + struct.pack("!Q", n)
    return bytes([first]) + length + key + masked_by_hand(payload, key, 0)


BIG = ("é narration " * 30_000).encode()  # ~390 KB of text, over the small-mask size
FRAMES = [
    masked(0x81, b'{"type":"custom","event":"narrator:check-audio","data":{"cacheKey":"5f5ac131"}}'),
    masked(0x81, BIG), masked(0x82, random.Random(3).randbytes(200_000)),
    masked(0x01, BIG[:70_001]) + masked(0x89, b"ping") + masked(0x80, BIG[70_001:]),
    masked(0x81, b"caf\xc3\x28"), masked(0x81, BIG[:100_000] + b"\xff" + BIG[:100]),
    masked(0x81, b"ok \xe2\x82"), masked(0x88, b"\x03\xe8bye"), masked(0x88, b"\x03\xe8\xff"),
    masked(0x88, struct.pack("!H", 1005)), masked(0x88, b"\x03"), masked(0x88, b""),
    b"\x81\x02hi", masked(0xC1, b"x"), masked(0x83, b"x"), masked(0x80, b"x"), masked(0x09, b"p"),
    masked(0x89, b"p" * 126), masked(0x01, b"a") + masked(0x81, b"b"),
    bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 63) + KEY4,
    masked(0x82, b"y" * 70_000)[:40_000],
]


def read_as_server(raw: bytes, piece: int, limit: int | None) -> tuple[list, bytes]:
    conn = Connection(Role.SERVER, max_message_size=limit)
    events = []
    for start in range(0, len(raw), piece):
        conn.receive_data(raw[start:start + piece])
        events += conn.events()
    conn.receive_data(b"")
    events += conn.events()
    return [(type(e).__name__, bytes(e.data) if hasattr(e, "data") else (e.code, e.reason)) for e in events], \
        conn.data_to_send()


@pytest.mark.parametrize("index", range(len(FRAMES)))
@pytest.mark.parametrize("piece", [1, 7, 4096, 1 << 20])
@pytest.mark.parametrize("limit", [None, 100_000])
def test_a_server_reads_the_same_frames_the_same_way_on_both_paths(index, piece, limit):
    raw = FRAMES[index]
    if piece == 1 and len(raw) > 5000:
        raw = raw[:5000]  # byte by byte: the head of it is enough
    assert fast(read_as_server, raw, piece, limit) == pure(read_as_server, raw, piece, limit)


@pytest.mark.parametrize("size", [0, 125, 65535, 65536, 300_000])
def test_what_a_client_sends_reads_the_same_on_both_paths(size):
    payload = random.Random(size).randbytes(size)

    def send() -> bytes:
        conn = Connection(Role.CLIENT)
        conn.send_binary(payload)
        conn.send_text("naïve")
        return conn.data_to_send()

    for sent in (fast(send), pure(send)):
        events, _ = pure(read_as_server, sent, 1 << 20, None)
        assert events[:2] == [("Message", payload), ("Message", "naïve".encode())]


# --- the upload decoder ---------------------------------------------------------------------------
def upload_raw(b64: bytes) -> bytes:
    return (b'{"type":"custom","event":"narrator:upload-audio","data":{"cacheKey":"0000abcd",'
            b'"mimeType":"audio/mpeg","data":"data:audio/mpeg;base64,' + b64 + b'"}}')


def streamed(handler: Handler, buf: bytearray, raw: bytes, piece: int):  # type: ignore[no-untyped-def]
    """``raw`` fed into ``buf`` a read of ``piece`` bytes at a time, the upload stream stepped after each, as the
    server does; the stream."""
    stream = handler.upload_stream(buf)
    for start in range(0, len(raw), piece):
        buf += raw[start:start + piece]
        stream.step()
    return stream


def decode_upload(root: Path, raw: bytes, piece: int) -> tuple:
    """The server's upload path up to the stored bytes: streamed while it arrives, the rest after."""
    handler = Handler(Index(Store(root)), max_file_size=8 << 20)
    buf = bytearray()
    stream = streamed(handler, buf, raw, piece)
    try:
        event, data, url_at = protocol.decode_located(buf, stream.finish(buf))
        key, mime, b64, meta = handler.parse_upload(data)
        head = stream.take(buf, url_at, len(b64))
        *_, staged = handler.decode_steps(key, b64, head)
    except BadMessage as exc:
        return "refused", exc.reply()
    finally:
        stream.close()
    audio = staged.path.read_bytes()
    staged.discard()
    return "stored", audio, staged.sha256


GOOD = base64.b64encode(make_mp3(180))  # ~3.8 MB of base64: streamed in steps


def broken(at: float, char: bytes) -> bytes:
    b64 = bytearray(GOOD)
    b64[int(len(b64) * at)] = char[0]
    return bytes(b64)


@pytest.mark.parametrize("b64", [
    GOOD, GOOD[:-4] + b"QQ==", GOOD + b"====", GOOD[:-1], broken(0.5, b"!"), broken(0.5, b"="),
    broken(0.05, b"\n"), broken(0.999, b"-"), GOOD[:4000] + b"QQ==" + GOOD[4004:],
], ids=["good", "padded", "excess-padding", "cut", "bad-char", "pad-inside", "newline", "url-safe", "pad-early"])
def test_uploads_decode_the_same_on_both_paths(tmp_path, b64):
    raw = upload_raw(b64)
    for piece in (300_001, 1 << 20):
        want = pure(decode_upload, tmp_path / "pure", raw, piece)
        assert fast(decode_upload, tmp_path / "fast", raw, piece) == want
    if b64 == GOOD:
        assert want[:2] == ("stored", base64.b64decode(GOOD))


class SearchedBuffer(bytearray):
    """A message buffer that counts how many of its bytes were searched for a quote."""

    searched = 0

    def find(self, sub, *where):  # type: ignore[no-untyped-def, override]
        if sub == b'"':
            start, end = (list(where) + [0, len(self)][len(where):])[:2]
            self.searched += min(end, len(self)) - start
        return super().find(sub, *where)


@pytest.mark.parametrize("piece", [1 << 17, 300_001])
def test_a_streamed_upload_is_searched_for_its_closing_quote_once(tmp_path, piece):
    """Read by read, each byte is searched once (not again at each step), and not again after the last byte:
    the stream tells ``decode_located`` where the URL ends."""
    raw = upload_raw(GOOD)
    handler = Handler(Index(Store(tmp_path)), max_file_size=8 << 20)
    buf = SearchedBuffer()
    stream = streamed(handler, buf, raw, piece)
    span = stream.finish(buf)
    assert span == (raw.index(b'"data:'), len(raw) - 3)
    event, data, url_at = protocol.decode_located(buf, span)
    assert buf.searched <= len(raw)
    assert (event, bytes(data["data"]), url_at) == \
        (protocol.UPLOAD_AUDIO, raw[span[0] + 1:span[1]], protocol.decode_located(bytes(raw))[2])
    stream.close()


@pytest.mark.parametrize("raw, spanned", [
    (upload_raw(GOOD), True), (upload_raw(GOOD).replace(b"data:audio/mpeg", b"data:audio\\/mpeg"), False),
    (upload_raw(GOOD).replace(b'"cacheKey"', b'"note":"data:text/plain;base64,QUFB","cacheKey"'), True),
    (upload_raw(GOOD[:-4] + b"QQ=="), True), (upload_raw(GOOD[:100] + b"!" + GOOD[101:]), False),
    (upload_raw(GOOD).replace(b'"mimeType"', b'"note":"\\u0022","mimeType"'), True),
], ids=["plain", "escaped-slash-in-head", "decoy-url-first", "padded", "bad-base64", "escape-before"])
def test_decode_located_with_the_streams_span_reads_as_without(tmp_path, raw, spanned):
    handler = Handler(Index(Store(tmp_path)), max_file_size=8 << 20)
    buf = bytearray()
    stream = handler.upload_stream(buf)
    for start in range(0, len(raw), 1 << 17):
        buf += raw[start:start + (1 << 17)]
        stream.step()

    def located(span):  # type: ignore[no-untyped-def]
        event, data, url_at = protocol.decode_located(buf, span)
        return event, {k: bytes(v) if isinstance(v, memoryview) else v for k, v in data.items()}, url_at

    span = stream.finish(buf)
    assert outcome(located, span) == outcome(located, None)
    assert (span is not None) is spanned
    stream.close()


# --- a real `narrator serve` with and without the extra -------------------------------------------------
def c_modules(pid: int) -> set[str]:
    """The extra's C modules mapped into a process."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {name for name, part in (("mask", "websockets/speedups"), ("base64", "pybase64/_pybase64")) if part in maps}


def upload_over(url: str, key: str, b64: bytes) -> dict:
    with connect(url.replace("http", "ws") + "/", subprotocols=["vite-hmr"], max_size=None, open_timeout=10) as sock:
        assert json.loads(sock.recv(10)) == {"type": "connected"}
        sock.send(json.dumps({"type": "custom", "event": protocol.UPLOAD_AUDIO, "data": {
            "cacheKey": key, "mimeType": "audio/mpeg", "metadata": {"text": "same bytes"},
            "data": "data:audio/mpeg;base64," + b64.decode("latin-1")}}))
        return json.loads(sock.recv(60))


def test_a_real_server_stores_the_same_bytes_with_and_without_the_extra(tmp_path, monkeypatch):
    audio = make_mp3(400)  # ~6.4 MB: decoded while it arrives
    uploads = {"0000aaaa": base64.b64encode(audio), "0000bbbb": base64.b64encode(audio)[:-8] + b"QQ==QQ==",
               "0000cccc": broken(0.5, b"!"), "0000dddd": base64.b64encode(make_mp3(3)) + b"===="}
    seen = {}
    for name, env in (("fast", None), ("pure", "1")):
        if env:
            monkeypatch.setenv(ws.PURE_ENV, env)
        proc, url = start_serve("--audio-path", str(tmp_path / name), "--max-age", "never", drain=True)
        try:
            replies = {key: upload_over(url, key, b64) for key, b64 in uploads.items()}
            loaded = c_modules(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
        monkeypatch.delenv(ws.PURE_ENV, raising=False)
        assert loaded == ({"mask", "base64"} if name == "fast" else set())
        store = Store(tmp_path / name)
        files = {key: store.read_audio(entry) if (entry := store.get(key)) else None for key in uploads}
        seen[name] = replies, files, sorted(p.name for p in (tmp_path / name).iterdir())
    assert seen["fast"] == seen["pure"]
    replies, files, _ = seen["fast"]
    assert files["0000aaaa"] == audio and replies["0000aaaa"]["event"] == protocol.UPLOAD_SUCCESS
    assert replies["0000cccc"]["data"]["error"] == "invalid base64 data" and files["0000cccc"] is None
    assert replies["0000dddd"]["event"] == protocol.UPLOAD_SUCCESS  # as the standard library has always let it be
