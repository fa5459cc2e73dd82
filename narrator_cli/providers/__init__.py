"""Speech providers behind one small interface, looked up by name.

Each provider module is imported only when that provider is used, so the
cache-hit path never loads httpx or ctypes.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple, Protocol

from ..errors import UsageError

NAMES = {"elevenlabs": "elevenlabs", "espeak": "espeak", "mock": "mock"}
DEFAULTS = {  # provider -> (default voice, default model): key parameters without an import
    "elevenlabs": (None, "eleven_flash_v2_5"),
    "espeak": ("en", "espeak-ng"),
    "mock": ("mock", "120"),
}


class Synthesis(NamedTuple):
    audio: bytes
    mime: str
    extra: dict = {}  # request id, characters billed, ...; never mutated


class Provider(Protocol):
    name: str

    def synthesize(self, text: str, voice_id: str, model_id: str) -> Synthesis: ...

    def close(self) -> None: ...


def key_params(provider: str, voice: str | None, model: str | None) -> tuple[str, str]:
    """The (voiceId, modelId) pair a line is keyed with, defaults filled in."""
    if provider not in DEFAULTS:
        raise UsageError(f"unknown provider {provider!r} (choose from {', '.join(sorted(NAMES))})")
    default_voice, default_model = DEFAULTS[provider]
    voice = voice or default_voice
    if not voice:
        raise UsageError(f"provider {provider!r} needs a voice: pass --voice or set voice in narrator.toml")
    return voice, model or default_model


def load(provider: str, settings: dict) -> Provider:
    if provider not in NAMES:
        raise UsageError(f"unknown provider {provider!r} (choose from {', '.join(sorted(NAMES))})")
    module = importlib.import_module(f".{NAMES[provider]}", __name__)
    return module.create(settings)
