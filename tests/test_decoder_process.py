"""The helper process that decodes large uploads: the same verdicts as decoding in the server,
over real pipes, and real processes killed with real signals."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import signal
import threading
import time
from concurrent.futures import Future

import pytest

import serve_process
from audio_fixtures import make_mp3
from narrator_cli import decoder_process, protocol
from narrator_cli.protocol import Handler, Index
from narrator_cli.store import Staged, Store

AUDIO = os.urandom(300_000)
GOOD = base64.b64encode(AUDIO)


def reference(b64: bytes) -> bytes | None:
    """What the server's own decoder accepts (strict, whole, length a multiple of 4), None if it refuses."""
    if len(b64) % 4:
        return None
    try:
        return binascii.a2b_base64(b64, strict_mode=True)
    except binascii.Error:
        return None


def through_pipe(b64: bytes, split: int, dst: int) -> tuple[str, int] | None:
    src, sink = os.pipe()

    def write() -> None:  # like the server: it stops when the helper has stopped reading
        try:
            with os.fdopen(sink, "wb") as f:
                for i in range(0, len(b64), split):
                    f.write(b64[i:i + split])
                    f.flush()
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=write)
    writer.start()
    try:
        return decoder_process.decode(src, dst)
    except (binascii.Error, ValueError):
        return None
    finally:
        os.close(src)  # an early verdict leaves the writer blocked on a full pipe until this
        writer.join()


CASES = {
    "good": GOOD,
    "one padding": base64.b64encode(b"ab"),
    "two padding": base64.b64encode(b"a"),
    "empty": b"",
    "bad character": GOOD[:1000] + b"!" + GOOD[1001:],
    "newline": GOOD[:1000] + b"\n" + GOOD[1001:],
    "non-ascii": GOOD[:999] + "é".encode() + GOOD[1001:],
    "padding in the middle": GOOD[:1000] + b"==" + GOOD[1002:],
    "padding ending an early quad": b"QUFBQQ==QUFBQUFB",
    "length not a multiple of 4": GOOD[:-1],
    "only padding": b"====",
    "data after padding": base64.b64encode(b"ab") + b"QUFB",
}


@pytest.mark.parametrize("split", [1, 3, 4, 5, 65_537, 1 << 20])
@pytest.mark.parametrize("case", list(CASES))
def test_decode_agrees_with_the_servers_own_decoder(tmp_path, case, split):
    b64 = CASES[case]
    if split == 1 and len(b64) > 5000:
        b64 = b64[:4000] + b64[-1000:] if case != "good" else base64.b64encode(AUDIO[:3000])
    expected = reference(b64)
    with open(tmp_path / "out", "wb") as out:
        got = through_pipe(b64, split, out.fileno())
    if expected is None:
        assert got is None
    else:
        assert got == (hashlib.sha256(expected).hexdigest(), len(expected))
        assert (tmp_path / "out").read_bytes() == expected


@pytest.fixture
def staged(tmp_path):
    s = Store(tmp_path / "cache").stage()
    yield s
    s.discard()


def feed_all(helper: decoder_process.Helper, data: bytes) -> None:
    view, deadline = memoryview(data), time.monotonic() + 10
    while view:
        assert time.monotonic() < deadline, "the helper stopped reading"
        view = view[helper.feed(view):]


def test_helper_process_decodes_into_the_staged_file(staged):
    helper = decoder_process.start(staged.fd)
    assert helper is not None and helper.running
    feed_all(helper, GOOD[:200_000])
    result = helper.finish(memoryview(GOOD)[200_000:]).result(10)
    assert result == (hashlib.sha256(AUDIO).hexdigest(), len(AUDIO))
    assert not helper.running  # reaped
    staged.adopt(*result)
    assert staged.path.read_bytes() == AUDIO and staged.size == len(AUDIO)


def test_helper_refusing_the_data_answers_none(staged):
    helper = decoder_process.start(staged.fd)
    bad = GOOD[:1000] + b"!" + GOOD[1001:]
    assert helper.finish(memoryview(bad)).result(10) is None
    assert not helper.running


def test_helper_killed_midway_answers_none(staged):
    helper = decoder_process.start(staged.fd)
    feed_all(helper, GOOD[:100_000])
    os.kill(helper.proc.pid, signal.SIGKILL)
    helper.proc.wait(10)
    assert helper.finish(memoryview(GOOD)[100_000:]).result(10) is None
    with pytest.raises(OSError):  # a pipe nobody reads any more
        helper.feed(b"QUFB")


def test_adopt_refuses_a_size_the_file_does_not_have(staged):
    os.write(staged.fd, b"abc")
    with pytest.raises(ValueError):
        staged.adopt(hashlib.sha256(b"abcd").hexdigest(), 4)


def test_no_more_helpers_than_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(protocol, "HELPERS", 1)
    handler = Handler(Index(Store(tmp_path / "cache")))
    a, b = handler.index.store.stage(), handler.index.store.stage()
    first = handler._start_helper(a.fd)
    try:
        assert first is not None and handler._start_helper(b.fd) is None  # busy: decode in the server
        first.kill()
        second = handler._start_helper(b.fd)
        assert second is not None
        second.kill()
    finally:
        a.discard()
        b.discard()


# --- the helper inside the server's upload path (protocol.UploadStream and Handler.decode_steps) ---
def upload_raw(audio: bytes) -> bytes:
    fields = {"cacheKey": "0000abcd", "mimeType": "audio/mpeg",
              "data": "data:audio/mpeg;base64," + base64.b64encode(audio).decode()}
    return json.dumps({"type": "custom", "event": protocol.UPLOAD_AUDIO, "data": fields}).encode()


