"""narrator_cli.ws, cross-checked against an independent RFC 6455 implementation.

Frames made by websockets' sans-I/O ClientProtocol/ServerProtocol go into our
Connection and ours go into theirs, so a shared misreading of the RFC is the
only way both sides could agree on a wrong byte. Failures are hand-built bytes.
"""

from __future__ import annotations

import base64
import random
import struct

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Close as WSClose
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from narrator_cli import ws
from narrator_cli.ws import Close, Connection, HandshakeError, Message, Ping, Pong, Role

KEY4 = b"\x37\xfa\x21\x3d"


@pytest.fixture(autouse=True, params=["fast", "pure"])
def speedups(request):
    """Every test here runs twice: with the fast extra's C unmasking, and with the standard library's."""
    before = ws.use_speedups(request.param == "fast")
    assert ws.speedups()["mask"] is (request.param == "fast"), "the test extra must install websockets' C speedups"
    yield request.param
    ws.use_speedups(before)


# --- helpers ------------------------------------------------------------------------
def their_client() -> ClientProtocol:
    return ClientProtocol(parse_uri("ws://localhost/"), state=State.OPEN, max_size=None)


def their_server() -> ServerProtocol:
    return ServerProtocol(state=State.OPEN, max_size=None)


def drain(proto: ClientProtocol | ServerProtocol) -> bytes:
    return b"".join(proto.data_to_send())


def feed_them(proto: ClientProtocol | ServerProtocol, data: bytes) -> list[Frame]:
    """Give our bytes to websockets and insist it found nothing wrong with them."""
    proto.receive_data(data)
    assert proto.parser_exc is None, proto.parser_exc
    return proto.events_received()


def masked(first: int, payload: bytes, key: bytes = KEY4, length: bytes | None = None) -> bytes:
    """A client frame built by hand, byte by byte, independent of ws._mask."""
    if length is None:
        n = len(payload)
        length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
    return bytes([first]) + length + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_code_sent(conn: Connection) -> int:
    """The code of the close frame our SERVER queued, as websockets' client reads it."""
    frames = feed_them(their_client(), conn.data_to_send())
    assert [f.opcode for f in frames] == [Opcode.CLOSE]
    return WSClose.parse(frames[0].data).code


def server_fails_on(raw: bytes, max_message_size: int | None = None) -> Close:
    """Feed raw client bytes to our server; it must fail with one Close event and stop."""
    conn = Connection(Role.SERVER, max_message_size)
    conn.receive_data(raw)
    events = conn.events()
    assert len(events) == 1 and isinstance(events[0], Close), events
    assert conn.closed and conn.close_sent
    assert close_code_sent(conn) == events[0].code
    conn.receive_data(masked(0x81, b"ignored"))  # nothing is read after a failure
    conn.send_text("ignored")
    assert conn.events() == [] and conn.data_to_send() == b""
    return events[0]


SIZES = [0, 1, 125, 126, 127, 65535, 65536, 100_000]
HEADER = {0: 2, 1: 2, 125: 2, 126: 4, 127: 4, 65535: 4, 65536: 10, 100_000: 10}


# --- handshake ----------------------------------------------------------------------
def test_accept_key_matches_rfc_example():
    assert ws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_new_key_is_16_random_bytes():
    keys = {ws.new_key() for _ in range(20)}
    assert len(keys) == 20
    assert all(len(base64.b64decode(k, validate=True)) == 16 for k in keys)


@pytest.mark.parametrize("subprotocol", [None, "narrator.v1"])
def test_our_request_accepted_by_their_server_and_their_response_by_us(subprotocol):
    key = ws.new_key()
    request = ws.client_handshake_request("cache.local:8790", "/ws?token=x", key, subprotocol,
                                          [("Origin", "http://localhost:9000")])
    server = ServerProtocol(subprotocols=[subprotocol] if subprotocol else None)
    server.receive_data(request)
    [req] = server.events_received()
    assert isinstance(req, Request)
    assert req.path == "/ws?token=x" and req.headers["Host"] == "cache.local:8790"
    assert req.headers["Origin"] == "http://localhost:9000"
    response = server.accept(req)
    assert response.status_code == 101, response.body
    server.send_response(response)
    server.send_text(b"hello")  # a frame sent right behind the head
    rest = ws.parse_server_response(drain(server), key, subprotocol)
    conn = Connection(Role.CLIENT)
    conn.receive_data(rest)
    assert conn.events() == [Message(b"hello", True)]


