"""`speak --dry-run` and budgets: where each line is cached, what the rest would bill (ElevenLabs' multipliers
from the stand-in's models list), and batches refused before their first paid request, over the budget or the
quota left. Against the ElevenLabs stand-in and a real `narrator serve`."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_elevenlabs import FakeElevenLabs, error, refused_url
from test_elevenlabs import assert_one_line_error as one_line_error

from narrator_cli.keys import cache_key

VOICE = "21m00Tcm4TlvDq8ikWAM"  # a voice of the stand-in's account
FLASH = "eleven_flash_v2_5"  # the default model: multiplier 0.5 in the stand-in's models list
LINES = ["The first line of the script.", "A second line, somewhat longer than the first.", "Third."]
FIXTURE = Path(__file__).parent / "fixtures" / "mc_project"


@pytest.fixture
def fake():
    with FakeElevenLabs() as f:
        yield f


def narrator(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from narrator_cli.cli import main; main()", *args], check=False,
                          capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=120)


def eleven(fake, **more) -> dict:
    return {"ELEVENLABS_API_KEY": fake.api_key, "NARRATOR_ELEVENLABS_BASE_URL": fake.url, **more}


def speak(fake, *args: str, cwd=None, **env) -> subprocess.CompletedProcess:
    return narrator("speak", "--provider", "elevenlabs", "--voice", VOICE, *args, cwd=cwd, env=eleven(fake, **env))


def posts(fake) -> list[dict]:
    return [r for r in fake.requests if r["method"] == "POST"]


def rows(proc) -> tuple[list[dict], dict]:
    """The dry run's JSON: one object per line, then ``{"summary": {...}}``."""
    objs = [json.loads(line) for line in proc.stdout.split("\n") if line]
    assert objs and set(objs[-1]) == {"summary"}, proc.stdout
    return objs[:-1], objs[-1]["summary"]


