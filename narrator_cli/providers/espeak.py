"""The offline voice: espeak-ng through the library the ``espeakng-loader`` wheel ships.

No account, no network, no system package: this is what makes ``narrator speak``
work on a fresh machine. The voice id is an espeak-ng voice name (``en``,
``en-us``, ``de``, ...); the model id is fixed, as there is only one engine.
The audio is MP3 (``format = "wav"`` keeps WAV), encoded after the engine's
lock is released, so one line encodes while the next is synthesised.

Word timings come from the engine's own events (``espeak_EVENT`` in speak_lib.h), which arrive with the
audio: a WORD event says where in the text (``text_position``, 1-based, in characters for UTF-8 input:
espeak-ng 1.52 counts one per code point) and when in the audio (``audio_position``, ms from the start of
this line's PCM) a word begins; END and SENTENCE events mark clause ends, after which the engine inserts
a pause. The text's words stay the authority: events only give times, and ``words.place`` fills the rest.
"""

from __future__ import annotations

import ctypes
import difflib
import math
import threading
from bisect import bisect_right
from typing import NamedTuple

from ..captions.words import Word, place, spans
from ..errors import ProviderError, UsageError
from . import Synthesis, audio_format

_AUDIO_OUTPUT_RETRIEVAL = 1
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_WORD, _SENTENCE, _END = 1, 2, 5  # espeak_EVENT_TYPE; 0 ends an event list
_TIMED = (_WORD, _SENTENCE, _END)  # not MSG_TERMINATED (6): its audio position is 0; the audio's length says it
_MAX_EVENTS = 10_000  # per callback: far more than one audio chunk holds, a bound should a list lack its end
_SILENCE = 100  # |sample| at or below this is silence (0.3% of full scale); espeak's pauses are exact zeros
_BLOCK = 256  # samples looked at together when telling sound from silence
_UNTIMED = math.inf  # the start of a word no event has timed (yet)
_lock = threading.Lock()  # libespeak-ng keeps global state: one synthesis at a time


class _Id(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """espeak-ng's ``espeak_EVENT``."""

    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _Id)]


class _Engine:
    """The loaded library and what its callback collects for the line being synthesised."""

    def __init__(self, lib: ctypes.CDLL, rate: int) -> None:
        self.lib, self.rate = lib, rate
        self.chunks: list[bytes] = []
        self.marks: list[tuple[int, int, int]] | None = None  # (type, text_position, audio_position) when wanted
        self.callback: object = None  # kept alive as long as the library may call it


_engine: _Engine | None = None


def _load() -> _Engine:
    global _engine
    if _engine is None:
        try:
            import espeakng_loader

            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data_path = espeakng_loader.get_data_path().encode()
        except (ImportError, OSError, RuntimeError) as exc:
            raise ProviderError(f"the offline voice is unavailable: {exc}") from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_RETRIEVAL, 0, data_path, 0)
        if rate <= 0:
            raise ProviderError("the offline voice failed to start (espeak-ng data not found)")
        engine = _Engine(lib, rate)
        chunks = engine.chunks

        @ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
        def on_audio(wav, count, events):  # type: ignore[no-untyped-def]
            if count > 0:
                chunks.append(ctypes.string_at(wav, count * 2))
            marks = engine.marks
            if marks is not None and events:
                for i in range(_MAX_EVENTS):
                    event = events[i]
                    kind = event.type
                    if not kind:
                        break
                    if kind in _TIMED:
                        marks.append((kind, event.text_position, event.audio_position))
            return 0

        lib.espeak_SetSynthCallback(on_audio)
        engine.callback = on_audio
        _engine = engine
    return _engine


