"""`narrator serve` as a user meets it: its options, binding before it deletes anything, stopping on
SIGINT like on SIGTERM, its plain log lines, and the LRU order that every use moves."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import serve_process
from audio_fixtures import make_wav
from test_server import client, get, recv, running, send, upload_msg
from typer.testing import CliRunner
from unprivileged import as_user
from websockets.exceptions import InvalidStatus

from narrator_cli import protocol
from narrator_cli import server as server_module
from narrator_cli.cli import app
from narrator_cli.protocol import Handler, Index
from narrator_cli.server import Log
from narrator_cli.store import Store

CLI = serve_process.CLI
# 127.0.0.1 taken for a public address, so that `serve` generates a token without listening beyond loopback
LOOKS_PUBLIC = [sys.executable, "-c", ("import narrator_cli.server as s; s.is_loopback = lambda host: False; "
                                       "from narrator_cli.cli import main; main()")]
STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ")


def old_entry(store: Store, key: str, days: float = 400) -> None:
    entry = store.put(key, make_wav(1), "audio/wav", 1.0)
    os.utime(entry.path, (time.time() - days * 86400,) * 2)


def keys(store: Store) -> list[str]:
    return sorted(e.key for e in store.scan().entries)


def taken_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> str:
    """Its remaining stderr, once it has stopped with exit 0."""
    proc.send_signal(sig)
    try:
        assert proc.wait(15) == 0
    finally:
        proc.kill()
    return proc.stderr.read()


# --- bind first, then clean up; the token once bound ---------------------------------------------------
def test_a_serve_that_cannot_bind_deletes_nothing(tmp_path):
    store = Store(tmp_path / "cache")
    old_entry(store, "0000000a")
    with taken_port() as taken:
        port = taken.getsockname()[1]
        r = subprocess.run([*CLI, "serve", "--port", str(port), "--audio-path", "cache"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=30, check=False)
    assert keys(store) == ["0000000a"]  # unused for 400 days, and still there: the server never listened
    assert r.returncode == 2
    assert r.stderr.splitlines() == [(f"narrator: error: cannot serve on 127.0.0.1:{port}: address already in use "
                                      "(another server? choose another port)")]


def test_a_generated_token_is_shown_once_bound_and_never_for_a_failed_bind(tmp_path):
    with taken_port() as taken:
        r = subprocess.run([*LOOKS_PUBLIC, "serve", "--port", str(taken.getsockname()[1])], cwd=tmp_path,
                           capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "token" not in r.stderr
    proc = subprocess.Popen([*LOOKS_PUBLIC, "serve", "--port", "0", "--json-log"], cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stderr.readline() for _ in range(3)]  # the start-up cleanup, the token, listening
        assert lines[1].startswith("narrator: token for this server") and json.loads(lines[2])["event"] == "listening"
        token, url = lines[1].split()[-1], json.loads(lines[2])["url"]
        with pytest.raises(InvalidStatus), client(url.replace("http", "ws") + "/"):
            pass
        with client(url.replace("http", "ws") + f"/?token={token}") as ws:
            send(ws, protocol.CHECK_AVAILABLE)
            assert recv(ws)[0] == protocol.AVAILABLE
    finally:
        stop(proc)


def test_a_port_in_the_environment_or_config_out_of_range_is_one_line(tmp_path):
    (tmp_path / "narrator.toml").write_text("[serve]\nport = 70000\n")
    r = subprocess.run([*CLI, "serve"], cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [(f"narrator: error: {tmp_path / 'narrator.toml'}: 'serve.port' must be a whole "
                                      "number from 0 to 65535, got 70000")]


# --- sizes and numbers: one line and exit 2, wherever they come from ------------------------------------
runner = CliRunner()


@pytest.fixture
def never_serves(monkeypatch):
    """In-process ``serve`` calls that must stop at their options: starting a server instead fails the test."""
    def serve(*args, **kwargs):
        raise AssertionError("the server was started")

    monkeypatch.setattr(server_module, "serve", serve)


@pytest.mark.parametrize("value", ["inf", "nan", "1e308", "-inf", "0", "2048.5"])
@pytest.mark.parametrize("source", ["option", "environment", "narrator.toml"])
def test_an_impossible_max_file_size_is_one_line_naming_it(tmp_path, never_serves, value, source):
    args, env = ["serve", "--audio-path", "cache"], {}
    if source == "option":
        args += ["--max-file-size", value]
    elif source == "environment":
        env["NARRATOR_SERVE_MAX_FILE_SIZE"] = value
    else:
        (tmp_path / "narrator.toml").write_text(f"[serve]\nmax_file_size = {value}\n")
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 2, result.exception
    lines = result.stderr.splitlines()
    shown = f"{float(value):g}"
    where = {"option": "--max-file-size", "environment": "environment variable NARRATOR_SERVE_MAX_FILE_SIZE",
             "narrator.toml": f"{tmp_path / 'narrator.toml'}: 'serve.max_file_size'"}[source]
    assert lines == [(f"narrator: error: {where} must be a number of MB from 0.001 to 2048 (an upload is held in "
                      f"memory whole), got {shown}")]
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("args", [["--port", "65536"], ["--port", "-1"], ["--idle-timeout", "nan"],
                                  ["--idle-timeout", "0"]])
def test_out_of_range_port_and_idle_timeout_are_one_line(tmp_path, never_serves, args):
    result = runner.invoke(app, ["serve", *args])
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(f"narrator: error: {args[0]} must be")


def test_the_largest_allowed_file_size_serves(tmp_path):
    proc, url = serve_process.start_serve("--max-file-size", "2048", "--audio-path", "cache", cwd=tmp_path)
    assert json.loads(get(serve_process.port_of(url), "/__narrator-health")[2])["status"] == "ok"
    stop(proc)


# --- SIGINT is SIGTERM ----------------------------------------------------------------------------------
def wait_for_lock_waiter(pid: int) -> None:
    """Until process ``pid`` waits for a flock (Linux lists waiters in /proc/locks with ``->``)."""
    if not Path("/proc/locks").exists():
        pytest.skip("needs /proc/locks")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if any(" -> " in line and f" {pid} " in line for line in Path("/proc/locks").read_text().splitlines()):
            return
        time.sleep(0.01)
    raise AssertionError("serve never reached the start-up cleanup")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_during_the_start_up_cleanup_is_a_normal_stop(tmp_path, sig):
    store = Store(tmp_path / "cache")
    for key in ("0000000a", "0000000b"):
        old_entry(store, key)
    folder = os.open(store.root, os.O_RDONLY)
    fcntl.flock(folder, fcntl.LOCK_EX)  # the start-up cleanup waits for this lock: the signal comes during it
    proc = subprocess.Popen([*CLI, "serve", "--port", "0", "--json-log", "--audio-path", "cache"], cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for_lock_waiter(proc.pid)
        proc.send_signal(sig)
    finally:
        os.close(folder)
    try:
        assert proc.wait(15) == 0
    finally:
        proc.kill()
    err = proc.stderr.read()
    assert "Traceback" not in err and "interrupted" not in err
    assert [json.loads(line)["event"] for line in err.splitlines()] == ["cleanup", "listening", "stopped"]
    assert keys(store) == [] and store.scan().broken == []  # the cleanup it was in finished whole


# --- plain log lines carry the time ----------------------------------------------------------------------
def test_plain_log_lines_start_with_an_iso_utc_timestamp(tmp_path):
    before = time.time()
    proc = subprocess.Popen([*CLI, "serve", "--port", "0", "--audio-path", "cache"], cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True)
    lines = [proc.stderr.readline() for _ in range(2)]  # the start-up cleanup, listening
    lines += stop(proc).splitlines()
    after = time.time()
    assert [line.split()[1] for line in lines] == ["cleanup", "listening", "stopped"]
    for line in lines:
        m = STAMP.match(line)
        assert m, line
        when = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
        assert before - 1 <= when <= after + 1


def test_log_timestamp_is_utc_with_milliseconds():
    log = Log(quiet=False, as_json=False)
    assert log.timestamp(0.1234) == "1970-01-01T00:00:00.123Z"
    assert log.timestamp(1_796_025_785.9996) == "2026-11-30T08:03:05.999Z"
    assert log.timestamp(1_796_025_786.0) == "2026-11-30T08:03:06.000Z"


# --- the LRU order follows every use -----------------------------------------------------------------------
@pytest.mark.parametrize("use", ["check-audio", "GET", "HEAD", "304"])
def test_a_use_right_after_an_upload_keeps_an_entry_from_eviction(tmp_path, use):
    size = len(make_wav(1))
    with running(tmp_path, max_cache_size=int(2.5 * size)) as srv:
        with client(srv.url) as ws:
            for key in ("0000000a", "0000000b"):
                send(ws, protocol.UPLOAD_AUDIO, **upload_msg(key, make_wav(1), "audio/wav"))
                assert recv(ws)[0] == protocol.UPLOAD_SUCCESS
            if use == "check-audio":
                send(ws, protocol.CHECK_AUDIO, cacheKey="0000000a")
                assert recv(ws)[0] == protocol.AUDIO_EXISTS
            else:
                etag = server_module._etag(srv.store.get("0000000a"))  # what the client's copy would carry
                extra = f"If-None-Match: {etag}\r\n" if use == "304" else ""
                status = get(srv.port, "/__narrator-audio/0000000a.wav", extra, method=use.replace("304", "GET"))[0]
                assert status == {"GET": 200, "HEAD": 200, "304": 304}[use]
            send(ws, protocol.UPLOAD_AUDIO, **upload_msg("0000000c", make_wav(1), "audio/wav"))
            assert recv(ws)[0] == protocol.UPLOAD_SUCCESS
        assert keys(srv.store) == ["0000000a", "0000000c"]  # b, never used, went; a, used seconds ago, stayed


def test_uses_move_the_order_in_memory_and_reach_the_disk_at_most_once_a_minute(tmp_path):
    store = Store(tmp_path)
    for key in ("0000000a", "0000000b"):
        store.put(key, make_wav(1), "audio/wav", 1.0)
    index = Index(store)
    handler = Handler(index)
    on_disk = {e.key: e.path.stat().st_mtime_ns for e in store.scan().entries}
    for key in ("0000000b", "0000000a", "0000000b", "0000000a"):
        handler.check_audio({"cacheKey": key})
        assert [e.key for e in index.lru()][-1] == key
    assert {e.key: e.path.stat().st_mtime_ns for e in store.scan().entries} == on_disk  # fresh entries: no write
    index.flush()  # what shutdown and the cleanup endpoint do: the disk catches up, in the same order
    assert [e.key for e in sorted(store.scan().entries, key=lambda e: e.mtime)] == ["0000000b", "0000000a"]


def test_the_cleanup_endpoint_follows_uses_only_memory_knew(tmp_path):
    size = len(make_wav(1))
    with running(tmp_path, max_cache_size=int(2.5 * size)) as srv:
        for key in ("0000000a", "0000000b"):
            srv.store.put(key, make_wav(1), "audio/wav", 1.0)
        with client(srv.url) as ws:
            send(ws, protocol.CHECK_AUDIO, cacheKey="0000000a")
            assert recv(ws)[0] == protocol.AUDIO_EXISTS
        srv.store.put("0000000c", make_wav(1), "audio/wav", 1.0)  # another writer: no eviction yet
        assert json.loads(get(srv.port, "/__narrator-cleanup")[2])["evicted"] == ["0000000b"]
        assert keys(srv.store) == ["0000000a", "0000000c"]


# --- an upload's client always hears back ----------------------------------------------------------------
def test_a_failing_eviction_leaves_the_stored_upload_a_success(tmp_path, monkeypatch):
    def fails(self, max_cache_size):  # fault injection: what a cache folder made unreadable mid-run raises
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Handler, "evict", fails)
    with running(tmp_path, max_cache_size=1) as srv, client(srv.url) as ws:
        send(ws, protocol.UPLOAD_AUDIO, **upload_msg("0000000a", make_wav(1), "audio/wav"))
        assert recv(ws)[0] == protocol.UPLOAD_SUCCESS
        assert keys(srv.store) == ["0000000a"]


def test_an_unexpected_failure_in_an_upload_still_gets_a_reply(tmp_path, monkeypatch):
    def fails(self, *args):  # fault injection: a bug in the commit
        raise RuntimeError("boom")

    monkeypatch.setattr(Handler, "store_upload", fails)
    with running(tmp_path) as srv, client(srv.url) as ws:
        send(ws, protocol.UPLOAD_AUDIO, **upload_msg("0000000a", make_wav(1), "audio/wav"))
        assert recv(ws) == (protocol.UPLOAD_ERROR, {"cacheKey": "0000000a", "error": "server error"})
        send(ws, protocol.CHECK_AUDIO, cacheKey="0000000a")  # and the connection serves on
        assert recv(ws)[0] == protocol.AUDIO_NOT_FOUND


def test_a_cache_the_server_may_not_read_fails_that_request_not_the_connection(tmp_path):
    store = Store(tmp_path / "cache")
    store.put("0000000b", make_wav(1), "audio/wav", 1.0)
    proc = subprocess.Popen(as_user([*CLI, "serve", "--port", "0", "--json-log", "--audio-path", "cache"]),
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stderr.readline() for _ in range(2)]  # the start-up cleanup, listening
        url = json.loads(lines[1])["url"]
        store.put("0000000a", make_wav(1), "audio/wav", 1.0)  # written by someone else, for their eyes only
        store.meta_path("0000000a").chmod(0)
        with client(url.replace("http", "ws") + "/") as ws:
            send(ws, protocol.CHECK_AUDIO, cacheKey="0000000a")
            assert recv(ws) == (protocol.ERROR, {"cacheKey": "0000000a", "error": "the server cannot read its cache"})
            send(ws, protocol.CHECK_AUDIO, cacheKey="0000000b")
            assert recv(ws)[0] == protocol.AUDIO_EXISTS
        store.root.chmod(0o311)  # the folder can no longer be listed
        status, _, body = get(serve_process.port_of(url), "/__narrator-health")
        assert status == 503 and json.loads(body) == {"error": "the server cannot read its cache"}
    finally:
        store.root.chmod(0o755)
        err = stop(proc)
    logged = [json.loads(line) for line in err.splitlines()]
    assert [e["event"] for e in logged] == ["error", "hit", "error", "stopped"]
    assert str(store.root) in logged[2]["message"]


def test_open_hands_the_page_to_the_default_browser_once_listening(tmp_path):
    """``--open`` with $BROWSER (what Python's webbrowser honours) recording the URL it is given: the URL is the
    page, and it answers; with no browser at all, one line says where the page is."""
    opened = tmp_path / "opened.txt"
    recorder = tmp_path / "browser.py"
    recorder.write_text(f"import sys\nopen({str(opened)!r}, 'w').write(sys.argv[1])\n")
    env = {**os.environ, "BROWSER": f"{sys.executable} {recorder} %s"}
    proc = subprocess.Popen([*serve_process.CLI, "serve", "--port", "0", "--open", "--audio-path", "cache"],
                            cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stderr.readline() for _ in range(1)]
        while "on http://" not in lines[-1] and len(lines) < 5:
            lines.append(proc.stderr.readline())
        url = re.search(r"on (http://\S+) ", lines[-1]).group(1)
        deadline = time.monotonic() + 20
        while not opened.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert opened.read_text() == url + "/"
        status, headers, body = get(serve_process.port_of(url), "/")
        assert status == 200 and b"<title>narrator" in body
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    bare = {k: v for k, v in os.environ.items() if k not in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY")}
    bare["PATH"] = str(tmp_path / "nothing")  # no browser program to find
    proc = subprocess.Popen([sys.executable, "-c", "from narrator_cli.cli import main; main()", "serve", "--port",
                             "0", "--open", "--audio-path", "cache"], cwd=tmp_path, env=bare, stderr=subprocess.PIPE,
                            text=True)
    try:
        said = [proc.stderr.readline() for _ in range(2)]
        assert any(s.startswith("narrator: no browser to open here; the page is at http://127.0.0.1:") for s in said), said
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
