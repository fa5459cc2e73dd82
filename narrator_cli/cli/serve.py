"""``narrator serve``: options in, the server module does the rest."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from ..errors import NarratorError, UsageError
from .output import PathOpt, fail, settings_for, store_for


def serve(
    host: Annotated[Optional[str], typer.Option(help="Address to bind \\[default: 127.0.0.1]; any other needs a token.")] = None,
    port: Annotated[Optional[int], typer.Option(min=0, max=65535, help="Port \\[default: 8790; 0 picks a free one].")] = None,
    token: Annotated[Optional[str], typer.Option(help="Token clients must send (better: NARRATOR_TOKEN).", show_default=False)] = None,
    allow_origin: Annotated[Optional[list[str]], typer.Option(help="Browser origin allowed besides localhost (repeatable).")] = None,
    allow_host: Annotated[Optional[list[str]], typer.Option(help="Host name clients may use besides localhost and IPs (repeatable).")] = None,
    allowed_mime_type: Annotated[Optional[list[str]], typer.Option(help="Accepted upload type (repeatable) \\[default: audio/mpeg, audio/wav, audio/ogg, audio/mp3].")] = None,
    max_file_size: Annotated[Optional[float], typer.Option(min=0.001, help="Largest upload in MB \\[default: 50].")] = None,
    max_age: Annotated[Optional[str], typer.Option(help="Remove entries unused this long at start \\[default: 30d; 'never' keeps all].")] = None,
    max_cache_size: Annotated[Optional[str], typer.Option(help="Evict least recently used entries after uploads above this (e.g. 2GB).")] = None,
    idle_timeout: Annotated[float, typer.Option(min=1, help="Close connections silent this many seconds.")] = 120.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the listening line and errors.")] = False,
    json_log: Annotated[bool, typer.Option("--json-log", help="Log JSON lines on stderr.")] = False,
    audio_path: PathOpt = None,
) -> None:
    """Share the cache: HTTP + WebSocket server speaking the Motion Canvas narrator events."""
    from ..maintenance import parse_age, parse_size
    from ..protocol import DEFAULT_MIME_TYPES
    from ..server import Options, generate_token, is_loopback, serve as run
    from ..protocol import MIME_ALIASES
    from ..store import MIME_EXT

    try:
        settings = settings_for(audio_path=audio_path, token=token, **{
            "serve.host": host, "serve.port": port, "serve.max_age": max_age,
            "serve.max_cache_size": max_cache_size, "serve.max_file_size": max_file_size})
        bind = str(settings.get("serve.host") or "127.0.0.1")
        age = str(settings.get("serve.max_age") or "30d")
        size = settings.get("serve.max_cache_size")
        mimes = tuple(allowed_mime_type or DEFAULT_MIME_TYPES)
        for mime in mimes:
            if MIME_ALIASES.get(mime, mime) not in MIME_EXT:
                raise UsageError(f"--allowed-mime-type {mime!r}: not one of {', '.join([*MIME_EXT, *MIME_ALIASES])}")
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


