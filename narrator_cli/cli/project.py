"""``narrator scan``: the narrations of a Motion Canvas project, read from its source."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

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
    warn,
)

ScanPathArg = Annotated[Path | None, typer.Argument(help="Project folder or file [default: the project root, "
                                                        "the nearest folder upwards with package.json or "
                                                        "narrator.toml].", show_default=False)]


def scan(
    path: ScanPathArg = None,
    server: ServerOpt = None,
    no_server: NoServerOpt = False,
    token: TokenOpt = None,
    ca_file: CaFileOpt = None,
    insecure: InsecureOpt = False,
    audio_path: PathOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List every narration of a Motion Canvas project: file:line:col, key, cached/missing/dynamic, provider, text.

    Informational: exit 0 whatever is missing (`narrator check --scan` is the gate).

    Example: narrator scan src --json
    """
    found, rows = scanned_rows(path, no_server, audio_path=audio_path, server=server, token=token,
                               ca_file=ca_file, insecure=insecure or None)
    for row in rows:
        if as_json:
            emit_row(row)
        else:
            print(f"{row['file']}:{row['line']}:{row['column']}  {row['key'] or '--------'}  {row['status']:<7}  "
                  f"{row['provider']:<10}  {shown_text(row)}")
    if not as_json:
        print(scan_summary(found, rows), file=sys.stderr)


def scanned_rows(path: Path | None, no_server: bool, **options: Any) -> tuple[Any, list[dict]]:
    """The scan at ``path`` and its ``status_rows``; any failure is the command's one line (or Ctrl-C's)."""
    try:
        settings, found = scan_project(path, **options)
        return found, status_rows(settings, found, no_server)
    except (Interrupted, KeyboardInterrupt) as exc:
        raise interrupted(exc) from None
    except NarratorError as exc:
        raise fail(exc) from None


def scan_project(path: Path | None, **options: Any) -> tuple[Any, Any]:
    """Settings of the project at ``path`` (its narrator.toml, its editor folder) and its narrations;
    warnings (files that do not parse, options from elsewhere, unknown options) go to stderr."""
    from .. import config
    from ..project.scan import find_root
    from ..project.scan import scan as run

    target = (path or find_root(Path.cwd())).absolute()
    root = find_root(target if target.is_dir() else target.parent)
    if options.get("audio_path") is not None:
        options["audio_path"] = Path(options["audio_path"]).absolute()  # typed here, not in the project
    settings = config.load(options, cwd=root)
    for message in settings.warnings:
        warn(message)
    fallback = {name: settings.get(name) for name in ("voice", "model", "format")}
    found = run(target, settings.narrators, fallback)
    for message in found.warnings:
        warn(message)
    for nar in found.narrators:
        where = f"{nar.name} ({nar.file}:{nar.line})"
        if nar.sources:
            warn(f"narrator {where}: {'; '.join(nar.sources)}")
        if nar.reason and any(n.narrator is nar for n in found.narrations):
            warn(f"narrator {where}: no key: {nar.reason}")
    return settings, found


def status_rows(settings: Any, found: Any, no_server: bool = False) -> list[dict]:
    """One dict per narration, with ``cached`` (locally), ``server`` (when one is configured) and a
    ``status``: cached, missing, dynamic, or unknown (no key)."""
    from ..project.scan import as_line
    from ..resolve import lookup
    from ..store import meta_holds
    from .output import server_client, store_for

    store = store_for(settings)
    rows = []
    for n in found.narrations:
        row = n.as_dict()
        row["cached"] = n.key is not None and lookup(store, as_line(n))[0] is not None
        rows.append(row)
    client = None if no_server else server_client(settings, required=False)
    if client is not None:
        keyed = [(n, row) for n, row in zip(found.narrations, rows) if n.key is not None]
        with client:
            replies = client.check(list(dict.fromkeys(n.key for n, _ in keyed))) if keyed else {}
        for row in rows:
            row["server"] = False
        for n, row in keyed:
            line, reply = as_line(n), replies.get(n.key)
            row["server"] = reply is not None and meta_holds(reply.get("metadata") or {}, line.text, line.voice_id,
                                                             line.model_id)
    where = "server" if client is not None else "cached"
    for row in rows:
        row["status"] = ("dynamic" if row["dynamic"] else "unknown" if row["key"] is None
                         else "cached" if row[where] else "missing")
    return rows