@pytest.mark.parametrize("subprotocol", [None, "narrator.v1"])
def test_our_response_accepted_by_their_client(subprotocol):
    client = ClientProtocol(parse_uri("ws://localhost/"), subprotocols=[subprotocol] if subprotocol else None)
    request = client.connect()
    client.send_request(request)
    client.receive_data(ws.server_handshake_response(request.headers["Sec-WebSocket-Key"], subprotocol))
    [response] = client.events_received()
    assert isinstance(response, Response) and client.handshake_exc is None, client.handshake_exc
    assert client.state is State.OPEN
    assert client.subprotocol == subprotocol


def _response(key: str = "dGhlIHNhbXBsZSBub25jZQ==", status: str = "101 Switching Protocols",
              extra: str = "", accept: str | None = None) -> bytes:
    accept = ws.accept_key(key) if accept is None else accept
    return (f"HTTP/1.1 {status}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n").encode()


def test_parse_server_response_waits_for_the_whole_head():
    head = _response()
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    for cut in range(len(head)):
        assert ws.parse_server_response(head[:cut], key, None) is None
    assert ws.parse_server_response(head, key, None) == b""


def test_parse_server_response_returns_trailing_frames():
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    assert ws.parse_server_response(_response() + b"\x81\x02hi\x89", key, None) == b"\x81\x02hi\x89"


