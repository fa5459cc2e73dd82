"""The object-storage tier against a real S3-compatible store (SeaweedFS) on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from audio_fixtures import make_mp3, make_wav
from fake_elevenlabs import FakeElevenLabs
from s3_store import WeedStore, bucket_env, s3  # noqa: F401 - fixtures
from serve_process import CLI, start_serve
from test_sync import eleven_env, put, rows, run

from narrator_cli.client import Client
from narrator_cli.errors import UsageError
from narrator_cli.store import Store


def _entry(tmp_path, key: str = "0123abcd", audio: bytes | None = None, mime: str = "audio/mpeg"):
    """A real local entry (the store writes size and sha256), and its bytes."""
    audio = audio if audio is not None else make_mp3(0.5)
    entry = Store(tmp_path / "local").put(key, audio, mime, 0.5, {"text": "hello"})
    return entry.meta, audio


def _bucket(name: str, prefix: str = "team"):
    from narrator_cli.storage.bucket import Bucket

    return Bucket.from_url(f"s3://{name}/{prefix}")


# --- step 1: the bucket ---------------------------------------------------------------------------------------
def test_put_then_get_round_trips_in_the_folder_layout(bucket_env, tmp_path):  # noqa: F811
    store, name, _ = bucket_env
    bucket = _bucket(name)
    meta, audio = _entry(tmp_path)
    assert bucket.get("0123abcd") is None
    assert bucket.put(meta, audio) is True
    got = bucket.get("0123abcd")
    assert got is not None and got[1] == audio and got[0]["sha256"] == hashlib.sha256(audio).hexdigest()
    names = {o["Key"] for o in store.client().list_objects_v2(Bucket=name)["Contents"]}
    assert names == {"team/0123abcd.mp3", "team/0123abcd.meta.json"}
    assert bucket.keys() == {"0123abcd"}
    assert bucket.exists(["0123abcd", "ffffffff"]) == {"0123abcd": True, "ffffffff": False}
    bucket.delete("0123abcd")
    assert bucket.get("0123abcd") is None and bucket.keys() == set()


def test_keys_pages_through_a_long_listing(bucket_env):  # noqa: F811
    store, name, _ = bucket_env
    client = store.client()
    for i in range(1005):  # more than one page of 1000
        client.put_object(Bucket=name, Key=f"p/{i:08x}.meta.json", Body=b"{}")
    client.put_object(Bucket=name, Key="p/not-a-key.meta.json", Body=b"{}")
    assert len(_bucket(name, "p").keys()) == 1005


def test_a_corrupted_audio_object_is_refused_by_its_hash(bucket_env, tmp_path):  # noqa: F811
    from narrator_cli.storage.bucket import Corrupt

    store, name, _ = bucket_env
    bucket = _bucket(name)
    meta, audio = _entry(tmp_path)
    bucket.put(meta, audio)
    other = bytearray(audio)
    other[100] ^= 0xFF  # same size, other bytes
    store.client().put_object(Bucket=name, Key="team/0123abcd.mp3", Body=bytes(other))
    with pytest.raises(Corrupt, match="sha256"):
        bucket.get("0123abcd")
    store.client().put_object(Bucket=name, Key="team/0123abcd.meta.json", Body=b'{"cacheKey": "0123abcd"}')
    with pytest.raises(Corrupt, match="not valid entry metadata"):
        bucket.get("0123abcd")


def test_the_store_honours_if_none_match(bucket_env):  # noqa: F811
    store, name, _ = bucket_env
    client = store.client()
    client.put_object(Bucket=name, Key="x", Body=b"first", IfNoneMatch="*")
    with pytest.raises(Exception, match="PreconditionFailed"):
        client.put_object(Bucket=name, Key="x", Body=b"second", IfNoneMatch="*")
    assert client.get_object(Bucket=name, Key="x")["Body"].read() == b"first"


def test_two_concurrent_writers_of_one_key_one_wins_whole(bucket_env, tmp_path):  # noqa: F811
    _, name, _ = bucket_env
    for round_ in range(5):
        key = f"{round_:08x}"
        entries = [_entry(tmp_path / "a", key, make_mp3(0.5 + round_ / 10)),
                   _entry(tmp_path / "b", key, make_wav(0.4 + round_ / 10), "audio/wav")]
        results: list[bool] = []
        start = threading.Barrier(2)
        threads = [threading.Thread(target=_write, args=(start, results, _bucket(name), *e)) for e in entries]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results) == [False, True]
        meta, audio = _bucket(name).get(key)  # whole: get checks the audio against its metadata's hash
        assert (meta["sha256"], audio) in {(m["sha256"], a) for m, a in entries}


def _write(start: threading.Barrier, results: list[bool], bucket, meta: dict, audio: bytes) -> None:
    start.wait(5)
    results.append(bucket.put(meta, audio))


def test_wrong_credentials_are_told_apart_from_a_missing_key(bucket_env, monkeypatch):  # noqa: F811
    from narrator_cli.storage.bucket import Denied

    _, name, _ = bucket_env
    _bucket(name).probe()  # a missing key: fine
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(Denied, match="SignatureDoesNotMatch") as raised:
        _bucket(name).probe()
    assert "not-the-secret" not in str(raised.value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(Denied, match="InvalidAccessKeyId"):
        _bucket(name).get("0123abcd")


def test_an_unreachable_store_is_unavailable(monkeypatch):
    import boto3  # noqa: F401
    from narrator_cli.storage.bucket import Unavailable

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    with pytest.raises(Unavailable, match="unavailable"):
        _bucket("somebucket").get("0123abcd")


@pytest.mark.parametrize("url", ["s3://", "s3://A_B/x", "s3://ok-bucket/a//b", "s3://ok-bucket/../x", "http://x/y"])
def test_a_bad_bucket_url_is_one_line(url):
    from narrator_cli.storage.bucket import parse_url

    with pytest.raises(UsageError):
        parse_url(url)
    assert parse_url("s3://ok-bucket/a/b/") == ("ok-bucket", "a/b")


# --- step 2: narrator serve --storage -------------------------------------------------------------------------


@pytest.fixture
def serves(tmp_path):
    procs: list[subprocess.Popen] = []

    def start(folder: str, url: str, *args: str) -> str:
        proc, base = start_serve("--audio-path", str(tmp_path / folder), "--storage", url, *args, cwd=tmp_path,
                                 drain=True)
        procs.append(proc)
        return base

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(10)


def _health(url: str) -> dict:
    with Client(url) as client:
        return client.endpoint("health")


def _settled(url: str, uploaded: int, timeout: float = 60.0) -> dict:
    """The server's bucket counters once ``uploaded`` entries reached the bucket (bounded in time)."""
    deadline = time.monotonic() + timeout
    while True:
        storage = _health(url)["storage"]
        if storage["uploaded"] >= uploaded and storage["pending"] == 0 or time.monotonic() > deadline:
            return storage
        time.sleep(0.2)


