"""The local cache's stats and cleanup, and what an unusable cache folder does to every command:
one line and exit 2 for the environment, exit 1 for work that could not be done, never exit 70."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from audio_fixtures import make_wav
from serve_process import CLI, start_serve
from typer.testing import CliRunner
from unprivileged import as_user

from narrator_cli.cli import app
from narrator_cli.errors import UsageError
from narrator_cli.keys import cache_key
from narrator_cli.maintenance import cleanup, parse_age, parse_size, stats
from narrator_cli.store import CacheUnreadable, Store

runner = CliRunner()
HUGE = "1" + "0" * 400  # past a float's range


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def narrator(*args: str, unprivileged: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
    """The real command in a real process; ``unprivileged`` holds it to permission bits even as root."""
    cmd = [*CLI, *args]
    return subprocess.run(as_user(cmd) if unprivileged else cmd, capture_output=True, text=True, timeout=timeout,
                          check=False)


def snapshot(root: Path) -> list:
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in root.iterdir()) if root.exists() else []


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("narrator: error: "), proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def cache(tmp_path) -> Path:
    """Two entries, a broken part and a stray temporary file old enough to be nobody's."""
    store = Store(tmp_path / "audio-cache")
    store.put("0000000a", make_wav(2), "audio/wav", 2.0, {"voiceId": "v", "modelId": "m", "text": "a"})
    store.put("0000000b", make_wav(1), "audio/wav", 1.0, {"voiceId": "v", "modelId": "m", "text": "b"})
    store.put("0000000c", make_wav(1), "audio/wav", 1.0, {})
    (store.root / "0000000c.wav").unlink()  # its metadata is now a broken part
    tmp = store.root / ".123.abcdef.tmp"
    tmp.write_bytes(b"partial audio")
    os.utime(tmp, (time.time() - 3600,) * 2)
    return store.root


@pytest.fixture
def locked_out(cache):
    """The cache folder with mode 000 (restored afterwards so pytest can delete it)."""
    cache.chmod(0)
    yield cache
    cache.chmod(0o755)


# --- 1. cleanup says what really went ----------------------------------------------------------
@pytest.mark.parametrize("as_json", [False, True])
def test_cleanup_of_a_folder_it_cannot_change_names_what_stayed_and_exits_1(cache, as_json):
    before = snapshot(cache)
    cache.chmod(0o555)  # listable, not writable: every removal fails
    try:
        proc = narrator("cleanup", "--max-size", "0B", *(["--json"] if as_json else []), unprivileged=True)
    finally:
        cache.chmod(0o755)
    assert proc.returncode == 1, proc.stderr
    assert snapshot(cache) == before
    assert "Traceback" not in proc.stderr and proc.stderr.strip().splitlines()[-1].startswith("narrator: error: ")
    assert "could not remove 4 files" in proc.stderr  # two entries' metadata, the broken part, the temporary file
    for name in ("0000000a.meta.json", "0000000b.meta.json", "0000000c.meta.json", ".123.abcdef.tmp"):
        assert f"could not remove {cache / name}: Permission denied" in proc.stderr
    if as_json:
        summary = json.loads(proc.stdout)
        assert summary["evicted"] == summary["broken"] == summary["temporary"] == []
        assert summary["freedBytes"] == 0 and summary["remainingEntries"] == 2
        assert sorted(f["path"] for f in summary["failed"]) == sorted(
            str(cache / n) for n in ("0000000a.meta.json", "0000000b.meta.json", "0000000c.meta.json",
                                     ".123.abcdef.tmp"))
    else:
        assert proc.stdout.startswith("removed 0 entries (0 old, 0 over size), 0 broken parts, 0 temporary files")
        assert "2 entries" in proc.stdout and "remain" in proc.stdout


def test_store_remove_stops_at_the_part_that_stays_and_says_why(tmp_path):
    store = Store(tmp_path)
    stuck = tmp_path / "0000000a.meta.json"
    stuck.mkdir()  # a folder where a file should be: unlink refuses it, as it would a read-only folder's file
    audio = tmp_path / "0000000a.wav"
    audio.write_bytes(b"RIFF")
    removed = store.remove([stuck, audio])
    assert removed.failed is not None and removed.failed[0] == stuck and removed.failed[1]
    assert audio.exists() and removed.freed == 0  # the entry's audio is not taken when its metadata stays
    assert store.remove([tmp_path / "gone.wav", audio]) == (4, None)  # already gone counts as removed


# --- 2. environment problems are exit 2, one line, naming the path or value ---------------------
@pytest.mark.parametrize("args", [["stats"], ["stats", "--json"], ["cleanup"], ["cleanup", "--json"],
                                  ["cleanup", "--max-size", "0B", "--dry-run"]])
def test_unreadable_cache_folder_is_an_environment_error(locked_out, args):
    proc = narrator(*args, unprivileged=True)
    assert proc.returncode == 2 and proc.stdout == ""
    one_error_line(proc, str(locked_out), "Permission denied")


