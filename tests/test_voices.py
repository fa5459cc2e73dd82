"""`narrator voices`, `narrator quota` and voice names where a voice id is expected, against the ElevenLabs
stand-in (and the real espeak-ng library)."""

import json
import os
import subprocess
import sys
from datetime import datetime

import pytest
from fake_elevenlabs import FakeElevenLabs, refused_url, server_error, system_busy, unauthorized
from typer.testing import CliRunner

from narrator_cli.cli import app
from narrator_cli.keys import cache_key

KEY = "sk-voices-5e1f0c9a7d2b44"  # distinctive, so any leak is easy to find
RACHEL = "21m00Tcm4TlvDq8ikWAM"
MODEL = "eleven_flash_v2_5"
runner = CliRunner()


@pytest.fixture
def fake(monkeypatch):
    with FakeElevenLabs(api_key=KEY) as f:
        monkeypatch.setenv("ELEVENLABS_API_KEY", KEY)
        monkeypatch.setenv("NARRATOR_ELEVENLABS_BASE_URL", f.url)
        yield f


def run(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert KEY not in result.stdout + result.stderr
    return result


def rows(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def voice_gets(fake) -> int:
    return sum(1 for r in fake.requests if r["method"] == "GET" and r["path"] == "/v1/voices")


# --- narrator voices ----------------------------------------------------------------------------------


def test_voices_elevenlabs_json_has_every_field_of_every_voice(fake):
    result = run("voices", "--provider", "elevenlabs", "--json")
    assert result.exit_code == 0, result.stderr
    got = rows(result)
    assert [v["voiceId"] for v in got] == [v["voice_id"] for v in fake.account.voices]
    george = next(v for v in got if v["name"] == "George")
    assert george == {"provider": "elevenlabs", "voiceId": "JBFqnCBsd6RMkjVDRZzb", "name": "George",
                      "category": "premade", "labels": {"accent": "british", "age": "middle aged", "gender": "male",
                                                         "use_case": "narration"},
                      "languages": ["en", "fr"], "previewUrl": "https://example.invalid/JBFqnCBsd6RMkjVDRZzb.mp3"}


def test_voices_elevenlabs_table_for_people(fake):
    fake.account.voices.append({**fake.account.voices[0], "voice_id": "NewVoiceId0123456789", "name": "Nova"})
    result = run("voices", "--provider", "elevenlabs")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "VOICE", "ID", "CATEGORY", "LANGUAGES", "LABELS", "PREVIEW"]
    rachel = next(line for line in lines if line.startswith("Rachel "))
    assert RACHEL in rachel and "premade" in rachel and "american" in rachel and f"{RACHEL}.mp3" in rachel
    assert any(line.startswith("Nova ") for line in lines) and len(lines) == 1 + 6
    assert lines[1].index(RACHEL) == lines[0].index("VOICE ID")  # aligned columns


def test_voices_search_needs_every_word_at_the_start_of_a_word(fake):
    def names(*words):
        result = run("voices", "--provider", "elevenlabs", "--json", "--search", " ".join(words))
        assert result.exit_code == 0, result.stderr
        return [v["name"] for v in rows(result)]

    assert names("BRIT") == ["George"]
    assert names("american", "narration") == ["Rachel", "Bill"]
    assert names("male") == ["George", "Bill"]  # not the female voices
    assert names("fr") == ["George"]  # a language
    assert names("21m00") == ["Rachel"]  # an id
    result = run("voices", "--provider", "elevenlabs", "--search", "klingon")
    assert result.exit_code == 0 and result.stdout == "" and "no elevenlabs voice matches 'klingon'" in result.stderr


def test_voices_espeak_from_the_library_offline(monkeypatch):
    monkeypatch.setenv("NARRATOR_ELEVENLABS_BASE_URL", refused_url())  # nothing here may touch a network
    result = run("voices", "--json")  # espeak: the default provider
    assert result.exit_code == 0, result.stderr
    got = {v["voiceId"]: v for v in rows(result)}
    assert len(got) > 50 and {"en", "en-US", "de", "fr"} <= got.keys()
    assert got["en-US"]["name"] == "English (America)" and got["en-US"]["languages"][0] == "en-us"
    assert "en" in got["en-US"]["languages"] and got["en-US"]["provider"] == "espeak"
    found = run("voices", "--search", "English America")
    names = [line.split("  ")[0] for line in found.stdout.splitlines()[1:]]
    assert found.exit_code == 0 and "English (America)" in names and all("America" in n for n in names)
    assert "PREVIEW" not in found.stdout  # a column empty for every voice is left out


def test_espeak_voices_listed_are_voices_it_speaks():
    from narrator_cli.providers.espeak import EspeakProvider, installed_voices

    voices = installed_voices()
    by_id = {v.voice_id: v for v in voices}
    assert by_id["de"].languages == ["de"] and by_id["en"].gender in ("male", "female")
    for voice_id in ("en-US", "de", "fr"):  # what the list says is what --voice takes
        assert EspeakProvider("wav").synthesize("Hallo.", voice_id, "espeak-ng").audio


def test_voices_mock_has_its_one_voice():
    result = run("voices", "--provider", "mock", "--json")
    assert result.exit_code == 0 and [v["voiceId"] for v in rows(result)] == ["mock"]


def test_voices_of_a_provider_without_a_list_is_one_line():
    for provider, words in (("minimax", "given as it is"), ("nope", "unknown provider")):
        result = run("voices", "--provider", provider)
        assert result.exit_code == 2 and words in result.stderr and len(result.stderr.splitlines()) == 1


def test_voices_refused_key_is_one_line_exit_2(fake):
    fake.script(unauthorized())
    result = run("voices", "--provider", "elevenlabs")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == ["narrator: error: ElevenLabs rejected the API key (401): Invalid API key"]
    assert fake.request_count == 1  # not retried


def test_voices_busy_with_retry_after_then_success(fake):
    fake.script(system_busy(retry_after=0.2))
    result = run("voices", "--provider", "elevenlabs", "--json")
    assert result.exit_code == 0, result.stderr
    assert len(rows(result)) == 5 and fake.statuses() == [429, 200]
    assert fake.requests[1]["start"] - fake.requests[0]["end"] >= 0.2  # waited as asked


def test_voices_server_error_is_retried_then_gives_up(fake, monkeypatch):
    fake.script(server_error(), server_error(503))
    result = run("voices", "--provider", "elevenlabs", "--json")
    assert result.exit_code == 0 and fake.statuses() == [500, 503, 200]
    monkeypatch.setenv("NARRATOR_ELEVENLABS_RETRIES", "1")
    fake.always(server_error(502))
    result = run("voices", "--provider", "elevenlabs")
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1 and "HTTP 502" in result.stderr


# --- narrator quota -----------------------------------------------------------------------------------


def test_quota_for_people_and_as_json(fake):
    fake.account.subscription.update(character_count=40_000, character_limit=100_000, tier="pro")
    result = run("quota", "--provider", "elevenlabs")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    reset = datetime.fromtimestamp(fake.account.subscription["next_character_count_reset_unix"]).astimezone()
    assert "pro" in out and "40,000 of 100,000 characters (40.0%)" in out and "60,000 characters" in out
    assert reset.strftime("%Y-%m-%d %H:%M") in out
    got = rows(run("quota", "--provider", "elevenlabs", "--json"))
    assert got == [{"provider": "elevenlabs", "metered": True, "tier": "pro", "charactersUsed": 40_000,
                    "characterLimit": 100_000, "charactersLeft": 60_000,
                    "resetsAt": fake.account.subscription["next_character_count_reset_unix"]}]
    assert [r["path"] for r in fake.requests] == ["/v1/user/subscription"] * 2


def test_quota_uses_the_configured_provider(fake, monkeypatch):
    monkeypatch.setenv("NARRATOR_PROVIDER", "elevenlabs")
    fake.account.subscription.update(character_count=100_500, character_limit=100_000)
    result = run("quota", "--json")
    assert result.exit_code == 0 and rows(result)[0]["charactersLeft"] == 0  # over the limit: nothing left


def test_quota_of_other_providers_is_one_clear_line(fake):
    result = run("quota")  # espeak, the default
    assert result.exit_code == 0 and "offline" in result.stdout and len(result.stdout.splitlines()) == 1
    assert rows(run("quota", "--provider", "mock", "--json")) == [{"provider": "mock", "metered": False}]
    result = run("quota", "--provider", "minimax")
    assert result.exit_code == 2 and "ElevenLabs account only" in result.stderr
    assert fake.request_count == 0


def test_quota_refused_key_and_busy_account(fake):
    fake.script(system_busy(retry_after=0.1), unauthorized())
    result = run("quota", "--provider", "elevenlabs")
    assert result.exit_code == 2 and result.stderr.startswith("narrator: error: ElevenLabs rejected the API key")
    assert fake.statuses() == [429, 401]


# --- voice names --------------------------------------------------------------------------------------


def test_a_voice_name_becomes_its_id_in_the_key_and_the_request_said_once(fake):
    result = run("speak", "Hello there.", "--provider", "elevenlabs", "--voice", "rachel", "--json")
    assert result.exit_code == 0, result.stderr
    [row] = rows(result)
    assert row["voiceId"] == RACHEL and row["cacheKey"] == cache_key("Hello there.", RACHEL, MODEL)
    assert result.stderr.count(f"narrator: voice 'rachel' is {RACHEL}") == 1
    posts = [r["path"] for r in fake.requests if r["method"] == "POST"]
    assert posts == [f"/v1/text-to-speech/{RACHEL}/with-timestamps"]


def test_a_voice_name_in_narrator_toml(fake, tmp_path):
    (tmp_path / "narrator.toml").write_text('provider = "elevenlabs"\nvoice = "George"\n')
    result = run("check", "A line.", "--json")
    assert result.exit_code == 1 and rows(result)[0]["cacheKey"] == cache_key("A line.", "JBFqnCBsd6RMkjVDRZzb", MODEL)
    assert "voice 'George' is JBFqnCBsd6RMkjVDRZzb" in result.stderr


def test_a_voice_id_is_used_as_it_is_without_a_request(fake):
    unknown_id = "AbCdEfGhIjKlMnOpQrSt"  # id-shaped, in no list: still no request
    for voice in (RACHEL, unknown_id):
        result = run("check", "A line.", "--provider", "elevenlabs", "--voice", voice, "--json")
        assert result.exit_code == 1 and rows(result)[0]["cacheKey"] == cache_key("A line.", voice, MODEL)
        assert "voice" not in result.stderr
    assert fake.requests == []


def test_a_value_that_is_an_id_in_the_list_is_not_renamed(fake):
    fake.account.voices.append({**fake.account.voices[0], "voice_id": "short-id", "name": "Shorty"})
    result = run("check", "A line.", "--provider", "elevenlabs", "--voice", "short-id", "--json")
    assert rows(result)[0]["cacheKey"] == cache_key("A line.", "short-id", MODEL) and "voice" not in result.stderr


def test_an_ambiguous_name_is_one_line_with_each_id(fake):
    result = run("speak", "A line.", "--provider", "elevenlabs", "--voice", "BILL")
    assert result.exit_code == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("narrator: error: the voice name 'BILL' is ambiguous")
    assert "pqHfZKP75CvOlQylNhV4" in line and "Zm9vYmFyYmF6cXV4MDAwMDAw" in line
    assert not any(r["method"] == "POST" for r in fake.requests)


def test_an_unknown_name_lists_close_matches(fake):
    result = run("speak", "A line.", "--provider", "elevenlabs", "--voice", "Rachell")
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert "no ElevenLabs voice named 'Rachell'" in line and f"Rachel ({RACHEL})" in line
    assert not any(r["method"] == "POST" for r in fake.requests)


def test_the_voices_list_is_kept_for_a_day(fake):
    for voice in ("Rachel", "George", "Rachel"):
        result = run("check", "A line.", "--provider", "elevenlabs", "--voice", voice)
        assert result.exit_code == 1 and f"voice '{voice}' is" in result.stderr
    assert voice_gets(fake) == 1
    result = run("voices", "--provider", "elevenlabs", "--json")  # listing asks afresh
    assert result.exit_code == 0 and voice_gets(fake) == 2
    from narrator_cli.config import user_cache_path

    kept = (user_cache_path() / "elevenlabs-voices.json").read_text()
    assert KEY not in kept and fake.url in kept


def test_a_name_in_the_kept_list_loads_no_http_client(fake, tmp_path):
    """A cache hit with a voice name stays as light as one with an id: the kept list is read, nothing else."""
    assert run("check", "A line.", "--provider", "elevenlabs", "--voice", "Rachel").exit_code == 1
    probe = ("import sys\nfrom narrator_cli.cli import main\ntry:\n    main()\nfinally:\n"
             "    print('loaded:', sorted(m for m in ('httpx', 'mutagen') if m in sys.modules), file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", probe, "check", "A line.", "--provider", "elevenlabs", "--voice",
                           "rachel"], capture_output=True, text=True, timeout=60, env=dict(os.environ), check=False)
    assert proc.returncode == 1 and "voice 'rachel' is 21m00Tcm4TlvDq8ikWAM" in proc.stderr
    assert "loaded: []" in proc.stderr and voice_gets(fake) == 1