def test_two_servers_one_bucket_the_team_pays_once(bucket_env, serves, tmp_path):  # noqa: F811
    _, name, env = bucket_env
    a, b = serves("a-cache", f"s3://{name}/team"), serves("b-cache", f"s3://{name}/team")
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    alice.mkdir(), bob.mkdir()
    lines = ["The first line.", "A second line."]
    with FakeElevenLabs() as fake:
        r = run(alice, "speak", *lines, "--server", a, "--json", env={**env, **eleven_env(fake)})
        assert r.returncode == 0, r.stderr
        assert len(fake.posts()) == 2
        assert _settled(a, 2)["uploaded"] == 2
        r = run(bob, "speak", *lines, "--server", b, "--json", env={**env, **eleven_env(fake)})
        assert r.returncode == 0, r.stderr
        assert {row["status"] for row in rows(r)} == {"server"}
        assert len(fake.posts()) == 2  # the team paid once
    assert _health(b)["storage"]["readThrough"] == 2
    assert len(list((tmp_path / "b-cache").glob("*.meta.json"))) == 2  # kept in B's folder


def test_a_corrupted_object_is_refused_by_the_server(bucket_env, serves, tmp_path):  # noqa: F811
    store, name, _ = bucket_env
    meta, audio = _entry(tmp_path)
    _bucket(name).put(meta, audio)
    other = bytearray(audio)
    other[200] ^= 0x55
    store.client().put_object(Bucket=name, Key="team/0123abcd.mp3", Body=bytes(other))
    url = serves("cache", f"s3://{name}/team")
    with Client(url) as client:
        assert client.check(["0123abcd"]) == {"0123abcd": None}
    assert _health(url)["storage"]["corrupt"] == 1
    assert not (tmp_path / "cache" / "0123abcd.mp3").exists()


