"""The command line: parse options, call the core, print. Nothing else lives here.

Heavy imports (rich, httpx, mutagen, asyncio) happen inside the commands that
need them, so a cache hit costs little more than starting Python and Typer.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from . import __version__
from .errors import NarratorError, UsageError

COMMANDS: dict[str, Callable[..., None]] = {}


def command(fn: Callable[..., None]) -> Callable[..., None]:
    COMMANDS[fn.__name__] = fn
    return fn

JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per line on stdout.")]
PathOpt = Annotated[Optional[Path], typer.Option("--audio-path", help="Cache folder [default: ./audio-cache].")]
ServerOpt = Annotated[Optional[str], typer.Option("--server", help="Team cache server URL (or NARRATOR_SERVER).", show_default=False)]
TokenOpt = Annotated[Optional[str], typer.Option("--token", help="Server token (better: NARRATOR_TOKEN).", show_default=False)]
VoiceOpt = Annotated[Optional[str], typer.Option(help="Voice id.")]
ModelOpt = Annotated[Optional[str], typer.Option(help="Model id.")]
NoServerOpt = Annotated[bool, typer.Option("--no-server", help="Do not use the team cache server.")]
FileOpt = Annotated[Optional[Path], typer.Option("--file", "-f", help="Script: one narration per non-empty line ('-' for stdin).")]


def fail(exc: NarratorError) -> typer.Exit:
    print(f"narrator: error: {exc}", file=sys.stderr)
    return typer.Exit(exc.exit_code)


def warn(message: str) -> None:
    print(f"narrator: warning: {message}", file=sys.stderr)


def emit_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


def settings_for(**options: object):  # type: ignore[no-untyped-def]
    from . import config

    return config.load(options)


def store_for(settings):  # type: ignore[no-untyped-def]
    from .store import Store

    return Store(settings.audio_path)


def _main(version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False) -> None:
    if version:
        print(f"narrator {__version__}")
        raise typer.Exit(0)


@command
def speak(
    text: Annotated[Optional[list[str]], typer.Argument(help="Lines to speak, each one narration.")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="Script: one narration per non-empty line ('-' for stdin).")] = None,
    provider: Annotated[Optional[str], typer.Option(help="elevenlabs, espeak or mock [default: espeak].")] = None,
    voice: VoiceOpt = None,
    model: ModelOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Regenerate even when cached.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Also copy the audio here (a folder for several lines).")] = None,
    concurrency: Annotated[Optional[int], typer.Option(min=1, max=64, help="Provider calls at once [default: 4].")] = None,
    server: ServerOpt = None,
    no_server: NoServerOpt = False,
    token: TokenOpt = None,
    audio_path: PathOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Speak lines: from this run, the cache, the team server, or the provider; print key, status, duration, file."""
    from . import resolve as core

    try:
        settings = settings_for(provider=provider, voice=voice, model=model, audio_path=audio_path,
                                concurrency=concurrency, server=server, token=token)
        lines = _texts_to_lines(settings, list(text or []) + (read_script(file) if file else []))
        store = store_for(settings)
        name = settings.provider

        def make_provider():  # type: ignore[no-untyped-def]
            from . import providers

            return providers.load(name, {"concurrency": settings.get("concurrency"), **settings.section(name)})

        progress = None if as_json or len(lines) < 2 or not sys.stderr.isatty() else _Progress(len(lines))

        def on_result(r: core.Result) -> None:
            for w in r.warnings:
                warn(w)
            if progress:
                progress.advance(r)
            elif as_json:
                emit_json(r.as_dict(name))
            else:
                print(format_result(r), flush=True)

        remote = None
        if settings.get("server") and not no_server:
            from .team import TeamCache

            remote = TeamCache(str(settings.get("server")), _token(settings), store, warn)
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


