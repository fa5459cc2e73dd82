"""`narrator import-history`: the ElevenLabs history (the local stand-in) into the cache, in real processes,
with real audio checked by mutagen, a real `narrator serve` for uploads and a real SIGINT for Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from fake_elevenlabs import FakeElevenLabs, refused_url, server_error, success, system_busy
from serve_process import CLI, start_serve
from test_elevenlabs import assert_one_line_error as one_line_error

from narrator_cli import motion_canvas as mc
from narrator_cli.costs import history as core
from narrator_cli.errors import UsageError
from narrator_cli.keys import cache_key
from narrator_cli.store import Store

KEY = "sk-history-5b1e0c2a9d7f"
RACHEL = "21m00Tcm4TlvDq8ikWAM"
GEORGE = "JBFqnCBsd6RMkjVDRZzb"
MODEL = "eleven_multilingual_v2"


@pytest.fixture
def fake():
    with FakeElevenLabs(api_key=KEY) as f:
        yield f


def run(fake, *args: str, key: str = KEY, env: dict | None = None, timeout: float = 90):
    full = {**os.environ, "ELEVENLABS_API_KEY": key, "NARRATOR_ELEVENLABS_BASE_URL": fake.url, **(env or {})}
    return subprocess.run([*CLI, "import-history", *args], check=False, env=full, capture_output=True, text=True,
                          timeout=timeout)


def rows(proc) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines()]


def audio_requests(fake) -> list[str]:
    """The history item ids whose audio was asked for, in order."""
    return [r["path"].split("/")[3] for r in fake.requests if r["path"].endswith("/audio")]


def page_requests(fake) -> list[dict]:
    return [r for r in fake.requests if r["path"] == "/v1/history"]


def store(tmp_path) -> Store:
    return Store(tmp_path / "audio-cache")


# --- keys and metadata -------------------------------------------------------------------------


def test_each_item_is_stored_under_the_motion_canvas_key_with_its_history(fake, tmp_path):
    from mutagen.mp3 import MP3

    flash = fake.account.add_history("Welcome to the tour.", RACHEL, "eleven_flash_v2_5")
    multi = fake.account.add_history("Der zweite Satz.", GEORGE, MODEL)
    proc = run(fake, "--json")
    assert proc.returncode == 0, proc.stderr
    s = store(tmp_path)
    for item in (flash, multi):
        params = mc.FACTORIES["createElevenLabsNarrator"].key_params({"voiceId": item.voice_id,
                                                                      "modelId": item.model_id})
        key = cache_key(item.text, *params)
        assert key == cache_key(item.text, item.voice_id, item.model_id)
        entry = s.get(key)
        assert entry is not None and entry.path.name == f"{key}.mp3"
        assert s.read_audio(entry) == fake.account.audio(item)
        assert MP3(str(entry.path)).info.length == pytest.approx(entry.duration, abs=0.01)
        meta = entry.meta
        assert (meta["text"], meta["voiceId"], meta["modelId"], meta["provider"]) == \
               (item.text, item.voice_id, item.model_id, "elevenlabs")
        assert meta["characterCost"] == item.characters == len(item.text)
        assert (meta["historyItemId"], meta["requestId"]) == (item.history_item_id, item.request_id)
    statuses = {r["historyItemId"]: r["status"] for r in rows(proc)}
    assert statuses == {flash.history_item_id: "imported", multi.history_item_id: "imported"}
    assert "2 imported" in proc.stderr and f"{len(flash.text) + len(multi.text)} characters" in proc.stderr


def test_a_line_spoken_through_speak_is_then_a_cache_hit(fake, tmp_path):
    """The imported entry is what `speak` looks up for that line: no request to the API at all."""
    fake.account.add_history("Already paid for.", RACHEL, "eleven_flash_v2_5")
    assert run(fake).returncode == 0
    before = fake.request_count
    env = {**os.environ, "ELEVENLABS_API_KEY": KEY, "NARRATOR_ELEVENLABS_BASE_URL": fake.url}
    speak = subprocess.run([*CLI, "speak", "--provider", "elevenlabs", "--voice", RACHEL, "Already paid for."],
                           check=False, env=env, capture_output=True, text=True, timeout=60)
    assert speak.returncode == 0 and "cached" in speak.stdout, speak.stderr
    assert fake.request_count == before


def test_items_that_cannot_be_keyed_are_skipped_with_the_reason(fake, tmp_path):
    good = fake.account.add_history("A proper line.", RACHEL, MODEL)
    odd = [fake.account.add_history("Spoken by some model.", RACHEL, None),
           fake.account.add_history("Still cooking.", RACHEL, MODEL, state="processing"),
           fake.account.add_history("Changed voice.", RACHEL, MODEL, source="STS"),
           fake.account.add_history("   ", RACHEL, MODEL)]
    proc = run(fake, "--json")
    assert proc.returncode == 0, proc.stderr
    by_id = {r["historyItemId"]: r for r in rows(proc)}
    assert by_id[good.history_item_id]["status"] == "imported"
    reasons = [by_id[i.history_item_id]["reason"] for i in odd]
    assert all(by_id[i.history_item_id]["status"] == "skipped" for i in odd)
    assert "no model id" in reasons[0] and "processing" in reasons[1] and "STS" in reasons[2]
    assert reasons[3] == "no text"
    assert audio_requests(fake) == [good.history_item_id]  # nothing downloaded for them
    assert len(store(tmp_path).scan().entries) == 1
    assert "4 skipped (0 cached, 4 filtered)" in proc.stderr
    text = run(fake)  # the plain output says it too, one row each
    assert text.stdout.count("skipped") == 4 and "source STS: not text to speech" in text.stdout


def test_read_item_keys_and_bills_as_the_history_says():
    raw = {"history_item_id": "h1", "request_id": "r1", "voice_id": RACHEL, "model_id": MODEL, "text": "Hi.",
           "state": "created", "source": "TTS", "content_type": "audio/mpeg", "date_unix": 1_700_000_000,
           "character_count_change_from": 100, "character_count_change_to": 103}
    item = core.read_item(raw)
    assert isinstance(item, core.Item) and item.key == cache_key("Hi.", RACHEL, MODEL) and item.characters == 3
    assert item.meta()["generatedAt"] == "2023-11-14T22:13:20.000Z"
    assert core.read_item({**raw, "character_count_change_to": 90}).characters is None  # went down: not a cost
    assert core.read_item({**raw, "character_count_change_to": 10_000}).characters is None  # not this item's
    assert core.read_item({**raw, "character_count_change_to": True}).characters is None
    assert "control character" in core.read_item({**raw, "voice_id": "v\x07"})
    assert core.read_item({**raw, "model_id": ""}).startswith("no model id")
    assert core.read_item({**raw, "history_item_id": None}) == "no history item id"


# --- what is cached --------------------------------------------------------------------------------


def test_a_second_run_downloads_nothing_and_says_all_is_cached(fake, tmp_path):
    for i in range(5):
        fake.account.add_history(f"Line number {i}.", RACHEL, MODEL)
    assert run(fake).returncode == 0
    assert len(audio_requests(fake)) == 5
    again = run(fake, "--json")
    assert again.returncode == 0, again.stderr
    assert len(audio_requests(fake)) == 5  # not one more
    assert {r["status"] for r in rows(again)} == {"cached"}
    assert "0 imported, 5 skipped (5 cached, 0 filtered)" in again.stderr


def test_an_entry_that_holds_another_line_is_left_alone(fake, tmp_path):
    """Keys collide ("Aa" and "BB"): an import never replaces another line's audio, nor takes one key twice."""
    from audio_fixtures import make_mp3

    key = cache_key("Aa", RACHEL, MODEL)
    assert key == cache_key("BB", RACHEL, MODEL)
    s = store(tmp_path)
    mine = make_mp3(0.5)
    s.put(key, mine, "audio/mpeg", 0.5, {"text": "Aa", "voiceId": RACHEL, "modelId": MODEL})
    fake.account.add_history("BB", RACHEL, MODEL)
    proc = run(fake, "--json")
    assert proc.returncode == 0, proc.stderr
    [row] = rows(proc)
    assert row["status"] == "skipped" and "holds another line" in row["reason"]
    assert s.read_audio(s.get(key)) == mine and audio_requests(fake) == []
    # two colliding lines in the history itself: the newer is imported, the older skipped
    other = tmp_path / "other"
    fake.account.add_history("Aa", RACHEL, MODEL)
    proc = run(fake, "--json", "--audio-path", str(other))
    statuses = sorted((r["text"], r["status"]) for r in rows(proc))
    assert statuses == [("Aa", "imported"), ("BB", "skipped")]
    assert Store(other).get(key).meta["text"] == "Aa"


