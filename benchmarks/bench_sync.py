"""``narrator sync`` against a real ``narrator serve`` (a benchmark, run by hand; never a timed test).

1. A no-op sync of 20,000 entries already equal on both sides: the whole command (target under 1 s).
2. Pulling 2,000 entries of 40 KB into an empty folder with ``narrator sync --pull``, against the same
   bytes fetched with plain httpx GETs at the same concurrency from the same server in the same run
   (target within 1.5x); once into a folder on disk, once into one in memory where there is one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import httpx  # noqa: E402

from audio_fixtures import make_mp3  # noqa: E402
from narrator_cli.sync import PULLS_IN_FLIGHT  # noqa: E402
from serve_process import CLI, start_serve  # noqa: E402


def fill(folder: Path, n: int, audio: bytes, seconds: float) -> None:
    """``n`` entries as ``Store.put`` writes them (same fields, sha256), written directly for speed."""
    folder.mkdir(parents=True)
    digest = hashlib.sha256(audio).hexdigest()
    for i in range(n):
        key = f"{i:08x}"
        (folder / f"{key}.mp3").write_bytes(audio)
        meta = {"cacheKey": key, "duration": seconds, "mimeType": "audio/mpeg", "fileSize": len(audio),
                "fileName": f"{key}.mp3", "createdAt": "2026-01-01T00:00:00.000Z", "text": f"line {i}",
                "voiceId": "v", "modelId": "m", "sha256": digest}
        (folder / f"{key}.meta.json").write_text(json.dumps(meta, indent=2))


def sync(cwd: Path, url: str, *args: str) -> float:
    start = time.perf_counter()
    r = subprocess.run([*CLI, "sync", "--server", url, *args], cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - start
    if r.returncode:
        raise SystemExit(f"sync failed: {r.stderr}")
    return took


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("noop", "pull"), help="run one figure")
    only = parser.parse_args().only
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if only in (None, "noop"):
            bench_noop(root)
        if only in (None, "pull"):
            bench_pull(root)


def bench_noop(root: Path) -> None:
    """A no-op sync of 20,000 entries already equal on both sides."""
    fill(root / "server", 20_000, make_mp3(0.2), 0.2)
    shutil.copytree(root / "server", root / "local")
    proc, url = start_serve("--audio-path", str(root / "server"), "--max-age", "3650d", cwd=root, drain=True)
    try:
        runs = sorted(sync(root, url, "--audio-path", "local") for _ in range(5))
        print(f"no-op sync, 20000 entries   median {runs[2] * 1000:7.0f} ms   (best {runs[0] * 1000:.0f} ms; "
              "target < 1000 ms, whole command, 5 runs)")
    finally:
        proc.kill()
        proc.wait()


def bench_pull(root: Path) -> None:
    """2,000 entries of 40 KB pulled into an empty folder, against plain httpx GETs of the same files: into
    the benchmark's own folder on disk and, where there is one, into a folder in memory (``/dev/shm``), which
    tells narrator's own work from the disk's."""
    seconds = 96 * 1152 / 44100  # 96 frames of 417 bytes: 40 KB
    audio = make_mp3(seconds)
    fill(root / "pull-server", 2_000, audio, seconds)
    shm = Path("/dev/shm")
    places = {"disk": root} | ({"memory": Path(tempfile.mkdtemp(dir=shm))} if shm.is_dir() else {})
    print(f"creating an empty file on the disk here: {create_cost(root) * 1e6:.0f} us (median of 2000)")
    proc, url = start_serve("--audio-path", str(root / "pull-server"), "--max-age", "3650d", cwd=root,
                            drain=True)
    try:
        ours: dict[str, list[float]] = {place: [] for place in places}
        plain = []
        for n in range(3):  # alternated
            for place, base in places.items():
                target = base / f"pulled-{n}"
                ours[place].append(sync(root, url, "--pull", "--audio-path", str(target)))
                shutil.rmtree(target)
            names = [f"{i:08x}.mp3" for i in range(2_000)]
            start = time.perf_counter()
            with httpx.Client(base_url=url) as client, ThreadPoolExecutor(PULLS_IN_FLIGHT) as pool:
                sizes = list(pool.map(lambda name: len(client.get(f"/__narrator-audio/{name}").content), names))
            plain.append(time.perf_counter() - start)
            assert sum(sizes) == 2_000 * len(audio)
    finally:
        proc.kill()
        proc.wait()
        if "memory" in places:
            shutil.rmtree(places["memory"])
    p = sorted(plain)[1]
    for place, runs in ours.items():
        o = sorted(runs)[1]
        print(f"pull 2000 x {len(audio) // 1000} KB to {place:6}  sync --pull {o:6.2f} s   httpx GETs {p:6.2f} s   "
              f"ratio {o / p:.2f}x (target <= 1.5x; medians of 3 alternated; concurrency {PULLS_IN_FLIGHT})")


def create_cost(root: Path) -> float:
    """Median time to create (and close) one empty file in a new folder under ``root``: the disk's floor."""
    folder = Path(tempfile.mkdtemp(dir=root))
    times = []
    try:
        for i in range(2_000):
            start = time.perf_counter()
            os.close(os.open(folder / str(i), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            times.append(time.perf_counter() - start)
    finally:
        shutil.rmtree(folder)
    return sorted(times)[len(times) // 2]

if __name__ == "__main__":
    main()
