"""``narrator speak``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import Interrupted, NarratorError
from .output import (
    FileOpt,
    JsonOpt,
    ModelOpt,
    NoServerOpt,
    PathOpt,
    Progress,
    ProviderOpt,
    ServerOpt,
    TokenOpt,
    VoiceOpt,
    emit_json,
    fail,
    interrupted,
    plural,
    read_script,
    settings_for,
    store_for,
    texts_to_lines,
    token_of,
    warn,
)


def speak(
    text: Annotated[Optional[list[str]], typer.Argument(help="Lines to speak, each one narration.",
                                                        show_default=False)] = None,
    file: FileOpt = None,
    provider: ProviderOpt = None,
    voice: VoiceOpt = None,
    model: ModelOpt = None,
    audio_format: Annotated[Optional[str], typer.Option("--format", help="Audio the offline voices write: mp3 or "
                                                        "wav \\[default: mp3].", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Regenerate even when cached.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Also copy the audio to this file, folder (several lines, "
                                                "numbered in script order) or - (stdout).", show_default=False)] = None,
    concurrency: Annotated[Optional[int], typer.Option(min=1, max=64, help="Provider calls at once "
                                                       "\\[default: 4].", show_default=False)] = None,
    server: ServerOpt = None,
    no_server: NoServerOpt = False,
    token: TokenOpt = None,
    audio_path: PathOpt = None,
    scan: Annotated[bool, typer.Option("--scan", help="Speak the lines of the Motion Canvas project at TEXT (a "
                                       "folder or file; default: the project root), each with its own narrator.")
                    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Speak lines: from this run, the cache, the team server, or the provider; print key, status, duration, file.

    Text is spoken as written: SSML and other markup are not interpreted.

    Example: narrator speak "Hello from narrator" --voice en-us --out hello.mp3
    """
    from .. import resolve as core

    if scan:
        from .project import scan_target, speak_scanned

        speak_scanned(scan_target(text, file=file, provider=provider, voice=voice, model=model,
                                  format=audio_format, out=out), force, concurrency, no_server, as_json,
                      audio_path=audio_path, server=server, token=token)
        return
    progress = None
    done: list = []
    try:
        settings = settings_for(provider=provider, voice=voice, model=model, audio_path=audio_path,
                                concurrency=concurrency, server=server, token=token, format=audio_format)
        texts = list(text or []) + (read_script(file) if file else [])
        lines = texts_to_lines(settings, texts)
        target = None
        if out is not None:
            from .. import export

            target = export.plan(out, len(lines), sys.stdout.isatty(), as_json)
        store = store_for(settings)
        name = settings.provider
        rows_to = sys.stderr if target is not None and target.kind == "stdout" else sys.stdout  # stdout: the audio

        def make_provider():  # type: ignore[no-untyped-def]
            from .. import providers

            return providers.load(name, {"concurrency": settings.get("concurrency"), "format": settings.get("format"),
                                         **settings.section(name)})

        if not as_json and len(lines) > 1 and sys.stderr.isatty():
            progress = Progress(len(lines), "speaking", ("cached", "server", "generated", "failed"))

        def on_result(r: core.Result) -> None:
            done.append(r)
            for w in r.warnings:
                if progress:
                    progress.print(f"narrator: warning: {w}")
                else:
                    warn(w)
            if progress:
                progress.advance(r.status)
                if r.status == "failed":
                    progress.print(format_result(r))
            elif as_json:
                emit_json(r.as_dict(name))
            else:
                print(format_result(r), file=rows_to, flush=True)

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
                for r in done:
                    print(format_result(r), file=rows_to)
            if remote:
                remote.close()
        if not as_json and len(lines) > 1:
            print(summary(results), file=sys.stderr)
        if target is not None:
            from .. import export

            copies = [(n, r.line.text, r.entry) for n, r in enumerate(results, 1) if r.entry is not None]
            written = export.write(target, copies, len(results), sys.stdout.buffer)
            if target.kind == "folder":
                print(f"narrator: copied {plural(len(written), 'file')} to {target.path}", file=sys.stderr)
            elif written:
                print(f"narrator: copied to {written[0]}", file=sys.stderr)
        failed = [r for r in results if r.status == "failed"]
        if failed:
            raise NarratorError(f"{len(failed)} of {len(results)} lines failed (first: {failed[0].error})")
    except Interrupted as exc:
        stop = interrupted(exc)
        if exc.abandoned:  # threads still wait on the provider; nothing they hold is half-written
            os._exit(exc.exit_code)
        raise stop from None
    except NarratorError as exc:
        raise fail(exc) from None


def format_result(r) -> str:  # type: ignore[no-untyped-def]
    if r.entry is None:
        return f"{r.line.key}  failed     {shorten(r.line.text)}: {r.error}"
    return f"{r.line.key}  {r.status:<9}  {r.entry.duration:7.2f}s  {shorten(r.line.text):<32}  {r.entry.path}"


def shorten(text: str, width: int = 32) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def summary(results: list) -> str:
    """One closing line: what was done, what it cost."""
    from collections import Counter

    counts = Counter(r.status for r in results)
    billed = sum(int(r.entry.meta.get("characterCost") or 0) for r in results
                 if r.status == "generated" and r.entry is not None)
    seconds = sum(r.entry.duration for r in results if r.entry is not None)
    parts = ", ".join(f"{counts[s]} {s}" for s in ("cached", "server", "generated", "failed") if counts[s])
    return (f"narrator: {plural(len(results), 'line')}: {parts}; {plural(billed, 'character')} billed; "
            f"{seconds:.1f} s of audio")
