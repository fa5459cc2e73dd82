"""`narrator scan`, `speak --scan`, `check --scan` and the editor's folder, over a Motion Canvas project
written for the tests (tests/fixtures/mc_project). Keys are checked against the plugin's algorithm
written here independently, and against node running it when node is installed."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fake_elevenlabs import FakeElevenLabs

FIXTURE = Path(__file__).parent / "fixtures" / "mc_project"
DEFAULT_FOLDER_FIXTURE = Path(__file__).parent / "fixtures" / "mc_project_default_folder"
NODE = shutil.which("node")

# file:line:col -> text: every narration of the fixture, and nothing else (comments, strings, the parrot)
EXPECTED = {
    "src/scenes/details.tsx:16:22": ("Timing at A hundred and fifty words per minute.", "mock", ["mock", "150"]),
    "src/scenes/details.tsx:17:29": ("Café con leche, naïve résumé \U0001F600", "mock", ["mock", "150"]),
    "src/scenes/details.tsx:18:22": ("你好，世界。 Grüße! 🎬", "minimax", ["male-qn-qingse", "speech-2.6-turbo", "wav"]),
    "src/scenes/details.tsx:19:22": ("Line one continues here.", "minimax", ["male-qn-qingse", "speech-2.6-turbo", "wav"]),
    "src/scenes/details.tsx:21:23": ("Recorded in the studio.", "file", ["file", "rec"]),
    "src/scenes/details.tsx:22:30": ("Surrogates \U0001F600 and a tab\there.", "elevenlabs",
                                     ["JBFqnCBsd6RMkjVDRZzb", "eleven_flash_v2_5"]),
    "src/scenes/intro.tsx:8:22": ("Welcome to the show.", "elevenlabs", ["JBFqnCBsd6RMkjVDRZzb", "eleven_flash_v2_5"]),
    "src/scenes/intro.tsx:9:22": ("Thanks for having me.", "elevenlabs", ["EXAVITQu4vr4xnSDxMaL", "eleven_multilingual_v2"]),
    "src/scenes/intro.tsx:12:22": ("A template literal without substitutions.", "elevenlabs",
                                   ["JBFqnCBsd6RMkjVDRZzb", "eleven_flash_v2_5"]),
    "src/scenes/outro.tsx:8:22": ("Two lines\nin one template.", "mock", ["mock", "120"]),
    "src/scenes/outro.tsx:10:25": ("Goodbye!", "elevenlabs", ["JBFqnCBsd6RMkjVDRZzb", "eleven_flash_v2_5"]),
}
DYNAMIC = {"src/scenes/details.tsx:23:22": "speakLater('computed')", "src/scenes/details.tsx:24:22":
           "'Joined ' + 'at run time'", "src/scenes/intro.tsx:14:22": "`Hello, ${who}!`"}


def simple_hash(text: str) -> str:
    """The plugin's AudioUtils.simpleHash, written from its JavaScript: over UTF-16 code units,
    hash = (hash << 5) - hash + code, kept to 32 bits; Math.abs; hex; padStart(8, '0'); slice(0, 8)."""
    units = text.encode("utf-16-le", "surrogatepass")
    h = 0
    for i in range(0, len(units), 2):
        code = units[i] | units[i + 1] << 8
        h = ((h << 5) - h + code) & 0xFFFFFFFF
        if h & 0x80000000:
            h -= 1 << 32
    return format(abs(h), "x").rjust(8, "0")[:8]


def plugin_key(text: str, params: list[str]) -> str:
    return simple_hash("-".join([text, *params]))


def node_keys(items: list[tuple[str, list[str]]]) -> list[str]:
    script = """
const items = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const simpleHash = (s) => { let h = 0; for (let i = 0; i < s.length; i++) { h = ((h << 5) - h) + s.charCodeAt(i);
  h = h & h; } return Math.abs(h).toString(16).padStart(8, '0').slice(0, 8); };
