"""The command line against a peer that answers like the real Motion Canvas narrator plugin under Vite
(tests/plugin_peer.py): relative filePaths served by Vite's static files, entries the browser wrote,
MP3-only checks, no health or cleanup endpoint; and Ctrl-C in the middle of `upload` and `check`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from audio_fixtures import make_mp3, make_wav
from fake_elevenlabs import FakeElevenLabs
from plugin_peer import PluginPeer
from serve_process import CLI, start_serve
from test_team import eleven, member, rows, run

from narrator_cli import client as client_module
from narrator_cli.audio import measure_duration
from narrator_cli.client import Client
from narrator_cli.keys import cache_key
from narrator_cli.providers import key_params
from narrator_cli.store import Store
from narrator_cli.team import UPLOADS_IN_FLIGHT

LINES = ["The plugin holds this line.", "And this one.", "A third, for good measure."]


@pytest.fixture
def peer(tmp_path):
    peers: list[PluginPeer] = []

    def start(**options) -> PluginPeer:
        root = tmp_path / f"vite-{len(peers)}"
        root.mkdir()
        peers.append(PluginPeer(root, **options).start())
        return peers[-1]

    yield start
    for p in peers:
        p.close()


def eleven_key(text: str) -> str:
    return cache_key(text, *key_params("elevenlabs", "TestVoiceId000000abc", None))


def mp3_entries(folder: Path, n: int, seconds: float = 0.5) -> list[str]:
    """``n`` MP3 entries in ``folder``'s local cache, as a provider would have left them."""
    store = Store(folder / "audio-cache")
    keys = []
    for i in range(n):
        text = f"Entry number {i}."
        audio = make_mp3(seconds)
        store.put(cache_key(text, "mock", "120"), audio, "audio/mpeg", measure_duration(audio, "audio/mpeg"),
                  {"text": text, "voiceId": "mock", "modelId": "120", "provider": "mock"})
        keys.append(cache_key(text, "mock", "120"))
    return keys


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# --- filePath: any same-origin absolute path, nothing else -----------------------------------
@pytest.mark.parametrize("path", ["/narrator-cache/5f5ac131.mp3", "/__narrator-audio/5f5ac131.wav", "/a/b/c.ogg",
                                  "/narrator-cache/5f5ac131.mp3?v=2", "/audio%20cache/5f5ac131.mp3"])
def test_same_origin_paths_are_usable(path):
    assert client_module.unsafe_file_path(path) is None


@pytest.mark.parametrize("path, why", [
    ("//evil/x.mp3", "another host"), ("http://127.0.0.1:1/x.mp3", "absolute path"), ("https:/x.mp3", "absolute"),
    ("narrator-cache/x.mp3", "absolute path"), ("/a/../b.mp3", "'..'"), ("/a/./b.mp3", "'.'"),
    ("/a/%2e%2e/b.mp3", "'..'"), ("/..", "'..'"), ("/%2F/evil/x.mp3", "another host"), ("/a\\b.mp3", "backslash"),
    ("/a/%5cb.mp3", "backslash"), ("/a\nb.mp3", "control"), ("/a%00b.mp3", "control"), ("/a\x7fb.mp3", "control"),
    ("", "no filePath"), (None, "no filePath"), (42, "no filePath"),
])
def test_other_paths_are_refused_with_the_reason(path, why):
    assert why in client_module.unsafe_file_path(path)


