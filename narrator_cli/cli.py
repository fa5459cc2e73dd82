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
    voice: Annotated[Optional[str], typer.Option(help="Voice id.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model id.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Regenerate even when cached.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Also copy the audio here (a folder for several lines).")] = None,
    concurrency: Annotated[Optional[int], typer.Option(min=1, max=64, help="Provider calls at once [default: 4].")] = None,
    audio_path: PathOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Speak lines: from this run, the cache, or the provider; print key, status, duration and file."""
    from . import resolve as core
    from .providers import key_params

    try:
        settings = settings_for(provider=provider, voice=voice, model=model, audio_path=audio_path,
                                concurrency=concurrency)
        texts = list(text or []) + (read_script(file) if file else [])
        voice_id, model_id = key_params(settings.provider, settings.get("voice"), settings.get("model"))
        lines = core.plan(texts, voice_id, model_id)
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

        try:
            results = core.resolve(store, lines, name, make_provider, int(settings.get("concurrency")),
                                   force, on_result)
        finally:
            if progress:
                progress.stop()
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


@command
def stats(audio_path: PathOpt = None, as_json: JsonOpt = False) -> None:
    """What the cache holds: entries, size, duration, voices, characters billed, broken entries."""
    from .maintenance import stats as compute

    try:
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
    as_json: JsonOpt = False,
) -> None:
    """Remove old, least recently used and broken entries, and stray temporary files."""
    from .maintenance import cleanup as run, parse_age, parse_size

    try:
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
