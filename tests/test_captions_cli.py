"""``narrator captions`` and ``speak --captions`` in real processes: lines generated first, a script's lines on
one timeline, estimated timings said and regenerated only on --force, bad input changing nothing, and word
timings travelling with their entry through upload, the server and downloads."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import srt
import webvtt
from audio_fixtures import make_mp3
from serve_process import start_serve

from narrator_cli.keys import cache_key
from narrator_cli.store import Store

SCRIPT = ["Hello there, and welcome.", "This line is a little longer than the first one.", "Goodbye!"]
FIXTURE = Path(__file__).parent / "fixtures" / "mc_project"


def narrator(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NARRATOR_")}
    return subprocess.run([sys.executable, "-c", "from narrator_cli.cli import main; main()", *args], cwd=cwd,
                          capture_output=True, text=True, env=env, input=stdin, timeout=120)


def mock_key(text: str) -> str:
    return cache_key(text, "mock", "120")


def vtt_ms(stamp: str) -> int:
    hours, minutes, seconds = stamp.split(":")
    return round((int(hours) * 3600 + int(minutes) * 60 + float(seconds)) * 1000)


def metas(folder: Path) -> dict[str, dict]:
    return {p.name[:8]: json.loads(p.read_text()) for p in folder.glob("*.meta.json")}


def test_a_scripts_lines_follow_each_other_with_the_gap(tmp_path):
    (tmp_path / "script.txt").write_text("\n".join(SCRIPT) + "\n")
    proc = narrator("captions", "--file", "script.txt", "--provider", "mock", "--format", "json", "--gap", "0.5",
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    cached = metas(tmp_path / "audio-cache")  # generated first, like speak
    durations = [cached[mock_key(t)]["duration"] for t in SCRIPT]
    starts = [line["start"] for line in doc["lines"]]
    assert [line["text"] for line in doc["lines"]] == SCRIPT
    expected = [round(1000 * (sum(durations[:i]) + 0.5 * i)) for i in range(len(SCRIPT))]
    assert all(abs(a - b) <= 1 for a, b in zip(starts, expected)), (starts, expected)
    by_line = [[w for w in doc["words"] if w["line"] == i] for i in range(len(SCRIPT))]
    for i, words in enumerate(by_line):  # each line's words sit inside its own span of the timeline
        assert [w["text"] for w in words] == SCRIPT[i].split()
        assert expected[i] - 1 <= words[0]["start"] and words[-1]["end"] <= expected[i] + 1000 * durations[i] + 1
    assert not any(line["estimated"] for line in doc["lines"])
    last = doc["cues"][-1]
    assert abs(last["end"] - round(1000 * (sum(durations) + 0.5 * (len(SCRIPT) - 1)))) <= 1


def test_srt_and_vtt_on_stdout_and_in_a_file_read_back_the_same(tmp_path):
    args = ("captions", *SCRIPT, "--provider", "mock", "--gap", "1")
    out_srt = narrator(*args, cwd=tmp_path)
    assert out_srt.returncode == 0, out_srt.stderr
    subs = list(srt.parse(out_srt.stdout))
    written = narrator(*args, "--format", "vtt", "--out", "all.vtt", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    assert written.stdout == "" and "written to all.vtt" in written.stderr
    vtt = webvtt.from_buffer(io.StringIO((tmp_path / "all.vtt").read_text()))
    assert len(subs) == len(vtt.captions) >= 3
    for a, b in zip(subs, vtt.captions):
        assert round(a.start.total_seconds() * 1000) == vtt_ms(b.start)
        assert round(a.end.total_seconds() * 1000) == vtt_ms(b.end)
        assert a.content.replace("\n", " ") == b.text.replace("\n", " ")
    assert subs[0].start.total_seconds() == 0  # the mock's first word starts the line


def test_audio_without_timings_is_estimated_said_and_regenerated_only_on_force(tmp_path):
    text = "An entry the editor uploaded."
    key = mock_key(text)
    Store(tmp_path / "audio-cache").put(key, make_mp3(2.0), "audio/mpeg", 2.0)  # no text, no words
    proc = narrator("captions", text, "--provider", "mock", "--format", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["lines"][0]["estimated"] is True
    assert "1 line of 1 had no word timings" in proc.stderr and "--force" in proc.stderr
    assert "words" not in metas(tmp_path / "audio-cache")[key]  # nothing regenerated, nothing rewritten
    assert doc["words"][-1]["end"] == 2000  # spread over the entry's own duration
    forced = narrator("captions", text, "--provider", "mock", "--format", "json", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["lines"][0]["estimated"] is False
    assert "generated" in forced.stderr and "no word timings" not in forced.stderr
    assert metas(tmp_path / "audio-cache")[key]["words"][0]["text"] == "An"


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "ass"], "unknown caption format 'ass'"),
    (["--gap", "-1"], "captions gap must be a number from 0 to 3600"),
    (["--max-chars", "3"], "captions max-chars must be a whole number from 8"),
    (["--out", "."], "is a folder"),
    (["--out", "missing/x.srt"], "does not exist"),
])
def test_bad_options_are_one_line_errors_before_anything_is_generated(tmp_path, args, message):
    proc = narrator("captions", "A line.", "--provider", "mock", *args, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "audio-cache").exists()


def test_narrator_toml_sets_the_rules_and_a_bad_one_is_refused(tmp_path):
    long_line = "one two three four five six seven eight nine ten eleven twelve"
    (tmp_path / "narrator.toml").write_text("[captions]\nmax_chars = 10\nmax_lines = 1\nformat = 'json'\n")
    proc = narrator("captions", long_line, "--provider", "mock", "--max-seconds", "60", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cues = json.loads(proc.stdout)["cues"]
    assert len(cues) >= 6 and all(len(c["text"]) <= 10 for c in cues)
    (tmp_path / "narrator.toml").write_text("[captions]\nmax_lines = 'two'\n")
    bad = narrator("captions", long_line, "--provider", "mock", cwd=tmp_path)
    assert bad.returncode == 2 and "'captions.max_lines' must be a whole number" in bad.stderr


def test_a_failed_line_writes_no_captions(tmp_path):
    proc = narrator("captions", "A line.", "--provider", "espeak", "--voice", "xx-nope", "--out", "c.srt",
                    cwd=tmp_path)
    assert proc.returncode == 2 and "no voice 'xx-nope'" in proc.stderr
    assert not (tmp_path / "c.srt").exists()


def test_speak_writes_captions_next_to_each_copy(tmp_path):
    one = narrator("speak", "Just one line here.", "--provider", "mock", "--out", "intro.mp3", "--captions", "srt",
                   cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    [cue] = list(srt.parse((tmp_path / "intro.srt").read_text()))
    assert cue.content == "Just one line here." and cue.start.total_seconds() == 0
    many = narrator("speak", *SCRIPT, "--provider", "mock", "--out", "lines", "--captions", "vtt", cwd=tmp_path)
    assert many.returncode == 0, many.stderr
    audio = sorted(p.name for p in (tmp_path / "lines").glob("*.mp3"))
    captions = sorted(p.name for p in (tmp_path / "lines").glob("*.vtt"))
    assert [a[:-4] for a in audio] == [c[:-4] for c in captions] and len(audio) == 3
    first = webvtt.read(str(tmp_path / "lines" / captions[0]))
    assert first.captions[0].start == "00:00:00.000"  # each copy's captions start at its own zero
    refused = narrator("speak", "x", "--provider", "mock", "--captions", "srt", cwd=tmp_path)
    assert refused.returncode == 2 and "--captions writes caption files next to the --out copies" in refused.stderr


def test_captions_of_a_scanned_project_in_scan_order(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(FIXTURE, project)
    (project / "src" / "narrators.ts").write_text(
        "import {createMockNarrator} from 'motion-canvas-narrator';\n"
        "export const fast = createMockNarrator({wordsPerMinute: 150});\n")
    for name in ("details.tsx", "outro.tsx"):
        (project / "src" / "scenes" / name).unlink()
    (project / "src" / "scenes" / "intro.tsx").write_text(
        "import {fast} from '../narrators';\nfast.speak('First, this.');\nfast.speak(`Hi ${name}`);\n"
        "fast.speak('Then that.');\n")
    proc = narrator("captions", "--scan", "--format", "json", cwd=project)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [line["text"] for line in doc["lines"]] == ["First, this.", "Then that."]
    assert "src/scenes/intro.tsx:3: dynamic narration, not in the captions" in proc.stderr


def test_word_timings_travel_with_the_entry_through_upload_the_server_and_downloads(tmp_path):
    a, b, c = (tmp_path / n for n in ("a", "b", "c"))
    for folder in (a, b, c):
        folder.mkdir()
    proc, url = start_serve("--audio-path", str(tmp_path / "server"), cwd=tmp_path, drain=True)
    try:
        made = narrator("speak", *SCRIPT, "--provider", "mock", "--no-server", cwd=a)
        assert made.returncode == 0, made.stderr
        up = narrator("upload", "--all", "--server", url, cwd=a)
        assert up.returncode == 0, up.stderr
        mine = {k: m["words"] for k, m in metas(a / "audio-cache").items()}
        assert {k: m["words"] for k, m in metas(tmp_path / "server").items()} == mine
        down = narrator("speak", *SCRIPT, "--provider", "mock", "--server", url, "--json", cwd=b)
        assert down.returncode == 0, down.stderr
        assert {json.loads(row)["status"] for row in down.stdout.splitlines()} == {"server"}
        assert {k: m["words"] for k, m in metas(b / "audio-cache").items()} == mine
        pulled = narrator("sync", "--pull", "--server", url, cwd=c)
        assert pulled.returncode == 0, pulled.stderr
        assert {k: m["words"] for k, m in metas(c / "audio-cache").items()} == mine
        caps = narrator("captions", *SCRIPT, "--provider", "mock", "--format", "json", "--no-server", cwd=c)
        assert caps.returncode == 0 and not any(line["estimated"] for line in json.loads(caps.stdout)["lines"])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