def test_the_same_line_twice_in_the_history_is_downloaded_once(fake, tmp_path):
    old = fake.account.add_history("Said twice.", RACHEL, MODEL)
    new = fake.account.add_history("Said twice.", RACHEL, MODEL)
    proc = run(fake, "--json")
    assert proc.returncode == 0
    assert audio_requests(fake) == [new.history_item_id]
    assert {r["historyItemId"]: r["status"] for r in rows(proc)} == {new.history_item_id: "imported",
                                                                    old.history_item_id: "cached"}


# --- formats -------------------------------------------------------------------------------------------


def test_audio_in_another_format_is_imported_as_what_it_is_and_said(fake, tmp_path):
    item = fake.account.add_history("An Opus line.", RACHEL, MODEL, content_type="audio/ogg")
    proc = run(fake, "--json")
    assert proc.returncode == 0, proc.stderr
    key = cache_key(item.text, RACHEL, MODEL)
    entry = store(tmp_path).get(key)
    assert entry.path.name == f"{key}.ogg" and entry.meta["mimeType"] == "audio/ogg"
    [row] = rows(proc)
    assert row["otherFormat"] is True and row["mimeType"] == "audio/ogg"
    assert "another format" in proc.stderr and ".mp3" in proc.stderr and "1 in another format" in proc.stderr
    # a project whose lines are Opus: then the MP3 items are the other format
    fake.account.add_history("An MP3 line.", RACHEL, MODEL)
    opus = run(fake, "--json", env={"NARRATOR_ELEVENLABS_OUTPUT_FORMAT": "opus_48000_64"})
    [row] = [r for r in rows(opus) if r["status"] == "imported"]
    assert row["mimeType"] == "audio/mpeg" and row["otherFormat"] is True


