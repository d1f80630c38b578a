"""Per-breaker state timelines over the last hour, from transitions the dashboard learns.

Sources, best first: the breaker's history (``Breaker.history`` where it exists), the
events seen since the server started, and the listing itself (a state first seen, or a
change whose event was missed). Everything is bounded: changes per breaker, breakers
tracked, and the length of a reason. Times are milliseconds since the epoch.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from distbreaker.core import STATES, Event

HOUR_MS = 3_600_000
REASON_LIMIT = 200


@dataclass(frozen=True, slots=True)
class Change:
    """The breaker entered ``state`` at ``at_ms`` (``generation`` -1 when unknown)."""

    at_ms: int
    state: str
    generation: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Span:
    """``state`` from ``start_ms`` to ``end_ms``; ``state`` is "unknown" before any data."""

    state: str
    start_ms: int
    end_ms: int
    reason: str = ""


def short(text: str, limit: int = REASON_LIMIT) -> str:
    """``text`` cut to ``limit`` characters (reasons come from anyone who can publish)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Timelines:
    """The recent changes of each breaker; safe to use from several threads."""

    def __init__(
        self, horizon_ms: int = HOUR_MS, max_breakers: int = 1000, max_changes: int = 500
    ) -> None:
        self.horizon_ms = horizon_ms
        self.max_breakers = max_breakers
        self.max_changes = max_changes
        self._lock = threading.Lock()
        self._changes: OrderedDict[str, list[Change]] = OrderedDict()

    def known(self, name: str) -> bool:
        with self._lock:
            return name in self._changes

    def record(self, event: Event) -> None:
        """A transition from the events channel."""
        change = Change(event.at_ms, event.to_state, event.generation, short(event.reason))
        with self._lock:
            changes = self._for(event.name)
            for i, old in enumerate(changes):
                if old.generation == change.generation and old.state == change.state:
                    changes[i] = change  # the listing saw it first: the event has the time
                    changes.sort(key=lambda c: c.at_ms)
                    return
            bisect.insort(changes, change, key=lambda c: c.at_ms)
            self._trim(changes, change.at_ms)

    def seed(self, name: str, changes: Iterable[Change]) -> None:
        """Changes from the breaker's history, read once when it is first seen."""
        with self._lock:
            merged = {(c.generation, c.state, c.at_ms): c for c in self._for(name)}
            for change in changes:
                merged[(change.generation, change.state, change.at_ms)] = change
            ordered = sorted(merged.values(), key=lambda c: c.at_ms)
            self._changes[name] = ordered[-self.max_changes :]

    def observe(self, name: str, state: str, generation: int, now_ms: int) -> None:
        """The listing says ``name`` is in ``state``: note it when no change told us."""
        with self._lock:
            changes = self._for(name)
            last = changes[-1] if changes else None
            if last is not None and (last.state == state or last.generation >= generation):
                return
            reason = "first seen" if last is None else "seen in the listing"
            changes.append(Change(now_ms, state, generation, reason))
            self._trim(changes, now_ms)

    def start(self, now_ms: int, shortest_ms: int = 10_000) -> int:
        """Where timelines drawn at ``now_ms`` begin: ``horizon_ms`` back, or the first
        change known if that is later (but at least ``shortest_ms`` back), so a young
        dashboard draws what it has seen across the whole width."""
        with self._lock:
            firsts = [changes[0].at_ms for changes in self._changes.values() if changes]
        start = now_ms - self.horizon_ms
        if firsts:
            start = max(start, min(min(firsts), now_ms - shortest_ms))
        return start

    def spans(self, name: str, now_ms: int, start_ms: int | None = None) -> list[Span]:
        """``name`` from ``start_ms`` (default ``horizon_ms`` back) to ``now_ms`` as
        consecutive spans."""
        start = now_ms - self.horizon_ms if start_ms is None else start_ms
        with self._lock:
            changes = list(self._changes.get(name, ()))
        spans: list[Span] = []
        state, since, reason = "unknown", start, ""
        for change in changes:
            at = min(max(change.at_ms, start), now_ms)
            if at > since:
                spans.append(Span(state, since, at, reason))
            since = max(since, at)
            state = change.state if change.state in STATES else "unknown"
            reason = change.reason
        if now_ms > since:
            spans.append(Span(state, since, now_ms, reason))
        return spans

    def _for(self, name: str) -> list[Change]:
        changes = self._changes.get(name)
        if changes is None:
            changes = []
            self._changes[name] = changes
            while len(self._changes) > self.max_breakers:
                self._changes.popitem(last=False)
        self._changes.move_to_end(name)
        return changes

    def _trim(self, changes: list[Change], now_ms: int) -> None:
        """Keep the changes inside the horizon, plus the one that set the state at its start."""
        start = now_ms - self.horizon_ms
        keep_from = 0
        for i, change in enumerate(changes):
            if change.at_ms <= start:
                keep_from = i
        del changes[:keep_from]
        del changes[: max(0, len(changes) - self.max_changes)]


def changes_from_history(entries: Iterable[Any]) -> list[Change]:
    """Changes from ``Breaker.history()`` entries, read by field name defensively: a time
    (``at_ms``/``at``: epoch ms or seconds, or a datetime) and a state (``to_state``/``to``);
    entries without both are skipped."""
    changes = []
    for entry in entries:
        fields = _fields(entry)
        state = fields.get("to_state", fields.get("to"))
        at_ms = _epoch_ms(fields.get("at_ms", fields.get("at")))
        if state not in STATES or at_ms is None:
            continue
        generation = fields.get("generation", -1)
        reason = fields.get("reason") or ""
        changes.append(
            Change(
                at_ms,
                str(state),
                generation if isinstance(generation, int) else -1,
                short(str(reason)),
            )
        )
    return changes


def _fields(entry: Any) -> dict[str, Any]:
    if isinstance(entry, dict):
        return entry
    if hasattr(entry, "model_dump"):
        return dict(entry.model_dump())
    if dataclasses.is_dataclass(entry) and not isinstance(entry, type):
        return dataclasses.asdict(entry)
    return dict(getattr(entry, "__dict__", {}))


def _epoch_ms(value: object) -> int | None:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    # 1e11 ms is 1973, 1e11 s is the year 5138: a bigger number is milliseconds
    return int(value) if value > 1e11 else int(value * 1000)


def history_of(breaker: Any, since_s: float, limit: int = 500) -> list[Change] | None:
    """The breaker's changes since ``since_s`` (epoch seconds) from its history, or None
    when this breaker has no history to read."""
    history = getattr(breaker, "history", None)
    if not callable(history):
        return None
    return changes_from_history(history(limit=limit, since=since_s))
