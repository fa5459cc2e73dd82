"""Audio already paid for in the ElevenLabs history, into the cache (``narrator import-history``).

Each history item is a line the account paid for once. Its ``text``, ``voice_id`` and ``model_id`` are the key
parameters of the Motion Canvas ElevenLabs narrator (``motion_canvas.FACTORIES``), so its audio is exactly what
the plugin and ``speak`` look up for that line: importing it means never paying for it again.

The pipeline: one thread pages through the history (the next page is fetched while audio downloads), the
caller's thread sorts each item (skipped, cached, or to fetch), ``concurrency`` threads download, and two more
verify (mutagen) and store what arrives (a group commit), so a download's place is free for the next request at
once. What it guarantees:
- An item is skipped, said why, when it is not a finished text-to-speech line with a known model (its key
  would be a guess), and without a download when the cache already holds its line.
- Nothing half-written: a broken download is reported, never stored; entries are committed whole.
- Ctrl-C starts no new request; the downloads in flight are stored whole; running again resumes, since what
  was stored is then cached (and newest-first paging finds the rest).
"""

from __future__ import annotations

import datetime as _dt
import errno
import queue
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, NamedTuple

from .. import motion_canvas as mc
from ..errors import (
    AudioError,
    Interrupted,
    NarratorError,
    ProviderAuthError,
    ProviderError,
    ProviderUnreachable,
    UsageError,
)
from ..store import Entry, Store, meta_holds

PAGE_SIZE = 100  # items a page: downloads start after the first one, and later pages come while they run
AHEAD = 4  # items queued per download thread: bounds memory and what a Ctrl-C has to cancel
WRITERS = 2  # threads that verify and store downloaded audio, so that a download's place is free at once
STORABLE = ("audio/mpeg", "audio/wav", "audio/ogg")  # what the cache keeps and mutagen can measure
MAX_COST_PER_CHARACTER = 10  # a billed count above this many per character of text is not this item's
PROVIDER = "elevenlabs"
UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}  # the folder, not the item
_END = object()  # the pager's last word


class Item(NamedTuple):
    """A history item that can be imported: the line it speaks and where its audio is."""

    item_id: str
    text: str
    voice_id: str
    model_id: str
    key: str
    request_id: str | None = None
    content_type: str = ""  # as listed (the download's own type is the one that counts)
    characters: int | None = None  # what it billed, when the history says so sanely
    date_unix: int | None = None

    def meta(self) -> dict:
        """The entry's metadata fields (the store adds its own)."""
        meta: dict[str, Any] = {"text": self.text, "voiceId": self.voice_id, "modelId": self.model_id,
                                "provider": PROVIDER}
        if self.characters is not None:
            meta["characterCost"] = self.characters
        meta["historyItemId"] = self.item_id
        if self.request_id:
            meta["requestId"] = self.request_id
        if self.date_unix is not None:
            meta["generatedAt"] = _dt.datetime.fromtimestamp(self.date_unix, _dt.UTC).strftime(
                "%Y-%m-%dT%H:%M:%S.000Z")
        return meta


class Outcome(NamedTuple):
    """What became of one history item: a row of the command's output."""

    status: str  # imported | would import | cached | skipped | failed
    item_id: str
    text: str
    key: str | None = None
    voice_id: str | None = None
    model_id: str | None = None
    reason: str | None = None  # why it was skipped or failed; for a cached one, where it is
    entry: Entry | None = None
    mime: str | None = None  # the audio's type, when known
    characters: int | None = None
    other_format: bool = False  # imported as another type than the project's

    def as_dict(self) -> dict:
        row: dict[str, Any] = {"historyItemId": self.item_id, "cacheKey": self.key, "text": self.text,
                               "voiceId": self.voice_id, "modelId": self.model_id, "provider": PROVIDER,
                               "status": self.status}
        if self.reason:
            row["reason"] = self.reason
        if self.mime:
            row["mimeType"] = self.mime
            row["otherFormat"] = self.other_format
        if self.characters is not None:
            row["characterCost"] = self.characters
        if self.entry is not None:
            row.update(duration=self.entry.duration, path=str(self.entry.path), fileSize=self.entry.size)
        return row


