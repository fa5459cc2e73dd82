"""The offline voice: espeak-ng through the library the ``espeakng-loader`` wheel ships.

No account, no network, no system package: this is what makes ``narrator speak``
work on a fresh machine. The voice id is an espeak-ng voice name (``en``,
``en-us``, ``de``, ...); the model id is fixed, as there is only one engine.
The audio is MP3 (``format = "wav"`` keeps WAV), encoded after the engine's
lock is released, so one line encodes while the next is synthesised.
"""

from __future__ import annotations

import ctypes
import difflib
import threading

from ..errors import ProviderError, UsageError
from . import Synthesis, audio_format

_AUDIO_OUTPUT_RETRIEVAL = 1
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_lock = threading.Lock()  # libespeak-ng keeps global state: one synthesis at a time
_engine: tuple[ctypes.CDLL, int, list[bytes], object] | None = None


def _load() -> tuple[ctypes.CDLL, int, list[bytes], object]:
    global _engine
    if _engine is None:
        try:
            import espeakng_loader

            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data_path = espeakng_loader.get_data_path().encode()
        except (ImportError, OSError, RuntimeError) as exc:
            raise ProviderError(f"the offline voice is unavailable: {exc}") from None
        chunks: list[bytes] = []

        @ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
        def on_audio(wav, count, events):  # type: ignore[no-untyped-def]
            if count > 0:
                chunks.append(ctypes.string_at(wav, count * 2))
            return 0

        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_RETRIEVAL, 0, data_path, 0)
        if rate <= 0:
            raise ProviderError("the offline voice failed to start (espeak-ng data not found)")
        lib.espeak_SetSynthCallback(on_audio)
        _engine = (lib, rate, chunks, on_audio)  # keep the callback alive
    return _engine


class _Voice(ctypes.Structure):
    """espeak-ng's ``espeak_VOICE``."""

    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_void_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


def voice_names(lib: ctypes.CDLL) -> list[str]:
    """The short names of the installed voices (``en``, ``en-US``, ``de``, ...), as espeak-ng lists them."""
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
    voices = lib.espeak_ListVoices(None)
    names: list[str] = []
    for i in range(10_000):  # a NULL-terminated array
        if not voices or not voices[i]:
            break
        identifier = voices[i].contents.identifier or b""
        names.append(identifier.decode(errors="replace").rsplit("/", 1)[-1])
    return names


def _unknown_voice(lib: ctypes.CDLL, voice_id: str) -> UsageError:
    names = voice_names(lib)
    lower = {n.lower(): n for n in names}
    near = [lower[n] for n in difflib.get_close_matches(voice_id.lower(), list(lower), n=3, cutoff=0.5)]
    common = [n for n in ("en", "en-US", "de", "fr", "es") if n.lower() in lower] or names[:5]
    few = list(dict.fromkeys(near + common))
    return UsageError(f"espeak-ng has no voice {voice_id!r}: try {', '.join(few)} "
                      f"({len(names)} voices in all; a variant such as en+f3 works too)")


class EspeakProvider:
    name = "espeak"

    def __init__(self, fmt: str = "mp3") -> None:
        self.format = fmt

    def synthesize(self, text: str, voice_id: str, model_id: str) -> Synthesis:
        with _lock:
            lib, rate, chunks, _ = _load()
            if lib.espeak_SetVoiceByName(voice_id.encode()) != 0:
                raise _unknown_voice(lib, voice_id)
            chunks.clear()
            raw = text.encode()
            if lib.espeak_Synth(raw, len(raw) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None) != 0:
                raise ProviderError("espeak-ng failed to synthesise the line")
            lib.espeak_Synchronize()
            pcm = b"".join(chunks)
            chunks.clear()
        if not pcm:
            raise ProviderError("espeak-ng produced no audio for the line")
        if self.format == "wav":
            from ..encode import pcm_to_wav

            return Synthesis(pcm_to_wav(pcm, rate), "audio/wav")
        from ..encode import pcm_to_mp3

        return Synthesis(pcm_to_mp3(pcm, rate), "audio/mpeg")

    def cancel(self) -> None:
        """Nothing to stop: a line takes milliseconds and holds no connection."""

    def close(self) -> None:
        pass


def create(settings: dict) -> EspeakProvider:
    return EspeakProvider(audio_format(settings))
