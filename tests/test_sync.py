"""``narrator sync`` and the server's ``/__narrator-index``: real servers, real processes, real audio."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from audio_fixtures import make_mp3
from fake_elevenlabs import FakeElevenLabs
from narrator_cli.client import Client, NoIndex
from narrator_cli.store import Store
from plugin_peer import PluginPeer
from serve_process import CLI, port_of, start_serve


@pytest.fixture
def serve(tmp_path):
    procs: list[subprocess.Popen] = []

    def start(*args: str, folder: str = "server-cache") -> str:
        proc, url = start_serve("--audio-path", str(tmp_path / folder), *args, cwd=tmp_path, drain=True)
        procs.append(proc)
        return url

    start.procs = procs  # type: ignore[attr-defined]
    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def run(cwd: Path, *args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("NARRATOR_") and k != "ELEVENLABS_API_KEY"}
    full["XDG_CONFIG_HOME"] = str(cwd / "xdg")
    return subprocess.run([*CLI, *args], cwd=cwd, env={**full, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def rows(result: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def put(store: Store, key: str, seconds: float = 0.3, text: str | None = None) -> bytes:
    audio = make_mp3(seconds)
    store.put(key, audio, "audio/mpeg", seconds, {"text": text or f"line {key}", "voiceId": "v", "modelId": "m"})
    return audio


def browser_entry(folder: Path, key: str, seconds: float = 0.4) -> bytes:
    """As the plugin writes what the editor's browser uploaded: the seven fields, no text, voice or model."""
    audio = make_mp3(seconds)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{key}.mp3").write_bytes(audio)
    meta = {"cacheKey": key, "duration": seconds, "mimeType": "audio/mpeg", "fileSize": len(audio),
            "fileName": f"{key}.mp3", "createdAt": "2026-01-01T00:00:00.000Z",
            "generatedAt": "2026-01-01T00:00:00.000Z"}
    (folder / f"{key}.meta.json").write_text(json.dumps(meta, indent=2))
    return audio


# --- the index -------------------------------------------------------------------------------------


def test_index_lists_every_entry_with_etag_and_cursor(tmp_path, serve):
    srv = Store(tmp_path / "server-cache")
    put(srv, "0000000a")
    url = serve()
    r = httpx.get(url + "/__narrator-index")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["full"] and [e["cacheKey"] for e in body["entries"]] == ["0000000a"]
    assert body["entries"][0]["filePath"] == "/__narrator-audio/0000000a.mp3"
    assert body["entries"][0]["metadata"]["sha256"] == srv.get("0000000a").meta["sha256"]
    etag, cursor = r.headers["etag"], body["cursor"]
    assert httpx.get(url + "/__narrator-index", headers={"If-None-Match": etag}).status_code == 304
    # another process writes into the folder: the index catches up, as a change after the cursor
    put(srv, "0000000b")
    r = httpx.get(url + "/__narrator-index", params={"after": cursor}, headers={"If-None-Match": etag})
    assert r.status_code == 200 and r.headers["etag"] != etag
    delta = r.json()
    assert not delta["full"] and [e["cacheKey"] for e in delta["entries"]] == ["0000000b"] and not delta["removed"]
    # a removal is listed as one, after the newer cursor
    for name in ("0000000a.meta.json", "0000000a.mp3"):
        (tmp_path / "server-cache" / name).unlink()
    r = httpx.get(url + "/__narrator-index", params={"after": delta["cursor"]})
    assert r.json()["removed"] == ["0000000a"] and r.json()["entries"] == []
    # a cursor of another server instance (a restarted one) is stale: everything is listed again
    r = httpx.get(url + "/__narrator-index", params={"after": "0123456789ab.1"})
    assert r.json()["full"] and [e["cacheKey"] for e in r.json()["entries"]] == ["0000000b"]


def test_index_needs_the_token_like_the_websocket(tmp_path, serve):
    url = serve("--token", "s3cret-token")
    assert httpx.get(url + "/__narrator-index").status_code == 401
    assert httpx.get(url + "/__narrator-index", params={"token": "wrong"}).status_code == 401
    assert httpx.get(url + "/__narrator-index", params={"token": "s3cret-token"}).status_code == 200
    assert httpx.get(url + "/__narrator-index", headers={"X-Narrator-Token": "s3cret-token"}).status_code == 200
    assert httpx.get(url + "/__narrator-index",
                     headers={"Authorization": "Bearer s3cret-token"}).status_code == 200


