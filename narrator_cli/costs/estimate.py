"""What a batch would cost before anything is paid for: where each line is cached, the characters the rest
would bill, and the guard that refuses a batch over the budget or over the quota left.

A line is billed only when it is generated. ElevenLabs bills ``len(text)`` times the model's
``character_cost_multiplier`` (the models list, kept a day); MiniMax bills by its own rates, so its lines count
their characters; the offline voices bill nothing. Nothing here writes to the audio cache or sends a paid request:
the dry run and the guard only read the cache folders, ask the server once, and GET the account's endpoints.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from ..errors import NarratorError, ProviderAuthError, ProviderUnreachable, UsageError
from ..resolve import Line, lookup

PAID = ("elevenlabs", "minimax")  # providers whose lines cost characters; the others are free
STATUSES = ("cached", "server", "generate", "repeat", "unavailable")


class OverBudget(UsageError):
    """A batch refused before any paid request: its estimate exceeds the budget or the quota left.
    Exit 2, as for a setting that forbids the work: nothing was attempted, and the fix is a setting or a top-up.
    ``reason``: the why alone, for a refusal that comes when part of the batch is already made."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}; nothing was generated")
        self.reason = reason


class Charge(NamedTuple):
    billed: int  # characters the line would bill (after the multiplier); 0 for a free provider
    multiplier: float | None  # ElevenLabs' multiplier used; None when the provider has none
    estimated: bool  # the multiplier is a guess (models list unreadable, or the model is not in it)


class Planned(NamedTuple):
    """A line of a dry run: where it is, and what generating it would bill (0 unless ``generate``)."""

    line: Line
    provider: str
    status: str  # one of STATUSES
    charge: Charge = Charge(0, None, False)
    note: str | None = None  # why it is unavailable, or a warning (the key holds another line)

    def as_dict(self) -> dict:
        d: dict = {"cacheKey": self.line.key, "text": self.line.text, "voiceId": self.line.voice_id,
                   "modelId": self.line.model_id, "provider": self.provider, "status": self.status,
                   "characters": len(self.line.text), "billed": self.charge.billed,
                   "multiplier": self.charge.multiplier, "estimated": self.charge.estimated}
        if self.line.fmt:
            d["format"] = self.line.fmt
        if self.note:
            d["error" if self.status == "unavailable" else "warning"] = self.note
        return d

    def row(self, place: dict) -> str:
        """The dry run's text row: key, status, characters to bill (``~``: an estimate), text, how."""
        where = f"{place['file']}:{place['line']}  " if place else ""
        text = _shorten(self.line.text)
        if self.status == "unavailable":
            return f"{where}{self.line.key}  unavailable  {text}: {self.note}"
        cost = how = ""
        if self.status == "generate":
            cost = f"{'~' if self.charge.estimated else ''}{self.charge.billed:,}"
            factor = self.charge.multiplier
            how = f"{self.provider} {self.line.model_id}" + (f" x{factor:g}" if factor is not None else "")
        row = f"{where}{self.line.key}  {self.status:<11}  {cost:>9}  {text:<32}  {how}".rstrip()
        return row + (f"  ({self.note})" if self.note else "")


