"""A sans-I/O RFC 6455 WebSocket codec: bytes in, events out; frames out as bytes.

No sockets and no asyncio here, so the same code serves the asyncio server
(``Role.SERVER``) and the CLI client (``Role.CLIENT``), and the tests can feed
it any byte sequence. No extensions are negotiated, so RSV bits are errors.

Uploads are single messages of up to ~60 MB, which shapes the design: payload
is unmasked and validated as each chunk arrives (work per chunk, never a
re-scan), masking XORs big integers instead of looping over bytes, and a
message too big is refused from its frame header before any payload is kept.

The ``fast`` extra (``pip install 'narrator-cli[fast]'``) brings C code for the
two byte loops of an upload, unmasking (``websockets.speedups``) and strict
base64 (``pybase64``): used when installed, and giving exactly the results of
the standard-library code, which stays the default and the fallback.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import enum
import hashlib
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Role", "Message", "Ping", "Pong", "Close", "Event", "ProtocolError", "HandshakeError", "Connection",
    "new_key", "accept_key", "server_handshake_response", "client_handshake_request", "parse_server_response",
    "strict_b64decode", "speedups", "use_speedups", "PURE_ENV",
]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD = 16 * 1024
# Masking works on ints of at most this many bytes: big enough that the per-piece
# overhead vanishes, small enough that 60 MB never becomes one 60 MB integer.
MASK_CHUNK = 1 << 20  # a multiple of 4, so the key phase is the same at every piece start
SMALL_MASK = 1 << 16  # below this, building the key int directly is cheaper than caching a 1 MiB one

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_KNOWN_OPCODES = frozenset((OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG))


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


@dataclass(frozen=True, slots=True)
class Message:
    """One complete data message, reassembled from its fragments.

    ``data`` is the buffer it was assembled in (often a bytearray): copying a
    60 MB upload into ``bytes`` or decoding it to ``str`` would double its cost.
    Text messages are already validated as UTF-8.
    """

    data: bytes | bytearray
    text: bool


@dataclass(frozen=True, slots=True)
class Ping:
    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """The peer closed (``code`` None when it gave no status), or we failed the connection (1002/1007/1009/1006)."""

    code: int | None
    reason: str


Event = Message | Ping | Pong | Close


class ProtocolError(Exception):
    """The peer broke RFC 6455; ``code`` is the close code we answer with. Internal: users see a Close event."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class HandshakeError(Exception):
    """The opening handshake failed; the message is one line fit for the user."""