# --- the whole team flow through the plugin ---------------------------------------------------
def test_team_flow_through_the_plugin(tmp_path, peer):
    vite = peer()
    alice, bob, carol = member(tmp_path, "alice"), member(tmp_path, "bob"), member(tmp_path, "carol")
    with FakeElevenLabs() as fake:
        r = run(alice, "speak", *LINES, "--json", env=eleven(fake, vite.url))
        assert r.returncode == 0, r.stderr
        assert [row["status"] for row in rows(r)] == ["generated"] * 3 and len(fake.posts()) == 3
        assert "warning" not in r.stderr  # MP3: the plugin will find these again
        for row in rows(r):  # stored where and as the plugin stores them, our metadata spread over its own
            meta = json.loads((vite.folder / f"{row['cacheKey']}.meta.json").read_text())
            assert meta["fileName"] == f"{row['cacheKey']}.mp3" and meta["text"] == row["text"] and meta["sha256"]
        r = run(alice, "check", *LINES, "--json", env=eleven(fake, vite.url))
        assert r.returncode == 0 and all(row["server"] for row in rows(r)), r.stderr

        r = run(bob, "speak", *LINES, "--json", env=eleven(fake, vite.url))
        assert r.returncode == 0, r.stderr
        assert [row["status"] for row in rows(r)] == ["server"] * 3 and "warning" not in r.stderr
        assert len(fake.posts()) == 3  # bob paid for nothing
        assert sorted(vite.gets) == sorted(f"/narrator-cache/{row['cacheKey']}.mp3" for row in rows(r))
    a, b = Store(alice / "audio-cache"), Store(bob / "audio-cache")
    for row in rows(r):
        assert b.read_audio(b.get(row["cacheKey"])) == a.read_audio(a.get(row["cacheKey"]))

    keys = mp3_entries(carol, 4)
    r = run(carol, "upload", "--all", "--json", env={"NARRATOR_SERVER": vite.url})
    assert r.returncode == 0, r.stderr
    assert sorted((row["cacheKey"], row["status"]) for row in rows(r)) == [(k, "uploaded") for k in sorted(keys)]
    assert {row["filePath"] for row in rows(r)} == {f"/narrator-cache/{k}.mp3" for k in keys}
    r = run(carol, "upload", "--all", "--json", env={"NARRATOR_SERVER": vite.url})
    assert r.returncode == 0 and sorted(row["status"] for row in rows(r)) == ["present"] * 4, r.stderr


def test_an_entry_the_browser_uploaded_is_a_hit(tmp_path, peer):
    vite = peer()
    text = LINES[0]
    key = eleven_key(text)
    audio = make_mp3(2)
    measured = measure_duration(audio, "audio/mpeg")
    vite.put_browser_entry(key, audio, round(measured + 0.08, 3))  # an audio element measures a little off
    alice = member(tmp_path, "alice")
    with FakeElevenLabs() as fake:
        env = eleven(fake, vite.url)
        r = run(alice, "check", text, "--json", env=env)
        assert r.returncode == 0 and rows(r)[0]["server"] is True, r.stderr
        r = run(alice, "speak", text, "--json", env=env)
        assert r.returncode == 0, r.stderr
        assert rows(r)[0]["status"] == "server" and fake.request_count == 0, r.stderr
        entry = Store(alice / "audio-cache").get(key)
        assert entry.path.read_bytes() == audio and entry.meta["generatedAt"] and entry.duration == measured
        assert "text" not in entry.meta  # what we do not know is not recorded as if we did
        r = run(alice, "speak", text, "--json", env=env)
        assert rows(r)[0]["status"] == "cached" and fake.request_count == 0


@pytest.mark.parametrize("spoil, reason", [
    ("size", "bytes"), ("duration", "metadata says 9.00 s"), ("type", "not valid audio/mpeg"),
    ("mp3-alias", None),
])
def test_a_download_without_a_hash_is_checked_by_size_type_and_duration(tmp_path, peer, spoil, reason):
    vite = peer()
    key = eleven_key(LINES[1])
    audio = make_mp3(1.5)
    meta_path = vite.put_browser_entry(key, audio, measure_duration(audio, "audio/mpeg"))
    meta = json.loads(meta_path.read_text())
    if spoil == "size":
        (vite.folder / f"{key}.mp3").write_bytes(make_mp3(3))
    elif spoil == "duration":
        meta["duration"] = 9.0
    elif spoil == "type":
        wav = make_wav(1.5)
        (vite.folder / f"{key}.mp3").write_bytes(wav)
        meta["fileSize"] = len(wav)
    else:
        meta["mimeType"] = "audio/mp3"  # what an upload with that alias leaves: still MP3
    meta_path.write_text(json.dumps(meta))
    alice = member(tmp_path, "alice")
    with FakeElevenLabs() as fake:
        r = run(alice, "speak", LINES[1], "--json", env=eleven(fake, vite.url))
        assert r.returncode == 0, r.stderr
        entry = Store(alice / "audio-cache").get(key)
        if reason is None:
            assert rows(r)[0]["status"] == "server" and entry.meta["mimeType"] == "audio/mpeg"
            assert entry.path.read_bytes() == audio and fake.request_count == 0
            return
        assert rows(r)[0]["status"] == "generated" and len(fake.posts()) == 1  # refused, so paid for (once the
        # budget's guard had seen it: the quota and models GETs)
    warning = one_error_line(r.stderr)
    assert warning.startswith("narrator: warning: ") and key in warning and reason in warning, warning
    assert entry.meta["requestId"]  # the provider's audio, not the refused download