class Rates:
    """The account facts an estimate needs, each read at most once per command and only when asked.

    ``strict`` (a real run): a refused API key is raised, as the first paid request would be refused (exit 2,
    no request after it). Otherwise (a dry run) every failure is noted and the estimate goes on."""

    def __init__(self, settings: Any, strict: bool) -> None:
        self.settings = settings
        self.strict = strict
        self.notes: list[str] = []  # why figures are estimates
        self._multipliers: dict[str, float] | None = None
        self._estimated = False  # the multipliers are not the models list's of today
        self._quota: Any = None
        self._quota_read = False
        self.quota_error: str | None = None
        self.quota_error_is_the_providers = False  # no key, unreachable: the first paid request says it too

    def charge(self, provider: str, line: Line) -> Charge:
        chars = len(line.text)
        if provider == "minimax":
            return Charge(chars, None, False)
        if provider != "elevenlabs":
            return Charge(0, None, False)
        factors = self.multipliers()
        factor = factors.get(line.model_id)
        if factor is None:
            if not self._estimated:
                self._note(f"model {line.model_id} is not in ElevenLabs' models list: counted at 1 character "
                           "per character (an estimate)")
            return Charge(billed(chars, 1.0), 1.0, True)
        return Charge(billed(chars, factor), factor, self._estimated)

    def multipliers(self) -> dict[str, float]:
        """model id -> multiplier: today's list (kept a day), else the last list kept, else nothing (x1)."""
        if self._multipliers is None:
            from . import account

            try:
                self._multipliers = account.model_multipliers(self.settings)
            except NarratorError as exc:
                self._raise_if_refused(exc)
                self._multipliers = last_kept_multipliers(self.settings)
                self._estimated = True
                kept = "the last list kept" if self._multipliers else "1 character per character"
                self._note(f"ElevenLabs' models list could not be read ({exc}): characters counted at {kept} "
                           "(an estimate)")
        return self._multipliers

    def quota(self) -> Any:
        """The ElevenLabs subscription (``account.Subscription``), or None when it cannot be read (``quota_error``)."""
        if not self._quota_read:
            self._quota_read = True
            from . import account

            try:
                acct = account.open_account(self.settings)
                try:
                    self._quota = acct.subscription()
                finally:
                    acct.close()
            except NarratorError as exc:
                self._raise_if_refused(exc)
                self.quota_error = str(exc)
                self.quota_error_is_the_providers = isinstance(exc, (UsageError, ProviderUnreachable))
        return self._quota

    def _raise_if_refused(self, exc: NarratorError) -> None:
        if self.strict and isinstance(exc, ProviderAuthError) and not _missing_permission(exc):
            raise exc

    def _note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)


def billed(chars: int, factor: float) -> int:
    """Characters billed for ``chars`` at ``factor``, rounded up (an estimate never comes out low)."""
    return math.ceil(round(chars * factor, 6))


def _missing_permission(exc: Exception) -> bool:
    """A key that may speak but not read the account (ElevenLabs' ``missing_permissions``): no reason to stop."""
    return "missing the permission" in str(exc) or "missing_permissions" in str(exc)


def last_kept_multipliers(settings: Any) -> dict[str, float]:
    """The models list kept for this API URL, however old, or {}."""
    from .account import MODELS_CACHE, models_key
    from .kept import kept

    value = kept(MODELS_CACHE, models_key(settings), math.inf)
    try:
        return {str(k): float(v) for k, v in value.items()} if isinstance(value, dict) else {}
    except (TypeError, ValueError):
        return {}


def plan(store: Any, groups: Iterable[tuple[str, list[Line], str | None]], remote: Any,
         force: bool, use: bool = False) -> tuple[list[Planned], dict[str, dict]]:
    """Where each line of ``groups`` ((provider, lines, why they cannot be generated or None)) is: in the local
    cache, on the server (one check for every line not held locally that could be generated; no download), or
    to generate; and the server's replies for the lines it holds. A key seen before in the batch is a
    ``repeat``; a line that cannot be generated and is not cached is ``unavailable``. Reads only: no entry is
    touched, no folder created; ``force`` looks nowhere (every line is generated). ``use``: the lines found on
    the server will be downloaded next (the server counts them as hits); a dry run only asks."""
    out: list[Planned] = []
    asks: list[tuple[int, Line]] = []
    seen: dict[str, Line] = {}
    for provider, lines, problem in groups:
        for line in lines:
            first = seen.setdefault(line.key, line)
            if first is not line:
                same = (first.text, first.voice_id, first.model_id) == (line.text, line.voice_id, line.model_id)
                out.append(Planned(line, provider, "repeat" if same else "unavailable", note=None if same else
                                   f"key {line.key} is taken by another line in this batch"))
                continue
            entry, warning = (None, None) if force else lookup(store, line)
            if entry is not None:
                out.append(Planned(line, provider, "cached"))
                continue
            out.append(Planned(line, provider, "unavailable" if problem else "generate", note=problem or warning))
            if not problem:
                asks.append((len(out) - 1, line))
    found = remote.check([line for _, line in asks], use) if remote is not None and asks and not force else {}
    for i, line in asks:
        if line.key in found:
            out[i] = out[i]._replace(status="server", note=None)
    return out, found


