import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from audio_fixtures import make_wav
from narrator_cli.cli import app
from narrator_cli.keys import cache_key
from narrator_cli.store import Store

runner = CliRunner()


def run(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, catch_exceptions=False)


def narrator(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    """The real console entry point in a real process."""
    return subprocess.run([sys.executable, "-c", "from narrator_cli.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=60)


def snapshot(root):
    return sorted((p.name, p.stat().st_size) for p in root.rglob("*")) if root.exists() else []


def test_speak_offline_voice_makes_real_speech(tmp_path):
    proc = narrator("speak", "Hello from narrator")
    assert proc.returncode == 0, proc.stderr
    key = cache_key("Hello from narrator", "en", "espeak-ng")
    mp3 = tmp_path / "audio-cache" / f"{key}.mp3"  # what the Motion Canvas plugin looks for
    assert key in proc.stdout and "generated" in proc.stdout and str(mp3) in proc.stdout
    from mutagen.mp3 import MP3

    info = MP3(str(mp3)).info
    assert 0.5 < info.length < 5 and info.sample_rate == 22050
    assert mp3.stat().st_size > info.length * 4000  # speech at 64 kbit/s, not frames of silence
    assert not list((tmp_path / "audio-cache").glob("*.wav"))
    again = narrator("speak", "Hello from narrator")
    assert again.returncode == 0 and "cached" in again.stdout


def test_speak_json_batch_with_duplicates_generates_each_key_once(tmp_path):
    script = tmp_path / "script.txt"
    script.write_text("one two three\n\n  four  \none two three\n", encoding="utf-8")
    result = run("speak", "--provider", "mock", "--json", "--file", str(script), "five six")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 4
    by_text = {}
    for row in rows:
        assert {"cacheKey", "text", "voiceId", "modelId", "provider", "status", "duration", "path", "mimeType",
                "fileSize"} <= row.keys()
        by_text.setdefault(row["text"], []).append(row["status"])
    assert by_text == {"one two three": ["generated", "cached"], "four": ["generated"], "five six": ["generated"]}
    four = next(r for r in rows if r["text"] == "four")
    assert four["voiceId"] == "mock" and four["modelId"] == "120" and four["duration"] == 0.5
    assert len(list((tmp_path / "audio-cache").glob("*.meta.json"))) == 3


def test_mock_rate_is_the_model(tmp_path):
    result = run("speak", "--provider", "mock", "--model", "60", "--json", "a b c")
    row = json.loads(result.stdout)
    assert row["duration"] == 3.0 and row["cacheKey"] == cache_key("a b c", "mock", "60")


def test_force_regenerates_and_out_copies(tmp_path):
    run("speak", "--provider", "mock", "hello there")
    result = run("speak", "--provider", "mock", "--force", "--json", "--out", "copy.mp3", "hello there")
    assert json.loads(result.stdout)["status"] == "generated"
    cached = tmp_path / "audio-cache" / f"{cache_key('hello there', 'mock', '120')}.mp3"
    assert (tmp_path / "copy.mp3").read_bytes() == cached.read_bytes()
    result = run("speak", "--provider", "mock", "--out", "outdir", "a", "b")
    assert result.exit_code == 0 and len(list((tmp_path / "outdir").iterdir())) == 2


def test_colliding_key_is_a_miss_with_a_warning_never_the_other_line(tmp_path):
    assert cache_key("Aa", "mock", "120") == cache_key("BB", "mock", "120")
    run("speak", "--provider", "mock", "Aa")
    result = run("speak", "--provider", "mock", "--json", "BB")
    assert "holds another line" in result.stderr
    row = json.loads(result.stdout)
    assert row["status"] == "generated"
    assert json.loads((tmp_path / "audio-cache" / f"{row['cacheKey']}.meta.json").read_text())["text"] == "BB"
    both = run("speak", "--provider", "mock", "--json", "Aa", "BB")
    assert both.exit_code == 1 and "taken by another line" in both.stdout


def test_json_rows_come_as_lines_finish_cached_first(tmp_path):
    run("speak", "--provider", "mock", "second line")
    rows = [json.loads(x) for x in run("speak", "--provider", "mock", "--json", "first line", "second line",
                                       "first line").stdout.splitlines()]
    assert [(r["text"], r["status"]) for r in rows] == [
        ("second line", "cached"), ("first line", "generated"), ("first line", "cached")]


def test_cache_hit_counts_as_use(tmp_path):
    run("speak", "--provider", "mock", "old line")
    audio = next((tmp_path / "audio-cache").glob("*.mp3"))
    os.utime(audio, (time.time() - 90 * 86400,) * 2)
    run("speak", "--provider", "mock", "old line")
    assert audio.stat().st_mtime > time.time() - 60


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["speak", ""], "empty narration"),
        (["speak", "   "], "empty narration"),
        (["speak"], "nothing to speak"),
        (["speak", "--provider", "nope", "hi"], "unknown provider 'nope'"),
        (["speak", "--provider", "mock", "--model", "fast", "hi"], "words-per-minute"),
        (["speak", "--provider", "elevenlabs", "--voice", "v", "hi"], "needs an API key"),
        (["speak", "--provider", "elevenlabs", "hi"], "needs a voice"),
        (["speak", "--file", "missing.txt"], "cannot read"),
        (["speak", "--provider", "espeak", "--voice", "no-such-voice", "hi"], "no voice"),
        (["cleanup", "--older-than", "30 days"], "invalid age"),
        (["cleanup", "--older-than", "-3d"], "invalid age"),
        (["cleanup", "--max-size", "lots"], "invalid size"),
        (["cleanup", "--max-size", "5XB"], "invalid size"),
    ],
)
def test_bad_input_is_one_clear_line_and_changes_nothing(tmp_path, args, message):
    Store(tmp_path / "audio-cache").put("0000abcd", make_wav(), "audio/wav", 1.0)
    before = snapshot(tmp_path)
    proc = narrator(*args)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) <= 3 and message in proc.stderr, proc.stderr  # click adds a usage line for option errors
    assert "Traceback" not in proc.stderr
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("provider = [", "not valid TOML"),
        ("colour = 'blue'", "unknown setting 'colour'"),
        ("concurrency = 'many'", "'concurrency' must be a whole number"),
        ("concurrency = 0", "from 1 to 64"),
        ("api_key = 'sk-secret-value'", "is a secret"),
        ("[elevenlabs]\napi_key = 'sk-secret-value'", "is a secret"),
        ("token = 'sk-secret-value'", "is a secret"),
    ],
)
def test_bad_project_config_names_file_and_key(tmp_path, content, message):
    (tmp_path / "narrator.toml").write_text(content)
    before = snapshot(tmp_path)
    proc = narrator("speak", "--provider", "mock", "hi")
    assert proc.returncode == 2 and message in proc.stderr and "narrator.toml" in proc.stderr
    assert "sk-secret-value" not in proc.stderr + proc.stdout
    assert proc.stderr.count("\n") == 1 and snapshot(tmp_path) == before