@pytest.mark.parametrize("bad", ["//127.0.0.1:{port}/narrator-cache/{key}.mp3",
                                 "http://127.0.0.1:{port}/narrator-cache/{key}.mp3",
                                 "/a/../narrator-cache/{key}.mp3", "/narrator-cache/%2e%2e/narrator-cache/{key}.mp3"])
def test_bad_file_paths_are_refused_and_nothing_is_stored(tmp_path, peer, bad):
    vite, elsewhere = peer(), peer()
    key = eleven_key(LINES[2])
    audio = make_mp3(1)
    for p in (vite, elsewhere):
        p.put_browser_entry(key, audio, measure_duration(audio, "audio/mpeg"))
    port = elsewhere.url.rsplit(":", 1)[1]
    vite.file_path = lambda name: bad.format(port=port, key=key)  # type: ignore[method-assign]
    alice = member(tmp_path, "alice")
    with FakeElevenLabs() as fake:
        r = run(alice, "speak", LINES[2], "--json", env=eleven(fake, vite.url))
        assert r.returncode == 0, r.stderr
        assert rows(r)[0]["status"] == "generated" and len(fake.posts()) == 1
    warning = one_error_line(r.stderr)
    assert key in warning and "filePath" in warning and "not stored" in warning, warning
    assert vite.gets == elsewhere.gets == []  # nothing was fetched, from either host
    assert Store(alice / "audio-cache").get(key).path.read_bytes() != audio


# --- what the plugin lacks ----------------------------------------------------------------------
@pytest.mark.parametrize("html_fallback", [False, True])
def test_stats_and_cleanup_say_the_plugin_has_no_such_endpoint(tmp_path, peer, html_fallback):
    vite = peer(html_fallback=html_fallback)
    for command, endpoint in (("stats", "/__narrator-health"), ("cleanup", "/__narrator-cleanup")):
        r = run(member(tmp_path, "a"), command, "--server", vite.url)
        assert r.returncode == 2 and r.stdout == ""
        line = one_error_line(r.stderr)
        assert line == (f"narrator: error: the server at {vite.url} has no {endpoint}: the Motion Canvas plugin "
                        "has no health or cleanup endpoint (only narrator serve does)")


def test_the_client_tells_narrator_serve_from_the_plugin(tmp_path, peer):
    vite = peer()
    with Client(vite.url) as client:
        assert client.narrator_serve is False
    proc, url = start_serve("--audio-path", str(tmp_path / "served"), cwd=tmp_path, drain=True)
    try:
        with Client(url) as client:
            assert client.narrator_serve is True
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def wav_entries(folder: Path, n: int) -> list[str]:
    store = Store(folder / "audio-cache")
    keys = []
    for i in range(n):
        text, audio = f"Wave {i}.", make_wav(0.5)
        keys.append(cache_key(text, "mock", "120"))
        store.put(keys[-1], audio, "audio/wav", 0.5, {"text": text, "voiceId": "mock", "modelId": "120"})
    return keys


def test_non_mp3_uploads_to_the_plugin_warn_once(tmp_path, peer):
    vite = peer()
    alice = member(tmp_path, "alice")
    wav_entries(alice, 3)
    r = run(alice, "upload", "--all", "--json", env={"NARRATOR_SERVER": vite.url})
    assert r.returncode == 0 and [row["status"] for row in rows(r)] == ["uploaded"] * 3, r.stderr
    warning = one_error_line(r.stderr)
    assert warning.startswith("narrator: warning: ") and "{key}.mp3" in warning and "MP3" in warning
    r = run(alice, "upload", "--all", "--json", env={"NARRATOR_SERVER": vite.url})
    assert [row["status"] for row in rows(r)] == ["uploaded"] * 3  # what the warning warned about
    assert r.stderr.count("warning") == 1

    bob = member(tmp_path, "bob")  # generated WAV, uploaded by speak: the same one warning
    r = run(bob, "speak", *LINES, "--provider", "mock", "--json", env={"NARRATOR_SERVER": vite.url,
                                                                       "NARRATOR_FORMAT": "wav"})
    assert r.returncode == 0 and [row["status"] for row in rows(r)] == ["generated"] * 3, r.stderr
    assert r.stderr.count("narrator: warning: ") == 1 and "{key}.mp3" in r.stderr

    proc, url = start_serve("--audio-path", str(tmp_path / "served"), cwd=tmp_path, drain=True)
    try:  # narrator serve finds entries of every type: nothing to warn about
        r = run(alice, "upload", "--all", "--json", env={"NARRATOR_SERVER": url})
        assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