def priced(planned: list[Planned], rates: Rates) -> list[Planned]:
    """``planned`` with the charge of each line to generate."""
    return [p._replace(charge=rates.charge(p.provider, p.line)) if p.status == "generate" else p for p in planned]


def totals(planned: list[Planned]) -> dict[str, dict[str, int]]:
    """provider -> {lines, characters, billed} of the lines to generate with a paid provider."""
    out: dict[str, dict[str, int]] = {}
    for p in planned:
        if p.status == "generate" and p.provider in PAID:
            t = out.setdefault(p.provider, {"lines": 0, "characters": 0, "billed": 0})
            t["lines"] += 1
            t["characters"] += len(p.line.text)
            t["billed"] += p.charge.billed
    return out


def budget_of(settings: Any) -> int | None:
    """The ``budget`` setting (``--max-characters``, NARRATOR_BUDGET, narrator.toml), checked."""
    value = settings.get("budget")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"the budget must be a whole number of characters, 0 or more; got {value!r}")
    return value


def summary(planned: list[Planned], rates: Rates, budget: int | None) -> dict:
    """The dry run's closing figures (read the quota only when ElevenLabs lines are to be generated)."""
    from collections import Counter

    counts = Counter(p.status for p in planned)
    by_provider = totals(planned)
    total = sum(t["billed"] for t in by_provider.values())
    quota = rates.quota() if "elevenlabs" in by_provider else None
    eleven = by_provider.get("elevenlabs", {}).get("billed", 0)
    estimated = any(p.charge.estimated for p in planned)
    return {"summary": {
        "lines": len(planned), **{s: counts[s] for s in STATUSES},
        "billed": total, "byProvider": by_provider, "estimated": estimated, "notes": list(rates.notes),
        "quota": quota.as_dict() if quota is not None else None,
        "quotaError": rates.quota_error if "elevenlabs" in by_provider else None,
        "withinQuota": None if quota is None else eleven <= quota.left,
        "budget": budget, "withinBudget": None if budget is None else total <= budget,
    }}


def dry_run(settings: Any, store: Any, groups: Iterable[tuple[str, list[Line], str | None]], remote: Any,
            force: bool) -> tuple[list[Planned], dict]:
    """Each line planned and priced, and the summary (``summary``): what ``speak --dry-run`` shows."""
    budget = budget_of(settings)
    planned, _ = plan(store, groups, remote, force)
    rates = Rates(settings, strict=False)
    planned = priced(planned, rates)
    return planned, summary(planned, rates, budget)


