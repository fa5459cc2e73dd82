"""Characters billed and characters saved: the hits log that `speak` and `narrator serve` append to, what
`stats` (and `stats --server`) make of it, and what `cleanup` keeps of it. Real processes, a real server."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys

import pytest
import serve_process
from audio_fixtures import make_wav
from test_serve_cli import wait_for_lock_waiter
from test_server import client, get, recv, running, send
from unprivileged import as_user

from narrator_cli import protocol
from narrator_cli.keys import cache_key
from narrator_cli.protocol import Handler, Index
from narrator_cli.store import HITS_NAME, Store, parse_hits

CLI = [sys.executable, "-c", "from narrator_cli.cli import main; main()"]
FLASH, MULTI = "eleven_flash_v2_5", "eleven_multilingual_v2"
RACHEL, ADAM = "21m00Tcm4TlvDq8ikWAM", "pNInz6obpgDQGcFmaJgB"  # voice ids as ElevenLabs spells them


def narrator(*args: str, cwd=None, env=None, cmd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*(cmd or CLI), *args], check=False, capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=60)


def paid(store: Store, text: str, voice: str, model: str, cost: int | None) -> str:
    """An entry as an ElevenLabs line leaves it (``characterCost`` when it reported one); its key."""
    key = cache_key(text, voice, model)
    meta = {"text": text, "voiceId": voice, "modelId": model, "provider": "elevenlabs"}
    if cost is not None:
        meta["characterCost"] = cost
    store.put(key, make_wav(1), "audio/wav", 1.0, meta)
    return key


def speak(*args: str, voice: str = RACHEL, model: str = FLASH) -> list[dict]:
    """``speak --provider elevenlabs`` with no API key: only what is cached can succeed."""
    proc = narrator("speak", "--provider", "elevenlabs", "--voice", voice, "--model", model, "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def stats(*args: str, **kw) -> dict:
    proc = narrator("stats", "--json", *args, **kw)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def by_voice(report: dict) -> dict[tuple[str, str], dict]:
    return {(r["voiceId"], r["modelId"]): {k: r[k] for k in ("entries", "charactersBilled", "hits", "charactersSaved")}
            for r in report["byVoice"]}


def log_hits(root) -> dict[str, int]:
    counts: dict[str, int] = {}
    parse_hits((root / HITS_NAME).read_bytes(), counts)
    return counts


# --- locally: speak's hits ------------------------------------------------------------------------------
def test_speak_hits_are_characters_saved_per_voice_and_model_and_runs_add_up(tmp_path):
    store = Store(tmp_path / "audio-cache")
    first = paid(store, "The first line.", RACHEL, FLASH, 15)
    paid(store, "The second line.", RACHEL, FLASH, 16)
    paid(store, "A third, in another voice.", ADAM, MULTI, 26)
    paid(store, "Recorded by hand.", ADAM, MULTI, None)  # no characterCost: bills and saves nothing known
    before = stats()
    assert (before["charactersBilled"], before["hits"], before["charactersSaved"]) == (57, 0, 0)

    rows = speak("The first line.", "The second line.", "The first line.")
    assert [r["status"] for r in rows] == ["cached"] * 3
    assert log_hits(store.root) == {first: 1, cache_key("The second line.", RACHEL, FLASH): 1}  # once per key per run
    report = stats()
    assert (report["charactersBilled"], report["hits"], report["charactersSaved"]) == (57, 2, 31)
    assert by_voice(report) == {
        (RACHEL, FLASH): {"entries": 2, "charactersBilled": 31, "hits": 2, "charactersSaved": 31},
        (ADAM, MULTI): {"entries": 2, "charactersBilled": 26, "hits": 0, "charactersSaved": 0},
    }

    speak("The first line.")  # a second run: its hits add to the first's
    speak("A third, in another voice.", "Recorded by hand.", voice=ADAM, model=MULTI)
    report = stats()
    assert (report["hits"], report["charactersSaved"]) == (5, 31 + 15 + 26)
    assert by_voice(report) == {
        (RACHEL, FLASH): {"entries": 2, "charactersBilled": 31, "hits": 3, "charactersSaved": 46},
        (ADAM, MULTI): {"entries": 2, "charactersBilled": 26, "hits": 2, "charactersSaved": 26},
    }
    text = narrator("stats").stdout
    assert "5 cache hits saved 72 characters" in text and RACHEL in text and MULTI in text
    assert text.splitlines()[0].endswith("57 characters billed")  # the first line keeps its shape


def test_generated_lines_and_their_repeats_in_the_run_are_not_hits(tmp_path):
    mock = ["--provider", "mock"]
    first = narrator("speak", *mock, "--json", "Made now.", "Made now.")
    assert [json.loads(r)["status"] for r in first.stdout.splitlines()] == ["generated", "cached"]
    assert stats()["hits"] == 0  # the repeat was not paid for, but no cache saved it either
    key = cache_key("Made now.", "mock", "120")
    narrator("speak", *mock, "Made now.")
    narrator("speak", *mock, "--force", "Made now.")  # regenerated: no hit
    assert log_hits(tmp_path / "audio-cache") == {key: 1}
    assert stats()["byVoice"][0]["hits"] == 1


def test_concurrent_runs_each_add_their_hit(tmp_path):
    store = Store(tmp_path / "audio-cache")
    key = paid(store, "Said by many at once.", RACHEL, FLASH, 21)
    cmd = [*CLI, "speak", "--provider", "elevenlabs", "--voice", RACHEL, "Said by many at once."]
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(8)]
    assert all(p.wait(60) == 0 for p in procs)
    assert log_hits(store.root) == {key: 8}
    assert stats()["charactersSaved"] == 8 * 21


def test_a_torn_or_garbage_log_line_is_skipped_and_the_next_run_still_counts(tmp_path):
    store = Store(tmp_path / "audio-cache")
    a = paid(store, "Line a.", RACHEL, FLASH, 7)
    b = paid(store, "Line b.", RACHEL, FLASH, 9)
    (store.root / HITS_NAME).write_bytes(
        f"\n2 {a}\nnonsense\n3 {a.upper()}\n-1 {a}\n0 {a}\n{a} 4\n\xff\xfe\n5 {b[:5]}".encode("latin-1"))  # torn last
    assert stats()["hits"] == 2
    speak("Line b.")  # appended after the torn line, which must not swallow it
    report = stats()
    assert (report["hits"], report["charactersSaved"], report["broken"]) == (3, 2 * 7 + 9, 0)


def test_a_cache_it_cannot_write_still_serves_its_hits(tmp_path):
    store = Store(tmp_path / "audio-cache")
    paid(store, "Read-only.", RACHEL, FLASH, 3)
    store.root.chmod(0o555)
    try:
        proc = narrator("speak", "--provider", "elevenlabs", "--voice", RACHEL, "Read-only.",
                        cmd=as_user(CLI))
    finally:
        store.root.chmod(0o755)
    assert proc.returncode == 0 and "cached" in proc.stdout and proc.stderr == ""
    assert not (store.root / HITS_NAME).exists()


# --- cleanup and the log ----------------------------------------------------------------------------------
def test_cleanup_keeps_the_hits_of_what_stays_merged_and_drops_the_rest(tmp_path):
    store = Store(tmp_path / "audio-cache")
    old = paid(store, "Old line.", RACHEL, FLASH, 10)
    kept = paid(store, "Kept line.", RACHEL, FLASH, 20)
    os.utime(store.get(old).path, (1e9, 1e9))  # unused since 2001
    never = "0badc0de"  # a key with hits but no entry
    log = store.root / HITS_NAME
    log.write_bytes(f"\n1 {old}\n2 {kept}\n\ngarbage\n1 {never}\n\n3 {kept}\n".encode())
    report = stats()
    assert report["hits"] == 6 and report["broken"] == 0 and report["temporary"] == 0  # the log is no broken part

    before = log.read_bytes()
    dry = json.loads(narrator("cleanup", "--older-than", "30d", "--dry-run", "--json").stdout)
    assert dry["expired"] == [old] and log.read_bytes() == before

    done = json.loads(narrator("cleanup", "--older-than", "30d", "--json").stdout)
    assert done["expired"] == [old] and done["broken"] == [] and done["temporary"] == []
    assert log.read_bytes() == f"5 {kept}\n".encode()  # one line per key, only what is still cached
    assert (stats()["hits"], stats()["charactersSaved"]) == (5, 100)
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".")] == [HITS_NAME]  # no temporary left

    speak("Kept line.")
    assert log_hits(store.root) == {kept: 6}
    narrator("cleanup", "--max-size", "0B")  # nothing stays: nor does the log
    assert list(store.root.iterdir()) == []


def test_an_append_that_waits_for_a_rewrite_lands_in_the_new_log(tmp_path):
    store = Store(tmp_path / "audio-cache")
    key = paid(store, "Counted across a rewrite.", RACHEL, FLASH, 4)
    log = store.root / HITS_NAME
    log.write_bytes(b"\n1 0000000a\n")
    fd = os.open(log, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as rewrite_hits holds it while it replaces the file
    proc = subprocess.Popen([*CLI, "speak", "--provider", "elevenlabs", "--voice", RACHEL,
                             "Counted across a rewrite."], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_lock_waiter(proc.pid)
        tmp = store.root / ".rewrite.tmp"
        tmp.write_bytes(b"7 0000000b\n")
        os.replace(tmp, log)
    finally:
        os.close(fd)
    assert proc.wait(60) == 0, proc.stderr.read()
    assert log_hits(store.root) == {"0000000b": 7, key: 1}  # not written into the replaced file


# --- on the server ------------------------------------------------------------------------------------------
def test_the_server_counts_check_hits_and_keeps_them_across_a_restart(tmp_path):
    store = Store(tmp_path / "served")
    a = paid(store, "Checked often.", RACHEL, FLASH, 10)
    b = paid(store, "Checked twice.", ADAM, MULTI, 7)
    paid(store, "Never checked.", ADAM, MULTI, 100)
    proc, url = serve_process.start_serve("--audio-path", str(store.root), cwd=tmp_path, drain=True)
    port = serve_process.port_of(url)
    try:
        with client(f"ws://127.0.0.1:{port}/") as ws:
            for key in [a] * 5 + [b] * 2 + ["0000dead"]:
                send(ws, protocol.CHECK_AUDIO, cacheKey=key)
                assert recv(ws)[0] == (protocol.AUDIO_NOT_FOUND if key == "0000dead" else protocol.AUDIO_EXISTS)
        assert get(port, f"/__narrator-audio/{a}.wav")[0] == 200  # a download after its check: no second hit
        health = json.loads(get(port, "/__narrator-health")[2])
        assert health["status"] == "ok" and health["entries"] == 3 and health["bytes"] > 0 and health["version"]
        assert (health["charactersBilled"], health["hits"], health["charactersSaved"]) == (117, 7, 64)
        assert by_voice(health) == {
            (RACHEL, FLASH): {"entries": 1, "charactersBilled": 10, "hits": 5, "charactersSaved": 50},
            (ADAM, MULTI): {"entries": 2, "charactersBilled": 107, "hits": 2, "charactersSaved": 14},
        }
        assert stats("--server", url) == health
        text = narrator("stats", "--server", url).stdout
        assert ", 3 entries, " in text and "117 characters billed; 7 cache hits saved 64 characters" in text
        assert RACHEL in text and "50" in text
        for more in range(2):  # a cleanup flushes the hits, then rewrites the log: each still counted once
            assert get(port, "/__narrator-cleanup")[0] == 200
            assert json.loads(get(port, "/__narrator-health")[2])["hits"] == 7 + more
            with client(f"ws://127.0.0.1:{port}/") as ws:
                send(ws, protocol.CHECK_AUDIO, cacheKey=a)
                assert recv(ws)[0] == protocol.AUDIO_EXISTS
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert log_hits(store.root) == {a: 7, b: 2}  # persisted at shutdown, in the folder's own log
    assert stats("--audio-path", str(store.root))["charactersSaved"] == 84  # the same folder, read locally

    proc, url = serve_process.start_serve("--audio-path", str(store.root), cwd=tmp_path, drain=True)
    port = serve_process.port_of(url)
    try:
        assert json.loads(get(port, "/__narrator-health")[2])["hits"] == 9  # read back after a restart
        with client(f"ws://127.0.0.1:{port}/") as ws:
            send(ws, protocol.CHECK_AUDIO, cacheKey=b)
            assert recv(ws)[0] == protocol.AUDIO_EXISTS
        health = json.loads(get(port, "/__narrator-health")[2])
        assert (health["hits"], health["charactersSaved"]) == (10, 91)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert log_hits(store.root) == {a: 7, b: 3}


def test_an_idle_server_writes_its_hits_on_a_timer(tmp_path):
    """Hits counted in memory reach the log on the server's timer, with no further request and no shutdown: an
    idle server killed hard then loses at most one interval of them."""
    import time

    key = paid(Store(tmp_path / "cache"), "Hit, then nothing.", RACHEL, FLASH, 5)
    with running(tmp_path, flush_every=0.2) as s:
        with client(s.url) as ws:
            send(ws, protocol.CHECK_AUDIO, cacheKey=key)
            assert recv(ws)[0] == protocol.AUDIO_EXISTS
        deadline = time.monotonic() + 10
        while not (s.store.root / HITS_NAME).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log_hits(s.store.root) == {key: 1}  # written while the server runs on, idle


def test_a_busy_server_appends_its_hits_without_waiting_for_shutdown(tmp_path, monkeypatch):
    store = Store(tmp_path / "cache")
    key = paid(store, "Hit while serving.", RACHEL, FLASH, 5)
    monkeypatch.setattr(protocol, "TOUCH_EVERY", 0.0)  # the minute between appends, made nothing
    handler = Handler(Index(store))
    handler.check_audio({"cacheKey": key})
    handler.check_audio({"cacheKey": key})
    assert log_hits(store.root) == {key: 2}
    assert handler.index.hits.counts() == {key: 2}  # read back once, not counted again from memory
    handler.check_audio({"cacheKey": "0000dead"})
    assert log_hits(store.root) == {key: 2} and handler.index.hits.pending == {}


@pytest.mark.parametrize("body", [b"", b"\n", b"garbage\n", b"12 0000000"])
def test_parse_reads_whole_lines_only(body):
    counts: dict[str, int] = {}
    used = parse_hits(b"\n4 0000000a\n" + body, counts)
    assert counts == {"0000000a": 4} and used == len(b"\n4 0000000a\n") + body.rfind(b"\n") + 1


def test_questions_are_not_hits_on_the_server_but_a_download_is(tmp_path):
    """check, upload and dry runs ask with ``"use": false``: only a line served from the server counts."""
    store = Store(tmp_path / "served")
    key = paid(store, "Asked about, then spoken.", RACHEL, FLASH, 12)
    proc, url = serve_process.start_serve("--audio-path", str(store.root), cwd=tmp_path, drain=True)
    port = serve_process.port_of(url)
    member = tmp_path / "member"
    member.mkdir()
    env = {"NARRATOR_PROVIDER": "elevenlabs", "NARRATOR_VOICE": RACHEL, "NARRATOR_SERVER": url}
    try:
        for _ in range(3):
            asked = narrator("check", "Asked about, then spoken.", cwd=member, env=env)
            assert asked.returncode == 0, asked.stderr
        assert json.loads(get(port, "/__narrator-health")[2])["hits"] == 0
        spoken = narrator("speak", "Asked about, then spoken.", "--json", cwd=member, env=env)
        assert spoken.returncode == 0 and json.loads(spoken.stdout)["status"] == "server", spoken.stderr
        health = json.loads(get(port, "/__narrator-health")[2])
        assert (health["hits"], health["charactersSaved"]) == (1, 12)
        assert key in spoken.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