# --- Ctrl-C ------------------------------------------------------------------------------------------
def start(cwd: Path, *args: str, env: dict) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if not k.startswith("NARRATOR_")}
    return subprocess.Popen([*CLI, *args], cwd=cwd, env={**full, "XDG_CONFIG_HOME": str(cwd / "xdg"), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert condition()


def test_ctrl_c_during_upload_starts_nothing_new_and_says_how_far_it_got(tmp_path, peer):
    vite = peer(upload_delay=0.2)
    alice = member(tmp_path, "alice")
    total = 40
    mp3_entries(alice, total, seconds=0.2)
    proc = start(alice, "upload", "--all", "--json", env={"NARRATOR_SERVER": vite.url})
    wait_for(lambda: vite.uploads >= 8)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    m = re.fullmatch(r"narrator: interrupted: (\d+) of 40 uploads done, (\d+) left", one_error_line(err))
    assert m, err
    done, left = int(m.group(1)), int(m.group(2))
    assert done + left == total and left > 0
    assert [row["status"] for row in map(json.loads, out.splitlines())] == ["uploaded"] * done
    time.sleep(0.5)  # anything still queued would have reached the peer by now
    assert vite.uploads <= done + UPLOADS_IN_FLIGHT < total
    assert len(Store(alice / "audio-cache").scan().entries) == total  # the local cache is untouched


def test_ctrl_c_during_check_says_how_far_it_got(tmp_path, peer):
    vite = peer(check_delay=30)
    alice = member(tmp_path, "alice")
    proc = start(alice, "check", *LINES, "--provider", "mock", "--json", env={"NARRATOR_SERVER": vite.url})
    wait_for(lambda: vite.checks >= len(LINES))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and out == "", err
    assert one_error_line(err) == "narrator: interrupted: 0 of 3 checks done, 3 left"


def test_ctrl_c_in_upload_is_reported_while_checking_too(tmp_path, peer):
    vite = peer(check_delay=30)
    alice = member(tmp_path, "alice")
    mp3_entries(alice, 3)
    proc = start(alice, "upload", "--all", env={"NARRATOR_SERVER": vite.url})
    wait_for(lambda: vite.checks >= 3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and out == "", err
    assert one_error_line(err) == "narrator: interrupted: 0 of 3 uploads done, 3 left" and vite.uploads == 0


def test_ctrl_c_while_an_upload_is_stuck_in_a_full_socket_still_exits(tmp_path, peer):
    vite = peer(stall=True)  # reads nothing after the handshake: the upload's write never completes
    alice = member(tmp_path, "alice")
    audio = make_mp3(1250)  # 20 MB: far more than the socket buffers hold
    key = cache_key("A long one.", "mock", "120")
    Store(alice / "audio-cache").put(key, audio, "audio/mpeg", measure_duration(audio, "audio/mpeg"), {})
    proc = start(alice, "upload", key, "--force", env={"NARRATOR_SERVER": vite.url})
    wait_for(lambda: vite.connected == 1)
    time.sleep(0.5)  # and writing into a socket nobody reads
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and one_error_line(err) == "narrator: interrupted: 0 of 1 uploads done, 1 left"


def test_ctrl_c_while_speak_asks_the_server_stops_the_run(tmp_path, peer):
    vite = peer(check_delay=30)
    alice = member(tmp_path, "alice")
    with FakeElevenLabs() as fake:
        proc = start(alice, "speak", *LINES, "--json", env=eleven(fake, vite.url))
        wait_for(lambda: vite.checks >= len(LINES))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130 and fake.request_count == 0, err  # not "go on without the server" and pay
    assert "team cache skipped" not in err and out == ""
