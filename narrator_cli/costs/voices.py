"""Which voices a provider offers, and voice names where a voice id is expected (``--voice Rachel``).

A line's key holds the voice id, so a name has to become the id before any key is computed, and it has to
become the same id every time. ElevenLabs ids are 20+ letters and digits: such a value is used as it is,
without a request. Anything else is looked up by name in the account's voices list, which is kept for a
day in the user's cache folder (keyed by the API URL and a short hash of the key, never the key itself), so
repeated commands do not fetch it again; a name missing from a kept list fetches it once more, since a voice
may have been added since. When the list cannot be fetched at all, the value is taken as an id, and said.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, NamedTuple

from ..errors import ProviderAuthError, ProviderError, UsageError
from .kept import DAY, kept, kept_for_a_day

VOICES_CACHE = "elevenlabs-voices.json"
ID_LENGTH = 20  # ElevenLabs voice ids: 20 characters of [A-Za-z0-9]
LISTED = ("elevenlabs", "espeak", "mock")  # providers whose voices ``narrator voices`` lists
MOCK_VOICE = {"voiceId": "mock", "name": "mock", "category": "silent", "labels": {}, "languages": [],
              "previewUrl": None}


class Resolved(NamedTuple):
    voice_id: str
    note: str | None = None  # what to tell the user, once
    warning: bool = False  # the note is a warning: the value was taken as an id without checking


def looks_like_id(value: str) -> bool:
    """An ElevenLabs voice id by its shape (``21m00Tcm4TlvDq8ikWAM``): used as it is, with no request."""
    return len(value) >= ID_LENGTH and value.isascii() and value.isalnum()


def resolve_voice(settings: Any, value: str) -> Resolved:
    """The ElevenLabs voice id for ``value``, a voice id or a voice name (case-insensitive); UsageError for
    a name that is ambiguous or unknown (naming close matches), ProviderAuthError for a refused key."""
    if looks_like_id(value):
        return Resolved(value)
    section = settings.section("elevenlabs")
    if not str(section.get("api_key") or "").strip():
        return Resolved(value, f"voice {value!r} taken as a voice id: no ElevenLabs API key to look up voice "
                               "names with", True)
    try:
        voices, fresh = kept_voices(settings)
        found = _by_name(voices, value)
        if found is None and not fresh:  # a voice added since the list was kept
            voices, _ = kept_voices(settings, refresh=True)
            found = _by_name(voices, value)
    except ProviderAuthError:
        raise
    except ProviderError as exc:
        return Resolved(value, f"voice {value!r} taken as a voice id: the ElevenLabs voices list could not be "
                               f"fetched ({exc})", True)
    if found is None:
        raise _unknown(voices, value)
    if len(found) > 1:
        listed = ", ".join(f"{v['name']} ({v['voiceId']}, {v.get('category') or 'no category'})" for v in found)
        raise UsageError(f"the voice name {value!r} is ambiguous: {listed}; give the voice id")
    voice = found[0]
    if voice["voiceId"] == value:
        return Resolved(value)
    return Resolved(voice["voiceId"], f"voice {value!r} is {voice['voiceId']}")


def _by_name(voices: list[dict], value: str) -> list[dict] | None:
    """The voice whose id is ``value``, else those named ``value`` (any case); None when there is none."""
    exact = [v for v in voices if v["voiceId"] == value]
    if exact:
        return exact[:1]
    wanted = value.strip().casefold()
    return [v for v in voices if v["name"].strip().casefold() == wanted] or None


def _unknown(voices: list[dict], value: str) -> UsageError:
    import difflib

    names: dict[str, list[dict]] = {}
    for v in voices:
        names.setdefault(v["name"].strip().casefold(), []).append(v)
    close = difflib.get_close_matches(value.strip().casefold(), list(names), n=3, cutoff=0.6)
    near = [f"{v['name']} ({v['voiceId']})" for name in close for v in names[name]]
    hint = f"close matches: {', '.join(near)}" if near else f"{len(voices)} voices in the account"
    return UsageError(f"no ElevenLabs voice named {value!r} ({hint}); see narrator voices --provider elevenlabs")


def kept_voices(settings: Any, refresh: bool = False) -> tuple[list[dict], bool]:
    """(the account's voices as ``Voice.as_dict`` rows, fresh): the day-old list when there is one (unless
    ``refresh``), else the API's, which is then kept."""
    section = settings.section("elevenlabs")
    digest = hashlib.sha256(str(section.get("api_key") or "").strip().encode()).hexdigest()[:16]
    key = f"{str(section.get('base_url') or 'default').rstrip('/')} {digest}"
    if not refresh and (voices := _checked(kept(VOICES_CACHE, key))) is not None:
        return voices, False
    from .account import open_account

    def fetch() -> list[dict]:
        account = open_account(settings)
        try:
            return [v.as_dict() for v in account.voices()]
        finally:
            account.close()

    value, fresh = kept_for_a_day(VOICES_CACHE, key, fetch, 0.0 if refresh else DAY)
    voices = _checked(value)
    if voices is None:  # a kept file of another shape (edited by hand, an older version): fetch again
        value, fresh = kept_for_a_day(VOICES_CACHE, key, fetch, 0.0)
        voices = _checked(value) or []
    return voices, fresh


def _checked(value: object) -> list[dict] | None:
    if not isinstance(value, list) or not all(isinstance(v, dict) and isinstance(v.get("voiceId"), str)
                                              and isinstance(v.get("name"), str) for v in value):
        return None
    return value


def voices_of(settings: Any, provider: str) -> list[dict]:
    """What ``provider`` offers, one ``Voice.as_dict`` row each; ElevenLabs' list is fetched (and kept)."""
    if provider == "elevenlabs":
        return kept_voices(settings, refresh=True)[0]
    if provider == "espeak":
        from ..providers.espeak import installed_voices

        return [{"voiceId": v.voice_id, "name": v.name, "category": "espeak-ng",
                 "labels": {"gender": v.gender} if v.gender else {}, "languages": v.languages, "previewUrl": None}
                for v in installed_voices()]
    if provider == "mock":
        return [dict(MOCK_VOICE)]
    from ..providers import NAMES

    if provider not in NAMES:
        raise UsageError(f"unknown provider {provider!r} (choose from {', '.join(sorted(NAMES))})")
    raise UsageError(f"narrator voices lists the voices of {', '.join(LISTED)}, not {provider!r}: "
                     f"a {provider} voice id is given as it is (--voice ID)")


def matching(voices: list[dict], search: str) -> list[dict]:
    """The voices each word of ``search`` finds (any case): a word matches the start of a word of the
    voice's name, id, label values or languages ("brit" finds british, "us" finds en-US, "male" not female)."""
    wanted = search.casefold().split()
    return [v for v in voices if all(any(word.startswith(w) for word in _words(v)) for w in wanted)]


def _words(voice: dict) -> set[str]:
    fields = [voice.get("name"), voice.get("voiceId"), *(voice.get("labels") or {}).values(),
              *(voice.get("languages") or [])]
    words: set[str] = set()
    for field in fields:
        for whole in re.split(r"[\s,;:()/=]+", str(field or "").casefold()):
            if whole:
                words.add(whole)
                words.update(p for p in re.split(r"[-_.]+", whole) if p)
    return words


def subscription(settings: Any) -> Any:
    """The ElevenLabs account's ``Subscription`` (tier, characters used and allowed, reset time)."""
    from .account import open_account

    account = open_account(settings)
    try:
        return account.subscription()
    finally:
        account.close()
