import http.client
from http import HTTPStatus

import pytest

from narrator_cli import http as nhttp
from narrator_cli.http import UNSATISFIABLE, HTTPError, RequestParser, etag_matches, parse_range, response_head, \
    safe_file_name

PREFIX = "/__narrator-audio/"


def drain(parser: RequestParser) -> list[nhttp.Request]:
    out = []
    while (request := parser.next_request()) is not None:
        out.append(request)
    return out


def parse(data: bytes, **limits) -> list[nhttp.Request]:
    parser = RequestParser(**limits)
    parser.receive_data(data)
    return drain(parser)


def one(data: bytes, **limits) -> nhttp.Request:
    requests = parse(data, **limits)
    assert len(requests) == 1
    return requests[0]


def status_of(data: bytes, **limits) -> int:
    with pytest.raises(HTTPError) as info:
        parse(data, **limits)
    return info.value.status


def fields(r: nhttp.Request) -> tuple:
    return r.method, r.target, r.path, r.query, r.headers, r.version


def feed_split(data: bytes, cut: int, **limits) -> tuple[list, bytes]:
    parser = RequestParser(**limits)
    got = []
    for piece in (data[:cut], data[cut:]):
        parser.receive_data(piece)
        got += drain(parser)
    return [fields(r) for r in got], parser.trailing_data()


# --- request line and fields ---------------------------------------------------------


def test_fields():
    r = one(b"GET /a%20b/%2e%2e?x=1&x=2&t=%41+b&e= HTTP/1.1\r\nHost: localhost:8790\r\n"
            b"X-Thing:   spaced value \t\r\nEmpty:\r\n\r\n")
    assert r.method == "GET"
    assert r.target == "/a%20b/%2e%2e?x=1&x=2&t=%41+b&e="
    assert r.path == "/a b/.."
    assert r.query == {"x": "1", "t": "A b", "e": ""}
    assert r.headers == (("host", "localhost:8790"), ("x-thing", "spaced value"), ("empty", ""))
    assert r.version == "HTTP/1.1"


def test_target_is_latin1_raw_and_method_case_kept():
    r = one(b"get /%C3%A9 HTTP/1.1\r\nHost: h\r\nX: caf\xe9\r\n\r\n")
    assert r.method == "get"
    assert r.target == "/%C3%A9" and r.path == "/\u00e9"
    assert r.header("x") == "caf\u00e9"  # obs-text kept, latin-1


def test_header_lookup_and_joining():
    r = one(b"GET / HTTP/1.1\r\nHost: h\r\nAccept: a\r\nX: 1\r\naccept: b\r\nACCEPT: c\r\n\r\n")
    assert r.header("Accept") == "a, b, c"
    assert r.header("ACCEPT") == r.header("accept")
    assert r.header("x") == "1"
    assert r.header("missing") is None
    assert r.header("missing", "") == ""