@pytest.mark.parametrize("command", [["stats"], ["stats", "--json"], ["cleanup"], ["check", "x"],
                                     ["speak", "--provider", "mock", "x"]])
def test_a_file_where_the_cache_folder_should_be(tmp_path, command):
    (tmp_path / "somefile").write_bytes(b"not a folder")
    proc = narrator(*command, "--audio-path", "somefile")
    assert proc.returncode == 2
    one_error_line(proc, f"{tmp_path / 'somefile'} is not a folder")
    assert (tmp_path / "somefile").read_bytes() == b"not a folder"


@pytest.mark.parametrize("args", [["cleanup", "--max-size", f"{HUGE}GB"], ["cleanup", "--max-size", f"{HUGE}B"],
                                  ["cleanup", "--older-than", f"{HUGE}d"], ["cleanup", "--older-than", "99999999w"],
                                  ["cleanup", "--max-size", "-5MB"], ["cleanup", "--older-than", "-1d"]])
def test_absurd_or_negative_sizes_and_ages_are_refused(cache, args):
    before = snapshot(cache)
    proc = narrator(*args)
    assert proc.returncode == 2 and snapshot(cache) == before
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    assert ("invalid size" in proc.stderr or "invalid age" in proc.stderr) and len(proc.stderr) < 300


def test_parse_size_and_age_bounds():
    assert parse_size("0B") == 0 and parse_size("2GB") == 2 * 10**9 and parse_size("1.5 KiB") == 1536
    assert parse_age("30d") == 30 * 86400 and parse_age("0s") == 0
    for bad in (f"{HUGE}GB", "1000001GB", "500", "0", " 7 ", "-1MB", "1e3MB", "inf GB"):
        with pytest.raises(UsageError, match="invalid size"):
            parse_size(bad)
    for bad in (f"{HUGE}d", "101000d", "30", "-1d", "nan d"):
        with pytest.raises(UsageError, match="invalid age"):
            parse_age(bad)


# --- 3. an unreadable cache is not a miss --------------------------------------------------------
def test_check_on_an_unreadable_cache_is_exit_2_not_a_miss(locked_out):
    proc = narrator("check", "x", unprivileged=True)
    assert proc.returncode == 2 and "local:NO" not in proc.stdout
    one_error_line(proc, str(locked_out), "Permission denied")
    proc = narrator("check", "--key", "0000000a", unprivileged=True)
    assert proc.returncode == 2
    one_error_line(proc, str(locked_out))


def test_check_on_unreadable_metadata_names_the_file(tmp_path):
    store = Store(tmp_path / "audio-cache")
    key = cache_key("hello", "mock", "120")
    store.put(key, make_wav(1), "audio/wav", 1.0, {"text": "hello", "voiceId": "mock", "modelId": "120"})
    meta = store.meta_path(key)
    meta.chmod(0)
    proc = narrator("check", "--provider", "mock", "hello", unprivileged=True)
    assert proc.returncode == 2
    one_error_line(proc, str(meta), "Permission denied")
    meta.chmod(0o644)
    assert narrator("check", "--provider", "mock", "hello", unprivileged=True).returncode == 0


def test_missing_or_damaged_entries_stay_misses(tmp_path):
    store = Store(tmp_path / "audio-cache")
    assert narrator("check", "--key", "0000000a").returncode == 1  # no folder at all: a miss
    store.put("0000000a", make_wav(1), "audio/wav", 1.0, {})
    store.meta_path("0000000a").write_text("{not json")
    (store.root / "0000000b.meta.json").mkdir()  # a folder where its metadata should be
    proc = narrator("check", "--key", "0000000a", "--key", "0000000b")
    assert proc.returncode == 1 and proc.stdout.count("local:NO") == 2


def test_speak_on_an_unreadable_cache_stops_with_one_line(locked_out):
    before = snapshot_as_root(locked_out)
    proc = narrator("speak", "--provider", "mock", "one line", "another line", unprivileged=True)
    assert proc.returncode == 2 and "generated" not in proc.stdout and "failed" not in proc.stdout
    one_error_line(proc, str(locked_out), "Permission denied")
    assert snapshot_as_root(locked_out) == before


def snapshot_as_root(root: Path) -> list:
    mode = root.stat().st_mode
    root.chmod(0o755)
    try:
        return snapshot(root)
    finally:
        root.chmod(mode)


