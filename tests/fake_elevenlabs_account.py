"""The account side of the ElevenLabs stand-in (``FakeElevenLabs.account``): voices, subscription, models and
the history of generated audio, answered in the real API's shapes.

``GET /v1/voices`` -> ``{"voices": [...]}`` (voice_id, name, category, labels, description, preview_url,
fine_tuning.language, verified_languages). ``GET /v1/user/subscription`` -> tier, character_count,
character_limit, next_character_count_reset_unix, status, ... ``GET /v1/models`` -> a list of models with
``model_rates.character_cost_multiplier``. ``GET /v1/history`` -> ``{"history": [...], "last_history_item_id",
"has_more"}``, newest first, paged with ``page_size`` (1 to 1000, default 100; else 422) and
``start_after_history_item_id`` (an unknown id: 400), filtered by ``voice_id``, ``model_id``,
``date_after_unix`` (inclusive) and ``source``. ``GET /v1/history/{id}/audio`` -> the item's audio bytes
(404 for an unknown id, and for an id in ``fake.account.missing_audio``; bytes that are not audio, still
labelled as the item's type, for an id in ``fake.account.broken_audio``). Every one needs the API key (401
otherwise) and takes scripted replies like the POSTs (``fake.script(system_busy(retry_after=1))`` answers the
next request, whichever it is), and ``latency`` applies to each.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, NamedTuple

try:
    from audio_fixtures import make_mp3, make_ogg_opus
except ImportError:  # imported as part of a ``tests`` package
    from .audio_fixtures import make_mp3, make_ogg_opus  # type: ignore[no-redef]

VOICES = [
    {"voice_id": "21m00Tcm4TlvDq8ikWAM", "name": "Rachel", "category": "premade",
     "labels": {"accent": "american", "age": "young", "gender": "female", "use_case": "narration"},
     "description": "Calm narration.", "fine_tuning": {"language": "en"},
     "verified_languages": [{"language": "en", "model_id": "eleven_multilingual_v2", "accent": "american"}]},
    {"voice_id": "JBFqnCBsd6RMkjVDRZzb", "name": "George", "category": "premade",
     "labels": {"accent": "british", "age": "middle aged", "gender": "male", "use_case": "narration"},
     "description": "Warm storyteller.", "fine_tuning": {"language": "en"},
     "verified_languages": [{"language": "en", "model_id": "eleven_multilingual_v2", "accent": "british"},
                            {"language": "fr", "model_id": "eleven_multilingual_v2", "accent": "standard"}]},
    {"voice_id": "EXAVITQu4vr4xnSDxMaL", "name": "Sarah", "category": "premade",
     "labels": {"accent": "american", "age": "young", "gender": "female", "use_case": "news"},
     "description": "Soft news voice.", "fine_tuning": {"language": "en"}, "verified_languages": []},
    {"voice_id": "pqHfZKP75CvOlQylNhV4", "name": "Bill", "category": "premade",
     "labels": {"accent": "american", "age": "old", "gender": "male", "use_case": "narration"},
     "description": "Trustworthy.", "fine_tuning": {"language": "en"}, "verified_languages": []},
    {"voice_id": "Zm9vYmFyYmF6cXV4MDAwMDAw", "name": "Bill", "category": "cloned",
     "labels": {}, "description": "My own Bill.", "fine_tuning": {"language": None}, "verified_languages": []},
]
MODELS = [
    {"model_id": "eleven_multilingual_v2", "name": "Eleven Multilingual v2", "can_do_text_to_speech": True,
     "token_cost_factor": 1.0, "model_rates": {"character_cost_multiplier": 1.0},
     "languages": [{"language_id": "en", "name": "English"}], "max_characters_request_free_user": 2500},
    {"model_id": "eleven_flash_v2_5", "name": "Eleven Flash v2.5", "can_do_text_to_speech": True,
     "token_cost_factor": 0.5, "model_rates": {"character_cost_multiplier": 0.5},
     "languages": [{"language_id": "en", "name": "English"}], "max_characters_request_free_user": 2500},
    {"model_id": "eleven_turbo_v2_5", "name": "Eleven Turbo v2.5", "can_do_text_to_speech": True,
     "token_cost_factor": 0.5, "model_rates": {"character_cost_multiplier": 0.5},
     "languages": [{"language_id": "en", "name": "English"}], "max_characters_request_free_user": 2500},
    {"model_id": "eleven_multilingual_sts_v2", "name": "Multilingual STS", "can_do_text_to_speech": False,
     "token_cost_factor": 1.0, "model_rates": {"character_cost_multiplier": 1.0}, "languages": []},
]
HISTORY_PREFIX = "/v1/history"


class HistoryItem(NamedTuple):
    history_item_id: str
    request_id: str
    voice_id: str
    model_id: str | None
    text: str
    date_unix: int
    characters: int
    content_type: str = "audio/mpeg"
    source: str = "TTS"
    state: str = "created"
    seconds: float = 1.0

    def as_json(self) -> dict:
        voice = next((v for v in VOICES if v["voice_id"] == self.voice_id), {})
        return {"history_item_id": self.history_item_id, "request_id": self.request_id,
                "voice_id": self.voice_id, "model_id": self.model_id, "voice_name": voice.get("name"),
                "voice_category": voice.get("category"), "text": self.text, "date_unix": self.date_unix,
                "character_count_change_from": 10_000, "character_count_change_to": 10_000 + self.characters,
                "content_type": self.content_type, "state": self.state, "settings": {}, "feedback": None,
                "share_link_id": None, "source": self.source, "alignments": None, "dialogue": None}


class Account:
    """What the fake's account holds; tests change it freely (``voices``, ``models``, ``subscription``,
    ``add_history``)."""

    def __init__(self) -> None:
        self.voices: list[dict] = [dict(v, preview_url=f"https://example.invalid/{v['voice_id']}.mp3")
                                   for v in VOICES]
        self.models: list[dict] = [dict(m) for m in MODELS]
        self.subscription: dict = {
            "tier": "creator", "character_count": 12_345, "character_limit": 100_000,
            "can_extend_character_limit": True, "allowed_to_extend_character_limit": True,
            "next_character_count_reset_unix": 1_767_225_600, "voice_limit": 30, "status": "active",
            "currency": "usd", "billing_period": "monthly_period"}
        self.history: list[HistoryItem] = []  # newest first, as the API lists it
        self._audio: dict[str, bytes] = {}
        self.missing_audio: set[str] = set()  # history item ids whose audio answers 404
        self.broken_audio: set[str] = set()  # history item ids whose audio is bytes that do not play
        self._lock = threading.Lock()

    def add_history(self, text: str, voice_id: str = "21m00Tcm4TlvDq8ikWAM",
                    model_id: str | None = "eleven_multilingual_v2", *, date_unix: int | None = None,
                    content_type: str = "audio/mpeg", source: str = "TTS", state: str = "created",
                    seconds: float | None = None) -> HistoryItem:
        """A generated item, newer than every other; its audio is real MP3 (or Ogg Opus) frames."""
        with self._lock:
            newest = self.history[0].date_unix if self.history else int(time.time()) - 86_400
            item = HistoryItem(uuid.uuid4().hex[:20], uuid.uuid4().hex, voice_id, model_id, text,
                               date_unix if date_unix is not None else newest + 1, len(text), content_type,
                               source, state, seconds if seconds is not None else max(0.3, 0.06 * len(text)))
            self.history.insert(0, item)
            return item

    def audio(self, item: HistoryItem) -> bytes:
        with self._lock:
            if item.history_item_id not in self._audio:
                make = make_ogg_opus if item.content_type == "audio/ogg" else make_mp3
                self._audio[item.history_item_id] = make(item.seconds)
            return self._audio[item.history_item_id]

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, Any, dict, bytes | None]:
        """(status, JSON body, headers, raw bytes or None) for an authorised GET."""
        if path == "/v1/voices":
            return 200, {"voices": self.voices}, {}, None
        if path == "/v1/user/subscription":
            return 200, self.subscription, {}, None
        if path == "/v1/models":
            return 200, self.models, {}, None
        if path == HISTORY_PREFIX:
            return self._page(query)
        if path.startswith(HISTORY_PREFIX + "/") and path.endswith("/audio"):
            item_id = path[len(HISTORY_PREFIX) + 1:-len("/audio")]
            item = next((i for i in self.history if i.history_item_id == item_id), None)
            if item is not None and item_id in self.broken_audio:
                return 200, None, {"Content-Type": item.content_type}, b"<html>not audio at all</html>" * 20
            if item is None or item_id in self.missing_audio:
                return 404, {"detail": {"status": "history_item_not_found", "message": "History item not found"}}, \
                    {}, None
            return 200, None, {"Content-Type": item.content_type}, self.audio(item)
        return 404, {"detail": "Not Found"}, {}, None

    def _page(self, query: dict[str, str]) -> tuple[int, Any, dict, bytes | None]:
        try:
            size = int(query.get("page_size", "100"))
        except ValueError:
            size = 0
        if not 1 <= size <= 1000:
            return 422, {"detail": [{"loc": ["query", "page_size"], "msg": "must be from 1 to 1000",
                                     "type": "value_error"}]}, {}, None
        items = list(self.history)
        after = query.get("start_after_history_item_id")
        if after:
            at = next((n for n, i in enumerate(items) if i.history_item_id == after), None)
            if at is None:
                return 400, {"detail": {"status": "invalid_history_item_id",
                                        "message": "start_after_history_item_id is not a history item"}}, {}, None
            items = items[at + 1:]
        for name in ("voice_id", "model_id", "source"):
            if query.get(name):
                items = [i for i in items if getattr(i, name) == query[name]]
        if query.get("date_after_unix"):
            items = [i for i in items if i.date_unix >= int(query["date_after_unix"])]
        page = items[:size]
        return 200, {"history": [i.as_json() for i in page],
                     "last_history_item_id": page[-1].history_item_id if page else None,
                     "has_more": len(items) > size}, {}, None
