"""Debian's Chromium driven by Playwright, headless, for the page's tests and benchmark.

Playwright's own browser downloads are never used: the browser is the system's (`apt-get install chromium`),
found at ``NARRATOR_CHROMIUM`` (read once, at import, before the tests' isolation drops NARRATOR_* settings) or
on the PATH. A missing browser is an error that names the fix, never a skip: CI installs it (.ci/run).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CANDIDATES = ("chromium", "chromium-headless-shell", "chromium-browser")
# Headless as root on a closed network: no sandbox (root), and nothing that calls Google's services.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]
_CONFIGURED = os.environ.get("NARRATOR_CHROMIUM")


class BrowserMissing(RuntimeError):
    """No Chromium to drive: the message says how to install it."""


def chromium_path() -> str:
    """The Chromium executable to launch."""
    if _CONFIGURED:
        if os.access(_CONFIGURED, os.X_OK):
            return _CONFIGURED
        raise BrowserMissing(f"NARRATOR_CHROMIUM={_CONFIGURED!r} is not an executable file")
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserMissing("Chromium is not installed (looked for " + ", ".join(CANDIDATES) + " on PATH): "
                         "install Debian's package with `apt-get install chromium` (.ci/run does), "
                         "or set NARRATOR_CHROMIUM to its path")


def missing() -> str | None:
    """Why no browser can be driven here (the fix included), or None."""
    try:
        chromium_path()
        import playwright.sync_api  # noqa: F401
    except BrowserMissing as exc:
        return str(exc)
    except ImportError as exc:
        return f"Playwright is not installed ({exc}): pip install -e '.[test]'"
    return None


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """One headless Chromium for the block; Playwright's driver stopped after it."""
    reason = missing()
    if reason:
        raise BrowserMissing(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        path = chromium_path()
        browser = p.chromium.launch(executable_path=path, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
