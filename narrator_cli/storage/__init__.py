"""Object storage behind the local cache folder: ``bucket`` (an S3-compatible bucket as a small interface) and
``tier`` (the server's read-through and bounded upload queue). boto3 is imported only when a bucket is used."""

from __future__ import annotations

SCHEME = "s3://"


def is_bucket_url(value: object) -> bool:
    """The one place that tells a bucket URL from a server URL."""
    return isinstance(value, str) and value.lower().startswith(SCHEME)
