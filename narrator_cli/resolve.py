"""Turning lines of narration into cached audio:
seen-in-this-run -> local store -> team server (download) -> provider (then upload).

A batch generates each key at most once, runs at most ``concurrency`` provider
calls at a time, and keeps whatever it generated when some lines fail.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from .errors import Interrupted, NarratorError, ProviderAuthError, ProviderUnreachable, UsageError
from .keys import cache_key
from .store import Entry, Store, meta_holds


class Line(NamedTuple):
    text: str
    voice_id: str
    model_id: str
    key: str
    fmt: str | None = None  # the audio format, when the provider keys lines with it (MiniMax); else None


class Result(NamedTuple):
    line: Line
    status: str  # cached | server | generated | failed
    entry: Entry | None = None
    error: str | None = None
    warnings: tuple[str, ...] = ()

    def as_dict(self, provider: str) -> dict:
        d: dict = {
            "cacheKey": self.line.key,
            "text": self.line.text,
            "voiceId": self.line.voice_id,
            "modelId": self.line.model_id,
            "provider": provider,
            "status": self.status,
        }
        if self.line.fmt:
            d["format"] = self.line.fmt
        if self.entry:
            d.update(duration=self.entry.duration, path=str(self.entry.path),
                     mimeType=self.entry.meta.get("mimeType"), fileSize=self.entry.size)
        if self.error:
            d["error"] = self.error
        return d


def check_text(text: str) -> str:
    if not text.strip():
        raise UsageError("empty narration: give some text to speak")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("narration text is not valid Unicode (lone surrogate)") from None
    return text


def plan(texts: list[str], voice_id: str, model_id: str, fmt: str | None = None) -> list[Line]:
    """Lines keyed as the plugin keys them: ``fmt`` is a third key parameter when given (``key_params``)."""
    if not texts:
        raise UsageError("nothing to speak: give TEXT or --file")
    params = (voice_id, model_id) if fmt is None else (voice_id, model_id, fmt)
    return [Line(t, voice_id, model_id, cache_key(t, *params), fmt) for t in map(check_text, texts)]


def lookup(store: Store, line: Line) -> tuple[Entry | None, str | None]:
    """A usable cached entry for ``line``, or None with a warning when its key holds another line."""
    entry = store.get(line.key)
    if entry is None:
        return None, None
    if not meta_holds(entry.meta, line.text, line.voice_id, line.model_id, line.fmt):
        other = str(entry.meta.get("text", ""))[:40]
        return None, f"key {line.key} holds another line ({other!r}); regenerating"
    return entry, None


def resolve(
    store: Store,
    lines: list[Line],
    provider_name: str,
    make_provider: Callable[[], object],
    concurrency: int = 4,
    force: bool = False,
    on_result: Callable[[Result], None] | None = None,
    remote: Remote | None = None,
    before_paying: Callable[[list[Line]], None] | None = None,
) -> list[Result]:
    """Results in the order of ``lines``; ``on_result`` is called as each completes.
    ``before_paying`` sees the lines that neither cache holds, before any provider request, and may refuse
    them all by raising (a budget). Ctrl-C raises ``Interrupted`` once the lines already in flight are stored
    (a second one abandons them)."""
    results: list[Result | None] = [None] * len(lines)
    first: dict[str, int] = {}  # key -> index of the line that owns it in this run
    try:
        return _resolve(store, lines, results, first, provider_name, make_provider, concurrency, force,
                        on_result or (lambda r: None), remote, before_paying)
    except (KeyboardInterrupt, _Abandoned) as exc:
        finished = {line.key for line, r in zip(lines, results) if r is not None and r.entry is not None}
        done = sum(1 for line in lines if line.key in finished)
        raise Interrupted(done, len(lines), abandoned=isinstance(exc, _Abandoned)) from None
    finally:
        store.record_hits(_served(results, first))


def _served(results: list[Result | None], first: dict[str, int]) -> dict[str, int]:
    """The keys this run took from a cache (the folder, or the team server) instead of paying: one hit each,
    however many lines share a key; a copy of a line generated in this run is no hit."""
    return {key: 1 for key, i in first.items() if (r := results[i]) is not None and r.status in ("cached", "server")}


class _Abandoned(Exception):
    """A second Ctrl-C while waiting for the lines in flight."""


def _resolve(store: Store, lines: list[Line], results: list[Result | None], first: dict[str, int],
             provider_name: str, make_provider: Callable[[], object], concurrency: int, force: bool,
             notify: Callable[[Result], None], remote: Remote | None,
             before_paying: Callable[[list[Line]], None] | None) -> list[Result]:
    todo: list[int] = []
    for i, line in enumerate(lines):
        if line.key in first:
            continue
        first[line.key] = i
        entry, warning = (None, None) if force else lookup(store, line)
        if entry is not None:
            store.touch(entry)
            results[i] = Result(line, "cached", entry)
            notify(results[i])
        else:
            todo.append(i)
            if warning:
                results[i] = Result(line, "pending", warnings=(warning,))
    if todo:
        found = remote.check([lines[i] for i in todo]) if remote and not force else {}
        paying = [lines[i] for i in todo if lines[i].key not in found]
        if before_paying is not None:
            before_paying(paying)
        _generate(store, lines, todo, results, provider_name, make_provider, concurrency, notify, found, remote,
                  before_paying, paying)
    for i, line in enumerate(lines):
        if results[i] is None:
            owner = results[first[line.key]]
            assert owner is not None
            if owner.line.text == line.text and owner.line.voice_id == line.voice_id:
                results[i] = Result(line, "cached" if owner.entry else "failed", owner.entry, owner.error)
            else:
                results[i] = Result(line, "failed", error=f"key {line.key} is taken by another line in this batch")
            notify(results[i])
    return [r for r in results if r is not None]


def _generate(store: Store, lines: list[Line], todo: list[int], results: list[Result | None],
              provider_name: str, make_provider: Callable[[], object], concurrency: int,
              notify: Callable[[Result], None], found: dict[str, dict], remote: Remote | None,
              before_paying: Callable[[list[Line]], None] | None, paying: list[Line]) -> None:
    """``paying``: the lines ``before_paying`` agreed to; a line the server held but could not deliver joins
    them, and the whole is put to it again before that line is paid for."""
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    from .audio import measure_duration

    provider_lock = threading.Lock()
    stop = threading.Event()  # Ctrl-C: no line starts a download or a provider request after it
    # UsageError (no API key, ...) stops the run before any call; not needed when the server has it all
    provider = make_provider() if any(lines[i].key not in found for i in todo) else None

    def one(i: int) -> Result | Future[Result]:
        """The line's audio; what was paid for is then written by ``keep`` on the committer, while this worker
        goes on to its next request."""
        nonlocal provider
        line = lines[i]
        warnings = results[i].warnings if results[i] else ()
        if stop.is_set():
            return Result(line, "failed", error="interrupted", warnings=warnings)
        if line.key in found and remote is not None:
            entry = remote.download(found[line.key])
            if entry is not None:
                return Result(line, "server", entry, warnings=warnings)
            if before_paying is not None:  # not agreed to yet: the budget counts it with everything else
                with provider_lock:
                    try:
                        before_paying([*paying, line])
                    except UsageError as exc:  # over the budget or the quota: this line alone is not paid for
                        why = getattr(exc, "reason", str(exc))
                        return Result(line, "failed", error=f"the team server could not deliver it, and {why}",
                                      warnings=warnings)
                    paying.append(line)
        try:
            if stop.is_set():
                return Result(line, "failed", error="interrupted", warnings=warnings)
            if provider is None:
                with provider_lock:
                    provider = provider or make_provider()
            args = (line.text, line.voice_id, line.model_id) + ((line.fmt,) if line.fmt else ())
            synth = provider.synthesize(*args)  # type: ignore[attr-defined]
        except (UsageError, ProviderAuthError, ProviderUnreachable):  # every further line would fail too
            raise
        except NarratorError as exc:
            return Result(line, "failed", error=str(exc), warnings=warnings)
        return committer.submit(keep, line, synth, warnings)

    def keep(line: Line, synth: Any, warnings: tuple[str, ...]) -> Result:
        try:
            duration = measure_duration(synth.audio, synth.mime)
            meta = {"text": line.text, "voiceId": line.voice_id, "modelId": line.model_id,
                    **({"format": line.fmt} if line.fmt else {}), "provider": provider_name, **synth.extra}
            if synth.words:
                meta["words"] = [w.as_meta() for w in synth.words]
            entry = store.put(line.key, synth.audio, synth.mime, duration, meta)
        except NarratorError as exc:
            return Result(line, "failed", error=str(exc), warnings=warnings)
        except OSError as exc:
            return Result(line, "failed", error=f"cannot write to the cache: {exc.strerror or exc}", warnings=warnings)
        if remote is not None:
            remote.upload(entry)
        return Result(line, "generated", entry, warnings=warnings)

    pool = ThreadPoolExecutor(max_workers=max(1, concurrency))
    committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="narrator-commit")
    pending: dict[Future, int] = {pool.submit(one, i): i for i in todo}
    commits: set[Future] = set()  # audio paid for, being written: never cancelled
    fatal: NarratorError | None = None

    def collect(done: set) -> None:
        nonlocal fatal
        for fut in done:
            i = pending.pop(fut)
            commits.discard(fut)
            try:
                result = fut.result()
            except NarratorError as exc:
                fatal = fatal or exc
                result = Result(lines[i], "failed", error=str(exc))
            if isinstance(result, Future):  # synthesised: its commit is the line's result
                pending[result] = i
                commits.add(result)
                continue
            results[i] = result
            if result.error != "interrupted":
                notify(result)

    try:
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            collect(done)
            if fatal:
                for other in pending:
                    if other not in commits:
                        other.cancel()
            for fut in [f for f in pending if f.cancelled()]:
                i = pending.pop(fut)
                results[i] = Result(lines[i], "failed", error="skipped after an earlier fatal error")
                notify(results[i])
        if fatal:
            raise fatal
    except KeyboardInterrupt:
        stop.set()
        if provider is not None and hasattr(provider, "cancel"):
            provider.cancel()  # a retry waiting in back-off is a new request: it must not start
        pool.shutdown(wait=False, cancel_futures=True)
        for fut in [f for f in pending if f.cancelled()]:  # never started; ``wait`` would not see them end
            del pending[fut]
        try:  # what is in flight was paid for: store it, unless Ctrl-C comes again
            while pending:
                collect(wait(pending).done)
        except KeyboardInterrupt:
            raise _Abandoned from None
        raise
    finally:
        pool.shutdown(wait=not stop.is_set())
        committer.shutdown(wait=not stop.is_set())
        if provider is not None and not stop.is_set():
            provider.close()  # type: ignore[attr-defined]


class Remote(Protocol):
    """The team server as ``resolve`` sees it: best effort, never a reason for a line to fail."""

    def check(self, lines: list[Line]) -> dict[str, dict]: ...

    def download(self, found: dict) -> Entry | None: ...

    def upload(self, entry: Entry) -> None: ...