def words_from_events(text: str, marks: list[tuple[int, int, int]], pcm: bytes, rate: int) -> list[Word] | None:
    """The words of ``text`` timed by the engine's events (type, text_position, audio_position) over the
    16-bit ``pcm`` they came with; None when no WORD event lands on a word (the times would be an estimate).

    A word starts at its earliest event. What espeak-ng 1.52 does that this allows for: a number gives an
    event for each part it is read in ("1984": three, all inside the word); the tail of a hyphenated compound
    gives none; some events have length 0 (the length is not used); a phrase from the engine's dictionary
    ("déjà vu", "per se") puts its second word's event one character into the first word, and an
    abbreviation ("co. at") puts the next word's event on the space before it. So an event inside a word
    that already has one, or in the space after it, belongs to the next word when that one has none of its
    own (never a number's: its parts are its own). A word ends where the next starts, but the pause the
    engine puts after a clause (before its END or SENTENCE event) belongs to no word: the word before it
    ends where the sound does.
    """
    words = spans(text)
    n = len(words)
    duration = len(pcm) // 2 / rate
    heads = [a for a, _ in words]
    own = [_UNTIMED] * n  # the earliest event at the word's first character
    inner: list[list[float]] = [[] for _ in range(n)]  # events inside the word or in the space after it
    clause_ends: list[float] = []
    for kind, position, ms in marks:
        t = ms / 1000
        if not 0 <= t <= duration:
            continue
        if kind != _WORD:
            clause_ends.append(t)
        elif n and 0 < position <= len(text):
            i = bisect_right(heads, position - 1) - 1
            if i < 0 or position - 1 == heads[i]:  # a word's first character, or a space before the first word
                own[max(i, 0)] = min(own[max(i, 0)], t)
            else:
                inner[i].append(t)
    starts = own[:]
    for i in range(n):
        nxt, number = i + 1, bool(inner[i]) and any(c.isdigit() for c in text[words[i][0]:words[i][1]])
        for t in sorted(inner[i]):
            if t < starts[i]:
                starts[i] = t
            elif (not number and t > starts[i] and nxt < n and own[nxt] == _UNTIMED and not inner[nxt]
                  and any(c.isalnum() for c in text[heads[nxt]:words[nxt][1]])):
                starts[nxt] = t
                nxt += 1
    latest = 0.0
    for i, s in enumerate(starts):
        if latest <= s < _UNTIMED:
            latest = s
        else:
            starts[i] = _UNTIMED  # back in time: ``place`` puts it between its neighbours
    anchors = [i for i, s in enumerate(starts) if s < _UNTIMED]
    if not anchors:
        return None
    if anchors[0] == 0:  # the line starts where the sound does, not where the engine's buffer does
        hi = starts[anchors[1]] if len(anchors) > 1 else duration
        starts[0] = _first_sound(pcm, round(starts[0] * rate), round(hi * rate)) / rate
    ends: list[float | None] = [None] * n
    clause_ends.sort()
    for a, b in zip(anchors, anchors[1:] + [n]):
        hi = starts[b] if b < n else duration
        k = bisect_right(clause_ends, hi) - 1
        stop = clause_ends[k] if k >= 0 and clause_ends[k] > starts[a] else duration if b == n else None
        if stop is not None:
            end = _last_sound(pcm, round(starts[a] * rate), round(stop * rate)) / rate
            if end > starts[a]:
                ends[b - 1] = end
    return place(text, [(None if s == _UNTIMED else s, e) for s, e in zip(starts, ends)], duration)


def _first_sound(pcm: bytes, lo: int, hi: int) -> int:
    """Index of the first sample in [lo, hi) that is not silence (lo when none is): the engine's silence is
    zeros, skipped at C speed, then what is quieter than ``_SILENCE`` a block at a time."""
    part = pcm[2 * lo:2 * hi]
    i = lo + (len(part) - len(part.lstrip(b"\0"))) // 2
    samples = memoryview(pcm).cast("h")
    for a in range(i, hi, _BLOCK):
        block = samples[a:min(a + _BLOCK, hi)]
        if max(block) > _SILENCE or min(block) < -_SILENCE:
            return next(a + k for k, x in enumerate(block) if abs(x) > _SILENCE)
    return lo


def _last_sound(pcm: bytes, lo: int, hi: int) -> int:
    """Index just past the last sample in [lo, hi) that is not silence (lo when none is)."""
    hi = lo + (len(pcm[2 * lo:2 * hi].rstrip(b"\0")) + 1) // 2
    samples = memoryview(pcm).cast("h")
    while hi > lo:
        a = max(lo, hi - _BLOCK)
        block = samples[a:hi]
        if max(block) > _SILENCE or min(block) < -_SILENCE:
            return next(a + k + 1 for k in range(len(block) - 1, -1, -1) if abs(block[k]) > _SILENCE)
        hi = a
    return lo