def test_a_name_missing_from_the_kept_list_fetches_it_once_more(fake):
    assert run("check", "A line.", "--provider", "elevenlabs", "--voice", "Rachel").exit_code == 1
    fake.account.voices.append({**fake.account.voices[0], "voice_id": "NewVoiceId0123456789", "name": "Nova"})
    result = run("check", "A line.", "--provider", "elevenlabs", "--voice", "nova")
    assert result.exit_code == 1 and "voice 'nova' is NewVoiceId0123456789" in result.stderr
    assert voice_gets(fake) == 2
    result = run("check", "A line.", "--provider", "elevenlabs", "--voice", "Novak")
    assert result.exit_code == 2 and "Nova (NewVoiceId0123456789)" in result.stderr
    assert voice_gets(fake) == 3  # the kept list had no Novak: asked once more, then refused


def test_another_account_does_not_use_the_kept_list(fake, monkeypatch):
    assert run("check", "A line.", "--provider", "elevenlabs", "--voice", "Rachel").exit_code == 1
    monkeypatch.setenv("ELEVENLABS_API_KEY", "sk-another-account")
    result = run("check", "A line.", "--provider", "elevenlabs", "--voice", "Rachel")
    assert result.exit_code == 2 and "rejected the API key" in result.stderr and voice_gets(fake) == 2


