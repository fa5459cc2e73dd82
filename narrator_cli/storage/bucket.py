"""An S3-compatible bucket holding cache entries in the folder's layout: ``PREFIX/{key}.{ext}`` and
``PREFIX/{key}.meta.json``.

The metadata is written last and carries the audio's size and sha256, so a reader never takes a half-uploaded
or corrupted entry: ``get`` verifies both and refuses (``Corrupt``) what does not match. Both objects are
created with ``If-None-Match: *``, so two writers of one key never overwrite each other: one wins whole.
Errors come in three kinds: a miss (``None``), ``Denied`` (credentials or bucket wrong: configuration) and
``Unavailable`` (unreachable, throttling, a 5xx: try again later).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from ..errors import NarratorError, UsageError
from . import SCHEME
from .signed import Reply, SignedReads, TransportError, untrusted

META_SUFFIX = ".meta.json"
STALE_ORPHAN = 600.0  # an audio object without metadata this old belongs to a writer that died
_AUDIO_NAME = re.compile(r"([0-9a-f]{8})\.(mp3|wav|ogg|webm)")
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_DENIED = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "TokenRefreshRequired",
           "AuthorizationHeaderMalformed", "InvalidClientTokenId", "AccountProblem", "AllAccessDisabled"}
_UNAVAILABLE = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
                "RequestTimeout", "ServiceUnavailable", "InternalError", "429", "500", "502", "503", "504"}
HEAD_WORKERS = 8
_POOL_LOCK = threading.Lock()


class StorageError(NarratorError):
    """The bucket failed in a way worth one line."""


class Denied(UsageError):
    """Wrong credentials, or no such bucket: every further request would fail too (configuration: exit 2)."""


class Untrusted(Denied):
    """An https endpoint whose certificate is refused: configuration, like a server's (exit 2)."""


class Unavailable(StorageError):
    """Unreachable, throttling or failing for now: the caller keeps working without it and retries later."""


class Corrupt(StorageError):
    """An object whose bytes do not match its metadata: refused, never served."""