@pytest.mark.parametrize("response, message", [
    (_response(accept="s3pPLMBiTxaQ9kYGzzhZRbK+xOX="), "wrong Sec-WebSocket-Accept"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
     "missing Sec-WebSocket-Accept"),
    (_response(status="401 Unauthorized"), "server answered 401 Unauthorized"),
    (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n", "Upgrade"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n"
     b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n", "Connection"),
    (_response(extra="Sec-WebSocket-Protocol: other\r\n"), "subprotocol"),
    (_response(extra="Sec-WebSocket-Extensions: permessage-deflate\r\n"), "extension"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP response"),
])
def test_parse_server_response_refuses(response, message):
    with pytest.raises(HandshakeError, match=message) as info:
        ws.parse_server_response(response, "dGhlIHNhbXBsZSBub25jZQ==", None)
    assert "\n" not in str(info.value)


def test_parse_server_response_requires_the_subprotocol_we_asked_for():
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    with pytest.raises(HandshakeError, match="narrator.v1"):
        ws.parse_server_response(_response(), key, "narrator.v1")
    ok = _response(extra="Sec-WebSocket-Protocol: narrator.v1\r\n")
    assert ws.parse_server_response(ok, key, "narrator.v1") == b""


def test_parse_server_response_refuses_a_head_over_16_kib():
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    endless = b"HTTP/1.1 101 Switching Protocols\r\n" + b"X-Pad: " + b"a" * 17000
    with pytest.raises(HandshakeError, match="16 KiB"):
        ws.parse_server_response(endless, key, None)
    with pytest.raises(HandshakeError, match="16 KiB"):
        ws.parse_server_response(_response(extra="X-Pad: " + "a" * 17000 + "\r\n"), key, None)


def test_client_request_refuses_header_injection():
    with pytest.raises(ValueError):
        ws.client_handshake_request("h", "/", ws.new_key(), None, [("X-Token", "a\r\nEvil: 1")])


# --- their client -> our server ---------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("text", [True, False])
def test_server_reads_their_frames(size, text):
    client = their_client()
    payload = (b"abcdefghij" * (size // 10 + 1))[:size] if text else random.Random(size).randbytes(size)
    (client.send_text if text else client.send_binary)(payload)
    conn = Connection(Role.SERVER)
    conn.receive_data(drain(client))
    [event] = conn.events()
    assert isinstance(event, Message) and event.text is text
    assert bytes(event.data) == payload
    assert conn.data_to_send() == b"" and not conn.closed


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("text", [True, False])
def test_server_frames_read_by_their_client(size, text):
    payload = random.Random(size).randbytes(size) if not text else ("é" * size).encode()[:size]
    if text and size % 2:
        payload = payload[:-1] + b"x"  # keep the cut-off text valid UTF-8
    conn = Connection(Role.SERVER)
    (conn.send_text if text else conn.send_binary)(payload)
    out = conn.data_to_send()
    assert len(out) == HEADER[size] + len(payload)  # minimal length encoding, no mask
    assert out[0] == (0x81 if text else 0x82)
    [frame] = feed_them(their_client(), out)
    assert frame.opcode is (Opcode.TEXT if text else Opcode.BINARY) and frame.fin
    assert frame.data == payload


def test_server_send_text_accepts_str_and_encoded_bytes():
    conn = Connection(Role.SERVER)
    conn.send_text("naïve €")
    conn.send_text("naïve €".encode())
    frames = feed_them(their_client(), conn.data_to_send())
    assert [f.data.decode() for f in frames] == ["naïve €", "naïve €"]


# --- our client <-> their server ---------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_client_frames_are_masked_and_read_by_their_server(size):
    payload = random.Random(size).randbytes(size)
    conn = Connection(Role.CLIENT)
    conn.send_binary(payload)
    out = conn.data_to_send()
    assert out[1] & 0x80 and len(out) == HEADER[size] + 4 + size
    if size >= 16:
        assert payload not in out  # masked for real, not with a zero key
    [frame] = feed_them(their_server(), out)
    assert frame.opcode is Opcode.BINARY and frame.data == payload


def test_client_uses_a_fresh_mask_key_per_frame():
    conn = Connection(Role.CLIENT)
    for _ in range(8):
        conn.send_binary(b"same payload")
    out = conn.data_to_send()
    frames = [out[i:i + 18] for i in range(0, len(out), 18)]
    assert len({f[2:6] for f in frames}) > 1
    assert [f.data for f in feed_them(their_server(), out)] == [b"same payload"] * 8


@pytest.mark.parametrize("size", SIZES)
def test_client_reads_their_server_frames(size):
    server = their_server()
    payload = random.Random(size).randbytes(size)
    server.send_binary(payload)
    conn = Connection(Role.CLIENT)
    conn.receive_data(drain(server))
    assert conn.events() == [Message(payload, False)]


# --- large and chunked --------------------------------------------------------------
def _chunks(data: bytes, seed: int) -> list[bytes]:
    rng, pos, out = random.Random(seed), 0, []
    while pos < len(data):
        n = rng.choice([1, 2, 3, rng.randint(1, 100), rng.randint(1, 100_000)])
        out.append(data[pos:pos + n])
        pos += n
    return out


BIG_TEXT = ("narration € 🎙 ü " * 150_000).encode()  # ~3 MB with 2-, 3- and 4-byte code points


@pytest.mark.parametrize("seed", [1, 2])
def test_server_reassembles_a_3mb_text_message_from_random_chunks(seed):
    client = their_client()
    client.send_text(BIG_TEXT)
    wire = drain(client)
    conn = Connection(Role.SERVER, max_message_size=len(BIG_TEXT))
    chunks = _chunks(wire, seed)
    assert len(chunks) > 50
    for chunk in chunks[:-1]:
        conn.receive_data(chunk)
        assert conn.events() == []
    conn.receive_data(chunks[-1])
    [event] = conn.events()
    assert event.text and event.data == BIG_TEXT


def test_client_reassembles_a_3mb_fragmented_binary_message_from_random_chunks():
    server = their_server()
    blob = random.Random(7).randbytes(3_000_000)
    server.send_binary(blob[:1_000_000], fin=False)
    server.send_ping(b"keepalive")
    server.send_continuation(blob[1_000_000:2_500_000], fin=False)
    server.send_continuation(blob[2_500_000:], fin=True)
    conn = Connection(Role.CLIENT)
    events = []
    for chunk in _chunks(drain(server), 3):
        conn.receive_data(chunk)
        events += conn.events()
    assert events == [Ping(b"keepalive"), Message(blob, False)]
    [pong] = feed_them(their_server(), conn.data_to_send())
    assert pong.opcode is Opcode.PONG and pong.data == b"keepalive"


def test_large_message_in_small_chunks():
    """16 MB in 4 KiB chunks arrives whole (its speed is the benchmark's business, not a test's)."""
    conn = Connection(Role.CLIENT)
    blob = random.Random(5).randbytes(16 << 20)
    conn.send_binary(blob)
    wire = conn.data_to_send()
    server = Connection(Role.SERVER)
    for pos in range(0, len(wire), 4096):
        server.receive_data(wire[pos:pos + 4096])
    assert server.events() == [Message(blob, False)]


def test_masking_of_a_large_message():
    blob = bytes(16 << 20)
    conn = Connection(Role.CLIENT)
    conn.send_binary(blob)
    out = conn.data_to_send()
    key = out[10:14]
    assert out[14:14 + 4096] == key * 1024 and out[-4:] == key  # zeros masked = the key repeated


# --- fragmentation and UTF-8 --------------------------------------------------------------
def test_fragmented_message_with_ping_between_fragments():
    client = their_client()
    client.send_text(b"he", fin=False)
    client.send_ping(b"p1")
    client.send_continuation(b"llo", fin=False)
    client.send_pong(b"unsolicited")
    client.send_continuation(b"!", fin=True)
    client.send_binary(b"\x00\x01")
    conn = Connection(Role.SERVER)
    conn.receive_data(drain(client))
    assert conn.events() == [Ping(b"p1"), Pong(b"unsolicited"), Message(b"hello!", True), Message(b"\x00\x01", False)]
    [pong] = feed_them(their_client(), conn.data_to_send())
    assert pong.opcode is Opcode.PONG and pong.data == b"p1"


def test_code_points_split_across_fragments_and_chunks():
    text = "€🎙é".encode()  # e2 82 ac | f0 9f 8e 99 | c3 a9
    client = their_client()
    client.send_text(text[:1], fin=False)
    client.send_continuation(text[1:5], fin=False)
    client.send_continuation(text[5:8], fin=False)
    client.send_continuation(text[8:], fin=True)
    conn = Connection(Role.SERVER)
    for byte in drain(client):  # and every chunk boundary, too
        conn.receive_data(bytes([byte]))
    assert conn.events() == [Message(text, True)]


def test_text_over_1_mib_in_one_read_is_validated_across_piece_boundaries():
    text = ("€" * 400_000).encode()  # 1.2 MB; 2**20 is not a multiple of 3, so a code point straddles it
    client = their_client()
    client.send_text(text)
    conn = Connection(Role.SERVER)
    conn.receive_data(drain(client))
    assert conn.events() == [Message(text, True)]
    bad = bytearray(text)
    bad[1_100_000] = 0xFF  # past the first 1 MiB piece
    client.send_text(bytes(bad))
    assert server_fails_on(drain(client)).code == 1007


def test_message_ending_inside_a_code_point_is_1007():
    client = their_client()
    client.send_text(b"ok \xe2\x82", fin=False)
    client.send_continuation(b"", fin=True)
    event = server_fails_on(drain(client))
    assert event.code == 1007


def test_ascii_chunk_after_a_partial_code_point_is_still_checked():
    client = their_client()
    for part, fin in [(b"\xe2\x82", False), (b"A", False), (b"\xac", True)]:  # e2 82 41 ac: invalid
        (client.send_text if part == b"\xe2\x82" else client.send_continuation)(part, fin=fin)
    assert server_fails_on(drain(client)).code == 1007


def test_invalid_utf8_fails_before_the_rest_of_the_message_arrives():
    frame = masked(0x81, b"abc\xff" + b"x" * 1000)
    conn = Connection(Role.SERVER)
    conn.receive_data(frame[:6 + 8 + 4])  # header + "abc\xff"
    [event] = conn.events()
    assert event.code == 1007 and conn.closed


def test_invalid_utf8_in_binary_is_fine():
    conn = Connection(Role.SERVER)
    conn.receive_data(masked(0x82, b"\xff\xfe"))
    assert conn.events() == [Message(b"\xff\xfe", False)]


# --- ping, pong, close --------------------------------------------------------------
def test_our_ping_answered_by_their_server():
    conn = Connection(Role.CLIENT)
    conn.send_ping(b"are you there")
    server = their_server()
    [ping] = feed_them(server, conn.data_to_send())
    assert ping.opcode is Opcode.PING
    conn.receive_data(drain(server))
    assert conn.events() == [Pong(b"are you there")]


def test_they_close_we_echo():
    client = their_client()
    client.send_close(1000, "bye")
    conn = Connection(Role.SERVER)
    conn.receive_data(drain(client))
    assert conn.events() == [Close(1000, "bye")]
    assert conn.closed and conn.close_sent
    feed_them(client, conn.data_to_send())
    assert client.close_rcvd is not None and client.close_rcvd.code == 1000
    assert client.state is State.CLOSING  # a client waits for TCP close; the handshake itself is done
    assert client.close_rcvd_then_sent is False
    conn.send_text("too late")
    assert conn.data_to_send() == b""


def test_close_without_status_is_echoed_empty():
    client = their_client()
    client.send_close()
    conn = Connection(Role.SERVER)
    conn.receive_data(drain(client))
    assert conn.events() == [Close(None, "")]
    assert conn.data_to_send() == b"\x88\x00"


def test_we_close_they_echo():
    conn = Connection(Role.CLIENT)
    conn.send_close(1001, "going away")
    assert conn.close_sent and not conn.closed
    out = conn.data_to_send()
    conn.send_text("after close")
    conn.send_binary(b"after close")
    conn.send_ping()
    conn.send_close(1000)
    assert conn.data_to_send() == b""  # nothing may follow our close
    server = their_server()
    [frame] = feed_them(server, out)
    assert WSClose.parse(frame.data) == WSClose(1001, "going away")
    conn.receive_data(drain(server))
    assert conn.events() == [Close(1001, "going away")]
    assert conn.closed and conn.data_to_send() == b""  # no second close


def test_messages_before_their_close_echo_are_still_delivered():
    conn = Connection(Role.CLIENT)
    conn.send_close()
    server = their_server()
    server.send_text(b"in flight")
    feed_them(server, conn.data_to_send())
    conn.receive_data(drain(server))
    assert conn.events() == [Message(b"in flight", True), Close(1000, "")]


def test_sending_what_cannot_be_sent_is_a_programming_error():
    conn = Connection(Role.SERVER)
    with pytest.raises(ValueError):
        conn.send_ping(b"x" * 126)
    with pytest.raises(ValueError):
        conn.send_close(1005)
    assert conn.data_to_send() == b"" and not conn.close_sent


def test_close_reason_is_cut_to_fit_a_control_frame():
    conn = Connection(Role.SERVER)
    conn.send_close(4000, "é" * 200)
    out = conn.data_to_send()
    assert len(out) == 2 + 125 - 1  # 2 code bytes + 61 "é" (122 bytes): the 62nd would not fit whole
    [frame] = feed_them(their_client(), out)
    parsed = WSClose.parse(frame.data)
    assert parsed.code == 4000 and parsed.reason == "é" * 61


def test_data_after_a_close_frame_is_ignored():
    conn = Connection(Role.SERVER)
    conn.receive_data(masked(0x88, b"\x03\xe8") + masked(0x81, b"late"))
    assert conn.events() == [Close(1000, "")]


# --- failures -------------------------------------------------------------------------
def test_unmasked_client_frame_is_1002():
    event = server_fails_on(b"\x81\x02hi")
    assert event.code == 1002


def test_masked_server_frame_is_1002():
    conn = Connection(Role.CLIENT)
    conn.receive_data(masked(0x81, b"hi"))
    [event] = conn.events()
    assert event.code == 1002 and conn.closed
    [frame] = feed_them(their_server(), conn.data_to_send())
    assert WSClose.parse(frame.data).code == 1002


def test_invalid_utf8_text_is_1007():
    assert server_fails_on(masked(0x81, b"caf\xc3\x28")).code == 1007


@pytest.mark.parametrize("bad", [b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\x80", b"\xf8\x88\x80\x80\x80"],
                         ids=["surrogate", "overlong", "over-U+10FFFF", "lone-continuation", "5-byte"])
def test_utf8_the_rfc_forbids_is_1007(bad):
    assert server_fails_on(masked(0x81, b"ok " + bad + b" ok")).code == 1007


def test_invalid_utf8_close_reason_is_1007():
    assert server_fails_on(masked(0x88, b"\x03\xe8\xff")).code == 1007


def test_declared_length_over_max_is_1009_from_the_header_alone():
    header = bytes([0x82, 0x80 | 126]) + struct.pack("!H", 1001) + KEY4
    assert server_fails_on(header, max_message_size=1000).code == 1009
    conn = Connection(Role.SERVER, max_message_size=1000)
    conn.receive_data(masked(0x82, b"x" * 1000))
    assert conn.events() == [Message(b"x" * 1000, False)]


def test_huge_declared_length_is_1009_without_waiting():
    header = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 40)
    assert server_fails_on(header, max_message_size=60 << 20).code == 1009


def test_fragments_adding_up_over_max_is_1009():
    raw = masked(0x01, b"a" * 600) + bytes([0x80, 0x80 | 126]) + struct.pack("!H", 401) + KEY4
    assert server_fails_on(raw, max_message_size=1000).code == 1009


def test_length_with_top_bit_set_is_1002():
    assert server_fails_on(bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 63) + KEY4).code == 1002


@pytest.mark.parametrize("raw, why", [
    (masked(0x09, b"ping"), "fragmented ping"),
    (masked(0x08, b"\x03\xe8"), "fragmented close"),
    (masked(0x89, b"p" * 126), "control frame over 125 bytes"),
    *[(masked(0x80 | op, b"x"), f"reserved opcode {op:#x}") for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)],
    (masked(0xC1, b"x"), "RSV1"),
    (masked(0xA1, b"x"), "RSV2"),
    (masked(0x91, b"x"), "RSV3"),
    (masked(0x80, b"x"), "continuation without start"),
    (masked(0x01, b"a") + masked(0x81, b"b"), "new text message inside a fragmented one"),
    (masked(0x02, b"a") + masked(0x82, b"b"), "new binary message inside a fragmented one"),
    (masked(0x88, b"\x03"), "close payload of one byte"),
])
def test_protocol_violations_are_1002(raw, why):
    assert server_fails_on(raw).code == 1002, why


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1012, 1015, 2999, 5000, 65535])
def test_invalid_close_codes_are_1002(code):
    assert server_fails_on(masked(0x88, struct.pack("!H", code))).code == 1002


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 3000, 4999])
def test_valid_close_codes_are_accepted_and_echoed(code):
    conn = Connection(Role.SERVER)
    conn.receive_data(masked(0x88, struct.pack("!H", code) + b"why"))
    assert conn.events() == [Close(code, "why")]
    assert close_code_sent(conn) == code


