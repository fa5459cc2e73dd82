"""What every command shares: settings, errors as one line, JSON rows, sizes, counts.

Imports stay light: a cache hit loads this module too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import NarratorError

JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per line on stdout.")]
PathOpt = Annotated[Optional[Path], typer.Option("--audio-path", help="Cache folder \\[default: ./audio-cache].",
                                                 show_default=False)]
ServerOpt = Annotated[Optional[str], typer.Option("--server", help="Team cache server URL (or NARRATOR_SERVER).",
                                                  show_default=False)]
TokenOpt = Annotated[Optional[str], typer.Option("--token", help="Server token (better: NARRATOR_TOKEN).",
                                                 show_default=False)]
CaFileOpt = Annotated[Optional[str], typer.Option("--ca-file", help="PEM certificates to check an https:// server "
                                                 "against instead of the system's (or NARRATOR_CA_FILE).",
                                                 show_default=False)]
InsecureOpt = Annotated[bool, typer.Option("--insecure", help="Send the token over plain http:// to "
                                             "another machine (or NARRATOR_INSECURE=1).")]
VoiceOpt = Annotated[Optional[str], typer.Option(help="Voice id \\[default: per provider].", show_default=False)]
ModelOpt = Annotated[Optional[str], typer.Option(help="Model id \\[default: per provider].", show_default=False)]
ProviderOpt = Annotated[Optional[str], typer.Option(help="elevenlabs, espeak or mock \\[default: espeak].",
                                                    show_default=False)]
NoServerOpt = Annotated[bool, typer.Option("--no-server", help="Do not use the team cache server.")]
FileOpt = Annotated[Optional[Path], typer.Option("--file", "-f", help="Script: one narration per non-empty line "
                                                 "('-' for stdin).", show_default=False)]


def fail(exc: NarratorError) -> typer.Exit:
    print(f"narrator: error: {exc}", file=sys.stderr)
    return typer.Exit(exc.exit_code)


def interrupted(exc: BaseException) -> typer.Exit:
    """Ctrl-C: one line saying how far the batch got (when it was in one), exit 130."""
    sys.stdout.flush()
    print(f"narrator: {exc or 'interrupted'}", file=sys.stderr, flush=True)
    return typer.Exit(130)


def warn(message: str) -> None:
    print(f"narrator: warning: {message}", file=sys.stderr)


def emit_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def settings_for(**options: object) -> Any:
    from .. import config

    return config.load(options)


def store_for(settings: Any) -> Any:
    from ..store import Store

    return Store(settings.audio_path)


def token_of(settings: Any) -> str | None:
    token = settings.get("token")
    return str(token) if token else None


def server_client(settings: Any, required: bool = True) -> Any:
    """The configured team cache's client (a server, or an ``s3://`` bucket), or None when none is set."""
    from ..errors import UsageError
    from ..storage import open_remote

    url = settings.get("server")
    if not url:
        if required:
            raise UsageError("no server: give --server URL or set NARRATOR_SERVER")
        return None
    ca_file = settings.get("ca_file")
    return open_remote(str(url), token_of(settings), ca_file=str(ca_file) if ca_file else None,
                       insecure=bool(settings.get("insecure")))


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 entry``, ``2 entries``: counts a user reads."""
    if n == 1:
        return f"{n} {word}"
    return f"{n:,} {many or (word[:-1] + 'ies' if word.endswith('y') else word + 's')}"


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def read_script(path: Path) -> list[str]:
    """Lines of a UTF-8 script (a byte-order mark is not part of the first line), stripped, blanks dropped."""
    from ..errors import UsageError

    try:
        raw = (sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a folder, not a script") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    lines = [line.strip() for line in raw.splitlines()]
    if not any(lines):
        raise UsageError(f"{path}: no narration lines in the script")
    return [line for line in lines if line]


def texts_to_lines(settings: Any, texts: list[str]) -> list:
    """The lines, keyed; an ElevenLabs voice name (``--voice Rachel``) becomes its voice id first, said once
    (and the settings then hold the id). Everything is checked before the voices list is looked at."""
    from .. import resolve as core
    from ..providers import line_params

    params = line_params(settings)
    lines = core.plan(texts, *params)
    voice = params[0]
    # costs.voices.looks_like_id, inlined: an id (or another provider) imports nothing more on a cache hit
    if settings.provider != "elevenlabs" or (len(voice) >= 20 and voice.isascii() and voice.isalnum()):
        return lines
    from ..costs.voices import resolve_voice

    resolved = resolve_voice(settings, voice)
    if resolved.warning:
        warn(str(resolved.note))
    elif resolved.note:
        print(f"narrator: {resolved.note}", file=sys.stderr)
    if resolved.voice_id == voice:
        return lines
    settings.values["voice"] = resolved.voice_id
    return core.plan(texts, resolved.voice_id, *params[1:])


class Progress:
    """A rich progress bar on stderr, only for batches on a terminal; lines printed through it
    appear above the bar as they happen."""

    def __init__(self, total: int, verb: str, counts: tuple[str, ...] = ()) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        self.counts = dict.fromkeys(counts, 0)
        columns = [TextColumn(verb), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn()]
        if counts:
            columns.append(TextColumn("{task.fields[counts]}"))
        self.bar = Bar(*columns, console=Console(stderr=True, highlight=False), transient=True)
        self.task = self.bar.add_task(verb, total=total, counts=self._counts())
        self.bar.start()

    def _counts(self) -> str:
        return "  ".join(f"{name} {n}" for name, n in self.counts.items())

    def advance(self, status: str | None = None) -> None:
        if status in self.counts:
            self.counts[status] += 1
        self.bar.update(self.task, advance=1, counts=self._counts())

    def print(self, line: str) -> None:
        from rich.markup import escape

        self.bar.console.print(escape(line), soft_wrap=True)

    def stop(self) -> None:
        self.bar.stop()
