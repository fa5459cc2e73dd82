"""The audio-cache folder: the only module that knows its layout.

Layout (shared with motion-canvas-narrator): ``{key}.{ext}`` next to
``{key}.meta.json``. An entry is visible only when its metadata parses, names
an audio file of the right shape that exists, and the sizes agree: so a reader
never sees a half-written entry, only a complete one or none.

Writes go to a uniquely named temporary file in the same folder, are fsynced
and then renamed. The commit (the two renames) holds an exclusive ``flock`` on
the folder itself, so concurrent writers of one key end with one consistent
entry, and a process killed at any instant leaves at worst an orphan that
readers ignore and ``cleanup`` removes.

Besides entries the folder holds the hits log (``HITS_NAME``): a dot name, so the
plugin, ``scan`` and ``cleanup`` pass it by as they pass any name of no entry.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from .errors import UsageError
from .keys import is_key

MIME_EXT = {"audio/mpeg": "mp3", "audio/wav": "wav", "audio/ogg": "ogg", "audio/webm": "webm"}
META_SUFFIX = ".meta.json"
TMP_SUFFIX = ".tmp"
GROUP_COMMIT = 256  # queued entries a batch makes durable at once
STRAY_TMP_AGE = 600.0  # a temporary file this old belongs to no live writer
SERVER_FIELDS = ("cacheKey", "fileName", "fileSize", "mimeType", "duration", "createdAt")
_AUDIO_RE = re.compile(r"([0-9a-f]{8})\.(mp3|wav|ogg|webm)")
_META_RE = re.compile(r"([0-9a-f]{8})\.meta\.json")
_AUDIO_SUFFIXES = {f".{ext}" for ext in MIME_EXT.values()}
# The hits log: ``{count} {key}`` lines, appended (each write starts with a newline, so a line torn by a crash ends
# there and is skipped, never glued to the next), rewritten only by ``rewrite_hits``. The key is last and of fixed
# length, so no torn prefix of a line reads as a line.
HITS_NAME = ".narrator-hits"
_HIT_RE = re.compile(rb"([1-9][0-9]{0,17}) ([0-9a-f]{8})")
_HITS_OPEN = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
              | getattr(os, "O_CLOEXEC", 0))
# what makes one entry a miss (absent, damaged, a folder where a file should be); any other OSError is the cache's
_BROKEN = (FileNotFoundError, IsADirectoryError, ValueError, RecursionError)


class CacheUnreadable(UsageError):
    """The cache folder, or an entry's metadata, cannot be read (permissions, not a folder, I/O error).

    An environment problem to fix, never a miss: a miss would pay for the line again and then fail to store it.
    """


class Entry(NamedTuple):
    key: str
    meta: dict
    path: Path
    mtime: float = 0.0  # last use: the audio file's mtime, refreshed on every hit
    meta_size: int = 0  # bytes of its metadata file, known from reading it

    @property
    def size(self) -> int:
        """The audio's bytes (``fileSize``), what is served and downloaded."""
        return int(self.meta["fileSize"])

    @property
    def disk_size(self) -> int:
        """What the entry takes in the folder, audio and metadata: what removing it frees."""
        return int(self.meta["fileSize"]) + self.meta_size

    @property
    def duration(self) -> float:
        return float(self.meta.get("duration") or 0.0)

    def holds(self, text: str, voice_id: str, model_id: str) -> bool:
        return meta_holds(self.meta, text, voice_id, model_id)


class Scan(NamedTuple):
    """One pass over the folder: complete entries and everything broken."""

    entries: list[Entry]
    broken: list[Path]  # parts of no complete entry
    temporary: list[Path]  # stray temporary files
    missing: bool = False  # no cache folder yet


class HitsMark(NamedTuple):
    """How far the hits log was read: the file (device, inode) and the offset after its last whole line."""

    dev: int
    ino: int
    offset: int
    whole: bool  # the read started at the beginning: its counts replace, not add to, what was read before


