"""``Store.batch()``: a group commit. Queued entries become visible together, whole, never in part."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from audio_fixtures import make_mp3, make_wav
from serve_process import CLI, start_serve

from narrator_cli import store as store_module
from narrator_cli.audio import measure_duration
from narrator_cli.store import TMP_SUFFIX, Store

SHORT, LONG = make_mp3(0.2), make_mp3(0.5)


def seconds(audio: bytes, mime: str = "audio/mpeg") -> float:
    return measure_duration(audio, mime)


def key(i: int) -> str:
    return f"{i:08x}"


def assert_whole(store: Store) -> list[str]:
    """Every entry the folder shows is complete: its bytes match its hash and parse as its audio. Its keys."""
    scan = store.scan()
    for entry in scan.entries:
        audio = entry.path.read_bytes()
        assert hashlib.sha256(audio).hexdigest() == entry.meta["sha256"], entry.key
        assert measure_duration(audio, entry.meta["mimeType"]) == entry.meta["duration"], entry.key
    return sorted(e.key for e in scan.entries)


def temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX)]


def test_entries_of_a_batch_are_invisible_until_its_end_then_all_whole(tmp_path):
    store = Store(tmp_path / "cache")
    audio = LONG
    with store.batch():
        for i in range(5):
            entry = store.put(key(i), audio, "audio/mpeg", seconds(audio), {"text": f"line {i}"})
            assert entry.path == store.root / f"{key(i)}.mp3" and entry.size == len(audio)
        assert [store.get(key(i)) for i in range(5)] == [None] * 5
        assert store.scan().entries == []
    assert assert_whole(store) == [key(i) for i in range(5)]
    assert store.get(key(3)).meta["text"] == "line 3"
    assert temporaries(store.root) == []


def test_a_batch_flushes_every_group_and_the_rest_at_its_end(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "GROUP_COMMIT", 3)
    store = Store(tmp_path / "cache")
    with store.batch():
        for i in range(7):
            store.put(key(i), SHORT, "audio/mpeg", seconds(SHORT))
        assert sorted(store.keys()) == [key(i) for i in range(6)]  # two full groups; the seventh waits
    assert assert_whole(store) == [key(i) for i in range(7)]


def test_a_batch_syncs_once_per_group_not_once_per_file(tmp_path, monkeypatch):
    """The point of a group commit: no fsync per staged file, one filesystem sync and one folder fsync per group."""
    store = Store(tmp_path / "cache")
    store.root.mkdir()
    calls = {"fsync": 0, "syncfs": 0}
    real_fsync, real_syncfs = os.fsync, store_module._sync_filesystem

    def fsync(fd: int) -> None:
        calls["fsync"] += 1
        real_fsync(fd)

    def syncfs(path: Path) -> None:
        calls["syncfs"] += 1
        real_syncfs(path)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(store_module, "_sync_filesystem", syncfs)
    with store.batch():
        for i in range(20):
            store.put(key(i), SHORT, "audio/mpeg", seconds(SHORT))
    assert calls == {"fsync": 1, "syncfs": 1}
    assert len(assert_whole(store)) == 20


def test_an_error_inside_a_batch_still_commits_what_was_queued(tmp_path):
    store = Store(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt), store.batch():
        store.put(key(1), SHORT, "audio/mpeg", seconds(SHORT))
        raise KeyboardInterrupt
    assert assert_whole(store) == [key(1)]


CRASH = """
import os, sys
from narrator_cli.store import Store
from audio_fixtures import make_mp3
store = Store(sys.argv[1])
with store.batch():
    for i in range(10):
        store.put(f"{i:08x}", make_mp3(0.2), "audio/mpeg", 0.2)
    os._exit(9)  # dies before the batch ends: nothing of it was committed
"""


def test_a_process_dying_inside_a_batch_leaves_only_temporary_files_for_cleanup(tmp_path):
    folder = tmp_path / "cache"
    tests = str(Path(__file__).parent)
    r = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {tests!r})\n{CRASH}", str(folder)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 9, r.stderr
    strays = temporaries(folder)
    assert len(strays) == 20  # audio and metadata of each entry, all dot-named temporaries
    assert sorted(os.listdir(folder)) == sorted(strays)
    old = time.time() - store_module.STRAY_TMP_AGE - 60
    for name in strays:
        os.utime(folder / name, (old, old))
    scan = Store(folder).scan()
    assert scan.entries == [] and scan.broken == []
    assert sorted(p.name for p in scan.temporary) == sorted(strays)


def test_a_batch_and_a_plain_put_of_one_key_end_with_one_consistent_entry(tmp_path):
    """A batch queues a WAV entry while another writer commits an MP3 one for the same key: whichever lands
    last, the key has one whole entry and a single audio file."""
    root = tmp_path / "cache"
    wav, mp3 = make_wav(0.5), LONG
    for round_ in range(6):
        k = key(round_)
        batch_store, plain_store = Store(root), Store(root)
        queued = threading.Event()
        done = threading.Event()

        def plain(k: str, plain_store: Store, queued: threading.Event, done: threading.Event) -> None:
            queued.wait(10)
            plain_store.put(k, mp3, "audio/mpeg", seconds(mp3), {"text": "plain"})
            done.set()

        thread = threading.Thread(target=plain, args=(k, plain_store, queued, done))
        thread.start()
        with batch_store.batch():
            batch_store.put(k, wav, "audio/wav", seconds(wav, "audio/wav"), {"text": "batch"})
            queued.set()
            if round_ % 2:
                done.wait(10)  # odd rounds: the plain put commits first, the batch's flush replaces it
        thread.join(10)
        entry = Store(root).get(k)
        assert entry is not None
        expected = "batch" if round_ % 2 else None
        if expected:
            assert entry.meta["text"] == "batch"
        audio_files = sorted(p.name for p in root.iterdir() if p.name.startswith(k) and "meta" not in p.name)
        assert audio_files == [entry.path.name]
        assert Store(root).read_audio(entry) is not None
    assert len(assert_whole(Store(root))) == 6
    assert temporaries(root) == []


def test_sync_pull_killed_mid_batch_leaves_only_whole_entries(tmp_path):
    """A real ``narrator sync --pull`` from a real server, SIGKILLed while a group is queued and another is
    committed: every entry it left is whole, the queued ones are temporaries, and a second sync completes."""
    server = Store(tmp_path / "server-cache")
    n = 1200
    for i in range(n):
        server.put(key(i), SHORT, "audio/mpeg", seconds(SHORT), {"text": f"line {i}"})
    proc, url = start_serve("--audio-path", str(server.root), "--max-age", "3650d", cwd=tmp_path, drain=True)
    try:
        local = tmp_path / "local"
        pull = subprocess.Popen([*CLI, "sync", "--pull", "--server", url, "--audio-path", str(local)],
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        caught = False
        while time.monotonic() < deadline and pull.poll() is None:
            with_meta = local.is_dir() and any(name.endswith(".meta.json") for name in os.listdir(local))
            if with_meta and temporaries(local):
                pull.send_signal(signal.SIGKILL)
                caught = True
                break
            time.sleep(0.002)
        pull.wait(30)
        assert caught, f"the pull ended before it could be killed mid-batch: {pull.stderr.read()}"
        kept = assert_whole(Store(local))
        assert 0 < len(kept) < n
        done = subprocess.run([*CLI, "sync", "--pull", "--server", url, "--audio-path", str(local)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert assert_whole(Store(local)) == [key(i) for i in range(n)]
    finally:
        proc.kill()
        proc.wait(10)
