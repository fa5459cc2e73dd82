"""The ElevenLabs provider against a local fake of the API, directly and through `narrator speak`."""

import json
import os
import socket
import ssl
import subprocess
import sys
import time

import pytest

from fake_elevenlabs import (
    FakeElevenLabs,
    refused_url,
    server_error,
    slow,
    system_busy,
    too_many_concurrent,
    unauthorized,
    validation_error,
)
from narrator_cli.errors import ProviderAuthError, ProviderError, ProviderUnreachable, UsageError
from narrator_cli.keys import cache_key
from narrator_cli.providers.elevenlabs import ElevenLabsProvider

KEY = "sk-test-7f3a91c04be25d68"  # distinctive, so any leak is easy to find
VOICE = "TestVoiceId000000abc"
MODEL = "eleven_flash_v2_5"  # the provider's default model
TEXT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture
def fake():
    with FakeElevenLabs(scripted=("POST",), api_key=KEY) as f:
        yield f


def speak(fake, *args, key=KEY, **env):
    """`narrator speak --provider elevenlabs` in a real process, pointed at the fake."""
    full_env = {**os.environ, "ELEVENLABS_API_KEY": key, "NARRATOR_ELEVENLABS_BASE_URL": fake.url,
                **{f"NARRATOR_ELEVENLABS_{k.upper()}": str(v) for k, v in env.items()}}
    return subprocess.run(
        [sys.executable, "-c", "from narrator_cli.cli import main; main()",
         "speak", "--provider", "elevenlabs", "--voice", VOICE, *args],
        capture_output=True, text=True, env=full_env, timeout=60)


def provider(fake, **kw):
    return ElevenLabsProvider(kw.pop("api_key", KEY), base_url=fake.url, **{"backoff": 0.01, **kw})