def test_store_get_and_scan_raise_for_an_unusable_folder(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    for store in (Store(tmp_path / "file"), Store(tmp_path / "file" / "below")):
        with pytest.raises(CacheUnreadable, match="not a folder"):
            store.get("0000000a")
        with pytest.raises(CacheUnreadable, match="not a folder"):
            store.scan()
    assert Store(tmp_path / "absent").get("0000000a") is None
    assert Store(tmp_path / "absent").scan().missing


# --- 4. a size needs a unit ---------------------------------------------------------------------
@pytest.mark.parametrize("size", ["500", "0", "10"])
def test_cleanup_refuses_a_size_without_a_unit(cache, size):
    before = snapshot(cache)
    proc = narrator("cleanup", "--max-size", size)
    assert proc.returncode == 2 and snapshot(cache) == before
    one_error_line(proc, f"invalid size '{size}'", "give a unit", "500MB")


@pytest.mark.parametrize("how", ["option", "environment"])
def test_serve_refuses_a_cache_size_without_a_unit_before_binding_or_deleting(cache, how):
    for entry in Store(cache).scan().entries:  # old enough for the start-up cleanup, were it to run
        os.utime(entry.path, (time.time() - 90 * 86400,) * 2)
    before = snapshot(cache)
    args = ["serve", "--port", "0"] + (["--max-cache-size", "10"] if how == "option" else [])
    env = {**os.environ, **({"NARRATOR_SERVE_MAX_CACHE_SIZE": "10"} if how == "environment" else {})}
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        pytest.fail(f"serve started with a unitless cache size: {err[-300:]}")
    assert proc.returncode == 2 and "listening" not in err and out == ""
    one_error_line(subprocess.CompletedProcess(args, 2, out, err), "invalid size '10'", "give a unit")
    assert snapshot(cache) == before


# --- 5. counts read right; stats and cleanup agree on sizes ---------------------------------------
def test_stats_and_cleanup_measure_the_same_cache_the_same_way(cache):
    on_disk = sum(p.stat().st_size for p in cache.iterdir())
    report = json.loads(run("stats", "--json").stdout)
    assert report["entries"] == 2 and report["broken"] == 1 and report["temporary"] == 1
    dry = json.loads(run("cleanup", "--max-size", "0B", "--dry-run", "--json").stdout)
    assert report["bytes"] + report["brokenBytes"] == dry["freedBytes"] == on_disk
    newest = max(Store(cache).scan().entries, key=lambda e: e.mtime)
    os.utime(newest.path)  # used just now: the one that stays
    keep = newest.path.stat().st_size + Store(cache).meta_path(newest.key).stat().st_size
    done = json.loads(run("cleanup", "--max-size", f"{keep}B", "--json").stdout)
    assert done["evicted"] != [] and done["remainingEntries"] == 1 and done["remainingBytes"] == keep
    assert done["freedBytes"] == on_disk - keep
    after = json.loads(run("stats", "--json").stdout)
    assert after["bytes"] == keep == sum(p.stat().st_size for p in cache.iterdir())
    assert run("stats").stdout.splitlines()[0].endswith(
        f": 1 entry, {keep / 1000:.1f} KB, {newest.duration:.1f} s of audio, 0 characters billed")


def test_counts_are_plural_only_when_they_should_be(cache):
    text = run("stats").stdout
    assert "2 entries," in text and "1 broken part and 1 stray temporary file (" in text
    dry = run("cleanup", "--older-than", "0s", "--dry-run").stdout
    assert dry.startswith("would remove 2 entries (2 old, 0 over size), 1 broken part, 1 temporary file;"), dry
    Store(cache).put("0000000d", make_wav(1), "audio/wav", 1.0, {})
    old = [e for e in Store(cache).scan().entries if e.key != "0000000d"]
    for entry in old:
        os.utime(entry.path, (time.time() - 40 * 86400,) * 2)
    done = run("cleanup", "--older-than", "30d").stdout
    assert done.startswith("removed 2 entries (2 old, 0 over size), 1 broken part, 1 temporary file;"), done
    assert done.rstrip().endswith("remains") and "; 1 entry (" in done
    assert "1 entry," in run("stats").stdout and "1 entries" not in run("stats").stdout


def test_server_stats_and_cleanup_count_right(tmp_path):
    store = Store(tmp_path / "served")
    store.put("0000000a", make_wav(1), "audio/wav", 1.0, {})
    proc, url = start_serve("--audio-path", str(store.root), cwd=tmp_path, drain=True)
    try:
        stats_line = narrator("stats", "--server", url)
        assert stats_line.returncode == 0 and ", 1 entry, " in stats_line.stdout, stats_line.stdout
        os.utime(store.scan().entries[0].path, (time.time() - 40 * 86400,) * 2)  # past the server's 30d
        done = narrator("cleanup", "--server", url)
        assert done.returncode == 0 and "removed 1 entry, 0 broken parts, 0 temporary files" in done.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def test_stats_without_a_cache_folder_says_so(tmp_path):
    proc = narrator("stats")
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout == f"no cache at {tmp_path / 'audio-cache'} yet: narrator speak creates it\n"
    report = json.loads(narrator("stats", "--json").stdout)
    assert report["exists"] is False and report["entries"] == 0 and report["byVoice"] == []
    assert not (tmp_path / "audio-cache").exists()


def test_core_stats_and_cleanup_agree_without_the_cli(cache):
    store = Store(cache)
    before = stats(store)
    assert before["exists"] and before["bytes"] == sum(e.disk_size for e in store.scan().entries)
    result = cleanup(store, max_size=0)
    assert result.failed == [] and result.freed == before["bytes"] + before["brokenBytes"]
    assert list(cache.iterdir()) == [] and stats(store)["bytes"] == 0
