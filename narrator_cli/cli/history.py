"""``narrator import-history``: audio already paid for in the ElevenLabs history, into the cache."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from ..errors import Interrupted, NarratorError, UsageError
from .output import (
    CaFileOpt,
    InsecureOpt,
    JsonOpt,
    NoServerOpt,
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

DEFAULT_CONCURRENCY = 8


def import_history(
    voice: Annotated[str | None, typer.Option(help="Only this voice id's items.", show_default=False)] = None,
    model: Annotated[str | None, typer.Option(help="Only this model id's items.", show_default=False)] = None,
    since: Annotated[str | None, typer.Option(help="Only items made since this date (YYYY-MM-DD, local time) "
                                                 "or within this age (30d).", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be imported and skipped; download "
                                          "and write nothing.")] = False,
    concurrency: Annotated[int | None, typer.Option(min=1, max=64, help="Downloads at once \\[default: "
                                                       f"{DEFAULT_CONCURRENCY}].", show_default=False)] = None,
    server: ServerOpt = None,
    no_server: NoServerOpt = False,
    token: TokenOpt = None,
    ca_file: CaFileOpt = None,
    insecure: InsecureOpt = False,
    audio_path: PathOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fill the cache with audio already paid for in the ElevenLabs history, keyed as the Motion Canvas
    ElevenLabs narrator keys its lines (text, voice id, model id); upload it to the team server when there is one.

    Items already cached are skipped without a download; so are items that are not finished text-to-speech
    lines with a model id (said why). Audio in another format than the project's (\\[elevenlabs] output_format)
    is imported as what it is, and said: the Motion Canvas plugin finds only .mp3. Ctrl-C stops it; run it again
    to finish.

    Example: narrator import-history --voice 21m00Tcm4TlvDq8ikWAM --since 30d
    """
    from ..costs import history as core
    from ..costs.account import open_account
    from ..providers.elevenlabs import DEFAULT_FORMAT

    account = None
    importer = None
    try:
        for what, value in (("--voice", voice), ("--model", model)):
            if value is not None and (not value.strip() or not value.isprintable()):
                raise UsageError(f"{what} needs an id (not blank, no control characters), got {value!r}")
        settings = settings_for(audio_path=audio_path, server=server, token=token,
                                ca_file=ca_file, insecure=insecure or None)
        section = settings.section("elevenlabs")
        after = core.since_unix(since) if since is not None else None
        mime = core.project_mime(str(section.get("output_format") or DEFAULT_FORMAT))
        workers = concurrency or int(section.get("concurrency") or DEFAULT_CONCURRENCY)  # type: ignore[call-overload]
        account = open_account({**section, "concurrency": workers + 1})  # one more: paging runs alongside
        store = store_for(settings)
        importer = core.Importer(account, store, mime, workers, dry_run, _reporter(as_json, mime),
                                 voice, model, after)
        counts = importer.run()
        url = None if no_server or dry_run else settings.get("server")
        if url and importer.imported_keys:
            core.share(server_client(settings), store, importer.imported_keys, warn, counts)
    except Interrupted as exc:
        stop = interrupted(exc)
        if exc.abandoned:  # downloads still in flight; nothing they hold is half-written
            os._exit(exc.exit_code)
        raise stop from None
    except KeyboardInterrupt as exc:  # before the import began
        raise interrupted(exc) from None
    except NarratorError as exc:
        if importer is not None and importer.counts.imported:  # what was done before the error stays done
            print(f"narrator: import-history: {importer.counts.summary(dry_run)}", file=sys.stderr)
        raise fail(exc) from None
    finally:
        if account is not None:
            account.close()
    if counts.other_format:
        verb = "would be" if dry_run else ("was" if counts.other_format == 1 else "were")
        warn(f"{plural(counts.other_format, 'item')} {verb} imported in another format than the project's "
             f"({mime}): the Motion Canvas plugin finds only .mp3")
    print(f"narrator: import-history{' (dry run)' if dry_run else ''}: {counts.summary(dry_run)}", file=sys.stderr)
    if counts.failed:
        raise fail(NarratorError(f"{plural(counts.failed, 'item')} failed; run the same command again to retry them"))


def _reporter(as_json: bool, mime: str):  # type: ignore[no-untyped-def]
    """Each item's row as it is done: JSON for every item; text for all but the ones already cached."""
    from .speak import shorten

    def report(o) -> None:  # type: ignore[no-untyped-def]
        if as_json:
            emit_json(o.as_dict())
            return
        key = o.key or "-" * 8
        if o.status == "imported":
            other = f"  (as {o.mime}, not {mime})" if o.other_format else ""
            print(f"{key}  imported      {o.entry.duration:7.2f}s  {shorten(o.text):<32}  {o.entry.path}{other}",
                  flush=True)
        elif o.status == "would import":
            cost = f"{o.characters:,} characters" if o.characters is not None else "characters unknown"
            other = f", as {o.mime}, not {mime}" if o.other_format else ""
            print(f"{key}  would import  {shorten(o.text):<32}  ({cost}{other})", flush=True)
        elif o.status != "cached":
            print(f"{key}  {o.status:<12}  {shorten(o.text)}: {o.reason}", flush=True)

    return report