class Removed(NamedTuple):
    """What ``Store.remove`` did: bytes freed, and the part it could not remove with why (None: all went)."""

    freed: int
    failed: tuple[Path, str] | None = None


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def meta_holds(meta: dict, text: str, voice_id: str, model_id: str, fmt: str | None = None) -> bool:
    """False when metadata records another line under this key (keys collide).

    Entries written by the Motion Canvas plugin record no text; they are
    trusted on voice and model, as that plugin trusts them. ``fmt``: the
    format a line is keyed with (MiniMax), checked when the entry records one.
    """
    return (
        meta.get("text", text) == text
        and meta.get("voiceId", voice_id) == voice_id
        and meta.get("modelId", model_id) == model_id
        and (fmt is None or meta.get("format", fmt) == fmt)
    )


def parse_hits(data: bytes, into: dict[str, int]) -> int:
    """Add the hits of each whole, well-formed ``{count} {key}`` line of ``data`` to ``into``; the bytes
    read (up to the last newline: a line still being written waits, one torn is skipped)."""
    end = data.rfind(b"\n") + 1
    for line in data[:end].split(b"\n"):
        m = _HIT_RE.fullmatch(line)
        if m is not None:
            key = m.group(2).decode()
            into[key] = into.get(key, 0) + int(m.group(1))
    return end


def check_key(key: str) -> str:
    if not is_key(key):
        raise UsageError(f"invalid cache key {key!r}: expected 8 lowercase hex characters")
    return key