def test_truncated_frame_then_eof_is_1006():
    conn = Connection(Role.SERVER)
    conn.receive_data(masked(0x82, b"x" * 50)[:30])
    assert conn.events() == []
    conn.receive_data(b"")
    assert conn.events() == [Close(1006, "")]
    assert conn.closed and conn.data_to_send() == b""
    conn.receive_data(b"")
    conn.receive_data(masked(0x81, b"late"))
    assert conn.events() == []


def test_split_header_is_buffered_not_misread():
    frame = masked(0x82, b"y" * 300)  # 16-bit length: the header itself is 8 bytes
    conn = Connection(Role.SERVER)
    for start, end in [(0, 1), (1, 3), (3, 5), (5, 8)]:
        conn.receive_data(frame[start:end])
        assert conn.events() == []
    conn.receive_data(frame[8:])
    assert conn.events() == [Message(b"y" * 300, False)]


def test_partial_is_the_growing_buffer_of_the_text_message_across_fragments():
    conn = Connection(Role.SERVER)
    assert conn.partial is None
    conn.receive_data(masked(0x01, b"hello "))  # TEXT, not FIN
    buf = conn.partial
    assert buf == b"hello "
    conn.receive_data(masked(0x00, b"big ")[:8])  # part of a continuation frame
    assert conn.partial is buf and buf == b"hello bi"
    conn.receive_data(masked(0x00, b"big ")[8:] + masked(0x80, b"world"))
    [message] = conn.events()
    assert message.data is buf and message.data == b"hello big world"
    assert conn.partial is None
    conn.receive_data(masked(0x02, b"\x00\x01"))  # binary: not a text message
    assert conn.partial is None


