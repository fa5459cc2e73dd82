"""Benchmarks for `narrator serve` (issues: serve, 16). Prints figures next to their targets.

Starts two real `narrator serve` processes on 127.0.0.1 (subprocesses, --quiet) over one temporary cache:
"fast", with the `fast` extra's C code when it is installed, and "pure", the same code held to the
standard library (NARRATOR_PURE_WS=1). As same-run references for the WebSocket figures: the `websockets`
library's server running the very same narrator handler and, with --vite-dir, a real Vite 5.4 running
tests/interop's stand-in narrator plugin (which decodes as the real one does: the whole message to a string,
JSON.parse, Buffer.from(base64)); with --baseline DIR, `narrator serve` from another source tree (e.g. the
last commit, `git archive HEAD narrator_cli | tar -x -C DIR`) is "today", what "no slower than today" means.
Every loop is bounded in count and time. Measures, for fast and pure:

1. check-audio round trip p50/p99 on one connection, sequential;
2. check-audio requests/s: 1 connection with 64 in flight; 16 connections with 4 in flight each;
3. uploads of 1, 10 and 45 MiB: time (and when the client's send returned), the server's extra peak memory
   (VmHWM reset through /proc/PID/clear_refs), and during each upload: the slowest reply another user saw,
   from a prober in a process of its own, and, inside the uploading client, the slowest reply on a second
   connection and the client's own longest pause (its event loop held by its own sending);
4. HTTP GET of a 40 KB and a 1 MiB cached file: 1 keep-alive connection and 16.

With --vite-dir, Vite takes its turn in every figure (checks, uploads, and GETs of the same files from the
folder it serves), so each Vite ratio comes from the same moments of this noisy machine; without it, the
ratios are against the issue's fixed Vite figures.

The client's own CPU time is printed with each figure: when it is close to the wall time the
figure says more about this Python client than about the server. Each figure is the median of
a few rounds (uploads: of max(5, rounds) runs, the 45 MiB one of 2 * rounds + 1), every server
alternated with the others. Run:
    python benchmarks/bench_serve.py [--quick] [--rounds N] [--vite-dir DIR] [--baseline DIR] [--only WHAT]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from audio_fixtures import make_mp3  # noqa: E402
from interop.check_vite import PLUGIN_FOLDER, start_vite  # noqa: E402
from serve_process import port_of, start_serve  # noqa: E402

from narrator_cli import protocol, ws  # noqa: E402
from narrator_cli.store import Store  # noqa: E402

HIT_KEY = "5f5ac131"
SMALL_KEY, LARGE_KEY = "00000040", "00001024"
# Vite 5.4 + the Motion Canvas narrator plugin, same kind of machine (from the issue).
VITE = {"p50_ms": 0.28, "one_conn": 8400, "sixteen": 6900, "upload45_s": 0.73,
        "get40k_1": 2800, "get40k_16": 4200, "get1m_16": 830}
UPLOAD_SIZES = (1, 10, 45)  # MiB
# Upload targets of "fast" against Vite's time in the same run (both of ours: no slower than "today").
FAST_GOAL = {1: 1.0, 10: 1.0, 45: 0.6}
MAX_OTHER_REPLY_MS, MAX_EXTRA_MB = 100, 200


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
@dataclass
class Contender:
    """A server under test: its name in the output, its process, its port, and a prober of its own."""

    name: str
    proc: subprocess.Popen
    port: int
    prober: Prober | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid


def start_ours(cache: Path, env: dict[str, str], source: Path | None = None) -> tuple[subprocess.Popen, int]:
    """A `narrator serve` process with ``env`` added to ours (NARRATOR_PURE_WS), from the narrator_cli package
    in the folder ``source`` when given (run there: `python -c` puts its working folder first on the path)."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        proc, url = start_serve("--quiet", "--audio-path", str(cache), "--max-age", "never", drain=True, cwd=source)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return proc, port_of(url)


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


# --- the prober: another user of the server, in a process of its own ------------------------------------
PROBE_EVERY = 0.005