class Store:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._batch = 0  # commits in a batch are queued and made durable together (group commit)
        self._queue: list[_Pending] = []
        self._queue_lock = threading.Lock()

    # --- names -------------------------------------------------------------
    def meta_path(self, key: str) -> Path:
        return self.root / f"{check_key(key)}{META_SUFFIX}"

    def audio_path(self, key: str, mime: str) -> Path:
        ext = MIME_EXT.get(mime)
        if ext is None:
            raise UsageError(f"unsupported audio type {mime!r}")
        return self.root / f"{check_key(key)}.{ext}"

    # --- reading -----------------------------------------------------------
    def get(self, key: str) -> Entry | None:
        """The complete entry for ``key``, or None (absent, or broken: a miss, never a crash).

        Raises CacheUnreadable when the folder or the metadata cannot be read at all.
        """
        meta_path = self.meta_path(key)
        try:
            raw = meta_path.read_bytes()
            st_path, meta = _entry_files(self.root, key, raw)
            st = os.stat(st_path)
        except _BROKEN:
            return None
        except OSError as exc:
            raise self._unreadable(meta_path, exc) from None
        if st.st_size != meta["fileSize"]:
            return None
        return Entry(key, meta, st_path, st.st_mtime, len(raw))

    def read_audio(self, entry: Entry) -> bytes | None:
        """The audio bytes if they still match the recorded hash (when there is one)."""
        try:
            data = entry.path.read_bytes()
        except OSError:
            return None
        import hashlib

        digest = entry.meta.get("sha256")
        if digest and hashlib.sha256(data).hexdigest() != digest:
            return None
        return data

    def listing(self) -> dict[str, tuple[str, int]]:
        """key -> (audio file name, size) for every key with a metadata file and an audio file, from one
        listing: cheap enough to compare 20,000 entries (no regular expression, no metadata read)."""
        try:
            with os.scandir(self.root) as found:
                names = {d.name: d for d in found}
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise self._unreadable(self.root, exc) from None
        metas = {name[:8] for name in names if len(name) == 18 and _META_RE.fullmatch(name)}  # keys only
        out: dict[str, tuple[str, int]] = {}
        for name, dirent in names.items():
            if len(name) > 9 and name[8] == "." and name[:8] in metas and name[8:] in _AUDIO_SUFFIXES:
                try:
                    out[name[:8]] = (name, dirent.stat(follow_symlinks=False).st_size)
                except OSError:
                    continue
        return out

    def meta_bytes(self, key: str) -> bytes | None:
        """The raw metadata of a key from ``listing`` (None if it cannot be read). The path is a plain
        string: building 20,000 ``Path`` objects cost more than reading the files."""
        try:
            fd = os.open(f"{self.root}{os.sep}{key}{META_SUFFIX}", os.O_RDONLY)
            try:
                return os.read(fd, 1 << 20)
            finally:
                os.close(fd)
        except OSError:
            return None

    def touch(self, entry: Entry) -> None:
        """Mark a use, for least-recently-used eviction."""
        with contextlib.suppress(OSError):
            os.utime(entry.path)

    def keys(self) -> set[str]:
        """Keys that have metadata, from the listing alone: cheap enough to poll."""
        try:
            return {m.group(1) for name in os.listdir(self.root) if (m := _META_RE.fullmatch(name))}
        except FileNotFoundError:
            return set()
        except OSError as exc:
            raise self._unreadable(self.root, exc) from None

    def scan(self) -> Scan:
        """Every entry and every broken part, from one directory listing."""
        result = Scan([], [], [])
        try:
            with os.scandir(self.root) as found:
                listing = {e.name: e for e in found if e.is_file(follow_symlinks=False)}
        except FileNotFoundError:
            return result._replace(missing=True)
        except OSError as exc:
            raise self._unreadable(self.root, exc) from None
        claimed: set[str] = set()
        cutoff = time.time() - STRAY_TMP_AGE
        for name, dirent in listing.items():
            if name.endswith(TMP_SUFFIX) and name.startswith("."):
                with contextlib.suppress(FileNotFoundError):  # its writer just renamed it
                    if dirent.stat().st_mtime < cutoff:
                        result.temporary.append(Path(dirent.path))
                continue
            m = _META_RE.fullmatch(name)
            if not m:
                continue
            key = m.group(1)
            try:
                with open(dirent.path, "rb") as fh:
                    raw = fh.read()
                path, meta = _entry_files(self.root, key, raw)
                audio = listing.get(path.name)
                if audio is None:
                    raise ValueError("no audio")
                st = audio.stat()
                if st.st_size != meta["fileSize"]:
                    raise ValueError("size mismatch")
            except _BROKEN:
                result.broken.append(Path(dirent.path))
                continue
            except OSError as exc:  # not a broken entry: one we may not read, so cleanup must not take it
                raise self._unreadable(Path(dirent.path), exc) from None
            claimed.add(path.name)
            result.entries.append(Entry(key, meta, path, st.st_mtime, len(raw)))
        for name in listing:
            if _AUDIO_RE.fullmatch(name) and name not in claimed:
                result.broken.append(self.root / name)
        return result

    # --- the hits log --------------------------------------------------------
    @property
    def hits_path(self) -> Path:
        return self.root / HITS_NAME

    def record_hits(self, counts: dict[str, int]) -> bool:
        """Append ``counts`` (key -> hits) to the hits log in one ``O_APPEND`` write, so concurrent
        writers never interleave within a line; False when it could not (no folder, read-only, not a file).

        A shared ``flock`` keeps the write off a log that ``rewrite_hits`` is replacing: a write that
        waited for one finds its file unlinked (``st_nlink`` 0) and goes to the new log instead. Never
        creates the cache folder, and never fails a command: the log is a statistic."""
        lines = "".join(f"{n} {key}\n" for key, n in counts.items() if n > 0)
        if not lines:
            return True
        data = f"\n{lines}".encode()
        try:
            import fcntl
        except ImportError:  # Windows: appends are still whole, only a rewrite may lose one
            fcntl = None  # type: ignore[assignment]
        for _ in range(3):
            try:
                fd = os.open(self.hits_path, _HITS_OPEN, 0o644)
            except OSError:
                return False
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_SH)
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    return False
                if st.st_nlink == 0:  # replaced while we waited for the lock
                    continue
                return os.write(fd, data) == len(data)
            except OSError:
                return False
            finally:
                os.close(fd)
        return False

    def read_hits(self, since: HitsMark | None = None) -> tuple[dict[str, int], HitsMark | None]:
        """Hits per key in the log, and how far it was read: only those after ``since`` when it marks this
        same file (a rewrite replaces the file, and then all are read: the mark says ``whole``).
        Only whole lines count; a torn or garbage line is skipped. No log, or an unreadable one: nothing, no mark."""
        counts: dict[str, int] = {}
        try:
            fd = os.open(self.hits_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            return counts, None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return counts, None
            start = 0
            if since is not None and (since.dev, since.ino) == (st.st_dev, st.st_ino) and since.offset <= st.st_size:
                start = since.offset
            chunks = []
            os.lseek(fd, start, os.SEEK_SET)
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
        except OSError:
            return counts, None
        finally:
            os.close(fd)
        used = parse_hits(b"".join(chunks), counts)
        return counts, HitsMark(st.st_dev, st.st_ino, start + used, start == 0)

    def rewrite_hits(self, keep: set[str]) -> None:
        """Drop the log's lines of keys not in ``keep`` and merge the rest, one line per key (temporary file
        and rename; no log left when nothing stays). Hold ``locked()``; appends wait on the log's own lock."""
        try:
            import fcntl
        except ImportError:
            fcntl = None  # type: ignore[assignment]
        path = self.hits_path
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:  # none, or not ours to touch (a symlink)
            return
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink == 0:
                return
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            data = b"".join(chunks)
            counts: dict[str, int] = {}
            parse_hits(data, counts)
            new = "".join(f"{n} {key}\n" for key, n in counts.items() if key in keep).encode()
            if new == data:
                return
            if os.lstat(path).st_ino != st.st_ino:  # not the file we read: leave it
                return
            if not new:
                path.unlink()
                return
            staged = Staged(self.root)
            try:
                staged.write(new)
                staged.close()
                os.replace(staged.path, path)
            finally:
                staged.discard()
        except OSError:
            return
        finally:
            os.close(fd)

    # --- writing -----------------------------------------------------------
    def put(self, key: str, audio: bytes, mime: str, duration: float, meta: dict | None = None,
            created_at: str | None = None) -> Entry:
        """Store ``audio`` as the entry for ``key``, atomically; returns the entry.

        ``meta`` adds fields (text, voiceId, provider, ...); it can never
        overwrite the fields this store owns.
        """
        self.audio_path(key, mime)  # refuse a bad key or type before writing anything
        staged = self.stage()
        try:
            staged.write(audio)
            return self.commit(staged, key, mime, duration, meta, created_at)
        finally:
            staged.discard()

    def stage(self) -> Staged:
        """A temporary file to write an entry's audio into, piece by piece, before ``commit``."""
        try:
            return Staged(self.root)
        except FileNotFoundError:  # the first write, or the folder was removed meanwhile
            self.root.mkdir(parents=True, exist_ok=True)
            return Staged(self.root)

    def record(self, key: str, mime: str, duration: float, size: int, sha256: str, meta: dict | None = None,
               created_at: str | None = None) -> dict:
        """The metadata ``commit`` writes for this audio: known before the audio is in the folder, so a
        read-through can answer with it while the copy is made (and commit it with the same ``created_at``)."""
        record = dict(meta or {})
        for name in SERVER_FIELDS:
            record.pop(name, None)
        return {
            "cacheKey": key,
            "duration": duration,
            "mimeType": mime,
            "fileSize": size,
            "fileName": self.audio_path(key, mime).name,
            "createdAt": created_at or now_iso(),
            **record,
            "sha256": sha256,
        }

    def commit(self, staged: Staged, key: str, mime: str, duration: float, meta: dict | None = None,
               created_at: str | None = None) -> Entry:
        """Make the staged audio the entry for ``key``: fsync, write the metadata, rename both.

        Inside ``batch()`` the entry is queued instead, and visible once its group is flushed (see ``batch``)."""
        audio_path = self.audio_path(key, mime)
        record = self.record(key, mime, duration, staged.size, staged.sha256, meta, created_at)
        grouped = self._batch > 0
        audio_tmp = staged.close(durable=not grouped)
        meta_tmp = Staged(self.root)
        try:
            meta_bytes = json.dumps(record, indent=2, ensure_ascii=False).encode()
            meta_tmp.write(meta_bytes)
            meta_tmp.close(durable=not grouped)
            pending = _Pending(key, audio_tmp, audio_path, meta_tmp.path, self.meta_path(key))
            if grouped:
                staged.hand_over()
                meta_tmp.hand_over()
                self._enqueue(pending)
                return Entry(key, record, audio_path, time.time(), len(meta_bytes))
            with self.locked():
                self._rename(pending)
            _fsync_dir(self.root)  # the renames' durability; other writers need not wait for it
        finally:
            meta_tmp.discard()
        st = os.stat(audio_path)
        return Entry(key, record, audio_path, st.st_mtime, len(meta_bytes))

    def _rename(self, p: _Pending) -> None:
        """The commit proper, under ``locked()``: the entry vanishes before its audio changes, metadata last."""
        _unlink(p.meta_path)
        os.replace(p.audio_tmp, p.audio_path)
        os.replace(p.meta_tmp, p.meta_path)
        for ext in MIME_EXT.values():
            if ext != p.audio_path.suffix[1:]:
                _unlink(self.root / f"{p.key}.{ext}")

    def _enqueue(self, pending: _Pending) -> None:
        """Queue a commit; flush when the group is full, or when its batch ended meanwhile (a late thread)."""
        with self._queue_lock:
            self._queue.append(pending)
            full = len(self._queue) >= GROUP_COMMIT or not self._batch
        if full:
            self.flush()

    def flush(self) -> None:
        """Commit every queued entry: one sync of the folder's filesystem makes all their staged files durable,
        then they are renamed under the folder lock, then one fsync of the folder. Data is on disk before any
        rename, so a crash loses whole queued entries (their ``.tmp`` files are strays for ``cleanup``), never
        part of one. A queued entry that cannot be renamed loses only itself; the first such error is raised
        after the others are committed."""
        with self._queue_lock:
            queue, self._queue = self._queue, []
        if not queue:
            return
        error: OSError | None = None
        failed: list[_Pending] = []
        tried = 0
        try:
            _sync_filesystem(self.root)
            with self.locked():
                for pending in queue:
                    tried += 1
                    try:
                        self._rename(pending)
                    except OSError as exc:
                        error = error or exc
                        failed.append(pending)
        finally:
            for pending in failed + queue[tried:]:  # not renamed: their temporary files go
                _unlink(pending.audio_tmp)
                _unlink(pending.meta_tmp)
        _fsync_dir(self.root)
        if error is not None:
            raise error

    def remove(self, paths: list[Path]) -> Removed:
        """Delete the parts of one thing, in order (an entry: metadata first, so it vanishes before its audio).

        Stops at the first part that cannot go, so a failure leaves the entry whole where it can; a part
        already gone counts as removed. Hold ``locked()``.
        """
        freed = 0
        for path in paths:
            try:
                size = os.lstat(path).st_size
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                return Removed(freed, (path, exc.strerror or str(exc)))
            freed += size
        return Removed(freed)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Many commits made durable together (a bulk pull): a group commit.

        Commits inside it are queued, not fsynced one by one; every ``GROUP_COMMIT`` entries, and at the
        end (also on an error or Ctrl-C), ``flush`` commits them. Until then a queued entry is not visible:
        readers see it whole or not at all, as always."""
        with self._queue_lock:
            self._batch += 1
        try:
            yield
        finally:
            with self._queue_lock:
                self._batch -= 1
                last = not self._batch
            if last:
                self.flush()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive lock on the cache folder for the few syscalls of a commit."""
        try:
            import fcntl
        except ImportError:  # Windows: renames are still atomic, commits just not serialised
            yield
            return
        try:
            fd = os.open(self.root, os.O_RDONLY)
        except FileNotFoundError:  # nothing to protect yet
            yield
            return
        except OSError as exc:
            raise self._unreadable(self.root, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _unreadable(self, path: Path, exc: OSError) -> CacheUnreadable:
        """The error for a cache that cannot be read, naming the folder when the folder is what fails."""
        root = self.root
        try:
            if not stat.S_ISDIR(os.stat(root).st_mode):
                return CacheUnreadable(f"the audio cache {root} is not a folder")
            os.scandir(root).close()
        except NotADirectoryError:
            return CacheUnreadable(f"the audio cache {root} is not a folder: part of its path is a file")
        except FileNotFoundError:
            pass
        except OSError as folder_exc:
            path, exc = root, folder_exc
        return CacheUnreadable(f"cannot read the audio cache: {path}: {exc.strerror or exc}")


class Staged:
    """A temporary file in the cache folder, hashed as it is written.

    A large upload is written while it still arrives, so that by its last byte
    the audio is on disk and hashed, not copied and hashed all at once. Readers
    never see it (dot name, ``TMP_SUFFIX``); ``cleanup`` removes it if its
    writer dies. ``close`` keeps the file, ``discard`` deletes it (safe to repeat).
    """

    def __init__(self, root: Path) -> None:
        import hashlib

        self.path = root / f".{os.getpid()}.{os.urandom(6).hex()}{TMP_SUFFIX}"
        self.size = 0
        self._handed_over = False
        self._hash = hashlib.sha256()
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert self._fd is not None, "write after close"
        view = memoryview(data)
        self._hash.update(view)
        self.size += len(view)
        while view:
            view = view[os.write(self._fd, view):]

    def close(self, durable: bool = True) -> Path:
        """Keep the file, flushed to disk unless ``durable`` is False (a group commit syncs it later);
        its path, for the caller to rename."""
        assert self._fd is not None, "closed twice"
        fd, self._fd = self._fd, None
        try:
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        return self.path

    def hand_over(self) -> None:
        """A group commit owns the closed file now: ``discard`` leaves it alone."""
        self._handed_over = True

    def discard(self) -> None:
        """Delete the file unless it was renamed away or handed over (the name is never reused)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if not self._handed_over:
            _unlink(self.path)


class _Pending(NamedTuple):
    """A queued commit of a group: staged files and the names they take."""

    key: str
    audio_tmp: Path
    audio_path: Path
    meta_tmp: Path
    meta_path: Path


def _entry_files(root: Path, key: str, raw: bytes) -> tuple[Path, dict]:
    """Validate metadata bytes; the audio path they point at, never outside ``root``."""
    meta = json.loads(raw)
    if not isinstance(meta, dict):
        raise ValueError("metadata is not an object")
    name = meta.get("fileName")
    m = _AUDIO_RE.fullmatch(name) if isinstance(name, str) else None
    if not m or m.group(1) != key or meta.get("cacheKey", key) != key:
        raise ValueError("metadata names another file")
    size = meta.get("fileSize")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError("bad fileSize")
    return root / name, meta


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _sync_filesystem(path: Path) -> None:
    """Flush every written file of the filesystem holding ``path`` to disk (``syncfs``; ``sync`` without it)."""
    if hasattr(os, "sync"):
        import ctypes

        try:
            syncfs = ctypes.CDLL(None, use_errno=True).syncfs
        except (OSError, AttributeError):
            os.sync()
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            if syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), str(path))
        finally:
            os.close(fd)
