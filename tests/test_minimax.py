"""The MiniMax provider against a local fake of its T2A v2 API, directly and through `narrator speak`."""

import json
import os
import subprocess
import sys
import threading

import pytest
from fake_elevenlabs import refused_url
from fake_minimax import FakeMinimax, api_error, http_error, rate_limited, raw_audio, unauthorized

from narrator_cli.errors import ProviderAuthError, ProviderError, ProviderUnreachable, UsageError
from narrator_cli.keys import cache_key
from narrator_cli.motion_canvas import FACTORIES
from narrator_cli.providers import key_params
from narrator_cli.providers.minimax import MinimaxProvider, request_body
from narrator_cli.resolve import plan

KEY = "mm-test-5c2e8a0f91d37b46"  # distinctive, so any leak is easy to find
VOICE = "male-qn-qingse"
MODEL = "speech-2.6-turbo"
TEXT = "The quick brown fox jumps over the lazy dog."



@pytest.fixture
def fake():
    with FakeMinimax(api_key=KEY) as f:
        yield f


def speak(endpoint, *args, key=KEY, **env):
    """`narrator speak --provider minimax` in a real process, pointed at ``endpoint``."""
    full_env = {**os.environ, "MINIMAX_API_KEY": key, "NARRATOR_MINIMAX_ENDPOINT": endpoint,
                **{f"NARRATOR_MINIMAX_{k.upper()}": str(v) for k, v in env.items()}}
    return subprocess.run([sys.executable, "-c", "from narrator_cli.cli import main; main()",
                           "speak", "--provider", "minimax", "--voice", VOICE, *args],
                          capture_output=True, text=True, env=full_env, timeout=60)


def provider(fake, **kw):
    return MinimaxProvider(kw.pop("api_key", KEY), endpoint=fake.endpoint, **{"backoff": 0.01, **kw})


