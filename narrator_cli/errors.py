"""The one exception family a user may see: a message and an exit status."""

from __future__ import annotations


class NarratorError(Exception):
    """A failure the user can act on; the CLI prints its message as one line."""

    exit_code = 1


class UsageError(NarratorError):
    """Bad options, bad config, bad input: nothing was attempted."""

    exit_code = 2


class Interrupted(NarratorError):
    """Ctrl-C in a batch: nothing new started after it, what finished is kept (and whole).
    ``abandoned``: a second Ctrl-C gave up waiting for the work in flight."""

    exit_code = 130

    def __init__(self, done: int, total: int, what: str = "lines", abandoned: bool = False) -> None:
        super().__init__(f"interrupted: {done} of {total} {what} done, {total - done} left")
        self.done, self.total, self.abandoned = done, total, abandoned


class ProviderError(NarratorError):
    """The speech provider failed; nothing was stored for that line."""


class ProviderAuthError(ProviderError):
    """The provider refused our credentials: every further call would fail too (configuration: exit 2)."""

    exit_code = 2


class ProviderUnreachable(ProviderError):
    """The provider cannot be reached at all (refused, DNS, TLS): the batch stops rather than retry every line."""


class AudioError(NarratorError):
    """Bytes that are not audio of the type they claim to be."""