def summary_lines(s: dict) -> list[str]:
    """The closing lines of a dry run: counts and characters to bill, each paid provider, quota, budget, notes."""
    words = {"cached": "cached", "server": "on the server", "generate": "to generate", "repeat": "repeated",
             "unavailable": "unavailable"}
    parts = ", ".join(f"{s[k]:,} {w}" for k, w in words.items() if s[k])
    about = "about " if s["estimated"] else ""
    out = [f"dry run: {_count(s['lines'], 'line')}: {parts}; {about}{_count(s['billed'], 'character')} to bill"]
    for provider, t in s["byProvider"].items():
        rate = ("MiniMax bills by its own rates: counted as characters, no multiplier known" if provider == "minimax"
                else f"from {t['characters']:,} characters of text")
        out.append(f"{provider}: {_count(t['lines'], 'line')} to generate, {t['billed']:,} characters ({rate})")
    if s["quota"] is not None:
        q = s["quota"]
        verdict = "enough for these lines" if s["withinQuota"] else "not enough: speak would refuse these lines"
        out.append(f"ElevenLabs quota: {q['charactersLeft']:,} characters left of {q['characterLimit']:,} "
                   f"(tier {q['tier']}{_resets(q['resetsAt'])}): {verdict}")
    elif s["quotaError"]:
        out.append(f"ElevenLabs quota: not readable ({s['quotaError']})")
    if s["budget"] is not None:
        verdict = "within it" if s["withinBudget"] else "over it: speak would refuse these lines"
        out.append(f"budget: {s['budget']:,} characters: {verdict}")
    out.extend(f"estimate: {note}" for note in s["notes"])
    return out


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _shorten(text: str, width: int = 32) -> str:
    """On one line, printable as UTF-8 (a lone surrogate from a scanned ``\\uD800`` shows as its escape)."""
    text = "".join(f"\\u{ord(c):04x}" if "\ud800" <= c <= "\udfff" else " " if c in "\n\r\t" else c for c in text)
    return text if len(text) <= width else text[:width - 1] + "…"


def _resets(when: int | None) -> str:
    if when is None:
        return ""
    import datetime

    return ", resets " + datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def guard(settings: Any, warn: Callable[[str], None]) -> Callable[[list[tuple[str, Line]]], None]:
    """What ``resolve``'s ``before_paying`` calls: raises ``OverBudget`` when the lines about to be generated
    ((provider, line) pairs) would bill more than the budget, or more ElevenLabs characters than the quota
    left. The quota is read only when ElevenLabs lines are to be paid for; the models list only when a
    budget or a quota is there to compare with. The budget setting is checked at once."""
    budget = budget_of(settings)
    rates = Rates(settings, strict=True)

    def check(pairs: list[tuple[str, Line]]) -> None:
        paid = [(provider, line) for provider, line in pairs if provider in PAID]
        if not paid:
            return
        eleven = any(provider == "elevenlabs" for provider, _ in paid)
        if eleven:  # the models list is needed with the quota (almost always there): both requests at once
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(1) as pool:
                prices = pool.submit(rates.multipliers)
                quota = rates.quota()
                prices.result()
        else:
            quota = None
        if rates.quota_error and not rates.quota_error_is_the_providers:
            warn(f"the ElevenLabs quota could not be read ({rates.quota_error}): these lines are not checked "
                 "against it")
        if budget is None and quota is None:
            return
        planned = priced([Planned(line, provider, "generate") for provider, line in paid], rates)
        for note in rates.notes:
            warn(note)
        by_provider = totals(planned)
        total = sum(t["billed"] for t in by_provider.values())
        about = "about " if any(p.charge.estimated for p in planned) else ""
        what = _describe(by_provider)
        if budget is not None and total > budget:
            raise OverBudget(f"these lines would bill {about}{total:,} characters ({what}), over the budget of "
                             f"{budget:,} (--max-characters, NARRATOR_BUDGET or budget in narrator.toml)")
        eleven = by_provider.get("elevenlabs", {}).get("billed", 0)
        if quota is not None and eleven > quota.left:
            raise OverBudget(f"these lines would bill {about}{eleven:,} ElevenLabs characters, more than the "
                             f"{quota.left:,} left this period ({quota.used:,} of {quota.limit:,} used, tier "
                             f"{quota.tier})")

    return check


def _describe(by_provider: dict[str, dict[str, int]]) -> str:
    parts = []
    for provider, t in by_provider.items():
        lines = f"{t['lines']:,} line{'s' if t['lines'] != 1 else ''}"
        parts.append(f"{provider}: {lines} to generate, {t['billed']:,} characters")
    return "; ".join(parts)
