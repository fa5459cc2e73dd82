"""Silent audio as long as the line would take to read: for planning a script's timing.

Imports stay light: ``key_params`` checks the rate with ``parse_rate`` on every run, cache hits included.
"""

from __future__ import annotations

from ..errors import ProviderError, UsageError
from . import Synthesis, audio_format

SAMPLE_RATE = 8000  # a whole number of samples for any rate a line is likely to use (0.5 s = 4000)
MIN_RATE, MAX_RATE = 1, 10000  # below 1 word a minute a line is hours of silence in memory
MAX_SECONDS = 3600.0


def parse_rate(model_id: str) -> float:
    """Words per minute from the model id; UsageError unless it is a plain number from MIN_RATE to MAX_RATE.

    A number has one accepted spelling, so the same rate never makes a second cache key.
    """
    wpm = float(model_id) if _plain_number(model_id) else 0.0
    if not MIN_RATE <= wpm <= MAX_RATE:
        raise UsageError(f"the mock model is a words-per-minute rate from {MIN_RATE} to {MAX_RATE}, written "
                         f"plainly (e.g. 120 or 150.5), got {model_id!r}")
    return wpm


def _plain_number(text: str) -> bool:
    """ASCII digits with at most one point, no leading or trailing zeros: 120, 150.5; not 0120, 120.0, 1e3."""
    whole, point, fraction = text.partition(".")
    if not (whole.isascii() and whole.isdigit()) or (whole.startswith("0") and whole != "0"):
        return False
    return not point or (fraction.isascii() and fraction.isdigit() and not fraction.endswith("0"))


class MockProvider:
    name = "mock"

    def __init__(self, fmt: str = "mp3") -> None:
        self.format = fmt

    def synthesize(self, text: str, voice_id: str, model_id: str) -> Synthesis:
        seconds = max(len(text.split()), 1) * 60.0 / parse_rate(model_id)
        if seconds > MAX_SECONDS:
            raise ProviderError(f"the mock line would last {seconds / 3600:.1f} hours (at most 1): raise the rate")
        pcm = bytes(2 * round(seconds * SAMPLE_RATE))
        from ..captions.words import estimate

        words = estimate(text, len(pcm) / 2 / SAMPLE_RATE)  # the mock's own timing: by character count
        if self.format == "wav":
            from ..encode import pcm_to_wav

            return Synthesis(pcm_to_wav(pcm, SAMPLE_RATE), "audio/wav", words=words)
        from ..encode import pcm_to_mp3

        return Synthesis(pcm_to_mp3(pcm, SAMPLE_RATE), "audio/mpeg", words=words)

    def cancel(self) -> None:
        """Nothing to stop: a line takes no time."""

    def close(self) -> None:
        pass


def create(settings: dict) -> MockProvider:
    return MockProvider(audio_format(settings))