class _Progress:
    """A rich progress bar on stderr, only for batches on a terminal."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("speaking"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=Console(stderr=True), transient=True)
        self.task = self.bar.add_task("speak", total=total)
        self.bar.start()

    def advance(self, result: object) -> None:
        self.bar.advance(self.task)

    def stop(self) -> None:
        self.bar.stop()


def _token(settings) -> str | None:  # type: ignore[no-untyped-def]
    token = settings.get("token")
    return str(token) if token else None


def upload_line(row: dict) -> str:
    return f"{row['cacheKey']}  {row['status']:<9}  {row.get('error') or row.get('filePath', '')}"


def format_result(r) -> str:  # type: ignore[no-untyped-def]
    if r.entry is None:
        return f"{r.line.key}  failed     {r.error}"
    return f"{r.line.key}  {r.status:<9}  {r.entry.duration:7.2f}s  {r.entry.path}"


def read_script(path: Path) -> list[str]:
    try:
        raw = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    lines = [line.strip() for line in raw.splitlines()]
    if not any(lines):
        raise UsageError(f"{path}: no narration lines in the script")
    return [line for line in lines if line]


def copy_out(results: list, out: Path) -> None:
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


def _texts_to_lines(settings, texts: list[str]):  # type: ignore[no-untyped-def]
    from . import resolve as core
    from .providers import key_params

    voice_id, model_id = key_params(settings.provider, settings.get("voice"), settings.get("model"))
    return core.plan(texts, voice_id, model_id)


def _server_client(settings, required: bool = True):  # type: ignore[no-untyped-def]
    from .client import Client

    url = settings.get("server")
    if not url:
        if required:
            raise UsageError("no server: give --server URL or set NARRATOR_SERVER")
        return None
    return Client(str(url), _token(settings))


@command
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
    audio_path: PathOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Is every narration cached? Locally, and on the server when there is one. Exit 0 yes, 1 no, 2 error."""
    from .resolve import lookup
    from .store import check_key, meta_holds

    try:
        settings = settings_for(provider=provider, voice=voice, model=model, audio_path=audio_path, server=server,
                                token=token)
        texts = list(text or []) + (read_script(file) if file else [])
        keys = [check_key(k) for k in key or []]
        if not texts and not keys:
            raise UsageError("nothing to check: give TEXT, --key or --file")
        lines = _texts_to_lines(settings, texts) if texts else []
        store = store_for(settings)
        rows = [{"cacheKey": line.key, "text": line.text, "local": lookup(store, line)[0] is not None}
                for line in lines]
        rows += [{"cacheKey": k, "local": store.get(k) is not None} for k in keys]
        client = None if no_server else _server_client(settings, required=False)
        if client is not None:
            with client:
                found = client.check(list(dict.fromkeys(r["cacheKey"] for r in rows)))
            for i, row in enumerate(rows):
                reply = found.get(row["cacheKey"])
                line = lines[i] if i < len(lines) else None  # keys given directly have no line to compare
                row["server"] = reply is not None and (line is None or meta_holds(
                    reply.get("metadata") or {}, line.text, line.voice_id, line.model_id))
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


