"""``narrator check`` and ``narrator upload``: the team cache from the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

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
    ServerOpt,
    TokenOpt,
    VoiceOpt,
    emit_json,
    fail,
    interrupted,
    read_script,
    server_client,
    settings_for,
    store_for,
    texts_to_lines,
    warn,
)


def check(
    text: Annotated[Optional[list[str]], typer.Argument(help="Narrations to look for.")] = None,
    key: Annotated[Optional[list[str]], typer.Option("--key", "-k", help="A cache key to look for (repeatable).")] = None,
    file: FileOpt = None,
    provider: Annotated[Optional[str], typer.Option(help="Provider whose keys the texts get.")] = None,
    voice: VoiceOpt = None,
    model: ModelOpt = None,
    server: ServerOpt = None,
    no_server: NoServerOpt = False,
    token: TokenOpt = None,
    ca_file: CaFileOpt = None,
    insecure: InsecureOpt = False,
    audio_path: PathOpt = None,
    scan: Annotated[bool, typer.Option("--scan", help="Check the lines of the Motion Canvas project at TEXT (a "
                                       "folder or file; default: the project root); exit 1 names each missing "
                                       "one as file:line.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Is every narration cached? Locally, and on the server when there is one. Exit 0 yes, 1 no, 2 error.

    Example: narrator check --file script.txt --server http://127.0.0.1:8790
    """
    from ..resolve import lookup
    from ..store import check_key, meta_holds

    if scan:
        from .project import check_scanned, scan_target

        check_scanned(scan_target(text, file=file, key=key, provider=provider, voice=voice, model=model),
                      no_server, as_json, audio_path=audio_path, server=server, token=token,
                      ca_file=ca_file, insecure=insecure or None)
        return
    try:
        settings = settings_for(provider=provider, voice=voice, model=model, audio_path=audio_path, server=server,
                                token=token, ca_file=ca_file, insecure=insecure or None)
        texts = list(text or []) + (read_script(file) if file else [])
        keys = [check_key(k) for k in key or []]
        if not texts and not keys:
            raise UsageError("nothing to check: give TEXT, --key or --file")
        lines = texts_to_lines(settings, texts) if texts else []
        store = store_for(settings)
        rows = [{"cacheKey": line.key, "text": line.text, "local": lookup(store, line)[0] is not None}
                for line in lines]
        rows += [{"cacheKey": k, "local": store.get(k) is not None} for k in keys]
        client = None if no_server else server_client(settings, required=False)
        if client is not None:
            with client:
                found = client.check(list(dict.fromkeys(r["cacheKey"] for r in rows)))
            for i, row in enumerate(rows):
                reply = found.get(row["cacheKey"])
                line = lines[i] if i < len(lines) else None  # keys given directly have no line to compare
                row["server"] = reply is not None and (line is None or meta_holds(
                    reply.get("metadata") or {}, line.text, line.voice_id, line.model_id))
    except (Interrupted, KeyboardInterrupt) as exc:
        raise interrupted(exc) from None
    except NarratorError as exc:
        raise fail(exc) from None
    where = "server" if client is not None else "local"
    for row in rows:
        if as_json:
            emit_json(row)
        else:
            marks = "  ".join(f"{w}:{'yes' if row[w] else 'NO '}" for w in ("local", "server") if w in row)
            print(f"{row['cacheKey']}  {marks}  {row.get('text', '')[:60]}")
    missing = sum(1 for row in rows if not row[where])
    if not as_json:
        print(f"{len(rows) - missing} of {len(rows)} cached{' on the server' if where == 'server' else ''}",
              file=sys.stderr)
    raise typer.Exit(1 if missing else 0)



def upload(
    keys: Annotated[Optional[list[str]], typer.Argument(help="Keys to send; with --text, one audio FILE to import.", show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every local entry the server lacks.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Send even what the server has.")] = False,
    text: Annotated[Optional[str], typer.Option("--text", help="Import FILE as the narration of this text.")] = None,
    provider: Annotated[Optional[str], typer.Option(help="Provider whose keys --text gets.")] = None,
    voice: Annotated[Optional[str], typer.Option(help="Voice id for --text.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model id for --text.")] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca_file: CaFileOpt = None,
    insecure: InsecureOpt = False,
    audio_path: PathOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send local entries to the team server, or import a recorded FILE with --text.

    Example: narrator upload --all --server http://127.0.0.1:8790
    """
    from .. import team

    progress = None
    finished: list[dict] = []

    try:
        settings = settings_for(provider=provider, voice=voice, model=model, audio_path=audio_path, server=server,
                                token=token, ca_file=ca_file, insecure=insecure or None)
        store = store_for(settings)
        if text is not None:
            if len(keys or []) != 1 or all_:
                raise UsageError("--text imports exactly one audio FILE: narrator upload FILE --text '...'")
            [line] = texts_to_lines(settings, [text])
            entry = team.import_file(store, Path((keys or [""])[0]), line)
            print(f"{entry.key}  imported   {entry.duration:7.2f}s  {entry.path}", file=sys.stderr if as_json else sys.stdout)
            chosen = [entry.key]
            if not settings.get("server"):
                if as_json:
                    emit_json({"cacheKey": entry.key, "status": "imported", "path": str(entry.path)})
                return
        else:
            chosen = team.choose(store, keys or [], all_)
        client = server_client(settings)
        if not as_json and len(chosen) > 1 and sys.stderr.isatty():
            progress = Progress(len(chosen), "uploading")
        failed = 0

        def report(row: dict) -> None:
            nonlocal failed
            failed += row["status"] == "failed"
            finished.append(row)
            if progress:
                progress.advance()
            if as_json:
                emit_json(row)
            elif not progress:
                print(upload_line(row), flush=True)

        with client:
            try:
                rows = team.upload(client, store, chosen, force, report,
                                   (lambda m: progress.print(f"narrator: warning: {m}")) if progress else warn)
            finally:
                if progress:
                    progress.stop()
                    for row in finished:  # what was done, also when Ctrl-C stopped the rest
                        print(upload_line(row))
    except (Interrupted, KeyboardInterrupt) as exc:
        raise interrupted(exc) from None
    except NarratorError as exc:
        raise fail(exc) from None
    if failed:
        raise fail(NarratorError(f"{failed} of {len(rows)} uploads failed"))




def upload_line(row: dict) -> str:
    return f"{row['cacheKey']}  {row['status']:<9}  {row.get('error') or row.get('filePath', '')}"
