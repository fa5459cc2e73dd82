"""ElevenLabs text-to-speech over its HTTP API.

Retries 429 and 5xx with exponential backoff that honours ``Retry-After``.
The two kinds of 429 differ: ``too_many_concurrent_requests`` means the batch
runs more requests than the account allows, so the shared limit drops by one
before the retry; ``system_busy`` only backs off. An API that cannot be reached
at all (refused, DNS, TLS) gets one quick retry, then ProviderUnreachable, and
the provider makes no further request: retrying every line of a batch with no
network would take minutes to say the same thing. Nothing but real audio is
ever returned: every failure is a ProviderError. The API key is sent as a
header and never appears in an error message.
"""

from __future__ import annotations

import random
import socket
import ssl
import threading

import httpx

from ..errors import ProviderAuthError, ProviderError, ProviderUnreachable, UsageError
from . import Synthesis, audio_format

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
DEFAULT_FORMAT = "mp3_44100_128"
FORMAT_MIME = {"mp3": "audio/mpeg", "pcm": "audio/wav", "wav": "audio/wav", "opus": "audio/ogg"}
UNREACHABLE_RETRY = 0.5  # seconds before the one retry of a connection that failed outright


class ConcurrencyLimit:
    """A semaphore whose size can shrink while in use (never below one); after ``cancel`` nobody enters."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._active = 0
        self._cancelled = False
        self._cond = threading.Condition()

    def __enter__(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._active < self.limit or self._cancelled)
            if self._cancelled:
                raise ProviderError("cancelled")
            self._active += 1

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def lower(self) -> None:
        with self._cond:
            self.limit = max(1, min(self.limit, self._active) - 1)

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()


class ElevenLabsProvider:
    name = "elevenlabs"

    def __init__(self, api_key: str, base_url: str = DEFAULT_BASE_URL, output_format: str = DEFAULT_FORMAT,
                 timeout: float = 60.0, retries: int = 4, backoff: float = 1.0, concurrency: int = 8) -> None:
        api_key = api_key.strip()  # a pasted key often ends in a newline; h11 refuses such a header value
        if not api_key:
            raise UsageError(
                "the elevenlabs provider needs an API key: set ELEVENLABS_API_KEY "
                "or api_key in your user config (never in narrator.toml)"
            )
        if not all("!" <= c <= "~" for c in api_key):  # else httpx fails late and misleadingly, key unnamed
            raise UsageError("the ElevenLabs API key is malformed (spaces or non-ASCII characters): "
                             "check ELEVENLABS_API_KEY or api_key in your user config")
        try:
            url = httpx.URL(base_url)
        except (httpx.InvalidURL, TypeError):
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise UsageError("the ElevenLabs base_url must be an http:// or https:// URL with a host: "
                             "check [elevenlabs] base_url or NARRATOR_ELEVENLABS_BASE_URL")
        self.host = url.host if url.port is None else f"{url.host}:{url.port}"  # for messages: never the userinfo
        codec = output_format.split("_", 1)[0]
        if codec not in FORMAT_MIME or codec in ("pcm", "wav"):
            raise UsageError(f"unsupported ElevenLabs output_format {output_format!r} (use an mp3_* or opus_* format)")
        self.mime = FORMAT_MIME[codec]
        self.output_format = output_format
        self.retries = retries
        self.backoff = backoff
        self.limit = ConcurrencyLimit(concurrency)
        self.auth_failure: str | None = None  # once the key is refused, no further call is made with it
        self.unreachable: str | None = None  # once the API cannot be reached, no further call is made
        self._cancelled = threading.Event()
        self._halt = threading.Event()  # cancelled, key refused or API unreachable: backoff waits end at once
        self.client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"xi-api-key": api_key, "accept": self.mime},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=max(concurrency, 1) + 2),
        )

    def synthesize(self, text: str, voice_id: str, model_id: str) -> Synthesis:
        path = f"/v1/text-to-speech/{_segment(voice_id)}"
        body = {"text": text, "model_id": model_id}
        unreachable = 0  # attempts in a row whose connection failed outright
        for attempt in range(self.retries + 1):
            self._check()
            with self.limit:
                self._check()
                try:
                    resp = self.client.post(path, params={"output_format": self.output_format}, json=body)
                except httpx.TimeoutException:
                    failure, wait, unreachable = "timed out", None, 0
                except (httpx.ConnectError, httpx.ProxyError) as exc:
                    unreachable += 1
                    failure, wait = _why_unreachable(exc), UNREACHABLE_RETRY
                    if unreachable > 1 or attempt == self.retries:
                        self.unreachable = self.unreachable or (
                            f"cannot reach ElevenLabs at {self.host} ({failure}): check the network, "
                            "or [elevenlabs] base_url")
                        self._halt.set()
                        raise ProviderUnreachable(self.unreachable) from None
                except httpx.TransportError as exc:
                    failure, wait, unreachable = f"connection failed ({type(exc).__name__})", None, 0
                else:
                    if resp.status_code == 200:
                        return self._audio(resp)
                    failure, wait = self._failure(resp)
                    unreachable = 0
            if attempt == self.retries:
                break
            delay = wait if wait is not None else self.backoff * (2**attempt) * (0.5 + random.random() / 2)
            if self._halt.wait(min(delay, 60.0)):
                self._check()
        raise ProviderError(f"ElevenLabs failed after {self.retries + 1} attempts: {failure}")

    def _check(self) -> None:
        """Raise at once, with no request, when a request now could only fail or is no longer wanted."""
        if self._cancelled.is_set():
            raise ProviderError("cancelled")
        if self.auth_failure:
            raise ProviderAuthError(self.auth_failure)
        if self.unreachable:
            raise ProviderUnreachable(self.unreachable)

    def cancel(self) -> None:
        """Ctrl-C: no request starts after this (a retry included); a retry waiting in backoff gives up now.
        Requests already sent finish, so what they bring is stored whole."""
        self._cancelled.set()
        self._halt.set()
        self.limit.cancel()

    def _audio(self, resp: httpx.Response) -> Synthesis:
        if not resp.content:
            raise ProviderError("ElevenLabs returned an empty response")
        extra: dict = {}
        if rid := resp.headers.get("request-id"):
            extra["requestId"] = rid
        cost = resp.headers.get("character-cost")
        if cost and cost.isdigit():
            extra["characterCost"] = int(cost)
        return Synthesis(resp.content, self.mime, extra)

    def _failure(self, resp: httpx.Response) -> tuple[str, float | None]:
        """A retryable failure as (message, seconds to wait); raises for final ones."""
        status, detail = _detail(resp)
        code = resp.status_code
        if code == 401:
            self.auth_failure = f"ElevenLabs rejected the API key (401){': ' + detail if detail else ''}"
            self._halt.set()
            raise ProviderAuthError(self.auth_failure)
        if code == 429 or code >= 500:
            if status == "too_many_concurrent_requests":
                self.limit.lower()
            return f"HTTP {code}{' ' + status if status else ''}{': ' + detail if detail else ''}", _retry_after(resp)
        raise ProviderError(f"ElevenLabs refused the request ({code}){': ' + detail if detail else ''}")

    def close(self) -> None:
        self.client.close()


def _why_unreachable(exc: Exception) -> str:
    """What stopped the connection, from the exception chain: a few words, never a URL or a header."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, socket.gaierror):
            return "the host name does not resolve"
        if isinstance(cause, ssl.SSLError):
            return "the TLS handshake failed"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
    text = str(exc).lower()
    for needle, reason in (("name or service", "the host name does not resolve"),
                           ("temporary failure in name resolution", "the host name does not resolve"),
                           ("ssl", "the TLS handshake failed"), ("certificate", "the TLS handshake failed"),
                           ("refused", "connection refused"), ("unreachable", "network unreachable")):
        if needle in text:
            return reason
    return f"could not connect ({type(exc).__name__})"


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


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


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