def test_broken_and_missing_audio_fail_that_item_only(fake, tmp_path):
    items = [fake.account.add_history(f"Item {i}.", RACHEL, MODEL) for i in range(6)]
    fake.account.missing_audio.add(items[1].history_item_id)
    fake.account.broken_audio.add(items[4].history_item_id)
    proc = run(fake, "--json")
    assert proc.returncode == 1, proc.stderr
    by_id = {r["historyItemId"]: r for r in rows(proc)}
    assert by_id[items[1].history_item_id]["status"] == "failed"
    assert "404" in by_id[items[1].history_item_id]["reason"]
    assert by_id[items[4].history_item_id]["status"] == "failed"
    assert "broken audio" in by_id[items[4].history_item_id]["reason"]
    s = store(tmp_path)
    scan = s.scan()
    assert len(scan.entries) == 4 and scan.broken == []
    assert s.get(cache_key(items[4].text, RACHEL, MODEL)) is None  # not stored
    assert "4 imported" in proc.stderr and "2 failed" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("narrator: error: 2 items failed")
    assert "Traceback" not in proc.stderr
    fake.account.missing_audio.clear()  # came back: the next run takes only the two that failed
    again = run(fake, "--json")
    assert again.returncode == 1 and [r["status"] for r in rows(again)].count("imported") == 1


# --- paging and filters ---------------------------------------------------------------------------------


def test_every_page_is_read_and_the_next_comes_while_audio_downloads(tmp_path):
    with FakeElevenLabs(api_key=KEY, latency=0.02) as fake:
        items = [fake.account.add_history(f"Paged line {i}.", RACHEL, MODEL) for i in range(250)]
        proc = run(fake, "--concurrency", "2")
        assert proc.returncode == 0, proc.stderr
        pages = page_requests(fake)
        assert [p["query"].get("start_after_history_item_id") for p in pages] == \
               [None, items[-100].history_item_id, items[-200].history_item_id]
        assert all(p["query"]["page_size"] == str(core.PAGE_SIZE) for p in pages)
        first_page = {i.history_item_id for i in items[-100:]}
        last_of_first = max(r["end"] for r in fake.requests
                            if r["path"].endswith("/audio") and r["path"].split("/")[3] in first_page)
        assert pages[1]["start"] < last_of_first  # paging did not wait for the page's downloads
    assert sorted(audio_requests(fake)) == sorted(i.history_item_id for i in items)
    assert len(store(tmp_path).scan().entries) == 250


