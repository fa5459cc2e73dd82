"""MiniMax text-to-speech over its T2A v2 HTTP API, with the request the Motion Canvas plugin sends.

MiniMax answers most errors with HTTP 200 and ``base_resp.status_code`` != 0.
Codes from its API documentation (assumed stable; any other non-zero code
fails that line with MiniMax's ``status_msg``): 1002 (requests per minute) and
1039 (tokens per minute) are rate limits, 1000 (unknown), 1001 (timeout) and
1013 (internal error) are transient: all four retry with backoff, as HTTP 429
and 5xx do. 1004 and 2049 refuse the key and 1008 means no balance left: every
further call would fail too, so the batch stops (exit 2). Reaching the API at
all is handled as for ElevenLabs: one quick retry, then ProviderUnreachable.
The key is sent as a header and never appears in a message.
"""

from __future__ import annotations

import binascii
import random
import threading

import httpx

from ..errors import ProviderAuthError, ProviderError, ProviderUnreachable, UsageError
from ..motion_canvas import MINIMAX_DEFAULTS, MINIMAX_ENDPOINT
from . import Synthesis, minimax_format
from .elevenlabs import UNREACHABLE_RETRY, ConcurrencyLimit, _retry_after, _why_unreachable

FORMAT_MIME = {"mp3": "audio/mpeg", "wav": "audio/wav"}
RETRY_CODES = {1000, 1001, 1002, 1013, 1039}
AUTH_CODES = {1004: "rejected the API key", 2049: "rejected the API key", 1008: "says the account has no balance left"}


def request_body(text: str, voice_id: str, model: str, fmt: str) -> dict:
    """The JSON body of MinimaxProvider.buildRequestBody, with its defaults (motion_canvas.MINIMAX_DEFAULTS)."""
    d = MINIMAX_DEFAULTS
    return {
        "model": model,
        "text": text,
        "stream": False,
        "voice_setting": {"voice_id": voice_id, "speed": d["speed"], "vol": d["volume"], "pitch": d["pitch"],
                          "emotion": d["emotion"]},
        "audio_setting": {"sample_rate": d["sampleRate"], "bitrate": d["bitrate"], "format": fmt,
                          "channel": d["channel"]},
        "subtitle_enable": d["subtitle"],
        "output_format": d["outputFormat"],
    }