def snapshot(root: Path) -> dict:
    """Every path under ``root`` (the user's cache folder aside) with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if "xdg-cache" not in p.parts}


def flash(text: str) -> int:
    return -(-len(text) // 2)  # x0.5, rounded up


# --- budgets ------------------------------------------------------------------------------------------


def test_a_budget_stops_the_batch_before_the_first_paid_request(fake, tmp_path):
    total = sum(flash(t) for t in LINES)
    proc = speak(fake, "--max-characters", str(total - 1), *LINES)
    assert proc.returncode == 2
    one_line_error(proc, f"would bill {total} characters", f"over the budget of {total - 1}", "3 lines to generate")
    assert posts(fake) == [] and not (tmp_path / "audio-cache").exists()


@pytest.mark.parametrize("where", ["flag", "env", "toml"])
def test_a_budget_counts_only_what_would_be_generated_and_lets_it_through(fake, tmp_path, where):
    assert speak(fake, LINES[1]).returncode == 0  # cached now: it costs nothing
    budget = flash(LINES[0]) + flash(LINES[2])  # exactly what the other two bill
    args, env = [], {}
    if where == "flag":
        args = ["--max-characters", str(budget)]
    elif where == "env":
        env = {"NARRATOR_BUDGET": str(budget)}
    else:
        (tmp_path / "narrator.toml").write_text(f"budget = {budget}\n")
    proc = speak(fake, "--json", *args, *LINES, **env)
    assert proc.returncode == 0, proc.stderr
    statuses = {json.loads(line)["text"]: json.loads(line)["status"] for line in proc.stdout.splitlines()}
    assert statuses == {LINES[0]: "generated", LINES[1]: "cached", LINES[2]: "generated"}
    assert len(posts(fake)) == 3

    (tmp_path / "narrator.toml").unlink(missing_ok=True)
    refused = speak(fake, "--max-characters", str(flash("Yet another line.") - 1), "Yet another line.", LINES[0])
    assert refused.returncode == 2 and "over the budget" in refused.stderr and len(posts(fake)) == 3


def test_the_env_budget_applies_where_no_flag_is_given(fake, tmp_path):
    proc = speak(fake, *LINES, NARRATOR_BUDGET="10")
    assert proc.returncode == 2 and "over the budget of 10" in proc.stderr and posts(fake) == []


def test_a_bad_budget_in_narrator_toml_is_one_line(fake, tmp_path):
    (tmp_path / "narrator.toml").write_text("budget = -5\n")
    proc = speak(fake, LINES[0])
    assert proc.returncode == 2
    one_line_error(proc, "budget", "-5")
    assert fake.requests == []


def test_a_batch_over_the_quota_left_is_refused_without_a_budget(fake, tmp_path):
    sub = fake.account.subscription
    sub["character_count"] = sub["character_limit"] - (sum(flash(t) for t in LINES) - 1)
    proc = speak(fake, *LINES)
    assert proc.returncode == 2
    one_line_error(proc, f"would bill {sum(flash(t) for t in LINES)} ElevenLabs characters",
                   f"more than the {sum(flash(t) for t in LINES) - 1} left", "tier creator")
    assert posts(fake) == [] and not (tmp_path / "audio-cache").exists()

    sub["character_count"] -= 1  # now exactly enough
    assert speak(fake, *LINES).returncode == 0 and len(posts(fake)) == 3


def test_a_cache_hit_makes_no_account_request(fake, tmp_path):
    assert speak(fake, *LINES).returncode == 0
    before = len(fake.requests)
    again = speak(fake, "--max-characters", "0", *LINES)
    assert again.returncode == 0, again.stderr
    assert len(fake.requests) == before  # no GET either: nothing was to be paid for


def test_free_voices_pass_a_zero_budget_and_ask_no_account(fake, tmp_path):
    proc = narrator("speak", "--provider", "mock", "--max-characters", "0", *LINES, env=eleven(fake))
    assert proc.returncode == 0, proc.stderr
    assert fake.requests == []


def test_a_refused_key_stops_at_the_account_request(fake, tmp_path):
    proc = speak(fake, *LINES, ELEVENLABS_API_KEY="sk-wrong-key")
    assert proc.returncode == 2
    one_line_error(proc, "API key", "401")
    assert fake.statuses() in ([401], [401, 401]) and posts(fake) == []  # the quota and models, asked at once


def test_a_key_that_may_not_read_the_account_still_speaks(fake, tmp_path):
    refused = error(401, "missing_permissions",
                    "The API key you used is missing the permission user_read to execute this operation.")
    fake.script(refused, refused)  # the quota and the models list, asked at once
    proc = speak(fake, LINES[0])
    assert proc.returncode == 0, proc.stderr
    assert "quota could not be read" in proc.stderr and "missing the permission user_read" in proc.stderr
    assert len(posts(fake)) == 1


def test_captions_generation_is_held_to_the_budget(fake, tmp_path):
    proc = narrator("captions", "--provider", "elevenlabs", "--voice", VOICE, *LINES,
                    env=eleven(fake, NARRATOR_BUDGET="5"))
    assert proc.returncode == 2 and "over the budget of 5" in proc.stderr, proc.stderr
    assert posts(fake) == []


# --- the dry run ----------------------------------------------------------------------------------------


def test_dry_run_prices_each_line_and_the_total_against_the_quota(fake, tmp_path):
    assert speak(fake, LINES[0]).returncode == 0
    fake.requests.clear()
    proc = speak(fake, "--dry-run", "--json", "--max-characters", "10", *LINES, LINES[2],
                 "--model", "eleven_multilingual_v2")
    assert proc.returncode == 0, proc.stderr
    lines, summary = rows(proc)
    assert [r["status"] for r in lines] == ["generate", "generate", "generate", "repeat"]  # another model: not cached
    assert [r["billed"] for r in lines] == [len(LINES[0]), len(LINES[1]), len(LINES[2]), 0]  # x1.0
    assert all(r["multiplier"] == 1.0 and r["estimated"] is False for r in lines[:3])
    assert lines[0]["cacheKey"] == cache_key(LINES[0], VOICE, "eleven_multilingual_v2")
    billed = sum(len(t) for t in LINES)
    assert summary["billed"] == billed and summary["generate"] == 3 and summary["repeat"] == 1
    assert summary["byProvider"] == {"elevenlabs": {"lines": 3, "characters": billed, "billed": billed}}
    assert summary["quota"]["charactersLeft"] == 100_000 - 12_345 and summary["withinQuota"] is True
    assert summary["budget"] == 10 and summary["withinBudget"] is False
    assert posts(fake) == []

    text = speak(fake, "--dry-run", *LINES)  # the default model: x0.5, and the first line is cached
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[0].split()[:2] == [cache_key(LINES[0], VOICE, FLASH), "cached"]
    assert f"{flash(LINES[1]) + flash(LINES[2])} characters to bill" in text.stderr
    assert "87,655 characters left of 100,000" in text.stderr and "enough for these lines" in text.stderr
    assert posts(fake) == []


def test_dry_run_marks_an_estimate_when_the_models_list_cannot_be_read(tmp_path):
    proc = narrator("speak", "--provider", "elevenlabs", "--voice", VOICE, "--dry-run", "--json", *LINES,
                    env={"ELEVENLABS_API_KEY": "sk-x", "NARRATOR_ELEVENLABS_BASE_URL": refused_url()})
    assert proc.returncode == 0, proc.stderr
    lines, summary = rows(proc)
    assert all(r["estimated"] is True and r["multiplier"] == 1.0 for r in lines)
    assert [r["billed"] for r in lines] == [len(t) for t in LINES]  # x1
    assert summary["estimated"] is True and summary["quota"] is None and "cannot reach" in summary["quotaError"]
    assert any("models list could not be read" in n for n in summary["notes"])
    text = narrator("speak", "--provider", "elevenlabs", "--voice", VOICE, "--dry-run", *LINES,
                    env={"ELEVENLABS_API_KEY": "sk-x", "NARRATOR_ELEVENLABS_BASE_URL": refused_url()})
    assert "about " in text.stderr and "~" in text.stdout and "not readable" in text.stderr


def test_dry_run_uses_the_last_models_list_kept_when_the_api_fails(fake, tmp_path):
    assert speak(fake, "--dry-run", LINES[0]).returncode == 0  # keeps today's list
    kept = tmp_path / "xdg-cache" / "narrator" / "elevenlabs-models.json"
    old = json.loads(kept.read_text())
    old["at"] = time.time() - 3 * 86_400
    old["value"][FLASH] = 0.25
    kept.write_text(json.dumps(old))
    fake.always(error(503, "service_unavailable", "down"))
    proc = speak(fake, "--dry-run", "--json", LINES[1], NARRATOR_ELEVENLABS_RETRIES="0")
    assert proc.returncode == 0, proc.stderr
    lines, summary = rows(proc)
    assert lines[0]["multiplier"] == 0.25 and lines[0]["estimated"] is True
    assert lines[0]["billed"] == -(-len(LINES[1]) // 4)
    assert any("the last list kept" in n for n in summary["notes"])


def test_dry_run_with_a_server_says_local_server_or_generate(fake, tmp_path):
    from audio_fixtures import make_mp3
    from serve_process import start_serve

    from narrator_cli.store import Store

    local, remote = Store(tmp_path / "audio-cache"), Store(tmp_path / "server-cache")
    for store, text in ((local, LINES[0]), (remote, LINES[1])):
        store.put(cache_key(text, VOICE, FLASH), make_mp3(1), "audio/mpeg", 1.0,
                  {"text": text, "voiceId": VOICE, "modelId": FLASH})
    before = snapshot(tmp_path)
    proc, url = start_serve("--audio-path", str(tmp_path / "server-cache"), drain=True)
    try:
        dry = speak(fake, "--dry-run", "--json", "--server", url, *LINES)
        text = speak(fake, "--dry-run", "--server", url, *LINES)
    finally:
        proc.terminate()
        proc.wait(10)
    assert dry.returncode == 0, dry.stderr
    lines, summary = rows(dry)
    assert [r["status"] for r in lines] == ["cached", "server", "generate"]
    assert [r["billed"] for r in lines] == [0, 0, flash(LINES[2])]
    assert (summary["cached"], summary["server"], summary["generate"]) == (1, 1, 1)
    assert "1 cached, 1 on the server, 1 to generate" in text.stderr
    assert posts(fake) == []
    assert sorted(p.name for p in (tmp_path / "audio-cache").iterdir()) == sorted(
        f"{cache_key(LINES[0], VOICE, FLASH)}.{ext}" for ext in ("mp3", "meta.json"))  # nothing downloaded
    assert {k: v for k, v in snapshot(tmp_path).items() if k.startswith("audio-cache")} == \
        {k: v for k, v in before.items() if k.startswith("audio-cache")}


def test_dry_run_writes_nothing(fake, tmp_path):
    proc = speak(fake, "--dry-run", *LINES)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "audio-cache").exists() and posts(fake) == []

    assert speak(fake, LINES[0]).returncode == 0
    assert narrator("speak", "--provider", "mock", LINES[1]).returncode == 0
    entry = next((tmp_path / "audio-cache").glob("*.mp3"))
    os.utime(entry, ns=(1_000_000_000, 1_000_000_000))  # old times, so a touch would show
    before, posted = snapshot(tmp_path), len(posts(fake))
    for args in (["--dry-run", *LINES], ["--dry-run", "--json", "--force", *LINES]):
        assert speak(fake, *args).returncode == 0
    assert narrator("speak", "--provider", "mock", "--dry-run", LINES[1], LINES[2]).returncode == 0
    assert snapshot(tmp_path) == before and len(posts(fake)) == posted


def test_dry_run_refuses_out_and_captions(fake, tmp_path):
    proc = speak(fake, "--dry-run", "--out", "x.mp3", LINES[0])
    assert proc.returncode == 2
    one_line_error(proc, "--dry-run writes nothing")
    assert fake.requests == [] and not (tmp_path / "x.mp3").exists()


# --- a Motion Canvas project ----------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path) -> Path:
    target = tmp_path / "project"
    shutil.copytree(FIXTURE, target)
    return target


def test_scan_dry_run_prices_each_narrator(fake, project, tmp_path):
    mock_line = "Two lines\nin one template."
    assert narrator("speak", "--provider", "mock", "--audio-path", str(project / "audio"), mock_line,
                    cwd=project).returncode == 0
    before = snapshot(tmp_path)
    proc = narrator("speak", "--scan", "--dry-run", "--json", cwd=project, env=eleven(fake))
    assert proc.returncode == 0, proc.stderr
    lines, summary = rows(proc)
    by_text = {r["text"]: r for r in lines}
    assert by_text[mock_line]["status"] == "cached" and by_text[mock_line]["file"] == "src/scenes/outro.tsx"
    assert by_text["Recorded in the studio."]["status"] == "unavailable"
    assert "narrator upload" in by_text["Recorded in the studio."]["error"]
    welcome = by_text["Welcome to the show."]
    assert (welcome["status"], welcome["billed"], welcome["multiplier"], welcome["line"]) == \
        ("generate", flash("Welcome to the show."), 0.5, 8)
    thanks = by_text["Thanks for having me."]  # eleven_multilingual_v2: x1
    assert (thanks["billed"], thanks["multiplier"]) == (len("Thanks for having me."), 1.0)
    minimax = by_text["Line one continues here."]
    assert (minimax["provider"], minimax["billed"], minimax["multiplier"]) == ("minimax", 24, None)
    assert by_text["Timing at A hundred and fifty words per minute."]["billed"] == 0  # mock: free
    eleven_lines = [r for r in lines if r["provider"] == "elevenlabs"]
    assert summary["byProvider"]["elevenlabs"]["billed"] == sum(r["billed"] for r in eleven_lines)
    assert summary["byProvider"]["minimax"]["billed"] == sum(len(r["text"]) for r in lines
                                                            if r["provider"] == "minimax")
    assert summary["unavailable"] == 1 and summary["quota"] is not None
    assert posts(fake) == [] and snapshot(tmp_path) == before

    text = narrator("speak", "--scan", "--dry-run", cwd=project, env=eleven(fake))
    assert "src/scenes/intro.tsx:8  " in text.stdout and "no multiplier known" in text.stderr


def test_scan_budget_counts_the_whole_scan(fake, project, tmp_path):
    (project / "src" / "scenes" / "details.tsx").unlink()  # no MiniMax (no key here) nor recording
    lines, scan = rows(narrator("speak", "--scan", "--dry-run", "--json", cwd=project, env=eleven(fake)))
    per_narrator: dict = {}
    for r in lines:
        per_narrator[(r["voiceId"], r["modelId"])] = per_narrator.get((r["voiceId"], r["modelId"]), 0) + r["billed"]
    total = scan["billed"]
    assert len([b for b in per_narrator.values() if b]) == 2 and max(per_narrator.values()) < total
    proc = narrator("speak", "--scan", "--max-characters", str(total - 1), cwd=project, env=eleven(fake))
    assert proc.returncode == 2, proc.stderr
    assert f"would bill {total} characters" in proc.stderr and posts(fake) == []
    assert not (project / "audio").exists()  # not even the free mock line: the scan is refused whole
    ok = narrator("speak", "--scan", "--max-characters", str(total), cwd=project, env=eleven(fake))
    assert ok.returncode == 0, ok.stderr
    assert len(posts(fake)) == scan["byProvider"]["elevenlabs"]["lines"]


# --- a line the team server holds but cannot deliver ---------------------------------------------------------
def test_a_line_the_server_cannot_deliver_is_held_to_the_budget_with_the_rest(fake, tmp_path):
    """The server says it holds the line, its download fails (the bytes do not match their hash), and generating
    it instead would pass the budget with the lines already agreed to: that line is not paid for; the others are."""
    from serve_process import start_serve

    from narrator_cli.store import Store

    proc, url = start_serve("--audio-path", str(tmp_path / "served"), cwd=tmp_path, drain=True)
    try:
        alice, bob = tmp_path / "alice", tmp_path / "bob"
        alice.mkdir(), bob.mkdir()
        assert speak(fake, LINES[0], cwd=alice, NARRATOR_SERVER=url).returncode == 0  # paid once, on the server
        served = Store(tmp_path / "served").get(cache_key(LINES[0], VOICE, FLASH))
        data = bytearray(served.path.read_bytes())
        data[-100] ^= 0xFF  # same size, other bytes: the download is refused by its hash
        served.path.write_bytes(bytes(data))
        before = len(posts(fake))
        budget = flash(LINES[2])  # enough for the new line, not for the one the server fails to deliver as well
        r = speak(fake, "--json", "--max-characters", str(budget), LINES[0], LINES[2], cwd=bob, NARRATOR_SERVER=url)
        statuses = {json.loads(line)["text"]: json.loads(line) for line in r.stdout.splitlines()}
        assert r.returncode == 1, r.stderr
        assert statuses[LINES[2]]["status"] == "generated"
        assert statuses[LINES[0]]["status"] == "failed" and "over the budget" in statuses[LINES[0]]["error"]
        assert "could not deliver" in statuses[LINES[0]]["error"]
        assert len(posts(fake)) == before + 1  # only the line the budget agreed to
        r = speak(fake, "--json", "--max-characters", str(budget + flash(LINES[0])), LINES[0], cwd=bob,
                  NARRATOR_SERVER=url)
        assert r.returncode == 0 and json.loads(r.stdout)["status"] == "generated", r.stderr  # within it: paid
        assert len(posts(fake)) == before + 2
    finally:
        proc.kill()
        proc.wait(10)


def test_a_scanned_line_the_server_cannot_deliver_is_held_to_the_scans_budget(fake, project, tmp_path):
    """``speak --scan``: the whole scan is one batch for the budget, a failed download included."""
    from serve_process import start_serve

    from narrator_cli.store import Store

    (project / "src" / "scenes" / "details.tsx").unlink()  # no MiniMax (no key here) nor recording
    proc, url = start_serve("--audio-path", str(tmp_path / "served"), cwd=tmp_path, drain=True)
    try:
        env = eleven(fake, NARRATOR_SERVER=url)
        assert narrator("speak", "--scan", cwd=project, env=env).returncode == 0  # all of it on the server now
        shutil.rmtree(project / "audio")
        served = Store(tmp_path / "served")
        welcome = next(e for e in served.scan().entries if e.meta.get("text") == "Welcome to the show.")
        data = bytearray(welcome.path.read_bytes())
        data[-100] ^= 0xFF  # same size, other bytes: its download is refused by its hash
        welcome.path.write_bytes(bytes(data))
        before = len(posts(fake))
        r = narrator("speak", "--scan", "--json", "--max-characters", "0", cwd=project, env=env)
        by_text = {row["text"]: row for row in map(json.loads, r.stdout.splitlines())}
        assert r.returncode == 1, r.stderr
        assert by_text["Welcome to the show."]["status"] == "failed"
        assert "over the budget of 0" in by_text["Welcome to the show."]["error"]
        assert {row["status"] for text, row in by_text.items() if text != "Welcome to the show."} == {"server"}
        assert len(posts(fake)) == before  # nothing paid for
    finally:
        proc.kill()
        proc.wait(10)
