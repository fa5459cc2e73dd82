"""``narrator speak`` as a new user meets it: --out targets, Ctrl-C, scripts, help and batch output."""

import json
import os
import pty
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from fake_elevenlabs import FakeElevenLabs
from narrator_cli.keys import cache_key
from narrator_cli.store import Store

CLI = [sys.executable, "-c", "from narrator_cli.cli import main; main()"]


def narrator(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, env={**os.environ, **(env or {})}, timeout=120, **kw)


def mock(*args: str, **kw) -> subprocess.CompletedProcess:
    return narrator("speak", "--provider", "mock", *args, **kw)


def cached_audio(tmp_path, text: str) -> bytes:
    entry = Store(tmp_path / "audio-cache").get(cache_key(text, "mock", "120"))
    assert entry is not None
    return entry.path.read_bytes()


# --- --out -------------------------------------------------------------------------------------
def test_out_writes_through_a_fifo_and_never_replaces_it(tmp_path):
    fifo = tmp_path / "pipe.audio"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    proc = mock("Hello pipe", "--out", str(fifo))
    reader.join(10)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still a pipe, not a regular file renamed over it
    assert got == [cached_audio(tmp_path, "Hello pipe")]


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root (CI runs as root)")
def test_out_to_a_device_writes_through_it(tmp_path):
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a /dev/null of our own
    proc = mock("Into the void", "--out", str(null))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISCHR(os.lstat(null).st_mode)


def test_out_follows_a_symlink(tmp_path):
    (tmp_path / "link.wav").symlink_to("real.wav")
    proc = mock("Linked", "--out", "link.wav", "--format", "wav")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "link.wav").is_symlink()
    assert (tmp_path / "real.wav").read_bytes() == cached_audio(tmp_path, "Linked")


def test_out_dash_writes_the_audio_to_stdout_and_the_rows_to_stderr(tmp_path):
    proc = mock("To stdout", "--out", "-")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == cached_audio(tmp_path, "To stdout")
    assert b"generated" in proc.stderr
    assert not (tmp_path / "-").exists()
    again = mock("To stdout", "--out", "-", "--json")
    assert again.returncode == 2 and b"choose one" in again.stderr


def test_out_dash_is_refused_on_a_terminal(tmp_path):
    main, sub = pty.openpty()
    try:
        proc = subprocess.run([*CLI, "speak", "--provider", "mock", "Hi", "--out", "-"], stdout=sub,
                              stderr=subprocess.PIPE, env=os.environ, timeout=60)
    finally:
        os.close(sub)
        os.close(main)
    assert proc.returncode == 2 and b"terminal" in proc.stderr
    assert proc.stderr.count(b"\n") == 1
    assert not (tmp_path / "audio-cache").exists()  # refused before anything was generated


def test_several_lines_to_one_file_is_refused_before_anything_happens(tmp_path):
    proc = mock("one", "two", "--out", "multi.wav")
    assert proc.returncode == 2 and b"folder" in proc.stderr and proc.stderr.count(b"\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_out_into_a_missing_folder_is_one_line_exit_2(tmp_path):
    proc = mock("x", "--out", "a/b/c.wav")
    assert proc.returncode == 2 and b"a/b" in proc.stderr and b"Traceback" not in proc.stderr
    assert proc.stderr.count(b"\n") == 1 and not (tmp_path / "a").exists()


def test_out_folder_names_keep_script_order_with_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        proc = mock("Zebra crossing!", "apple pie", "Zebra crossing!", "--out", "clips")
    finally:
        os.umask(old)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (tmp_path / "clips").iterdir())
    assert [n.rsplit(".", 1)[0] for n in names] == ["01-zebra-crossing", "02-apple-pie", "03-zebra-crossing"]
    assert all(stat.S_IMODE((tmp_path / "clips" / n).stat().st_mode) == 0o644 for n in names)
    assert b"copied 3 files to clips" in proc.stderr