def test_unreadable_config(tmp_path, monkeypatch):
    if os.geteuid() == 0:
        cfg = tmp_path / "narrator.toml"
        cfg.mkdir()  # root reads any file; a folder in its place is unreadable for everyone
    else:
        cfg = tmp_path / "narrator.toml"
        cfg.write_text("provider = 'mock'")
        cfg.chmod(0)
    proc = narrator("stats")
    if os.geteuid() == 0:
        assert proc.returncode == 0  # not a file: no project config here
    else:
        assert proc.returncode == 2 and "cannot read" in proc.stderr
    user = tmp_path / "user-config.toml"
    monkeypatch.setenv("NARRATOR_CONFIG", str(user))
    user.write_bytes(b"\xff\xfe not utf8")
    proc = narrator("stats")
    assert proc.returncode == 2 and "user-config.toml" in proc.stderr and "Traceback" not in proc.stderr


def test_settings_precedence_and_relative_paths(tmp_path, monkeypatch):
    project = tmp_path / "proj"
    (project / "scenes").mkdir(parents=True)
    (project / "narrator.toml").write_text('provider = "mock"\nmodel = "60"\naudio_path = "cache"\n')
    (tmp_path / "user-config.toml").write_text('provider = "espeak"\nmodel = "30"\nconcurrency = 2\n')
    monkeypatch.setenv("NARRATOR_CONFIG", str(tmp_path / "user-config.toml"))
    monkeypatch.chdir(project / "scenes")
    row = json.loads(run("speak", "--json", "a").stdout)
    assert row["provider"] == "mock" and row["modelId"] == "60"  # project beats user config
    assert row["path"].startswith(str(project / "cache"))  # relative to narrator.toml, not the cwd
    monkeypatch.setenv("NARRATOR_MODEL", "240")
    assert json.loads(run("speak", "--json", "a").stdout)["modelId"] == "240"  # env beats project
    assert json.loads(run("speak", "--json", "--model", "120", "a").stdout)["modelId"] == "120"  # flag beats env
    monkeypatch.setenv("NARRATOR_CONCURRENCY", "lots")
    result = run("speak", "a")
    assert result.exit_code == 2 and "NARRATOR_CONCURRENCY" in result.stderr