def _valid_close_code(code: int) -> bool:
    """RFC 6455 7.4: codes an endpoint may put on the wire (1004-1006 and 1015 are reserved, <1000 unused)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1011 or 3000 <= code <= 4999


# --- the `fast` extra ------------------------------------------------------------------
PURE_ENV = "NARRATOR_PURE_WS"  # set (to anything but 0) at start-up: the standard-library paths only
_pure_only = os.environ.get(PURE_ENV, "") not in ("", "0")
_loaded = False
_c_mask: Callable[[Any, bytes], bytes] | None = None
_c_b64decode: Callable[..., bytes] | None = None


def _load_speedups() -> None:
    """Import the extra's modules, once, at the first use that pays for it: importing ``websockets``
    costs a command-line client ~40 ms (importlib.metadata), so a small check never loads it."""
    global _loaded, _c_mask, _c_b64decode
    _loaded = True
    if _pure_only:
        return
    try:
        from websockets.speedups import apply_mask
    except ImportError:  # not installed, or a source build without its C part
        pass
    else:
        _c_mask = apply_mask
    try:
        from pybase64 import b64decode
    except ImportError:
        pass
    else:
        _c_b64decode = b64decode


def use_speedups(on: bool) -> bool:
    """The C paths (when installed) or the standard-library ones from now on, in this process, so the tests
    run both in one install; returns what was chosen before. ``NARRATOR_PURE_WS=1`` at start-up is
    ``use_speedups(False)``."""
    global _pure_only, _loaded, _c_mask, _c_b64decode
    before = not _pure_only
    _pure_only, _loaded, _c_mask, _c_b64decode = not on, False, None, None
    if on:
        _load_speedups()
    return before


def speedups() -> dict[str, bool]:
    """Which C paths are in use (loading them if they were not yet): ``{"mask": ..., "base64": ...}``."""
    if not _loaded:
        _load_speedups()
    return {"mask": _c_mask is not None, "base64": _c_b64decode is not None}


def strict_b64decode(data: bytes | bytearray | memoryview) -> bytes:
    """``binascii.a2b_base64(data, strict_mode=True)``, the same bytes or the same ``binascii.Error``.

    pybase64 refuses a strict superset of what the standard library refuses (it
    also refuses ``=`` after a whole quad, which ``strict_mode`` lets through),
    and decodes what both accept to the same bytes: so its refusals, rare, are
    decided again by the standard library, and both paths agree on every input.
    """
    if not _loaded:
        _load_speedups()
    if _c_b64decode is not None:
        try:
            return _c_b64decode(data, validate=True)
        except ValueError:  # binascii.Error: the standard library decides
            pass
    return binascii.a2b_base64(data, strict_mode=True)


def _mask(data: bytes | bytearray | memoryview, key: bytes, offset: int = 0,
          keys: dict[tuple[bytes, int], int] | None = None) -> bytes:
    """XOR ``data`` with the 4-byte ``key``, as if ``data`` started ``offset`` bytes into the payload.

    One big-int XOR per piece runs at memory speed; a byte loop in Python would
    take seconds on an upload. ``keys`` caches the repeated key as an int per
    (phase, piece size) across the chunks of one frame: socket reads mostly
    have the same size, so most chunks pay one conversion each way, not two.
    With the ``fast`` extra, C does it (50x faster) for anything but small frames of a client
    that never sent a large one (so a quick check never pays for importing it).
    """
    n = len(data)
    if not n:
        return b""
    shift = offset & 3
    if shift:
        key = key[shift:] + key[:shift]
    if not _loaded and n >= SMALL_MASK:
        _load_speedups()
    if _c_mask is not None:
        return _c_mask(data, key)
    if n < SMALL_MASK:
        keyed = (key * ((n >> 2) + 1))[:n]
        return (int.from_bytes(data, "big") ^ int.from_bytes(keyed, "big")).to_bytes(n, "big")
    if keys is None:
        keys = {}
    view = memoryview(data)
    parts = []
    for start in range(0, n, MASK_CHUNK):
        piece = view[start:start + MASK_CHUNK]
        size = len(piece)
        keyed_int = keys.get((key, size))
        if keyed_int is None:
            full = keys.get((key, MASK_CHUNK))
            if full is None:
                full = keys[key, MASK_CHUNK] = int.from_bytes(key * (MASK_CHUNK >> 2), "big")
            if len(keys) > 8:  # odd sizes: keep the full one, forget the rest
                keys.clear()
                keys[key, MASK_CHUNK] = full
            # the key's leading bytes are the top bytes of the big-endian int
            keyed_int = keys[key, size] = full >> (8 * (MASK_CHUNK - size))
        parts.append((int.from_bytes(piece, "big") ^ keyed_int).to_bytes(size, "big"))
    return parts[0] if len(parts) == 1 else b"".join(parts)


class Connection:
    """One WebSocket connection after the opening handshake, for either role.

    Feed it what the socket reads with ``receive_data`` (``b""`` at EOF), act on
    ``events()``, and write out ``data_to_send()`` after every call.
    """

    def __init__(self, role: Role, max_message_size: int | None = None) -> None:
        if role is Role.SERVER and not _loaded:  # a server unmasks every frame: it pays for the import at once
            _load_speedups()
        self.role = role
        self.max_message_size = max_message_size
        self._buf = bytearray()  # an incomplete frame header or control frame: never more than 139 bytes
        self._events: list[Event] = []
        self._out: list[bytes] = []
        self._random, self._random_at = b"", 0  # mask keys from the OS's CSPRNG, and the next unused one
        self._closed = False
        self._close_sent = False
        # the frame whose payload is being read
        self._in_frame = False
        self._fin = False
        self._opcode = 0
        self._key: bytes | None = None
        self._keys: dict[tuple[bytes, int], int] = {}  # this frame's key as big ints: see _mask
        self._remaining = 0  # payload bytes of this frame still to come
        self._offset = 0  # payload bytes of this frame already read: the mask phase
        # the data message being assembled
        self._msg_opcode: int | None = None
        self._msg = bytearray()
        self._decoder: codecs.IncrementalDecoder | None = None
        self._utf8_pending = False

    # --- state ----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """Close handshake done, connection failed or EOF seen: input is ignored and sends do nothing."""
        return self._closed

    @property
    def close_sent(self) -> bool:
        return self._close_sent

    @property
    def partial(self) -> bytearray | None:
        """The payload received so far of the text message being assembled (across its
        fragments), or None when none is. The very buffer the ``Message`` will carry,
        so a consumer can tell it by identity; read it, never write it, and never keep a
        memoryview of it across ``receive_data``: a live export stops it growing (BufferError)."""
        if self._closed or self._msg_opcode != OP_TEXT:
            return None
        return self._msg

    # --- input ----------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Parse what the peer sent; ``b""`` means the peer closed the stream."""
        if self._closed:
            return
        if not data:
            self._closed = True
            self._events.append(Close(1006, ""))
            return
        if self._buf:  # only a few header bytes: joining them costs one copy of this chunk
            self._buf += data
            data, self._buf = self._buf, bytearray()
        try:
            pos = self._parse(data)
        except ProtocolError as exc:
            self._fail(exc.code, exc.reason)
            return
        if pos < len(data) and not self._closed:
            self._buf = bytearray(data[pos:])

    def events(self) -> list[Event]:
        """Events parsed since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def _parse(self, data: bytes | bytearray) -> int:
        """Consume frames from ``data``; return how far it got (the rest is an incomplete header or control frame)."""
        pos, end = 0, len(data)
        while not self._closed:
            if self._in_frame:
                if self._opcode >= OP_CLOSE:  # control payloads are tiny: wait for all of it
                    if end - pos < self._remaining:
                        return pos
                    n = self._remaining
                else:
                    n = min(self._remaining, end - pos)
                    if n == 0 and self._remaining:
                        return pos
                if self._key is not None:
                    chunk = _mask(memoryview(data)[pos:pos + n], self._key, self._offset, self._keys)
                else:
                    chunk = data[pos:pos + n]
                pos += n
                self._offset += n
                self._remaining -= n
                if self._opcode >= OP_CLOSE:
                    self._in_frame = False
                    self._control_frame(self._opcode, bytes(chunk))
                else:
                    self._data_chunk(chunk)
                    if not self._remaining:
                        self._in_frame = False
                        if self._fin:
                            self._finish_message()
                continue
            if end - pos > 1 and data[pos] == 0x81 and self._msg_opcode is None:
                used = self._small_text(data, pos, end)
                if used:
                    pos += used
                    continue
            used = self._header(data, pos, end)
            if not used:
                return pos
            pos += used
        return pos

    def _small_text(self, data: bytes | bytearray, pos: int, end: int) -> int:
        """A whole one-frame text message of under 126 bytes (every check and reply) in one step;
        its length, or 0 to leave it to the general path, which also reports every error."""
        b1 = data[pos + 1]
        n, masked = b1 & 0x7F, b1 >> 7
        start = pos + (6 if masked else 2)
        if n > 125 or masked != (self.role is Role.SERVER) or end - start < n \
                or (self.max_message_size is not None and n > self.max_message_size):
            return 0
        payload = _mask(data[start:start + n], bytes(data[start - 4:start])) if masked else data[start:start + n]
        if not payload.isascii():
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(1007, "invalid UTF-8 in text message") from None
        self._events.append(Message(bytearray(payload), True))
        return start + n - pos

    def _header(self, data: bytes | bytearray, pos: int, end: int) -> int:
        """Read one frame header at ``pos``; its length, or 0 while incomplete. Checks fail as early as possible."""
        avail = end - pos
        if avail < 1:
            return 0
        b0 = data[pos]
        if b0 & 0x70:
            raise ProtocolError(1002, "reserved bits set")
        fin, opcode = bool(b0 & 0x80), b0 & 0x0F
        if opcode not in _KNOWN_OPCODES:
            raise ProtocolError(1002, f"reserved opcode {opcode:#x}")
        if opcode >= OP_CLOSE:
            if not fin:
                raise ProtocolError(1002, "fragmented control frame")
        elif opcode == OP_CONT:
            if self._msg_opcode is None:
                raise ProtocolError(1002, "continuation without a message")
        elif self._msg_opcode is not None:
            raise ProtocolError(1002, "new message inside a fragmented one")
        if avail < 2:
            return 0
        b1 = data[pos + 1]
        masked = bool(b1 & 0x80)
        if masked != (self.role is Role.SERVER):
            raise ProtocolError(1002, "client frame not masked" if self.role is Role.SERVER else "server frame masked")
        length = b1 & 0x7F
        size = 2
        if opcode >= OP_CLOSE and length > 125:
            raise ProtocolError(1002, "control frame too long")
        if length == 126:
            size = 4
            if avail < size:
                return 0
            length = int.from_bytes(data[pos + 2:pos + 4], "big")
        elif length == 127:
            size = 10
            if avail < size:
                return 0
            length = int.from_bytes(data[pos + 2:pos + 10], "big")
            if length >> 63:
                raise ProtocolError(1002, "frame length has the top bit set")
        if opcode < OP_CLOSE and self.max_message_size is not None \
                and len(self._msg) + length > self.max_message_size:
            raise ProtocolError(1009, f"message over {self.max_message_size} bytes")
        if masked:
            if avail < size + 4:
                return 0
            self._key = bytes(data[pos + size:pos + size + 4])
            self._keys = {}
            size += 4
        else:
            self._key = None
        self._fin, self._opcode = fin, opcode
        self._remaining, self._offset = length, 0
        self._in_frame = True
        if opcode == OP_TEXT or opcode == OP_BINARY:
            self._msg_opcode = opcode
        return size

    def _data_chunk(self, chunk: bytes | bytearray) -> None:
        """Validate (text) and keep a piece of message payload, as soon as it arrives."""
        if self._msg_opcode == OP_TEXT:
            # Pieces of at most 1 MiB, so a 60 MB chunk never becomes a 60 MB str;
            # ASCII pieces (base64 uploads, most JSON) need no decoder at all.
            for start in range(0, len(chunk), MASK_CHUNK):
                piece = chunk[start:start + MASK_CHUNK] if len(chunk) > MASK_CHUNK else chunk
                if self._utf8_pending or not piece.isascii():
                    if self._decoder is None:  # all before was ASCII: a fresh decoder is in the same state
                        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
                    try:
                        self._decoder.decode(piece)
                    except UnicodeDecodeError:
                        raise ProtocolError(1007, "invalid UTF-8 in text message") from None
                    self._utf8_pending = bool(self._decoder.getstate()[0])
        self._msg += chunk

    def _finish_message(self) -> None:
        text = self._msg_opcode == OP_TEXT
        if self._decoder is not None and self._utf8_pending:  # a character cut off at the end
            try:
                self._decoder.decode(b"", True)
            except UnicodeDecodeError:
                raise ProtocolError(1007, "invalid UTF-8 in text message") from None
        self._events.append(Message(self._msg, text))
        self._msg = bytearray()
        self._msg_opcode = None
        self._decoder = None
        self._utf8_pending = False

    def _control_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self._events.append(Ping(payload))
            if not self._close_sent:
                self._send_frame(OP_PONG, payload)
        elif opcode == OP_PONG:
            self._events.append(Pong(payload))
        else:
            code, reason = self._parse_close(payload)
            self._events.append(Close(code, reason))
            if not self._close_sent:  # echo it: same code, or an empty close for a close without status
                self._close_sent = True
                self._send_frame(OP_CLOSE, b"" if code is None else code.to_bytes(2, "big"))
            self._closed = True

    @staticmethod
    def _parse_close(payload: bytes) -> tuple[int | None, str]:
        if not payload:
            return None, ""
        if len(payload) == 1:
            raise ProtocolError(1002, "close frame of one byte")
        code = int.from_bytes(payload[:2], "big")
        if not _valid_close_code(code):
            raise ProtocolError(1002, f"invalid close code {code}")
        try:
            reason = payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(1007, "invalid UTF-8 in close reason") from None
        return code, reason

    def _fail(self, code: int, reason: str) -> None:
        """RFC 6455 7.1.7: send a close with the error (unless one is already out), report it, stop reading."""
        if not self._close_sent:
            self._close_sent = True
            self._send_frame(OP_CLOSE, _close_payload(code, reason))
        self._events.append(Close(code, reason))
        self._closed = True
        self._buf = bytearray()
        self._msg = bytearray()

    # --- output ---------------------------------------------------------------------
    def send_text(self, text: str | bytes) -> None:
        """Queue a text message; bytes are taken as already UTF-8 encoded (not re-validated)."""
        if isinstance(text, str):
            text = text.encode("utf-8")
        self._send_data(OP_TEXT, text)

    def send_binary(self, data: bytes) -> None:
        self._send_data(OP_BINARY, data)

    def send_ping(self, data: bytes = b"") -> None:
        if len(data) > 125:
            raise ValueError("ping payload over 125 bytes")
        self._send_data(OP_PING, data)

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake; the reason is cut to fit a 125-byte control frame."""
        if self._closed or self._close_sent:
            return
        if not _valid_close_code(code):
            raise ValueError(f"close code {code} may not be sent")
        self._close_sent = True
        self._send_frame(OP_CLOSE, _close_payload(code, reason))

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call."""
        if not self._out:
            return b""
        out = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out = []
        return out

    def _send_data(self, opcode: int, payload: bytes | bytearray) -> None:
        if self._closed or self._close_sent:
            return
        self._send_frame(opcode, payload)

    def _send_frame(self, opcode: int, payload: bytes | bytearray) -> None:
        """One FIN frame; a client masks it with a fresh random key (RFC 6455 5.3)."""
        n = len(payload)
        mask_bit = 0x80 if self.role is Role.CLIENT else 0
        b0 = 0x80 | opcode
        if n < 126:
            head = bytes((b0, mask_bit | n))
        elif n < 65536:
            head = struct.pack("!BBH", b0, mask_bit | 126, n)
        else:
            head = struct.pack("!BBQ", b0, mask_bit | 127, n)
        if mask_bit:
            at = self._random_at
            if at >= len(self._random):  # one getrandom call per 1024 frames, not per frame
                self._random, at = os.urandom(4096), 0
            key, self._random_at = self._random[at:at + 4], at + 4
            self._out += (head + key, _mask(payload, key))
        else:
            self._out += (head, bytes(payload))


def _close_payload(code: int, reason: str) -> bytes:
    """Code and UTF-8 reason, cut at a character boundary to stay within 125 bytes."""
    raw = reason.encode("utf-8")
    if len(raw) > 123:
        raw = raw[:123].decode("utf-8", "ignore").encode("utf-8")
    return code.to_bytes(2, "big") + raw


# --- opening handshake ---------------------------------------------------------------
def new_key() -> str:
    """A fresh Sec-WebSocket-Key: 16 random bytes, base64."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept that proves the server read this key (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode("ascii")).digest()).decode("ascii")


