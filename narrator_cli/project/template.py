"""The commented ``narrator.toml`` that ``narrator init`` writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import tomli_w

from ..errors import UsageError

TEMPLATE: list[tuple[str, str, object]] = [
    ("provider", "Speech provider: elevenlabs, espeak (offline) or mock (silent, for timing).", "espeak"),
    ("voice", "Voice id. For elevenlabs, the voice id from your ElevenLabs voice library.", "en"),
    ("audio_path", "Cache folder, relative to this file. Same layout as the Motion Canvas narrator plugin, whose "
     "own default is narrator-cache: point both at one folder.", "audio-cache"),
    ("concurrency", "Provider calls at once in a batch.", 4),
]
FOOTER = """
# Optional:
# model = "eleven_flash_v2_5"        # model id (elevenlabs), "120" words per minute (mock)
# format = "mp3"                     # espeak and mock: mp3 (what the Motion Canvas plugin finds) or wav
# server = "ws://127.0.0.1:8790"     # a team cache started with `narrator serve`
#
# [elevenlabs]
# output_format = "mp3_44100_128"
#
# Secrets never go here: set ELEVENLABS_API_KEY and NARRATOR_TOKEN in the
# environment or in your user config file (see `narrator --help`).
"""


def render(editor_folder: str | None = None, vite_config: str | None = None) -> str:
    """The file's text; ``editor_folder``: the folder the project's Vite plugin serves, named in ``vite_config``."""
    parts = ["# narrator project settings. Command-line options and NARRATOR_* variables override them.\n"]
    for key, comment, value in TEMPLATE:
        if key == "audio_path" and editor_folder is not None:
            comment = (f"Cache folder, relative to this file: the folder the Motion Canvas narrator plugin serves, "
                       f"from {vite_config} (motionCanvasNarratorPlugin), so the editor and narrator share it.")
            value = editor_folder
        parts.append(f"\n# {comment}\n{tomli_w.dumps({key: value})}")
    return "".join(parts) + FOOTER


def write_project_file(target: Path, force: bool, editor_folder: str | None = None,
                       vite_config: str | None = None) -> None:
    if target.exists() and not force:
        raise UsageError(f"{target} already exists (use --force to overwrite)")
    fd, tmp = tempfile.mkstemp(prefix=".narrator-", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(render(editor_folder, vite_config))
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise UsageError(f"cannot write {target}: {exc.strerror}") from None