def test_voice_model_and_since_are_asked_of_the_api(fake, tmp_path):
    now = int(time.time())
    old = fake.account.add_history("Long ago.", RACHEL, MODEL, date_unix=now - 40 * 86_400)
    fake.account.add_history("Other voice.", GEORGE, MODEL, date_unix=now - 3600)
    fake.account.add_history("Other model.", RACHEL, "eleven_flash_v2_5", date_unix=now - 3000)
    recent = fake.account.add_history("Recent.", RACHEL, MODEL, date_unix=now - 60)
    proc = run(fake, "--voice", RACHEL, "--model", MODEL, "--since", "30d", "--json")
    assert proc.returncode == 0, proc.stderr
    [page] = page_requests(fake)
    assert page["query"]["voice_id"] == RACHEL and page["query"]["model_id"] == MODEL
    assert abs(int(page["query"]["date_after_unix"]) - (now - 30 * 86_400)) < 60
    assert [r["historyItemId"] for r in rows(proc)] == [recent.history_item_id]
    day = time.strftime("%Y-%m-%d", time.localtime(now - 50 * 86_400))
    proc = run(fake, "--voice", RACHEL, "--model", MODEL, "--since", day, "--json")
    assert {r["historyItemId"]: r["status"] for r in rows(proc)} == {recent.history_item_id: "cached",
                                                                    old.history_item_id: "imported"}


def test_since_takes_a_date_or_an_age():
    now = time.mktime((2024, 6, 15, 12, 0, 0, 0, 0, -1))
    assert core.since_unix("2024-06-01", now) == int(time.mktime((2024, 6, 1, 0, 0, 0, 0, 0, -1)))
    assert core.since_unix("2d", now) == int(now - 2 * 86_400)
    for bad, words in (("2024-02-30", "no such day"), ("2024-07-01", "in the future"), ("yesterday", "30d"),
                       ("30", "30d"), ("", "30d")):
        with pytest.raises(UsageError, match=words):
            core.since_unix(bad, now)


@pytest.mark.parametrize("args, words", [
    (["--since", "last week"], "--since"),
    (["--since", "2024-13-01"], "no such day"),
    (["--voice", ""], "--voice"),
    (["--model", "m\x01"], "--model"),
])
def test_bad_options_are_one_line_and_ask_nothing(fake, tmp_path, args, words):
    fake.account.add_history("Untouched.", RACHEL, MODEL)
    proc = run(fake, *args)
    assert proc.returncode == 2
    one_line_error(proc, words)
    assert fake.request_count == 0 and not (tmp_path / "audio-cache").exists()


def test_configuration_errors_are_one_line(fake, tmp_path):
    one_line_error(run(fake, key=""), "ELEVENLABS_API_KEY")
    proc = run(fake, env={"NARRATOR_ELEVENLABS_OUTPUT_FORMAT": "pcm_16000"})
    assert proc.returncode == 2
    one_line_error(proc, "output_format")
    assert fake.request_count == 0


def test_a_cache_that_is_not_a_folder_is_one_line_before_any_request(fake, tmp_path):
    fake.account.add_history("Nowhere to go.", RACHEL, MODEL)
    (tmp_path / "a-file").write_text("not a folder")
    for args in ([], ["--dry-run"]):
        proc = run(fake, "--audio-path", "a-file", *args)
        assert proc.returncode == 2
        one_line_error(proc, "a-file", "not a folder")
    assert fake.request_count == 0


