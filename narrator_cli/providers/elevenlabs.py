"""ElevenLabs text-to-speech over its HTTP API (the request loop, retries and key handling: ``http_api``).

Each line is requested from the ``with-timestamps`` endpoint: the same audio (base64 in a JSON reply) plus
when each character was spoken, as written (``alignment``) and as normalised for speech
(``normalized_alignment``: "77" read as "seventy-seven"). The words come from the first of the two that is
usable, mapped onto the line's own text by ``captions.words.from_characters`` over the audio's measured
duration; with neither, none (the captions layer estimates them and says so).

Retries 429 and 5xx. The two kinds of 429 differ: ``too_many_concurrent_requests``
means the batch runs more requests than the account allows, so the shared limit
drops by one before the retry; ``system_busy`` only backs off. Nothing but real
audio is ever returned: every failure is a ProviderError. A 200 whose body is not the expected JSON with
audio is one too, and is not retried: that answer was billed, and asking again would pay for it again.
"""

from __future__ import annotations

import base64
import binascii

import httpx

from ..audio import measure_duration
from ..captions.words import Word, from_characters
from ..errors import AudioError, ProviderError, UsageError
from . import Synthesis, audio_format
from .http_api import HttpApi, Retry, checked_host, checked_key, retry_after, tls_context

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
DEFAULT_FORMAT = "mp3_44100_128"
FORMAT_MIME = {"mp3": "audio/mpeg", "pcm": "audio/wav", "wav": "audio/wav", "opus": "audio/ogg"}
ALIGNMENTS = ("alignment", "normalized_alignment")  # the reply's character timings, the one as written first


class ElevenLabsProvider(HttpApi):
    name = "elevenlabs"
    service = "ElevenLabs"
    url_setting = "[elevenlabs] base_url"

    def __init__(self, api_key: str, base_url: str = DEFAULT_BASE_URL, output_format: str = DEFAULT_FORMAT,
                 timeout: float = 60.0, retries: int = 4, backoff: float = 1.0, concurrency: int = 8) -> None:
        api_key = checked_key(api_key, self.service, "ELEVENLABS_API_KEY or api_key in your user config")
        host = checked_host(base_url, "ElevenLabs base_url", "[elevenlabs] base_url or NARRATOR_ELEVENLABS_BASE_URL")
        codec = output_format.split("_", 1)[0]
        if codec not in FORMAT_MIME or codec in ("pcm", "wav"):
            raise UsageError(f"unsupported ElevenLabs output_format {output_format!r} (use an mp3_* or opus_* format)")
        super().__init__(host, retries, backoff, concurrency)
        self.mime = FORMAT_MIME[codec]
        self.output_format = output_format
        self.client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"xi-api-key": api_key, "accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=max(concurrency, 1) + 2), verify=tls_context(),
        )

    def synthesize(self, text: str, voice_id: str, model_id: str) -> Synthesis:
        path = f"/v1/text-to-speech/{_segment(voice_id)}/with-timestamps"
        body = {"text": text, "model_id": model_id}
        return self._call(lambda: self.client.post(path, params={"output_format": self.output_format}, json=body),
                          lambda resp: self._answer(resp, text))

    def _answer(self, resp: httpx.Response, text: str) -> Synthesis | Retry:
        return self._audio(resp, text) if resp.status_code == 200 else self._failure(resp)

    def _audio(self, resp: httpx.Response, text: str) -> Synthesis:
        """The audio of a 200 reply, with the line's words when the reply times them; ProviderError when
        the reply holds no real audio of the requested format."""
        if not resp.content:
            raise ProviderError("ElevenLabs returned an empty response")
        try:
            reply = resp.json()
        except ValueError:
            raise ProviderError("ElevenLabs returned a reply that is not JSON") from None
        encoded = reply.get("audio_base64") if isinstance(reply, dict) else None
        if not isinstance(encoded, str):
            raise ProviderError("ElevenLabs returned a reply without audio_base64")
        try:
            audio = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ProviderError("ElevenLabs returned audio_base64 that is not valid base64") from None
        if not audio:
            raise ProviderError("ElevenLabs returned empty audio")
        try:
            duration = measure_duration(audio, self.mime)
        except AudioError as exc:
            raise ProviderError(f"ElevenLabs returned audio that does not play ({exc})") from None
        extra: dict = {}
        if rid := resp.headers.get("request-id"):
            extra["requestId"] = rid
        cost = resp.headers.get("character-cost")
        if cost and cost.isdigit():
            extra["characterCost"] = int(cost)
        return Synthesis(audio, self.mime, extra, timed_words(text, reply, duration))

    def _failure(self, resp: httpx.Response) -> Retry:
        """A retryable failure as (message, seconds to wait); raises for final ones."""
        status, detail = _detail(resp)
        code = resp.status_code
        if code == 401:
            self._refuse(f"ElevenLabs rejected the API key (401){': ' + detail if detail else ''}")
        if code == 429 or code >= 500:
            if status == "too_many_concurrent_requests":
                self.limit.lower()
            return Retry(f"HTTP {code}{' ' + status if status else ''}{': ' + detail if detail else ''}", retry_after(resp))
        raise ProviderError(f"ElevenLabs refused the request ({code}){': ' + detail if detail else ''}")

    def close(self) -> None:
        self.client.close()


def timed_words(text: str, reply: dict, duration: float) -> list[Word] | None:
    """The words of ``text`` from the first usable alignment of a with-timestamps reply; None when neither
    is (null, arrays of different lengths, times that are not numbers)."""
    for field in ALIGNMENTS:
        timing = reply.get(field)
        if isinstance(timing, dict):
            words = from_characters(text, timing.get("characters"), timing.get("character_start_times_seconds"),
                                    timing.get("character_end_times_seconds"), duration)
            if words:
                return words
    return None


def _segment(voice_id: str) -> str:
    from urllib.parse import quote

    return quote(voice_id, safe="")


def _detail(resp: httpx.Response) -> tuple[str, str]:
    try:
        detail = resp.json().get("detail")
    except (ValueError, AttributeError):
        return "", resp.reason_phrase
    if isinstance(detail, dict):
        return str(detail.get("status", "")), str(detail.get("message", ""))[:200]
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        return "", str(detail[0].get("msg", ""))[:200]
    return "", str(detail or "")[:200]


def create(settings: dict) -> ElevenLabsProvider:
    fmt = settings.get("format")
    if fmt == "wav":
        raise UsageError("the elevenlabs provider does not take format = 'wav': its audio format is set by "
                         "[elevenlabs] output_format (NARRATOR_ELEVENLABS_OUTPUT_FORMAT), e.g. mp3_44100_128")
    audio_format(settings)  # anything but mp3 is refused there, with the choices
    return ElevenLabsProvider(
        api_key=settings.get("api_key", ""),
        base_url=settings.get("base_url") or DEFAULT_BASE_URL,
        output_format=settings.get("output_format") or DEFAULT_FORMAT,
        timeout=float(settings.get("timeout", 60.0)),
        retries=int(settings.get("retries", 4)),
        backoff=float(settings.get("backoff", 1.0)),
        concurrency=int(settings.get("concurrency", 8)),
    )
