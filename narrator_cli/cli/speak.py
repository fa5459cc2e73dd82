"""``narrator speak``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import NarratorError
from .output import (FileOpt, JsonOpt, ModelOpt, NoServerOpt, PathOpt, Progress, ProviderOpt, ServerOpt, TokenOpt,
                     VoiceOpt, emit_json, fail, read_script, settings_for, store_for, texts_to_lines, token_of, warn)


def speak(
    text: Annotated[Optional[list[str]], typer.Argument(help="Lines to speak, each one narration.",
                                                        show_default=False)] = None,
    file: FileOpt = None,
    provider: ProviderOpt = None,
    voice: VoiceOpt = None,
    model: ModelOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Regenerate even when cached.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Also copy the audio here (a folder for several lines).",
                                                show_default=False)] = None,
    concurrency: Annotated[Optional[int], typer.Option(min=1, max=64, help="Provider calls at once "
                                                       "\\[default: 4].", show_default=False)] = None,
    server: ServerOpt = None,
    no_server: NoServerOpt = False,
    token: TokenOpt = None,
    audio_path: PathOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Speak lines: from this run, the cache, the team server, or the provider; print key, status, duration, file.

    Example: narrator speak "Hello from narrator" --voice en-us
    """
    from .. import resolve as core

    try:
        settings = settings_for(provider=provider, voice=voice, model=model, audio_path=audio_path,
                                concurrency=concurrency, server=server, token=token)
        lines = texts_to_lines(settings, list(text or []) + (read_script(file) if file else []))
        store = store_for(settings)
        name = settings.provider

        def make_provider():  # type: ignore[no-untyped-def]
            from .. import providers

            return providers.load(name, {"concurrency": settings.get("concurrency"), **settings.section(name)})

        progress = None if as_json or len(lines) < 2 or not sys.stderr.isatty() else Progress(len(lines), "speaking")

        def on_result(r: core.Result) -> None:
            for w in r.warnings:
                warn(w)
            if progress:
                progress.advance()
            elif as_json:
                emit_json(r.as_dict(name))
            else:
                print(format_result(r), flush=True)

        remote = None
        if settings.get("server") and not no_server:
            from ..team import TeamCache

            remote = TeamCache(str(settings.get("server")), token_of(settings), store, warn)
        try:
            results = core.resolve(store, lines, name, make_provider, int(settings.get("concurrency")),
                                   force, on_result, remote)
        finally:
            if progress:
                progress.stop()
            if remote:
                remote.close()
        if progress:
            for r in results:
                print(format_result(r))
        if out:
            copy_out([r for r in results if r.entry], out)
        failed = [r for r in results if r.status == "failed"]
        if failed:
            raise NarratorError(f"{len(failed)} of {len(results)} lines failed (first: {failed[0].error})")
    except NarratorError as exc:
        raise fail(exc) from None


def format_result(r) -> str:  # type: ignore[no-untyped-def]
    if r.entry is None:
        return f"{r.line.key}  failed     {r.error}"
    return f"{r.line.key}  {r.status:<9}  {r.entry.duration:7.2f}s  {r.entry.path}"


def copy_out(results: list, out: Path) -> None:
    import os
    import shutil
    import tempfile

    many = len(results) > 1 or out.is_dir()
    if many:
        out.mkdir(parents=True, exist_ok=True)
    for r in results:
        target = out / r.entry.path.name if many else out
        fd, tmp = tempfile.mkstemp(prefix=".narrator-", dir=target.parent)
        os.close(fd)
        try:
            shutil.copyfile(r.entry.path, tmp)
            os.replace(tmp, target)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise NarratorError(f"cannot write {target}: {exc.strerror or exc}") from None
