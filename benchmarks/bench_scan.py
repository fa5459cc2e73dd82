"""`narrator scan` of a generated 200-file Motion Canvas project, as a whole command (Python start-up, imports,
parsing and the cache lookups), against `python -c "import typer"` in the same run. Medians of several runs.
Target: under 1 s."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "mc_project"
RUNS = 7
FILES = 200


def make_project(root: Path) -> None:
    shutil.copytree(FIXTURE, root, dirs_exist_ok=True)
    scenes = root / "src" / "scenes"
    template = (scenes / "details.tsx").read_text(encoding="utf-8")
    existing = len(list(root.rglob("*.ts*")))
    for i in range(FILES - existing):
        (scenes / f"generated{i:03d}.tsx").write_text(template.replace("Timing at", f"Scene {i}: timing at"),
                                                      encoding="utf-8")


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        make_project(root)
        files = len([p for p in root.rglob("*") if p.suffix in (".ts", ".tsx")])
        scan = [sys.executable, "-c", "from narrator_cli.cli import main; main()", "scan"]
        typer = [sys.executable, "-c", "import typer"]
        timed(scan, root)  # warm the file cache
        scans, typers = [], []
        for _ in range(RUNS):  # alternated, so both see the same machine
            scans.append(timed(scan, root))
            typers.append(timed(typer, root))
        lines = subprocess.run(scan + ["--json"], cwd=root, check=True, capture_output=True, text=True).stdout.count("\n")
        s, t = statistics.median(scans), statistics.median(typers)
        print(f"scan {files} files ({lines} narrations)  median {s * 1000:7.1f} ms   import typer {t * 1000:6.1f} ms   "
              f"(target: under 1 s; {RUNS} runs each)")


if __name__ == "__main__":
    main()
