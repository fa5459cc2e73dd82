"""The cache-key algorithm of motion-canvas-narrator, the only place that knows it.

A key is Java's ``String.hashCode`` over the UTF-16 code units of ``text`` and
the provider's key parameters joined with ``-`` (``text-voiceId-modelId`` for
most; which parameters each Motion Canvas factory uses is in ``motion_canvas``),
absolute value, 8 hex digits. Matching it exactly is what lets a cache filled
here be hit by a Motion Canvas project and back.
"""

from __future__ import annotations

import re

KEY_RE = re.compile(r"[0-9a-f]{8}")


def cache_key(text: str, *params: str) -> str:
    """The key of ``text`` spoken with these parameters, e.g. ``cache_key(text, voice_id, model_id)``."""
    content = "-".join((text, *params)).encode("utf-16-le", "surrogatepass")
    h = 0
    for i in range(0, len(content), 2):
        h = (h * 31 + content[i] + (content[i + 1] << 8)) & 0xFFFFFFFF
    if h >= 0x80000000:
        h = 0x100000000 - h  # |signed 32-bit|; -2**31 stays 0x80000000
    return f"{h:08x}"


def is_key(value: object) -> bool:
    return isinstance(value, str) and KEY_RE.fullmatch(value) is not None