@pytest.fixture
def handler(tmp_path):
    return Handler(Index(Store(tmp_path / "cache")), max_file_size=4 << 20)


def helper_children() -> list[int]:
    return serve_process.decoder_helpers(os.getpid())


def stream_in(handler: Handler, raw: bytes, piece: int, on_step=None) -> tuple[bytearray, protocol.UploadStream]:
    buf = bytearray()
    stream = handler.upload_stream(buf, protocol.HELPER_OVER)  # as if the message were that large
    for start in range(0, len(raw), piece):
        buf += raw[start:start + piece]
        stream.step()
        if on_step:
            on_step(stream)
    return buf, stream


def take(handler: Handler, buf: bytearray, stream: protocol.UploadStream):
    event, data, url_at = protocol.decode_located(buf)
    key, mime, b64, meta = handler.parse_upload(data)
    return key, b64, stream.take(buf, url_at, len(b64))


def run(steps) -> Staged:
    """What the server's ``_upload`` does with the steps: wait for each Future, keep the last."""
    last = None
    for step in steps:
        if isinstance(step, Future):
            step.result(10)
        elif step is not None:
            last = step
    return last


def test_upload_stream_hands_the_base64_to_a_helper_and_gets_the_same_audio(handler):
    audio = make_mp3(150)  # ~3.2 MB of base64
    buf, stream = stream_in(handler, upload_raw(audio), 300_001)
    assert stream.helper is not None and stream.helper.running and not stream.failed
    key, b64, head = take(handler, buf, stream)
    assert head.helper is not None and head.chars > 0
    staged = run(handler.decode_steps(key, b64, head))
    assert staged.path.read_bytes() == audio
    assert staged.sha256 == hashlib.sha256(audio).hexdigest() and staged.size == len(audio)
    assert json.loads(handler.store_upload(key, "audio/mpeg", staged, {}))["event"] == protocol.UPLOAD_SUCCESS
    assert handler.index.store.read_audio(handler.index.get(key)) == audio
    assert not head.helper.running and helper_children() == []


def test_small_messages_get_no_helper(handler):
    stream = handler.upload_stream(bytearray(), protocol.HELPER_OVER - 1)
    assert stream.start_helper is None


def test_helper_killed_while_the_message_arrives_falls_back_to_decoding_in_the_server(handler):
    audio = make_mp3(150)

    def kill_once(stream):
        if stream.helper is not None and stream.pos - stream.begin > 500_000:
            os.kill(stream.helper.proc.pid, signal.SIGKILL)
            stream.helper.proc.wait(10)

    buf, stream = stream_in(handler, upload_raw(audio), 300_001, kill_once)
    assert stream.failed and stream.staged is None  # the next feed found a broken pipe and gave up
    key, b64, head = take(handler, buf, stream)
    assert head is None
    staged = run(handler.decode_steps(key, b64, head))
    assert staged.path.read_bytes() == audio
    staged.discard()
    assert helper_children() == []


def test_helper_killed_before_it_answers_falls_back_to_decoding_in_the_server(handler):
    audio = make_mp3(150)
    buf, stream = stream_in(handler, upload_raw(audio), 300_001)
    key, b64, head = take(handler, buf, stream)
    os.kill(head.helper.proc.pid, signal.SIGKILL)
    head.helper.proc.wait(10)
    staged = run(handler.decode_steps(key, b64, head))
    assert staged.path.read_bytes() == audio and staged.sha256 == hashlib.sha256(audio).hexdigest()
    staged.discard()
    assert sorted(p.name for p in handler.index.store.root.glob(".*")) == []


@pytest.mark.parametrize("bad", [b"!", b"=", b"\n"])
def test_invalid_base64_through_a_helper_is_refused_and_leaves_nothing(handler, bad):
    raw = bytearray(upload_raw(make_mp3(150)))
    raw[len(raw) // 2] = bad[0]
    buf, stream = stream_in(handler, bytes(raw), 300_001)
    key, b64, head = take(handler, buf, stream)
    with pytest.raises(protocol.BadMessage, match="invalid base64"):
        run(handler.decode_steps(key, b64, head))
    assert handler.index.get(key) is None
    assert sorted(p.name for p in handler.index.store.root.glob(".*")) == []
    assert helper_children() == []


def test_upload_given_up_while_the_helper_finishes_kills_it_and_deletes_the_file(handler):
    buf, stream = stream_in(handler, upload_raw(make_mp3(150)), 300_001)
    key, b64, head = take(handler, buf, stream)
    steps = handler.decode_steps(key, b64, head)
    waiting = next(steps)
    assert isinstance(waiting, Future)
    steps.close()  # what cancelling the server's upload task does
    assert not head.helper.running
    waiting.result(10)  # the thread that was feeding it ends too
    assert sorted(p.name for p in handler.index.store.root.glob(".*")) == []
    assert helper_children() == []


def test_message_cut_off_mid_stream_kills_the_helper(handler):
    buf, stream = stream_in(handler, upload_raw(make_mp3(150))[:1_000_000], 300_001)
    helper = stream.helper
    assert helper is not None and helper.running
    stream.close()  # what the server does when the connection drops
    assert not helper.running and helper_children() == []
    assert sorted(p.name for p in handler.index.store.root.glob(".*")) == []
