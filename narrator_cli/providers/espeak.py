"""The offline voice: espeak-ng through the library the ``espeakng-loader`` wheel ships.

No account, no network, no system package: this is what makes ``narrator speak``
work on a fresh machine. The voice id is an espeak-ng voice name (``en``,
``en-us``, ``de``, ...); the model id is fixed, as there is only one engine.
"""

from __future__ import annotations

import ctypes
import io
import threading
import wave

from ..errors import ProviderError, UsageError
from . import Synthesis

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


class EspeakProvider:
    name = "espeak"

    def synthesize(self, text: str, voice_id: str, model_id: str) -> Synthesis:
        with _lock:
            lib, rate, chunks, _ = _load()
            if lib.espeak_SetVoiceByName(voice_id.encode()) != 0:
                raise UsageError(f"espeak-ng has no voice {voice_id!r} (try en, en-us, de, fr, ...)")
            chunks.clear()
            raw = text.encode()
            if lib.espeak_Synth(raw, len(raw) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None) != 0:
                raise ProviderError("espeak-ng failed to synthesise the line")
            lib.espeak_Synchronize()
            pcm = b"".join(chunks)
            chunks.clear()
        if not pcm:
            raise ProviderError("espeak-ng produced no audio for the line")
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm)
        return Synthesis(buf.getvalue(), "audio/wav")

    def close(self) -> None:
        pass


def create(settings: dict) -> EspeakProvider:
    return EspeakProvider()