def test_client_index_and_no_index_on_the_plugin(tmp_path, serve):
    put(Store(tmp_path / "server-cache"), "0000000c")
    with Client(serve()) as client:
        body = client.index()
        assert [e["cacheKey"] for e in body["entries"]] == ["0000000c"]
        assert client.index(body["cursor"], body["etag"]) is None  # unchanged: 304
    for html in (False, True):
        with PluginPeer(tmp_path / "vite", html_fallback=html) as peer, pytest.raises(NoIndex):
            Client(peer.url).index()


def test_compact_index_lists_what_a_comparison_needs_under_its_own_etag(tmp_path, serve):
    srv = Store(tmp_path / "server-cache")
    audio = put(srv, "0000c001")
    browser = browser_entry(srv.root, "0000c002")  # no sha256: compared by size
    url = serve()
    full = httpx.get(url + "/__narrator-index")
    r = httpx.get(url + "/__narrator-index", params={"fields": "compact"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["fields"] == ["cacheKey", "fileName", "fileSize", "sha256"] and body["full"]
    assert sorted(body["entries"]) == [["0000c001", "0000c001.mp3", len(audio), srv.get("0000c001").meta["sha256"]],
                                       ["0000c002", "0000c002.mp3", len(browser), None]]
    assert body["cursor"] == full.json()["cursor"] and len(r.content) < len(full.content)
    etag = r.headers["etag"]
    assert etag != full.headers["etag"]  # one representation's ETag never validates the other's body
    assert httpx.get(url + "/__narrator-index", params={"fields": "compact"},
                     headers={"If-None-Match": etag}).status_code == 304
    assert httpx.get(url + "/__narrator-index", headers={"If-None-Match": etag}).status_code == 200
    assert httpx.get(url + "/__narrator-index", params={"fields": "compact"},
                     headers={"If-None-Match": full.headers["etag"]}).status_code == 200
    assert httpx.get(url + "/__narrator-index", params={"fields": "full"}).content == full.content
    put(srv, "0000c003")  # a delta after the cursor is compact too
    r = httpx.get(url + "/__narrator-index", params={"fields": "compact", "after": body["cursor"]})
    assert [row[0] for row in r.json()["entries"]] == ["0000c003"] and not r.json()["full"]
    r = httpx.get(url + "/__narrator-index", params={"fields": "everything"})
    assert r.status_code == 400 and "fields" in r.json()["error"]


def test_client_compact_index_gives_partial_entries(tmp_path, serve):
    srv = Store(tmp_path / "server-cache")
    audio = put(srv, "0000c004")
    with Client(serve()) as client:
        body = client.index(compact=True)
        assert body["entries"] == [{"cacheKey": "0000c004", "partial": True, "metadata": {
            "fileName": "0000c004.mp3", "fileSize": len(audio), "sha256": srv.get("0000c004").meta["sha256"]}}]
        assert client.index(body["cursor"], body["etag"], compact=True) is None  # unchanged: 304


def test_sync_compares_compactly_and_pulls_with_the_whole_metadata(tmp_path, serve):
    srv, local = Store(tmp_path / "server-cache"), Store(tmp_path / "mine")
    same = put(srv, "0000c010")
    local.put("0000c010", same, "audio/mpeg", 0.3, {"text": "line 0000c010", "voiceId": "v", "modelId": "m"})
    put(srv, "0000c011", text="only on the server")  # missing here
    theirs = put(srv, "0000c012")
    mine = bytearray(theirs)
    mine[-1] ^= 0xFF  # same size, other content: only the sha256 tells them apart
    local.put("0000c012", bytes(mine), "audio/mpeg", 0.3, {"text": "line 0000c012", "voiceId": "v", "modelId": "m"})
    url = serve()
    r = run(tmp_path, "sync", "--server", url, "--audio-path", "mine", "--json")
    assert r.returncode == 1, r.stderr
    assert sorted((row["cacheKey"], row["status"]) for row in rows(r)) == [("0000c011", "pulled"),
                                                                          ("0000c012", "conflict")]
    assert "1 entry equal" in r.stderr or "1 entries equal" in r.stderr, r.stderr
    pulled = local.get("0000c011")
    theirs_meta = srv.get("0000c011").meta  # the fields the compact listing lacks came along
    assert {k: pulled.meta.get(k) for k in ("text", "voiceId", "modelId", "sha256")} == \
        {k: theirs_meta[k] for k in ("text", "voiceId", "modelId", "sha256")} and pulled.meta["text"]
    assert local.read_audio(local.get("0000c012")) == bytes(mine)


def test_an_entry_gone_from_the_server_after_the_listing_is_not_pulled(tmp_path, serve):
    from narrator_cli.sync import Syncer

    srv = Store(tmp_path / "server-cache")
    put(srv, "0000c020")
    put(srv, "0000c021")
    rows_seen: list[dict] = []
    syncer = Syncer(Client(serve()), Store(tmp_path / "mine"), push=False, report=rows_seen.append)
    try:
        syncer.refresh()
        for name in ("0000c020.meta.json", "0000c020.mp3"):
            (srv.root / name).unlink()
        syncer.round()
    finally:
        syncer.close()
    assert [(row["cacheKey"], row["status"]) for row in rows_seen] == [("0000c021", "pulled")]
    assert syncer.counts["failed"] == 0 and "0000c020" not in syncer.remote


# --- sync ------------------------------------------------------------------------------------------


def eleven_env(fake: FakeElevenLabs) -> dict:
    return {"NARRATOR_PROVIDER": "elevenlabs", "NARRATOR_VOICE": "TestVoiceId000000abc", "ELEVENLABS_API_KEY": fake.api_key,
            "NARRATOR_ELEVENLABS_BASE_URL": fake.url}


LINES = ["The first line of the scene.", "A second line.", "Ünïcode and emoji 🎬 too."]


def test_team_story_editor_folder_to_server_to_another_member(tmp_path, serve):
    url = serve()
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    alice.mkdir(), bob.mkdir()
    a_cache, b_cache = alice / "narrator-cache", bob / "narrator-cache"
    with FakeElevenLabs() as fake:
        r = run(alice, "speak", *LINES, "--audio-path", str(a_cache), "--json", env=eleven_env(fake))
        assert r.returncode == 0, r.stderr
        keys = [row["cacheKey"] for row in rows(r)]
        browser_keys = ["00b00001", "00b00002"]
        for key in browser_keys:
            browser_entry(a_cache, key)
        r = run(alice, "sync", "--server", url, "--audio-path", str(a_cache), "--json")
        assert r.returncode == 0, r.stderr
        assert sorted(row["cacheKey"] for row in rows(r) if row["status"] == "pushed") == sorted(keys + browser_keys)
        r = run(bob, "sync", "--server", url, "--audio-path", str(b_cache), "--json")
        assert r.returncode == 0, r.stderr
        assert sorted(row["cacheKey"] for row in rows(r) if row["status"] == "pulled") == sorted(keys + browser_keys)
        a, b = Store(a_cache), Store(b_cache)
        for key in keys + browser_keys:
            assert a.read_audio(a.get(key)) == b.read_audio(b.get(key))
        with PluginPeer(bob) as peer, Client(peer.url) as client:  # B's Vite serves B's folder
            assert all(found is not None for found in client.check(keys + browser_keys).values())
        before = fake.request_count
        r = run(bob, "speak", *LINES, "--audio-path", str(b_cache), "--json", env=eleven_env(fake))
        assert r.returncode == 0, r.stderr
        assert [row["status"] for row in rows(r)] == ["cached"] * 3 and fake.request_count == before
        r = run(bob, "sync", "--server", url, "--audio-path", str(b_cache))
        assert r.returncode == 0 and "5 entries equal" in r.stderr and r.stdout == ""


def test_conflicts_are_reported_never_overwritten(tmp_path, serve):
    put(Store(tmp_path / "server-cache"), "0000000d", 0.3)
    url = serve()
    local = Store(tmp_path / "mine")
    mine = put(local, "0000000d", 0.6)
    for extra in ([], ["--pull"], ["--push"]):
        r = run(tmp_path, "sync", "--server", url, "--audio-path", "mine", "--json", *extra)
        assert r.returncode == 1, r.stderr
        assert [(row["cacheKey"], row["status"]) for row in rows(r)] == [("0000000d", "conflict")]
    assert local.read_audio(local.get("0000000d")) == mine
    with Client(url) as client:
        assert client.check(["0000000d"])["0000000d"]["metadata"]["fileSize"] != len(mine)


def test_dry_run_pull_and_push_go_where_they_are_told(tmp_path, serve):
    srv = Store(tmp_path / "server-cache")
    put(srv, "000000e1")
    url = serve()
    local = Store(tmp_path / "mine")
    put(local, "000000e2")
    r = run(tmp_path, "sync", "--server", url, "--audio-path", "mine", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    assert sorted((row["cacheKey"], row["status"]) for row in rows(r)) == [("000000e1", "would pull"),
                                                                          ("000000e2", "would push")]
    assert local.keys() == {"000000e2"} and srv.keys() == {"000000e1"}
    r = run(tmp_path, "sync", "--server", url, "--audio-path", "mine", "--pull", "--json")
    assert [(row["cacheKey"], row["status"]) for row in rows(r)] == [("000000e1", "pulled")]
    assert local.keys() == {"000000e1", "000000e2"} and srv.keys() == {"000000e1"}
    put(local, "000000e3")
    r = run(tmp_path, "sync", "--server", url, "--audio-path", "mine", "--push", "--json")
    assert sorted((row["cacheKey"], row["status"]) for row in rows(r)) == [("000000e2", "pushed"),
                                                                          ("000000e3", "pushed")]
    r = run(tmp_path, "sync", "--server", url, "--audio-path", "mine", "--pull", "--push")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "narrator: error:" in r.stderr


def test_bad_server_is_one_line_exit_2(tmp_path):
    r = run(tmp_path, "sync", "--server", "http://127.0.0.1:1", "--audio-path", "mine")
    assert r.returncode == 2 and r.stderr.startswith("narrator: error:") and r.stderr.count("\n") == 1
    r = run(tmp_path, "sync", "--audio-path", "mine")
    assert r.returncode == 2 and "no server" in r.stderr


def test_against_the_plugin_it_pushes_and_says_pulling_needs_serve(tmp_path):
    local = Store(tmp_path / "mine")
    put(local, "000000f1")
    browser_entry(tmp_path / "mine", "000000f2")
    with PluginPeer(tmp_path / "vite") as peer:
        browser_entry(peer.folder, "000000f3")
        put(local, "000000f3")  # on both sides, different content
        r = run(tmp_path, "sync", "--server", peer.url, "--audio-path", "mine", "--json")
        assert r.returncode == 1, r.stderr  # the conflict
        got = sorted((row["cacheKey"], row["status"]) for row in rows(r))
        assert got == [("000000f1", "pushed"), ("000000f2", "pushed"), ("000000f3", "conflict")]
        assert r.stderr.count("pulling needs narrator serve") == 1
        assert (peer.folder / "000000f1.mp3").read_bytes() == local.read_audio(local.get("000000f1"))
        r = run(tmp_path, "sync", "--server", peer.url, "--audio-path", "mine", "--push", "--json")
        assert [row["status"] for row in rows(r)] == ["conflict"]


# --- watch -----------------------------------------------------------------------------------------


def wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_watch_both_ways_survives_a_killed_server_and_stops_on_ctrl_c(tmp_path, serve):
    url = serve()
    srv = Store(tmp_path / "server-cache")
    local = Store(tmp_path / "mine")
    local.root.mkdir()
    proc = subprocess.Popen([*CLI, "sync", "--watch", "--server", url, "--audio-path", "mine", "--json"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # the first round and the watcher are up
        mine = put(local, "0000a001")
        assert wait_for(lambda: srv.get("0000a001") is not None, 2.0)
        assert srv.read_audio(srv.get("0000a001")) == mine
        theirs = put(srv, "0000a002")  # as another member's upload lands
        assert wait_for(lambda: local.get("0000a002") is not None, 5.0)
        assert local.read_audio(local.get("0000a002")) == theirs
        # the server dies and comes back on the same port
        serve.procs[0].kill()
        serve.procs[0].wait(10)
        time.sleep(1.5)
        put(local, "0000a003")  # made while the server is away
        serve("--port", str(port_of(url)))
        assert wait_for(lambda: srv.get("0000a003") is not None, 10.0)
        theirs = put(srv, "0000a004")
        assert wait_for(lambda: local.get("0000a004") is not None, 5.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert err.count("unreachable") == 1 and err.count("is back") == 1, err
    assert "Traceback" not in err
    for key in ("0000a001", "0000a002", "0000a003", "0000a004"):
        assert local.read_audio(local.get(key)) == srv.read_audio(srv.get(key))
    scan = local.scan()
    assert not scan.broken and not scan.temporary
    statuses = {(row["cacheKey"], row["status"]) for row in (json.loads(line) for line in out.splitlines())}
    assert {("0000a001", "pushed"), ("0000a002", "pulled"), ("0000a003", "pushed"), ("0000a004", "pulled")} \
        <= statuses


def test_files_that_only_look_like_entries_are_left_alone(tmp_path, serve):
    url = serve()
    folder = tmp_path / "member"
    put(Store(folder), "0000abcd")
    for name in ("zzzzzzzz.meta.json", "zzzzzzzz.mp3", "ABCDEF01.meta.json", "ABCDEF01.mp3"):
        (folder / name).write_bytes(b"{}" if name.endswith(".json") else make_mp3(0.2))
    r = run(tmp_path, "sync", "--server", url, "--audio-path", str(folder), "--json")
    assert r.returncode == 0, r.stderr
    assert [row["cacheKey"] for row in rows(r)] == ["0000abcd"]
