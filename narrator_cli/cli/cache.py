"""``narrator stats``, ``narrator cleanup`` and ``narrator init``: the local cache (or a server's)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import NarratorError, UsageError
from .output import (
    JsonOpt,
    PathOpt,
    ServerOpt,
    TokenOpt,
    emit_json,
    fail,
    human_size,
    plural,
    server_client,
    settings_for,
    store_for,
    warn,
)

SHOWN_FAILURES = 10  # parts named one per line when cleanup cannot remove them; the rest are counted


def stats(audio_path: PathOpt = None, server: ServerOpt = None, token: TokenOpt = None,
          as_json: JsonOpt = False) -> None:
    """What the cache holds: entries, size (audio and metadata), duration, voices, characters billed, broken parts.

    Example: narrator stats --json
    """
    from ..maintenance import as_count
    from ..maintenance import stats as compute

    try:
        if server:
            health = server_client(settings_for(server=server, token=token)).endpoint("health")
            if as_json:
                emit_json(health)
            else:
                print(f"{server}: narrator serve {health.get('version')}, "
                      f"{plural(as_count(health.get('entries')), 'entry')}, "
                      f"{human_size(as_count(health.get('bytes')))}")
            return
        report = compute(store_for(settings_for(audio_path=audio_path)))
    except NarratorError as exc:
        raise fail(exc) from None
    if as_json:
        emit_json(report)
        return
    if not report["exists"]:
        print(f"no cache at {report['path']} yet: narrator speak creates it")
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(soft_wrap=True, highlight=False)
    console.print(f"[bold]{escape(report['path'])}[/]: {plural(report['entries'], 'entry')}, "
                  f"{human_size(report['bytes'])}, {report['duration']:.1f} s of audio, "
                  f"{plural(report['charactersBilled'], 'character')} billed")
    if report["entries"]:
        console.print(f"oldest {report['oldest']}, newest {report['newest']}")
        table = Table("voice", "model", "entries", "size", "duration", "characters")
        for row in report["byVoice"]:
            table.add_row(escape(row["voiceId"]), escape(row["modelId"]), f"{row['entries']:,}",
                          human_size(row["bytes"]), f"{row['duration']:.1f} s", f"{row['charactersBilled']:,}")
        console.print(table)
    if report["broken"] or report["temporary"]:
        console.print(f"[yellow]{plural(report['broken'], 'broken part')} and "
                      f"{plural(report['temporary'], 'stray temporary file')} ({human_size(report['brokenBytes'])}): "
                      "run `narrator cleanup` to remove them[/]")



def cleanup(
    older_than: Annotated[Optional[str], typer.Option(
        help="Remove entries unused for this long (e.g. 30d; s, m, h, d, w).")] = None,
    max_size: Annotated[Optional[str], typer.Option(
        help="Then evict least recently used entries until the cache fits (e.g. 500MB; a unit is required).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; remove nothing.")] = False,
    audio_path: PathOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove old, least recently used and broken entries, and stray temporary files.

    Sizes need a unit (500MB, 2GB; 0B empties the cache), ages too (30d). Exit 1 when something could not be removed.

    Example: narrator cleanup --older-than 30d --max-size 500MB --dry-run
    """
    from ..maintenance import as_count, parse_age, parse_size
    from ..maintenance import cleanup as run

    try:
        if server:
            if older_than or max_size or dry_run:
                raise UsageError("a server cleans up by its own --max-age and --max-cache-size; "
                                 "--older-than, --max-size and --dry-run are for the local cache")
            summary = server_client(settings_for(server=server, token=token)).endpoint("cleanup")
            if as_json:
                emit_json(summary)
            else:
                gone = sum(len(summary.get(k) or []) for k in ("expired", "evicted"))
                print(f"{server}: removed {plural(gone, 'entry')}, "
                      f"{plural(len(summary.get('broken') or []), 'broken part')}, "
                      f"{plural(len(summary.get('temporary') or []), 'temporary file')}; "
                      f"freed {human_size(as_count(summary.get('freedBytes')))}")
            failed = [(str(f.get("path")), str(f.get("error"))) for f in summary.get("failed") or []
                      if isinstance(f, dict)]
            _report_failures(failed, f"{server}: ")
            return
        age = parse_age(older_than) if older_than is not None else None
        size = parse_size(max_size) if max_size is not None else None
        result = run(store_for(settings_for(audio_path=audio_path)), age, size, dry_run)
    except NarratorError as exc:
        raise fail(exc) from None
    if as_json:
        emit_json(result.as_dict(dry_run))
    else:
        verb = "would remove" if dry_run else "removed"
        gone = len(result.expired) + len(result.evicted)
        print(f"{verb} {plural(gone, 'entry')} ({len(result.expired):,} old, {len(result.evicted):,} over size), "
              f"{plural(len(result.broken), 'broken part')}, {plural(len(result.temporary), 'temporary file')}; "
              f"{'would free' if dry_run else 'freed'} {human_size(result.freed)}; "
              f"{plural(result.remaining_entries, 'entry')} ({human_size(result.remaining_bytes)}) "
              f"{'remains' if result.remaining_entries == 1 else 'remain'}")
    _report_failures(result.failed)


def _report_failures(failed: list[tuple[str, str]], where: str = "") -> None:
    """Name what stayed, one line each (the first few), and exit 1: the cache is not as asked."""
    if not failed:
        return
    for path, reason in failed[:SHOWN_FAILURES]:
        warn(f"{where}could not remove {path}: {reason}")
    more = f" ({len(failed) - SHOWN_FAILURES:,} more not shown)" if len(failed) > SHOWN_FAILURES else ""
    raise fail(NarratorError(f"{where}could not remove {plural(len(failed), 'file')}{more}; they stay in the cache"))



def init(force: Annotated[bool, typer.Option("--force", help="Overwrite an existing narrator.toml.")] = False) -> None:
    """Write a commented narrator.toml for this project (never with secrets).

    Example: narrator init --force
    """
    import os

    from ..config import PROJECT_FILE, editor_folder
    from ..project.template import write_project_file

    target = Path.cwd() / PROJECT_FILE
    try:
        found, warning = editor_folder(Path.cwd())  # the project's vite.config: the folder its editor uses
        if warning:
            warn(warning)
        folder = config_name = None
        if found is not None:
            folder = Path(os.path.relpath(found.config.parent / found.folder, Path.cwd())).as_posix()
            config_name = Path(os.path.relpath(found.config, Path.cwd())).as_posix()
        write_project_file(target, force, folder, config_name)
    except NarratorError as exc:
        raise fail(exc) from None
    print(f"wrote {target}" + (f" (audio_path {folder!r} from {config_name})" if folder else ""))


