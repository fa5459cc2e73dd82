"""Benchmark for `narrator import-history` (issue 13, part C). Prints the figure next to its reference.

The whole command (a real process, start-up included) imports 1,000 history items from the local ElevenLabs
stand-in, every request (history page or audio) answered after 50 ms, into a fresh cache folder each run,
against the ideal at the command's concurrency C:

    ideal = latency + ceil(items / C) x latency

the first page (nothing can be downloaded before it), then the downloads, C at a time; the other pages
(items / page size of them) are fetched while audio downloads, so they add nothing to the ideal. Without that
overlap the ideal would be pages x latency + ceil(items / C) x latency. Target: within 1.3x. For reference it
also times the same audio GETs from a bare httpx client at the same concurrency (no process, paging or storing).

Everything runs on 127.0.0.1 in temporary folders; loops are bounded. Run:
    python benchmarks/bench_import.py [--runs 3] [--items 1000] [--concurrency 8] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def narrator_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("narrator")
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from narrator_cli.cli import main; main()"]


def clean_env(tmp: str, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NARRATOR_") and k not in ("PYTHONDONTWRITEBYTECODE", "ELEVENLABS_API_KEY")}
    return {**env, "XDG_CONFIG_HOME": os.path.join(tmp, "config"), "XDG_CACHE_HOME": os.path.join(tmp, "cache"),
            **extra}


def bench_import(items: int, concurrency: int, latency: float, runs: int) -> None:
    from fake_elevenlabs import FakeElevenLabs

    from narrator_cli.costs.history import PAGE_SIZE
    from narrator_cli.store import Store

    with tempfile.TemporaryDirectory() as tmp, FakeElevenLabs(latency=latency) as fake:
        made = [fake.account.add_history(f"History line number {i} of the benchmark.",
                                         model_id="eleven_multilingual_v2") for i in range(items)]
        for item in made:
            fake.account.audio(item)  # made once, before timing: the stand-in's own work is not the command's
        env = clean_env(tmp, ELEVENLABS_API_KEY=fake.api_key, NARRATOR_ELEVENLABS_BASE_URL=fake.url)
        took = []
        for run in range(runs):
            folder = Path(tmp) / f"cache-{run}"
            cmd = [*narrator_cmd(), "import-history", "--concurrency", str(concurrency), "--audio-path", str(folder)]
            before = fake.request_count
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, cwd=tmp, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            took.append(time.perf_counter() - t0)
            entries = len(Store(folder).scan().entries)
            assert entries == items, f"run {run}: {entries} entries, not {items}"
            requests = fake.request_count - before
        floor = min(plain_gets(fake, [i.history_item_id for i in made], concurrency) for _ in range(2))
        pages = math.ceil(items / PAGE_SIZE)
        ideal = latency + math.ceil(items / concurrency) * latency
        serial = pages * latency + math.ceil(items / concurrency) * latency
        best, median = min(took), statistics.median(took)
        print(f"import-history, {items} items, concurrency {concurrency}, {latency * 1000:.0f} ms latency: "
              f"median {median:.2f} s (best {best:.2f} s)   ideal {ideal:.2f} s   ratio {median / ideal:.2f}x "
              f"(target <= 1.3x; {runs} runs; {requests} requests a run: {pages} pages + {items} audio; "
              f"ideal without overlapped paging {serial:.2f} s)")
        print(f"  reference: the same {items} audio GETs with a bare httpx client, {concurrency} at a time, in this "
              f"process: {floor:.2f} s ({floor / ideal:.2f}x the ideal: the stand-in's and the client's own cost)")


def plain_gets(fake, ids: list[str], concurrency: int) -> float:
    """Seconds for a bare httpx client to GET every item's audio, ``concurrency`` at a time (no paging, no
    storing, no process start): how close to the ideal the stand-in itself lets anything get."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    with httpx.Client(base_url=fake.url, headers={"xi-api-key": fake.api_key},
                      limits=httpx.Limits(max_connections=concurrency)) as client:
        def get(item_id: str) -> int:
            return len(client.get(f"/v1/history/{item_id}/audio").content)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            assert all(pool.map(get, ids))
        return time.perf_counter() - t0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8, help="the command's default")
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    bench_import(args.items, args.concurrency, args.latency, min(args.runs, 20))