console.log(JSON.stringify(items.map(([text, params]) => simpleHash([text, ...params].join('-')))));
"""
    out = subprocess.run([NODE, "-e", script], check=False, input=json.dumps(items), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def narrator(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from narrator_cli.cli import main; main()", *args], check=False,
                          capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=120)


@pytest.fixture
def project(tmp_path) -> Path:
    target = tmp_path / "project"
    shutil.copytree(FIXTURE, target)
    return target


def rows_of(proc: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.split("\n") if line]  # U+2028 may be in a text


def test_scan_finds_every_narration_with_the_plugins_keys(project):
    proc = narrator("scan", "--json", cwd=project / "src" / "scenes")  # the root is found upwards
    assert proc.returncode == 0, proc.stderr
    rows = rows_of(proc)
    found = {f"{r['file']}:{r['line']}:{r['column']}": r for r in rows}
    assert set(found) == set(EXPECTED) | set(DYNAMIC)
    for where, (text, provider, params) in EXPECTED.items():
        row = found[where]
        assert (row["text"], row["provider"], row["params"], row["dynamic"]) == (text, provider, params, False)
        assert row["key"] == plugin_key(text, params), where
        assert row["cached"] is False and row["status"] == "missing"
    for where, expression in DYNAMIC.items():
        assert found[where]["dynamic"] is True and found[where]["key"] is None
        assert found[where]["expression"] == expression
    assert {r["narrator"] for r in rows} == {"narrator", "guest", "timing", "teacher", "recorded", "local"}
    assert "voiceId from narrator.toml [narrators.guest]" in proc.stderr


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_scan_keys_equal_what_node_computes(project):
    rows = [r for r in rows_of(narrator("scan", "--json", cwd=project)) if r["key"]]
    assert [r["key"] for r in rows] == node_keys([(r["text"], r["params"]) for r in rows])


ESCAPES = [r"'\n\t\r\b\f\v\0'", r"'\x41\u00e9\u{1F600}\u{41}'", r"'\uD83D\uDE00'", r"'lone \uD800 high'",
           "'cont\\\nued'", "'cont\\\r\nued crlf'", "'cont\\\u2028ued ls'", r"'\q\'\"\\'", r"`\``",
           "`raw\r\nCRLF`", "`raw\rCR`", r"'\101\7'", "'\u2028 raw LS'", r'"double \"q\""']


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_escapes_decode_exactly_as_javascript_does(tmp_path):
    (tmp_path / "package.json").write_text("{}")
    body = "".join(f"n.speak({lit});\n" for lit in ESCAPES)
    (tmp_path / "a.js").write_text("const n = createMockNarrator();\n" + body, encoding="utf-8", newline="")
    proc = narrator("scan", "--json")
    assert proc.returncode == 0, proc.stderr
    texts = [r["text"] for r in rows_of(proc)]
    (tmp_path / "lits.js").write_text("console.log(JSON.stringify([" + ",".join(ESCAPES) + "]));\n",
                                      encoding="utf-8", newline="")
    expected = json.loads(subprocess.run([NODE, "lits.js"], check=True, capture_output=True, text=True, timeout=30).stdout)
    assert texts == expected
    assert "\ud800" in texts[3]  # a lone surrogate stays lone, and the key hashes it as one unit
    assert [r["key"] for r in rows_of(proc)] == [plugin_key(t, ["mock", "120"]) for t in expected]


def test_options_the_source_cannot_give_are_unknown_until_narrator_toml_gives_them(project):
    (project / "narrator.toml").unlink()
    proc = narrator("scan", "--json", cwd=project)
    guest = [r for r in rows_of(proc) if r["narrator"] == "guest"]
    assert guest and all(r["key"] is None and r["status"] == "unknown" for r in guest)
    assert "unknown: voiceId from process.env.GUEST_VOICE_ID; give it in [narrators.guest]" in guest[0]["reason"]
    (project / "narrator.toml").write_text('[narrators.guest]\nvoiceId = "abc"\n')
    [row] = [r for r in rows_of(narrator("scan", "--json", cwd=project)) if r["narrator"] == "guest"]
    assert row["key"] == plugin_key("Thanks for having me.", ["abc", "eleven_multilingual_v2"])


@pytest.mark.parametrize("table, message", [
    ('[narrators.guest]\napiKey = "sk-secret-value"\n', "is a secret"),
    ('[narrators.guest]\nvoiceId = true\n', "must be a string or a number"),
    ('narrators = 3\n', "must hold tables"),
])
def test_bad_narrator_tables_are_one_line_errors_without_the_secret(project, table, message):
    (project / "narrator.toml").write_text(table)
    proc = narrator("scan", cwd=project)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert "sk-secret-value" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_file_that_does_not_parse_is_a_warning_naming_it(project):
    (project / "src" / "scenes" / "broken.tsx").write_text("export default function( {{{\n")
    proc = narrator("scan", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert "src/scenes/broken.tsx: syntax error at line 1" in proc.stderr
    assert "src/scenes/intro.tsx:8:22  79817f49  missing  elevenlabs  Welcome to the show." in proc.stdout
    assert "14 narrations in 9 files: 11 missing, 3 dynamic" in proc.stderr


def test_editor_folder_from_vite_config_is_the_default_cache_folder(project, tmp_path):
    from narrator_cli import config

    assert config.load({}, cwd=project / "src").audio_path == project / "audio"
    default = tmp_path / "default"
    shutil.copytree(DEFAULT_FOLDER_FIXTURE, default)
    assert config.load({}, cwd=default).audio_path == default / "narrator-cache"
    (default / "vite.config.ts").write_text("export default {plugins: [motionCanvasNarratorPlugin({audioPath: dir})]}")
    settings = config.load({}, cwd=default)
    assert settings.audio_path == default / "audio-cache" and "audioPath dir is not a literal" in settings.warnings[0]
    (project / "narrator.toml").write_text('audio_path = "mine"\n')
    assert config.load({}, cwd=project).audio_path == project / "mine"
    os.environ["NARRATOR_AUDIO_PATH"] = "env-folder"
    try:
        (project / "narrator.toml").unlink()
        assert config.load({}, cwd=project).audio_path == project / "env-folder"
    finally:
        del os.environ["NARRATOR_AUDIO_PATH"]


def test_init_writes_the_folder_vite_config_names(project):
    proc = narrator("init", cwd=project / "src")
    assert proc.returncode == 0, proc.stderr
    text = (project / "src" / "narrator.toml").read_text()
    assert 'audio_path = "../audio"' in text and "from ../vite.config.ts" in text


def test_speak_scan_speaks_each_line_with_its_narrator_then_check_scan_passes(project):
    (project / "src" / "narrators.ts").write_text(
        "import {createMockNarrator} from 'motion-canvas-narrator';\n"
        "export const fast = createMockNarrator({wordsPerMinute: 150});\n"
        "export const slow = createMockNarrator({wordsPerMinute: 60});\n"
        "export const recorded = createFileNarrator({audioDirectory: 'rec'});\n")
    scene = project / "src" / "scenes" / "intro.tsx"
    scene.write_text("import {fast, slow, recorded as studio} from '../narrators';\n"
                     "fast.speak('One line.');\nslow.speak(`Another line.`);\nstudio.speak('Recorded.');\n"
                     "fast.speak(`Hi ${name}`);\n")
    for name in ("details.tsx", "outro.tsx"):
        (project / "src" / "scenes" / name).unlink()
    gate = narrator("check", "--scan", cwd=project)
    assert gate.returncode == 1
    assert gate.stdout.splitlines() == ["src/scenes/intro.tsx:2: One line.", "src/scenes/intro.tsx:3: Another line.",
                                        "src/scenes/intro.tsx:4: Recorded."]
    assert "src/scenes/intro.tsx:5: dynamic narration, not checked" in gate.stderr
    proc = narrator("speak", "--scan", "--json", cwd=project)
    assert proc.returncode == 1  # the recording is missing
    rows = {r["text"]: r for r in rows_of(proc)}
    assert rows["One line."]["status"] == "generated" and rows["One line."]["modelId"] == "150"
    assert rows["Another line."]["cacheKey"] == plugin_key("Another line.", ["mock", "60"])
    meta = json.loads((project / "audio" / f"{plugin_key('One line.', ['mock', '150'])}.meta.json").read_text())
    assert meta["text"] == "One line."
    assert rows["Recorded."]["status"] == "failed"
    assert "narrator upload FILE --text Recorded. --provider elevenlabs --voice file --model rec" in proc.stderr
    gate = narrator("check", "--scan", cwd=project)
    assert gate.returncode == 1 and gate.stdout.splitlines() == ["src/scenes/intro.tsx:4: Recorded."]
    (project / "src" / "scenes" / "intro.tsx").write_text(scene.read_text().replace("studio.speak('Recorded.');", ""))
    gate = narrator("check", "--scan", "src", cwd=project)
    assert gate.returncode == 0, gate.stdout + gate.stderr


def test_speak_scan_uses_elevenlabs_with_the_scanned_voice(project):
    for name in ("details.tsx", "outro.tsx"):
        (project / "src" / "scenes" / name).unlink()
    with FakeElevenLabs() as fake:
        env = {"ELEVENLABS_API_KEY": fake.api_key, "NARRATOR_ELEVENLABS_BASE_URL": fake.url}
        proc = narrator("speak", "--scan", "--json", cwd=project, env=env)
        assert proc.returncode == 0, proc.stderr
        assert fake.api_key not in proc.stdout + proc.stderr
    rows = {r["text"]: r for r in rows_of(proc)}
    assert rows["Thanks for having me."]["cacheKey"] == plugin_key("Thanks for having me.",
                                                                   ["EXAVITQu4vr4xnSDxMaL", "eleven_multilingual_v2"])
    assert {r["status"] for r in rows.values()} == {"generated"}
    assert narrator("check", "--scan", cwd=project).returncode == 0


def test_scan_options_that_pick_lines_are_refused(project):
    proc = narrator("speak", "--scan", "--voice", "x", cwd=project)
    assert proc.returncode == 2 and "drop --voice" in proc.stderr


def test_the_editor_folder_is_remembered_so_a_cache_hit_does_not_parse_again(tmp_path, monkeypatch):
    import subprocess
    import sys

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-home"))
    project = tmp_path / "proj"
    project.mkdir()
    (project / "package.json").write_text("{}")
    config = project / "vite.config.ts"
    config.write_text("import {motionCanvasNarratorPlugin} from 'motion-canvas-narrator';\n"
                      "export default {plugins: [motionCanvasNarratorPlugin({audioPath: 'first'})]};\n")
    probe = ("import sys\nfrom narrator_cli.cli import main\nsys.argv = ['narrator', 'speak', 'hi', '--provider', "
             "'mock', '--json']\ntry:\n    main()\nfinally:\n    print('parsed' if 'tree_sitter' in sys.modules "
             "else 'remembered', file=sys.stderr)\n")

    def run() -> tuple[str, str]:
        proc = subprocess.run([sys.executable, "-c", probe], cwd=project, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["path"], proc.stderr.strip().splitlines()[-1]

    path, how = run()
    assert "/first/" in path and how == "parsed"
    path, how = run()
    assert "/first/" in path and how == "remembered"  # no tree-sitter on the cache-hit path
    config.write_text(config.read_text().replace("'first'", "'second-folder'"))  # size and mtime change
    path, how = run()
    assert "/second-folder/" in path and how == "parsed"


def test_scan_and_check_scan_ask_the_team_server(project, tmp_path):
    from audio_fixtures import make_mp3
    from serve_process import start_serve

    from narrator_cli.keys import cache_key
    from narrator_cli.store import Store

    text, _, params = EXPECTED["src/scenes/intro.tsx:8:22"]
    key = cache_key(text, *params)
    server = Store(tmp_path / "server-cache")
    server.put(key, make_mp3(1), "audio/mpeg", 1.0, {"text": text, "voiceId": params[0], "modelId": params[1]})
    proc, url = start_serve("--audio-path", str(tmp_path / "server-cache"), drain=True)
    try:
        rows = {f"{r['file']}:{r['line']}:{r['column']}": r for r in rows_of(narrator("scan", "--json",
                                                                                      "--server", url, cwd=project))}
        assert rows["src/scenes/intro.tsx:8:22"]["server"] is True and rows["src/scenes/intro.tsx:8:22"]["cached"] is False
        assert rows["src/scenes/outro.tsx:10:25"]["server"] is False
        gate = narrator("check", "--scan", "--server", url, cwd=project)
        assert gate.returncode == 1
        assert "src/scenes/intro.tsx:8: Welcome to the show." not in gate.stdout + gate.stderr  # on the server
        assert "src/scenes/outro.tsx:10: Goodbye!" in gate.stdout + gate.stderr
    finally:
        proc.kill()
        proc.wait(10)