class _Voice(ctypes.Structure):
    """espeak-ng's ``espeak_VOICE``."""

    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_void_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


class InstalledVoice(NamedTuple):
    voice_id: str  # the short name (``en-US``, the last part of espeak-ng's identifier): what --voice takes
    name: str  # what espeak-ng calls it (``English (America)``)
    languages: list[str]  # most preferred first (``en-us``, ``en``)
    gender: str  # "male", "female" or ""


def installed_voices() -> list[InstalledVoice]:
    """Every installed voice with its languages, read from the library (``narrator voices``)."""
    with _lock:
        return _listed(_load().lib)


def _listed(lib: ctypes.CDLL) -> list[InstalledVoice]:
    """The voices espeak-ng lists; call with ``_lock`` held (the library keeps global state)."""
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
    voices = lib.espeak_ListVoices(None)
    found: list[InstalledVoice] = []
    for i in range(10_000):  # a NULL-terminated array
        if not voices or not voices[i]:
            break
        voice = voices[i].contents
        identifier = (voice.identifier or b"").decode(errors="replace")
        found.append(InstalledVoice(identifier.rsplit("/", 1)[-1], (voice.name or b"").decode(errors="replace"),
                                    _languages(voice.languages), {1: "male", 2: "female"}.get(voice.gender, "")))
    return found


def _languages(address: int | None) -> list[str]:
    """espeak_VOICE.languages: (priority byte, NUL-terminated language) pairs, ended by a zero priority byte."""
    out: list[str] = []
    while address and len(out) < 100 and ctypes.string_at(address, 1) != b"\0":
        language = ctypes.string_at(address + 1)
        out.append(language.decode(errors="replace"))
        address += len(language) + 2
    return out


def _unknown_voice(lib: ctypes.CDLL, voice_id: str) -> UsageError:
    names = [v.voice_id for v in _listed(lib)]
    lower = {n.lower(): n for n in names}
    near = [lower[n] for n in difflib.get_close_matches(voice_id.lower(), list(lower), n=3, cutoff=0.5)]
    common = [n for n in ("en", "en-US", "de", "fr", "es") if n.lower() in lower] or names[:5]
    few = list(dict.fromkeys(near + common))
    return UsageError(f"espeak-ng has no voice {voice_id!r}: try {', '.join(few)} "
                      f"({len(names)} voices in all; a variant such as en+f3 works too)")


class EspeakProvider:
    name = "espeak"

    def __init__(self, fmt: str = "mp3", words: bool = True) -> None:
        self.format = fmt
        self.words = words  # False: audio only (what the benchmark compares timings against)

    def synthesize(self, text: str, voice_id: str, model_id: str) -> Synthesis:
        with _lock:
            engine = _load()
            lib, rate, chunks = engine.lib, engine.rate, engine.chunks
            if lib.espeak_SetVoiceByName(voice_id.encode()) != 0:
                raise _unknown_voice(lib, voice_id)
            chunks.clear()
            engine.marks = [] if self.words else None
            raw = text.encode()
            try:
                if lib.espeak_Synth(raw, len(raw) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None) != 0:
                    raise ProviderError("espeak-ng failed to synthesise the line")
                lib.espeak_Synchronize()
                pcm, marks = b"".join(chunks), engine.marks
            finally:
                chunks.clear()
                engine.marks = None
        if not pcm:
            raise ProviderError("espeak-ng produced no audio for the line")
        words = words_from_events(text, marks, pcm, rate) if marks is not None else None
        if self.format == "wav":
            from ..encode import pcm_to_wav

            return Synthesis(pcm_to_wav(pcm, rate), "audio/wav", words=words)
        from ..encode import pcm_to_mp3

        return Synthesis(pcm_to_mp3(pcm, rate), "audio/mpeg", words=words)

    def cancel(self) -> None:
        """Nothing to stop: a line takes milliseconds and holds no connection."""

    def close(self) -> None:
        pass


def create(settings: dict) -> EspeakProvider:
    return EspeakProvider(audio_format(settings))