class Prober:
    """A subprocess that asks the server a check every 5 ms for as long as it runs, noting when each
    was sent and answered (CLOCK_MONOTONIC, the same clock in every process). Asked about a time window,
    it answers with the slowest reply among the checks in flight during it: nothing in the uploading
    process (its own pauses, its GIL) can hide a slow server or make a fast one look slow."""

    def __init__(self, port: int) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--prober", str(port)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def slowest(self, start: float, end: float) -> tuple[float, int]:
        """(slowest reply in ms, checks answered) among the checks in flight between ``start`` and ``end``."""
        self.proc.stdin.write(f"{start} {end}\n")
        self.proc.stdin.flush()
        worst, count = self.proc.stdout.readline().split()
        return float(worst), int(count)

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


def run_prober(port: int) -> None:
    async def main() -> None:
        sock = await connect(port)
        msg = check_msg(HIT_KEY)
        done: list[tuple[float, float]] = []  # (sent, answered), the last minute's
        answered = asyncio.Event()

        async def probe() -> None:
            while True:
                t0 = time.monotonic()
                await sock.send(msg)
                await asyncio.wait_for(sock.recv(), 60)
                done.append((t0, time.monotonic()))
                if done[0][0] < t0 - 60:
                    del done[:len(done) // 2]
                answered.set()
                await asyncio.sleep(PROBE_EVERY)

        task = asyncio.create_task(probe())
        loop = asyncio.get_running_loop()
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        print("ready", flush=True)
        while line := await stdin.readline():
            start, end = map(float, line.split())
            for _ in range(1200):  # a check sent after the window ended: every check in flight during it is in
                if (done and done[-1][0] > end) or task.done():
                    break
                answered.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(answered.wait(), 0.1)
            times = [b - a for a, b in done if a < end and b > start]
            print(f"{max(times, default=0) * 1e3:.3f} {len(times)}", flush=True)
        task.cancel()
        await sock.close()

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


_DATA_URLS: dict[int, str] = {}


def upload_message(mib: int, key: str) -> str:
    """The message the editor's browser sends for ``mib`` MiB of MP3 (the data URL made once per size)."""
    url = _DATA_URLS.get(mib)
    if url is None:
        audio = make_mp3(mib * (1 << 20) / 16000)  # 128 kbit/s: 16 kB a second
        url = _DATA_URLS[mib] = "data:audio/mpeg;base64," + base64.b64encode(audio).decode()
    return json.dumps({"type": "custom", "event": protocol.UPLOAD_AUDIO, "data": {
        "cacheKey": key, "mimeType": "audio/mpeg", "duration": 0, "metadata": {"text": f"{mib} MiB"}, "data": url}})


@dataclass
class Upload:
    wall: float  # s, from the send to the reply
    sent: float  # s, until the client's send returned (the server had read it all)
    extra_mb: float  # the server's peak memory over what it held before
    other_ms: float  # the slowest reply the prober process saw meanwhile
    probes: int  # how many checks it had in flight meanwhile
    inside_ms: float  # the slowest reply to another connection of the uploading process
    paused_ms: float  # the uploading process's own longest pause (a 1 ms sleep that woke late)
    clock: Clock


async def upload(c: Contender, mib: int, key: str) -> Upload:
    msg = upload_message(mib, key)
    sock, probe = await connect(c.port), await connect(c.port)
    await asyncio.sleep(0.2)
    Path(f"/proc/{c.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    base = mem_kb(c.pid, "VmRSS")
    inside = paused = 0.0
    done = asyncio.Event()

    async def watch() -> None:  # another user of the same process keeps asking while the upload goes through
        nonlocal inside
        while not done.is_set():
            t0 = time.perf_counter()
            await probe.send(check_msg(HIT_KEY))
            await asyncio.wait_for(probe.recv(), 60)
            inside = max(inside, time.perf_counter() - t0)
            await asyncio.sleep(PROBE_EVERY)

    async def pauses() -> None:  # how long this client's own loop is held at a time
        nonlocal paused
        while not done.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            paused = max(paused, time.perf_counter() - t0 - 0.001)

    watchers = [asyncio.create_task(watch()), asyncio.create_task(pauses())]
    start = time.monotonic()
    with Clock() as clock:
        t0 = time.perf_counter()
        await sock.send(msg)
        sent = time.perf_counter() - t0
        reply = json.loads(await asyncio.wait_for(sock.recv(), 120))
    end = time.monotonic()
    done.set()
    await asyncio.gather(*watchers)
    assert reply["event"] == protocol.UPLOAD_SUCCESS, reply
    extra = (mem_kb(c.pid, "VmHWM") - base) / 1024
    other, probes = c.prober.slowest(start, end) if c.prober else (0.0, 0)
    await sock.close()
    await probe.close()
    return Upload(clock.wall, sent, extra, other, probes, inside * 1e3, paused * 1e3, clock)


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
    print(f"  {label:<46} {value:>16}   {target:<36} {cpu}")


def median_of(runs: list, key):  # type: ignore[no-untyped-def]
    """The run with the median ``key``: figures and clocks of one real run, not a mix."""
    return sorted(runs, key=key)[len(runs) // 2]


def verdict(ok: bool) -> str:
    return "holds" if ok else "MISSED"


async def websocket_figures(port: int, n: int) -> dict:
    p50, p99, c1 = await latency(port, n)
    rate1, c2 = await pipelined(port, 1, 64, 5 * n)
    rate16, c3 = await pipelined(port, 16, 4, n // 2)
    return {"p50": p50, "p99": p99, "rate1": rate1, "rate16": rate16, "clocks": (c1, c2, c3)}


async def check_figures(ours: list[Contender], ref: Contender, vite: Contender | None, n: int, rounds: int) -> None:
    for c in [*ours, ref]:  # warm up
        await websocket_figures(c.port, n // 4)
    figures: dict[str, list[dict]] = {c.name: [] for c in [ref, *([vite] if vite else []), *ours]}
    for _ in range(rounds):  # alternated, so all see the same moments of a noisy machine
        for c in [ref, *([vite] if vite else []), *ours]:
            Clock.server_pid = c.pid
            figures[c.name].append(await websocket_figures(c.port, n))
    print("check-audio (present key)")
    for metric, label, vite_value, goal, clock in (
            ("p50", "round trip p50 / p99, 1 connection", VITE["p50_ms"], "", 0),
            ("rate1", "req/s, 1 connection, 64 in flight", VITE["one_conn"], ">=1.5x", 1),
            ("rate16", "req/s, 16 connections, 4 in flight each", VITE["sixteen"], ">=1.5x", 2)):
        ref_value = median_of(figures[ref.name], lambda f, m=metric: f[m])
        if vite:
            vite_value = median_of(figures[vite.name], lambda f, m=metric: f[m])[metric]
        for c in ours:
            mine = median_of(figures[c.name], lambda f, m=metric: f[m])
            name = f"{label}, {c.name}"
            if metric == "p50":
                row(name, f"{mine['p50']:.3f} / {mine['p99']:.3f} ms", f"ref {ref_value['p50']:.3f} ms; Vite "
                    f"{vite_value:.3f} ms (no slower: {verdict(mine['p50'] <= vite_value)})", mine["clocks"][clock])
            else:
                ratio = mine[metric] / vite_value
                row(name, f"{mine[metric]:,.0f}", f"ref {mine[metric] / ref_value[metric]:.2f}x; "
                    f"Vite {ratio:.2f}x ({goal}: {verdict(ratio >= 1.5)})", mine["clocks"][clock])


async def upload_figures(ours: list[Contender], ref: Contender, vite: Contender | None, today: Contender | None,
                         rounds: int) -> None:
    """Every contender uploads in turn, run after run; a row for each but the reference, with its ratios to
    the others (medians of the same runs) and the targets: with the fast extra no slower than Vite (1 and
    10 MiB) and at most 0.6x Vite (45 MiB), both of ours no slower than today, and at 45 MiB another user's
    slowest reply under 100 ms and the server's extra memory under 200 MB."""
    contenders = [ref, *([vite] if vite else []), *ours, *([today] if today else [])]
    print("uploads: time (when the client's send returned); below it, the slowest reply another user saw meanwhile "
          "(a prober process), inside the uploading client (another connection; the client's own longest pause), "
          "and the server's extra peak memory; ref: the reference, decoding each whole message once it is in")
    for mib in UPLOAD_SIZES:
        runs = 2 * rounds + 1 if mib == 45 else max(5, rounds)
        results: dict[str, list[Upload]] = {c.name: [] for c in contenders}
        for i in range(runs):  # alternated, like the rest
            for n, c in enumerate(contenders):
                Clock.server_pid = c.pid
                results[c.name].append(await upload(c, mib, f"{n:02x}{mib:02x}{i:04x}"))
        wall = {name: median_of(r, lambda u: u.wall).wall for name, r in results.items()}
        for c in contenders[1:]:
            mine = results[c.name]
            u, walls = median_of(mine, lambda x: x.wall), sorted(x.wall for x in mine)
            other, extra = max(x.other_ms for x in mine), max(x.extra_mb for x in mine)
            notes = [f"{o.name} {u.wall / wall[o.name]:.2f}x" for o in contenders if o is not c]
            if c is ours[0] and vite:
                goal = FAST_GOAL[mib]
                notes.append(f"fast extra <={goal:g}x Vite: {verdict(u.wall <= goal * wall[vite.name])}")
            if c in ours and today:
                notes.append(f"<=1x today: {verdict(u.wall <= wall[today.name])}")
            if c in ours and mib == 45:
                if not vite:
                    notes.append(f"issue's Vite {u.wall / VITE['upload45_s']:.2f}x")
                notes.append(f"other reply <{MAX_OTHER_REPLY_MS} ms: {verdict(other < MAX_OTHER_REPLY_MS)}; "
                             f"<{MAX_EXTRA_MB} MB: {verdict(extra < MAX_EXTRA_MB)}")
            row(f"{mib} MiB upload, {c.name}", f"{u.wall * 1e3:.0f} ms (send {u.sent * 1e3:.0f})",
                "; ".join(notes) + f"; runs {walls[0] * 1e3:.0f}-{walls[-1] * 1e3:.0f} ms", u.clock)
            print(f"  {'':<63}   slowest other reply {other:.0f} ms (of {min(x.probes for x in mine)}+ checks a run); "
                  f"inside the client {max(x.inside_ms for x in mine):.0f} ms, its own longest pause "
                  f"{max(x.paused_ms for x in mine):.0f} ms; server +{extra:.0f} MB at most")


async def get_figures(ours: list[Contender], vite: Contender | None, store: Store, n: int, rounds: int) -> None:
    print("HTTP GET of a cached file (Vite: the same file from the folder it serves)")
    small, large = store.get(SMALL_KEY).path.name, store.get(LARGE_KEY).path.name
    for label, name, conns, count, vite_value in (
            ("40 KB, 1 keep-alive connection", small, 1, n, VITE["get40k_1"]),
            ("40 KB, 16 connections", small, 16, n // 4, VITE["get40k_16"]),
            ("1 MiB, 16 connections", large, 16, n // 20, VITE["get1m_16"])):
        runs: dict[str, list] = {c.name: [] for c in ours}
        vite_runs = []
        for _ in range(rounds):
            if vite:  # Vite serves the plugin's folder from its root, as the editor fetches it
                vite_runs.append(await http_get(vite.port, name, conns, count, f"/{PLUGIN_FOLDER}/"))
            for c in ours:
                Clock.server_pid = c.pid
                runs[c.name].append(await http_get(c.port, name, conns, count))
        if vite_runs:
            vite_value = median_of(vite_runs, lambda r: r[0])[0]
        goal = 1.5 if "40 KB" in label else 1.0
        for c in ours:
            rate, clock = median_of(runs[c.name], lambda r: r[0])
            row(f"{label}, {c.name}", f"{rate:,.0f} req/s",
                f"Vite {rate / vite_value:.2f}x (>={goal:g}x: {verdict(rate / vite_value >= goal)})", clock)


async def main(quick: bool, rounds: int, vite_dir: Path | None, baseline: Path | None, only: str | None) -> None:
    n = 1000 if quick else 4000
    fast = ws.speedups()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        store = Store(cache)
        store.put(HIT_KEY, make_mp3(2), "audio/mpeg", 2.0, {"text": "Hello world", "voiceId": "voice-id",
                                                             "modelId": "eleven_flash_v2_5"})
        store.put(SMALL_KEY, make_mp3(40_000 / 16000), "audio/mpeg", 2.5, {})
        store.put(LARGE_KEY, make_mp3((1 << 20) / 16000), "audio/mpeg", 65.0, {})
        started: list[Contender] = []
        vite = today = None
        try:  # every server is started inside the try: the finally stops whichever started
            started.append(Contender("fast", *start_ours(cache, {})))
            started.append(Contender("pure", *start_ours(cache, {ws.PURE_ENV: "1"})))
            ours = started[:2]
            ref = Contender("ref", *start_reference(cache))
            started.append(ref)
            if baseline:
                today = Contender("today", *start_ours(cache, {}, baseline))
                started.append(today)
            if vite_dir:
                site = Path(tmp) / "vite"
                vite_proc, vite_port, vite_version = start_vite(site, vite_dir)
                vite = Contender(f"Vite {vite_version}", vite_proc, vite_port)
                started.append(vite)
                (site / PLUGIN_FOLDER).mkdir(exist_ok=True)
                for key in (HIT_KEY, SMALL_KEY, LARGE_KEY):  # what the checks and GETs ask Vite for too
                    for path in cache.glob(f"{key}.*"):
                        shutil.copy(path, site / PLUGIN_FOLDER)
            print(f"narrator serve on 127.0.0.1, {os.cpu_count()} cores; medians of {rounds} rounds; fast: with the "
                  f"fast extra's C code for {', '.join(k for k, v in fast.items() if v) or 'nothing (NOT INSTALLED)'}"
                  "; pure: NARRATOR_PURE_WS=1; ref: the `websockets` library's server with the same handler; "
                  + (f"Vite: {vite.name} with tests/interop's stand-in plugin" if vite
                     else "Vite: the issue's Vite 5.4 figures (no --vite-dir)")
                  + (f"; today: narrator serve from {baseline}" if baseline else "") + "; all alternated")
            if only in (None, "checks"):
                await check_figures(ours, ref, vite, n, rounds)
            if only in (None, "uploads"):
                for c in started:
                    c.prober = Prober(c.port)
                await upload_figures(ours, ref, vite, today, rounds)
            if only in (None, "gets"):
                await get_figures(ours, vite, store, n, rounds)
        finally:
            for c in started:
                if c.prober:
                    c.prober.stop()
                if c is vite:
                    os.killpg(c.pid, signal.SIGTERM)
                else:
                    c.proc.terminate()
                c.proc.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, for a smoke run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure; the median is printed")
    parser.add_argument("--vite-dir", type=Path, metavar="DIR", help="time everything against Vite 5.4 too, in the "
                        "same run: DIR holds node_modules/vite (`npm install vite@5.4` there)")
    parser.add_argument("--baseline", type=Path, metavar="DIR", help="time uploads against `narrator serve` from "
                        "the narrator_cli package in DIR too (today's code: `git archive HEAD narrator_cli | tar -x "
                        "-C DIR`)")
    parser.add_argument("--only", choices=("checks", "uploads", "gets"), help="only this part")
    parser.add_argument("--reference-server", metavar="CACHE", help=argparse.SUPPRESS)
    parser.add_argument("--prober", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline and not (args.baseline / "narrator_cli" / "__init__.py").is_file():
        parser.error(f"--baseline {args.baseline}: no narrator_cli package in it")
    if args.reference_server:
        run_reference(Path(args.reference_server))
    elif args.prober:
        run_prober(args.prober)
    else:
        asyncio.run(main(args.quick, max(1, args.rounds), args.vite_dir, args.baseline, args.only))
