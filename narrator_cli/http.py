"""A sans-I/O HTTP/1.1 request parser and the few response helpers ``serve`` needs.

Bytes go in, :class:`Request` objects come out; no sockets, no threads, standard
library only, in the style of h11. The server routes GET/HEAD/OPTIONS only, so
request bodies are never delivered: a small ``Content-Length`` body is skipped,
anything else that would need a body decoder is refused. Being strict here is
the point: the server is reachable from browsers, so an ambiguous request
(bare LF, folded or duplicated framing headers, odd Host) is answered with an
error and the connection is closed rather than guessed at.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs, unquote

__all__ = [
    "HTTPError", "Request", "RequestParser", "UNSATISFIABLE",
    "parse_range", "etag_matches", "response_head", "safe_file_name",
]

MAX_HEADERS = 100

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN_RE = re.compile(_TOKEN)
# RFC 9112 3: method SP request-target SP HTTP-version; the version is checked apart to give 505.
_REQUEST_LINE_RE = re.compile(rf"({_TOKEN}) ([!-~]+) (HTTP/[0-9]\.[0-9])")
_HEADER_RE = re.compile(rf"({_TOKEN}):[ \t]*(.*?)[ \t]*")
# Controls other than HTAB (and DEL) are never valid in a field value; CR and LF here would be smuggling.
_CTL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_DIGITS_RE = re.compile(r"[0-9]+")
_VERSIONS = ("HTTP/1.1", "HTTP/1.0")


class HTTPError(Exception):
    """A request that cannot be served; ``str(exc)`` is a short reason safe to send to the peer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str  # raw, latin-1 decoded: security checks must see what was sent, not a decoding of it
    path: str  # percent-decoded part before "?", for routing only
    query: dict[str, str]
    headers: tuple[tuple[str, str], ...]  # names lowercased, values stripped, in order
    version: str
    fields: dict[str, str]  # the same by name; a repeated field joined with ", " as RFC 9110 5.3 allows

    def header(self, name: str, default: str | None = None) -> str | None:
        """Case-insensitive lookup (built once: a request is asked for several headers)."""
        return self.fields.get(name.lower(), default)

    @property
    def keep_alive(self) -> bool:
        """HTTP/1.1 is persistent unless told otherwise; HTTP/1.0 only when asked (RFC 9112 9.3)."""
        tokens = {t.strip().lower() for t in (self.header("connection") or "").split(",")}
        if "close" in tokens:
            return False
        return self.version == "HTTP/1.1" or "keep-alive" in tokens


class RequestParser:
    """Incremental request parser: ``receive_data`` then ``next_request`` until it returns None.

    Lines must end in CRLF; a bare LF is refused with 400 (RFC 9112 2.2 allows
    either, refusing removes a disagreement with proxies in front of us). The
    buffer is scanned once: the search for line ends resumes where it stopped,
    and consumed bytes are dropped, so a peer trickling bytes costs linear time.
    """

    def __init__(self, max_head: int = 16384, max_target: int = 8192, max_body: int = 65536) -> None:
        self.max_head = max_head
        self.max_target = max_target
        self.max_body = max_body
        self._buf = bytearray()
        self._pos = 0  # start of unconsumed data in _buf
        self._scan = 0  # where the search for the next LF resumes
        self._line_start = 0  # start of the line being scanned
        self._lines = 0  # complete lines of the current head, request line included
        self._body_left = 0  # bytes of a previous request's body still to discard
        self._error: HTTPError | None = None

    def receive_data(self, data: bytes) -> None:
        if self._pos:
            self._compact()
        self._buf += data

    def has_partial(self) -> bool:
        """Whether an incomplete request (head or body) is pending: the header timeout applies then."""
        return self._body_left > 0 or len(self._buf) > self._pos

    def trailing_data(self) -> bytes:
        """Bytes after the last returned request and its body: the first frames after an upgrade."""
        self._skip_body()
        return bytes(self._buf[self._pos:])

    def next_request(self) -> Request | None:
        """The next complete request, or None if more data is needed; errors are sticky."""
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except HTTPError as exc:
            self._error = exc
            raise

    # --- internals -----------------------------------------------------------------
    def _compact(self) -> None:
        shift = self._pos
        del self._buf[:shift]
        self._pos = 0
        self._scan -= shift
        self._line_start -= shift

    def _skip_body(self) -> None:
        take = min(self._body_left, len(self._buf) - self._pos)
        self._pos += take
        self._body_left -= take
        if self._scan < self._pos:
            self._scan = self._line_start = self._pos

    def _next(self) -> Request | None:
        self._skip_body()
        if self._body_left:
            return None
        buf = self._buf
        while True:
            nl = buf.find(b"\n", self._scan)
            if nl < 0:
                self._scan = len(buf)
                self._check_partial()
                return None
            if nl == self._line_start or buf[nl - 1] != 0x0D:
                raise HTTPError(400, "bare LF line ending")
            self._scan = nl + 1
            if nl - 1 == self._line_start:  # an empty line
                if self._lines == 0:  # before the request line: skipped (RFC 9112 2.2)
                    self._pos = self._line_start = self._scan
                    continue
                return self._finish(nl + 1)
            self._lines += 1
            if self._lines == 1 and nl - 1 - self._line_start > self.max_target:
                raise HTTPError(414, "request line too long")
            if self._lines > MAX_HEADERS + 1:
                raise HTTPError(431, "too many header fields")
            if nl + 1 - self._pos > self.max_head:
                raise HTTPError(431, "request head too large")
            self._line_start = nl + 1

    def _check_partial(self) -> None:
        """Refuse an oversized head as soon as it is buffered, without waiting for its end."""
        buf = self._buf
        pending = len(buf) - self._line_start
        if pending and buf[-1] == 0x0D:
            pending -= 1  # the CR of a CRLF split across reads does not count towards the line
        if self._lines == 0 and pending > self.max_target:
            raise HTTPError(414, "request line too long")
        if len(buf) - self._pos > self.max_head:
            raise HTTPError(431, "request head too large")
        if self._pos > 4096 and self._pos * 2 > len(buf):
            self._compact()

    def _finish(self, end: int) -> Request:
        if end - self._pos > self.max_head:
            raise HTTPError(431, "request head too large")
        head = bytes(self._buf[self._pos:end - 4]).decode("latin-1")
        self._pos = self._scan = self._line_start = end
        self._lines = 0
        request = _parse_head(head)
        length = _content_length(request)
        if length > self.max_body:
            raise HTTPError(413, "request body too large")
        self._body_left = length
        if self._pos > 4096 and self._pos * 2 > len(self._buf):
            self._compact()
        return request


