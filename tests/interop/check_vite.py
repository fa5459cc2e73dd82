"""The command line's team flow against a real Vite 5.4 dev server running a narrator plugin.

By default the plugin is ``vite.config.mjs`` here, a stand-in that answers as the Motion Canvas narrator
plugin does (relative filePaths served by Vite's static files, MP3-only checks, no health or cleanup
endpoint); ``--plugin-js`` runs the real plugin instead (its built ``plugin.js``, read from where it lies,
never copied here), so the two can be compared. Needs node and npm, and downloads Vite: run by hand, not
part of the test suite. Everything runs in a temporary folder on 127.0.0.1; the provider is the local fake
ElevenLabs (MP3, and it counts what would be paid for).
    python tests/interop/check_vite.py [--vite-dir DIR] [--plugin-js FILE]
    (DIR: where `npm install vite@5.4` was run)
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
sys.path.insert(0, str(HERE.parent))  # audio_fixtures, fake_elevenlabs

from audio_fixtures import make_mp3, make_wav
from fake_elevenlabs import FakeElevenLabs

from narrator_cli.motion_canvas import PLUGIN_FOLDER  # where the plugin (and the stand-in) keeps entries

CLI = [sys.executable, "-c", "from narrator_cli.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_vite(site: Path, vite_dir: Path | None, plugin_js: Path | None = None) -> tuple[subprocess.Popen, int, str]:
    """Vite 5.4 with the stand-in plugin (or the real one from ``plugin_js``), serving ``site`` (made here)
    on a free 127.0.0.1 port once it accepts connections: (process, port, Vite's version). Stop it with
    os.killpg(process.pid, SIGTERM)."""
    site.mkdir()
    if plugin_js is None:
        shutil.copy(HERE / "vite.config.mjs", site)
    else:
        (site / "vite.config.mjs").write_text(
            "import { defineConfig } from 'vite';\n"
            f"import {{ motionCanvasNarratorPlugin }} from {json.dumps(plugin_js.resolve().as_uri())};\n"
            "export default defineConfig({ plugins: [motionCanvasNarratorPlugin()] });\n")
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


def narrator(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("NARRATOR_") and k != "ELEVENLABS_API_KEY"}
    full.update({"NARRATOR_PROVIDER": "mock", "XDG_CONFIG_HOME": str(cwd / "xdg"), **(env or {})})
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([*CLI, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=60)


def rows(r: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def local_mp3_entries(folder: Path, n: int) -> list[str]:
    """``n`` MP3 entries in ``folder``'s cache, as a provider would have left them."""
    from narrator_cli.audio import measure_duration
    from narrator_cli.keys import cache_key
    from narrator_cli.store import Store

    store, keys = Store(folder / "audio-cache"), []
    for i in range(n):
        text, audio = f"Upload line {i}.", make_mp3(0.5)
        keys.append(cache_key(text, "mock", "120"))
        store.put(keys[-1], audio, "audio/mpeg", measure_duration(audio, "audio/mpeg"),
                  {"text": text, "voiceId": "mock", "modelId": "120"})
    return keys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vite-dir", type=Path, help="a folder with node_modules/vite (else npm installs one)")
    parser.add_argument("--plugin-js", type=Path, help="the real plugin's built plugin.js, to run instead of the "
                        "stand-in")
    args = parser.parse_args()
    failures = 0

    def expect(ok: bool, what: str, detail: str = "") -> None:
        nonlocal failures
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {what}" + (f"  [{detail.strip()[:300]}]" if not ok and detail else ""))

    from narrator_cli.keys import cache_key
    from narrator_cli.providers import key_params

    with tempfile.TemporaryDirectory() as tmp, FakeElevenLabs() as fake:
        site = Path(tmp) / "site"
        vite, port, version = start_vite(site, args.vite_dir, args.plugin_js)
        try:
            url = f"http://127.0.0.1:{port}"
            print(f"Vite {version} at {url}, plugin: {args.plugin_js or 'the stand-in in tests/interop'}")
            eleven = {"NARRATOR_PROVIDER": "elevenlabs", "NARRATOR_VOICE": "TestVoiceId000000abc",
                      "ELEVENLABS_API_KEY": fake.api_key, "NARRATOR_ELEVENLABS_BASE_URL": fake.url}
            line = "Hello from the command line."
            a, b, c, d, e = (Path(tmp) / name for name in "abcde")
            folder = site / PLUGIN_FOLDER

            r = narrator(a, "speak", line, "--server", url, "--json", env=eleven)
            expect(r.returncode == 0 and rows(r)[0]["status"] == "generated" and fake.request_count == 1,
                   "speak generates (one provider call) and uploads", r.stderr)
            key = rows(r)[0]["cacheKey"] if r.returncode == 0 else "00000000"
            meta = json.loads((folder / f"{key}.meta.json").read_text()) if (folder / f"{key}.meta.json").exists() \
                else {}
            expect((folder / f"{key}.mp3").exists() and meta.get("text") == line,
                   f"the plugin stored {PLUGIN_FOLDER}/{key}.mp3 with our metadata spread over its own")
            r = narrator(a, "check", line, "--server", url, "--json", env=eleven)
            expect(r.returncode == 0 and rows(r)[0]["server"] is True, "check finds it on Vite (exit 0)", r.stderr)
            r = narrator(b, "speak", line, "--server", url, "--json", env=eleven)
            expect(r.returncode == 0 and rows(r)[0]["status"] == "server" and fake.request_count == 1,
                   f"a second member downloads it from /{PLUGIN_FOLDER}/ (no provider call)", r.stderr)
            mine, theirs = ([p for p in (m / "audio-cache").glob(f"{key}.*") if not p.name.endswith(".meta.json")]
                            for m in (a, b))
            expect(len(mine) == len(theirs) == 1 and mine[0].read_bytes() == theirs[0].read_bytes(),
                   "the downloaded audio is byte-identical")

            keys = local_mp3_entries(c, 3)
            r = narrator(c, "upload", "--all", "--server", url, "--json")
            expect(r.returncode == 0 and sorted(x["status"] for x in rows(r)) == ["uploaded"] * 3,
                   "upload --all sends three entries", r.stdout + r.stderr)
            r = narrator(c, "upload", "--all", "--server", url, "--json")
            expect(r.returncode == 0 and sorted((x["cacheKey"], x["status"]) for x in rows(r))
                   == [(k, "present") for k in sorted(keys)], "upload --all again: all three present",
                   r.stdout + r.stderr)

            browser_line = "A line the editor's browser generated."
            bkey = cache_key(browser_line, *key_params("elevenlabs", "TestVoiceId000000abc", None))
            audio = make_mp3(1.5)
            (folder / f"{bkey}.mp3").write_bytes(audio)
            (folder / f"{bkey}.meta.json").write_text(json.dumps({
                "cacheKey": bkey, "duration": 1.5, "mimeType": "audio/mpeg", "fileSize": len(audio),
                "fileName": f"{bkey}.mp3", "createdAt": "2025-01-01T00:00:00.000Z",
                "generatedAt": "2025-01-01T00:00:00.000Z"}, indent=2))
            r = narrator(d, "speak", browser_line, "--server", url, "--json", env=eleven)
            expect(r.returncode == 0 and rows(r)[0]["status"] == "server" and fake.request_count == 1,
                   "an entry the browser uploaded (seven fields, no text) is a hit", r.stderr)

            wav = e / "take.wav"
            e.mkdir()
            wav.write_bytes(make_wav(1.0))
            r = narrator(e, "upload", "take.wav", "--text", "A WAV take.", "--provider", "mock", "--server", url)
            expect(r.returncode == 0 and r.stderr.count("narrator: warning:") == 1 and "{key}.mp3" in r.stderr,
                   "a WAV upload to the plugin warns once that its check will never find it", r.stderr)
            r = narrator(e, "check", "A WAV take.", "--server", url)
            expect(r.returncode == 1, "... and indeed check does not find it (exit 1)", r.stdout + r.stderr)

            for command, endpoint in (("stats", "health"), ("cleanup", "cleanup")):
                r = narrator(c, command, "--server", url)
                expect(r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
                       and f"has no /__narrator-{endpoint}: the Motion Canvas plugin" in r.stderr,
                       f"{command} --server: one line, exit 2", r.stderr)
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
