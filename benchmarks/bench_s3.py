"""Benchmarks for the bucket tier (issue 15), in one run against a real SeaweedFS on 127.0.0.1.

1. A read-through miss on `narrator serve --storage`: a check of a key only the bucket holds (the server GETs
   its metadata and audio, verifies the hash, keeps it in its folder, answers) against a plain boto3 GET of the
   same audio object (target: within 1.5x). Median of N distinct keys, alternated.
2. 500 keys checked against the bucket directly (``Bucket.exists``)
   against the same 500 HEAD requests made one after another with boto3 (target: within 1.3x).
3. The real command, ``narrator check --server s3://BUCKET/PREFIX --file`` of 500 lines (a process, start-up
   included; a metadata GET per line, a few at once), against 500 sequential boto3 HEADs (target: within 1.3x).

Loops are bounded; everything lives in a temporary folder. Run:
    python benchmarks/bench_s3.py
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from audio_fixtures import make_mp3
from s3_store import WeedStore
from serve_process import start_serve

from narrator_cli.client import Client
from narrator_cli.store import Store

READ_THROUGH_KEYS = 60
CHECK_KEYS = 500


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
        root = Path(tmp)
        weed = WeedStore(root / "weed")
        weed.start()
        os.environ.update(weed.env())
        try:
            run(root, weed)
        finally:
            weed.stop()


def run(root: Path, weed: WeedStore) -> None:
    from narrator_cli.storage.bucket import Bucket

    name = weed.new_bucket()
    bucket = Bucket.from_url(f"s3://{name}/bench")
    local = Store(root / "local")
    keys = []
    for i in range(READ_THROUGH_KEYS):
        entry = local.put(f"{i:08x}", make_mp3(3.0), "audio/mpeg", 3.0, {"text": f"line {i}"})
        bucket.put(entry.meta, local.read_audio(entry))
        keys.append(entry.key)
    client = weed.client()
    proc, url = start_serve("--audio-path", str(root / "served"), "--storage", f"s3://{name}/bench", "--quiet",
                            cwd=root, drain=True)
    served, plain = [], []
    try:
        with Client(url) as narrator:
            narrator.check(["ffffffff"])  # connection and first-use costs out of the figures
            for key in keys:
                t = time.perf_counter()
                body = client.get_object(Bucket=name, Key=f"bench/{key}.mp3")["Body"].read()
                plain.append(time.perf_counter() - t)
                assert body
                t = time.perf_counter()
                found = narrator.check([key])
                served.append(time.perf_counter() - t)
                assert found[key] is not None, "read-through failed"
    finally:
        proc.kill()
        proc.wait(10)
    s, p = statistics.median(served), statistics.median(plain)
    print(f"1. read-through miss on narrator serve: median {s * 1000:.2f} ms; plain GET of the audio object: "
          f"{p * 1000:.2f} ms; ratio {s / p:.2f}x (target <= 1.5x)")

    check = [f"{i:08x}" for i in range(CHECK_KEYS)]  # the first READ_THROUGH_KEYS are there, the rest are not
    rounds = []
    for _ in range(3):
        t = time.perf_counter()
        found = bucket.exists(check)
        ours = time.perf_counter() - t
        assert sum(found.values()) == READ_THROUGH_KEYS
        heads = sequential_heads(client, name, check)
        rounds.append((ours / heads, ours, heads))
    ratio, ours, heads = sorted(rounds)[len(rounds) // 2]
    print(f"2. {CHECK_KEYS} keys against the bucket: Bucket.exists {ours * 1000:.0f} ms; {CHECK_KEYS} sequential "
          f"boto3 HEADs {heads * 1000:.0f} ms; ratio {ratio:.2f}x (target <= 1.3x)")
    check_command(root, name, client)


def sequential_heads(client, name: str, keys: list[str]) -> float:  # type: ignore[no-untyped-def]
    """Seconds for the reference: a boto3 HEAD of each key's metadata, one after another."""
    t = time.perf_counter()
    for key in keys:
        try:
            client.head_object(Bucket=name, Key=f"bench/{key}.meta.json")
        except client.exceptions.ClientError:
            pass
    return time.perf_counter() - t


def check_command(root: Path, name: str, client) -> None:
    """3. ``narrator check --server s3://... --file`` of CHECK_KEYS lines, the real command in a process (start-up
    included), against CHECK_KEYS sequential boto3 HEADs of their metadata in this process."""
    import subprocess

    from serve_process import CLI

    script = root / "script.txt"
    script.write_text("".join(f"Line number {i} of the benchmark script.\n" for i in range(CHECK_KEYS)))
    env = {**os.environ, "XDG_CONFIG_HOME": str(root / "xdg")}
    args = [*CLI, "check", "--file", str(script), "--provider", "espeak", "--json", "--server", f"s3://{name}/bench"]
    rounds = []
    for _ in range(3):
        t = time.perf_counter()
        r = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False)
        ours = time.perf_counter() - t
        assert r.returncode in (0, 1) and r.stdout.count("\n") == CHECK_KEYS, r.stderr
        heads = sequential_heads(client, name, [f"{i:08x}" for i in range(CHECK_KEYS)])
        rounds.append((ours / heads, ours, heads))
    ratio, ours, heads = sorted(rounds)[len(rounds) // 2]
    print(f"3. narrator check --file ({CHECK_KEYS} lines) against the bucket: {ours * 1000:.0f} ms with start-up; "
          f"{CHECK_KEYS} sequential boto3 HEADs {heads * 1000:.0f} ms; ratio {ratio:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
