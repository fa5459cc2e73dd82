"""Copies of cached audio where the user asks (``speak --out``): one file, a folder, or stdout.

Decided before anything is generated (``plan``), so a wrong target costs
nothing. A regular file is replaced atomically (temporary file, then rename);
anything else at the target (a device such as ``/dev/stdout``, a pipe) is
written through, never renamed over; a symlink is followed.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import unicodedata
from pathlib import Path
from typing import BinaryIO, NamedTuple

from .audio import SUFFIX_MIME
from .errors import NarratorError, UsageError
from .store import MIME_EXT, Entry

SLUG_CHARS = 40
STDOUT_NAMES = {"-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"}


class Target(NamedTuple):
    kind: str  # "stdout", "file" or "folder"
    path: Path


def plan(out: Path, lines: int, stdout_is_terminal: bool, json_rows: bool = False) -> Target:
    """Where ``lines`` lines' audio will go; UsageError for a target that cannot work."""
    if str(out) in STDOUT_NAMES:
        if json_rows:
            raise UsageError(f"--out {out} and --json both write to stdout; choose one")
        if lines != 1:
            raise UsageError("--out - writes one line's audio to stdout; give a folder for several lines")
        if stdout_is_terminal:
            raise UsageError("--out - would write audio to the terminal; redirect it (--out - > line.mp3)")
        return Target("stdout", out)
    if out.is_dir():
        return Target("folder", out)
    if lines > 1:
        if out.exists() or out.is_symlink():
            raise UsageError(f"--out {out}: several lines need a folder, and this is not one")
        if out.suffix.lower() in SUFFIX_MIME:
            raise UsageError(f"--out {out}: several lines need a folder (for example --out {out.with_suffix('')}/)")
    parent = (out.resolve() if out.is_symlink() else out.absolute()).parent
    if not parent.is_dir():
        raise UsageError(f"--out {out}: the folder {parent} does not exist")
    return Target("folder" if lines > 1 else "file", out)


def write(target: Target, entries: list[tuple[int, str, Entry]], total: int,
          stdout: BinaryIO | None = None) -> list[Path]:
    """Copy each (line number, text, entry) to ``target``; the paths written (stdout: none).
    Each copy is whole or absent; a failure names the file."""
    if target.kind == "stdout":
        for _, _, entry in entries:
            assert stdout is not None, "stdout target without a stream"
            stdout.write(_audio_as(entry, None))
            stdout.flush()
        return []
    if target.kind == "file":
        written = []
        for _, _, entry in entries:
            written.append(put(target.path, _audio_as(entry, SUFFIX_MIME.get(target.path.suffix.lower()))))
        return written
    try:
        target.path.mkdir(exist_ok=True)
    except OSError as exc:
        raise NarratorError(f"cannot make the folder {target.path}: {exc.strerror or exc}") from None
    width = max(2, len(str(total)))
    return [put(target.path / f"{number:0{width}d}-{slug(text) or entry.key}.{MIME_EXT[_mime(entry)]}",
                 _audio_as(entry, None))
            for number, text, entry in entries]


def slug(text: str) -> str:
    """A readable, portable file-name part: ``Hello, World!`` -> ``hello-world``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    out = ""
    for word in words:
        if len(out) + len(word) + 1 > SLUG_CHARS:
            break
        out = f"{out}-{word}" if out else word
    return out or "-".join(words)[:SLUG_CHARS]


def _mime(entry: Entry) -> str:
    return str(entry.meta.get("mimeType"))


def _audio_as(entry: Entry, wanted: str | None) -> bytes:
    """The entry's audio, converted when the target's name asks for MP3 and the entry is WAV;
    refused for any other mismatch (no decoder ships with narrator)."""
    try:
        audio = entry.path.read_bytes()
    except OSError as exc:
        raise NarratorError(f"cannot read {entry.path}: {exc.strerror or exc}") from None
    have = _mime(entry)
    if wanted is None or wanted == have:
        return audio
    if wanted == "audio/mpeg" and have == "audio/wav":
        from .encode import wav_to_mp3

        return wav_to_mp3(audio)
    raise UsageError(f"{entry.key} is {MIME_EXT.get(have, have)} audio; name the copy .{MIME_EXT.get(have, 'audio')} "
                     "(the cached audio is not converted to that type)")


def put(path: Path, data: bytes) -> Path:
    """Write ``data`` at ``path`` (following a symlink): atomically for a regular file or a new name,
    straight through for a device or a pipe; never over a folder."""
    real = Path(os.path.realpath(path))
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise NarratorError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        if mode is not None and stat.S_ISDIR(mode):
            raise UsageError(f"cannot write {path}: it is a folder")
        if mode is not None and (not stat.S_ISREG(mode) or str(path).startswith(("/dev/", "/proc/"))):
            with open(path, "wb") as fh:  # /dev/stdout, a named pipe: write through, never replace
                fh.write(data)
            return path
        fd, tmp = tempfile.mkstemp(prefix=".narrator-", suffix=".tmp", dir=real.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # what a plain new file gets, not mkstemp's 0600
            os.replace(tmp, real)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise NarratorError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
