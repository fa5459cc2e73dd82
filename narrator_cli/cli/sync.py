"""``narrator sync``: the local folder and the team server hold the same entries."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..errors import Interrupted, NarratorError, UsageError
from .output import (
    CaFileOpt,
    InsecureOpt,
    JsonOpt,
    PathOpt,
    ServerOpt,
    TokenOpt,
    emit_json,
    fail,
    interrupted,
    plural,
    server_client,
    settings_for,
    store_for,
    warn,
)


def sync(
    server: ServerOpt = None,
    pull: Annotated[bool, typer.Option("--pull", help="Only download what the server has and the folder lacks.")] = False,
    push: Annotated[bool, typer.Option("--push", help="Only upload what the folder has and the server lacks.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would move; move nothing.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Keep syncing until Ctrl-C (exit 0).")] = False,
    token: TokenOpt = None,
    ca_file: CaFileOpt = None,
    insecure: InsecureOpt = False,
    audio_path: PathOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make the cache folder and the team server hold the same entries: pull what the folder lacks, push what
    the server lacks; a key whose content differs is reported (exit 1), never overwritten.

    Example: narrator sync --server http://127.0.0.1:8790
    """
    from .. import sync as core

    if pull and push:
        raise fail(UsageError("--pull and --push each go one way; give neither to go both ways"))
    if watch and dry_run:
        raise fail(UsageError("--watch moves entries as they come; it cannot be a --dry-run"))

    def report(row: dict) -> None:
        if as_json:
            emit_json(row)
        else:
            print(f"{row['cacheKey']}  {row['status']:<10}  {row.get('error') or row.get('path') or ''}".rstrip(),
                  flush=True)

    def say(message: str) -> None:
        print(f"narrator: {message}", file=sys.stderr, flush=True)

    syncer = None
    try:
        settings = settings_for(audio_path=audio_path, server=server, token=token,
                                ca_file=ca_file, insecure=insecure or None)
        store = store_for(settings)
        syncer = core.Syncer(server_client(settings), store, pull=not push, push=not pull, dry_run=dry_run,
                             report=report, warn=warn)
        if watch:
            say(f"watching {store.root} and {settings.get('server')} (Ctrl-C stops)")
            try:
                core.watch(syncer, say)
            except KeyboardInterrupt:
                pass
        else:
            core.sync_once(syncer)
    except (Interrupted, KeyboardInterrupt) as exc:
        raise interrupted(exc) from None
    except NarratorError as exc:
        raise fail(exc) from None
    finally:
        if syncer is not None:
            syncer.close()
    c = syncer.counts
    if dry_run:
        moved = f"would pull {c.get('would pull', 0)}, would push {c.get('would push', 0)}"
    else:
        moved = f"{c['pulled']} pulled, {c['pushed']} pushed"
    print(f"sync: {moved}; {plural(c['equal'], 'entry', 'entries')} equal, {plural(c['conflict'], 'conflict')}, "
          f"{c['failed']} failed", file=sys.stderr)
    if c["conflict"] or c["failed"]:
        raise typer.Exit(1)