def test_a_cache_folder_that_cannot_be_written_stops_the_run_with_one_line(fake, tmp_path):
    from unprivileged import as_user

    for i in range(40):
        fake.account.add_history(f"Cannot land {i}.", RACHEL, MODEL)
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    env = {**os.environ, "ELEVENLABS_API_KEY": KEY, "NARRATOR_ELEVENLABS_BASE_URL": fake.url}
    try:
        proc = subprocess.run(as_user([*CLI, "import-history", "--audio-path", str(folder), "--concurrency", "2"]),
                              check=False, env=env, capture_output=True, text=True, timeout=60)
    finally:
        folder.chmod(0o755)
    assert proc.returncode == 2, proc.stderr
    one_line_error(proc, "cannot write to the audio cache", "read-only")
    assert len(audio_requests(fake)) < 40  # it stopped rather than download everything in vain
    assert list(folder.iterdir()) == []


# --- dry run -------------------------------------------------------------------------------------------


def test_dry_run_downloads_and_writes_nothing(fake, tmp_path):
    fake.account.add_history("Would come.", RACHEL, MODEL)
    fake.account.add_history("Opus would come.", RACHEL, MODEL, content_type="audio/ogg")
    fake.account.add_history("No model.", RACHEL, None)
    proc = run(fake, "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["status"] for r in rows(proc)) == ["skipped", "would import", "would import"]
    assert audio_requests(fake) == [] and not (tmp_path / "audio-cache").exists()
    assert "2 would be imported (1 in another format)" in proc.stderr and "(dry run)" in proc.stderr
    text = run(fake, "--dry-run")
    assert text.stdout.count("would import") == 2 and "(11 characters)" in text.stdout


# --- API errors -------------------------------------------------------------------------------------------


def test_a_refused_key_is_one_line_exit_2_without_the_key(fake, tmp_path):
    fake.account.add_history("Never fetched.", RACHEL, MODEL)
    secret = "sk-wrong-93c1d7e2b4"
    proc = run(fake, key=secret)
    assert proc.returncode == 2
    one_line_error(proc, "401")
    assert secret not in proc.stderr + proc.stdout and len(fake.requests) == 1
    assert not (tmp_path / "audio-cache").exists()


def test_429_and_5xx_are_retried(fake, tmp_path):
    items = [fake.account.add_history(f"Retried {i}.", RACHEL, MODEL) for i in range(3)]
    fake.script(system_busy(retry_after=1), server_error(503))  # the history page, twice
    proc = run(fake, "--json", "--concurrency", "1")
    assert proc.returncode == 0, proc.stderr
    assert fake.statuses()[:3] == [429, 503, 200]
    assert len(page_requests(fake)) == 3
    fake.script(success(), server_error(502))  # the page as usual, then its one audio download
    more = fake.account.add_history("Retried 3.", RACHEL, MODEL)
    proc = run(fake, "--json", "--concurrency", "1")
    assert proc.returncode == 0, proc.stderr
    assert audio_requests(fake).count(more.history_item_id) == 2
    assert len(store(tmp_path).scan().entries) == len(items) + 1


# --- the team server ----------------------------------------------------------------------------------------


def test_imported_entries_are_uploaded_and_a_missing_server_is_a_warning(fake, tmp_path):
    for i in range(3):
        fake.account.add_history(f"Shared {i}.", RACHEL, MODEL)
    away = run(fake, "--server", refused_url())  # nothing listens there
    assert away.returncode == 0, away.stderr
    assert "warning" in away.stderr and "not uploaded" in away.stderr and "Traceback" not in away.stderr
    proc, url = start_serve("--audio-path", str(tmp_path / "server-cache"), cwd=tmp_path, drain=True)
    try:
        fake.account.add_history("Shared 3.", RACHEL, MODEL)
        back = run(fake, "--server", url)  # the new one, and the three the last run could not send
        assert back.returncode == 0, back.stderr
        served = Store(tmp_path / "server-cache")
        local = store(tmp_path)
        keys = {cache_key(f"Shared {i}.", RACHEL, MODEL) for i in range(4)}
        assert {e.key for e in served.scan().entries} == keys
        for key in keys:
            assert served.read_audio(served.get(key)) == local.read_audio(local.get(key))
            assert served.get(key).meta["historyItemId"] == local.get(key).meta["historyItemId"]
        fake.account.add_history("Kept local.", RACHEL, MODEL)
        skipped = run(fake, "--server", refused_url(), "--no-server")  # not even tried
        assert skipped.returncode == 0 and "warning" not in skipped.stderr and "1 imported" in skipped.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


# --- Ctrl-C and resume --------------------------------------------------------------------------------------


def test_ctrl_c_keeps_what_is_in_flight_whole_and_a_second_run_resumes(tmp_path):
    with FakeElevenLabs(api_key=KEY, latency=0.25) as fake:
        items = [fake.account.add_history(f"Interrupted line {i}.", RACHEL, MODEL) for i in range(60)]
        env = {**os.environ, "ELEVENLABS_API_KEY": KEY, "NARRATOR_ELEVENLABS_BASE_URL": fake.url}
        proc = subprocess.Popen([*CLI, "import-history", "--concurrency", "4", "--json"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while len([r for r in fake.requests if r["path"].endswith("/audio") and r["status"]]) < 10 \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        at_interrupt = len(audio_requests(fake))
        out, err = proc.communicate(timeout=60)
        time.sleep(0.5)
        first = audio_requests(fake)
        assert proc.returncode == 130, err
        assert len(first) <= at_interrupt + 4 < len(items)  # at most what was already on its way
        last = err.strip().splitlines()[-1]
        assert last.startswith("narrator: interrupted: ") and "run the same command again" in last, err
        assert "Traceback" not in err
        imported = int(last.split("interrupted: ")[1].split(" imported")[0])
        s = store(tmp_path)
        scan = s.scan()
        assert len(scan.entries) == imported == len(first) and scan.broken == []
        assert not list(s.root.glob(".*.tmp"))  # no temporary file left behind
        assert sum(json.loads(line)["status"] == "imported" for line in out.splitlines()) == imported
        by_id = {i.history_item_id: i for i in items}
        for entry in scan.entries:  # each whole, and the audio of the item it names
            assert s.read_audio(entry) == fake.account.audio(by_id[entry.meta["historyItemId"]])
        resumed = subprocess.run([*CLI, "import-history"], check=False, env=env, capture_output=True, text=True,
                                 timeout=90)
        assert resumed.returncode == 0, resumed.stderr
        every = audio_requests(fake)
    assert sorted(every) == sorted(by_id)  # each item's audio fetched exactly once over the two runs
    scan = s.scan()
    assert len(scan.entries) == 60 and scan.broken == []
    for entry in scan.entries:
        item = by_id[entry.meta["historyItemId"]]
        assert entry.key == cache_key(item.text, RACHEL, MODEL)
        assert s.read_audio(entry) == fake.account.audio(item)
    assert f"{60 - imported} imported, {imported} skipped ({imported} cached" in resumed.stderr


def test_a_second_ctrl_c_abandons_the_downloads_and_leaves_nothing_broken(tmp_path):
    with FakeElevenLabs(api_key=KEY, latency=3.0) as fake:
        items = [fake.account.add_history(f"Abandoned line {i}.", RACHEL, MODEL) for i in range(12)]
        env = {**os.environ, "ELEVENLABS_API_KEY": KEY, "NARRATOR_ELEVENLABS_BASE_URL": fake.url}
        proc = subprocess.Popen([*CLI, "import-history", "--concurrency", "4"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while len(audio_requests(fake)) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "interrupted" in err and "Traceback" not in err
        s = store(tmp_path)
        assert s.scan().broken == [] and len(s.scan().entries) < len(items)
        fake.latency = 0.0
        resumed = subprocess.run([*CLI, "import-history"], check=False, env=env, capture_output=True, text=True,
                                 timeout=90)
    assert resumed.returncode == 0, resumed.stderr
    scan = s.scan()
    assert len(scan.entries) == len(items) and scan.broken == []
    for entry in scan.entries:
        assert entry.meta["text"] == next(i.text for i in items if i.history_item_id == entry.meta["historyItemId"])


def test_help_has_an_example():
    proc = subprocess.run([*CLI, "import-history", "--help"], check=False, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=60)
    assert proc.returncode == 0 and "Example:" in proc.stdout and "--dry-run" in proc.stdout


def test_imports_from_a_folder_given_on_the_command_line(fake, tmp_path):
    fake.account.add_history("Elsewhere.", RACHEL, MODEL)
    proc = run(fake, "--audio-path", "elsewhere")
    assert proc.returncode == 0, proc.stderr
    assert len(Store(Path(tmp_path) / "elsewhere").scan().entries) == 1