def test_a_read_through_answers_before_its_copy_lands_and_the_audio_waits_for_it(bucket_env, serves,  # noqa: F811
                                                                                   tmp_path):
    """The check is answered once the bucket's entry is verified; the copy into the folder is committed after,
    and an audio request in between waits for that commit rather than missing. Holding the folder's lock (the
    one every commit takes for its renames) keeps the commit pending for as long as the test needs."""
    import fcntl

    import httpx

    store, name, _ = bucket_env
    meta, audio = _entry(tmp_path)
    _bucket(name).put(meta, audio)
    folder = tmp_path / "cache"
    folder.mkdir()
    url = serves("cache", f"s3://{name}/team")
    lock = os.open(folder, os.O_RDONLY)
    got: dict = {}
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with Client(url) as client:
            found = client.check(["0123abcd"])["0123abcd"]
        assert found is not None and found["metadata"]["sha256"] == meta["sha256"]
        assert not (folder / "0123abcd.meta.json").exists()  # answered, not yet committed
        fetch = threading.Thread(target=lambda: got.update(r=httpx.get(url + found["filePath"], timeout=60)))
        fetch.start()
        fetch.join(0.5)
        assert fetch.is_alive() and not got  # the audio request waits for the commit, it does not miss
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
    fetch.join(60)
    assert got["r"].status_code == 200 and got["r"].content == audio
    assert json.loads((folder / "0123abcd.meta.json").read_text()) == found["metadata"]  # what it answered
    assert _health(url)["storage"]["readThrough"] == 1


