"""The team story of a Motion Canvas project, end to end over 127.0.0.1 with real processes:
member A's editor folder (lines the CLI made from the scenes, and lines the editor's browser uploaded to
its Vite plugin) -> `narrator sync` -> `narrator serve` -> member B's `narrator sync` -> B's Vite answers
audio-exists for every line, B pays for nothing, and `check --scan` is B's CI gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fake_elevenlabs import FakeElevenLabs
from narrator_cli.client import Client
from narrator_cli.keys import cache_key
from plugin_peer import PluginPeer
from test_sync import browser_entry, eleven_env, rows, run, serve  # noqa: F401 - serve is a fixture

VOICE, MODEL = "TeamVoiceId000000abc", "eleven_flash_v2_5"
CLI_LINES = ["Welcome to the tour.", "Here is the second scene.", "Ünïcode, and an emoji 🎬."]
BROWSER_LINES = ["This line came from the editor.", "So did this one."]
SCENE = """import {makeScene2D} from '@motion-canvas/2d';
import {voice as narrator} from '../narrators';

export default makeScene2D(function* (view) {
%s
});
"""


def project(root: Path, lines: list[str]) -> Path:
    """A Motion Canvas project: package.json, a vite.config whose plugin keeps entries in `audio`,
    a narrator module, one scene speaking ``lines``."""
    (root / "src" / "scenes").mkdir(parents=True)
    (root / "package.json").write_text('{"name": "tour", "type": "module"}\n')
    (root / "vite.config.ts").write_text(
        "import {defineConfig} from 'vite';\nimport motionCanvas from '@motion-canvas/vite-plugin';\n"
        "import {motionCanvasNarratorPlugin} from 'motion-canvas-narrator';\n\n"
        "export default defineConfig({plugins: [motionCanvas(), motionCanvasNarratorPlugin({audioPath: 'audio'})]});\n")
    (root / "src" / "narrators.ts").write_text(
        "import {createElevenLabsNarrator} from 'motion-canvas-narrator';\n\n"
        f"export const voice = createElevenLabsNarrator({{apiKey: process.env.KEY, voiceId: '{VOICE}'}});\n")
    write_scene(root, lines)
    return root


def write_scene(root: Path, lines: list[str]) -> None:
    body = "\n".join(f"  yield* narrator.speak({json.dumps(line, ensure_ascii=False)});" for line in lines)
    (root / "src" / "scenes" / "tour.tsx").write_text(SCENE % body, encoding="utf-8")


def test_a_motion_canvas_team_pays_once(tmp_path, serve):  # noqa: F811
    url = serve()
    lines = CLI_LINES + BROWSER_LINES
    alice, bob = project(tmp_path / "alice", lines), tmp_path / "bob"
    for text in BROWSER_LINES:  # what the editor's browser uploaded to A's Vite plugin
        browser_entry(alice / "audio", cache_key(text, VOICE, MODEL))
    with FakeElevenLabs(scripted=("POST",)) as fake:
        env = {**eleven_env(fake), "NARRATOR_VOICE": "not-the-scenes-voice"}  # the scan's voiceId wins
        r = run(alice, "speak", "--scan", "--json", env=env)
        assert r.returncode == 0, r.stderr
        statuses = {row["text"]: row["status"] for row in rows(r)}
        assert statuses == {**dict.fromkeys(CLI_LINES, "generated"), **dict.fromkeys(BROWSER_LINES, "cached")}
        assert len(fake.posts()) == len(CLI_LINES)
        keys = sorted(cache_key(text, VOICE, MODEL) for text in lines)
        assert sorted(p.name[:8] for p in (alice / "audio").glob("*.meta.json")) == keys  # the editor's folder

        r = run(alice, "sync", "--server", url, "--json")
        assert r.returncode == 0, r.stderr
        assert sorted(row["cacheKey"] for row in rows(r) if row["status"] == "pushed") == keys

        shutil.copytree(alice, bob, ignore=shutil.ignore_patterns("audio", "xdg"))
        r = run(bob, "sync", "--server", url, "--json")
        assert r.returncode == 0, r.stderr
        assert sorted(row["cacheKey"] for row in rows(r) if row["status"] == "pulled") == keys
        for key in keys:
            assert (bob / "audio" / f"{key}.mp3").read_bytes() == (alice / "audio" / f"{key}.mp3").read_bytes()

        with PluginPeer(bob, audio_path="audio") as vite, Client(vite.url) as editor:  # B's editor asks its Vite
            assert all(found is not None for found in editor.check(keys).values())

        paid = len(fake.posts())
        r = run(bob, "check", "--scan")
        assert r.returncode == 0, r.stdout + r.stderr
        r = run(bob, "speak", "--scan", "--json", env=eleven_env(fake))
        assert r.returncode == 0 and {row["status"] for row in rows(r)} == {"cached"}
        assert len(fake.posts()) == paid  # B never paid for a line

        write_scene(bob, lines + ["A line nobody has spoken yet."])
        r = run(bob, "check", "--scan")
        assert r.returncode == 1
        assert "src/scenes/tour.tsx:10: A line nobody has spoken yet." in r.stdout + r.stderr
        assert len(fake.posts()) == paid