@dataclass
class Counts:
    imported: int = 0  # or, in a dry run, would be imported
    other_format: int = 0  # of those, in another type than the project's
    cached: int = 0
    filtered: int = 0
    failed: int = 0
    characters: int = 0  # billed for the imported items (those whose history says)
    listed: int = 0  # items seen in the history

    @property
    def skipped(self) -> int:
        return self.cached + self.filtered

    def summary(self, dry_run: bool = False) -> str:
        done = "would be imported" if dry_run else "imported"
        other = f" ({self.other_format:,} in another format)" if self.other_format else ""
        return (f"{self.imported:,} {done}{other}, {self.skipped:,} skipped ({self.cached:,} cached, "
                f"{self.filtered:,} filtered), {self.failed:,} failed; {self.characters:,} characters")


class ImportInterrupted(Interrupted):
    """Ctrl-C during an import: the counts so far, in one line."""

    def __init__(self, counts: Counts, abandoned: bool = False, what: str = "") -> None:
        NarratorError.__init__(self, f"interrupted{what}: {counts.summary()}; run the same command again to finish")
        done = counts.imported + counts.skipped + counts.failed
        self.done, self.total, self.abandoned = done, counts.listed, abandoned


class _Abandoned(Exception):
    """A second Ctrl-C while waiting for the downloads in flight."""


def read_item(raw: dict) -> Item | str:
    """The importable item, or why it is skipped."""
    from ..keys import cache_key
    from ..providers import key_params
    from ..resolve import check_text

    item_id = raw.get("history_item_id")
    if not isinstance(item_id, str) or not item_id:
        return "no history item id"
    if raw.get("source") != "TTS":
        return f"source {raw.get('source')!s}: not text to speech"
    if raw.get("state") != "created":
        return f"state {raw.get('state')!s}: not a finished generation"
    text, voice, model = raw.get("text"), raw.get("voice_id"), raw.get("model_id")
    if not isinstance(text, str) or not text.strip():
        return "no text"
    if not isinstance(voice, str) or not voice:
        return "no voice id"
    if not isinstance(model, str) or not model:
        return "no model id: its key would be a guess"
    try:
        check_text(text)
        key_params(PROVIDER, voice, model)  # ids the provider could not be asked for (control characters)
    except UsageError as exc:
        return str(exc)
    params = mc.FACTORIES["createElevenLabsNarrator"].key_params({"voiceId": voice, "modelId": model})
    request_id = raw.get("request_id")
    date = raw.get("date_unix")
    return Item(item_id, text, voice, model, cache_key(text, *params),
                request_id if isinstance(request_id, str) and request_id else None,
                str(raw.get("content_type") or ""), billed(raw, text),
                date if isinstance(date, int) and not isinstance(date, bool) and date >= 0 else None)


def billed(raw: dict, text: str) -> int | None:
    """Characters the item cost (``character_count_change_to - character_count_change_from``), when both are
    counts and the difference is one this text could have cost."""
    start, end = raw.get("character_count_change_from"), raw.get("character_count_change_to")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (start, end)):
        return None
    cost = end - start  # type: ignore[operator]
    return cost if 0 <= cost <= MAX_COST_PER_CHARACTER * len(text) else None


def since_unix(text: str, now: float | None = None) -> int:
    """``--since``: a date (YYYY-MM-DD, from local midnight) or an age (``30d``) -> unix time."""
    from ..maintenance import parse_age

    now = time.time() if now is None else now
    shown = repr(text[:40])
    if re.fullmatch(r"\s*\d{4}-\d{1,2}-\d{1,2}\s*", text):
        try:
            when = _dt.datetime.strptime(text.strip(), "%Y-%m-%d").timestamp()
        except (ValueError, OverflowError, OSError):
            raise UsageError(f"invalid date {shown} for --since: no such day (YYYY-MM-DD)") from None
        if when > now:
            raise UsageError(f"--since {text.strip()} is in the future: nothing could be imported")
        return int(when)
    try:
        return int(now - parse_age(text))
    except UsageError:
        raise UsageError(f"invalid --since {shown}: give a date (YYYY-MM-DD) or an age such as 30d") from None


