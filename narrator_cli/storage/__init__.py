"""Object storage behind the local cache folder: ``bucket`` (an S3-compatible bucket as a small interface) and
``tier`` (the server's read-through and bounded upload queue). boto3 is imported only when a bucket is used."""

from __future__ import annotations

from typing import Any

SCHEME = "s3://"


def is_bucket_url(value: object) -> bool:
    """The one place that tells a bucket URL from a server URL."""
    return isinstance(value, str) and value.lower().startswith(SCHEME)


def open_remote(url: str, token: str | None = None, ca_file: str | None = None, insecure: bool | None = None) -> Any:
    """The one place a team cache URL becomes its client: a bucket (``storage.remote.BucketClient``) for
    ``s3://``, else a server's ``Client``. Nothing of the bucket's is imported for a server."""
    if is_bucket_url(url):
        from .remote import BucketClient

        return BucketClient(url, token, ca_file=ca_file, insecure=insecure)
    from ..client import Client

    return Client(url, token, ca_file=ca_file, insecure=insecure)
