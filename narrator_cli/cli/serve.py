"""``narrator serve``: options in, the server module does the rest."""

from __future__ import annotations

import math
import os
import sys
from typing import Annotated, Any, Optional

import typer

from ..errors import NarratorError, UsageError
from .output import PathOpt, fail, settings_for, store_for


def serve(
    host: Annotated[Optional[str], typer.Option(
        help="Address to bind \\[default: 127.0.0.1]; any other needs a token.")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port \\[default: 8790; 0 picks a free one].")] = None,
    token: Annotated[Optional[str], typer.Option(
        help="Token clients must send (better: NARRATOR_TOKEN).", show_default=False)] = None,
    allow_origin: Annotated[Optional[list[str]], typer.Option(
        help="Browser origin allowed besides localhost (repeatable).")] = None,
    allow_host: Annotated[Optional[list[str]], typer.Option(
        help="Host name clients may use besides localhost and IPs (repeatable).")] = None,
    allowed_mime_type: Annotated[Optional[list[str]], typer.Option(
        help="Accepted upload type (repeatable) \\[default: audio/mpeg, audio/wav, audio/ogg, audio/mp3].")] = None,
    max_file_size: Annotated[Optional[float], typer.Option(
        help="Largest upload in MB \\[default: 50; at most 2048].")] = None,
    max_age: Annotated[Optional[str], typer.Option(
        help="Remove entries unused this long at start \\[default: 30d; 'never' keeps all].")] = None,
    max_cache_size: Annotated[Optional[str], typer.Option(
        help="Evict least recently used entries after uploads above this (e.g. 2GB).")] = None,
    idle_timeout: Annotated[float, typer.Option(
        help="Close connections silent this many seconds (1 to 86400).")] = 120.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the listening line and errors.")] = False,
    json_log: Annotated[bool, typer.Option("--json-log", help="Log JSON lines on stderr.")] = False,
    open_page: Annotated[bool, typer.Option("--open", help="Open the page (the cache to hear and search) in the "
                                            "default browser once listening.")] = False,
    tls_cert: Annotated[Optional[str], typer.Option(
        help="PEM certificate (chain): serve https:// and wss:// on the same port.", show_default=False)] = None,
    tls_key: Annotated[Optional[str], typer.Option(
        help="PEM private key of --tls-cert \\[default: in the certificate file].", show_default=False)] = None,
    storage: Annotated[Optional[str], typer.Option(
        help="Bucket behind the folder, s3://BUCKET/PREFIX (or NARRATOR_STORAGE; credentials from AWS_*).",
        show_default=False)] = None,
    audio_path: PathOpt = None,
) -> None:
    """Share the cache: HTTP + WebSocket server speaking the Motion Canvas narrator events, and a page at / to
    hear, search and weigh it. Ctrl-C or SIGTERM stops it once uploads in flight are stored.

    Example: narrator serve --port 8790 --max-cache-size 2GB
    """
    from ..audio import MIME_ALIASES
    from ..maintenance import parse_age, parse_size
    from ..protocol import DEFAULT_MIME_TYPES
    from ..server import MAX_FILE_SIZE, Options, generate_token, is_loopback
    from ..server import serve as run
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
        port_number = _in_range(settings.get("serve.port", 8790), _source("--port", port, "serve.port", settings),
                                0, 65535, "a whole number from 0 to 65535", whole=True)
        file_mb = _in_range(settings.get("serve.max_file_size", 50),
                            _source("--max-file-size", max_file_size, "serve.max_file_size", settings),
                            0.001, MAX_FILE_SIZE / 1e6, f"a number of MB from 0.001 to {MAX_FILE_SIZE / 1e6:g} "
                            "(an upload is held in memory whole)")
        _in_range(idle_timeout, "--idle-timeout", 1, 86400, "a number of seconds from 1 to 86400")
        if tls_key and not tls_cert:
            raise UsageError("--tls-key needs --tls-cert (the certificate it is the key of)")
        options = Options(
            host=bind, port=int(port_number),
            token=str(secret) if secret else (generate_token() if generated else None),
            allow_origins=list(allow_origin or []), allow_hosts=list(allow_host or []),
            allowed_mime_types=mimes,
            max_file_size=int(file_mb * 1_000_000),
            max_age=None if age.strip().lower() == "never" else parse_age(age),
            max_cache_size=parse_size(str(size)) if size else None,
            idle_timeout=idle_timeout, quiet=quiet, json_log=json_log,
            tls_cert=tls_cert or None, tls_key=tls_key or None)

        bucket_url = storage or settings.get("storage")
        if bucket_url:
            options.storage = _open_bucket(str(bucket_url))

        def announce(url: str) -> None:  # once the socket is bound: a server that never listened has no token
            if generated:
                print(f"narrator: token for this server (clients pass it as NARRATOR_TOKEN): {options.token}",
                      file=sys.stderr, flush=True)
            if open_page:
                _open(url.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://[::1]:") + "/")

        run(store_for(settings), options, announce)
    except NarratorError as exc:
        raise fail(exc) from None
    except OSError as exc:  # binding is checked in the server; this is the folder or the system
        where = f": {exc.filename}" if exc.filename else ""
        raise fail(UsageError(f"cannot serve: {exc.strerror or exc}{where}")) from None


def _open_bucket(url: str) -> Any:
    """The bucket, probed once: wrong credentials or no such bucket stop the server before it starts (exit 2);
    a bucket that cannot be reached now does not (the server serves its folder and retries)."""
    from ..storage.bucket import Bucket, Unavailable

    bucket = Bucket.from_url(url)
    try:
        bucket.probe()
    except Unavailable as exc:
        print(f"narrator: warning: {exc}; serving from the folder until it is back", file=sys.stderr, flush=True)
    return bucket


def _open(url: str) -> None:
    """The page in the default browser, when there is one; else a line saying where it is."""
    import webbrowser

    try:
        opened = webbrowser.get().open(url)
    except webbrowser.Error:
        opened = False
    if not opened:
        print(f"narrator: no browser to open here; the page is at {url}", file=sys.stderr, flush=True)


def _in_range(value: object, where: str, low: float, high: float, what: str, whole: bool = False) -> float:
    """``value`` if it is a finite number (whole, if asked) from ``low`` to ``high``; else a one-line UsageError
    naming where it came from: infinities and NaN pass a plain ``min=`` check and end deep in the server."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and low <= value <= high and (not whole or float(value).is_integer())
    if not ok:
        shown = f"{value:g}" if isinstance(value, float) else repr(value) if isinstance(value, str) else str(value)
        raise UsageError(f"{where} must be {what}, got {shown}")
    return float(value)  # type: ignore[arg-type]


def _source(flag: str, given: object, setting: str, settings: Any) -> str:
    """Where a setting's value came from, as a user would look for it: the option, the variable or the file."""
    from .. import config

    if given is not None:
        return flag
    env = config.FIELDS[setting][1]
    if env and os.environ.get(env):
        return f"environment variable {env}"
    project = settings.project_file
    if project is not None and setting in config.read_file(project, allow_secrets=False):
        return f"{project}: {setting!r}"
    return f"{config.user_config_path()}: {setting!r}"


