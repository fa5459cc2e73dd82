import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from audio_fixtures import make_mp3, make_ogg_opus, make_wav
from narrator_cli.errors import UsageError
from narrator_cli.store import Store


def put(store: Store, key: str, data: bytes, mime: str = "audio/wav", **meta):
    return store.put(key, data, mime, 1.0, {"text": "t", "voiceId": "v", "modelId": "m", **meta})


def test_layout_matches_motion_canvas_narrator(tmp_path):
    store = Store(tmp_path)
    entry = put(store, "20fac170", make_mp3(1), "audio/mpeg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20fac170.meta.json", "20fac170.mp3"]
    meta = json.loads((tmp_path / "20fac170.meta.json").read_text())
    for field in ("cacheKey", "duration", "mimeType", "fileSize", "fileName", "createdAt", "voiceId", "modelId"):
        assert field in meta
    assert meta["fileName"] == "20fac170.mp3" and meta["fileSize"] == entry.size == len(make_mp3(1))
    assert meta["sha256"] == hashlib.sha256(make_mp3(1)).hexdigest()
    assert meta["createdAt"].endswith("Z") and len(meta["createdAt"]) == 24
    assert store.get("20fac170").meta == meta


@pytest.mark.parametrize(("mime", "ext"), [("audio/mpeg", "mp3"), ("audio/wav", "wav"), ("audio/ogg", "ogg"),
                                           ("audio/webm", "webm")])
def test_extension_follows_mime(tmp_path, mime, ext):
    assert Store(tmp_path).audio_path("0000abcd", mime).name == f"0000abcd.{ext}"


def test_owned_fields_cannot_be_overridden(tmp_path):
    entry = put(Store(tmp_path), "0000abcd", make_wav(), fileName="../../etc/passwd", fileSize=1, cacheKey="x")
    assert entry.meta["fileName"] == "0000abcd.wav" and entry.meta["cacheKey"] == "0000abcd"


@pytest.mark.parametrize("bad", ["../../../x", "ABCDEF12", "1234567", "12345678/..", "", "..", "0000abcd\x00"])
def test_bad_keys_refused_before_touching_disk(tmp_path, bad):
    root = tmp_path / "cache"
    with pytest.raises(UsageError):
        Store(root).put(bad, make_wav(), "audio/wav", 1.0)
    assert not root.exists()
    with pytest.raises(UsageError):
        Store(root).meta_path(bad)


def test_unknown_mime_refused(tmp_path):
    with pytest.raises(UsageError):
        Store(tmp_path).put("0000abcd", make_wav(), "text/html", 1.0)
    assert list(tmp_path.iterdir()) == []


def test_metadata_pointing_outside_is_absent(tmp_path):
    store = Store(tmp_path)
    put(store, "0000abcd", make_wav())
    meta_file = tmp_path / "0000abcd.meta.json"
    meta = json.loads(meta_file.read_text())
    for name in ["../secret.wav", "/etc/passwd", "0000abce.wav", "0000abcd.exe"]:
        meta_file.write_text(json.dumps({**meta, "fileName": name}))
        assert store.get("0000abcd") is None
        assert "0000abcd" not in [e.key for e in store.scan().entries]


@pytest.mark.parametrize("damage", ["no_meta", "no_audio", "bad_json", "truncated_audio", "meta_not_object"])
def test_broken_entries_are_misses_and_reported(tmp_path, damage):
    store = Store(tmp_path)
    put(store, "0000abcd", make_wav(2))
    put(store, "0000abce", make_wav(1))
    audio, meta = tmp_path / "0000abcd.wav", tmp_path / "0000abcd.meta.json"
    if damage == "no_meta":
        meta.unlink()
    elif damage == "no_audio":
        audio.unlink()
    elif damage == "bad_json":
        meta.write_text("{not json")
    elif damage == "truncated_audio":
        audio.write_bytes(audio.read_bytes()[:100])
    else:
        meta.write_text("[1, 2]")
    assert store.get("0000abcd") is None
    scan = store.scan()
    assert [e.key for e in scan.entries] == ["0000abce"]
    assert scan.broken and all(p.name.startswith("0000abcd.") for p in scan.broken)