def project_mime(output_format: str) -> str:
    """The audio type the project's ElevenLabs lines are (``[elevenlabs] output_format``)."""
    from ..providers.elevenlabs import FORMAT_MIME

    codec = output_format.split("_", 1)[0]
    if codec not in FORMAT_MIME or codec in ("pcm", "wav"):
        raise UsageError(f"unsupported ElevenLabs output_format {output_format!r} (use an mp3_* or opus_* format)")
    return FORMAT_MIME[codec]


def audio_type(content_type: str, audio: bytes) -> str | None:
    """The type to store downloaded audio as: its declared type when the cache keeps that, else what its
    first bytes say (a generic ``application/octet-stream``); None for anything else."""
    from ..audio import normalise_mime, sniff_mime

    mime = normalise_mime(content_type) if content_type else ""
    if mime in STORABLE:
        return mime
    sniffed = sniff_mime(audio[:16])
    return sniffed if sniffed in STORABLE else None


class Importer:
    """One import: ``run`` pages, sorts, downloads and stores, calling ``report`` with each item's outcome
    (from several threads, one call at a time). ``counts`` holds the tally, also after an error."""

    def __init__(self, account: Any, store: Store, mime: str, concurrency: int = 8, dry_run: bool = False,
                 report: Callable[[Outcome], None] = lambda o: None, voice_id: str | None = None,
                 model_id: str | None = None, since: int | None = None, page_size: int = PAGE_SIZE) -> None:
        self.account, self.store, self.mime = account, store, mime
        self.concurrency = max(1, concurrency)
        self.dry_run = dry_run
        self.filters = {"voice_id": voice_id, "model_id": model_id, "since": since}
        self.page_size = page_size
        self.counts = Counts()
        self.imported_keys: list[str] = []  # stored in this run, or by an earlier import (for the server)
        self._report = report
        self._lock = threading.Lock()
        self._stop = threading.Event()  # nothing new starts: Ctrl-C, or an error that ends the run
        self._fatal: BaseException | None = None  # from a download: every later request would fail too (or a bug)
        self._claimed: dict[str, str] = {}  # key -> text, of the items taken in this run (newest first)
        self._window = threading.Semaphore(self.concurrency * AHEAD)  # items handed out and not yet stored
        self._running: set[Future] = set()  # downloads and writes handed out
        self._downloads: ThreadPoolExecutor
        self._writes: ThreadPoolExecutor

    # --- the run ------------------------------------------------------------------------------
    def run(self) -> Counts:
        self.store.keys()  # a cache folder that cannot be read is said before any request (CacheUnreadable)
        pages: queue.Queue = queue.Queue(maxsize=1)  # one page ahead
        threading.Thread(target=self._page, args=(pages,), name="narrator-history", daemon=True).start()
        if self.dry_run:
            try:
                self._feed(pages)
            finally:
                self._stop.set()
            return self.counts
        self._downloads = ThreadPoolExecutor(self.concurrency, thread_name_prefix="narrator-download")
        self._writes = ThreadPoolExecutor(WRITERS, thread_name_prefix="narrator-store")
        try:
            with self.store.batch():  # entries become visible a group at a time, and all of them at the end
                try:
                    self._feed(pages)
                    self._wait()
                except KeyboardInterrupt:
                    self._halt(cancel_requests=True)
                    try:
                        self._wait()
                    except KeyboardInterrupt:
                        raise _Abandoned from None
                    raise ImportInterrupted(self.counts) from None
                except BaseException:
                    self._halt(cancel_requests=False)  # what is in flight was paid for: store it
                    self._wait(check=False)
                    raise
        except _Abandoned:
            raise ImportInterrupted(self.counts, abandoned=True) from None
        finally:
            self._stop.set()
            for pool in (self._downloads, self._writes):  # all ended by now, unless abandoned
                pool.shutdown(wait=False, cancel_futures=True)
        return self.counts

    def _feed(self, pages: queue.Queue) -> None:
        """Sort each item as its page arrives; hand the ones to fetch to the downloads, a window at a time."""
        while (got := pages.get()) is not _END:
            if isinstance(got, BaseException):
                raise got
            for raw in got:
                if self._fatal is not None:
                    raise self._fatal
                item = self._sort(raw)
                if item is None:
                    continue
                if self.dry_run:
                    self._done(Outcome("would import", item.item_id, item.text, item.key, item.voice_id,
                                       item.model_id, mime=_listed(item), characters=item.characters,
                                       other_format=_listed(item) not in ("", self.mime)))
                    continue
                self._window.acquire()  # released once the item is stored, or done with
                if self._fatal is not None:
                    self._window.release()
                    raise self._fatal
                self._track(self._downloads.submit(self._fetch, item))
        if self._fatal is not None:
            raise self._fatal

    def _track(self, fut: Future) -> None:
        with self._lock:
            self._running.add(fut)
        fut.add_done_callback(self._untrack)

    def _untrack(self, fut: Future) -> None:
        with self._lock:
            self._running.discard(fut)
        if fut.cancelled():  # never ran, so never released its place in the window
            self._window.release()

    def _wait(self, check: bool = True) -> None:
        """Until every download and write handed out has ended (a download hands its write over before it
        ends, so none is missed); then the error that ended the run, if one did."""
        while True:
            with self._lock:
                left = {f for f in self._running if not f.done()}
            if not left:
                break
            wait(left, return_when=FIRST_COMPLETED)
        if check and self._fatal is not None:
            raise self._fatal

    def _halt(self, cancel_requests: bool) -> None:
        """Start no download more: queued ones are dropped; with ``cancel_requests`` (Ctrl-C) not even a retry.
        Audio already downloaded is still stored."""
        self._stop.set()
        if cancel_requests:
            self.account.cancel()
        self._downloads.shutdown(wait=False, cancel_futures=True)

    def _failed(self, exc: BaseException) -> None:
        """An error that ends the run (raised in the caller's thread): every later request would fail too,
        or it is a bug."""
        with self._lock:
            self._fatal = self._fatal or exc
        self._stop.set()

    # --- the parts ----------------------------------------------------------------------------
    def _page(self, pages: queue.Queue) -> None:
        """Every page of the history, newest first, onto ``pages`` (then ``_END``, or the error that stopped it)."""
        after: str | None = None
        seen: set[str] = set()
        try:
            while not self._stop.is_set():
                page = self.account.history(after, self.page_size, **self.filters)
                if not self._put(pages, page.items):
                    return
                if not page.has_more or not page.last_id or page.last_id in seen:  # a cursor that loops ends it
                    break
                seen.add(page.last_id)
                after = page.last_id
            self._put(pages, _END)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, which raises it
            if self._stop.is_set() and isinstance(exc, ProviderError):
                exc = ProviderError("cancelled")
            self._put(pages, exc)

    def _put(self, pages: queue.Queue, what: object) -> bool:
        while not self._stop.is_set():
            try:
                pages.put(what, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _sort(self, raw: dict) -> Item | None:
        """The item to fetch, or None when it is reported here (skipped, cached)."""
        self.counts.listed += 1
        item = read_item(raw)
        text = raw.get("text") if isinstance(raw.get("text"), str) else ""
        item_id = str(raw.get("history_item_id") or "")
        if isinstance(item, str):
            self._done(Outcome("skipped", item_id, text, None, _str(raw.get("voice_id")), _str(raw.get("model_id")),
                               reason=item))
            return None
        line = _line(item)
        taken = self._claimed.get(item.key)
        if taken is not None:
            if taken == item.text:
                self._done(Outcome("cached", *line, reason="a newer item of the same line is taken instead"))
            else:
                self._done(Outcome("skipped", *line, reason=f"key {item.key} is taken by another line in the "
                                                            "history (a key collision)"))
            return None
        self._claimed[item.key] = item.text
        entry = self.store.get(item.key)
        if entry is not None:
            if meta_holds(entry.meta, item.text, item.voice_id, item.model_id):
                if entry.meta.get("historyItemId"):
                    self.imported_keys.append(item.key)
                mime = str(entry.meta.get("mimeType") or "")
                self._done(Outcome("cached", *line, entry=entry, mime=mime or None,
                                   other_format=mime not in ("", self.mime)))
            else:
                other = str(entry.meta.get("text", ""))[:40]
                self._done(Outcome("skipped", *line, reason=f"key {item.key} holds another line ({other!r}); "
                                                            "left as it is"))
            return None
        return item

    def _fetch(self, item: Item) -> None:
        """Download one item's audio (a download thread) and hand it to a write: the download's place is free
        for the next request while this one is verified and stored."""
        handed = False
        try:
            if self._stop.is_set():
                return
            try:
                audio, content_type = self.account.history_audio(item.item_id)
            except (ProviderAuthError, ProviderUnreachable) as exc:
                return self._failed(exc)
            except ProviderError as exc:
                if self._stop.is_set() and str(exc) == "cancelled":
                    return  # Ctrl-C came before this request started: not a failure, just not done
                return self._done(Outcome("failed", *_line(item), reason=str(exc)))
            self._track(self._writes.submit(self._store, item, audio, content_type))
            handed = True
        except BaseException as exc:  # noqa: BLE001 - a bug: raised again in the caller's thread
            self._failed(exc)
        finally:
            if not handed:
                self._window.release()

    def _store(self, item: Item, audio: bytes, content_type: str) -> None:
        """Verify downloaded audio (mutagen) and store it whole, or report why not (a write thread)."""
        from ..audio import measure_duration

        line = _line(item)
        try:
            mime = audio_type(content_type, audio)
            if mime is None:
                return self._done(Outcome("failed", *line, reason=f"audio of type {content_type or 'unknown'!r}, "
                                                                   "which the cache does not keep"))
            try:
                duration = measure_duration(audio, mime)
            except AudioError as exc:
                return self._done(Outcome("failed", *line, reason=f"broken audio, not stored ({exc})", mime=mime))
            try:
                entry = self.store.put(item.key, audio, mime, duration, item.meta())
            except UsageError as exc:  # the cache cannot be read or written at all
                return self._failed(exc)
            except OSError as exc:
                why = f"cannot write to the audio cache {self.store.root}: {exc.strerror or exc}"
                if exc.errno in UNWRITABLE:  # so would every other item be: end the run, with one line
                    return self._failed(UsageError(why))
                return self._done(Outcome("failed", *line, reason=why))
            self._done(Outcome("imported", *line, entry=entry, mime=mime, characters=item.characters,
                               other_format=mime != self.mime))
        except BaseException as exc:  # noqa: BLE001 - a bug: raised again in the caller's thread
            self._failed(exc)
        finally:
            self._window.release()

    def _done(self, outcome: Outcome) -> None:
        with self._lock:
            c = self.counts
            if outcome.status in ("imported", "would import"):
                c.imported += 1
                c.other_format += outcome.other_format
                c.characters += outcome.characters or 0
                if outcome.status == "imported":
                    self.imported_keys.append(str(outcome.key))
            elif outcome.status == "cached":
                c.cached += 1
            elif outcome.status == "skipped":
                c.filtered += 1
            else:
                c.failed += 1
            self._report(outcome)


def _line(item: Item) -> tuple[str, str, str, str, str]:
    """An item's fields in ``Outcome``'s order."""
    return item.item_id, item.text, item.key, item.voice_id, item.model_id


def _listed(item: Item) -> str:
    from ..audio import normalise_mime

    return normalise_mime(item.content_type) if item.content_type else ""


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def share(client: Any, store: Store, keys: list[str], warn: Callable[[str], None], counts: Counts) -> int:
    """Upload the imported entries the team server lacks (best effort: a failure is a warning); how many
    went. Ctrl-C stops the uploads (``ImportInterrupted``); what went stays."""
    from ..client import ServerUnavailable
    from ..team import upload

    keys = list(dict.fromkeys(keys))
    if not keys:
        return 0
    failed: list[dict] = []
    sent = 0

    def report(row: dict) -> None:
        nonlocal sent
        if row["status"] == "failed":
            failed.append(row)
        sent += row["status"] == "uploaded"

    try:
        client.connect()
        upload(client, store, keys, False, report, warn)
    except ServerUnavailable as exc:
        warn(f"imported entries not uploaded: {exc}")
    except Interrupted:
        raise ImportInterrupted(counts, what=f" while uploading ({sent} uploaded)") from None
    finally:
        client.close()
    if failed:
        warn(f"{len(failed)} of {len(keys)} uploads failed (first: {failed[0]['cacheKey']}: {failed[0].get('error')})")
    return sent
