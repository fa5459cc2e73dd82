"""The one exception family a user may see: a message and an exit status."""

from __future__ import annotations


class NarratorError(Exception):
    """A failure the user can act on; the CLI prints its message as one line."""

    exit_code = 1


class UsageError(NarratorError):
    """Bad options, bad config, bad input: nothing was attempted."""

    exit_code = 2


class ProviderError(NarratorError):
    """The speech provider failed; nothing was stored for that line."""


class ProviderAuthError(ProviderError):
    """The provider refused our credentials: every further call would fail too (configuration: exit 2)."""

    exit_code = 2


class ProviderUnreachable(ProviderError):
    """The provider cannot be reached at all (refused, DNS, TLS): the batch stops rather than retry every line."""


class AudioError(NarratorError):
    """Bytes that are not audio of the type they claim to be."""