def cache_files(tmp_path):
    root = tmp_path / "audio-cache"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def assert_no_key(*texts, key=KEY):
    for t in texts:
        assert key not in t
        assert key[3:] not in t  # not even without its prefix


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("narrator: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --- success -------------------------------------------------------------------


def test_success_stores_real_mp3_with_billing_metadata(fake, tmp_path):
    from mutagen.mp3 import MP3

    proc = speak(fake, "--json", TEXT)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    key = cache_key(TEXT, VOICE, MODEL)
    mp3 = tmp_path / "audio-cache" / f"{key}.mp3"
    assert row["status"] == "generated" and row["cacheKey"] == key and row["path"] == str(mp3)
    assert row["mimeType"] == "audio/mpeg" and row["fileSize"] == mp3.stat().st_size

    length = MP3(str(mp3)).info.length  # mutagen parses it as a real MP3
    assert length > 0 and length == pytest.approx(len(TEXT) * 0.06, rel=0.1)
    assert row["duration"] == pytest.approx(length, abs=0.01)

    meta = json.loads((tmp_path / "audio-cache" / f"{key}.meta.json").read_text())
    sent = fake.posts()[0]
    assert meta["requestId"] == sent["reply_headers"]["request-id"] and len(meta["requestId"]) >= 16
    assert meta["characterCost"] == len(TEXT)
    assert meta["text"] == TEXT and meta["voiceId"] == VOICE and meta["modelId"] == MODEL
    assert meta["provider"] == "elevenlabs" and meta["mimeType"] == "audio/mpeg"

    assert len(fake.posts()) == 1
    assert sent["path"] == f"/v1/text-to-speech/{VOICE}/with-timestamps"
    assert sent["query"] == {"output_format": "mp3_44100_128"}
    assert sent["authorized"] and "xi-api-key" in sent["headers"]
    assert sent["json"] == {"text": TEXT, "model_id": MODEL}
    assert_no_key(proc.stdout, proc.stderr, *(p.read_bytes().decode("latin-1") for p in cache_files(tmp_path)))

    again = speak(fake, "--json", TEXT)
    assert json.loads(again.stdout)["status"] == "cached" and len(fake.posts()) == 1


def test_each_success_has_its_own_request_id_and_duration_follows_text(fake):
    p = provider(fake)
    try:
        short, long = p.synthesize("Hi.", VOICE, MODEL), p.synthesize(TEXT * 4, VOICE, MODEL)
    finally:
        p.close()
    from narrator_cli.audio import measure_duration

    assert short.extra["requestId"] != long.extra["requestId"]
    assert (short.extra["characterCost"], long.extra["characterCost"]) == (3, len(TEXT) * 4)
    assert 0 < measure_duration(short.audio, short.mime) < measure_duration(long.audio, long.mime)


def test_voice_id_is_one_path_segment_and_model_is_sent(fake):
    p = provider(fake)
    try:
        p.synthesize("hello", "a/b?c", "eleven_multilingual_v2")
    finally:
        p.close()
    sent = fake.posts()[0]
    assert sent["path"] == "/v1/text-to-speech/a%2Fb%3Fc/with-timestamps"
    assert sent["json"]["model_id"] == "eleven_multilingual_v2"


# --- final errors --------------------------------------------------------------


def test_wrong_key_is_one_line_naming_the_key_problem_not_the_key(fake, tmp_path):
    wrong = "sk-wrong-0d9e8c7b6a5f4e3d"
    proc = speak(fake, "--concurrency", "1", TEXT, "Second line.", "Third line.", key=wrong)
    assert_one_line_error(proc, "API key", "401")
    assert proc.returncode == 2  # configuration to fix, not a line that failed
    assert_no_key(proc.stdout, proc.stderr, key=wrong)
    assert_no_key(proc.stdout, proc.stderr)
    assert fake.statuses() in ([401], [401, 401])  # not retried, nothing paid: refused at the quota and models GETs
    assert cache_files(tmp_path) == []


def test_after_a_401_the_provider_makes_no_more_calls(fake):
    p = provider(fake, api_key="sk-wrong-key-value")
    try:
        for _ in range(3):
            with pytest.raises(ProviderAuthError, match="rejected the API key"):
                p.synthesize(TEXT, VOICE, MODEL)
    finally:
        p.close()
    assert fake.statuses("POST") == [401]


def test_validation_error_is_one_clear_line_and_writes_nothing(fake, tmp_path):
    fake.script(validation_error("text"))
    proc = speak(fake, TEXT)
    assert_one_line_error(proc, "422", "field required", "refused")
    assert proc.returncode == 1
    assert fake.statuses("POST") == [422]  # a request the API refuses is not retried
    assert cache_files(tmp_path) == []
    assert_no_key(proc.stdout, proc.stderr)


def test_the_fake_itself_validates_text_and_key(fake):
    """The fake's own checks, so tests relying on them test something."""
    import urllib.error
    import urllib.request

    def post(body, key=KEY, path=f"/v1/text-to-speech/{VOICE}"):
        req = urllib.request.Request(fake.url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"xi-api-key": key, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.headers["Content-Type"]
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    assert post({"text": "hi", "model_id": MODEL}) == (200, "audio/mpeg")
    assert post({"text": "", "model_id": MODEL}) == (
        422, {"detail": [{"loc": ["body", "text"], "msg": "field required", "type": "value_error.missing"}]})
    assert post({"text": "hi", "model_id": MODEL}, key="nope") == (
        401, {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}})
    assert post({"text": "hi", "model_id": MODEL}, path="/v1/voices")[0] == 404
    assert all(r["headers"]["xi-api-key"] == "<redacted>" for r in fake.posts())


# --- retries -------------------------------------------------------------------


def test_too_many_concurrent_then_success(fake, tmp_path):
    fake.script(too_many_concurrent())
    proc = speak(fake, "--json", TEXT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "generated"
    assert fake.statuses("POST") == [429, 200]
    assert len(cache_files(tmp_path)) == 2  # audio + metadata


def test_system_busy_honours_retry_after_through_the_cli(fake):
    fake.script(system_busy(retry_after=1))
    proc = speak(fake, TEXT)
    assert proc.returncode == 0, proc.stderr
    first, second = fake.posts()
    assert (first["status"], second["status"]) == (429, 200)
    assert second["start"] - first["end"] >= 0.9


def test_retry_after_overrides_a_short_backoff():
    with FakeElevenLabs(scripted=("POST",), api_key=KEY) as fake:
        fake.script(system_busy(retry_after=1), system_busy())
        p = provider(fake, backoff=0.01)
        try:
            p.synthesize(TEXT, VOICE, MODEL)
        finally:
            p.close()
        a, b, c = fake.posts()
        assert [r["status"] for r in (a, b, c)] == [429, 429, 200]
        assert 0.9 <= b["start"] - a["end"] < 3  # Retry-After: 1
        assert c["start"] - b["end"] < 0.5  # no Retry-After: the (short) backoff


def test_server_error_then_success(fake, tmp_path):
    fake.script(server_error(500), server_error(503))
    proc = speak(fake, "--json", TEXT)  # the default backoff: about 0.5-1 s, then 1-2 s
    assert proc.returncode == 0, proc.stderr
    assert fake.statuses("POST") == [500, 503, 200]
    assert json.loads(proc.stdout)["status"] == "generated" and len(cache_files(tmp_path)) == 2


def test_server_error_forever_fails_after_the_configured_attempts(fake, tmp_path):
    fake.always(server_error())
    proc = speak(fake, TEXT, retries=1)
    assert_one_line_error(proc, "after 2 attempts", "500")
    assert proc.returncode == 1
    assert len(fake.posts()) == 2
    assert cache_files(tmp_path) == []
    assert_no_key(proc.stdout, proc.stderr)


@pytest.mark.parametrize("retries", [0, 3])
def test_retry_budget_is_exact(fake, retries):
    fake.always(server_error(502))
    p = provider(fake, retries=retries)
    try:
        with pytest.raises(ProviderError, match=f"after {retries + 1} attempts: HTTP 502"):
            p.synthesize(TEXT, VOICE, MODEL)
    finally:
        p.close()
    assert fake.statuses("POST") == [502] * (retries + 1)


# --- timeouts ------------------------------------------------------------------


def test_slow_response_past_the_timeout_is_a_clear_error(fake, tmp_path):
    fake.script(slow(5))
    t0 = time.monotonic()
    proc = speak(fake, TEXT, timeout=0.3, retries=0)
    assert time.monotonic() - t0 < 4.5
    assert_one_line_error(proc, "timed out")
    assert proc.returncode == 1
    assert cache_files(tmp_path) == []
    assert_no_key(proc.stdout, proc.stderr)


def test_a_timeout_is_retried(fake, tmp_path):
    fake.script(slow(3))
    proc = speak(fake, "--json", TEXT, timeout=0.3, retries=1)
    assert proc.returncode == 0, proc.stderr
    assert fake.statuses("POST")[1:] == [200] and len(cache_files(tmp_path)) == 2


# --- adaptive concurrency ------------------------------------------------------


def test_concurrency_adapts_to_the_account_limit(tmp_path):
    lines = [f"Line number {i} of a script with a concurrency limit." for i in range(12)]
    (tmp_path / "script.txt").write_text("\n".join(lines))
    with FakeElevenLabs(scripted=("POST",), api_key=KEY, max_concurrent=2, latency=0.2) as fake:
        proc = speak(fake, "--json", "--concurrency", "6", "--file", "script.txt")
        assert proc.returncode == 0, proc.stderr
        rows = [json.loads(line) for line in proc.stdout.splitlines()]
        assert len(rows) == 12 and all(r["status"] == "generated" for r in rows)
        statuses = fake.statuses("POST")
        rejected = [r for r in fake.posts() if r["status"] == 429]
        assert statuses.count(200) == 12 and len(statuses) == 12 + len(rejected)
        # The opening burst went past the limit; each too_many_concurrent_requests lowers the limit by
        # at least one, so at most 6 - 2 are refused before the batch fits, and none after that.
        assert fake.max_concurrency > 2
        assert 1 <= len(rejected) <= 4, statuses
        assert fake.peak_concurrency(started_after=max(r["end"] for r in rejected)) <= 2
    assert len(cache_files(tmp_path)) == 24


def test_full_concurrency_is_used_when_the_account_allows_it(tmp_path):
    (tmp_path / "script.txt").write_text("\n".join(f"Parallel line {i}." for i in range(8)))
    with FakeElevenLabs(scripted=("POST",), api_key=KEY, latency=0.3) as fake:
        proc = speak(fake, "--json", "--concurrency", "4", "--file", "script.txt")
        assert proc.returncode == 0, proc.stderr
        assert len(fake.posts()) == 8 and fake.max_concurrency == 4


# --- the key stays secret ------------------------------------------------------


@pytest.mark.parametrize("reply", [unauthorized(), validation_error(), server_error(), system_busy(),
                                   too_many_concurrent(), slow(2)],
                         ids=["401", "422", "500", "busy", "concurrent", "timeout"])
def test_no_failure_message_holds_the_key(fake, reply):
    fake.always(reply)
    p = provider(fake, retries=0, timeout=0.3)
    try:
        with pytest.raises(ProviderError) as info:
            p.synthesize(TEXT, VOICE, MODEL)
    finally:
        p.close()
    message = str(info.value)
    assert_no_key(message, repr(info.value))
    assert "\n" not in message and message.startswith("ElevenLabs ")
    assert isinstance(info.value, ProviderAuthError) == (reply.status == 401)


def test_key_is_in_no_output_and_no_cache_file(fake, tmp_path):
    outputs = []
    for args in (["--json", TEXT], [TEXT, "Another line."], ["--force", "--out", "copy.mp3", TEXT]):
        proc = speak(fake, *args)
        assert proc.returncode == 0, proc.stderr
        outputs += [proc.stdout, proc.stderr]
    fake.always(server_error())
    proc = speak(fake, "A line that fails.", retries=0)
    assert proc.returncode == 1
    outputs += [proc.stdout, proc.stderr]
    files = cache_files(tmp_path) + [tmp_path / "copy.mp3"]
    assert len(files) == 6 and any(p.name == ".narrator-hits" for p in files)  # the hits log is read too
    assert_no_key(*outputs, *(p.read_bytes().decode("latin-1") for p in files))
    stats = subprocess.run([sys.executable, "-c", "from narrator_cli.cli import main; main()", "stats", "--json"],
                           capture_output=True, text=True, timeout=60)
    assert stats.returncode == 0 and json.loads(stats.stdout)["charactersBilled"] == len(TEXT) + 13
    assert_no_key(stats.stdout, stats.stderr)


def test_key_with_a_trailing_newline_works(fake, tmp_path):
    proc = speak(fake, TEXT, key=KEY + "\n")
    assert proc.returncode == 0, proc.stderr
    assert fake.posts()[0]["authorized"]


@pytest.mark.parametrize("bad", [KEY[:6] + " " + KEY[6:], KEY + "é"])
def test_malformed_key_is_a_usage_error_before_any_request(fake, tmp_path, bad):
    proc = speak(fake, TEXT, key=bad)
    assert_one_line_error(proc, "API key is malformed")
    assert proc.returncode == 2
    assert len(fake.posts()) == 0 and cache_files(tmp_path) == []
    assert_no_key(proc.stdout, proc.stderr, key=bad)
    with pytest.raises(UsageError):
        ElevenLabsProvider(bad, base_url=fake.url)


# --- an API that cannot be reached ------------------------------------------------


def count_requests(p):
    """Requests the provider starts (httpx's request hook runs as each one is about to be sent)."""
    sent = []
    p.client.event_hooks["request"].append(lambda request: sent.append(request.url.host))
    return sent


def test_refused_connection_gives_up_after_one_quick_retry_then_makes_no_request():
    url = refused_url()
    p = ElevenLabsProvider(KEY, base_url=url, retries=4, backoff=5)  # a 5 s backoff would show in the count
    sent = count_requests(p)
    try:
        with pytest.raises(ProviderUnreachable) as info:
            p.synthesize(TEXT, VOICE, MODEL)
        assert len(sent) == 2  # one quick retry, not retries + 1
        for _ in range(3):
            with pytest.raises(ProviderUnreachable):
                p.synthesize("Another line.", VOICE, MODEL)
        assert len(sent) == 2  # at once, without a request
    finally:
        p.close()
    message = str(info.value)
    assert url.removeprefix("http://") in message and "connection refused" in message and "\n" not in message
    assert_no_key(message, repr(info.value))


def test_tls_failure_is_unreachable(fake):
    p = ElevenLabsProvider(KEY, base_url=fake.url.replace("http://", "https://"), retries=4)
    try:
        with pytest.raises(ProviderUnreachable, match="TLS"):
            p.synthesize(TEXT, VOICE, MODEL)
    finally:
        p.close()
    assert len(fake.posts()) == 0  # no request got through the handshake


def test_one_refused_connection_then_the_api_answers(tmp_path):
    url = refused_url()
    p = ElevenLabsProvider(KEY, base_url=url, retries=4)
    sent = count_requests(p)
    port = int(url.rsplit(":", 1)[1])
    started = []

    def start_api_before_the_retry(request):  # the API comes up between the first attempt and its retry
        if len(sent) == 2 and not started:
            started.append(FakeElevenLabs(scripted=("POST",), api_key=KEY, port=port).start())

    p.client.event_hooks["request"].append(start_api_before_the_retry)
    try:
        synth = p.synthesize(TEXT, VOICE, MODEL)
    finally:
        p.close()
        for f in started:
            f.close()
    assert synth.mime == "audio/mpeg" and len(sent) == 2 and started[0].statuses() == [200]


def test_a_batch_with_no_api_stops_at_once_with_one_line(tmp_path):
    (tmp_path / "script.txt").write_text("\n".join(f"Line {i} of a script." for i in range(12)))
    url = refused_url()
    proc = subprocess.run(
        [sys.executable, "-c", "from narrator_cli.cli import main; main()",
         "speak", "--provider", "elevenlabs", "--voice", VOICE, "--concurrency", "4", "--file", "script.txt"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "ELEVENLABS_API_KEY": KEY, "NARRATOR_ELEVENLABS_BASE_URL": url})
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("narrator: error: ")]
    assert len(errors) == 1 and "cannot reach ElevenLabs at " + url.removeprefix("http://") in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert_no_key(proc.stdout, proc.stderr)
    assert cache_files(tmp_path) == []


@pytest.mark.parametrize("base_url", ["ftp://example.com", "api.elevenlabs.io", "http://"])
def test_a_base_url_that_is_not_http_is_a_usage_error_before_any_request(fake, base_url):
    proc = speak(fake, TEXT, base_url=base_url)
    assert_one_line_error(proc, "base_url")
    assert proc.returncode == 2


def test_format_wav_is_refused_for_elevenlabs(fake, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", "from narrator_cli.cli import main; main()",
         "speak", "--provider", "elevenlabs", "--voice", VOICE, TEXT], capture_output=True, text=True, timeout=60,
        env={**os.environ, "ELEVENLABS_API_KEY": KEY, "NARRATOR_ELEVENLABS_BASE_URL": fake.url,
             "NARRATOR_FORMAT": "wav"})
    assert_one_line_error(proc, "output_format")
    assert proc.returncode == 2 and len(fake.posts()) == 0 and cache_files(tmp_path) == []


