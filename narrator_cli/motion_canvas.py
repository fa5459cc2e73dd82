"""What the Motion Canvas narrator (motion-canvas-narrator, its factories and its Vite plugin) does,
as read from its source (src/factories.ts, src/providers/*.ts, src/vite-plugin/plugin.ts) and checked
against a running copy. Every other module asks here rather than repeating a fact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

# src/vite-plugin/plugin.ts: `audioPath = 'narrator-cache'` (its README says './audio-cache'), relative to
# the folder Vite runs in; replies carry `filePath: '/' + path.join(audioPath, fileName)`; check-audio looks
# only for `{key}.mp3`; `maxFileSize` is in MiB; `narrator:available` answers `{}`.
PLUGIN_FOLDER = "narrator-cache"
PLUGIN_FACTORY = "motionCanvasNarratorPlugin"
PLUGIN_MIME_TYPES = ("audio/mpeg", "audio/wav", "audio/ogg", "audio/mp3")
# src/utils/AudioCache.ts: the editor's browser uploads every line as `audio/mpeg` whatever its bytes are,
# with metadata `{generatedAt}` only.

# The providers' defaults for their key parameters (src/providers/*.ts).
ELEVENLABS_MODEL = "eleven_flash_v2_5"
MINIMAX_MODEL = "speech-2.6-turbo"
MINIMAX_FORMAT = "mp3"
MOCK_WORDS_PER_MINUTE = 120
FILE_DIRECTORY = "default"


class Factory(NamedTuple):
    """A narrator factory: which provider of ours speaks its lines, and its key parameters
    (``AudioUtils.generateAudioId(text, params)``) from the literal options it was called with."""

    provider: str  # ours: elevenlabs, minimax, mock, or "file" (recordings, which speak cannot make)
    key_params: Callable[[dict], list[str]]


def js_string(value: object) -> str:
    """``String(value)`` / ``Array.prototype.join`` of a literal option as JavaScript would write it
    (``join`` writes undefined and null as empty strings)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return js_number(float(value))
    return str(value)


def js_number(x: float) -> str:
    """``Number.prototype.toString()`` for the numbers an option holds: 120 -> "120", 0.5 -> "0.5"."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == int(x) and abs(x) < 1e21:
        return str(int(x))
    text = repr(x)  # shortest round-trip digits, as JavaScript picks them
    if "e" in text:
        mantissa, exp = text.split("e")
        exponent = int(exp)
        if -7 < exponent < 21:
            return format(x, "f").rstrip("0").rstrip(".")
        return f"{mantissa}e{'+' if exponent > 0 else '-'}{abs(exponent)}"
    return text


def _or(value: object, default: str) -> object:
    """JavaScript ``value || default``: any falsy value (undefined, null, "", 0, false, NaN) falls back."""
    falsy = value is None or value == "" or value is False or value == 0 or (
        isinstance(value, float) and math.isnan(value))
    return default if falsy else value


def _nullish(value: object, default: str) -> object:
    """JavaScript ``value ?? default``: only undefined and null fall back."""
    return default if value is None else value


FACTORIES: dict[str, Factory] = {
    # ElevenLabsProvider: modelId = config.modelId || 'eleven_flash_v2_5'; key [voiceId, modelId]
    "createElevenLabsNarrator": Factory("elevenlabs", lambda o: [
        js_string(o.get("voiceId")), js_string(_or(o.get("modelId"), ELEVENLABS_MODEL))]),
    # MinimaxProvider: key [voiceId, model ?? 'speech-2.6-turbo', format ?? 'mp3']
    "createMinimaxNarrator": Factory("minimax", lambda o: [
        js_string(o.get("voiceId")), js_string(_nullish(o.get("model"), MINIMAX_MODEL)),
        js_string(_nullish(o.get("format"), MINIMAX_FORMAT))]),
    # MockProvider(wordsPerMinute = 120): key ['mock', wordsPerMinute.toString()]
    "createMockNarrator": Factory("mock", lambda o: [
        "mock", js_string(_nullish(o.get("wordsPerMinute"), MOCK_WORDS_PER_MINUTE))]),
    # FileProvider: key ['file', audioDirectory || 'default']
    "createFileNarrator": Factory("file", lambda o: ["file", js_string(_or(o.get("audioDirectory"), FILE_DIRECTORY))]),
}

# The options each factory's key parameters are read from (the lambdas above; src/factories.ts passes the
# factory's config to its provider, whose constructor reads these names): what `narrator scan` must know.
KEY_OPTIONS: dict[str, tuple[str, ...]] = {
    "createElevenLabsNarrator": ("voiceId", "modelId"),
    "createMinimaxNarrator": ("voiceId", "model", "format"),
    "createMockNarrator": ("wordsPerMinute",),
    "createFileNarrator": ("audioDirectory",),
}
# The narrator's method that speaks a line (src/Narrator.ts: `speak(text | NarrationOptions, ...)`, where
# NarrationOptions holds the line as `text`).
SPEAK_METHOD = "speak"
SPEAK_TEXT_OPTION = "text"

# MinimaxProvider's defaults for the request (the key uses only voiceId, model and format).
MINIMAX_ENDPOINT = "https://api.minimaxi.com/v1/t2a_v2"
MINIMAX_DEFAULTS = {"emotion": "neutral", "speed": 1, "volume": 1, "pitch": 0, "sampleRate": 32000,
                    "bitrate": 128000, "channel": 1, "outputFormat": "hex", "subtitle": False}
