"""Answers of the API kept a day in the user's cache folder (the models list, the account's voices): no
HTTP client here, so reading a kept answer costs a file read, also on a cache hit."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

DAY = 86_400.0


def kept(name: str, key: str, max_age: float = DAY) -> Any:
    """What was kept under ``name`` for ``key`` within ``max_age``, or None. Unreadable means not kept."""
    from ..config import user_cache_path

    try:
        found = json.loads((user_cache_path() / name).read_text())
        if found.get("key") == key and 0 <= time.time() - float(found["at"]) < max_age:
            return found["value"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def kept_for_a_day(name: str, key: str, fetch: Callable[[], Any], max_age: float = DAY) -> tuple[Any, bool]:
    """(value, fresh): what ``fetch`` gave within ``max_age`` for ``key``, else a new fetch, kept (written
    whole: a temporary file, then a rename). A cache that cannot be written is simply not used."""
    from ..config import user_cache_path

    value = kept(name, key, max_age)
    if value is not None:
        return value, False
    value = fetch()
    path = user_cache_path() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "at": time.time(), "value": value}))
        os.replace(tmp, path)
    except OSError:
        pass
    return value, True
