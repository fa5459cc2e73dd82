"""GETs and HEADs by presigned URL: botocore signs, urllib3 (botocore's own transport) sends.

A boto3 call spends about 2 ms of Python per request on its event hooks, model and parsers; a presigned URL
and a pooled urllib3 request cost well under half that (``benchmarks/bench_s3.py``). Reads are the hot path
(a read-through miss, ``check`` of a whole script), so they go this way; writes, listings and deletes stay
with boto3. The URL carries a signature: it is never logged or put in an error.
"""

from __future__ import annotations

import os
import re
import ssl
import urllib.request
from typing import Any
from urllib.parse import urlsplit

EXPIRES = 300  # seconds a signed URL is good for: it is used at once
_CODE = re.compile(rb"<Code>([A-Za-z0-9.]{1,64})</Code>")


class Reply:
    """What a read got back: the status, the headers (case-insensitive), the body (empty for a HEAD) and S3's
    error code if it sent one."""

    __slots__ = ("body", "code", "headers", "status")

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body
        found = _CODE.search(body[:4096]) if status >= 300 else None
        self.code = found.group(1).decode() if found else ""


class TransportError(Exception):
    """The store could not be reached or did not answer (the name of urllib3's error says which);
    ``untrusted``: why its certificate was refused, when that is the reason."""

    def __init__(self, name: str, untrusted: str | None = None) -> None:
        super().__init__(name)
        self.untrusted = untrusted


def untrusted(exc: BaseException | None) -> str | None:
    """Why a certificate was refused, if that is somewhere in ``exc``'s chain (urllib3 and botocore wrap it)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return str(exc.verify_message or exc.reason or "certificate verify failed").rstrip(".")
        inner = getattr(exc, "reason", None) or (getattr(exc, "kwargs", None) or {}).get("error")
        if not isinstance(inner, BaseException):
            inner = next((a for a in getattr(exc, "args", ()) if isinstance(a, BaseException)), None)
        exc, seen = inner or exc.__cause__ or exc.__context__, seen + 1
    return None


class SignedReads:
    """Thread-safe: one connection pool shared by every thread of a ``Bucket``."""

    def __init__(self, client: Any, connections: int, ca_file: str | None, insecure: bool) -> None:
        import urllib3
        from botocore.httpsession import get_cert_path

        self.client = client
        endpoint = urlsplit(client.meta.endpoint_url)
        tls: dict[str, Any] = {"cert_reqs": "CERT_NONE"} if insecure else {
            "cert_reqs": "CERT_REQUIRED", "ca_certs": ca_file or os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True)}
        if insecure:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        options = {"maxsize": connections, "block": False, "timeout": urllib3.Timeout(connect=3, read=20),
                   "retries": urllib3.Retry(total=1, connect=1, read=1, status=1, backoff_factor=0.05,
                                            status_forcelist=(500, 502, 503, 504), allowed_methods=("GET", "HEAD"),
                                            raise_on_status=False, respect_retry_after_header=False, redirect=0),
                   **(tls if endpoint.scheme == "https" else {})}
        proxy = urllib.request.getproxies().get(endpoint.scheme)
        if proxy and not urllib.request.proxy_bypass(endpoint.hostname or ""):
            self.pool: Any = urllib3.ProxyManager(proxy, **options)
        else:
            self.pool = urllib3.PoolManager(**options)
        self._errors = (urllib3.exceptions.HTTPError, OSError)

    def request(self, method: str, bucket: str, name: str, headers: dict[str, str] | None = None) -> Reply:
        """One GET or HEAD of ``name``; ``TransportError`` when no answer came."""
        operation = "head_object" if method == "HEAD" else "get_object"
        url = self.client.generate_presigned_url(operation, Params={"Bucket": bucket, "Key": name},
                                                 ExpiresIn=EXPIRES)
        try:
            response = self.pool.request(method, url, headers=headers, preload_content=True)
        except self._errors as exc:
            raise TransportError(type(exc).__name__, untrusted(exc)) from None
        return Reply(response.status, response.headers, response.data or b"")
