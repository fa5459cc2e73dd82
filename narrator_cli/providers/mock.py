"""Silent audio as long as the line would take to read: for planning a script's timing."""

from __future__ import annotations

import io
import wave

from ..errors import UsageError
from . import Synthesis

SAMPLE_RATE = 8000


class MockProvider:
    name = "mock"

    def synthesize(self, text: str, voice_id: str, model_id: str) -> Synthesis:
        try:
            wpm = float(model_id)
        except ValueError:
            raise UsageError(f"mock model is a words-per-minute rate, got {model_id!r}") from None
        if not 0 < wpm <= 10000:
            raise UsageError(f"mock rate must be between 0 and 10000 words per minute, got {model_id}")
        seconds = max(len(text.split()), 1) * 60.0 / wpm
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(bytes(2 * round(seconds * SAMPLE_RATE)))
        return Synthesis(buf.getvalue(), "audio/wav")

    def close(self) -> None:
        pass


def create(settings: dict) -> MockProvider:
    return MockProvider()
