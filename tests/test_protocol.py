"""The narrator events over a real store, without a socket."""

import base64
import json
import os

import pytest

from audio_fixtures import make_mp3, make_ogg_opus, make_wav
import narrator_cli
from narrator_cli import protocol
from narrator_cli.protocol import BadMessage, Handler, Index
from narrator_cli.store import Store


def message(event: str, **data) -> str:
    return json.dumps({"type": "custom", "event": event, "data": data})


def reply(text: str) -> tuple[str, dict]:
    obj = json.loads(text)
    assert obj["type"] == "custom"
    return obj["event"], obj["data"]


def data_url(audio: bytes, mime: str = "audio/mpeg") -> str:
    return f"data:{mime};base64," + base64.b64encode(audio).decode()


@pytest.fixture
def handler(tmp_path):
    return Handler(Index(Store(tmp_path / "cache")), max_file_size=1 << 20)


def upload(handler: Handler, key: str, audio: bytes, mime: str = "audio/mpeg", meta: dict | None = None,
           url: str | None = None) -> tuple[str, dict]:
    """The whole upload path the server runs: decode the message, check, decode base64, store."""
    raw = message(protocol.UPLOAD_AUDIO, cacheKey=key, mimeType=mime, data=url or data_url(audio, mime),
                  duration=99, metadata=meta or {})
    try:
        event, data = protocol.decode(raw.encode())
        key, mime, b64, meta = handler.parse_upload(data)
        *_, staged = handler.decode_steps(key, b64)
        return reply(handler.store_upload(key, mime, staged, meta))
    except BadMessage as exc:
        return reply(exc.reply())


def test_check_available(handler):
    assert reply(handler.handle(*protocol.decode(message(protocol.CHECK_AVAILABLE)))) == (protocol.AVAILABLE, {"server": "narrator serve", "version": narrator_cli.__version__})


def test_check_audio_miss_then_hit_after_upload(handler):
    check = protocol.decode(message(protocol.CHECK_AUDIO, cacheKey="5f5ac131"))
    assert reply(handler.handle(*check)) == (protocol.AUDIO_NOT_FOUND, {"cacheKey": "5f5ac131"})
    event, data = upload(handler, "5f5ac131", make_mp3(2), meta={"text": "Hello world", "voiceId": "v"})
    assert event == protocol.UPLOAD_SUCCESS
    assert data["filePath"] == "/__narrator-audio/5f5ac131.mp3" and data["size"] == len(make_mp3(2))
    assert abs(data["duration"] - 2.0) < 0.05
    event, data = reply(handler.handle(*check))
    assert event == protocol.AUDIO_EXISTS
    assert data["filePath"] == "/__narrator-audio/5f5ac131.mp3" and abs(data["duration"] - 2.0) < 0.05
    assert data["metadata"]["text"] == "Hello world" and data["metadata"]["fileName"] == "5f5ac131.mp3"


@pytest.mark.parametrize(("mime", "make", "ext"), [("audio/wav", make_wav, "wav"), ("audio/ogg", make_ogg_opus, "ogg")])
def test_extension_comes_from_metadata(handler, mime, make, ext):
    assert upload(handler, "0000abcd", make(1), mime)[0] == protocol.UPLOAD_SUCCESS
    event, data = reply(handler.check_audio({"cacheKey": "0000abcd"}))
    assert event == protocol.AUDIO_EXISTS and data["filePath"] == f"/__narrator-audio/0000abcd.{ext}"


def test_server_measures_duration_and_owns_its_fields(handler):
    meta = {"duration": 1234, "fileSize": 1, "fileName": "../../x", "cacheKey": "ffffffff", "mimeType": "text/html",
            "createdAt": "1970", "text": "kept", "custom": [1, 2]}
    event, data = upload(handler, "0000abcd", make_wav(1.5), "audio/wav", meta)
    assert event == protocol.UPLOAD_SUCCESS and data["duration"] == 1.5
    stored = handler.index.store.get("0000abcd").meta
    assert stored["fileName"] == "0000abcd.wav" and stored["cacheKey"] == "0000abcd"
    assert stored["mimeType"] == "audio/wav" and stored["duration"] == 1.5 and stored["createdAt"] != "1970"
    assert stored["fileSize"] == len(make_wav(1.5)) and stored["text"] == "kept" and stored["custom"] == [1, 2]


