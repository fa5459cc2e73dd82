"""Benchmarks for `narrator speak` (issue: core). Prints figures side by side with their references.

1. A cache-hit `narrator speak` against `python -c "import typer"` (target: at most 1.25x).
2. A 100-line cold batch against a local fake ElevenLabs with 200 ms latency at concurrency 8,
   against the ideal ceil(100/8) * 0.2 s (target: within 1.3x).
3. `narrator stats` on 20,000 entries against reading every metadata file (target: under 2 s).
4. A 100-line espeak batch writing MP3 (the default) against the same batch writing WAV, fresh cache each
   run, rounds alternated (target: MP3 adds at most 30%, ratio <= 1.3x).

Everything runs on 127.0.0.1 in temporary folders; loops are bounded. Run:
    python benchmarks/bench_speak.py [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def narrator_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("narrator")
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from narrator_cli.cli import main; main()"]


def timed(cmd: list[str], env: dict, cwd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def clean_env(tmp: str, **extra: str) -> dict:
    """The environment a user has: bytecode caches on (pip writes them for typer too), no host settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NARRATOR_") and k not in ("PYTHONDONTWRITEBYTECODE", "ELEVENLABS_API_KEY")}
    return {**env, "XDG_CONFIG_HOME": os.path.join(tmp, "config"), **extra}


def bench_hit(runs: int) -> None:
    import compileall

    compileall.compile_dir(str(ROOT / "narrator_cli"), quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        env = clean_env(tmp, NARRATOR_PROVIDER="mock")
        speak = [*narrator_cmd(), "speak", "A line that is already in the cache."]
        subprocess.run(speak, env=env, cwd=tmp, check=True, capture_output=True)
        typer_cmd = [sys.executable, "-c", "import typer"]
        hits, refs = [], []
        for _ in range(3):  # warm the page cache
            timed(speak, env, tmp), timed(typer_cmd, env, tmp)
        for _ in range(runs):  # interleaved, so both see the same machine
            hits.append(timed(speak, env, tmp))
            refs.append(timed(typer_cmd, env, tmp))
        hit, ref = statistics.median(hits), statistics.median(refs)
        print(f"cache-hit speak      median {hit * 1000:7.1f} ms   import typer {ref * 1000:7.1f} ms   "
              f"ratio {hit / ref:.2f}x (target <= 1.25x, {runs} runs each)")


def bench_batch(lines: int, concurrency: int, latency: float) -> None:
    from fake_elevenlabs import FakeElevenLabs

    with tempfile.TemporaryDirectory() as tmp, FakeElevenLabs(latency=latency) as fake:
        script = Path(tmp) / "script.txt"
        script.write_text("\n".join(f"Line number {i} of the benchmark script." for i in range(lines)))
        env = clean_env(tmp, ELEVENLABS_API_KEY=fake.api_key, NARRATOR_ELEVENLABS_BASE_URL=fake.url)
        cmd = [*narrator_cmd(), "speak", "--provider", "elevenlabs", "--voice", "BenchVoiceId00000abc", "--json",
               "--concurrency", str(concurrency), "--file", str(script)]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, env=env, cwd=tmp, check=True, capture_output=True, text=True).stdout
        took = time.perf_counter() - t0
        rows = [json.loads(line) for line in out.splitlines()]
        assert len(rows) == lines and all(r["status"] == "generated" for r in rows)
        ideal = math.ceil(lines / concurrency) * latency
        print(f"cold batch           {lines} lines, concurrency {concurrency}, {latency * 1000:.0f} ms latency: "
              f"{took:.2f} s   ideal {ideal:.2f} s   ratio {took / ideal:.2f}x (target <= 1.3x); "
              f"provider saw {fake.request_count} requests")


def bench_stats(entries: int) -> None:
    """`narrator stats` on a large cache, against the least any tool must do: read every metadata file."""
    from audio_fixtures import make_wav

    from narrator_cli.store import Store

    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None  # fsync is free there: filling takes seconds, not minutes
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        store = Store(Path(tmp) / "audio-cache")
        audio = make_wav(0.05)
        for i in range(entries):
            store.put(f"{i:08x}", audio, "audio/wav", 0.05, {"text": f"line {i}", "voiceId": "v", "modelId": "m"})
        env = clean_env(tmp)
        read_all = [sys.executable, "-c", "import json, os, sys; d = sys.argv[1]; "
                    "[json.load(open(os.path.join(d, n))) for n in os.listdir(d) if n.endswith('.json')]",
                    str(store.root)]
        stats_cmd = [*narrator_cmd(), "stats", "--json"]
        took = min(timed(stats_cmd, env, tmp) for _ in range(3))
        ref = min(timed(read_all, env, tmp) for _ in range(3))
        print(f"stats, {entries} entries  {took:.2f} s   reading every metadata file {ref:.2f} s   "
              f"ratio {took / ref:.2f}x (target: under 2 s)")


def bench_offline_mp3(lines: int, rounds: int) -> None:
    """The offline voice's batch as MP3 against the same batch as WAV (``NARRATOR_FORMAT=wav``)."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "script.txt"
        script.write_text("\n".join(f"Line number {i} of the offline benchmark script." for i in range(lines)))
        cmd = [*narrator_cmd(), "speak", "--provider", "espeak", "--file", str(script)]
        times: dict[str, list[float]] = {"mp3": [], "wav": []}
        for r in range(rounds + 1):  # round 0 warms the page cache and checks the output; it is not counted
            for fmt in ("mp3", "wav") if r % 2 else ("wav", "mp3"):
                cache = Path(tmp) / f"cache-{fmt}"
                extra = {"NARRATOR_FORMAT": "wav"} if fmt == "wav" else {}  # the setting, whatever sets it
                env = clean_env(tmp, NARRATOR_AUDIO_PATH=str(cache), **extra)
                took = timed(cmd, env, tmp)
                if r == 0:
                    assert len(list(cache.glob(f"*.{fmt}"))) == lines, f"the {fmt} batch did not write {lines} files"
                else:
                    times[fmt].append(took)
                shutil.rmtree(cache)
        ratios = [m / w for m, w in zip(times["mp3"], times["wav"])]
        print(f"offline batch        {lines} espeak lines: MP3 {statistics.median(times['mp3']):.2f} s   "
              f"WAV {statistics.median(times['wav']):.2f} s   ratio {statistics.median(ratios):.2f}x "
              f"(target <= 1.3x; rounds {min(ratios):.2f}x-{max(ratios):.2f}x, {rounds} alternated)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--only", choices=("hit", "batch", "stats", "offline"), help="run one figure")
    args = parser.parse_args()
    if args.only in (None, "hit"):
        bench_hit(min(args.runs, 200))
    if args.only in (None, "batch"):
        bench_batch(100, 8, 0.2)
    if args.only in (None, "stats"):
        bench_stats(20_000)
    if args.only in (None, "offline"):
        bench_offline_mp3(100, 7)
