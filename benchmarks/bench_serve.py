"""Benchmarks for `narrator serve` (issue: serve). Prints figures next to their targets.

Starts a real `narrator serve` on 127.0.0.1 (a subprocess, --quiet) over a temporary cache and,
as a same-run reference for the WebSocket figures, the `websockets` library's server running
the very same narrator handler. Every loop is bounded in count and time. Measures:

1. check-audio round trip p50/p99 on one connection, sequential;
2. check-audio requests/s: 1 connection with 64 in flight; 16 connections with 4 in flight each;
3. uploads of 1, 10 and 45 MiB: time, the server's extra peak memory (VmHWM reset through
   /proc/PID/clear_refs), and the slowest reply another connection saw meanwhile; the reference
   decodes each whole message once it is in, and with --vite-dir a real Vite 5.4 running
   tests/interop's stand-in narrator plugin takes its turn too;
4. HTTP GET of a 40 KB and a 1 MiB cached file: 1 keep-alive connection and 16.

With --vite-dir, Vite 5.4 running tests/interop's stand-in plugin takes its turn in every figure (checks,
uploads, and GETs of the same files from the folder it serves), so each Vite ratio comes from the same
moments of this noisy machine; without it, the ratios are against the issue's fixed Vite figures.

The client's own CPU time is printed with each figure: when it is close to the wall time the
figure says more about this Python client than about the server. Each figure is the median of
a few rounds (the 45 MiB upload: of 2 * rounds + 1 runs), ours alternated with the reference. Run:
    python benchmarks/bench_serve.py [--quick] [--rounds N] [--vite-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from audio_fixtures import make_mp3  # noqa: E402
from interop.check_vite import PLUGIN_FOLDER, start_vite  # noqa: E402
from serve_process import port_of, start_serve  # noqa: E402

from narrator_cli import protocol  # noqa: E402
from narrator_cli.store import Store  # noqa: E402

HIT_KEY = "5f5ac131"
SMALL_KEY, LARGE_KEY = "00000040", "00001024"
# Vite 5.4 + the Motion Canvas narrator plugin, same kind of machine (from the issue).
VITE = {"p50_ms": 0.28, "one_conn": 8400, "sixteen": 6900, "upload45_s": 0.73,
        "get40k_1": 2800, "get40k_16": 4200, "get1m_16": 830}


def check_msg(key: str) -> str:
    return protocol.encode(protocol.CHECK_AUDIO, {"cacheKey": key})


def server_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Clock:
    """Wall time of a block, with the CPU time the client and the server used in it."""

    server_pid = os.getpid()

    def __enter__(self) -> Clock:
        self.server = server_cpu(self.server_pid)
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        self.server = server_cpu(self.server_pid) - self.server


# --- servers ---------------------------------------------------------------------------------
def start_reference(cache: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, __file__, "--reference-server", str(cache)], stdout=subprocess.PIPE,
                            text=True)
    return proc, int(proc.stdout.readline())


def run_reference(cache: Path) -> None:
    """The `websockets` library's asyncio server around the same protocol.Handler."""
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    handler = protocol.Handler(protocol.Index(Store(cache)))

    async def on_connect(sock) -> None:  # type: ignore[no-untyped-def]
        await sock.send(protocol.CONNECTED)
        while True:
            try:
                raw = await sock.recv(decode=False)
            except ConnectionClosed:
                return
            try:
                event, data = protocol.decode(raw)
                if event == protocol.UPLOAD_AUDIO:  # the plain way: the whole message, then decode it all
                    key, mime, b64, meta = handler.parse_upload(data)
                    *_, staged = handler.decode_steps(key, b64)
                    reply = handler.store_upload(key, mime, staged, meta)
                else:
                    reply = handler.handle(event, data)
            except protocol.BadMessage as exc:
                reply = exc.reply()
            await sock.send(reply)

    async def main() -> None:
        async with serve(on_connect, "127.0.0.1", 0, subprotocols=["vite-hmr"], max_size=None) as server:
            print(server.sockets[0].getsockname()[1], flush=True)
            await asyncio.sleep(600)  # bounded: the benchmark terminates it long before

    asyncio.run(main())


