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

import httpx

from ..errors import ProviderError
from ..motion_canvas import MINIMAX_DEFAULTS, MINIMAX_ENDPOINT
from . import Synthesis, minimax_format
from .http_api import HttpApi, Retry, checked_host, checked_key, retry_after, tls_context

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


class MinimaxProvider(HttpApi):
    name = "minimax"
    service = "MiniMax"
    url_setting = "[minimax] endpoint"

    def __init__(self, api_key: str, endpoint: str = MINIMAX_ENDPOINT, fmt: str = "mp3", timeout: float = 60.0,
                 retries: int = 4, backoff: float = 1.0, concurrency: int = 8) -> None:
        api_key = checked_key(api_key, self.service, "MINIMAX_API_KEY or [minimax] api_key in your user config")
        host = checked_host(endpoint, "MiniMax endpoint", "[minimax] endpoint or NARRATOR_MINIMAX_ENDPOINT")
        super().__init__(host, retries, backoff, concurrency)
        self.endpoint = endpoint
        self.fmt = minimax_format(fmt)
        self.client = httpx.Client(
            headers={"authorization": f"Bearer {api_key}", "content-type": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=max(concurrency, 1) + 2), verify=tls_context(),
        )

    def synthesize(self, text: str, voice_id: str, model_id: str, fmt: str | None = None) -> Synthesis:
        """``fmt``: the format the line is keyed with (the provider's own when None)."""
        fmt = minimax_format(fmt or self.fmt)
        body = request_body(text, voice_id, model_id, fmt)
        return self._call(lambda: self.client.post(self.endpoint, json=body), lambda resp: self._answer(resp, fmt))

    def _answer(self, resp: httpx.Response, fmt: str) -> Synthesis | Retry:
        """The audio, or a retryable failure as (message, seconds to wait); raises for final ones."""
        code = resp.status_code
        if code == 401:
            self._refuse("MiniMax rejected the API key (401)")
        if code == 429 or code >= 500:
            return Retry(f"HTTP {code}", retry_after(resp))
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
            self._refuse(f"MiniMax {AUTH_CODES[status]} ({status}{': ' + message if message else ''})")
        if status in RETRY_CODES:
            return Retry(f"error {status}{': ' + message if message else ''}", retry_after(resp))
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