def test_request_is_frozen():
    r = one(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    with pytest.raises(AttributeError):
        r.method = "POST"


@pytest.mark.parametrize("version, connection, expected", [
    ("1.1", None, True),
    ("1.1", "keep-alive", True),
    ("1.1", "close", False),
    ("1.1", "Close", False),
    ("1.1", "Upgrade, close", False),
    ("1.1", "upgrade", True),
    ("1.0", None, False),
    ("1.0", "keep-alive", True),
    ("1.0", "Keep-Alive", True),
    ("1.0", "keep-alive, close", False),
    ("1.0", "close", False),
])
def test_keep_alive(version, connection, expected):
    head = f"GET / HTTP/{version}\r\nHost: h\r\n"
    if connection is not None:
        head += f"Connection: {connection}\r\n"
    assert one((head + "\r\n").encode()).keep_alive is expected


def test_http10_without_host_is_fine():
    assert one(b"GET / HTTP/1.0\r\n\r\n").version == "HTTP/1.0"


def test_leading_empty_lines_skipped():
    assert one(b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n").target == "/"
    parser = RequestParser()
    parser.receive_data(b"\r\n\r\n")
    assert parser.next_request() is None
    assert not parser.has_partial()


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9", b"HTTP/3.0", b"HTTP/9.9"])
def test_unsupported_version_505(version):
    assert status_of(b"GET / " + version + b"\r\nHost: h\r\n\r\n") == 505


@pytest.mark.parametrize("line", [
    b"GET  / HTTP/1.1",  # two spaces
    b"GET / HTTP/1.1 ",
    b" GET / HTTP/1.1",
    b"GET\t/ HTTP/1.1",
    b"GET /",
    b"GET / ",
    b"/ HTTP/1.1",
    b"GET / HTTP/1.1 extra",
    b"G(T / HTTP/1.1",
    b"GE\x00T / HTTP/1.1",
    b"GET /a\x01b HTTP/1.1",
    b"GET /caf\xe9 HTTP/1.1",
    b"GET / http/1.1",
    b"GET / HTTP/1.1x",
    b"GET / HTTP/11",
    b"GET / HTTP/2",
    b"GET / HTTP/1.1\r",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
])
def test_bad_request_line_400(line):
    assert status_of(line + b"\r\nHost: h\r\n\r\n") == 400


@pytest.mark.parametrize("header", [
    b"Host : h",  # whitespace before the colon
    b"X-A\t: 1",
    b"X-A",  # no colon
    b": value",  # empty name
    b"X(A): 1",
    b"X A: 1",
    b"X-A: a\x00b",
    b"X-A: a\x01b",
    b"X-A: a\x1fb",
    b"X-A: a\x7fb",
    b"X-A: a\rb",
    b" folded",  # obs-fold continuation
    b"\tfolded",
])
def test_bad_header_400(header):
    assert status_of(b"GET / HTTP/1.1\r\nHost: h\r\nX-First: 1\r\n" + header + b"\r\n\r\n") == 400


def test_folded_first_header_400():
    assert status_of(b"GET / HTTP/1.1\r\n Host: h\r\n\r\n") == 400
    with pytest.raises(HTTPError, match="folding"):
        parse(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n")


def test_htab_in_value_allowed():
    assert one(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\tb\r\n\r\n").header("x") == "a\tb"


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\n\n",
    b"GET / HTTP/1.1\nHost: h\n\n",
    b"\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
])
def test_bare_lf_refused(data):
    assert status_of(data) == 400


def test_bare_lf_refused_without_waiting():
    parser = RequestParser()
    parser.receive_data(b"GET / HTTP/1.1\nHost: h\n")
    with pytest.raises(HTTPError) as info:
        parser.next_request()
    assert info.value.status == 400


def test_host_rules():
    assert status_of(b"GET / HTTP/1.1\r\n\r\n") == 400
    assert status_of(b"GET / HTTP/1.1\r\nX: 1\r\n\r\n") == 400
    assert status_of(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n") == 400
    assert status_of(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n") == 400
    assert status_of(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n") == 400


def test_error_message_is_short_and_one_line():
    with pytest.raises(HTTPError) as info:
        parse(b"GET / HTTP/1.1\r\nHost: h\r\nX: \x00\r\n\r\n")
    text = str(info.value)
    assert text and "\n" not in text and "\r" not in text and len(text) < 80
    assert "\x00" not in text


def test_errors_are_sticky():
    parser = RequestParser()
    parser.receive_data(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n")
    for _ in range(2):
        with pytest.raises(HTTPError) as info:
            parser.next_request()
        assert info.value.status == 505
    parser.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    with pytest.raises(HTTPError):
        parser.next_request()


# --- limits ----------------------------------------------------------------------------


def test_414_decided_before_line_end():
    parser = RequestParser(max_target=64)
    parser.receive_data(b"GET /" + b"a" * 40)
    assert parser.next_request() is None
    parser.receive_data(b"a" * 40)  # still no CRLF, no terminator
    with pytest.raises(HTTPError) as info:
        parser.next_request()
    assert info.value.status == 414


def test_414_when_line_complete():
    line = b"GET /" + b"a" * 100 + b" HTTP/1.1"
    assert status_of(line + b"\r\nHost: h\r\n\r\n", max_target=64) == 414


def test_request_line_at_limit_accepted_even_with_split_crlf():
    line = b"GET /" + b"a" * 50 + b" HTTP/1.1"
    data = line + b"\r\nHost: h\r\n\r\n"
    for cut in range(len(data) + 1):
        assert len(feed_split(data, cut, max_target=len(line))[0]) == 1, cut
    assert status_of(data, max_target=len(line) - 1) == 414


def test_431_decided_before_terminator():
    parser = RequestParser(max_head=1024)
    parser.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n")
    assert parser.next_request() is None
    parser.receive_data(b"X-Pad: " + b"p" * 900 + b"\r\n")
    assert parser.next_request() is None
    parser.receive_data(b"X-More: " + b"p" * 200)  # past the limit, mid-line, no blank line yet
    with pytest.raises(HTTPError) as info:
        parser.next_request()
    assert info.value.status == 431


def test_431_complete_lines_past_limit():
    parser = RequestParser(max_head=1024)
    parser.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X-Pad: " + b"p" * 1100 + b"\r\n")
    with pytest.raises(HTTPError) as info:
        parser.next_request()
    assert info.value.status == 431


def test_head_exactly_at_limit_accepted():
    data = b"GET / HTTP/1.1\r\nHost: h\r\nX: "
    data += b"p" * (300 - len(data) - 4) + b"\r\n\r\n"
    assert len(data) == 300
    for cut in range(len(data) + 1):
        assert len(feed_split(data, cut, max_head=300)[0]) == 1, cut
    assert status_of(data, max_head=299) == 431


def test_header_count_limit():
    ok = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(99)) + b"\r\n"
    assert len(one(ok).headers) == 100
    bad = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(100)) + b"\r\n"
    assert status_of(bad) == 431


def test_header_count_decided_before_terminator():
    parser = RequestParser()
    parser.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: 1\r\n" * 101)
    with pytest.raises(HTTPError) as info:
        parser.next_request()
    assert info.value.status == 431


# --- bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize("te", [b"chunked", b"identity", b"gzip, chunked"])
def test_transfer_encoding_501(te):
    assert status_of(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: " + te + b"\r\n\r\n") == 501
    assert status_of(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: " + te
                     + b"\r\n\r\nabc") == 501


def test_content_length_body_skipped_then_next_request():
    requests = parse(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 22\r\n\r\n"
                     b"GET /fake HTTP/1.1\r\n\r\n"
                     b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    assert [r.target for r in requests] == ["/a", "/b"]


def test_body_waits_for_arrival():
    parser = RequestParser()
    parser.receive_data(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n01234")
    assert parser.next_request().target == "/a"
    assert parser.next_request() is None
    assert parser.has_partial()  # the body is still owed: header timeout applies
    parser.receive_data(b"567")
    assert parser.next_request() is None
    parser.receive_data(b"89GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    assert parser.next_request().target == "/b"
    assert parser.next_request() is None
    assert not parser.has_partial()


def test_content_length_limit():
    head = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n"
    assert one(head % 100, max_body=100).method == "POST"
    assert status_of(head % 101, max_body=100) == 413
    assert status_of(head % 65537) == 413
    assert status_of(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n") == 413


@pytest.mark.parametrize("value", [b"-1", b"+5", b"0x10", b"5 5", b"", b"1.0", b"5,", b"5, 6", b"\xb2", b"1e3"])
def test_bad_content_length_400(value):
    assert status_of(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: " + value + b"\r\n\r\n") == 400


def test_conflicting_duplicate_content_length_400():
    assert status_of(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd") == 400


def test_identical_content_lengths_accepted():
    data = (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 003\r\n\r\nabc"
            b"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc"
            b"GET /3 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert [r.target for r in parse(data)] == ["/", "/2", "/3"]


# --- pipelining and incremental feeding -----------------------------------------------------

PIPELINE = (b"\r\nGET /one?a=1 HTTP/1.1\r\nHost: h\r\nX: 1\r\nX: 2\r\n\r\n"
            b"POST /two HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
            b"HEAD /three HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
            b"GET /partial HTTP/1.1\r\nHo")


def test_pipelined_requests_in_order():
    parser = RequestParser()
    parser.receive_data(PIPELINE)
    requests = drain(parser)
    assert [(r.method, r.path) for r in requests] == [("GET", "/one"), ("POST", "/two"), ("HEAD", "/three")]
    assert requests[0].header("x") == "1, 2"
    assert parser.has_partial()
    assert parser.trailing_data() == b"GET /partial HTTP/1.1\r\nHo"


def test_pipeline_split_at_every_byte():
    expected = feed_split(PIPELINE, len(PIPELINE))
    assert len(expected[0]) == 3
    for cut in range(len(PIPELINE) + 1):
        assert feed_split(PIPELINE, cut) == expected, cut


def test_pipeline_byte_by_byte():
    parser = RequestParser()
    got = []
    for i in range(len(PIPELINE)):
        parser.receive_data(PIPELINE[i:i + 1])
        got += drain(parser)
    assert [fields(r) for r in got] == feed_split(PIPELINE, 0)[0]


@pytest.mark.parametrize("data, limits, status", [
    (b"GET /" + b"a" * 80 + b" HTTP/1.1\r\nHost: h\r\n\r\n", {"max_target": 64}, 414),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 300 + b"\r\n\r\n", {"max_head": 256}, 431),
    (b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/3.0\r\nHost: h\r\n\r\n", {}, 505),
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 70000\r\n\r\n", {}, 413),
    (b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", {}, 501),
    (b"GET / HTTP/1.1\r\nHost: h\nX: 1\r\n\r\n", {}, 400),
])
def test_errors_same_at_every_split(data, limits, status):
    for cut in range(len(data) + 1):
        with pytest.raises(HTTPError) as info:
            feed_split(data, cut, **limits)
        assert info.value.status == status, cut


def test_has_partial():
    parser = RequestParser()
    assert not parser.has_partial()
    parser.receive_data(b"G")
    assert parser.next_request() is None
    assert parser.has_partial()
    parser.receive_data(b"ET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert parser.next_request() is not None
    assert not parser.has_partial()


def test_trailing_data_after_upgrade():
    frame = bytes([0x81, 0x85, 1, 2, 3, 4]) + bytes(b ^ m for b, m in zip(b"hello", b"\x01\x02\x03\x04\x01"))
    head = (b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    for cut in range(len(head + frame) + 1):
        parser = RequestParser()
        parser.receive_data((head + frame)[:cut])
        request = parser.next_request()
        parser.receive_data((head + frame)[cut:])
        if request is None:
            request = parser.next_request()
        assert request.header("upgrade") == "websocket"
        assert parser.trailing_data() == frame


def test_trailing_data_excludes_skipped_body():
    parser = RequestParser()
    parser.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcREST")
    assert parser.next_request() is not None
    assert parser.trailing_data() == b"REST"


def test_many_pipelined_requests_linear():
    """Copying the rest of the ~2.8 MB buffer after each request would move about 100 GB in all."""
    req = b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n"
    n = 75_000
    parser = RequestParser()
    parser.receive_data(req * n)
    assert sum(1 for _ in iter(parser.next_request, None)) == n


def test_trickled_head_linear():
    """One byte at a time up to the head limit; rescanning from the start would be quadratic in Python steps."""
    data = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: " + b"a" * 60_000 + b"\r\n\r\n"
    parser = RequestParser(max_head=len(data))
    for i in range(len(data)):
        parser.receive_data(data[i:i + 1])
        request = parser.next_request()
    assert request is not None
    assert parser._scan == parser._pos  # white-box: the search never restarts at the head's start


# --- cross-checks against other HTTP implementations ----------------------------------------


class FakeSocket:
    def __init__(self) -> None:
        self.sent = bytearray()

    def sendall(self, data) -> None:
        self.sent += data

    def close(self) -> None:
        pass


def http_client_bytes(method: str, url: str, headers: dict | None = None, body: bytes | None = None,
                      host: str = "127.0.0.1", port: int = 8790) -> bytes:
    conn = http.client.HTTPConnection(host, port)
    conn.sock = FakeSocket()
    conn.request(method, url, body=body, headers=headers or {})
    return bytes(conn.sock.sent)


def test_http_client_requests():
    data = (http_client_bytes("GET", "/__narrator-audio/5f5ac131.mp3?v=1", {"Range": "bytes=10-"})
            + http_client_bytes("POST", "/upload", {"Content-Type": "text/plain"}, b"x" * 1000)
            + http_client_bytes("HEAD", "/__narrator-health", {"Connection": "close"}, port=80)
            + http_client_bytes("OPTIONS", "*", {"Origin": "http://localhost:3000"}, host="::1"))
    whole = [fields(r) for r in parse(data)]
    assert [(m, t) for m, t, *_ in whole] == [
        ("GET", "/__narrator-audio/5f5ac131.mp3?v=1"), ("POST", "/upload"), ("HEAD", "/__narrator-health"),
        ("OPTIONS", "*")]
    for cut in range(0, len(data) + 1, 7):
        assert feed_split(data, cut)[0] == whole, cut
    get, post, head, options = parse(data)
    assert get.header("host") == "127.0.0.1:8790"
    assert safe_file_name(get.target, PREFIX) == "5f5ac131.mp3"
    assert parse_range(get.header("range"), 100) == (10, 99)
    assert post.header("content-length") == "1000"
    assert head.header("host") == "127.0.0.1" and not head.keep_alive
    assert options.header("host") == "[::1]:8790" and options.keep_alive


def test_h11_client_requests():
    h11 = pytest.importorskip("h11")
    data = b""
    for method, target, extra, body in [
        ("GET", "/__narrator-audio/5f5ac131.wav", [("If-None-Match", 'W/"abc"')], b""),
        ("POST", "/x", [("Content-Length", "4")], b"body"),
        ("GET", "/y?token=t%20k", [("Connection", "close")], b""),
    ]:
        conn = h11.Connection(h11.CLIENT)  # one per request: h11 would wait for a response in between
        data += conn.send(h11.Request(method=method, target=target, headers=[("Host", "example.test"), *extra]))
        if body:
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
    requests = parse(data)
    assert [(r.method, r.target) for r in requests] == [
        ("GET", "/__narrator-audio/5f5ac131.wav"), ("POST", "/x"), ("GET", "/y?token=t%20k")]
    assert etag_matches(requests[0].header("if-none-match"), '"abc"')
    assert requests[2].query == {"token": "t k"} and not requests[2].keep_alive


# h11 unfolds obs-fold instead of refusing it, so folding is only tested above.
H11_CASES = [
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /a%2Fb?q=1 HTTP/1.1\r\nHost: h\r\nAccept:  */*  \r\nX-Tab: a\tb\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: h\r\nOrigin: http://localhost\r\n\r\n",
    b"HEAD /x HTTP/1.0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
    b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
]


@pytest.mark.parametrize("data", H11_CASES)
def test_agrees_with_h11_server(data):
    h11 = pytest.importorskip("h11")
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    try:
        event = conn.next_event()
        theirs = (event.method.decode(), event.target.decode(), "HTTP/" + event.http_version.decode(),
                  tuple((k.decode(), v.decode("latin-1")) for k, v in event.headers))
    except h11.RemoteProtocolError:
        theirs = None
    try:
        r = one(data)
        ours = (r.method, r.target, r.version, r.headers)
    except HTTPError:
        ours = None
    assert ours == theirs


# --- Range --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, size, expected", [
    (None, 100, None),
    ("bytes=0-9", 100, (0, 9)),
    ("bytes=10-19", 100, (10, 19)),
    ("bytes=5-5", 100, (5, 5)),
    ("bytes=90-200", 100, (90, 99)),  # end clamped
    ("bytes=0-99", 100, (0, 99)),
    ("bytes=0-", 100, (0, 99)),
    ("bytes=99-", 100, (99, 99)),
    ("bytes=-10", 100, (90, 99)),  # suffix
    ("bytes=-100", 100, (0, 99)),
    ("bytes=-500", 100, (0, 99)),  # suffix longer than the file: all of it
    ("bytes=-1", 1, (0, 0)),
    ("Bytes=1-2", 100, (1, 2)),  # units are case-insensitive
    (" bytes=1-2 ", 100, (1, 2)),
    ("bytes=0-" + "9" * 40, 100, (0, 99)),
    ("bytes=00010-00020", 100, (10, 20)),
    ("bytes=100-", 100, UNSATISFIABLE),
    ("bytes=100-200", 100, UNSATISFIABLE),
    ("bytes=" + "9" * 40 + "-", 100, UNSATISFIABLE),
    ("bytes=-0", 100, UNSATISFIABLE),
    ("bytes=0-0", 0, UNSATISFIABLE),
    ("bytes=0-", 0, UNSATISFIABLE),
    ("bytes=-5", 0, UNSATISFIABLE),
    ("bytes=9-5", 100, None),  # last < first: invalid, ignored
    ("bytes=-", 100, None),
    ("bytes=", 100, None),
    ("bytes", 100, None),
    ("", 100, None),
    ("bytes=a-b", 100, None),
    ("bytes=1-2x", 100, None),
    ("bytes=--5", 100, None),
    ("bytes=-5-", 100, None),
    ("bytes=+1-2", 100, None),
    ("bytes=0-1,5-9", 100, None),  # multiple ranges
    ("bytes=0-1, 5-9", 100, None),
    ("bytes=0-1,", 100, None),
    ("items=0-9", 100, None),
    ("bits=0-9", 100, None),
    ("bytes 0-9", 100, None),
    ("bytes=\u0661-2", 100, None),  # non-ASCII digit
    ("bytes=0-9\n", 100, (0, 9)),
])
def test_parse_range(value, size, expected):
    assert parse_range(value, size) == expected


def test_unsatisfiable_is_unique_sentinel():
    assert UNSATISFIABLE is nhttp.UNSATISFIABLE
    assert UNSATISFIABLE != (0, 0) and UNSATISFIABLE is not None
    assert parse_range("bytes=5-", 5) is UNSATISFIABLE
    assert repr(UNSATISFIABLE) == "UNSATISFIABLE"


# --- ETag -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, etag, expected", [
    (None, '"abc"', False),
    ("", '"abc"', False),
    ('"abc"', '"abc"', True),
    ('"abd"', '"abc"', False),
    ("*", '"abc"', True),
    (" * ", '"abc"', True),
    ('W/"abc"', '"abc"', True),
    ('"abc"', 'W/"abc"', True),
    ('W/"abc"', 'W/"abc"', True),
    ('"x", "abc"', '"abc"', True),
    ('"x",W/"abc" , "y"', '"abc"', True),
    ('"x", "y"', '"abc"', False),
    ("abc", '"abc"', False),  # unquoted is not an entity-tag
    ('"ab"', '"abc"', False),
    ('"abc, def"', '"abc"', False),  # a comma inside an opaque tag is not a separator
    ('"abc, def"', '"abc, def"', True),
    ('"ABC"', '"abc"', False),
])
def test_etag_matches(value, etag, expected):
    assert etag_matches(value, etag) is expected


# --- response head ----------------------------------------------------------------------------------


def test_response_head():
    head = response_head(206, [("Content-Type", "audio/mpeg"), ("Content-Range", "bytes 0-9/100")])
    assert head == (b"HTTP/1.1 206 Partial Content\r\nContent-Type: audio/mpeg\r\n"
                    b"Content-Range: bytes 0-9/100\r\n\r\n")
    assert response_head(404, []) == b"HTTP/1.1 404 Not Found\r\n\r\n"
    assert response_head(416, []) == f"HTTP/1.1 416 {HTTPStatus(416).phrase}\r\n\r\n".encode()
    assert response_head(101, []).startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert response_head(304, [("ETag", '"x"')]).startswith(b"HTTP/1.1 304 Not Modified\r\n")
    assert response_head(200, [("X", "caf\u00e9")]) == b"HTTP/1.1 200 OK\r\nX: caf\xe9\r\n\r\n"


def test_response_head_parses_with_http_client():
    head = response_head(200, [("Content-Length", "3"), ("ETag", '"e"')])

    class Sock:
        def makefile(self, mode):
            import io
            return io.BytesIO(head + b"abc")

    response = http.client.HTTPResponse(Sock())
    response.begin()
    assert (response.status, response.reason, response.getheader("etag"), response.read()) == (200, "OK", '"e"', b"abc")


@pytest.mark.parametrize("header", [
    ("X", "a\r\nSet-Cookie: evil=1"), ("X", "a\nb"), ("X", "a\rb"), ("X", "a\0b"), ("Bad Name", "v"),
    ("X\r\nY", "v"), ("", "v"), ("X", "\u20ac"),
])
def test_response_head_refuses_injection(header):
    with pytest.raises(ValueError):
        response_head(200, [header])


# --- safe_file_name -----------------------------------------------------------------------------------


@pytest.mark.parametrize("target, expected", [
    ("/__narrator-audio/5f5ac131.mp3", "5f5ac131.mp3"),
    ("/__narrator-audio/00000000.wav", "00000000.wav"),
    ("/__narrator-audio/abcdef01.ogg", "abcdef01.ogg"),
    ("/__narrator-audio/80000000.webm", "80000000.webm"),
    ("/__narrator-audio/5f5ac131.mp3?v=2", "5f5ac131.mp3"),
    ("/__narrator-audio/5f5ac131.mp3?x=../../etc/passwd", "5f5ac131.mp3"),
])
def test_safe_file_name_valid(target, expected):
    assert safe_file_name(target, PREFIX) == expected


@pytest.mark.parametrize("target", [
    "/__narrator-audio/..%2f..%2fetc%2fpasswd",
    "/__narrator-audio/..%2f5f5ac131.mp3",
    "/__narrator-audio/%2e%2e/5f5ac131.mp3",
    "/__narrator-audio/%2e%2e%2f5f5ac131.mp3",
    "/__narrator-audio/..\\5f5ac131.mp3",
    "/__narrator-audio/..\\..\\windows\\win.ini",
    "/__narrator-audio/5f5ac131.mp3%00",
    "/__narrator-audio/%005f5ac131.mp3",
    "/__narrator-audio/5f5ac131.mp3\x00",
    "/__narrator-audio/../x",
    "/__narrator-audio/../5f5ac131.mp3",
    "/__narrator-audio/./5f5ac131.mp3",
    "/__narrator-audio/5F5AC131.mp3",
    "/__narrator-audio/5f5ac131.MP3",
    "/__narrator-audio/5f5ac131.mp3/",
    "/__narrator-audio//5f5ac131.mp3",
    "//__narrator-audio/5f5ac131.mp3",
    "/__narrator-audio/5f5ac131.exe",
    "/__narrator-audio/5f5ac131.mp3%00.txt",
    "/__narrator-audio/5f5ac131.mp3.txt",
    "/__narrator-audio/5f5ac131.mp3\n",
    "/__narrator-audio/5f5ac131.mp3#x",
    "/__narrator-audio/5f5ac131%2emp3",
    "/__narrator-audio/%35f5ac131.mp3",
    "/__narrator-audio%2f5f5ac131.mp3",
    "/__NARRATOR-AUDIO/5f5ac131.mp3",
    "/__narrator-audio/5f5ac13.mp3",
    "/__narrator-audio/5f5ac1310.mp3",
    "/__narrator-audio/5f5ac131",
    "/__narrator-audio/",
    "/__narrator-audio",
    "/x/__narrator-audio/5f5ac131.mp3",
    "http://localhost/__narrator-audio/5f5ac131.mp3",
    "/__narrator-audio/\u0665f5ac131.mp3",  # Arabic-Indic digit five
    "/__narrator-audio/5f5ac131.mp3;x",
    "/__narrator-audio/ 5f5ac131.mp3",
    "?/__narrator-audio/5f5ac131.mp3",
])
def test_safe_file_name_refuses(target):
    assert safe_file_name(target, PREFIX) is None


def test_safe_file_name_on_parsed_target():
    """The server passes request.target: traversal survives parsing raw, so it is still refused."""
    r = one(b"GET /__narrator-audio/%2e%2e%2f5f5ac131.mp3 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert r.path == "/__narrator-audio/../5f5ac131.mp3"
    assert safe_file_name(r.target, PREFIX) is None
