"""What the paid HTTP providers share: checking their key and URL, and the request loop.

The loop retries what the provider says is worth retrying (429, 5xx, their own
rate-limit codes) with exponential backoff that honours ``Retry-After``. An API
that cannot be reached at all (refused, DNS, TLS) gets one quick retry, then
ProviderUnreachable, and the provider makes no further request: retrying every
line of a batch with no network would take minutes to say the same thing. A
refused key stops every further call too. ``cancel`` (Ctrl-C) starts no new
request, a retry included. Keys travel in headers and never appear in a message.
"""

from __future__ import annotations

import functools
import random
import socket
import ssl
import threading
from collections.abc import Callable
from typing import NamedTuple, TypeVar

import httpx

from ..errors import ProviderAuthError, ProviderError, ProviderUnreachable, UsageError

UNREACHABLE_RETRY = 0.5  # seconds before the one retry of a connection that failed outright
MAX_WAIT = 60.0  # seconds, the longest backoff or Retry-After honoured
T = TypeVar("T")


class Retry(NamedTuple):
    """A failure worth another try: what to say if it is the last, and how long the API asks us to wait."""

    message: str
    wait: float | None = None


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One verifying context for every client of the process (httpx's default trust: certifi's bundle). Loading
    the bundle takes ~35 ms, and a paid batch opens up to three clients (the provider, its quota, its models)."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def checked_key(api_key: str, service: str, where: str) -> str:
    """The key, stripped (a pasted key often ends in a newline; h11 refuses such a header value)."""
    api_key = api_key.strip()
    if not api_key:
        raise UsageError(f"the {service.lower()} provider needs an API key: set {where} (never in narrator.toml)")
    if not all("!" <= c <= "~" for c in api_key):  # else httpx fails late and misleadingly, key unnamed
        raise UsageError(f"the {service} API key is malformed (spaces or non-ASCII characters): check {where}")
    return api_key


def checked_host(url: str, what: str, where: str) -> str:
    """``host[:port]`` of an http(s) URL, for messages (never its userinfo); UsageError for anything else."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise UsageError(f"the {what} must be an http:// or https:// URL with a host: check {where}")
    return parsed.host if parsed.port is None else f"{parsed.host}:{parsed.port}"


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


class HttpApi:
    """A provider behind an HTTP API: subclasses send one request and read one answer."""

    service = "the API"  # for messages: "ElevenLabs", "MiniMax"
    url_setting = ""  # the setting that names the URL, for the unreachable message

    def __init__(self, host: str, retries: int, backoff: float, concurrency: int) -> None:
        self.host = host
        self.retries = retries
        self.backoff = backoff
        self.limit = ConcurrencyLimit(concurrency)
        self.auth_failure: str | None = None  # once the key is refused, no further call is made with it
        self.unreachable: str | None = None  # once the API cannot be reached, no further call is made
        self._cancelled = threading.Event()
        self._halt = threading.Event()  # cancelled, key refused or API unreachable: backoff waits end at once

    def _call(self, send: Callable[[], httpx.Response], answer: Callable[[httpx.Response], T | Retry]) -> T:
        """``send`` a request until ``answer`` makes a result of it (audio, a page of the account's data),
        raises, or the retries run out."""
        unreachable = 0  # attempts in a row whose connection failed outright
        failure = ""
        for attempt in range(self.retries + 1):
            self._check()
            with self.limit:
                self._check()
                wait: float | None = None
                try:
                    resp = send()
                except httpx.TimeoutException:
                    failure, unreachable = "timed out", 0
                except (httpx.ConnectError, httpx.ProxyError) as exc:
                    unreachable += 1
                    failure, wait = why_unreachable(exc), UNREACHABLE_RETRY
                    if unreachable > 1 or attempt == self.retries:
                        self.unreachable = self.unreachable or (
                            f"cannot reach {self.service} at {self.host} ({failure}): check the network, "
                            f"or {self.url_setting}")
                        self._halt.set()
                        raise ProviderUnreachable(self.unreachable) from None
                except httpx.TransportError as exc:
                    failure, unreachable = f"connection failed ({type(exc).__name__})", 0
                else:
                    unreachable = 0
                    result = answer(resp)
                    if not isinstance(result, Retry):
                        return result
                    failure, wait = result
            if attempt == self.retries:
                break
            delay = wait if wait is not None else self.backoff * (2**attempt) * (0.5 + random.random() / 2)
            if self._halt.wait(min(delay, MAX_WAIT)):
                self._check()
        raise ProviderError(f"{self.service} failed after {self.retries + 1} attempts: {failure}")

    def _check(self) -> None:
        """Raise at once, with no request, when a request now could only fail or is no longer wanted."""
        if self._cancelled.is_set():
            raise ProviderError("cancelled")
        if self.auth_failure:
            raise ProviderAuthError(self.auth_failure)
        if self.unreachable:
            raise ProviderUnreachable(self.unreachable)

    def _refuse(self, message: str) -> None:
        """The key is refused (or the account empty): this call and every later one fail."""
        self.auth_failure = message
        self._halt.set()
        raise ProviderAuthError(message)

    def cancel(self) -> None:
        """Ctrl-C: no request starts after this (a retry included); a retry waiting in backoff gives up now.
        Requests already sent finish, so what they bring is stored whole."""
        self._cancelled.set()
        self._halt.set()
        self.limit.cancel()


def why_unreachable(exc: Exception) -> str:
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


def retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
