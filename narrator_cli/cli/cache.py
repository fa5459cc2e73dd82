"""``narrator stats``, ``narrator cleanup`` and ``narrator init``: the local cache (or a server's)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import NarratorError, UsageError
from .output import JsonOpt, PathOpt, ServerOpt, TokenOpt, emit_json, fail, human_size, server_client, settings_for, store_for


def stats(audio_path: PathOpt = None, server: ServerOpt = None, token: TokenOpt = None,
          as_json: JsonOpt = False) -> None:
    """What the cache holds: entries, size, duration, voices, characters billed, broken entries."""
    from ..maintenance import stats as compute

    try:
        if server:
            health = server_client(settings_for(server=server, token=token)).endpoint("health")
            if as_json:
                emit_json(health)
            else:
                print(f"{server}: narrator serve {health.get('version')}, {health.get('entries')} entries, "
                      f"{human_size(int(health.get('bytes') or 0))}")
            return
        report = compute(store_for(settings_for(audio_path=audio_path)))
    except NarratorError as exc:
        raise fail(exc) from None
    if as_json:
        emit_json(report)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    console.print(f"[bold]{report['path']}[/]: {report['entries']} entries, {human_size(report['bytes'])}, "
                  f"{report['duration']:.1f} s of audio, {report['charactersBilled']} characters billed")
    if report["entries"]:
        console.print(f"oldest {report['oldest']}, newest {report['newest']}")
        table = Table("voice", "model", "entries", "size", "duration", "characters")
        for row in report["byVoice"]:
            table.add_row(row["voiceId"], row["modelId"], str(row["entries"]), human_size(row["bytes"]),
                          f"{row['duration']:.1f} s", str(row["charactersBilled"]))
        console.print(table)
    if report["broken"] or report["temporary"]:
        console.print(f"[yellow]{report['broken']} broken parts and {report['temporary']} stray temporary "
                      "files: run `narrator cleanup` to remove them[/]")



def cleanup(
    older_than: Annotated[Optional[str], typer.Option(help="Remove entries unused for this long (e.g. 30d; s, m, h, d, w).")] = None,
    max_size: Annotated[Optional[str], typer.Option(help="Then evict least recently used entries until the cache fits (e.g. 500MB).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; remove nothing.")] = False,
    audio_path: PathOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove old, least recently used and broken entries, and stray temporary files."""
    from ..maintenance import cleanup as run, parse_age, parse_size

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
                print(f"{server}: removed {gone} entries, {len(summary.get('broken') or [])} broken parts, "
                      f"{len(summary.get('temporary') or [])} temporary files; "
                      f"freed {human_size(int(summary.get('freedBytes') or 0))}")
            return
        age = parse_age(older_than) if older_than is not None else None
        size = parse_size(max_size) if max_size is not None else None
        result = run(store_for(settings_for(audio_path=audio_path)), age, size, dry_run)
    except NarratorError as exc:
        raise fail(exc) from None
    if as_json:
        emit_json(result.as_dict(dry_run))
        return
    verb = "would remove" if dry_run else "removed"
    gone = len(result.expired) + len(result.evicted)
    print(f"{verb} {gone} entries ({len(result.expired)} old, {len(result.evicted)} over size), "
          f"{len(result.broken)} broken parts, {len(result.temporary)} temporary files; "
          f"{'would free' if dry_run else 'freed'} {human_size(result.freed)}; "
          f"{result.remaining_entries} entries ({human_size(result.remaining_bytes)}) remain")



def init(force: Annotated[bool, typer.Option("--force", help="Overwrite an existing narrator.toml.")] = False) -> None:
    """Write a commented narrator.toml for this project (never with secrets)."""
    from ..config import PROJECT_FILE
    from ..project import write_project_file

    target = Path.cwd() / PROJECT_FILE
    try:
        write_project_file(target, force)
    except NarratorError as exc:
        raise fail(exc) from None
    print(f"wrote {target}")


