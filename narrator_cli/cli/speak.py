"""``narrator speak``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from ..errors import Interrupted, NarratorError, UsageError
from .output import (
    CaFileOpt,
    FileOpt,
    InsecureOpt,
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
    text: Annotated[list[str] | None, typer.Argument(help="Lines to speak, each one narration.",
                                                        show_default=False)] = None,
    file: FileOpt = None,
    provider: ProviderOpt = None,
    voice: VoiceOpt = None,
    model: ModelOpt = None,
    audio_format: Annotated[str | None, typer.Option("--format", help="Audio the offline voices write: mp3 or "
                                                        "wav \\[default: mp3].", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Regenerate even when cached.")] = False,
    out: Annotated[Path | None, typer.Option(help="Also copy the audio to this file, folder (several lines, "
                                                "numbered in script order) or - (stdout).", show_default=False)] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, max=64, help="Provider calls at once "
                                                       "\\[default: 4].", show_default=False)] = None,
    server: ServerOpt = None,
    no_server: NoServerOpt = False,
    token: TokenOpt = None,
    ca_file: CaFileOpt = None,
    insecure: InsecureOpt = False,
    audio_path: PathOpt = None,
    captions: Annotated[str | None, typer.Option("--captions", help="Also write srt, vtt or json captions next "
                                                    "to each --out copy (intro.mp3 -> intro.srt).",
                                                    show_default=False)] = None,
    scan: Annotated[bool, typer.Option("--scan", help="Speak the lines of the Motion Canvas project at TEXT (a "
                                       "folder or file; default: the project root), each with its own narrator.")
                    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say where each line is cached (locally, on the "
                                          "server) or what generating it would bill, and the total against the "
                                          "quota left; no paid call, nothing written.")] = False,
    max_characters: Annotated[int | None, typer.Option("--max-characters", min=0, help="Refuse a batch whose "
                                                       "lines to generate would bill more characters (after the "
                                                       "model's multiplier) \\[default: budget in narrator.toml "
                                                       "or NARRATOR_BUDGET].", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Speak lines: from this run, the cache, the team server, or the provider; print key, status, duration, file.

    Text is spoken as written: SSML and other markup are not interpreted.

    Example: narrator speak "Hello from narrator" --voice en-us --out hello.mp3
    """
    if scan:
        from .project import scan_target, speak_scanned

        speak_scanned(scan_target(text, file=file, provider=provider, voice=voice, model=model,
                                  format=audio_format, out=out, captions=captions), force, concurrency, no_server, as_json,
                      dry_run=dry_run, audio_path=audio_path, server=server, token=token,
                      ca_file=ca_file, insecure=insecure or None, budget=max_characters)
        return
    try:
        settings = settings_for(provider=provider, voice=voice, model=model, audio_path=audio_path,
                                concurrency=concurrency, server=server, token=token,
                                ca_file=ca_file, insecure=insecure or None, format=audio_format,
                                budget=max_characters)
        texts = list(text or []) + (read_script(file) if file else [])
        lines = texts_to_lines(settings, texts)
        if dry_run:
            if out is not None or captions is not None:
                raise UsageError("--dry-run writes nothing: drop --out and --captions")
            dry_run_report(settings, [(settings.provider, lines, None)], force, no_server, as_json)
            return
        target = None
        if out is not None:
            from .. import export

            target = export.plan(out, len(lines), sys.stdout.isatty(), as_json)
        caption_kind = _caption_kind(captions, target, settings)
        rows_to = sys.stderr if target is not None and target.kind == "stdout" else sys.stdout  # stdout: the audio
        results = speak_lines(settings, lines, force, no_server, as_json, rows_to)
        if target is not None:
            from .. import export

            copies = [(n, r.line.text, r.entry) for n, r in enumerate(results, 1) if r.entry is not None]
            written = export.write(target, copies, len(results), sys.stdout.buffer)
            if caption_kind:
                _write_captions(caption_kind, settings, written, [(text, entry) for _, text, entry in copies])
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


def _caption_kind(captions: str | None, target: Any, settings: Any) -> str | None:
    """The caption format ``--captions`` asks for, checked with the rules before anything is generated."""
    if captions is None:
        return None
    from ..captions import script

    if target is None or target.kind == "stdout":
        raise UsageError("--captions writes caption files next to the --out copies: give --out a file or folder")
    script.rules_and_gap(settings)
    return script.caption_format(captions)