def shown_text(row: dict, width: int = 60) -> str:
    text = row["text"] if row["text"] is not None else row.get("expression") or ""
    text = _printable(text.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r"))
    return text if len(text) <= width else text[:width - 1] + "…"


def scan_summary(found: Any, rows: list[dict]) -> str:
    from collections import Counter

    counts = Counter(row["status"] for row in rows)
    parts = ", ".join(f"{counts[s]} {s}" for s in ("cached", "missing", "dynamic", "unknown") if counts[s])
    where = " (on the server)" if any("server" in row for row in rows) else ""
    return (f"narrator: {plural(len(rows), 'narration')} in {plural(found.files, 'file')}"
            f"{': ' + parts if parts else ''}{where}")


def _printable(text: str) -> str:
    """A lone surrogate (from a ``\\uD800`` escape) cannot be written as UTF-8: show it as its escape."""
    return "".join(f"\\u{ord(c):04x}" if "\ud800" <= c <= "\udfff" else c for c in text)


def emit_row(row: dict) -> None:
    """``emit_json``, except that a text with a lone surrogate is written with JSON's \\u escapes."""
    text = row.get("text")
    if isinstance(text, str) and _printable(text) != text:
        import json

        sys.stdout.write(json.dumps(row) + "\n")
        sys.stdout.flush()
    else:
        emit_json(row)


def scan_target(args: list[str] | None, **ignored: object) -> Path | None:
    """The PATH of ``--scan [PATH]`` (the command's one positional argument); options that choose lines or
    their voice are refused with it, since each scanned line has its own narrator."""
    given = [f"--{name.replace('_', '-')}" for name, value in ignored.items() if value]
    if given:
        raise fail(UsageError(f"--scan takes the lines and their narrators from the project; drop {', '.join(given)}"))
    if len(args or []) > 1:
        raise fail(UsageError("--scan takes one PATH (a project folder or file)"))
    return Path(args[0]) if args else None


def check_scanned(path: Path | None, no_server: bool, as_json: bool, **options: Any) -> None:
    """``narrator check --scan``: the CI gate. Exit 1 names each keyed line not cached (on the server when one is
    configured) as ``file:line: text``; dynamic and unkeyed lines are warnings."""
    found, rows = scanned_rows(path, no_server, **options)
    for row in rows:
        if row["status"] == "dynamic":
            warn(f"{row['file']}:{row['line']}: dynamic narration, not checked: {shown_text(row)}")
    missing = [row for row in rows if row["status"] == "missing"]
    for row in rows if as_json else missing:
        if as_json:
            emit_row(row)
        else:
            print(f"{row['file']}:{row['line']}: {shown_text(row, 200)}")
    if not as_json:
        print(scan_summary(found, rows), file=sys.stderr)
    raise typer.Exit(1 if missing else 0)


def speak_scanned(path: Path | None, force: bool, concurrency: int | None, no_server: bool, as_json: bool,
                  dry_run: bool = False, **options: Any) -> None:
    """``narrator speak --scan``: each scanned line with its own narrator's provider and key parameters
    (``dry_run``: where each is cached, what the rest would bill; nothing generated or written)."""
    from .speak import dry_run_report, summary

    try:
        settings, found = scan_project(path, concurrency=concurrency, **options)
        if dry_run:
            groups = scan_groups(found)
            dry_run_report(settings, [(name, lines, problem) for name, _, lines, problem in groups], force,
                           no_server, as_json, [{"file": n.file, "line": n.line} for _, ns, _, _ in groups for n in ns])
            return
        results, fatal = speak_found(settings, found, force, no_server, as_json, sys.stdout)
        if not as_json:
            print(summary(results), file=sys.stderr)
        failed = [r for r in results if r.status == "failed"]
        if fatal is not None:
            raise fatal
        if failed:
            raise NarratorError(f"{len(failed)} of {len(results)} lines failed (first: {failed[0].error})")
    except (Interrupted, KeyboardInterrupt) as exc:
        raise interrupted(exc) from None
    except NarratorError as exc:
        raise fail(exc) from None


def scan_groups(found: Any) -> list[tuple[str, list, list, str | None]]:
    """The keyed narrations of a scan by narrator (provider and key parameters): (provider, narrations, their
    lines, why they cannot be generated here or None); UsageError when there is none."""
    from collections import defaultdict

    from .. import providers
    from ..project.scan import as_line

    groups: dict[tuple[str, tuple[str, ...]], list] = defaultdict(list)
    for n in found.narrations:
        if n.key is not None:
            groups[(n.narrator.provider, tuple(n.narrator.params))].append(n)
    if not groups:
        raise UsageError(f"nothing to speak: no narration with a key in {found.root}")
    return [(name, narrations, [as_line(n) for n in narrations], _unspeakable(name, params, providers))
            for (name, params), narrations in groups.items()]


class _Checked:
    """The team server as ``resolve`` sees it, once the whole scan was checked in one round trip: each
    group's check is answered from that."""

    def __init__(self, remote: Any, found: dict[str, dict]) -> None:
        self.remote, self.found = remote, found

    def check(self, lines: list) -> dict[str, dict]:
        return {line.key: self.found[line.key] for line in lines if line.key in self.found}

    def download(self, found: dict) -> Any:
        return self.remote.download(found)

    def upload(self, entry: Any) -> None:
        self.remote.upload(entry)


def speak_found(settings: Any, found: Any, force: bool, no_server: bool, as_json: bool, rows_to: Any,
                quiet: bool = False) -> tuple[list, NarratorError | None]:
    """Resolve every keyed narration of a scan, grouped by narrator, reporting each on ``rows_to`` (``quiet``:
    not the cached ones); the results, and the first error that stopped a whole provider (no API key, ...).
    The whole scan is one batch for the budget and the quota: what it would pay for is found first (the
    server asked once for all of it) and refused before any paid request when over (``OverBudget``)."""
    from .. import providers
    from .. import resolve as core
    from ..costs import estimate
    from ..errors import ProviderAuthError
    from .output import store_for
    from .speak import format_result, team_cache

    results: list = []
    store = store_for(settings)
    groups = scan_groups(found)
    guard = estimate.guard(settings, warn)
    remote = team_cache(settings, store, no_server)
    where = {}  # key -> (file, line) of its first narration
    fatal: NarratorError | None = None  # a provider that cannot start (no API key, ...): exit 2 at the end

    def report(r: core.Result, name: str) -> None:
        results.append(r)
        for w in r.warnings:
            warn(w)
        if as_json:
            file, line = where[r.line.key]
            emit_row({**r.as_dict(name), "file": file, "line": line})
        elif not (quiet and r.status == "cached"):
            print(format_result(r), file=rows_to, flush=True)

    try:
        planned, on_server = estimate.plan(store, [(name, lines, problem) for name, _, lines, problem in groups],
                                           remote, force, use=True)
        paying = [(p.provider, p.line) for p in planned if p.status == "generate"]
        guard(paying)

        def before_paying(name: str) -> Callable[[list], None]:
            """A line the server held but could not deliver is put to the guard with all the scan agreed to."""

            def check(todo: list) -> None:
                agreed = {(provider, line.key) for provider, line in paying}
                new = [(name, line) for line in todo if (name, line.key) not in agreed]
                if new:
                    guard(paying + new)
                    paying.extend(new)

            return check

        checked = _Checked(remote, on_server) if remote else None
        for name, narrations, lines, problem in groups:
            params = tuple(narrations[0].narrator.params)
            for n in narrations:
                where.setdefault(n.key, (n.file, n.line))
            if name == "file":  # recordings: what is cached is used, the rest must be imported
                missing = []
                for n, line in zip(narrations, lines):
                    entry = core.lookup(store, line)[0]
                    if entry is not None:
                        report(core.Result(line, "cached", entry), name)
                    elif line.key not in {m.key for m in missing}:
                        missing.append(line)
                        warn(f"{n.file}:{n.line}: a recording of file narrator {n.narrator.name}; import it: "
                             f"narrator upload FILE --text {_quote(n.text)} --provider elevenlabs "
                             f"--voice {_quote(params[0])} --model {_quote(params[1])}")
                lines = missing
            if problem is not None:
                for line in lines:
                    report(core.Result(line, "failed", error=problem), name)
                continue
            extra = {"concurrency": settings.get("concurrency"), "format": settings.get("format"),
                     **settings.section(name)}
            done = len(results)
            try:
                core.resolve(store, lines, name, lambda n=name, e=extra: providers.load(n, e),
                             int(settings.get("concurrency")), force, lambda r, n=name: report(r, n), checked,
                             before_paying(name))
            except (UsageError, ProviderAuthError) as exc:  # this provider's lines only: the others go on
                fatal = fatal or exc
                reported = {r.line.key for r in results[done:]}
                for line in lines:
                    if line.key not in reported:
                        report(core.Result(line, "failed", error=str(exc)), name)
    finally:
        if remote:
            remote.close()
    return results, fatal


def _unspeakable(name: str, params: tuple[str, ...], providers: Any) -> str | None:
    """Why lines with these key parameters cannot be generated here, or None."""
    from ..errors import UsageError

    if name == "file":
        return "a recording, which speak cannot make: import it with narrator upload FILE --text"
    if name not in providers.NAMES:
        return f"provider {name} not available"
    try:
        providers.key_params(name, params[0], params[1])
    except UsageError as exc:
        return str(exc)
    return None


def _quote(text: str | None) -> str:
    import shlex

    return shlex.quote(text or "")
