"""The team cache from the command line: the real `narrator serve` and the real CLI, two cache
folders acting as two team members, the fake ElevenLabs counting what gets paid for."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from audio_fixtures import make_mp3
from fake_elevenlabs import FakeElevenLabs
from narrator_cli.store import Store
from serve_process import CLI, start_serve



class Serve:
    def __init__(self, root: Path, *args: str) -> None:
        self.cache = root / "server-cache"
        self.proc, self.url = start_serve("--audio-path", str(self.cache), *args, cwd=root, drain=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)


@pytest.fixture
def serve(tmp_path):
    servers: list[Serve] = []

    def start(*args: str) -> Serve:
        servers.append(Serve(tmp_path, *args))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def member(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir(exist_ok=True)
    return folder


def run(cwd: Path, *args: str, env: dict | None = None, timeout: float = 60, stdin: str | None = None):
    full = {k: v for k, v in os.environ.items() if not k.startswith("NARRATOR_") and k != "ELEVENLABS_API_KEY"}
    full["XDG_CONFIG_HOME"] = str(cwd / "xdg")  # no user config
    return subprocess.run([*CLI, *args], cwd=cwd, env={**full, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, input=stdin)


def eleven(fake: FakeElevenLabs, server: str | None = None) -> dict:
    env = {"NARRATOR_PROVIDER": "elevenlabs", "NARRATOR_VOICE": "TestVoiceId000000abc", "ELEVENLABS_API_KEY": fake.api_key,
           "NARRATOR_ELEVENLABS_BASE_URL": fake.url}
    return {**env, "NARRATOR_SERVER": server} if server else env


def rows(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


LINES = ["The first line of the script.", "A second line.", "And the third."]


def test_one_member_pays_the_other_gets_server_hits(tmp_path, serve):
    srv = serve()
    alice, bob = member(tmp_path, "alice"), member(tmp_path, "bob")
    with FakeElevenLabs(scripted=("POST",)) as fake:
        r = run(alice, "speak", *LINES, "--json", env=eleven(fake, srv.url))
        assert r.returncode == 0, r.stderr
        assert [row["status"] for row in rows(r)] == ["generated"] * 3 and len(fake.posts()) == 3
        r = run(bob, "speak", *LINES, "--json", env=eleven(fake, srv.url))
        assert r.returncode == 0, r.stderr
        assert [row["status"] for row in rows(r)] == ["server"] * 3
        assert len(fake.posts()) == 3  # bob never paid
        r = run(bob, "speak", *LINES, "--json", env=eleven(fake, srv.url))
        assert [row["status"] for row in rows(r)] == ["cached"] * 3
    a, b = Store(alice / "audio-cache"), Store(bob / "audio-cache")
    for row in rows(r):
        ea, eb = a.get(row["cacheKey"]), b.get(row["cacheKey"])
        assert a.read_audio(ea) == b.read_audio(eb) and eb.meta["text"] == row["text"]
        assert eb.meta["requestId"] == ea.meta["requestId"]  # the provider's metadata travels with the audio


def test_server_hit_needs_no_api_key(tmp_path, serve):
    srv = serve()
    with FakeElevenLabs(scripted=("POST",)) as fake:
        assert run(member(tmp_path, "a"), "speak", LINES[0], env=eleven(fake, srv.url)).returncode == 0
        env = eleven(fake, srv.url)
        del env["ELEVENLABS_API_KEY"]
        r = run(member(tmp_path, "b"), "speak", LINES[0], "--json", env=env)
        assert r.returncode == 0, r.stderr
        assert rows(r)[0]["status"] == "server"


def test_check_exit_codes_and_pipelined_keys(tmp_path, serve):
    srv = serve()
    alice = member(tmp_path, "alice")
    script = alice / "script.txt"
    script.write_text("\n".join(LINES) + "\n")
    env = {"NARRATOR_PROVIDER": "mock", "NARRATOR_SERVER": srv.url}
    r = run(alice, "check", "--file", "script.txt", "--json", env=env)
    assert r.returncode == 1 and [row["server"] for row in rows(r)] == [False] * 3
    assert run(alice, "speak", "--file", "script.txt", env=env).returncode == 0
    r = run(alice, "check", "--file", "script.txt", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert all(row["server"] and row["local"] for row in rows(r))
    keys = [row["cacheKey"] for row in rows(r)]
    r = run(member(tmp_path, "ci"), "check", *sum((["--key", k] for k in keys), []), "--json", env=env)
    assert r.returncode == 0 and [(row["local"], row["server"]) for row in rows(r)] == [(False, True)] * 3
    r = run(alice, "check", "A line nobody spoke", env=env)
    assert r.returncode == 1 and "server:NO" in r.stdout
    r = run(alice, "check", "--key", "NOTAKEY1", env=env)
    assert r.returncode == 2 and "invalid cache key 'NOTAKEY1'" in r.stderr
    r = run(alice, "check", "--file", "script.txt", "--no-server", env=env)
    assert r.returncode == 0 and "server" not in r.stdout


def test_upload_all_and_import_recorded_file(tmp_path, serve):
    srv = serve()
    alice = member(tmp_path, "alice")
    env = {"NARRATOR_PROVIDER": "mock"}
    assert run(alice, "speak", *LINES, env=env).returncode == 0  # no server yet: local only
    r = run(alice, "upload", "--all", "--json", env={**env, "NARRATOR_SERVER": srv.url})
    assert r.returncode == 0, r.stderr
    assert sorted(row["status"] for row in rows(r)) == ["uploaded"] * 3
    r = run(alice, "upload", "--all", "--json", env={**env, "NARRATOR_SERVER": srv.url})
    assert sorted(row["status"] for row in rows(r)) == ["present"] * 3
    local = Store(alice / "audio-cache")
    for e in local.scan().entries:
        assert Store(srv.cache).read_audio(Store(srv.cache).get(e.key)) == local.read_audio(e)

    recording = alice / "take-3.mp3"
    recording.write_bytes(make_mp3(2))
    r = run(alice, "upload", "take-3.mp3", "--text", "My own voice.", "--provider", "elevenlabs", "--voice", "me",
            "--model", "mic", env={"NARRATOR_SERVER": srv.url})  # keyed as that provider's lines are
    assert r.returncode == 0, r.stderr
    from narrator_cli.keys import cache_key

    key = cache_key("My own voice.", "me", "mic")
    assert local.get(key).meta["provider"] == "recorded" and Store(srv.cache).get(key) is not None
    r = run(member(tmp_path, "bob"), "speak", "My own voice.", "--provider", "elevenlabs", "--voice", "me",
            "--model", "mic", "--json", env={"NARRATOR_SERVER": srv.url})  # a server hit needs no API key
    assert rows(r)[0]["status"] == "server" and rows(r)[0]["cacheKey"] == key

    (alice / "notes.txt").write_text("not audio")
    r = run(alice, "upload", "notes.txt", "--text", "x", env={"NARRATOR_SERVER": srv.url})
    assert r.returncode == 2 and "unknown audio type" in r.stderr
    (alice / "fake.wav").write_bytes(make_mp3(1))
    r = run(alice, "upload", "fake.wav", "--text", "y", env={"NARRATOR_SERVER": srv.url})
    assert r.returncode == 2 and "not valid audio/wav" in r.stderr
    assert run(alice, "upload", "0000zzzz", env={"NARRATOR_SERVER": srv.url}).returncode == 2
    r = run(alice, "upload", "--all")
    assert r.returncode == 2 and "no server" in r.stderr


def test_corrupted_download_is_refused_and_nothing_stored(tmp_path, serve):
    srv = serve()
    env = {"NARRATOR_PROVIDER": "mock", "NARRATOR_SERVER": srv.url}
    alice, bob = member(tmp_path, "alice"), member(tmp_path, "bob")
    r = run(alice, "speak", LINES[0], "--json", env=env)
    key = rows(r)[0]["cacheKey"]
    served = Store(srv.cache).get(key)
    data = bytearray(served.path.read_bytes())
    data[-100] ^= 0xFF  # same size, different bytes: only the content hash can tell
    served.path.write_bytes(bytes(data))
    r = run(bob, "speak", LINES[0], "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert rows(r)[0]["status"] == "generated" and "content hash" in r.stderr
    entry = Store(bob / "audio-cache").get(key)
    assert hashlib.sha256(entry.path.read_bytes()).hexdigest() == entry.meta["sha256"] != hashlib.sha256(data).hexdigest()


def test_wrong_token_is_refused_with_a_clear_message(tmp_path, serve):
    srv = serve("--token", "right-token")
    folder = member(tmp_path, "a")
    r = run(folder, "check", "--key", "0000abcd", env={"NARRATOR_SERVER": srv.url, "NARRATOR_TOKEN": "wrong-token"})
    assert r.returncode == 2 and "refused" in r.stderr and "token" in r.stderr and "wrong-token" not in r.stderr
    r = run(folder, "check", "--key", "0000abcd", env={"NARRATOR_SERVER": srv.url, "NARRATOR_TOKEN": "right-token"})
    assert r.returncode == 1 and "server:NO" in r.stdout
    r = run(folder, "speak", "hello", "--provider", "mock", "--json",
            env={"NARRATOR_SERVER": srv.url, "NARRATOR_TOKEN": "wrong-token"})
    assert r.returncode == 0 and rows(r)[0]["status"] == "generated"
    assert r.stderr.count("team cache skipped") == 1
    r = run(folder, "stats", "--server", srv.url, "--json", env={"NARRATOR_TOKEN": "right-token"})
    assert r.returncode == 0 and json.loads(r.stdout)["entries"] == 0
    assert run(folder, "cleanup", "--server", srv.url, env={"NARRATOR_TOKEN": "nope"}).returncode == 2
    r = run(folder, "cleanup", "--server", srv.url, "--json", env={"NARRATOR_TOKEN": "right-token"})
    assert r.returncode == 0 and json.loads(r.stdout)["remainingEntries"] == 0


def test_server_killed_mid_batch(tmp_path, serve):
    srv = serve()
    folder = member(tmp_path, "a")
    lines = [f"Line number {i} of a long script." for i in range(40)]
    with FakeElevenLabs(scripted=("POST",), latency=0.1) as fake:
        proc = subprocess.Popen([*CLI, "speak", *lines, "--json", "--concurrency", "4"], cwd=folder,
                                env={**os.environ, **eleven(fake, srv.url), "XDG_CONFIG_HOME": str(folder / "xdg")},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while len(fake.posts()) < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
        srv.proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert [row["status"] for row in map(json.loads, out.splitlines())] == ["generated"] * 40
    assert err.count("team cache skipped") == 1
    store = Store(folder / "audio-cache")
    scan = store.scan()
    assert len(scan.entries) == 40 and scan.broken == [] and scan.temporary == []
    server_scan = Store(srv.cache).scan()
    assert server_scan.broken == []  # whatever the server stored before it died is whole


def test_unreachable_and_silent_servers(tmp_path):
    folder = member(tmp_path, "a")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    r = run(folder, "speak", "hello", "--provider", "mock", "--json", env={"NARRATOR_SERVER": f"http://127.0.0.1:{port}"})
    assert r.returncode == 0 and rows(r)[0]["status"] == "generated"
    assert f"no narrator server at http://127.0.0.1:{port}" in r.stderr
    r = run(folder, "check", "--key", "0000abcd", "--server", f"http://127.0.0.1:{port}")
    assert r.returncode == 2 and "no narrator server" in r.stderr and len(r.stderr.strip().splitlines()) == 1

    with socket.socket() as silent:  # accepts connections, never answers a byte
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        t0 = time.monotonic()
        r = run(folder, "check", "--key", "0000abcd", "--server", url)
        assert r.returncode == 2 and f"no narrator server at {url}" in r.stderr
        assert "connected, but no WebSocket handshake on '/'" in r.stderr  # a path Vite ignores looks like this
        assert time.monotonic() - t0 < 30
        r = run(folder, "speak", "hello again", "--provider", "mock", "--json", env={"NARRATOR_SERVER": url})
        assert r.returncode == 0 and rows(r)[0]["status"] == "generated"


def test_invalid_server_url(tmp_path):
    r = run(member(tmp_path, "a"), "check", "--key", "0000abcd", "--server", "ftp://example")
    assert r.returncode == 2 and "invalid server URL" in r.stderr


def test_a_vite_style_400_refusal_hints_at_the_token(tmp_path):
    with socket.socket() as listener:  # answers the upgrade the way Vite refuses a missing token
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def refuse() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")

        thread = threading.Thread(target=refuse, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        r = run(member(tmp_path, "a"), "check", "--key", "0000abcd", "--server", url)
        thread.join(10)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert f"no narrator server at {url}: refused" in r.stderr and "--token" in r.stderr