# --- websocket client work -------------------------------------------------------------------
async def connect(port: int):  # type: ignore[no-untyped-def]
    from websockets.asyncio.client import connect as ws_connect

    sock = await ws_connect(f"ws://127.0.0.1:{port}/", subprotocols=["vite-hmr"], max_size=None,
                            compression=None, open_timeout=10)
    assert json.loads(await sock.recv()) == {"type": "connected"}
    return sock


async def latency(port: int, count: int) -> tuple[float, float, Clock]:
    sock = await connect(port)
    msg = check_msg(HIT_KEY)
    times = []
    with Clock() as clock:
        for _ in range(count):
            t0 = time.perf_counter()
            await sock.send(msg)
            reply = await sock.recv()
            times.append(time.perf_counter() - t0)
            assert '"narrator:audio-exists"' in reply
    await sock.close()
    times.sort()
    return times[len(times) // 2] * 1e3, times[int(len(times) * 0.99)] * 1e3, clock


async def pipelined(port: int, connections: int, in_flight: int, per_conn: int) -> tuple[float, Clock]:
    socks = [await connect(port) for _ in range(connections)]
    msg = check_msg(HIT_KEY)

    async def run(sock) -> None:  # type: ignore[no-untyped-def]
        for _ in range(in_flight):
            await sock.send(msg)
        sent, got = in_flight, 0
        while got < per_conn:
            reply = await asyncio.wait_for(sock.recv(), 10)
            assert '"narrator:audio-exists"' in reply
            got += 1
            if sent < per_conn:
                await sock.send(msg)
                sent += 1

    with Clock() as clock:
        await asyncio.gather(*(run(s) for s in socks))
    for s in socks:
        await s.close()
    return connections * per_conn / clock.wall, clock


# --- uploads ----------------------------------------------------------------------------------
def mem_kb(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


async def upload(port: int, pid: int, mib: int, key: str) -> tuple[float, float, float, Clock]:
    """(wall time, the server's extra peak memory in MB, the slowest reply to another connection in ms, clock)."""
    audio = make_mp3(mib * (1 << 20) / 16000)  # 128 kbit/s: 16 kB a second
    msg = json.dumps({"type": "custom", "event": protocol.UPLOAD_AUDIO, "data": {
        "cacheKey": key, "mimeType": "audio/mpeg", "duration": 0, "metadata": {"text": f"{mib} MiB"},
        "data": "data:audio/mpeg;base64," + base64.b64encode(audio).decode()}})
    sock, probe = await connect(port), await connect(port)
    await asyncio.sleep(0.2)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    base = mem_kb(pid, "VmRSS")
    worst = 0.0
    done = asyncio.Event()

    async def watch() -> None:  # another user keeps asking while the upload goes through
        nonlocal worst
        while not done.is_set():
            t0 = time.perf_counter()
            await probe.send(check_msg(HIT_KEY))
            await asyncio.wait_for(probe.recv(), 30)
            worst = max(worst, time.perf_counter() - t0)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    with Clock() as clock:
        await sock.send(msg)
        reply = json.loads(await asyncio.wait_for(sock.recv(), 120))
    done.set()
    await watcher
    assert reply["event"] == protocol.UPLOAD_SUCCESS, reply
    extra = (mem_kb(pid, "VmHWM") - base) / 1024
    await sock.close()
    await probe.close()
    return clock.wall, extra, worst * 1e3, clock


# --- HTTP GET ---------------------------------------------------------------------------------
async def http_get(port: int, name: str, connections: int, per_conn: int,
                   prefix: str = protocol.AUDIO_PREFIX) -> tuple[float, Clock]:
    request = f"GET {prefix}{name} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()

    async def run() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        for _ in range(per_conn):
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200"), head[:40]
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
            await reader.readexactly(length)
        writer.close()

    with Clock() as clock:
        await asyncio.gather(*(run() for _ in range(connections)))
    return connections * per_conn / clock.wall, clock


def row(label: str, value: str, target: str, clock: Clock | None = None) -> None:
    cpu = f"CPU client {clock.cpu:.2f} s, server {clock.server:.2f} s, of {clock.wall:.2f} s" if clock else ""
    print(f"  {label:<44} {value:>16}   {target:<36} {cpu}")


def median_of(runs: list, key):  # type: ignore[no-untyped-def]
    """The run with the median ``key``: figures and clocks of one real run, not a mix."""
    return sorted(runs, key=key)[len(runs) // 2]


async def websocket_figures(port: int, n: int) -> dict:
    p50, p99, c1 = await latency(port, n)
    rate1, c2 = await pipelined(port, 1, 64, 5 * n)
    rate16, c3 = await pipelined(port, 16, 4, n // 2)
    return {"p50": p50, "p99": p99, "rate1": rate1, "rate16": rate16, "clocks": (c1, c2, c3)}


async def main(quick: bool, rounds: int, vite_dir: Path | None) -> None:
    n = 1000 if quick else 4000
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        store = Store(cache)
        store.put(HIT_KEY, make_mp3(2), "audio/mpeg", 2.0, {"text": "Hello world", "voiceId": "voice-id",
                                                             "modelId": "eleven_flash_v2_5"})
        store.put(SMALL_KEY, make_mp3(40_000 / 16000), "audio/mpeg", 2.5, {})
        store.put(LARGE_KEY, make_mp3((1 << 20) / 16000), "audio/mpeg", 65.0, {})
        proc, url = start_serve("--quiet", "--audio-path", str(cache), "--max-age", "never", drain=True)
        port = port_of(url)
        ref, ref_port = start_reference(cache)
        vite_proc = vite_port = vite_version = None
        try:
            if vite_dir:  # started inside the try: its own session outlives us unless the finally stops it
                site = Path(tmp) / "vite"
                vite_proc, vite_port, vite_version = start_vite(site, vite_dir)
                (site / PLUGIN_FOLDER).mkdir(exist_ok=True)
                for key in (HIT_KEY, SMALL_KEY, LARGE_KEY):  # what the checks and GETs ask Vite for too
                    for path in cache.glob(f"{key}.*"):
                        shutil.copy(path, site / PLUGIN_FOLDER)
            await websocket_figures(port, n // 4)  # warm up both
            await websocket_figures(ref_port, n // 4)
            ours, theirs, vites = [], [], []
            for _ in range(rounds):  # alternated, so all see the same moments of a noisy machine
                Clock.server_pid = ref.pid
                theirs.append(await websocket_figures(ref_port, n))
                if vite_proc:
                    Clock.server_pid = vite_proc.pid
                    vites.append(await websocket_figures(vite_port, n))
                Clock.server_pid = proc.pid
                ours.append(await websocket_figures(port, n))
            print(f"narrator serve on 127.0.0.1, {os.cpu_count()} cores; medians of {rounds} rounds; reference: the "
                  "`websockets` library's server with the same handler, alternated with ours; Vite: "
                  + (f"Vite {vite_version} with tests/interop's stand-in plugin, alternated with ours" if vite_proc
                     else "the issue's Vite 5.4 figures (no --vite-dir)"))
            print("check-audio (present key)")
            for metric, label, vite, goal, clock in (
                    ("p50", "round trip p50 / p99, 1 connection", VITE["p50_ms"], "", 0),
                    ("rate1", "req/s, 1 connection, 64 in flight", VITE["one_conn"], ">=1.5x", 1),
                    ("rate16", "req/s, 16 connections, 4 in flight each", VITE["sixteen"], ">=1.5x", 2)):
                mine, ref_value = median_of(ours, lambda f: f[metric]), median_of(theirs, lambda f: f[metric])
                if vites:
                    vite = median_of(vites, lambda f: f[metric])[metric]
                if metric == "p50":
                    row(label, f"{mine['p50']:.3f} / {mine['p99']:.3f} ms",
                        f"ref {ref_value['p50']:.3f} ms; Vite {vite:.3f} ms (no slower)", mine["clocks"][clock])
                else:
                    row(label, f"{mine[metric]:,.0f}", f"ref {mine[metric] / ref_value[metric]:.2f}x; "
                        f"Vite {mine[metric] / vite:.2f}x ({goal})", mine["clocks"][clock])
            print("uploads (server's extra peak memory; slowest reply to another connection meanwhile); ref: the "
                  "reference decoding each whole message once it is in" + ("; Vite: Vite " + vite_version +
                  " with tests/interop's stand-in plugin, same run" if vite_proc else ""))
            contenders = [("ref", ref.pid, ref_port)] + ([("Vite", vite_proc.pid, vite_port)] if vite_proc else [])
            contenders.append(("ours", proc.pid, port))
            for mib, runs in ((1, rounds), (10, rounds), (45, 2 * rounds + 1)):
                results: dict[str, list] = {name: [] for name, _, _ in contenders}
                for i in range(runs):  # alternated, like the rest
                    for c, (name, pid, p) in enumerate(contenders):
                        Clock.server_pid = pid
                        results[name].append(await upload(p, pid, mib, f"{c:02x}{mib:02x}{i:04x}"))
                mine = results.pop("ours")
                wall, _, _, clock = median_of(mine, lambda r: r[0])
                walls = sorted(r[0] for r in mine)
                target = "; ".join(f"{name} {wall / median_of(theirs_, lambda r: r[0])[0]:.2f}x"
                                   for name, theirs_ in results.items())
                if mib == 45:
                    target += (f"; issue's Vite {wall / VITE['upload45_s']:.2f}x; <=200 MB, <=100 ms; runs "
                               f"{walls[0] * 1e3:.0f}-{walls[-1] * 1e3:.0f} ms")
                row(f"{mib} MiB upload", f"{wall * 1e3:.0f} ms, +{max(r[1] for r in mine):.0f} MB, "
                    f"{max(r[2] for r in mine):.0f} ms", target, clock)
            print("HTTP GET of a cached file")
            small, large = store.get(SMALL_KEY).path.name, store.get(LARGE_KEY).path.name
            for label, name, conns, count, vite in (
                    ("40 KB, 1 keep-alive connection", small, 1, n, VITE["get40k_1"]),
                    ("40 KB, 16 connections", small, 16, n // 4, VITE["get40k_16"]),
                    ("1 MiB, 16 connections", large, 16, n // 20, VITE["get1m_16"])):
                runs, vite_runs = [], []
                for _ in range(rounds):
                    if vite_proc:  # Vite serves the plugin's folder from its root, as the editor fetches it
                        vite_runs.append(await http_get(vite_port, name, conns, count, f"/{PLUGIN_FOLDER}/"))
                    runs.append(await http_get(port, name, conns, count))
                rate, clock = median_of(runs, lambda r: r[0])
                if vite_runs:
                    vite = median_of(vite_runs, lambda r: r[0])[0]
                goal = ">=1.5x" if "40 KB" in label else ">=1x"
                row(label, f"{rate:,.0f} req/s", f"Vite {rate / vite:.2f}x ({goal})", clock)
        finally:
            for p in (proc, ref):
                p.terminate()
                p.wait(10)
            if vite_proc:
                os.killpg(vite_proc.pid, signal.SIGTERM)
                vite_proc.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, for a smoke run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure; the median is printed")
    parser.add_argument("--vite-dir", type=Path, metavar="DIR", help="time everything against Vite 5.4 too, in the "
                        "same run: DIR holds node_modules/vite (`npm install vite@5.4` there)")
    parser.add_argument("--reference-server", metavar="CACHE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_server:
        run_reference(Path(args.reference_server))
    else:
        asyncio.run(main(args.quick, max(1, args.rounds), args.vite_dir))