def _write_captions(kind: str, settings: Any, written: list[Path], lines: list[tuple[str, Any]]) -> None:
    """Captions of each copied line next to its copy, the same name with the caption extension."""
    from ..captions import script
    from ..export import put

    rules, _ = script.rules_and_gap(settings)
    estimated = 0
    for path, (text, entry) in zip(written, lines):
        timed, cues = script.timeline([(text, entry.key, entry.meta, entry.duration)], rules, 0.0)
        estimated += timed[0].estimated
        put(path.with_suffix("." + script.FORMATS[kind]), script.render(kind, timed, cues).encode())
    if estimated:
        warn(f"{plural(estimated, 'line')} had no word timings: estimated by character count")


def speak_lines(settings: Any, lines: list, force: bool, no_server: bool, as_json: bool, rows_to: TextIO,
                quiet: bool = False) -> list:
    """Resolve ``lines`` with the settings' provider and team server, reporting each line as it completes
    (a row on ``rows_to``, or JSON, or a progress bar on a terminal) and a summary of several; the results
    in order. ``quiet``: rows only for lines that were not already cached, and a summary only then.
    A batch over the budget or the quota left is refused before its first paid request (``OverBudget``)."""
    from .. import resolve as core

    if settings.get("budget") is not None:  # a bad budget is refused before anything is done
        from ..costs import estimate

        estimate.budget_of(settings)
    store = store_for(settings)
    name = settings.provider
    progress = None
    done: list = []

    made: list = []  # the provider, made once: before the budget's account requests, so a bad setting costs none

    def make_provider():  # type: ignore[no-untyped-def]
        from .. import providers

        if not made:
            made.append(providers.load(name, {"concurrency": settings.get("concurrency"),
                                              "format": settings.get("format"), **settings.section(name)}))
        return made[0]

    guards: list = []  # the budget's guard, made when there is something to pay for (a hit imports none of it)

    asked: list[bool] = []  # the batch was put to the guard: a later call is a line the server could not deliver

    def before_paying(todo: list) -> None:
        again = bool(asked)
        asked.append(True)
        if todo:
            provider = make_provider()
            try:
                if not guards:
                    from ..costs import estimate

                    guards.append(estimate.guard(settings, warn))
                guards[0]([(name, line) for line in todo])
            except BaseException:
                if not again:
                    provider.close()  # refused before the batch: resolve never gets to use (and close) it
                raise

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
        elif not (quiet and r.status == "cached"):
            print(format_result(r), file=rows_to, flush=True)

    remote = team_cache(settings, store, no_server)
    try:
        results = core.resolve(store, lines, name, make_provider, int(settings.get("concurrency")),
                               force, on_result, remote, before_paying)
    finally:
        if progress:
            progress.stop()
            for r in done:
                if not (quiet and r.status == "cached"):
                    print(format_result(r), file=rows_to)
        if remote:
            remote.close()
    if not as_json and len(lines) > 1 and not (quiet and all(r.status == "cached" for r in results)):
        print(summary(results), file=sys.stderr)
    return results


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


def team_cache(settings: Any, store: Any, no_server: bool) -> Any:
    """The configured team server as ``resolve`` uses it (best effort), or None."""
    if not settings.get("server") or no_server:
        return None
    from ..team import TeamCache

    ca_file = settings.get("ca_file")
    return TeamCache(str(settings.get("server")), token_of(settings), store, warn,
                     str(ca_file) if ca_file else None, bool(settings.get("insecure")))


def dry_run_report(settings: Any, groups: list, force: bool, no_server: bool, as_json: bool,
                   places: list[dict] | None = None) -> None:
    """``--dry-run``: a row per line (where it is cached, or what generating it would bill) and the totals
    against the quota left and the budget. ``groups``: (provider, lines, why they cannot be generated or
    None); ``places``: extra fields of each line's row (a scan's file and line), in order. Reads only."""
    from ..costs import estimate
    from .project import emit_row

    store = store_for(settings)
    remote = team_cache(settings, store, no_server)
    try:
        planned, summed = estimate.dry_run(settings, store, groups, remote, force)
    finally:
        if remote:
            remote.close()
    for p, place in zip(planned, places or [{}] * len(planned)):
        if as_json:
            emit_row({**p.as_dict(), **place})
        else:
            print(p.row(place), flush=True)
    if as_json:
        emit_json(summed)
    else:
        for line in estimate.summary_lines(summed["summary"]):
            print(f"narrator: {line}", file=sys.stderr)