@command
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
    audio_path: PathOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send local entries to the team server, or import a recorded FILE with --text."""
    from . import team

    try:
        settings = settings_for(provider=provider, voice=voice, model=model, audio_path=audio_path, server=server,
                                token=token)
        store = store_for(settings)
        if text is not None:
            if len(keys or []) != 1 or all_:
                raise UsageError("--text imports exactly one audio FILE: narrator upload FILE --text '...'")
            [line] = _texts_to_lines(settings, [text])
            entry = team.import_file(store, Path((keys or [""])[0]), line)
            print(f"{entry.key}  imported   {entry.duration:7.2f}s  {entry.path}", file=sys.stderr if as_json else sys.stdout)
            chosen = [entry.key]
            if not settings.get("server"):
                if as_json:
                    emit_json({"cacheKey": entry.key, "status": "imported", "path": str(entry.path)})
                return
        else:
            chosen = team.choose(store, keys or [], all_)
        client = _server_client(settings)
        progress = None if as_json or len(chosen) < 2 or not sys.stderr.isatty() else _Progress(len(chosen))
        failed = 0

        def report(row: dict) -> None:
            nonlocal failed
            failed += row["status"] == "failed"
            if progress:
                progress.advance(row)
            if as_json:
                emit_json(row)
            elif not progress:
                print(upload_line(row))

        with client:
            try:
                rows = team.upload(client, store, chosen, force, report)
            finally:
                if progress:
                    progress.stop()
        if progress:
            for row in rows:
                print(upload_line(row))
    except NarratorError as exc:
        raise fail(exc) from None
    if failed:
        raise fail(NarratorError(f"{failed} of {len(rows)} uploads failed"))


@command
def stats(audio_path: PathOpt = None, server: ServerOpt = None, token: TokenOpt = None,
          as_json: JsonOpt = False) -> None:
    """What the cache holds: entries, size, duration, voices, characters billed, broken entries."""
    from .maintenance import stats as compute

    try:
        if server:
            health = _server_client(settings_for(server=server, token=token)).endpoint("health")
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


@command
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
    from .maintenance import cleanup as run, parse_age, parse_size

    try:
        if server:
            if older_than or max_size or dry_run:
                raise UsageError("a server cleans up by its own --max-age and --max-cache-size; "
                                 "--older-than, --max-size and --dry-run are for the local cache")
            summary = _server_client(settings_for(server=server, token=token)).endpoint("cleanup")
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


@command
def serve(
    host: Annotated[Optional[str], typer.Option(help="Address to bind [default: 127.0.0.1]; any other needs a token.")] = None,
    port: Annotated[Optional[int], typer.Option(min=0, max=65535, help="Port [default: 8790; 0 picks a free one].")] = None,
    token: Annotated[Optional[str], typer.Option(help="Token clients must send (better: NARRATOR_TOKEN).", show_default=False)] = None,
    allow_origin: Annotated[Optional[list[str]], typer.Option(help="Browser origin allowed besides localhost (repeatable).")] = None,
    allow_host: Annotated[Optional[list[str]], typer.Option(help="Host name clients may use besides localhost and IPs (repeatable).")] = None,
    allowed_mime_type: Annotated[Optional[list[str]], typer.Option(help="Accepted upload type (repeatable) [default: audio/mpeg, audio/wav, audio/ogg].")] = None,
    max_file_size: Annotated[Optional[float], typer.Option(min=0.001, help="Largest upload in MB [default: 50].")] = None,
    max_age: Annotated[Optional[str], typer.Option(help="Remove entries unused this long at start [default: 30d; 'never' keeps all].")] = None,
    max_cache_size: Annotated[Optional[str], typer.Option(help="Evict least recently used entries after uploads above this (e.g. 2GB).")] = None,
    idle_timeout: Annotated[float, typer.Option(min=1, help="Close connections silent this many seconds.")] = 120.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the listening line and errors.")] = False,
    json_log: Annotated[bool, typer.Option("--json-log", help="Log JSON lines on stderr.")] = False,
    audio_path: PathOpt = None,
) -> None:
    """Share the cache: HTTP + WebSocket server speaking the Motion Canvas narrator events."""
    from .maintenance import parse_age, parse_size
    from .protocol import DEFAULT_MIME_TYPES
    from .server import Options, generate_token, is_loopback, serve as run
    from .store import MIME_EXT

    try:
        settings = settings_for(audio_path=audio_path, token=token, **{
            "serve.host": host, "serve.port": port, "serve.max_age": max_age,
            "serve.max_cache_size": max_cache_size, "serve.max_file_size": max_file_size})
        bind = str(settings.get("serve.host") or "127.0.0.1")
        age = str(settings.get("serve.max_age") or "30d")
        size = settings.get("serve.max_cache_size")
        mimes = tuple(allowed_mime_type or DEFAULT_MIME_TYPES)
        for mime in mimes:
            if mime not in MIME_EXT:
                raise UsageError(f"--allowed-mime-type {mime!r}: not one of {', '.join(MIME_EXT)}")
        secret = settings.get("token")
        generated = not secret and not is_loopback(bind)
        options = Options(
            host=bind, port=int(settings.get("serve.port", 8790)),  # type: ignore[call-overload]
            token=str(secret) if secret else (generate_token() if generated else None),
            allow_origins=list(allow_origin or []), allow_hosts=list(allow_host or []),
            allowed_mime_types=mimes,
            max_file_size=int(float(settings.get("serve.max_file_size", 50)) * 1_000_000),  # type: ignore[arg-type]
            max_age=None if age.strip().lower() == "never" else parse_age(age),
            max_cache_size=parse_size(str(size)) if size else None,
            idle_timeout=idle_timeout, quiet=quiet, json_log=json_log)
        if generated:
            print(f"narrator: token for this server (clients pass it as NARRATOR_TOKEN): {options.token}",
                  file=sys.stderr, flush=True)
        run(store_for(settings), options)
    except NarratorError as exc:
        raise fail(exc) from None
    except OSError as exc:
        raise fail(NarratorError(f"cannot serve on {bind}:{settings.get('serve.port', 8790)}: "
                                 f"{exc.strerror or exc}")) from None


@command
def init(force: Annotated[bool, typer.Option("--force", help="Overwrite an existing narrator.toml.")] = False) -> None:
    """Write a commented narrator.toml for this project (never with secrets)."""
    from .config import PROJECT_FILE
    from .project import write_project_file

    target = Path.cwd() / PROJECT_FILE
    try:
        write_project_file(target, force)
    except NarratorError as exc:
        raise fail(exc) from None
    print(f"wrote {target}")


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def build_app(only: str | None = None) -> typer.Typer:
    """The Typer app; with ``only``, just that command, because Typer inspects
    every registered command on each call and a cache hit should not pay for that."""
    application = typer.Typer(
        add_completion=False,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        help="Stable keys, a plain audio cache and a team cache server for text-to-speech narration.",
    )
    application.callback(invoke_without_command=True)(_main)
    for name, fn in COMMANDS.items():
        if only in (None, name):
            application.command(name)(fn)
    return application


def main() -> None:
    """Entry point: whatever goes wrong, the user sees one line, never a traceback."""
    try:
        only = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] in COMMANDS else None
        build_app(only)()
    except KeyboardInterrupt:
        print("narrator: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if os.environ.get("NARRATOR_DEBUG"):
            raise
        print(f"narrator: internal error: {type(exc).__name__}: {exc} (set NARRATOR_DEBUG=1 for details)",
              file=sys.stderr)
        sys.exit(70)


def __getattr__(name: str) -> typer.Typer:
    """``app``, with every command, for tests and documentation (not built on the hot path)."""
    if name == "app":
        return build_app()
    raise AttributeError(name)