# --- Ctrl-C ----------------------------------------------------------------------


def wait_for(condition, seconds=10.0):
    """Poll ``condition`` (bounded in time); True once it holds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def in_thread(fn):
    import threading

    outcome = {}

    def run():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_cancel_wakes_a_retry_sleeping_in_backoff_and_sends_nothing_more(fake):
    fake.always(system_busy(retry_after=30))
    p = provider(fake, retries=4)
    try:
        thread, outcome = in_thread(lambda: p.synthesize(TEXT, VOICE, MODEL))
        assert wait_for(lambda: fake.statuses("POST") == [429])  # answered: the call now waits 30 s to retry
        p.cancel()
        thread.join(timeout=10)  # far less than the 30 s it would otherwise sleep
        assert not thread.is_alive()
        assert isinstance(outcome.get("error"), ProviderError) and str(outcome["error"]) == "cancelled"
        with pytest.raises(ProviderError, match="^cancelled$"):
            p.synthesize("Another line.", VOICE, MODEL)
    finally:
        p.close()
    assert len(fake.posts()) == 1


def test_cancel_lets_the_request_in_flight_finish_and_starts_no_waiting_one(fake):
    fake.script(slow(1.0))
    p = provider(fake, concurrency=1)
    try:
        first, first_out = in_thread(lambda: p.synthesize(TEXT, VOICE, MODEL))
        assert wait_for(lambda: len(fake.posts()) == 1)
        second, second_out = in_thread(lambda: p.synthesize("Waiting for a slot.", VOICE, MODEL))
        time.sleep(0.1)  # let it reach the concurrency limit (if it did not, cancel stops it before it)
        p.cancel()
        second.join(timeout=10)
        first.join(timeout=10)
    finally:
        p.close()
    assert str(second_out.get("error")) == "cancelled"
    assert first_out["value"].mime == "audio/mpeg"  # what was sent is still received whole
    assert fake.statuses("POST") == [200]


@pytest.mark.parametrize(("cause", "words"), [
    (socket.gaierror(-2, "Name or service not known"), "does not resolve"),
    (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "TLS"),
    (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
    (OSError(101, "Network is unreachable"), "network is unreachable"),
], ids=["dns", "tls", "refused", "no-route"])
def test_unreachable_says_why_in_a_few_words(cause, words):
    """DNS cannot be failed for real without a network; the reason is read from the exception chain httpx gives."""
    import httpx

    from narrator_cli.providers.http_api import why_unreachable as _why_unreachable

    try:
        try:
            raise cause
        except OSError as exc:
            raise httpx.ConnectError("boom") from exc
    except httpx.ConnectError as exc:
        assert words in _why_unreachable(exc)