@pytest.mark.parametrize(("change", "expect"), [
    ({"cacheKey": "ABCDEF12"}, "cacheKey"),
    ({"cacheKey": "../../etc"}, "cacheKey"),
    ({"cacheKey": 12345678}, "cacheKey"),
    ({"mimeType": "text/html"}, "not allowed"),
    ({"mimeType": "audio/webm"}, "not allowed"),
    ({"data": "not a data url"}, "data URL"),
    ({"data": "data:audio/mpeg,AAAA"}, "data URL"),
    ({"data": "data:audio/mpeg;base64,@@@@"}, "base64"),
    ({"data": "data:audio/mpeg;base64,AAA"}, "base64"),
    ({"data": "data:audio/mpeg;base64,é"}, "data URL"),
    ({"data": 5}, "data URL"),
    ({"data": "data:audio/mpeg;base64,"}, "empty"),
    ({"data": "data:audio/mpeg;base64," + base64.b64encode(b"\xff\xfb" + os.urandom(3000)).decode()}, "not valid"),
    ({"data": data_url(bytes((1 << 20) + 1))}, "larger than"),
    ({"metadata": [1]}, "metadata"),
])
def test_bad_uploads_are_refused_and_write_nothing(handler, change, expect):
    data = {"cacheKey": "0000abcd", "mimeType": "audio/mpeg", "data": data_url(make_mp3(1)), "metadata": {}, **change}
    try:
        event, payload = protocol.decode(message(protocol.UPLOAD_AUDIO, **data))
        key, mime, b64, meta = handler.parse_upload(payload)
        *_, staged = handler.decode_steps(key, b64)
        handler.store_upload(key, mime, staged, meta)
    except BadMessage as exc:
        event, payload = reply(exc.reply())
    else:
        pytest.fail("accepted")
    assert event == protocol.UPLOAD_ERROR and expect in payload["error"]
    if isinstance(data["cacheKey"], str) and len(data["cacheKey"]) == 8:
        assert payload["cacheKey"] == data["cacheKey"]
    root = handler.index.store.root
    assert not root.exists() or list(root.iterdir()) == []


def test_data_url_mime_is_not_trusted_but_declared_type_is_checked(handler):
    url = "data:application/octet-stream;base64," + base64.b64encode(make_mp3(1)).decode()
    assert upload(handler, "0000abcd", b"", url=url)[0] == protocol.UPLOAD_SUCCESS


@pytest.mark.parametrize("raw", ["{", "[]", '"x"', '{"type":"connected"}', '{"type":"custom"}',
                                 '{"type":"custom","event":"narrator:check-audio","data":[]}', "[" * 100000])
def test_unreadable_messages_get_an_error_reply(raw):
    with pytest.raises(BadMessage) as info:
        protocol.decode(raw)
    event, data = reply(info.value.reply())
    assert event == protocol.ERROR and data["error"]


def test_unknown_event_and_bad_check_key_answer_with_the_key(handler):
    with pytest.raises(BadMessage) as info:
        handler.handle("narrator:launch", {"cacheKey": "0000abcd"})
    assert reply(info.value.reply()) == (protocol.ERROR, {"error": "unknown event 'narrator:launch'",
                                                          "cacheKey": "0000abcd"})
    with pytest.raises(BadMessage):
        handler.handle(protocol.CHECK_AUDIO, {"cacheKey": "zzzzzzzz"})


def test_large_message_is_spliced_not_parsed(handler):
    audio = make_mp3(90)  # > 1 MiB of base64
    url = data_url(audio)
    raw = message(protocol.UPLOAD_AUDIO, cacheKey="0000abcd", mimeType="audio/mpeg", data=url,
                  metadata={"text": 'quote " and \\ backslash', "n": 1}).encode()
    assert len(raw) > protocol.SPLICE_OVER
    event, data = protocol.decode(raw)
    assert event == protocol.UPLOAD_AUDIO and isinstance(data["data"], memoryview)
    assert bytes(data["data"]) == url.encode() and data["metadata"]["text"] == 'quote " and \\ backslash'
    handler.max_file_size = 2 << 20
    assert upload(handler, "0000abcd", audio)[0] == protocol.UPLOAD_SUCCESS
    assert handler.index.store.read_audio(handler.index.get("0000abcd")) == audio


def test_large_message_with_data_url_elsewhere_falls_back(handler):
    url = data_url(make_mp3(90))
    raw = json.dumps({"type": "custom", "event": protocol.UPLOAD_AUDIO,
                      "data": {"metadata": {"note": "data:x"}, "cacheKey": "0000abcd", "data": url}}).encode()
    event, data = protocol.decode(raw)
    assert data["data"] == url and data["metadata"]["note"] == "data:x"
    with pytest.raises(BadMessage):
        protocol.decode(raw[:-1])


def test_index_follows_other_writers_and_deletions(tmp_path):
    store = Store(tmp_path)
    index = Index(store)
    handler = Handler(index)
    assert reply(handler.check_audio({"cacheKey": "0000abcd"}))[0] == protocol.AUDIO_NOT_FOUND
    entry = Store(tmp_path).put("0000abcd", make_wav(1), "audio/wav", 1.0)  # another process
    assert reply(handler.check_audio({"cacheKey": "0000abcd"}))[0] == protocol.AUDIO_EXISTS
    entry.path.unlink()
    assert reply(handler.check_audio({"cacheKey": "0000abcd"}))[0] == protocol.AUDIO_NOT_FOUND