# --- the one-step path for small whole text frames agrees with the general one -----------------
def _unmasked(payload: bytes, first: int = 0x81) -> bytes:
    return bytes((first, len(payload))) + payload


@pytest.mark.parametrize("role, raw, limit", [
    (Role.SERVER, masked(0x81, b'{"type":"custom","event":"narrator:check-audio"}'), None),
    (Role.SERVER, masked(0x81, b""), None),
    (Role.SERVER, masked(0x81, "h\u00e9llo \u2603".encode()), None),
    (Role.SERVER, masked(0x81, b"caf\xc3"), None),  # cut in the middle of a character: 1007
    (Role.SERVER, masked(0x81, b"\xff"), None),
    (Role.SERVER, _unmasked(b"not masked"), None),  # 1002
    (Role.SERVER, masked(0x81, b"x" * 125), None),
    (Role.SERVER, masked(0x81, b"x" * 20), 10),  # over the message limit: 1009
    (Role.SERVER, masked(0x81, b"abc") + masked(0x81, b"def")[:5], None),  # a whole frame, then part of one
    (Role.SERVER, masked(0x01, b"ab") + masked(0x81, b"cd"), None),  # a text frame inside a fragmented message
    (Role.SERVER, masked(0x01, b"ab") + masked(0x80, b"cd") + masked(0x81, b"ef"), None),
    (Role.CLIENT, _unmasked(b'{"type":"custom","event":"narrator:available","data":{}}'), None),
    (Role.CLIENT, masked(0x81, b"masked by a server"), None),  # 1002
    (Role.CLIENT, _unmasked("\u00fcber".encode()) + _unmasked(b"\xed\xa0\x80"), None),  # a surrogate: 1007
])
@pytest.mark.parametrize("piece", [1, 3, 1000])
def test_small_text_frames_read_in_one_step_as_the_general_path_reads_them(monkeypatch, role, raw, limit, piece):
    def run() -> tuple[list, bytes]:
        conn = Connection(role, max_message_size=limit)
        events = []
        for start in range(0, len(raw), piece):
            conn.receive_data(raw[start:start + piece])
            events += conn.events()
        sent = conn.data_to_send()
        if role is Role.CLIENT:  # masked with random keys: compare what a server reads from it
            peer = Connection(Role.SERVER)
            peer.receive_data(sent)
            sent = [(type(e).__name__, getattr(e, "code", None), getattr(e, "reason", None)) for e in peer.events()]
        return [(type(e).__name__, bytes(e.data) if isinstance(e, Message) else getattr(e, "code", None))
                for e in events], sent

    fast = run()
    monkeypatch.setattr(Connection, "_small_text", lambda self, data, pos, end: 0)
    assert fast == run()