def test_wrong_credentials_refuse_to_start_with_one_line(bucket_env, tmp_path):  # noqa: F811
    _, name, _ = bucket_env
    r = subprocess.run([*CLI, "serve", "--port", "0", "--storage", f"s3://{name}/team"], cwd=tmp_path,
                       env={**os.environ, "AWS_SECRET_ACCESS_KEY": "wrong-secret-value"},
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("narrator: error: ") and "credentials" in r.stderr
    assert "wrong-secret-value" not in r.stderr


def test_storage_is_refused_in_narrator_toml(tmp_path):
    (tmp_path / "narrator.toml").write_text('storage = "s3://b-ucket/x"\n')
    r = run(tmp_path, "serve", "--port", "0")
    assert r.returncode == 2 and "does not belong in a project file" in r.stderr
    assert r.stderr.count("\n") == 1


def test_the_bucket_killed_and_restarted_under_load_loses_nothing(tmp_path, serves, monkeypatch):
    import boto3  # noqa: F401
    weed = WeedStore(tmp_path / "weed")
    weed.start()
    try:
        for k, v in weed.env().items():
            monkeypatch.setenv(k, v)
        name = weed.new_bucket()
        a, b = serves("a-cache", f"s3://{name}/p"), serves("b-cache", f"s3://{name}/p")
        local = Store(tmp_path / "local")
        entries = [local.put(f"{i:08x}", make_mp3(0.2 + i / 100), "audio/mpeg", 0.2, {"text": str(i)})
                   for i in range(40)]
        with Client(a) as client:
            for i, entry in enumerate(entries):
                client.upload(entry, local.read_audio(entry))  # acknowledged: the bucket must get it
                if i == 10:
                    weed.kill()
                if i == 25:
                    weed.start()
        storage = _settled(a, len(entries), timeout=120)
        assert storage["uploaded"] == len(entries) and storage["overflowed"] == 0
        with Client(b) as client:  # every entry read through by the other server, whole
            found = client.check([e.key for e in entries])
            assert all(found.values())
            for entry in entries:
                got = client.download(Store(tmp_path / "fetched"), found[entry.key])
                assert got.meta["sha256"] == entry.meta["sha256"]
    finally:
        weed.stop()


def test_a_cache_hit_speak_never_imports_boto3(tmp_path):
    """The bucket's client is large: a speak that uses no bucket must not pay for loading it."""
    r = run(tmp_path, "speak", "A cached line.", "--provider", "espeak", "--json")
    if r.returncode != 0:
        pytest.skip(f"espeak cannot speak here: {r.stderr.strip()}")
    probe = ("import sys\nfrom narrator_cli.cli import main\ntry:\n    main()\nfinally:\n"
             "    print('loaded:', sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')"
             " or m.startswith('narrator_cli.storage.')), file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", probe, "speak", "A cached line.", "--provider", "espeak", "--json"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert proc.returncode == 0 and json.loads(proc.stdout)["status"] == "cached", proc.stderr
    assert "loaded: []" in proc.stderr


# --- step 3: the CLI against a bucket directly (--server s3://...) ---------------------------------------------
def test_speak_against_a_bucket_the_team_pays_once(bucket_env, tmp_path):  # noqa: F811
    store, name, env = bucket_env
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    alice.mkdir(), bob.mkdir()
    lines = ["The first line.", "A second line."]
    url = f"s3://{name}/team"
    with FakeElevenLabs() as fake:
        r = run(alice, "speak", *lines, "--server", url, "--json", env={**env, **eleven_env(fake)})
        assert r.returncode == 0, r.stderr
        assert {row["status"] for row in rows(r)} == {"generated"} and len(fake.posts()) == 2
        names = {o["Key"] for o in store.client().list_objects_v2(Bucket=name)["Contents"]}
        keys = {row["cacheKey"] for row in rows(r)}
        assert names == {f"team/{k}.{ext}" for k in keys for ext in ("mp3", "meta.json")}
        r = run(bob, "speak", *lines, "--json", env={**env, **eleven_env(fake), "NARRATOR_SERVER": url})
        assert r.returncode == 0, r.stderr
        assert {row["status"] for row in rows(r)} == {"server"}
        assert len(fake.posts()) == 2  # the team paid once
    assert len(list((bob / "audio-cache").glob("*.meta.json"))) == 2


def test_check_upload_sync_and_stats_against_a_bucket(bucket_env, tmp_path):  # noqa: F811
    _, name, env = bucket_env
    url = f"s3://{name}/team"
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    alice.mkdir(), bob.mkdir()
    local = Store(alice / "audio-cache")
    audios = {key: put(local, key) for key in ("0000000a", "0000000b", "0000000c")}
    r = run(alice, "check", "--key", "0000000a", "--server", url, env=env)
    assert r.returncode == 1 and "server:NO" in r.stdout, r.stderr
    r = run(alice, "upload", "--all", "--server", url, "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert {row["status"] for row in rows(r)} == {"uploaded"} and len(rows(r)) == 3
    r = run(alice, "check", "--key", "0000000a", "--key", "0000000b", "--server", url, env=env)
    assert r.returncode == 0 and r.stdout.count("server:yes") == 2, r.stderr
    r = run(alice, "upload", "--all", "--server", url, "--json", env=env)  # the second time: all present
    assert {row["status"] for row in rows(r)} == {"present"}, r.stderr
    r = run(bob, "sync", "--pull", "--server", url, "--json", env=env)
    assert r.returncode == 0, r.stderr
    fetched = Store(bob / "audio-cache")
    for key, audio in audios.items():
        entry = fetched.get(key)
        assert entry is not None and fetched.read_audio(entry) == audio
    r = run(bob, "stats", "--server", url, env=env)
    assert r.returncode == 0, r.stderr
    expected = sum(p.stat().st_size for p in (alice / "audio-cache").glob("0000000?.*"))
    assert r.stdout.startswith(f"{url}: bucket, 3 entries, ") and "from a listing" in r.stdout
    r = run(bob, "stats", "--server", url, "--json", env=env)
    assert json.loads(r.stdout)["entries"] == 3 and json.loads(r.stdout)["bytes"] == expected


def test_sync_push_to_a_bucket(bucket_env, tmp_path):  # noqa: F811
    _, name, env = bucket_env
    local = Store(tmp_path / "audio-cache")
    audio = put(local, "0000000d")
    r = run(tmp_path, "sync", "--push", "--server", f"s3://{name}/p", "--json", env=env)
    assert r.returncode == 0 and [row["status"] for row in rows(r)] == ["pushed"], r.stderr
    assert _bucket(name, "p").get("0000000d")[1] == audio


def test_wrong_credentials_for_a_bucket_are_one_line_exit_2(bucket_env, tmp_path):  # noqa: F811
    _, name, env = bucket_env
    bad = {**env, "AWS_SECRET_ACCESS_KEY": "wrong-secret-value"}
    for args in (["check", "A line.", "--provider", "espeak"], ["stats"], ["sync", "--pull"],
                 ["speak", "A line.", "--provider", "espeak"]):
        r = run(tmp_path, *args, "--server", f"s3://{name}/team", env=bad)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("narrator: error: ") and "credentials" in r.stderr
        assert "wrong-secret-value" not in r.stderr


def test_an_unreachable_bucket_is_as_an_unreachable_server(tmp_path):
    env = {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    url = "s3://somebucket/team"
    r = run(tmp_path, "check", "--key", "0123abcd", "--server", url, env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unavailable" in r.stderr, r.stderr
    with FakeElevenLabs() as fake:
        r = run(tmp_path, "speak", "A line.", "--server", url, "--json", env={**env, **eleven_env(fake)})
    assert r.returncode == 0, r.stderr
    assert rows(r)[0]["status"] == "generated" and "team cache skipped" in r.stderr


def test_stats_names_a_servers_bucket_tier(bucket_env, serves, tmp_path):  # noqa: F811
    _, name, _ = bucket_env
    url = serves("cache", f"s3://{name}/team")
    local = Store(tmp_path / "local")
    entry = local.put("0000000e", make_mp3(0.3), "audio/mpeg", 0.3, {"text": "x"})
    with Client(url) as client:
        client.upload(entry, local.read_audio(entry))
    _settled(url, 1)
    r = run(tmp_path, "stats", "--server", url)
    assert r.returncode == 0, r.stderr
    assert f"bucket s3://{name}/team: 1 uploaded, 0 pending, 0 overflowed, 0 refused as corrupt" in r.stdout


def test_get_of_a_non_mp3_entry_reads_the_file_its_metadata_names(bucket_env, tmp_path):  # noqa: F811
    """``get`` asks for ``{key}.mp3`` alongside the metadata; an entry of another type must not take it."""
    store, name, _ = bucket_env
    bucket = _bucket(name)
    meta, audio = _entry(tmp_path, audio=make_wav(0.4), mime="audio/wav")
    bucket.put(meta, audio)
    store.client().put_object(Bucket=name, Key="team/0123abcd.mp3", Body=make_mp3(0.2))  # a stray of another type
    got = bucket.get("0123abcd")
    assert got is not None and got[0]["fileName"] == "0123abcd.wav" and got[1] == audio


def test_cleanup_storage_removes_the_oldest_entries_metadata_first(bucket_env, tmp_path):  # noqa: F811
    """``cleanup --storage``: by age, then the oldest until the rest fits; --dry-run removes nothing."""
    _, name, env = bucket_env
    url = f"s3://{name}/old"
    local = Store(tmp_path / "audio-cache")
    keys = ["0000c001", "0000c002", "0000c003"]
    for key in keys:  # completed a second or more apart: the listing's times have whole seconds
        put(local, key)
        r = run(tmp_path, "upload", key, "--server", url, env=env)
        assert r.returncode == 0, r.stderr
        time.sleep(1.1)
    sizes = {key: sum(p.stat().st_size for p in (tmp_path / "audio-cache").glob(f"{key}.*")) for key in keys}
    fits_one = str(sizes[keys[2]] + 10) + "B"
    dry = run(tmp_path, "cleanup", "--storage", url, "--max-size", fits_one, "--dry-run", "--json", env=env)
    assert dry.returncode == 0 and json.loads(dry.stdout)["removed"] == keys[:2], dry.stderr
    assert run(tmp_path, "check", *sum((["--key", k] for k in keys), []), "--server", url, env=env).returncode == 0
    done = run(tmp_path, "cleanup", "--storage", url, "--max-size", fits_one, env=env)
    assert done.returncode == 0 and "removed 2 entries" in done.stdout and "1 entry kept" in done.stdout, done.stderr
    gone = run(tmp_path, "check", "--key", keys[0], "--server", url, env=env)
    assert gone.returncode == 1
    assert run(tmp_path, "check", "--key", keys[2], "--server", url, env=env).returncode == 0
    aged = run(tmp_path, "cleanup", "--storage", url, "--older-than", "1s", "--json", env=env)
    assert aged.returncode == 0 and json.loads(aged.stdout)["removed"] == [keys[2]], aged.stderr
    bare = run(tmp_path, "cleanup", "--storage", url, env=env)
    assert bare.returncode == 2 and "needs --older-than and/or --max-size" in bare.stderr


def test_an_outage_is_said_once_and_a_full_queue_overflows_counted(tmp_path, monkeypatch):
    """Nothing listens at the bucket's endpoint: the uploads wait (one log line for the outage, however many
    retries), the bounded queue keeps what fits, and the rest is logged and counted as overflowed."""
    from narrator_cli.storage.bucket import Bucket
    from narrator_cli.storage.tier import Tier

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # the discard port: connections refused
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    store = Store(tmp_path / "cache")
    keys = [f"0000d00{i}" for i in range(6)]
    for key in keys:
        put(store, key)
    logged: list[tuple[str, str]] = []
    tier = Tier(Bucket.from_url("s3://team-bucket/p"), store,
                lambda event, message, **f: logged.append((event, message)), queue_size=2)
    try:
        for key in keys:
            tier.enqueue(key)
        deadline = time.monotonic() + 20
        while not any("unavailable" in m for _, m in logged) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # the first upload retries with backoff meanwhile
        stats = tier.stats()
        assert stats["reachable"] is False and stats["uploaded"] == 0
        assert stats["overflowed"] >= 3 and stats["queued"] + stats["overflowed"] == len(keys)
        assert sum("full" in m for _, m in logged) == stats["overflowed"]
        assert sum("unavailable" in m for _, m in logged) == 1  # one line per outage, not per retry
    finally:
        tier.close(grace=0.1)


# --- a store served over https, by a certificate authority made for the test ------------------------------------
@pytest.fixture(scope="module")
def https_store(tmp_path_factory):
    """A second ``weed mini`` serving S3 over https only; (store, bucket, environment, CA file)."""
    import trustme

    root = tmp_path_factory.mktemp("weed-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    cert.private_key_pem.write_to_path(str(root / "key.pem"))
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    store = WeedStore(root / "weed", tls=(root / "cert.pem", root / "key.pem", root / "ca.pem"))
    store.start()
    yield store, store.new_bucket(), store.env(), root / "ca.pem"
    store.stop()


def test_the_command_line_against_an_https_bucket_trusts_only_the_given_ca(https_store, tmp_path):
    _, name, env, ca = https_store
    url = f"s3://{name}/cli"
    r = run(tmp_path, "speak", "Over TLS.", "--provider", "mock", "--server", url, "--ca-file", str(ca), "--json",
            env=env)
    assert r.returncode == 0, r.stderr
    r = run(tmp_path, "check", "Over TLS.", "--provider", "mock", "--server", url, "--ca-file", str(ca), "--json",
            env=env)
    assert r.returncode == 0 and rows(r)[0]["server"] is True, r.stdout + r.stderr
    for command in (["check", "Over TLS.", "--provider", "mock"], ["stats"]):  # a signed GET; a boto3 listing
        r = run(tmp_path, *command, "--server", url, env=env)
        assert r.returncode == 2, r.stdout + r.stderr
        assert r.stderr.count("\n") == 1 and "cannot trust the store's certificate" in r.stderr, r.stderr
    r = run(tmp_path, "check", "Over TLS.", "--provider", "mock", "--server", url, "--json",
            env={**env, "AWS_CA_BUNDLE": str(ca)})  # the usual AWS variable does as well
    assert r.returncode == 0 and rows(r)[0]["server"] is True, r.stderr


def test_serve_reads_through_an_https_bucket_with_aws_ca_bundle(https_store, tmp_path, monkeypatch):
    _, name, env, ca = https_store
    meta, audio = _entry(tmp_path, key="0badcafe")
    for key, value in {**env, "AWS_CA_BUNDLE": str(ca)}.items():
        monkeypatch.setenv(key, value)
    _bucket(name, "served").put(meta, audio)
    proc, url = start_serve("--audio-path", str(tmp_path / "cache"), "--storage", f"s3://{name}/served",
                            cwd=tmp_path, drain=True)
    try:
        with Client(url) as client:
            assert client.check(["0badcafe"])["0badcafe"]["metadata"]["sha256"] == meta["sha256"]
    finally:
        proc.kill()
        proc.wait(10)
    monkeypatch.delenv("AWS_CA_BUNDLE")
    r = subprocess.run([*CLI, "serve", "--port", "0", "--storage", f"s3://{name}/served"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cannot trust" in r.stderr, r.stderr


def test_a_throttling_bucket_never_holds_up_clients_and_gets_every_upload_once_it_relents(tmp_path, monkeypatch):
    """The store answers every request with 503 (its circuit breaker): the server keeps answering from its folder,
    acknowledges uploads, says so once, and sends them all when the store takes requests again."""
    weed = WeedStore(tmp_path / "weed")
    weed.start()
    proc = None
    try:
        for k, v in weed.env().items():
            monkeypatch.setenv(k, v)
        name = weed.new_bucket()
        meta, audio = _entry(tmp_path, key="0badf00d")
        _bucket(name, "p").put(meta, audio)  # only the bucket holds it
        proc, url = start_serve("--audio-path", str(tmp_path / "cache"), "--storage", f"s3://{name}/p",
                                cwd=tmp_path)
        local = Store(tmp_path / "local")
        entries = [local.put(f"{i:08x}", make_mp3(0.2), "audio/mpeg", 0.2, {"text": str(i)}) for i in range(5)]
        weed.throttle(True)
        with Client(url) as client:
            assert client.check(["0badf00d"]) == {"0badf00d": None}  # a miss for now, not an error or a wait
            for entry in entries:
                assert client.upload(entry, local.read_audio(entry))["cacheKey"] == entry.key
            assert all(client.check([e.key for e in entries]).values())  # served from its folder
        storage = _health(url)["storage"]
        assert storage["reachable"] is False and storage["uploaded"] == 0 and storage["failed"] == 0
        weed.throttle(False)
        storage = _settled(url, len(entries), timeout=90)
        assert storage["uploaded"] == len(entries) and storage["failed"] == 0
        assert _bucket(name, "p").exists([e.key for e in entries]) == {e.key: True for e in entries}
        with Client(url) as client:
            assert client.check(["0badf00d"])["0badf00d"] is not None  # read through again once it relents
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(10)
        weed.stop()
    log = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
    said = [entry.get("message", "") for entry in log]
    assert sum("bucket unavailable" in m for m in said) == 1, said  # one line per outage, however many retries
    assert sum("reachable again" in m for m in said) == 1, said


def test_two_folders_kept_in_step_through_a_bucket_by_sync_watch(bucket_env, tmp_path):  # noqa: F811
    """``sync --watch --server s3://...`` in two folders: what lands in one reaches the other through the bucket
    (pushed as it appears; the other lists the bucket every ``poll_every`` seconds), and Ctrl-C ends both."""
    import signal

    _, name, env = bucket_env
    url = f"s3://{name}/watch"
    stores = {side: Store(tmp_path / side) for side in ("a", "b")}
    procs = {}
    for side, store in stores.items():
        store.root.mkdir()
        procs[side] = subprocess.Popen([*CLI, "sync", "--watch", "--server", url, "--audio-path", side, "--json"],
                                       cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                       env={**os.environ, **env})
    try:
        time.sleep(1.5)  # the first rounds and the watchers are up
        audio = put(stores["a"], "0000e001")
        deadline = time.monotonic() + 40  # a push, then at most a poll interval (10 s) and a pull
        while stores["b"].get("0000e001") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stores["b"].get("0000e001") is not None
        assert stores["b"].read_audio(stores["b"].get("0000e001")) == audio
        for proc in procs.values():
            proc.send_signal(signal.SIGINT)
        outs = {side: proc.communicate(timeout=20) for side, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for side, (out, err) in outs.items():
        assert procs[side].returncode == 0 and "Traceback" not in err, err
    assert ("0000e001", "pushed") in {(r["cacheKey"], r["status"]) for r in map(json.loads, outs["a"][0].splitlines())}
    assert ("0000e001", "pulled") in {(r["cacheKey"], r["status"]) for r in map(json.loads, outs["b"][0].splitlines())}
