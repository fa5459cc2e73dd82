"""Benchmarks for the team cache from the command line (issue: check/upload). Prints figures
next to their references, measured in the same run against a real `narrator serve` on 127.0.0.1.

1. Checking 500 keys on the server: pipelined on one connection (what `narrator check` does)
   against 500 sequential round trips on the same connection (target: at least 10x), in alternated
   rounds, the round with the median ratio printed;
   and the whole `narrator check --file` command on a 500-line script, start-up included.
2. `narrator upload --all` of 200 local entries to an empty server.

Loops are bounded; everything lives in a temporary folder. Run:
    python benchmarks/bench_team.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from audio_fixtures import make_wav  # noqa: E402
from serve_process import CLI as NARRATOR, start_serve  # noqa: E402

from narrator_cli.client import Client  # noqa: E402
from narrator_cli.keys import cache_key  # noqa: E402
from narrator_cli.store import Store  # noqa: E402

ROUNDS = 7



def fill(store: Store, lines: list[str]) -> list[str]:
    audio = make_wav(0.5)
    keys = []
    for text in lines:
        key = cache_key(text, "mock", "120")
        store.put(key, audio, "audio/wav", 0.5, {"text": text, "voiceId": "mock", "modelId": "120"})
        keys.append(key)
    return keys


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lines = [f"Line {i}: narration that the whole team shares." for i in range(500)]
        keys = fill(Store(root / "server"), lines)
        (root / "script.txt").write_text("\n".join(lines) + "\n")
        proc, url = start_serve("--quiet", "--audio-path", str(root / "server"), "--max-age", "never", drain=True)
        env = {**os.environ, "NARRATOR_PROVIDER": "mock", "NARRATOR_SERVER": url,
               "XDG_CONFIG_HOME": str(root / "xdg")}
        try:
            rounds = []
            with Client(url) as client:
                client.check(keys[:50])  # warm up
                for _ in range(ROUNDS):  # alternated, so both see the same moments of a noisy machine
                    pipelined = min(timed(lambda: client.check(keys)) for _ in range(5))
                    sequential = timed(lambda: [client.check([k]) for k in keys])
                    rounds.append((sequential / pipelined, pipelined, sequential))
            rounds.sort()
            ratio, pipelined, sequential = rounds[len(rounds) // 2]
            command = []
            for _ in range(5):
                t0 = time.perf_counter()
                r = subprocess.run([*NARRATOR, "check", "--file", "script.txt", "--json"], cwd=root, env=env,
                                   capture_output=True, text=True, timeout=60)
                command.append(time.perf_counter() - t0)
                assert r.returncode == 0, r.stderr
            print(f"narrator serve at {url}; {os.cpu_count()} cores; the round with the median ratio of {ROUNDS}")
            print(f"  check 500 keys, pipelined on 1 connection    {pipelined * 1e3:8.1f} ms   (best of 5 batches)")
            print(f"  check 500 keys, 500 sequential round trips    {sequential * 1e3:8.1f} ms   "
                  f"pipelined is {ratio:.1f}x faster (target >= 10x; rounds {rounds[0][0]:.1f}x-{rounds[-1][0]:.1f}x)")
            print(f"  `narrator check --file` 500 lines, whole command {min(command) * 1e3:6.0f} ms "
                  "(Python start-up and imports included)")

            member = root / "member"
            fill(Store(member / "audio-cache"), [f"Upload line {i}." for i in range(200)])
            t0 = time.perf_counter()
            r = subprocess.run([*NARRATOR, "upload", "--all", "--json"], cwd=member, env=env, capture_output=True,
                               text=True, timeout=120)
            upload = time.perf_counter() - t0
            assert r.returncode == 0, r.stderr
            statuses = [json.loads(line)["status"] for line in r.stdout.splitlines()]
            assert statuses.count("uploaded") == 200, statuses
            size = sum(e.size for e in Store(member / "audio-cache").scan().entries)
            print(f"  `narrator upload --all`, 200 entries ({size / 1e6:.1f} MB) {upload * 1e3:8.0f} ms "
                  f"({200 / upload:.0f} entries/s)")
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
