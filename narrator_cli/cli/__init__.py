"""The command line: a table of commands, each a few lines in the module of its group.

Only the module of the command being run is imported and registered, because
Typer inspects every registered command on each call and a cache hit should
not pay for that; heavy imports (rich, httpx, mutagen, asyncio) happen inside
the commands that need them.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated

import typer

from .. import __version__

# command -> module in this package that defines a function of the same name (``-`` as ``_``)
COMMANDS: dict[str, str] = {
    "speak": "speak",
    "check": "team",
    "upload": "team",
    "stats": "cache",
    "cleanup": "cache",
    "init": "cache",
    "serve": "serve",
    "scan": "project",
    "sync": "sync",
    "captions": "captions",
    "voices": "account",
    "quota": "account",
    "import-history": "history",
}


def _main(version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False) -> None:
    if version:
        print(f"narrator {__version__}")
        raise typer.Exit(0)


def _help() -> str:
    from ..config import user_config_path

    return ("Stable keys, a plain audio cache and a team cache server for text-to-speech narration.\n\n"
            f"Settings: narrator.toml in the project; user config (secrets go here): {user_config_path()} "
            "(NARRATOR_CONFIG names another).")


def build_app(only: str | None = None) -> typer.Typer:
    """The Typer app; with ``only``, just that command."""
    application = typer.Typer(
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        help=_help(),
    )
    application.callback(invoke_without_command=True)(_main)
    for name, module in COMMANDS.items():
        if only in (None, name):
            fn = getattr(importlib.import_module(f".{module}", __name__), name.replace("-", "_"))
            application.command(name)(fn)
    return application


def main() -> None:
    """Entry point: whatever goes wrong, the user sees one line, never a traceback."""
    try:
        only = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] in COMMANDS else None
        build_app(only)(prog_name="narrator")
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