def _parse_head(head: str) -> Request:
    request_line, *lines = head.split("\r\n")
    m = _REQUEST_LINE_RE.fullmatch(request_line)
    if m is None:
        raise HTTPError(400, "malformed request line")
    method, target, version = m.groups()
    if version not in _VERSIONS:
        raise HTTPError(505, "HTTP version not supported")
    headers = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            raise HTTPError(400, "obsolete line folding")
        h = _HEADER_RE.fullmatch(line)
        if h is None:
            raise HTTPError(400, "malformed header field")
        name, value = h.groups()
        if _CTL_RE.search(value):
            raise HTTPError(400, "control character in header value")
        headers.append((name.lower(), value))
    fields: dict[str, str] = {}
    for name, value in headers:
        if name in fields:
            if name == "host":
                raise HTTPError(400, "duplicate Host header")
            fields[name] += ", " + value
        else:
            fields[name] = value
    if "host" not in fields and version == "HTTP/1.1":
        raise HTTPError(400, "missing Host header")
    raw_path, _, raw_query = target.partition("?")
    query = {k: v[0] for k, v in parse_qs(raw_query, keep_blank_values=True).items()} if raw_query else {}
    path = unquote(raw_path) if "%" in raw_path else raw_path
    return Request(method, target, path, query, tuple(headers), version, fields)


def _content_length(request: Request) -> int:
    """Body length to skip; RFC 9112 6.3: Transfer-Encoding is not supported, lengths must agree."""
    if request.header("transfer-encoding") is not None:
        raise HTTPError(501, "Transfer-Encoding not supported")
    value = request.header("content-length")
    if value is None:
        return 0
    lengths = {v.strip() for v in value.split(",")}
    if not all(_DIGITS_RE.fullmatch(v) for v in lengths):
        raise HTTPError(400, "malformed Content-Length")
    lengths = {v.lstrip("0") or "0" for v in lengths}
    if len(lengths) > 1:
        raise HTTPError(400, "conflicting Content-Length")
    digits = lengths.pop()
    return int(digits) if len(digits) <= 18 else 10**18  # past int()'s digit limit it is just "too big"


class _Unsatisfiable(enum.Enum):
    UNSATISFIABLE = "unsatisfiable"

    def __repr__(self) -> str:
        return "UNSATISFIABLE"

    __str__ = __repr__


UNSATISFIABLE = _Unsatisfiable.UNSATISFIABLE
_RANGE_RE = re.compile(r"bytes[ \t]*=[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)", re.IGNORECASE)


def _int(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 10**18


def parse_range(value: str | None, size: int) -> tuple[int, int] | None | _Unsatisfiable:
    """One ``bytes=`` range as inclusive (start, end), None to serve it all, or UNSATISFIABLE for 416.

    Multiple or malformed ranges give None: RFC 9110 14.2 lets a server ignore
    Range, and a full 200 is cheaper than multipart/byteranges.
    """
    if value is None:
        return None
    m = _RANGE_RE.fullmatch(value.strip())
    if m is None:
        return None
    first, last = m.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last n bytes
        n = _int(last)
        if n == 0 or size <= 0:
            return UNSATISFIABLE
        return max(size - n, 0), size - 1
    start = _int(first)
    end = _int(last) if last else None
    if end is not None and end < start:
        return None
    if start >= size:
        return UNSATISFIABLE
    return start, size - 1 if end is None else min(end, size - 1)


_ETAG_RE = re.compile(r'(?:W/)?("[^"]*")')


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """If-None-Match with weak comparison (RFC 9110 13.1.2): W/"x" matches "x"."""
    if if_none_match is None:
        return False
    value = if_none_match.strip()
    if value == "*":
        return True
    opaque = etag[2:] if etag.startswith("W/") else etag
    return opaque in _ETAG_RE.findall(value)


def response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    """Status line and headers; a CR or LF in a value would let a value forge headers, so it is refused."""
    if not 100 <= status <= 999:
        raise ValueError(f"bad status {status!r}")
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {status} {reason}"]
    for name, value in headers:
        if not _TOKEN_RE.fullmatch(name):
            raise ValueError(f"bad header name {name!r}")
        value = str(value)
        if "\r" in value or "\n" in value or "\0" in value:
            raise ValueError(f"header {name} contains CR, LF or NUL")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_FILE_NAME_RE = re.compile(r"[0-9a-f]{8}\.(?:mp3|wav|ogg|webm)")


def safe_file_name(target: str, prefix: str = "/__narrator-audio/") -> str | None:
    """The cache file a raw request-target names, or None.

    Works on the raw target and accepts one exact shape, so no decoding step
    (percent, backslash, dot segments, NUL) can turn it into another path.
    """
    path = target.split("?", 1)[0]
    if not path.startswith(prefix):
        return None
    name = path[len(prefix):]
    return name if _FILE_NAME_RE.fullmatch(name) else None