class Bucket:
    """One bucket and prefix; thread-safe (boto3 clients are), so a queue thread and the CLI can share it."""

    def __init__(self, client: Any, name: str, prefix: str, reads: SignedReads) -> None:
        self.client, self.name, self.prefix, self.reads = client, name, prefix.strip("/"), reads
        self._executor: ThreadPoolExecutor | None = None

    @classmethod
    def from_url(cls, url: str, ca_file: str | None = None, insecure: bool = False) -> Bucket:
        """``s3://BUCKET/PREFIX``; endpoint, region and credentials from the usual ``AWS_*`` environment.
        ``ca_file`` / ``insecure``: how an https endpoint's certificate is checked, as for a server."""
        name, prefix = parse_url(url)
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise UsageError("an s3:// bucket needs boto3: pip install 'narrator-cli[s3]'") from None
        custom = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        config = Config(s3={"addressing_style": "path"} if custom else {}, connect_timeout=3, read_timeout=20,
                        retries={"max_attempts": 2, "mode": "standard"}, max_pool_connections=HEAD_WORKERS * 2)
        try:
            session = boto3.session.Session()
            if not session.region_name and custom:
                session = boto3.session.Session(region_name="us-east-1")  # a custom endpoint seldom cares
            verify: bool | str | None = False if insecure else (ca_file or None)
            client = session.client("s3", config=config, verify=verify)
            reads = SignedReads(client, HEAD_WORKERS * 2, ca_file, insecure)
        except Exception as exc:  # noqa: BLE001 - botocore's configuration errors have no common base
            raise UsageError(f"cannot use {url}: {exc}") from None
        return cls(client, name, prefix, reads)

    @property
    def url(self) -> str:
        return f"{SCHEME}{self.name}/{self.prefix}" if self.prefix else f"{SCHEME}{self.name}"

    def object_name(self, file_name: str) -> str:
        return f"{self.prefix}/{file_name}" if self.prefix else file_name

    # --- reading -------------------------------------------------------------
    def probe(self) -> None:
        """One GET of a key that is not there: raises ``Denied`` or ``Unavailable``, else the bucket is usable."""
        self._get(self.object_name(".narrator-probe"))

    def get(self, key: str) -> tuple[dict, bytes] | None:
        """(metadata, audio) when the bucket holds a whole entry for ``key``; None for a miss.
        Raises ``Corrupt`` for bytes that do not match their metadata.

        One round trip, not two: ``{key}.mp3`` (almost every entry's audio) is asked for alongside the metadata;
        the metadata's ``fileName`` is fetched after it only when it names another file."""
        guess = f"{key}.mp3"
        audio_get = self._pool().submit(self._get, self.object_name(guess))
        try:
            raw = self._get(self.object_name(key + META_SUFFIX))
        except BaseException:
            audio_get.cancel()
            raise
        if raw is None:
            audio_get.cancel()
            return None
        meta = _parse_meta(key, raw, self.url)
        if meta["fileName"] != guess:
            audio_get.cancel()
            audio = self.read_audio(meta)
        else:
            audio = audio_get.result()
            if audio is not None:
                _verify(meta, audio, self.url)
        return None if audio is None else (meta, audio)

    def _pool(self) -> ThreadPoolExecutor:
        """Threads for the audio GET that goes alongside a metadata GET (made on first use)."""
        with _POOL_LOCK:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(HEAD_WORKERS, thread_name_prefix="narrator-bucket")
            return self._executor

    def meta(self, key: str) -> dict | None:
        """The valid metadata of ``key`` or None (a miss); ``Corrupt`` when it is not entry metadata."""
        raw = self._get(self.object_name(key + META_SUFFIX))
        return None if raw is None else _parse_meta(key, raw, self.url)

    def read_audio(self, meta: dict) -> bytes | None:
        """The audio ``meta`` (valid, from ``meta``) describes, verified; None when it is gone (being deleted,
        or lost: a miss either way); ``Corrupt`` when its bytes differ."""
        audio = self._get(self.object_name(meta["fileName"]))
        if audio is not None:
            _verify(meta, audio, self.url)
        return audio

    def exists(self, keys: Iterable[str]) -> dict[str, bool]:
        """key -> whether the bucket holds its metadata (a HEAD each, a few at a time)."""
        keys = list(keys)
        if len(keys) <= 1:
            return {k: self._exists(k) for k in keys}
        with ThreadPoolExecutor(min(HEAD_WORKERS, len(keys))) as pool:
            return dict(zip(keys, pool.map(self._exists, keys)))

    def keys(self) -> set[str]:
        """Every key with metadata in the bucket (a paginated listing)."""
        return set(self.listing())

    def listing(self) -> dict[str, dict]:
        """key -> what one paginated listing tells of each entry with metadata: ``fileName`` and ``fileSize`` of
        its audio (absent while the audio is missing), ``bytes``, audio and metadata together, and ``modified``,
        when the entry was completed (unix time). No
        sha256, text or duration: those are in each metadata object, a GET each."""
        metas: dict[str, int] = {}
        made: dict[str, float] = {}  # key -> when its metadata object was written (unix time)
        audio: dict[str, tuple[str, int]] = {}
        start = f"{self.prefix}/" if self.prefix else ""
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=start):
                for obj in page.get("Contents", ()):
                    name = obj["Key"][len(start):]
                    if name.endswith(META_SUFFIX) and re.fullmatch(r"[0-9a-f]{8}", name[:-len(META_SUFFIX)]):
                        metas[name[:8]] = int(obj.get("Size") or 0)
                        modified = obj.get("LastModified")
                        if isinstance(modified, datetime):
                            made[name[:8]] = modified.timestamp()
                    elif (m := _AUDIO_NAME.fullmatch(name)) is not None:
                        audio[m.group(1)] = (name, int(obj.get("Size") or 0))
        except Exception as exc:  # noqa: BLE001 - mapped to our three kinds
            raise _translate(exc, self.url) from None
        found: dict[str, dict] = {}
        for key, meta_size in metas.items():
            row: dict = {"bytes": meta_size, "modified": made.get(key, 0.0)}
            if key in audio:
                row.update(fileName=audio[key][0], fileSize=audio[key][1], bytes=meta_size + audio[key][1])
            found[key] = row
        return found

    # --- writing -------------------------------------------------------------
    def put(self, meta: dict, audio: bytes) -> bool:
        """Create the entry: audio first, metadata last, neither over an existing object. True if this
        writer's entry is the one in the bucket now, False if another writer's won (not an error)."""
        key, digest = meta["cacheKey"], hashlib.sha256(audio).hexdigest()
        if len(audio) != meta.get("fileSize") or digest != meta.get("sha256"):
            raise Corrupt(f"{key}: the local audio does not match its metadata: not uploaded")
        audio_name = self.object_name(meta["fileName"])
        mime = str(meta.get("mimeType") or "application/octet-stream")
        if not self._create(audio_name, audio, mime, {"sha256": digest}):
            head = self._head(audio_name)
            theirs = (head or {}).get("Metadata", {}).get("sha256")
            if theirs != digest:
                if self._exists(key):
                    return False  # another writer's entry is whole
                if head is not None and _age(head) < STALE_ORPHAN:
                    return False  # another writer is between its audio and its metadata
                self._put(audio_name, audio, mime, {"sha256": digest})  # the orphan of a writer that died
        body = json.dumps(meta, indent=2, ensure_ascii=False).encode()
        return self._create(self.object_name(key + META_SUFFIX), body, "application/json", {})

    def delete(self, key: str) -> None:
        """The metadata first (the entry is gone for readers at once), then the audio."""
        raw = self._get(self.object_name(key + META_SUFFIX))
        names = [self.object_name(key + META_SUFFIX)]
        if raw is not None:
            try:
                names.append(self.object_name(_parse_meta(key, raw, self.url)["fileName"]))
            except Corrupt:
                pass
        try:
            for name in names:
                self.client.delete_object(Bucket=self.name, Key=name)
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, self.url) from None

    # --- requests ------------------------------------------------------------
    def _read(self, method: str, name: str, headers: dict[str, str] | None = None) -> Reply:
        try:
            return self.reads.request(method, self.name, name, headers)
        except TransportError as exc:
            if exc.untrusted:
                raise _untrusted(self.url, exc.untrusted) from None
            raise Unavailable(f"{self.url}: unavailable ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - signing: no credentials, a bad configuration
            raise _translate(exc, self.url) from None

    def _get(self, name: str) -> bytes | None:
        reply = self._read("GET", name)
        if reply.status == 200:
            return reply.body
        if reply.status == 404 or reply.code == "AccessDenied":  # no list rights: a missing key is a 403
            return None
        raise _refused(reply, self.url)

    def _head(self, name: str) -> dict | None:
        """``Metadata`` (``sha256``) and ``LastModified`` of ``name``; {} when it is there but a policy hides
        them, None when it is not there."""
        reply = self._read("HEAD", name)
        if reply.status == 200:
            try:
                modified = parsedate_to_datetime(reply.headers.get("last-modified", ""))
            except (TypeError, ValueError):  # none, or not a date: its age is unknown (0, see _age)
                modified = None
            return {"Metadata": {"sha256": reply.headers.get("x-amz-meta-sha256")}, "LastModified": modified}
        if reply.status == 404:
            return None
        if reply.status == 403:  # a HEAD's 403 has no body: a GET tells a missing key from bad credentials
            return {} if self._get_range(name) else None
        raise _refused(reply, self.url)

    def _get_range(self, name: str) -> bool:
        """Whether ``name`` is there, by a one-byte GET (its refusal, unlike a HEAD's, says why)."""
        reply = self._read("GET", name, {"Range": "bytes=0-0"})
        if reply.status in (200, 206) or reply.code == "InvalidRange":  # InvalidRange: an empty object is there
            return True
        if reply.status == 404 or reply.code == "AccessDenied":
            return False
        raise _refused(reply, self.url)

    def _exists(self, key: str) -> bool:
        return self._head(self.object_name(key + META_SUFFIX)) is not None

    def _create(self, name: str, body: bytes, mime: str, metadata: dict[str, str]) -> bool:
        """Put unless the object exists: False when it does (PreconditionFailed, or a 409 of a race)."""
        try:
            self.client.put_object(Bucket=self.name, Key=name, Body=body, ContentType=mime, Metadata=metadata,
                                   IfNoneMatch="*")
            return True
        except Exception as exc:  # noqa: BLE001
            if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise _translate(exc, self.url) from None

    def _put(self, name: str, body: bytes, mime: str, metadata: dict[str, str]) -> None:
        try:
            self.client.put_object(Bucket=self.name, Key=name, Body=body, ContentType=mime, Metadata=metadata)
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, self.url) from None


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://BUCKET/PREFIX``, or a one-line UsageError."""
    if not isinstance(url, str) or not url.lower().startswith(SCHEME):
        raise UsageError(f"not a bucket URL (s3://BUCKET/PREFIX): {url!r}")
    name, _, prefix = url[len(SCHEME):].partition("/")
    if not _BUCKET_NAME.fullmatch(name) or ".." in name:
        raise UsageError(f"{url!r}: {name!r} is not a bucket name (3 to 63 lowercase letters, digits, '.', '-')")
    prefix = prefix.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")) or any(ord(c) < 32 for c in prefix):
        raise UsageError(f"{url!r}: the prefix must be plain path parts")
    return name, prefix