def test_eviction_removes_least_recently_used(tmp_path):
    store = Store(tmp_path)
    for i, key in enumerate(["0000000a", "0000000b", "0000000c"]):
        entry = store.put(key, make_wav(1), "audio/wav", 1.0)
        os.utime(entry.path, (1000 + i, 1000 + i))
    index = Index(store)
    handler = Handler(index)
    handler.check_audio({"cacheKey": "0000000a"})  # a hit is a use: now the newest
    size = index.entries["0000000a"].disk_size  # audio and metadata, as stats and cleanup count
    evicted = handler.evict(2 * size)
    assert [e.key for e in evicted] == ["0000000b"]
    assert sorted(e.key for e in store.scan().entries) == ["0000000a", "0000000c"]
    assert handler.evict(None) == [] and handler.evict(10 * size) == []


# --- streamed decode of an upload that is still arriving ---------------------------------------
def upload_raw(audio: bytes, before: dict | None = None) -> bytes:
    fields = {**(before or {}), "cacheKey": "0000abcd", "mimeType": "audio/mpeg", "data": data_url(audio)}
    return json.dumps({"type": "custom", "event": protocol.UPLOAD_AUDIO, "data": fields}).encode()


def stream_in(handler: Handler, raw: bytes, piece: int) -> tuple[bytearray, protocol.UploadStream]:
    """Feed ``raw`` into a growing buffer ``piece`` bytes at a time, stepping a stream after each."""
    buf = bytearray()
    stream = handler.upload_stream(buf)
    for start in range(0, len(raw), piece):
        buf += raw[start:start + piece]
        stream.step()
    return buf, stream


def staged_files(handler: Handler) -> list[str]:
    root = handler.index.store.root
    return sorted(p.name for p in root.glob(".*")) if root.exists() else []


def finish(handler: Handler, buf: bytearray, stream: protocol.UploadStream):
    event, data, url_at = protocol.decode_located(buf)
    key, mime, b64, meta = handler.parse_upload(data)
    head = stream.take(buf, url_at, len(b64))
    chars = head and head.chars
    *_, staged = handler.decode_steps(key, b64, head)
    audio = staged.path.read_bytes()
    staged.discard()
    return chars, audio


@pytest.mark.parametrize("piece", [300_001, 1 << 20, 5 << 20])
def test_streamed_decode_gives_the_same_audio(handler, piece):
    handler.max_file_size = 4 << 20
    audio = make_mp3(150)  # ~2.4 MB: ~3.2 MB of base64
    buf, stream = stream_in(handler, upload_raw(audio), piece)
    chars, out = finish(handler, buf, stream)
    assert chars and out == audio
    assert stream.buf is None and stream.staged is None  # taken: it holds nothing any more
    assert staged_files(handler) == []


def test_stream_reaching_the_closing_quote_leaves_nothing_to_decode(handler):
    handler.max_file_size = 4 << 20
    audio = make_mp3(100)
    raw = upload_raw(audio)
    buf = bytearray(raw)
    stream = handler.upload_stream(buf)
    while not stream.done:
        stream.step(budget=1 << 20)
    chars, out = finish(handler, buf, stream)
    assert chars == len(base64.b64encode(audio)) and out == audio


