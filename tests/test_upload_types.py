"""`narrator serve` stores uploads as what their bytes are, whatever type the client declared:
the editor's browser labels every upload audio/mpeg (a MiniMax line in WAV included)."""

import base64
import json
import signal

import pytest
import serve_process
from audio_fixtures import make_mp3, make_ogg_opus, make_wav
from websockets.sync.client import connect

from narrator_cli import protocol
from narrator_cli.protocol import Handler, Index
from narrator_cli.store import Store

KEY = "0badc0de"


@pytest.fixture
def serve(tmp_path):
    proc, url = serve_process.start_serve("--audio-path", "cache", cwd=tmp_path)
    try:
        yield url.replace("http://", "ws://") + "/", tmp_path / "cache", proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)


def stop(proc) -> list[dict]:
    """Stop the server; its JSON log lines."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    return [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]


def ask(url: str, *messages: dict) -> list[tuple[str, dict]]:
    """Send events on one real WebSocket connection; one reply each."""
    replies = []
    with connect(url, subprotocols=["vite-hmr"], max_size=None, open_timeout=5) as ws:
        assert json.loads(ws.recv(5)) == {"type": "connected"}
        for message in messages:
            ws.send(json.dumps({"type": "custom", **message}))
            obj = json.loads(ws.recv(10))
            replies.append((obj["event"], obj["data"]))
    return replies


def browser_upload(key: str, audio: bytes) -> dict:
    """What the editor's browser sends (AudioCache.ts): always audio/mpeg, metadata {generatedAt}."""
    return {"event": protocol.UPLOAD_AUDIO, "data": {
        "cacheKey": key, "mimeType": "audio/mpeg", "duration": 1, "metadata": {"generatedAt": 1},
        "data": "data:audio/mpeg;base64," + base64.b64encode(audio).decode()}}


def check(key: str) -> dict:
    return {"event": protocol.CHECK_AUDIO, "data": {"cacheKey": key}}


@pytest.mark.parametrize("audio, ext, mime", [(make_wav(1.0), "wav", "audio/wav"),
                                              (make_ogg_opus(1.0), "ogg", "audio/ogg")])
def test_bytes_of_another_allowed_type_are_stored_as_what_they_are_and_found_again(serve, audio, ext, mime):
    url, cache, _ = serve
    [(event, data)] = ask(url, browser_upload(KEY, audio))
    assert event == protocol.UPLOAD_SUCCESS, data
    assert data["filePath"] == f"/__narrator-audio/{KEY}.{ext}" and data["duration"] == pytest.approx(1.0, abs=0.05)
    assert sorted(p.name for p in cache.iterdir()) == sorted([f"{KEY}.{ext}", f"{KEY}.meta.json"])
    assert (cache / f"{KEY}.{ext}").read_bytes() == audio
    meta = json.loads((cache / f"{KEY}.meta.json").read_text())
    assert (meta["mimeType"], meta["fileName"], meta["uploadedAs"]) == (mime, f"{KEY}.{ext}", "audio/mpeg")
    [(event, data)] = ask(url, check(KEY))  # the editor's later check finds it
    assert event == protocol.AUDIO_EXISTS and data["filePath"].endswith(f"{KEY}.{ext}")


def test_a_wav_upload_replaces_an_mp3_of_the_same_key(serve):
    url, cache, _ = serve
    assert ask(url, browser_upload(KEY, make_mp3(1.0)))[0][0] == protocol.UPLOAD_SUCCESS
    assert ask(url, browser_upload(KEY, make_wav(2.0)))[0][0] == protocol.UPLOAD_SUCCESS
    assert sorted(p.name for p in cache.iterdir()) == [f"{KEY}.meta.json", f"{KEY}.wav"]


def test_matching_bytes_are_stored_as_before_without_a_note(serve):
    url, cache, _ = serve
    assert ask(url, browser_upload(KEY, make_mp3(1.0)))[0][0] == protocol.UPLOAD_SUCCESS
    meta = json.loads((cache / f"{KEY}.meta.json").read_text())
    assert meta["mimeType"] == "audio/mpeg" and "uploadedAs" not in meta


@pytest.mark.parametrize("junk", [b"RIFF\x00\x00\x00\x00WAVEjunk", b"OggS" + bytes(60), b"plain text, not audio",
                                  b"\xff\xfb" + bytes(30)])
def test_bytes_that_are_no_allowed_audio_are_still_refused(serve, junk):
    url, cache, _ = serve
    [(event, data)] = ask(url, browser_upload(KEY, junk))
    assert event == protocol.UPLOAD_ERROR and data["cacheKey"] == KEY
    assert not cache.exists() or not [p for p in cache.iterdir() if not p.name.startswith(".")]


def test_a_type_the_server_does_not_allow_is_refused_even_when_the_bytes_are_that_type(tmp_path):
    proc, url = serve_process.start_serve("--audio-path", "cache", "--allowed-mime-type", "audio/mpeg",
                                          cwd=tmp_path)
    try:
        [(event, data)] = ask(url.replace("http://", "ws://") + "/", browser_upload(KEY, make_wav(1.0)))
    finally:
        stop(proc)
    assert event == protocol.UPLOAD_ERROR and "audio/wav, which is not allowed" in data["error"]
    assert not (tmp_path / "cache" / f"{KEY}.wav").exists()


def test_the_mismatch_is_told_once_per_key_not_at_every_upload(tmp_path):
    """The handler of a real store, fed real bytes as the server feeds it (decode_steps, then store_upload)."""
    handler = Handler(Index(Store(tmp_path / "cache")))
    told: list[tuple[str, str]] = []
    handler.on_mismatch = lambda message, key: told.append((key, message))

    def upload(key: str, audio: bytes) -> None:
        b64 = memoryview(base64.b64encode(audio))
        *_, staged = handler.decode_steps(key, b64)
        handler.store_upload(key, "audio/mpeg", staged, {"generatedAt": 1})

    for _ in range(5):
        upload(KEY, make_wav(1.0))
    upload("0badc0df", make_wav(1.0))
    upload("0badc0e0", make_mp3(1.0))  # no mismatch
    assert [k for k, _ in told] == [KEY, "0badc0df"]
    assert told[0][1] == f"upload {KEY}: declared audio/mpeg, the bytes are audio/wav: stored as {KEY}.wav"


def test_the_server_logs_the_mismatch_once_per_key(serve):
    url, _, proc = serve
    ask(url, *[browser_upload(KEY, make_wav(1.0))] * 4, check(KEY))
    lines = [entry for entry in stop(proc) if "declared audio/mpeg" in entry["message"]]
    assert len(lines) == 1 and lines[0]["cacheKey"] == KEY