def test_a_single_copy_says_where_it_went(tmp_path):
    proc = mock("Where am I", "--out", "here.wav", "--format", "wav")
    assert proc.returncode == 0 and b"copied to here.wav" in proc.stderr
    assert stat.S_IMODE((tmp_path / "here.wav").stat().st_mode) & 0o077 != 0  # not mkstemp's 0600


def test_wav_is_never_written_under_an_mp3_name(tmp_path):
    from mutagen.mp3 import MP3

    proc = mock("Convert me", "--format", "wav", "--out", "converted.mp3")
    assert proc.returncode == 0, proc.stderr
    assert cached_audio(tmp_path, "Convert me")[:4] == b"RIFF"
    MP3(str(tmp_path / "converted.mp3"))  # parses as MP3, not WAV bytes with another name
    refused = mock("Convert me too", "--out", "wanted.wav")  # MP3 by default: no decoder to make WAV
    assert refused.returncode == 2 and b".mp3" in refused.stderr and not (tmp_path / "wanted.wav").exists()


# --- Ctrl-C ------------------------------------------------------------------------------------
def test_ctrl_c_stops_paying_for_a_batch_and_keeps_what_finished(tmp_path):
    lines = [f"Line {i} of a script that someone interrupts." for i in range(80)]
    with FakeElevenLabs(scripted=("POST",), latency=0.15) as fake:
        env = {**os.environ, "NARRATOR_PROVIDER": "elevenlabs", "NARRATOR_VOICE": "TestVoiceId000000abc",
               "ELEVENLABS_API_KEY": fake.api_key, "NARRATOR_ELEVENLABS_BASE_URL": fake.url}
        proc = subprocess.Popen([*CLI, "speak", *lines, "--concurrency", "4"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while len(fake.posts()) < 24 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        sent_at_interrupt = len(fake.posts())
        out, err = proc.communicate(timeout=60)
        time.sleep(0.5)
        sent = len(fake.posts())
    assert proc.returncode == 130, err
    assert sent <= sent_at_interrupt + 4  # at most what was already in flight; before: all 80
    last = err.strip().splitlines()[-1]
    assert "interrupted:" in last and "of 80 lines done" in last and "Traceback" not in err
    scan = Store(tmp_path / "audio-cache").scan()
    done = int(last.split("interrupted: ")[1].split(" of")[0])
    assert len(scan.entries) == done >= 20 and scan.broken == []
    assert not list((tmp_path / "audio-cache").glob(".*.tmp"))
    assert out.count("generated") == done


# --- scripts, settings, help -----------------------------------------------------------------
def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path):
    (tmp_path / "script.txt").write_bytes("\ufeffFirst line.\nSecond line.\n".encode())
    proc = narrator("check", "--file", "script.txt", "--json")
    keys = [json.loads(line)["cacheKey"] for line in proc.stdout.splitlines()]
    assert keys[0] == cache_key("First line.", "en", "espeak-ng") == "6c084898"


def test_unknown_provider_in_narrator_toml_names_the_file_and_key(tmp_path):
    (tmp_path / "narrator.toml").write_text('provider = "elevenlab"\n')
    proc = narrator("speak", "hi")
    assert proc.returncode == 2 and b"narrator.toml" in proc.stderr and b"'provider'" in proc.stderr
    assert b"elevenlab" in proc.stderr and proc.stderr.count(b"\n") == 1


def test_narrator_config_naming_a_missing_file_is_an_error(tmp_path):
    proc = narrator("stats", env={"NARRATOR_CONFIG": str(tmp_path / "nope.toml")})
    assert proc.returncode == 2 and b"NARRATOR_CONFIG" in proc.stderr and b"nope.toml" in proc.stderr


@pytest.mark.parametrize("command", ["speak", "check", "upload", "stats", "cleanup", "init", "serve"])
def test_each_command_has_help_with_an_example(command):
    proc = narrator(command, "-h", env={"COLUMNS": "200"})
    assert proc.returncode == 0 and b"Example:" in proc.stdout, proc.stdout


def test_help_shows_defaults_and_where_the_user_config_is(tmp_path):
    serve = narrator("serve", "--help", env={"COLUMNS": "200"}).stdout.decode()
    assert "[default: 8790" in serve and "[default: 127.0.0.1]" in serve
    speak = narrator("speak", "--help", env={"COLUMNS": "200"}).stdout.decode()
    assert "[default: espeak]" in speak and "[default: 4]" in speak
    top = narrator("--help", env={"COLUMNS": "200"}).stdout.decode()
    assert "config.toml" in top and "--install-completion" in top


def test_python_dash_m_works():
    proc = subprocess.run([sys.executable, "-m", "narrator_cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("narrator ")


# --- batch output ------------------------------------------------------------------------------
def test_rows_show_the_text_and_a_summary_closes_the_batch(tmp_path):
    mock("a cached line")
    proc = mock("a cached line", "a new line", "x" * 80)
    out = proc.stdout.decode()
    assert "a cached line" in out and "a new line" in out and "x" * 31 + "…" in out and "x" * 40 not in out
    last = proc.stderr.decode().strip().splitlines()[-1]
    assert "3 lines: 1 cached, 2 generated" in last and "0 characters billed" in last


def test_billed_characters_add_up_in_the_summary(tmp_path):
    with FakeElevenLabs(scripted=("POST",)) as fake:
        env = {"NARRATOR_PROVIDER": "elevenlabs", "NARRATOR_VOICE": "TestVoiceId000000abc", "ELEVENLABS_API_KEY": fake.api_key,
               "NARRATOR_ELEVENLABS_BASE_URL": fake.url}
        proc = narrator("speak", "Hello there.", "General Kenobi.", env=env)
    assert proc.returncode == 0, proc.stderr
    billed = len("Hello there.") + len("General Kenobi.")
    assert f"{billed} characters billed" in proc.stderr.decode()


def test_progress_on_a_terminal_shows_eta_counts_and_failures_as_they_happen(tmp_path):
    main, sub = pty.openpty()
    with FakeElevenLabs(scripted=("POST",), latency=0.05) as fake:
        fake.script(*[(400, {"detail": {"status": "bad", "message": "refused line"}})])
        env = {**os.environ, "NARRATOR_PROVIDER": "elevenlabs", "NARRATOR_VOICE": "TestVoiceId000000abc", "COLUMNS": "160",
               "ELEVENLABS_API_KEY": fake.api_key, "NARRATOR_ELEVENLABS_BASE_URL": fake.url}
        proc = subprocess.Popen([*CLI, "speak", *[f"Line {i}." for i in range(6)], "--concurrency", "1"],
                                stdout=subprocess.PIPE, stderr=sub, env=env)
        os.close(sub)
        screen = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
        proc.communicate(timeout=60)
    os.close(main)
    text = screen.decode(errors="replace")
    assert "ETA" in text and "generated" in text and "failed 1" in text
    assert "refused line" in text  # the failure, printed above the bar when it happened
    assert proc.returncode == 1


@pytest.mark.parametrize(("where", "value"), [("env", "flac"), ("toml", "ogg")])
def test_an_unknown_format_setting_is_refused_even_when_all_is_cached(tmp_path, where, value):
    assert mock("cached already").returncode == 0
    env = {"NARRATOR_FORMAT": value} if where == "env" else {}
    if where == "toml":
        (tmp_path / "narrator.toml").write_text(f'format = "{value}"\n')
    proc = mock("cached already", env=env)
    assert proc.returncode == 2 and value.encode() in proc.stderr and b"mp3, wav" in proc.stderr


def test_the_readme_stands_on_its_own_and_the_license_is_what_pyproject_says():
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", readme)
    assert not [link for link in links if link.startswith("..") or link.startswith("/")]
    assert "python3-venv" in readme and "pipx install" in readme and "SSML" in readme
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and (root / "LICENSE").read_text().startswith("MIT License")
