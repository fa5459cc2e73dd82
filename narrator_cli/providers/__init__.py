"""Speech providers behind one small interface, looked up by name.

Each provider module is imported only when that provider is used, so the
cache-hit path never loads httpx, ctypes or the MP3 encoder. What a line is
keyed with is checked here, before any key is computed: a model or voice the
provider would ignore or replace would otherwise store the same audio again
under another key.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple, Protocol

from .. import motion_canvas as mc
from ..errors import UsageError

NAMES = {"elevenlabs": "elevenlabs", "espeak": "espeak", "minimax": "minimax", "mock": "mock"}
DEFAULTS = {  # provider -> (default voice, default model): key parameters without an import
    "elevenlabs": (None, mc.ELEVENLABS_MODEL),
    "espeak": ("en", "espeak-ng"),
    "minimax": (None, mc.MINIMAX_MODEL),
    "mock": ("mock", str(mc.MOCK_WORDS_PER_MINUTE)),
}
FORMATS = ("mp3", "wav")  # what the offline voices write; MP3 is what the Motion Canvas plugin looks for
WORD_TIMINGS = {"elevenlabs", "espeak", "mock"}  # providers whose audio comes with word timings
FORMAT_KEYED = {"minimax"}  # providers whose key has the format as a third parameter (motion_canvas.FACTORIES)


class Synthesis(NamedTuple):
    audio: bytes
    mime: str
    extra: dict = {}  # request id, characters billed, ...; never mutated
    words: list | None = None  # captions.words.Word for each word of the line, when the provider knows them


class Provider(Protocol):
    name: str

    def synthesize(self, text: str, voice_id: str, model_id: str) -> Synthesis:
        """A provider in ``FORMAT_KEYED`` also takes the line's format as a fourth argument."""

    def cancel(self) -> None:
        """Ctrl-C: start no new request (nor retry) after this; a retry waiting in backoff gives up at once."""

    def close(self) -> None: ...


def line_params(settings: Any) -> tuple[str, ...]:
    """What ``key_params`` takes, from resolved settings (``[PROVIDER] format`` before ``format``)."""
    provider = settings.provider
    fmt = settings.get(f"{provider}.format") or settings.get("format")
    return key_params(provider, settings.get("voice"), settings.get("model"), fmt)


def key_params(provider: str, voice: str | None, model: str | None, fmt: object = None) -> tuple[str, ...]:
    """The key parameters of a line, defaults filled in: (voiceId, modelId), plus the format for a provider
    in ``FORMAT_KEYED`` (the plugin keys MiniMax lines with it); UsageError for one the provider cannot honour
    (``None`` means unset, an empty string is a mistake)."""
    if provider not in DEFAULTS:
        raise UsageError(f"unknown provider {provider!r} (choose from {', '.join(sorted(NAMES))})")
    default_voice, default_model = DEFAULTS[provider]
    for what, value in (("voice", voice), ("model", model)):
        if value is not None and not _printable(value):
            raise UsageError(f"the {what} id {value!r} has a control character or bytes that are not UTF-8")
    if voice is not None and not voice.strip():
        example = f" (e.g. {default_voice})" if default_voice else ""
        raise UsageError(f"empty voice: give the {provider} provider a voice id{example} or leave --voice unset")
    voice = voice or default_voice
    if not voice:
        raise UsageError(f"provider {provider!r} needs a voice: pass --voice or set voice in narrator.toml")
    model = default_model if model is None else model
    if provider == "espeak" and model != default_model:
        raise UsageError(f"espeak has one model, {default_model!r}; got {model!r} (leave --model unset)")
    if provider == "mock":
        from .mock import parse_rate

        parse_rate(model)
    if not model.strip():
        raise UsageError(f"empty model: give the {provider} provider a model id (e.g. {default_model}) "
                         "or leave --model unset")
    if provider in FORMAT_KEYED:
        return voice, model, minimax_format(fmt)
    return voice, model


def minimax_format(value: object) -> str:
    """MiniMax's audio format (MP3 unless set). It can also make FLAC, which the cache does not store
    (nor play in the editor): refused rather than kept under a name that lies."""
    if value == "flac":
        raise UsageError("the minimax format 'flac' is not supported: the cache stores mp3 and wav "
                         "(the Motion Canvas plugin finds only mp3)")
    return _checked_format(value, mc.MINIMAX_FORMAT, " for minimax")


def _checked_format(value: object, default: str, who: str) -> str:
    if value is None:
        return default
    if value not in FORMATS:
        raise UsageError(f"unknown audio format {value!r}{who} (choose from {', '.join(FORMATS)})")
    return str(value)


def _printable(text: str) -> bool:
    """No control characters and no lone surrogates (undecodable bytes on the command line)."""
    return text.isprintable() or all(" " <= c != "\x7f" and not "\ud800" <= c <= "\udfff" for c in text)


def audio_format(settings: dict) -> str:
    """The ``format`` setting an offline voice writes (MP3 unless set); UsageError for any other value."""
    return _checked_format(settings.get("format"), "mp3", "")


def load(provider: str, settings: dict) -> Provider:
    if provider not in NAMES:
        raise UsageError(f"unknown provider {provider!r} (choose from {', '.join(sorted(NAMES))})")
    module = importlib.import_module(f".{NAMES[provider]}", __name__)
    return module.create(settings)
