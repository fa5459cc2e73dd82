"""``narrator speak --dry-run`` of a 500-line script (a benchmark, run by hand; never a timed test).

The whole command, with provider elevenlabs against the local stand-in (tests/fake_elevenlabs.py), half of the
lines in the local cache, the models list already kept for the day (so the run's one request is the quota's
GET), against ``python -c "import typer"`` in the same run, alternated. Target: under 1 s.
"""

from __future__ import annotations

import argparse
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
from fake_elevenlabs import FakeElevenLabs

from narrator_cli.keys import cache_key
from narrator_cli.store import Store

CLI = [sys.executable, "-c", "from narrator_cli.cli import main; main()"]
SENTENCE = "The quick brown fox jumps over the lazy dog while the narrator reads line number {n} aloud."
VOICE = "21m00Tcm4TlvDq8ikWAM"
MODEL = "eleven_flash_v2_5"


def timed(cmd: list[str], cwd: Path, env: dict) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[3:])} failed: {proc.stderr}")
    return took, proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--lines", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeElevenLabs() as fake:
        folder = Path(tmp)
        texts = [SENTENCE.format(n=n) for n in range(args.lines)]
        (folder / "script.txt").write_text("\n".join(texts) + "\n")
        store, audio = Store(folder / "audio-cache"), make_mp3(1.0)
        with store.batch():
            for text in texts[::2]:
                store.put(cache_key(text, VOICE, MODEL), audio, "audio/mpeg", 1.0,
                          {"text": text, "voiceId": VOICE, "modelId": MODEL, "provider": "elevenlabs"})
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("NARRATOR_")},
               "ELEVENLABS_API_KEY": fake.api_key, "NARRATOR_ELEVENLABS_BASE_URL": fake.url,
               "XDG_CACHE_HOME": str(folder / "xdg-cache"), "XDG_CONFIG_HOME": str(folder / "xdg-config")}
        dry = [*CLI, "speak", "--dry-run", "--json", "--file", "script.txt", "--provider", "elevenlabs",
               "--voice", VOICE]
        timed(dry, folder, env)  # keeps the models list for the day
        ours, typer_import = [], []
        for _ in range(args.runs):
            fake.requests.clear()
            took, proc = timed(dry, folder, env)
            ours.append(took)
            summary = json.loads(proc.stdout.splitlines()[-1])["summary"]
            assert (summary["cached"], summary["generate"]) == (len(texts[::2]), len(texts[1::2])), summary
            assert [r["path"] for r in fake.requests] == ["/v1/user/subscription"], fake.requests
            typer_import.append(timed([sys.executable, "-c", "import typer"], folder, env)[0])
        o, t = statistics.median(ours), statistics.median(typer_import)
        print(f"speak --dry-run, {args.lines} lines ({summary['cached']} cached, {summary['generate']} to price)  "
              f"median {o * 1000:6.0f} ms (best {min(ours) * 1000:.0f} ms)   import typer {t * 1000:4.0f} ms   "
              f"(target < 1000 ms; {args.runs} runs each, alternated)")


if __name__ == "__main__":
    main()