def _parse_meta(key: str, raw: bytes, where: str) -> dict:
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError):
        meta = None
    ok = isinstance(meta, dict) and meta.get("cacheKey", key) == key and isinstance(meta.get("fileName"), str)
    m = _AUDIO_NAME.fullmatch(meta["fileName"]) if ok else None
    size, digest = (meta.get("fileSize"), meta.get("sha256")) if ok else (None, None)
    if not (m and m.group(1) == key and isinstance(size, int) and not isinstance(size, bool) and size >= 0
            and isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise Corrupt(f"{where}: {key}{META_SUFFIX} is not valid entry metadata (with size and sha256): refused")
    return meta


def _verify(meta: dict, audio: bytes, where: str) -> None:
    if len(audio) != meta["fileSize"] or hashlib.sha256(audio).hexdigest() != meta["sha256"]:
        raise Corrupt(f"{where}: {meta['fileName']} does not match its sha256: refused")


def _age(head: dict) -> float:
    modified = head.get("LastModified")
    if not isinstance(modified, datetime):
        return 0.0
    return (datetime.now(UTC) - modified).total_seconds()


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return str(status or "")
    return ""


def _refused(reply: Reply, where: str) -> StorageError | Denied:
    """A signed read's error reply as one of our kinds."""
    return _kind(reply.code or str(reply.status), "", False, where, reply.status)


def _translate(exc: BaseException, where: str) -> StorageError | Denied:
    """A boto error as one of our kinds, with one line that names no secret."""
    why = untrusted(exc)
    if why:
        return _untrusted(where, why)
    transport = type(exc).__module__.startswith(("botocore", "urllib3")) or isinstance(exc, OSError)
    response = getattr(exc, "response", None)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(response, dict) else None
    return _kind(_code(exc), type(exc).__name__, transport, where, status if isinstance(status, int) else 0)


def _untrusted(where: str, why: str) -> Untrusted:
    return Untrusted(f"{where}: cannot trust the store's certificate: {why} (a team's own CA: --ca-file or "
                     "AWS_CA_BUNDLE)")


def _kind(code: str, name: str, transport: bool, where: str, status: int = 0) -> StorageError | Denied:
    """By S3's error code where it is one we know, else by the HTTP status (a store's own throttling code, such
    as SeaweedFS's ErrTooManyRequest, still comes as a 503)."""
    if code in _DENIED or name in ("NoCredentialsError", "PartialCredentialsError"):
        what = "no credentials (set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)" if not code else \
            f"credentials refused ({code})"
        return Denied(f"{where}: {what}")
    if code in ("NoSuchBucket", "AccessDenied", "403", "PermanentRedirect", "AuthorizationHeaderMalformed"):
        return Denied(f"{where}: access refused ({code})" if code != "NoSuchBucket" else f"{where}: no such bucket")
    if code in _UNAVAILABLE or status in (429, 500, 502, 503, 504) or not code and transport:
        reason = code or name
        return Unavailable(f"{where}: unavailable ({reason})")
    return StorageError(f"{where}: {code}")


def cleanup(bucket: Bucket, older_than: float | None, max_size: int | None, dry_run: bool = False) -> dict:
    """Remove the bucket's entries completed longer than ``older_than`` seconds ago, then the oldest until the
    rest fits in ``max_size`` bytes (a bucket keeps no record of use: age stands for it). Each entry goes
    metadata first. ``{"removed": [keys], "freedBytes", "kept", "failed": [{"cacheKey", "error"}]}``."""
    import time

    listing = bucket.listing()
    now = time.time()
    oldest_first = sorted(listing, key=lambda k: listing[k]["modified"])
    doomed = [k for k in oldest_first if older_than is not None and now - listing[k]["modified"] > older_than]
    if max_size is not None:
        left = sum(row["bytes"] for key, row in listing.items() if key not in doomed)
        for key in oldest_first:
            if left <= max_size:
                break
            if key not in doomed:
                doomed.append(key)
                left -= listing[key]["bytes"]
    removed: list[str] = []
    failed: list[dict] = []
    for key in doomed:
        if not dry_run:
            try:
                bucket.delete(key)
            except StorageError as exc:
                failed.append({"cacheKey": key, "error": str(exc)})
                continue
        removed.append(key)
    return {"removed": removed, "freedBytes": sum(listing[k]["bytes"] for k in removed),
            "kept": len(listing) - len(removed), "failed": failed}
