"""``narrator stats``, ``narrator cleanup`` and ``narrator init``: the local cache (or a server's)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import NarratorError, UsageError
from .output import (
    CaFileOpt,
    InsecureOpt,
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
          ca_file: CaFileOpt = None, insecure: InsecureOpt = False, as_json: JsonOpt = False) -> None:
    """What the cache holds: entries, size (audio and metadata), duration, voices, characters billed and saved
    by cache hits, broken parts.

    Example: narrator stats --json
    """
    from ..maintenance import as_count
    from ..maintenance import stats as compute

    try:
        if server:
            health = server_client(settings_for(server=server, token=token,
                                                ca_file=ca_file, insecure=insecure or None)).endpoint("health")
            if as_json:
                emit_json(health)
            elif health.get("bucket") is True:  # --server s3://...: what one listing tells
                print(f"{server}: bucket, {plural(as_count(health.get('entries')), 'entry')}, "
                      f"{human_size(as_count(health.get('bytes')))} (from a listing; duration, characters and "
                      "hits are counted only by narrator serve)")
            else:
                print(f"{server}: narrator serve {health.get('version')}, "
                      f"{plural(as_count(health.get('entries')), 'entry')}, "
                      f"{human_size(as_count(health.get('bytes')))}")
                if "charactersSaved" in health:  # older servers do not count
                    from rich.console import Console

                    _print_costs(health, Console(soft_wrap=True, highlight=False), billed=True)
                if isinstance(health.get("storage"), dict):  # serve --storage
                    print(bucket_line(health["storage"]))
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

    console = Console(soft_wrap=True, highlight=False)
    console.print(f"[bold]{escape(report['path'])}[/]: {plural(report['entries'], 'entry')}, "
                  f"{human_size(report['bytes'])}, {report['duration']:.1f} s of audio, "
                  f"{plural(report['charactersBilled'], 'character')} billed")
    if report["entries"]:
        console.print(f"oldest {report['oldest']}, newest {report['newest']}")
        _print_costs(report, console)
    if report["broken"] or report["temporary"]:
        console.print(f"[yellow]{plural(report['broken'], 'broken part')} and "
                      f"{plural(report['temporary'], 'stray temporary file')} ({human_size(report['brokenBytes'])}): "
                      "run `narrator cleanup` to remove them[/]")


def _print_costs(report: dict, console: Any, billed: bool = False) -> None:
    """What hits saved (and, for a server, what was billed), then the table per voice and model.
    ``report`` may be a server's reply: every field is checked as it is read."""
    from rich.markup import escape
    from rich.table import Column, Table

    from ..maintenance import as_count

    head = f"{plural(as_count(report.get('charactersBilled')), 'character')} billed; " if billed else ""
    console.print(f"{head}{plural(as_count(report.get('hits')), 'cache hit')} saved "
                  f"{plural(as_count(report.get('charactersSaved')), 'character')}")
    voices = [r for r in report.get("byVoice") or [] if isinstance(r, dict)]
    if not voices:
        return
    if not console.is_terminal:  # a pipe or a file: whole rows, not the 80 columns rich assumes
        console.width = max(console.width, 160)
    figures = [Column(name, justify="right", no_wrap=True)
               for name in ("entries", "size", "duration", "billed", "hits", "saved")]
    table = Table(Column("voice", overflow="fold"), Column("model", overflow="fold"),
                  *figures)  # ids folded on a narrow terminal, never cut: they are what a user looks up
    for row in voices:
        duration = row.get("duration")
        seconds = float(duration) if isinstance(duration, (int, float)) and not isinstance(duration, bool) else 0.0
        table.add_row(escape(str(row.get("voiceId"))), escape(str(row.get("modelId"))),
                      f"{as_count(row.get('entries')):,}", human_size(as_count(row.get("bytes"))),
                      f"{seconds:.1f} s", f"{as_count(row.get('charactersBilled')):,}",
                      f"{as_count(row.get('hits')):,}", f"{as_count(row.get('charactersSaved')):,}")
    console.print(table)


def cleanup(
    older_than: Annotated[Optional[str], typer.Option(
        help="Remove entries unused for this long (e.g. 30d; s, m, h, d, w).")] = None,
    max_size: Annotated[Optional[str], typer.Option(
        help="Then evict least recently used entries until the cache fits (e.g. 500MB; a unit is required).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; remove nothing.")] = False,
    audio_path: PathOpt = None,
    server: ServerOpt = None,
    storage: Annotated[Optional[str], typer.Option(
        "--storage", help="Clean this bucket (s3://BUCKET/PREFIX) instead: entries older than --older-than, "
        "then the oldest until it fits --max-size.", show_default=False)] = None,
    token: TokenOpt = None,
    ca_file: CaFileOpt = None,
    insecure: InsecureOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove old, least recently used and broken entries, and stray temporary files.

    Sizes need a unit (500MB, 2GB; 0B empties the cache), ages too (30d). Exit 1 when something could not be removed.

    Example: narrator cleanup --older-than 30d --max-size 500MB --dry-run
    """
    from ..maintenance import as_count, parse_age, parse_size
    from ..maintenance import cleanup as run

    try:
        if storage:
            return _clean_bucket(storage, older_than, max_size, dry_run, ca_file, insecure, as_json)
        if server:
            if older_than or max_size or dry_run:
                raise UsageError("a server cleans up by its own --max-age and --max-cache-size; "
                                 "--older-than, --max-size and --dry-run are for the local cache")
            summary = server_client(settings_for(server=server, token=token,
                                                 ca_file=ca_file, insecure=insecure or None)).endpoint("cleanup")
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


def bucket_line(storage: dict) -> str:
    """The line ``stats --server`` gives a server's bucket tier."""
    from ..maintenance import as_count

    return (f"bucket {storage.get('url')}: {as_count(storage.get('uploaded')):,} uploaded, "
            f"{as_count(storage.get('pending')):,} pending, {as_count(storage.get('overflowed')):,} overflowed, "
            f"{as_count(storage.get('corrupt')):,} refused as corrupt")


def _clean_bucket(url: str, older_than: str | None, max_size: str | None, dry_run: bool, ca_file: str | None,
                  insecure: bool, as_json: bool) -> None:
    """``cleanup --storage``: what a bucket's lifecycle rules would do, on demand."""
    from ..maintenance import parse_age, parse_size

    if older_than is None and max_size is None:
        raise UsageError("cleanup --storage needs --older-than and/or --max-size (a bucket records no use)")
    age = parse_age(older_than) if older_than is not None else None
    size = parse_size(max_size) if max_size is not None else None
    from ..storage import bucket as objects

    ca = ca_file or settings_for().get("ca_file")
    result = objects.cleanup(objects.Bucket.from_url(url, str(ca) if ca else None, insecure), age, size, dry_run)
    if as_json:
        emit_json(result)
    else:
        verb = "would remove" if dry_run else "removed"
        print(f"{url}: {verb} {plural(len(result['removed']), 'entry')}, freeing "
              f"{human_size(result['freedBytes'])}; {plural(result['kept'], 'entry')} kept")
    _report_failures([(f["cacheKey"], f["error"]) for f in result["failed"]], f"{url}: ")


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