@pytest.mark.parametrize("bad", [b"!", b"="])
def test_invalid_base64_in_the_middle_of_a_stream_is_refused(handler, bad):
    handler.max_file_size = 4 << 20
    raw = bytearray(upload_raw(make_mp3(150)))
    raw[len(raw) // 2] = bad[0]
    buf, stream = stream_in(handler, bytes(raw), 400_000)
    assert stream.failed
    event, data, url_at = protocol.decode_located(buf)
    key, mime, b64, meta = handler.parse_upload(data)
    assert stream.take(buf, url_at, len(b64)) is None
    with pytest.raises(BadMessage, match="invalid base64"):
        list(handler.decode_steps(key, b64))
    assert handler.index.get("0000abcd") is None
    assert staged_files(handler) == []


def test_backslash_in_the_base64_stops_the_stream(handler):
    handler.max_file_size = 4 << 20
    raw = bytearray(upload_raw(make_mp3(150)))
    raw[len(raw) // 2:len(raw) // 2 + 2] = b"\\/"  # JSON's escaped slash: only json.loads may read it
    _, stream = stream_in(handler, bytes(raw), 400_000)
    assert stream.failed and stream.staged is None and staged_files(handler) == []


def test_data_url_in_an_unexpected_place_is_not_taken_from_the_stream(handler):
    handler.max_file_size = 4 << 20
    audio = make_mp3(150)
    decoy = {"metadata": {"note": "data:text/plain;base64,QUFB"}}  # the first "data: is not the upload
    buf, stream = stream_in(handler, upload_raw(audio, decoy), 500_000)
    chars, out = finish(handler, buf, stream)
    assert chars is None and out == audio  # the whole thing decoded the normal way
    assert staged_files(handler) == []


def test_stream_of_another_message_is_not_taken(handler):
    handler.max_file_size = 4 << 20
    audio = make_mp3(150)
    buf, stream = stream_in(handler, upload_raw(audio), 500_000)
    other = bytearray(buf)
    event, data, url_at = protocol.decode_located(other)
    key, mime, b64, meta = handler.parse_upload(data)
    assert stream.take(other, url_at, len(b64)) is None
    assert staged_files(handler) == []  # what it had staged is gone


def test_stream_gives_up_when_the_data_url_starts_late_or_is_no_base64(handler):
    handler.max_file_size = 4 << 20
    late = upload_raw(make_mp3(150), {"metadata": {"text": "x" * protocol.STREAM_FIND}})
    _, stream = stream_in(handler, late, 500_000)
    assert stream.failed and stream.staged is None
    plain = json.dumps({"type": "custom", "event": protocol.UPLOAD_AUDIO,
                        "data": {"data": "data:audio/mpeg," + "A" * (2 << 20)}}).encode()
    _, stream = stream_in(handler, plain, 500_000)
    assert stream.failed


def test_stream_stops_at_the_size_limit(handler):
    handler.max_file_size = 1 << 20
    _, stream = stream_in(handler, upload_raw(make_mp3(150)), 300_000)
    assert stream.failed and stream.staged is None and staged_files(handler) == []


def test_padding_at_a_chunk_boundary_is_invalid(handler, monkeypatch):
    monkeypatch.setattr(protocol, "B64_CHUNK", 8)
    b64 = memoryview(b"QUFBQQ==QUFBQUFB")  # valid chunk by chunk, not as a whole
    with pytest.raises(BadMessage, match="invalid base64"):
        list(handler.decode_steps("0000abcd", b64))
    staged = list(handler.decode_steps("0000abcd", memoryview(b"QUFBQUFBQQ==")))[-1]
    assert staged.path.read_bytes() == b"AAAAAAA"
    staged.discard()
    assert staged_files(handler) == []


def test_decode_located_reports_where_the_spliced_url_starts():
    audio = make_mp3(90)
    raw = upload_raw(audio)
    event, data, url_at = protocol.decode_located(raw)
    assert url_at == raw.index(b'"data:') + 1 and bytes(data["data"]) == data_url(audio).encode()
    assert protocol.decode_located(message(protocol.CHECK_AVAILABLE))[2] is None


@pytest.mark.parametrize("raw", [
    b'{"type":"custom","event":"narrator:check-audio","data":{"cacheKey":"5f5ac131"}}',  # every client's spelling
    b'{"type": "custom", "event": "narrator:check-audio", "data": {"cacheKey": "5f5ac131"}}',
    b'{"type":"custom","event":"narrator:check-audio","data":{"cacheKey":"5F5AC131"}}',  # not a key
    b'{"type":"custom","event":"narrator:check-audio","data":{"cacheKey":"5f5ac13\\u0031"}}',  # escaped
    b'{"type":"custom","event":"narrator:check-audio","data":{"cacheKey":"5f5ac131"}}}',
    b'{"type":"custom","event":"narrator:check-audio","data":{"cacheKey":"5f5ac131"} }',
])
def test_check_messages_read_without_json_decode_exactly_as_json_does(handler, raw):
    try:
        expected = protocol._custom(json.loads(raw)) + (None,)
    except ValueError:
        expected = "invalid"
    try:
        got = protocol.decode_located(raw)
    except BadMessage:
        got = "invalid"
    assert got == expected


def test_hot_path_spellings_agree_with_encode():
    key = "5f5ac131"
    assert protocol.check_message(key) == protocol.encode(protocol.CHECK_AUDIO, {"cacheKey": key})
    assert protocol.decode_located(protocol.check_message(key).encode()) == (protocol.CHECK_AUDIO, {"cacheKey": key}, None)
    for event in (protocol.AUDIO_EXISTS, protocol.AUDIO_NOT_FOUND, protocol.UPLOAD_SUCCESS, protocol.UPLOAD_ERROR):
        m = protocol.REPLY_HEAD.match(protocol.encode(event, {"cacheKey": key, "filePath": "/x"}).encode())
        assert m is not None and m.groups() == (event.encode(), key.encode())
