"""The command line against a real Vite 5.4 dev server running a stand-in narrator plugin.

The Motion Canvas narrator plugin is not on npm, so ``vite.config.mjs`` here implements its events
(from the feature description) on Vite's own HMR WebSocket; what this checks is our client against
Vite's framing, handshake and HTTP serving. Needs node and npm, and downloads Vite: run by hand,
not part of the test suite. Everything runs in a temporary folder on 127.0.0.1.
    python tests/interop/check_vite.py [--vite-dir DIR]   (DIR: where `npm install vite@5.4` was run)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-c", "from narrator_cli.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_vite(site: Path, vite_dir: Path | None) -> tuple[subprocess.Popen, int, str]:
    """Vite 5.4 with the stand-in plugin, serving ``site`` (made here) on a free 127.0.0.1 port once it
    accepts connections: (process, port, Vite's version). Stop it with os.killpg(process.pid, SIGTERM)."""
    site.mkdir()
    shutil.copy(HERE / "vite.config.mjs", site)
    (site / "index.html").write_text("<!doctype html><title>narrator interop</title>\n")
    if vite_dir:
        (site / "node_modules").symlink_to(vite_dir.resolve() / "node_modules")
    else:
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "vite@5.4"], cwd=site, check=True,
                       capture_output=True, timeout=300)
    version = json.loads((site / "node_modules/vite/package.json").read_text())["version"]
    port = free_port()
    vite = subprocess.Popen(["node", "node_modules/vite/bin/vite.js", "--host", "127.0.0.1", "--port", str(port),
                             "--strictPort"], cwd=site, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return vite, port, version
        time.sleep(0.2)
    os.killpg(vite.pid, signal.SIGTERM)
    raise RuntimeError("Vite did not start within 30 s")


def narrator(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NARRATOR_PROVIDER": "mock", "XDG_CONFIG_HOME": str(cwd / "xdg")}
    env.pop("NARRATOR_SERVER", None)
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def rows(r: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vite-dir", type=Path, help="a folder with node_modules/vite (else npm installs one)")
    args = parser.parse_args()
    failures = 0

    def expect(ok: bool, what: str, detail: str = "") -> None:
        nonlocal failures
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {what}" + (f"  [{detail.strip()[:300]}]" if not ok and detail else ""))

    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        vite, port, version = start_vite(site, args.vite_dir)
        try:
            url = f"http://127.0.0.1:{port}"
            print(f"Vite {version} at {url}")
            line = "Hello from the command line."
            a, b, c = Path(tmp) / "a", Path(tmp) / "b", Path(tmp) / "c"

            r = narrator(a, "speak", line, "--server", url, "--json")
            expect(r.returncode == 0 and rows(r)[0]["status"] == "generated", "speak generates and uploads", r.stderr)
            key = rows(r)[0]["cacheKey"] if r.returncode == 0 else "00000000"
            meta = site / "audio-cache" / f"{key}.meta.json"
            expect(meta.exists(), "Vite's plugin stored the upload")
            r = narrator(a, "check", line, "--server", url, "--json")
            expect(r.returncode == 0 and rows(r)[0]["server"] is True, "check finds it on Vite (exit 0)", r.stderr)
            r = narrator(b, "speak", line, "--server", url, "--json")
            expect(r.returncode == 0 and rows(r)[0]["status"] == "server", "a second member downloads it", r.stderr)
            mine, theirs = ([p for p in (m / "audio-cache").glob(f"{key}.*") if not p.name.endswith(".meta.json")]
                            for m in (a, b))
            expect(len(mine) == len(theirs) == 1 and mine[0].read_bytes() == theirs[0].read_bytes(),
                   "the downloaded audio is byte-identical")
            lines = [f"Upload line {i}." for i in range(3)]
            narrator(c, "speak", *lines, "--no-server", "--json")
            r = narrator(c, "upload", "--all", "--server", url, "--json")
            expect(r.returncode == 0 and sorted(x["status"] for x in rows(r)) == ["uploaded"] * 3,
                   "upload --all sends three entries", r.stdout + r.stderr)
            r = narrator(c, "check", "A line nobody spoke.", "--server", url, "--json")
            expect(r.returncode == 1 and rows(r)[0]["server"] is False, "a missing line: exit 1", r.stderr)
            r = narrator(c, "check", line, "--server", url + "/elsewhere")
            expect(r.returncode == 2 and "no WebSocket handshake" in r.stderr, "a wrong path: exit 2, says so",
                   r.stderr)
        finally:
            os.killpg(vite.pid, signal.SIGTERM)
            vite.wait(10)
    print("all passed" if not failures else f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