class MinimaxProvider:
    name = "minimax"

    def __init__(self, api_key: str, endpoint: str = MINIMAX_ENDPOINT, fmt: str = "mp3", timeout: float = 60.0,
                 retries: int = 4, backoff: float = 1.0, concurrency: int = 8) -> None:
        api_key = api_key.strip()
        if not api_key:
            raise UsageError("the minimax provider needs an API key: set MINIMAX_API_KEY "
                             "or [minimax] api_key in your user config (never in narrator.toml)")
        if not all("!" <= c <= "~" for c in api_key):
            raise UsageError("the MiniMax API key is malformed (spaces or non-ASCII characters): "
                             "check MINIMAX_API_KEY or [minimax] api_key in your user config")
        try:
            url = httpx.URL(endpoint)
        except (httpx.InvalidURL, TypeError):
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise UsageError("the MiniMax endpoint must be an http:// or https:// URL with a host: "
                             "check [minimax] endpoint or NARRATOR_MINIMAX_ENDPOINT")
        self.host = url.host if url.port is None else f"{url.host}:{url.port}"  # for messages: never the userinfo
        self.endpoint = endpoint
        self.fmt = minimax_format(fmt)
        self.retries = retries
        self.backoff = backoff
        self.limit = ConcurrencyLimit(concurrency)
        self.auth_failure: str | None = None
        self.unreachable: str | None = None
        self._cancelled = threading.Event()
        self._halt = threading.Event()  # cancelled, key refused or API unreachable: backoff waits end at once
        self.client = httpx.Client(
            headers={"authorization": f"Bearer {api_key}", "content-type": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=max(concurrency, 1) + 2),
        )

    def synthesize(self, text: str, voice_id: str, model_id: str, fmt: str | None = None) -> Synthesis:
        """``fmt``: the format the line is keyed with (the provider's own when None)."""
        fmt = minimax_format(fmt or self.fmt)
        body = request_body(text, voice_id, model_id, fmt)
        unreachable = 0
        failure = ""
        for attempt in range(self.retries + 1):
            self._check()
            with self.limit:
                self._check()
                wait: float | None = None
                try:
                    resp = self.client.post(self.endpoint, json=body)
                except httpx.TimeoutException:
                    failure, unreachable = "timed out", 0
                except (httpx.ConnectError, httpx.ProxyError) as exc:
                    unreachable += 1
                    failure, wait = _why_unreachable(exc), UNREACHABLE_RETRY
                    if unreachable > 1 or attempt == self.retries:
                        self.unreachable = self.unreachable or (
                            f"cannot reach MiniMax at {self.host} ({failure}): check the network, "
                            "or [minimax] endpoint")
                        self._halt.set()
                        raise ProviderUnreachable(self.unreachable) from None
                except httpx.TransportError as exc:
                    failure, unreachable = f"connection failed ({type(exc).__name__})", 0
                else:
                    unreachable = 0
                    result = self._answer(resp, fmt)
                    if isinstance(result, Synthesis):
                        return result
                    failure, wait = result
            if attempt == self.retries:
                break
            delay = wait if wait is not None else self.backoff * (2**attempt) * (0.5 + random.random() / 2)
            if self._halt.wait(min(delay, 60.0)):
                self._check()
        raise ProviderError(f"MiniMax failed after {self.retries + 1} attempts: {failure}")

    def _check(self) -> None:
        """Raise at once, with no request, when a request now could only fail or is no longer wanted."""
        if self._cancelled.is_set():
            raise ProviderError("cancelled")
        if self.auth_failure:
            raise ProviderAuthError(self.auth_failure)
        if self.unreachable:
            raise ProviderUnreachable(self.unreachable)

    def cancel(self) -> None:
        """Ctrl-C: no request starts after this (a retry included); requests in flight finish."""
        self._cancelled.set()
        self._halt.set()
        self.limit.cancel()

    def _refuse(self, why: str) -> None:
        self.auth_failure = f"MiniMax {why}"
        self._halt.set()
        raise ProviderAuthError(self.auth_failure)

    def _answer(self, resp: httpx.Response, fmt: str) -> Synthesis | tuple[str, float | None]:
        """The audio, or a retryable failure as (message, seconds to wait); raises for final ones."""
        code = resp.status_code
        if code == 401:
            self._refuse("rejected the API key (401)")
        if code == 429 or code >= 500:
            return f"HTTP {code}", _retry_after(resp)
        if code != 200:
            raise ProviderError(f"MiniMax refused the request (HTTP {code})")
        try:
            payload = resp.json()
        except ValueError:
            raise ProviderError("MiniMax returned a reply that is not JSON") from None
        base = payload.get("base_resp") if isinstance(payload, dict) else None
        if not isinstance(base, dict) or not isinstance(base.get("status_code"), int):
            raise ProviderError("MiniMax returned a reply without base_resp.status_code")
        status, message = base["status_code"], _short(base.get("status_msg"))
        if status in AUTH_CODES:
            self._refuse(f"{AUTH_CODES[status]} ({status}{': ' + message if message else ''})")
        if status in RETRY_CODES:
            return f"error {status}{': ' + message if message else ''}", _retry_after(resp)
        if status != 0:
            raise ProviderError(f"MiniMax error {status}{': ' + message if message else ''}")
        data = payload.get("data")
        audio = data.get("audio") if isinstance(data, dict) else None
        if not isinstance(audio, str) or not audio:
            raise ProviderError("MiniMax returned no audio data")
        try:
            raw = binascii.unhexlify(audio.strip())
        except (binascii.Error, ValueError):
            raise ProviderError("MiniMax returned audio that is not valid hex") from None
        extra: dict = {}
        if isinstance(trace := payload.get("trace_id"), str) and trace:
            extra["requestId"] = trace[:100]
        info = payload.get("extra_info")
        if isinstance(info, dict) and isinstance(chars := info.get("usage_characters"), int) and chars >= 0:
            extra["characterCost"] = chars
        return Synthesis(raw, FORMAT_MIME[fmt], extra)

    def close(self) -> None:
        self.client.close()


def _short(value: object) -> str:
    return str(value)[:200] if value else ""


def create(settings: dict) -> MinimaxProvider:
    return MinimaxProvider(
        api_key=str(settings.get("api_key") or ""),
        endpoint=str(settings.get("endpoint") or MINIMAX_ENDPOINT),
        fmt=settings.get("format") or "mp3",  # type: ignore[arg-type]
        timeout=float(settings.get("timeout", 60.0)),  # type: ignore[arg-type]
        retries=int(settings.get("retries", 4)),  # type: ignore[arg-type]
        backoff=float(settings.get("backoff", 1.0)),  # type: ignore[arg-type]
        concurrency=int(settings.get("concurrency") or 8),  # type: ignore[arg-type]
    )