def _check_header(name: str, value: str) -> None:
    """Refuse what would end the header early: a value with CR/LF could smuggle in another header."""
    if not name or any(c in name for c in ":\r\n\0 \t") or any(c in value for c in "\r\n\0"):
        raise ValueError(f"invalid header {name!r}")


def server_handshake_response(key: str, subprotocol: str | None) -> bytes:
    """The 101 head that completes a valid upgrade request."""
    lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Accept: {accept_key(key)}"]
    if subprotocol:
        _check_header("Sec-WebSocket-Protocol", subprotocol)
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def client_handshake_request(host: str, target: str, key: str, subprotocol: str | None,
                             headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """The GET upgrade request, with ``headers`` (e.g. Origin, Authorization) added at the end."""
    fields = [("Host", host), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
              ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]
    if subprotocol:
        fields.append(("Sec-WebSocket-Protocol", subprotocol))
    fields += headers
    if not target or any(c in target for c in " \r\n\0"):
        raise ValueError(f"invalid request target {target!r}")
    for name, value in fields:
        _check_header(name, value)
    lines = [f"GET {target} HTTP/1.1"] + [f"{name}: {value}" for name, value in fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def parse_server_response(data: bytes, key: str, subprotocol: str | None) -> bytes | None:
    """Check the server's answer to our upgrade request.

    ``data`` is everything received so far: None until the head is complete,
    then the bytes after it (frames the server sent right away), or
    HandshakeError with a one-line reason.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HEAD:
            raise HandshakeError("server response head over 16 KiB")
        return None
    if end + 4 > MAX_HEAD:
        raise HandshakeError("server response head over 16 KiB")
    lines = bytes(data[:end]).decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HandshakeError(f"not an HTTP response: {lines[0][:80]!r}")
    if parts[1] != "101":
        reason = parts[2].strip() if len(parts) > 2 else ""
        raise HandshakeError(f"server answered {parts[1]} {reason}".rstrip()[:200])
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise HandshakeError(f"malformed header line {line[:80]!r}")
        name, value = name.strip().lower(), value.strip()
        fields[name] = f"{fields[name]}, {value}" if name in fields else value

    def tokens(name: str) -> set[str]:
        return {t.strip().lower() for t in fields.get(name, "").split(",")}

    if "websocket" not in tokens("upgrade"):
        raise HandshakeError("missing Upgrade: websocket")
    if "upgrade" not in tokens("connection"):
        raise HandshakeError("missing Connection: Upgrade")
    if "sec-websocket-accept" not in fields:
        raise HandshakeError("missing Sec-WebSocket-Accept")
    if fields["sec-websocket-accept"] != accept_key(key):
        raise HandshakeError("wrong Sec-WebSocket-Accept")
    if "sec-websocket-extensions" in fields:
        raise HandshakeError("server chose an extension that was not offered")
    chosen = fields.get("sec-websocket-protocol")
    if subprotocol is not None and chosen != subprotocol:
        raise HandshakeError(f"server did not accept subprotocol {subprotocol}")
    if subprotocol is None and chosen is not None:
        raise HandshakeError(f"server chose subprotocol {chosen[:80]} that was not offered")
    return bytes(data[end + 4:])
