"""The account side of the ElevenLabs API: voices, subscription (quota), models (what a character costs) and
the history of audio already paid for.

Same key, URL checks, retries (429 with ``Retry-After``, 5xx), refusals (401: one line, exit 2) and errors as
the provider, since it is the provider's HTTP loop. A reply of the wrong shape is a ProviderError naming the
endpoint, never a traceback. The models list changes rarely and is read on every dry run, so it is kept for a
day in the user's cache folder (per API URL; it holds no secret).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import httpx

from ..errors import ProviderError
from ..providers.elevenlabs import DEFAULT_BASE_URL, ElevenLabsProvider
from ..providers.http_api import Retry
from .kept import DAY, kept_for_a_day  # noqa: F401 - also this module's API
from .ledger import count_or_none

MODELS_CACHE = "elevenlabs-models.json"
PAGE_SIZE = 1000  # the most the history endpoint gives per page


class Voice(NamedTuple):
    voice_id: str
    name: str
    category: str
    labels: dict
    languages: list[str]
    preview_url: str | None

    def as_dict(self) -> dict:
        return {"voiceId": self.voice_id, "name": self.name, "category": self.category, "labels": self.labels,
                "languages": self.languages, "previewUrl": self.preview_url}


class Subscription(NamedTuple):
    tier: str
    used: int  # characters used this period
    limit: int  # characters allowed this period
    resets_at: int | None  # unix time

    @property
    def left(self) -> int:
        return max(0, self.limit - self.used)

    def as_dict(self) -> dict:
        return {"tier": self.tier, "charactersUsed": self.used, "characterLimit": self.limit,
                "charactersLeft": self.left, "resetsAt": self.resets_at}


class HistoryPage(NamedTuple):
    items: list[dict]  # the API's history items, as it sends them
    last_id: str | None  # start_after_history_item_id for the next page
    has_more: bool


class Account(ElevenLabsProvider):
    """GETs on the account's endpoints, through the provider's request loop."""

    def _get(self, what: str, path: str, params: dict | None = None) -> Any:
        """The JSON of a GET (``what``: the endpoint's name, for messages)."""
        def answer(resp: httpx.Response) -> Any:
            if resp.status_code != 200:
                return self._failure(resp)
            try:
                return resp.json()
            except ValueError:
                raise ProviderError(f"ElevenLabs answered {what} with something that is not JSON") from None

        return self._call(lambda: self.client.get(path, params=params), answer)

    def voices(self) -> list[Voice]:
        body = self._get("the voices list", "/v1/voices")
        raw = body.get("voices") if isinstance(body, dict) else None
        if not isinstance(raw, list):
            raise ProviderError("ElevenLabs answered the voices list without a list of voices")
        return [v for v in map(_voice, raw) if v is not None]

    def subscription(self) -> Subscription:
        body = self._get("the subscription", "/v1/user/subscription")
        if not isinstance(body, dict) or not all(count_or_none(body.get(k)) is not None
                                                 for k in ("character_count", "character_limit")):
            raise ProviderError("ElevenLabs answered the subscription without its character counts")
        reset = count_or_none(body.get("next_character_count_reset_unix"))
        return Subscription(str(body.get("tier") or "unknown"), count_or_none(body["character_count"]) or 0,
                            count_or_none(body["character_limit"]) or 0, reset)

    def multipliers(self) -> dict[str, float]:
        """model id -> characters billed per character of text (``model_rates.character_cost_multiplier``)."""
        body = self._get("the models list", "/v1/models")
        if not isinstance(body, list):
            raise ProviderError("ElevenLabs answered the models list without a list")
        out: dict[str, float] = {}
        for model in body:
            if not isinstance(model, dict) or not isinstance(model.get("model_id"), str):
                continue
            rates = model.get("model_rates")
            factor = rates.get("character_cost_multiplier") if isinstance(rates, dict) else None
            if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not 0 <= factor <= 100:
                factor = model.get("token_cost_factor")
            if isinstance(factor, (int, float)) and not isinstance(factor, bool) and 0 <= factor <= 100:
                out[model["model_id"]] = float(factor)
        return out

    def history(self, after: str | None = None, page_size: int = PAGE_SIZE, voice_id: str | None = None,
                model_id: str | None = None, since: int | None = None) -> HistoryPage:
        """One page of generated items, newest first (``after``: the last id of the page before)."""
        params: dict[str, Any] = {"page_size": page_size}
        for name, value in (("start_after_history_item_id", after), ("voice_id", voice_id),
                            ("model_id", model_id), ("date_after_unix", since)):
            if value is not None:
                params[name] = value
        body = self._get("the history", "/v1/history", params)
        items = body.get("history") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise ProviderError("ElevenLabs answered the history without a list of items")
        last = body.get("last_history_item_id")
        return HistoryPage([i for i in items if isinstance(i, dict)], last if isinstance(last, str) else None,
                           body.get("has_more") is True)

    def history_audio(self, item_id: str) -> tuple[bytes, str]:
        """(audio, its content type) of a history item."""
        from urllib.parse import quote

        def answer(resp: httpx.Response) -> tuple[bytes, str] | Retry:
            if resp.status_code != 200:
                return self._failure(resp)
            if not resp.content:
                raise ProviderError(f"ElevenLabs sent no audio for history item {item_id}")
            return resp.content, resp.headers.get("content-type", "").split(";")[0].strip().lower()

        path = f"/v1/history/{quote(item_id, safe='')}/audio"
        return self._call(lambda: self.client.get(path, headers={"accept": "*/*"}), answer)


def _voice(raw: object) -> Voice | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("voice_id"), str) or not raw["voice_id"]:
        return None
    languages: list[str] = []
    tuning = raw.get("fine_tuning")
    if isinstance(tuning, dict) and isinstance(tuning.get("language"), str):
        languages.append(tuning["language"])
    for verified in raw.get("verified_languages") or []:
        if isinstance(verified, dict) and isinstance(verified.get("language"), str):
            languages.append(verified["language"])
    labels = raw.get("labels") if isinstance(raw.get("labels"), dict) else {}
    preview = raw.get("preview_url")
    return Voice(raw["voice_id"], str(raw.get("name") or ""), str(raw.get("category") or ""),
                 {str(k): str(v) for k, v in labels.items()}, list(dict.fromkeys(languages)),
                 preview if isinstance(preview, str) else None)