def cache_files(tmp_path):
    root = tmp_path / "audio-cache"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def assert_one_line_error(proc, *needles):
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("narrator: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]
    assert KEY not in proc.stdout + proc.stderr


# --- keys ---------------------------------------------------------------------------------------------------------
def test_a_minimax_line_is_keyed_with_voice_model_and_format_as_the_plugin_keys_it():
    for fmt, options in ((None, {"voiceId": VOICE}), ("wav", {"voiceId": VOICE, "format": "wav"})):
        params = key_params("minimax", VOICE, None, fmt)
        assert params == tuple(FACTORIES["createMinimaxNarrator"].key_params(options))
        [line] = plan([TEXT], *params)
        assert line.key == cache_key(TEXT, VOICE, MODEL, fmt or "mp3") != cache_key(TEXT, VOICE, MODEL)
        assert line.fmt == (fmt or "mp3")
    assert key_params("elevenlabs", "v", None, "mp3") == ("v", "eleven_flash_v2_5")  # others: unchanged


@pytest.mark.parametrize("fmt, needle", [("flac", "'flac' is not supported"), ("ogg", "unknown audio format")])
def test_formats_the_cache_cannot_store_are_refused(fmt, needle):
    with pytest.raises(UsageError, match=needle):
        key_params("minimax", VOICE, None, fmt)


def test_minimax_needs_a_voice():
    with pytest.raises(UsageError, match="needs a voice"):
        key_params("minimax", None, None)


# --- the provider -----------------------------------------------------------------------------------------------------
def test_sends_the_plugins_body_with_a_bearer_key_and_decodes_hex_mp3(fake):
    p = provider(fake)
    synth = p.synthesize(TEXT, VOICE, MODEL)
    sent = fake.requests[0]
    assert sent["authorized"] and sent["headers"]["authorization"] == "<redacted>"
    assert sent["json"] == request_body(TEXT, VOICE, MODEL, "mp3")
    assert sent["json"]["voice_setting"] == {"voice_id": VOICE, "speed": 1, "vol": 1, "pitch": 0, "emotion": "neutral"}
    assert sent["json"]["audio_setting"] == {"sample_rate": 32000, "bitrate": 128000, "format": "mp3", "channel": 1}
    assert (sent["json"]["stream"], sent["json"]["output_format"], sent["json"]["subtitle_enable"]) == (False, "hex",
                                                                                                        False)
    assert synth.mime == "audio/mpeg" and synth.audio[:2] == b"\xff\xfb"
    assert synth.extra["characterCost"] == len(TEXT) and synth.extra["requestId"]
    wav = p.synthesize(TEXT, VOICE, MODEL, "wav")
    assert wav.mime == "audio/wav" and wav.audio[:4] == b"RIFF"


@pytest.mark.parametrize("hex_text", ["abc", "zz00", "00ff\u00e9\u00e9"])
def test_audio_that_is_not_strict_hex_is_an_error(fake, hex_text):
    fake.always(raw_audio(hex_text))
    with pytest.raises(ProviderError, match="not valid hex"):
        provider(fake).synthesize(TEXT, VOICE, MODEL)
    assert fake.request_count == 1  # not retried: the same answer would come again


def test_an_api_error_is_its_status_msg_and_is_not_retried(fake):
    fake.always(api_error(1026, "input new_sensitive"))
    with pytest.raises(ProviderError, match="MiniMax error 1026: input new_sensitive"):
        provider(fake).synthesize(TEXT, VOICE, MODEL)
    assert fake.request_count == 1


def test_rate_limits_and_server_errors_are_retried(fake):
    fake.script(rate_limited(), api_error(1039, "token limit"), http_error(503), http_error(429, retry_after=0))
    assert provider(fake).synthesize(TEXT, VOICE, MODEL).audio
    assert [r["status"] for r in fake.requests] == [200, 200, 503, 429, 200]


def test_the_retry_budget_is_exact_and_the_last_failure_is_named(fake):
    fake.always(rate_limited())
    with pytest.raises(ProviderError, match=r"after 3 attempts: error 1002: rate limit"):
        provider(fake, retries=2).synthesize(TEXT, VOICE, MODEL)
    assert fake.request_count == 3


@pytest.mark.parametrize("reply, needle", [(unauthorized(), "rejected the API key (1004"),
                                           (api_error(2049, "invalid api key"), "rejected the API key (2049"),
                                           (api_error(1008, "insufficient balance"), "no balance left"),
                                           (http_error(401), "rejected the API key (401)")])
def test_a_refused_key_stops_the_provider(fake, reply, needle):
    fake.always(reply)
    p = provider(fake)
    with pytest.raises(ProviderAuthError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        p.synthesize(TEXT, VOICE, MODEL)
    with pytest.raises(ProviderAuthError):
        p.synthesize("Another line.", VOICE, MODEL)
    assert fake.request_count == 1


def test_unreachable_gives_up_after_one_quick_retry():
    url = refused_url() + "/v1/t2a_v2"
    p = MinimaxProvider(KEY, endpoint=url, backoff=0.01)
    with pytest.raises(ProviderUnreachable, match="cannot reach MiniMax at 127.0.0.1:.*connection refused"):
        p.synthesize(TEXT, VOICE, MODEL)
    with pytest.raises(ProviderUnreachable):
        p.synthesize("Another line.", VOICE, MODEL)


def test_cancel_wakes_a_retry_waiting_in_backoff_and_sends_nothing_more(fake):
    fake.always(rate_limited())
    p = provider(fake, backoff=30.0)
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(_raises(lambda: p.synthesize(TEXT, VOICE, MODEL))))
    thread.start()
    for _ in range(500):
        if fake.request_count:
            break
        threading.Event().wait(0.01)
    p.cancel()
    thread.join(10)
    assert not thread.is_alive() and "cancelled" in str(outcome[0])
    assert fake.request_count == 1


def _raises(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        return exc
    return None


@pytest.mark.parametrize("bad", ["", "  ", "key with space", "kéy"])
def test_a_missing_or_malformed_key_is_a_usage_error(fake, bad):
    with pytest.raises(UsageError, match="MINIMAX_API_KEY"):
        provider(fake, api_key=bad)
    assert fake.request_count == 0


# --- through `narrator speak` -------------------------------------------------------------------------------------
def test_speak_stores_the_line_under_the_plugins_key_and_hits_it_next_time(fake, tmp_path):
    key = cache_key(TEXT, VOICE, MODEL, "mp3")
    proc = speak(fake.endpoint, TEXT, "--json")
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert (row["cacheKey"], row["status"], row["mimeType"], row["format"]) == (key, "generated", "audio/mpeg", "mp3")
    assert cache_files(tmp_path) == [f"{key}.meta.json", f"{key}.mp3"]
    meta = json.loads((tmp_path / "audio-cache" / f"{key}.meta.json").read_text())
    assert (meta["voiceId"], meta["modelId"], meta["format"], meta["provider"]) == (VOICE, MODEL, "mp3", "minimax")
    assert meta["characterCost"] == len(TEXT)
    again = speak(fake.endpoint, TEXT, "--json")
    assert json.loads(again.stdout)["status"] == "cached" and fake.request_count == 1
    assert KEY not in proc.stdout + proc.stderr + again.stdout + again.stderr
    assert not any(KEY in p.read_text(errors="replace") for p in (tmp_path / "audio-cache").iterdir())


@pytest.mark.parametrize("how", [("--format", "wav"), ("env",)])
def test_format_wav_is_another_key_and_a_wav_entry(fake, tmp_path, how):
    key = cache_key(TEXT, VOICE, MODEL, "wav")
    proc = speak(fake.endpoint, TEXT, "--json", *how) if how[0] != "env" else speak(fake.endpoint, TEXT, "--json",
                                                                                        format="wav")
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert (row["cacheKey"], row["mimeType"], row["format"]) == (key, "audio/wav", "wav")
    assert cache_files(tmp_path) == [f"{key}.meta.json", f"{key}.wav"]
    assert fake.requests[0]["json"]["audio_setting"]["format"] == "wav"


def test_speak_retries_a_rate_limit_and_a_server_error(fake, tmp_path):
    fake.script(rate_limited(), http_error(500, retry_after=0))
    proc = speak(fake.endpoint, TEXT, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "generated" and fake.request_count == 3


def test_a_refused_key_is_exit_2_with_one_line_and_one_request(fake, tmp_path):
    proc = speak(fake.endpoint, "One.", "Two.", "Three.", "--concurrency", "1", key="mm-wrong-key-0123456789")
    assert proc.returncode == 2
    assert "mm-wrong-key-0123456789" not in proc.stdout + proc.stderr
    assert "MiniMax rejected the API key (1004" in proc.stderr and "Traceback" not in proc.stderr
    assert fake.request_count == 1 and not [n for n in cache_files(tmp_path) if not n.startswith(".")]


def test_an_unreachable_api_stops_the_batch_with_one_line(tmp_path):
    proc = speak(refused_url() + "/v1/t2a_v2", "One.", "Two.", "Three.", "--concurrency", "1")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "cannot reach MiniMax" in proc.stderr and KEY not in proc.stdout + proc.stderr


def test_bad_hex_fails_the_line_and_stores_nothing(fake, tmp_path):
    fake.always(raw_audio("abc"))
    proc = speak(fake.endpoint, TEXT)
    assert proc.returncode == 1 and "not valid hex" in proc.stdout + proc.stderr
    assert cache_files(tmp_path) == []


def test_no_key_is_exit_2_before_any_request(fake, tmp_path):
    proc = speak(fake.endpoint, TEXT, key="")
    assert proc.returncode == 2 and fake.request_count == 0
    assert_one_line_error(proc, "MINIMAX_API_KEY")


def test_flac_is_refused_with_one_line_before_any_request(fake, tmp_path):
    proc = speak(fake.endpoint, TEXT, format="flac")
    assert proc.returncode == 2 and fake.request_count == 0
    assert_one_line_error(proc, "'flac' is not supported")


def test_an_api_key_in_narrator_toml_is_refused(fake, tmp_path):
    (tmp_path / "narrator.toml").write_text(f'[minimax]\napi_key = "{KEY}"\n')
    proc = speak(fake.endpoint, TEXT, key="")
    assert proc.returncode == 2 and fake.request_count == 0
    assert_one_line_error(proc, "secret")
