"""A real `narrator serve` process on a free 127.0.0.1 port, for tests and benchmarks."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

CLI = [sys.executable, "-c", "from narrator_cli.cli import main; main()"]


def start_serve(*args: str, cwd: Path | str | None = None, drain: bool = False) -> tuple[subprocess.Popen, str]:
    """(process, base URL) once it says it listens. Its JSON log stays readable on ``stderr``
    unless ``drain``, which reads it away so a busy server never blocks on a full pipe."""
    proc = subprocess.Popen([*CLI, "serve", "--port", "0", "--json-log", *args], cwd=cwd, stderr=subprocess.PIPE,
                            text=True)
    line = ""
    for _ in range(5):  # a start-up cleanup line comes first
        line = proc.stderr.readline()
        if '"listening"' in line:
            if drain:
                threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, json.loads(line)["url"]
    proc.kill()
    raise RuntimeError(f"narrator serve did not start: {line.strip()}")


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])