def test_a_list_that_cannot_be_fetched_means_the_value_is_an_id_and_said(fake, monkeypatch):
    monkeypatch.setenv("NARRATOR_ELEVENLABS_RETRIES", "0")
    fake.script(server_error(503))
    result = run("check", "A line.", "--provider", "elevenlabs", "--voice", "Rachel", "--json")
    assert result.exit_code == 1 and rows(result)[0]["cacheKey"] == cache_key("A line.", "Rachel", MODEL)
    assert "warning: voice 'Rachel' taken as a voice id" in result.stderr and "HTTP 503" in result.stderr
    monkeypatch.setenv("NARRATOR_ELEVENLABS_BASE_URL", refused_url())
    result = run("check", "A line.", "--provider", "elevenlabs", "--voice", "Rachel")
    assert result.exit_code == 1 and "taken as a voice id" in result.stderr and "connection refused" in result.stderr


def test_without_an_api_key_a_name_is_taken_as_an_id_and_said(tmp_path):
    result = run("check", "A line.", "--provider", "elevenlabs", "--voice", "Rachel", "--json")
    assert result.exit_code == 1 and rows(result)[0]["cacheKey"] == cache_key("A line.", "Rachel", MODEL)
    assert "taken as a voice id: no ElevenLabs API key" in result.stderr


def test_other_providers_take_the_voice_as_it_is(fake):
    result = run("check", "A line.", "--provider", "espeak", "--voice", "Rachel", "--json")
    assert rows(result)[0]["cacheKey"] == cache_key("A line.", "Rachel", "espeak-ng") and result.stderr == ""
    assert fake.requests == []


def test_the_inlined_id_shape_is_looks_like_id():
    from narrator_cli.costs.voices import looks_like_id

    assert looks_like_id(RACHEL) and looks_like_id("a" * 25)
    assert not any(map(looks_like_id, ("Rachel", "a" * 19, "21m00Tcm4TlvDq8ikWA-", "21m00Tcm4TlvDq8ikWAé")))


def test_voices_and_quota_without_an_api_key_say_where_to_set_it():
    for command in ("voices", "quota"):
        result = run(command, "--provider", "elevenlabs")
        assert result.exit_code == 2 and result.stdout == ""
        assert len(result.stderr.splitlines()) == 1 and "ELEVENLABS_API_KEY" in result.stderr