def open_account(settings: Any) -> Account:
    """The account of the ElevenLabs settings (``[elevenlabs]``, ``ELEVENLABS_API_KEY``, ...)."""
    section = settings.section("elevenlabs") if hasattr(settings, "section") else dict(settings)
    return Account(api_key=str(section.get("api_key") or ""),
                   base_url=str(section.get("base_url") or DEFAULT_BASE_URL),
                   timeout=float(section.get("timeout", 30.0)),  # type: ignore[arg-type]
                   retries=int(section.get("retries", 4)),  # type: ignore[call-overload]
                   concurrency=int(section.get("concurrency", 8)))  # type: ignore[call-overload]


def models_key(settings: Any) -> str:
    """What the kept models list is kept under: the API's URL (the list is the same for every key)."""
    return str(settings.section("elevenlabs").get("base_url") or DEFAULT_BASE_URL).rstrip("/")


def model_multipliers(settings: Any) -> dict[str, float]:
    """The models' character multipliers, from the day-old copy when there is one, else from the API."""

    def fetch() -> dict[str, float]:
        account = open_account(settings)
        try:
            return account.multipliers()
        finally:
            account.close()

    value, _ = kept_for_a_day(MODELS_CACHE, models_key(settings), fetch)
    return {str(k): float(v) for k, v in value.items()} if isinstance(value, dict) else {}