def test_hash_mismatch_reads_as_none(tmp_path):
    store = Store(tmp_path)
    entry = put(store, "0000abcd", make_wav(1))
    data = bytearray(entry.path.read_bytes())
    data[-1] ^= 0xFF
    entry.path.write_bytes(bytes(data))
    assert store.read_audio(store.get("0000abcd")) is None


def test_overwrite_with_other_type_leaves_one_audio_file(tmp_path):
    store = Store(tmp_path)
    put(store, "0000abcd", make_wav(1))
    put(store, "0000abcd", make_ogg_opus(1), "audio/ogg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0000abcd.meta.json", "0000abcd.ogg"]
    assert store.get("0000abcd").meta["mimeType"] == "audio/ogg"


def test_touch_marks_use(tmp_path):
    store = Store(tmp_path)
    entry = put(store, "0000abcd", make_wav())
    os.utime(entry.path, (1000, 1000))
    assert store.get("0000abcd").mtime == 1000
    store.touch(store.get("0000abcd"))
    assert store.get("0000abcd").mtime > time.time() - 60


WRITER = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {tests!r})
    from narrator_cli.store import Store
    store = Store(sys.argv[1])
    keys = sys.argv[2].split(",")
    count = int(sys.argv[3])  # 0: until killed
    i = 0
    print("ready", flush=True)
    if count:
        sys.stdin.readline()  # start together with the other writers
    while count == 0 or i < count:
        data = os.urandom(50_000 + (i * 7919) % 400_000)
        store.put(keys[i % len(keys)], data, "audio/wav", 1.0, {{"text": str(i), "writer": os.getpid()}})
        i += 1
    """
)


def start_writer(root: Path, keys: list[str], count: int = 0) -> subprocess.Popen:
    code = WRITER.format(tests=str(Path(__file__).parent))
    proc = subprocess.Popen([sys.executable, "-c", code, str(root), ",".join(keys), str(count)],
                            stdout=subprocess.PIPE, stdin=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    return proc


def assert_consistent(store: Store) -> int:
    scan = store.scan()
    for entry in scan.entries:
        data = entry.path.read_bytes()
        assert len(data) == entry.size
        assert hashlib.sha256(data).hexdigest() == entry.meta["sha256"], entry.key
        assert store.get(entry.key) == entry
    return len(scan.entries)


def test_sigkill_at_any_moment_never_leaves_a_broken_visible_entry(tmp_path):
    store = Store(tmp_path)
    keys = ["0000000a", "0000000b", "0000000c"]
    kills = 0
    for i in range(40):
        proc = start_writer(tmp_path, keys)
        time.sleep(0.002 + (i % 10) * 0.007)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        assert_consistent(store)
    assert kills == 40
    assert assert_consistent(store) >= 1
    # what the kills left behind is ignored by readers and removed by cleanup
    from narrator_cli.maintenance import cleanup

    for tmp in tmp_path.glob(".*.tmp"):
        os.utime(tmp, (1, 1))
    cleanup(store)
    assert not list(tmp_path.glob(".*.tmp"))
    assert store.scan().broken == []


def test_concurrent_writers_of_one_key_end_consistent(tmp_path):
    store = Store(tmp_path)
    procs = [start_writer(tmp_path, ["0000abcd"], count=60) for _ in range(4)]
    for p in procs:
        p.stdin.write(b"go\n")
        p.stdin.flush()
    commits = 0
    deadline = time.monotonic() + 30
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        entry = store.get("0000abcd")
        assert len(store.scan().entries) <= 1
        commits += entry is not None
        if entry is not None:  # a commit may land between reading the metadata and the audio: a miss, never wrong bytes
            data = store.read_audio(entry)
            assert data is None or hashlib.sha256(data).hexdigest() == entry.meta["sha256"]
        time.sleep(0.01)
    assert [p.wait(timeout=30) for p in procs] == [0, 0, 0, 0]
    assert commits > 0  # the readers really ran while the writers did
    assert assert_consistent(store) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".tmp")) == [
        "0000abcd.meta.json", "0000abcd.wav"]