def test_stats_reports_entries_voices_billing_and_broken(tmp_path):
    store = Store(tmp_path / "audio-cache")
    store.put("0000000a", make_wav(2), "audio/wav", 2.0, {"voiceId": "v1", "modelId": "m", "characterCost": 40})
    store.put("0000000b", make_wav(1), "audio/wav", 1.0, {"voiceId": "v2", "modelId": "m", "characterCost": 2})
    store.put("0000000c", make_wav(1), "audio/wav", 1.0, {"voiceId": "v2", "modelId": "m"})
    (tmp_path / "audio-cache" / "0000000c.wav").unlink()
    report = json.loads(run("stats", "--json").stdout)
    assert report["entries"] == 2 and report["duration"] == 3.0 and report["charactersBilled"] == 42
    entries_on_disk = sum(p.stat().st_size for p in (tmp_path / "audio-cache").iterdir() if p.stem[:8] != "0000000c")
    assert report["broken"] == 1 and report["bytes"] == entries_on_disk  # audio and metadata
    assert {r["voiceId"]: r["entries"] for r in report["byVoice"]} == {"v1": 1, "v2": 1}
    table = run("stats")
    assert "v1" in table.stdout and "2 entries" in table.stdout and "broken" in table.stdout


def test_cleanup_age_then_lru_size_and_dry_run(tmp_path):
    store = Store(tmp_path / "audio-cache")
    now = time.time()
    for i, age_days in enumerate([40, 20, 10, 5, 1]):
        entry = store.put(f"0000000{i}", make_wav(1), "audio/wav", 1.0, {})
        os.utime(entry.path, (now - age_days * 86400,) * 2)
    (tmp_path / "audio-cache" / ".0000000f.123.abcd.tmp").write_bytes(b"partial")
    os.utime(tmp_path / "audio-cache" / ".0000000f.123.abcd.tmp", (now - 3600,) * 2)
    size = len(make_wav(1))
    newest_two = sum(p.stat().st_size for p in (tmp_path / "audio-cache").glob("0000000[34].*"))  # audio + metadata
    before = snapshot(tmp_path)
    dry = json.loads(run("cleanup", "--older-than", "30d", "--max-size", f"{newest_two}B", "--dry-run",
                         "--json").stdout)
    assert dry["expired"] == ["00000000"] and dry["evicted"] == ["00000001", "00000002"] and dry["dryRun"]
    assert snapshot(tmp_path) == before
    result = json.loads(run("cleanup", "--older-than", "30d", "--max-size", f"{newest_two}B", "--json").stdout)
    assert result["expired"] == dry["expired"] and result["evicted"] == dry["evicted"]
    assert result["temporary"] == [".0000000f.123.abcd.tmp"] and result["freedBytes"] > 3 * size
    assert sorted(e.key for e in store.scan().entries) == ["00000003", "00000004"]
    assert not list((tmp_path / "audio-cache").glob(".*.tmp"))
    text = run("cleanup")
    assert text.exit_code == 0 and "removed 0 entries" in text.stdout


def test_init_writes_commented_config_without_secrets(tmp_path):
    result = run("init")
    assert result.exit_code == 0
    content = (tmp_path / "narrator.toml").read_text()
    assert content.count("#") > 5 and "api_key =" not in content.replace("# ", "")
    import tomllib

    assert tomllib.loads(content)["provider"] == "espeak"
    again = run("init")
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert json.loads(run("speak", "--json", "--provider", "mock", "x").stdout)["status"] == "generated"


def test_version():
    assert run("--version").stdout.startswith("narrator ")


@pytest.mark.parametrize("xdg", [None, "", "/tmp/some-xdg-config"])
def test_user_config_path_agrees_with_platformdirs(monkeypatch, xdg):
    from platformdirs import user_config_dir

    from narrator_cli.config import user_config_path

    monkeypatch.delenv("NARRATOR_CONFIG", raising=False)
    if xdg is None:
        monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CONFIG_HOME", xdg)
    assert user_config_path() == Path(user_config_dir("narrator", appauthor=False)) / "config.toml"
