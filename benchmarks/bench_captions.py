"""Captions and word timings (a benchmark, run by hand; never a timed test).

1. ``narrator captions`` for a 500-line script whose lines are all cached: the whole command, against
   ``python -c "import typer"`` in the same run (target under 0.5 s).
2. espeak-ng synthesis with word timings against without, alternated in one process (target at most 1.1x).
3. ``narrator serve`` check-audio rate on entries whose metadata holds word timings against entries without,
   alternated against one server (target at least 0.95x).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from audio_fixtures import make_mp3
from serve_process import port_of, start_serve

from narrator_cli import protocol
from narrator_cli.captions.words import estimate
from narrator_cli.keys import cache_key
from narrator_cli.store import Store

CLI = [sys.executable, "-c", "from narrator_cli.cli import main; main()"]
SENTENCE = "The quick brown fox jumps over the lazy dog while the narrator reads line number {n} aloud."


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[3:])} failed: {proc.stderr}")
    return took


def bench_captions_command(root: Path, runs: int) -> None:
    """500 cached lines (the mock voice, which stores word timings) to SRT, against importing Typer."""
    folder = root / "script"
    folder.mkdir()
    (folder / "script.txt").write_text("\n".join(SENTENCE.format(n=n) for n in range(500)) + "\n")
    timed([*CLI, "speak", "--file", "script.txt", "--provider", "mock"], folder)
    env_free = [*CLI, "captions", "--file", "script.txt", "--provider", "mock", "--out", "script.srt"]
    ours, typer_import = [], []
    for _ in range(runs):
        ours.append(timed(env_free, folder))
        typer_import.append(timed([sys.executable, "-c", "import typer"], folder))
    cues = (folder / "script.srt").read_text().count(" --> ")
    o, t = statistics.median(ours), statistics.median(typer_import)
    print(f"captions, 500 cached lines ({cues} cues)  median {o * 1000:6.0f} ms   import typer {t * 1000:4.0f} ms   "
          f"(target < 500 ms; {runs} runs each, alternated)")


def bench_espeak(rounds: int) -> None:
    """The same lines synthesised with and without collecting word timings, alternated."""
    from narrator_cli.providers.espeak import EspeakProvider

    lines = [SENTENCE.format(n=n) for n in range(20)]
    voices = {"with": EspeakProvider("mp3", words=True), "without": EspeakProvider("mp3", words=False)}
    voices["with"].synthesize("warm up", "en", "espeak-ng")
    times: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(rounds):
        for name, voice in voices.items():
            start = time.perf_counter()
            for line in lines:
                synth = voice.synthesize(line, "en", "espeak-ng")
                assert (synth.words is not None) == (name == "with")
            times[name].append(time.perf_counter() - start)
    w, wo = statistics.median(times["with"]), statistics.median(times["without"])
    print(f"espeak, 20 lines   with timings {w * 1000:6.0f} ms   without {wo * 1000:6.0f} ms   ratio {w / wo:.3f}x "
          f"(target <= 1.1x; medians of {rounds} alternated)")


def fill(store: Store, n: int, with_words: bool) -> list[str]:
    audio = make_mp3(5.0)
    keys = []
    for i in range(n):
        text = SENTENCE.format(n=f"{'w' if with_words else 'x'}{i}")
        key = cache_key(text, "v", "m")
        meta = {"text": text, "voiceId": "v", "modelId": "m", "provider": "elevenlabs"}
        if with_words:
            meta["words"] = [w.as_meta() for w in estimate(text, 5.0)]
        store.put(key, audio, "audio/mpeg", 5.0, meta)
        keys.append(key)
    return keys


async def check_rate(port: int, keys: list[str], total: int, in_flight: int = 64) -> float:
    """Checks per second on one connection with ``in_flight`` outstanding, cycling over ``keys``."""
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{port}/", subprotocols=["vite-hmr"], max_size=None,
                       compression=None) as sock:
        assert json.loads(await sock.recv()) == {"type": "connected"}
        messages = [protocol.encode(protocol.CHECK_AUDIO, {"cacheKey": k}) for k in keys]
        sent = got = 0
        start = time.perf_counter()
        while sent < min(in_flight, total):
            await sock.send(messages[sent % len(messages)])
            sent += 1
        while got < total:
            reply = await asyncio.wait_for(sock.recv(), 10)
            assert '"narrator:audio-exists"' in reply
            got += 1
            if sent < total:
                await sock.send(messages[sent % len(messages)])
                sent += 1
        return total / (time.perf_counter() - start)


def bench_check(root: Path, rounds: int, entries: int, checks: int) -> None:
    store = Store(root / "serve-cache")
    sets = {"with": fill(store, entries, True), "without": fill(store, entries, False)}
    size = {name: statistics.mean(len(store.meta_path(k).read_bytes()) for k in keys) for name, keys in sets.items()}
    proc, url = start_serve("--audio-path", str(store.root), "--max-age", "3650d", cwd=root, drain=True)
    try:
        port = port_of(url)
        for keys in sets.values():  # warm: every reply built once
            asyncio.run(check_rate(port, keys, len(keys)))
        rates: dict[str, list[float]] = {"with": [], "without": []}
        for n in range(rounds):  # ABBA: neither set always goes first
            for name in ("with", "without") if n % 2 == 0 else ("without", "with"):
                rates[name].append(asyncio.run(check_rate(port, sets[name], checks)))
    finally:
        proc.kill()
        proc.wait()
    w, wo = statistics.median(rates["with"]), statistics.median(rates["without"])
    print(f"check-audio, {entries} entries each   with timings {w:7.0f}/s ({size['with']:.0f} B metadata)   "
          f"without {wo:7.0f}/s ({size['without']:.0f} B)   ratio {w / wo:.3f}x "
          f"(target >= 0.95x; 1 connection, 64 in flight; medians of {rounds} alternated)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("captions", "espeak", "check"), help="run one figure")
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke test of the script)")
    args = parser.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # the command's own start-up, as a user runs it
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "narrator_cli")], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.only in (None, "captions"):
            bench_captions_command(root, 3 if args.quick else 7)
        if args.only in (None, "espeak"):
            bench_espeak(3 if args.quick else 9)
        if args.only in (None, "check"):
            bench_check(root, 3 if args.quick else 10, 200 if args.quick else 2000, 5_000 if args.quick else 20_000)


if __name__ == "__main__":
    main()
