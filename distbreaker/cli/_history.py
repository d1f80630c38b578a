"""``distbreaker history``: what each breaker went through, and a summary of the period.

The entries come from each breaker's capped history stream (``Breaker.history``). The
summary is computed here from them: episodes (stretches in which the breaker refused calls:
``open``, ``half_open`` or ``forced_open``), time open in all and the longest, mean time
to recovery (over episodes seen from start to close), probes that failed, commands. On a
terminal a one-line strip draws the period coloured by state.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.text import Text

from distbreaker.breaker import HISTORY_LIMIT
from distbreaker.cli._render import (
    STATE_STYLES,
    Output,
    clock_time,
    duration_text,
    moment,
    why_text,
)
from distbreaker.config import validate_name
from distbreaker.core import HistoryEntry, admits_all
from distbreaker.diagnostics import SCAN_BUDGET, is_cluster, scan_breakers
from distbreaker.status import BreakerStatus

HISTORY_COLUMNS = ["TIME", "BREAKER", "CHANGE", "REASON", "EVIDENCE", "OPEN UNTIL", "BY"]
SUMMARY_COLUMNS = [
    "BREAKER",
    "EPISODES",
    "TIME OPEN",
    "LONGEST",
    "MEAN TIME TO RECOVERY",
    "PROBES FAILED",
    "COMMANDS",
    "NOW",
]
STRIP_WIDTH = 60
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(?:\d{1,9}[smhd])+")
_PART = re.compile(r"(\d+)([smhd])")
LONGEST_SINCE = 3650 * 86400.0
# The worst state inside a cell of the strip wins, so a short open stays visible.
_SEVERITY = {"closed": 0, "forced_closed": 1, "half_open": 2, "open": 3, "forced_open": 3}
_MANUAL_REASONS = ("force_open", "force_closed", "reset")


# -- --since ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Since:
    """``--since`` as given: ``back`` seconds before now, or the moment ``at`` (epoch s)."""

    back: float | None = None
    at: float | None = None

    def start(self, now: float) -> float:
        """The period's start (epoch seconds) for a period that ends at ``now``."""
        if self.back is not None:
            return max(0.0, now - self.back)
        return self.at if self.at is not None else now


def parse_since(text: str, wall_now: float) -> Since:
    """``30s``, ``15m``, ``1h30m``, ``2d`` (back from now) or an ISO 8601 time (UTC unless it
    names an offset); ``ValueError`` with a message for the user otherwise."""
    value = text.strip()
    if _DURATION.fullmatch(value):
        back = float(sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(value)))
        if not 0 < back <= LONGEST_SINCE:
            raise ValueError(f"--since {text!r}: use a duration between 1s and 3650d")
        return Since(back=back)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"bad --since {text!r}: use 30s, 15m, 1h, 2d or an ISO time "
            "such as 2026-11-24T10:00:00Z"
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    epoch = at.timestamp()
    if epoch < 0:
        raise ValueError(f"--since {text!r} lies before 1970")
    if epoch > wall_now + 60:
        raise ValueError(f"--since {text!r} lies in the future")
    return Since(at=epoch)


# -- finding breakers -------------------------------------------------------------------------


def breakers_with_history(
    client: Any, prefix: str, budget: int = SCAN_BUDGET
) -> tuple[list[str], bool]:
    """Breakers with a state key or a history stream under ``prefix`` (the history outlives
    an idle breaker's state), sorted, and whether a SCAN stopped at its budget."""
    names, truncated = scan_breakers(client, prefix, budget=budget)
    nodes = (
        [client.get_redis_connection(p) for p in client.get_primaries()]
        if is_cluster(client)
        else [client]
    )
    found = set(names)
    share = max(1, budget // len(nodes))
    for node in nodes:
        more, stopped = _scan_history_keys(node, prefix, share)
        found |= more
        truncated = truncated or stopped
    return sorted(found), truncated


def _scan_history_keys(client: Any, prefix: str, budget: int) -> tuple[set[str], bool]:
    head, tail = f"{prefix}:{{", "}:history"
    names: set[str] = set()
    cursor, walked, step = 0, 0, min(1000, budget)
    while True:
        cursor, keys = client.scan(cursor=cursor, match=f"{head}*{tail}", count=step)
        for raw in keys:
            key = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            if key.startswith(head) and key.endswith(tail):
                try:
                    names.add(validate_name(key[len(head) : -len(tail)]))
                except ValueError:
                    continue
        walked += step
        if int(cursor) == 0:
            return names, False
        if walked >= budget:
            return names, True


def server_now(client: Any) -> float:
    """Redis's clock (epoch seconds): the history's times are the server's."""
    node = client.get_redis_connection(client.get_default_node()) if is_cluster(client) else client
    seconds, micros = node.time()
    return int(seconds) + int(micros) / 1_000_000


# -- the summary --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Episode:
    """A stretch in which the breaker refused calls (open, half_open, forced_open).

    ``seen_start``: it began inside the period (not before it, or before the oldest entry);
    ``recovered``: it ended with the breaker admitting calls again.
    """

    start_ms: int
    end_ms: int
    seen_start: bool
    recovered: bool

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


@dataclass(frozen=True, slots=True)
class Span:
    """The breaker was in ``state`` from ``start_ms`` to ``end_ms``."""

    state: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class Summary:
    """One breaker over the period ``start_ms``..``end_ms`` (milliseconds)."""

    start_ms: int
    end_ms: int
    entries: int
    episodes: int
    open_ms: int
    longest_open_ms: int
    recoveries: int
    mean_time_to_recovery_ms: int | None
    opens: int
    probes_failed: int
    holds: int
    commands: int

    def as_json(self) -> dict[str, Any]:
        mttr = self.mean_time_to_recovery_ms
        return {
            "start": self.start_ms / 1000,
            "end": self.end_ms / 1000,
            "entries": self.entries,
            "episodes": self.episodes,
            "open_seconds": self.open_ms / 1000,
            "longest_open_seconds": self.longest_open_ms / 1000,
            "recoveries": self.recoveries,
            "mean_time_to_recovery_seconds": None if mttr is None else mttr / 1000,
            "opens": self.opens,
            "probes_failed": self.probes_failed,
            "holds": self.holds,
            "commands": self.commands,
        }


def _changes(
    entries: Sequence[HistoryEntry], start_ms: int, end_ms: int, state_now: str
) -> list[tuple[str, int, bool]]:
    """(state, time, set by an entry) from the period's start on; times clamped into the
    period and never going back (the stream's order is the truth, clocks may step)."""
    first = entries[0].from_state if entries else state_now
    changes = [(first, start_ms, False)]
    at = start_ms
    for entry in entries:
        at = min(max(entry.at_ms, at), end_ms)
        changes.append((entry.to_state, at, True))
    return changes


def spans(
    entries: Sequence[HistoryEntry], start_ms: int, end_ms: int, state_now: str
) -> list[Span]:
    """The period as consecutive spans of one state (zero-length ones left out)."""
    changes = _changes(entries, start_ms, end_ms, state_now)
    out: list[Span] = []
    for (state, at, _), (_, until, _) in zip(
        changes, [*changes[1:], ("", end_ms, False)], strict=True
    ):
        if until > at:
            out.append(Span(state, at, until))
    return out


def episodes(
    entries: Sequence[HistoryEntry], start_ms: int, end_ms: int, state_now: str
) -> list[Episode]:
    """The period's episodes, in order; one still going at ``end_ms`` ends there."""
    found: list[Episode] = []
    began: tuple[int, bool] | None = None
    for state, at, by_entry in _changes(entries, start_ms, end_ms, state_now):
        if not admits_all(state) and began is None:
            began = (at, by_entry)
        elif admits_all(state) and began is not None:
            found.append(Episode(began[0], at, began[1], True))
            began = None
    if began is not None:
        found.append(Episode(began[0], end_ms, began[1], False))
    return found


def is_manual(entry: HistoryEntry) -> bool:
    """An operator's command (with or without an actor), not the breaker's own decision."""
    return bool(entry.actor) or entry.event == "command" or entry.reason in _MANUAL_REASONS


def summarize(
    entries: Sequence[HistoryEntry], start_ms: int, end_ms: int, state_now: str
) -> Summary:
    """Episodes, time open, recovery and probe counts of one breaker over the period."""
    stretches = episodes(entries, start_ms, end_ms, state_now)
    healed = [e.duration_ms for e in stretches if e.recovered and e.seen_start]
    transitions = [e for e in entries if e.event == "transition"]
    return Summary(
        start_ms=start_ms,
        end_ms=end_ms,
        entries=len(entries),
        episodes=len(stretches),
        open_ms=sum(e.duration_ms for e in stretches),
        longest_open_ms=max((e.duration_ms for e in stretches), default=0),
        recoveries=sum(e.recovered for e in stretches),
        mean_time_to_recovery_ms=round(sum(healed) / len(healed)) if healed else None,
        opens=sum(e.to_state == "open" for e in transitions),
        probes_failed=sum(
            e.from_state == "half_open" and e.to_state == "open" for e in transitions
        ),
        holds=sum(e.reason.startswith("hold_open") for e in entries),
        commands=sum(is_manual(e) for e in entries),
    )


def strip_cells(period: Sequence[Span], start_ms: int, end_ms: int, width: int) -> list[str]:
    """The state of each of ``width`` equal cells of the period ("" where nothing is known):
    the most severe state inside the cell, so a short open stays visible."""
    length = max(1, end_ms - start_ms)
    cells = [""] * width
    for span in period:
        first = (span.start_ms - start_ms) * width // length
        last = max(first, (span.end_ms - start_ms - 1) * width // length)
        for i in range(max(0, first), min(width, last + 1)):
            if not cells[i] or _SEVERITY.get(span.state, 0) > _SEVERITY.get(cells[i], 0):
                cells[i] = span.state
    return cells


# -- one breaker's history, read ------------------------------------------------------------


@dataclass(frozen=True)
class BreakerHistory:
    """What was read for one breaker: its status now and its entries in the period."""

    name: str
    status: BreakerStatus
    entries: list[HistoryEntry]

    @property
    def truncated(self) -> bool:
        """The read reached the stream's cap: older entries of the period may be missing."""
        return len(self.entries) >= HISTORY_LIMIT

    def summary(self, start_ms: int, end_ms: int) -> Summary:
        return summarize(self.entries, start_ms, end_ms, self.status.state)


def read_history(breaker: Any, start_s: float | None) -> BreakerHistory:
    """The breaker's entries at or after ``start_s`` (all stored when None) and its status."""
    entries = breaker.history(limit=HISTORY_LIMIT, since=start_s)
    return BreakerHistory(breaker.name, breaker.status(), entries)


def period_start(histories: Sequence[BreakerHistory], since: float | None, now: float) -> float:
    """``since``, else the oldest entry read, else ``now``."""
    if since is not None:
        return min(since, now)
    firsts = [h.entries[0].at_ms / 1000 for h in histories if h.entries]
    return min([*firsts, now])


# -- showing it ---------------------------------------------------------------------------------


def entry_json(entry: HistoryEntry) -> dict[str, Any]:
    """One entry with the stream's own field names (times in milliseconds)."""
    return {
        "id": entry.id,
        "at": entry.at_ms,
        "event": entry.event,
        "from": entry.from_state,
        "to": entry.to_state,
        "generation": entry.generation,
        "reason": entry.reason,
        "open_until": entry.open_until_ms,
        "failures": entry.failures,
        "reporters": entry.reporters,
        "calls": entry.calls,
        "rate_failures": entry.rate_failures,
        "actor": entry.actor,
        "note": entry.note,
    }


def history_json(
    histories: Sequence[BreakerHistory], start: float, end: float, limit: int
) -> dict[str, Any]:
    """The ``--json`` document (its schema is in the README)."""
    start_ms, end_ms = round(start * 1000), round(end * 1000)
    return {
        "start": start,
        "end": end,
        "breakers": [
            {
                "name": h.name,
                "status": h.status.model_dump(mode="json"),
                "summary": h.summary(start_ms, end_ms).as_json(),
                "truncated": h.truncated,
                "entries": [entry_json(e) for e in h.entries[-limit:]],
            }
            for h in histories
        ],
    }


def change_text(entry: HistoryEntry) -> str:
    if entry.event == "transition":
        return f"{entry.from_state} -> {entry.to_state}"
    return f"{entry.to_state} ({entry.event})"


def evidence_text(entry: HistoryEntry) -> str:
    """The window's evidence when the entry was written."""
    reporters = f"{entry.reporters} reporter{'' if entry.reporters == 1 else 's'}"
    if entry.calls is not None:
        return f"{entry.rate_failures or 0}/{entry.calls} calls failed, {reporters}"
    if entry.failures == 0 and entry.reporters == 0:
        return "-"
    return f"{entry.failures} failure{'' if entry.failures == 1 else 's'}, {reporters}"


def until_text(entry: HistoryEntry) -> str:
    """When an open ends, and how long it lasts (the backoff shows here)."""
    if entry.to_state != "open" or not entry.open_until_ms:
        return "-"
    lasts = duration_text((entry.open_until_ms - entry.at_ms) / 1000)
    return f"{clock_time(entry.open_until_ms / 1000)} ({lasts})"


def by_text(entry: HistoryEntry) -> str:
    """Who commanded it and their note (a repair notes the fields it fixed)."""
    parts = [entry.actor] if entry.actor else []
    if entry.note and not entry.reason.endswith(entry.note):
        parts.append(f"({entry.note})")
    return " ".join(parts) or "-"


def entry_row(name: str, entry: HistoryEntry) -> list[str]:
    return [
        moment(entry.at_ms),
        name,
        change_text(entry),
        entry.reason or "-",
        evidence_text(entry),
        until_text(entry),
        by_text(entry),
    ]


def summary_row(history: BreakerHistory, summary: Summary, now: float) -> list[str]:
    mttr = summary.mean_time_to_recovery_ms
    healed = f" ({summary.recoveries} recovered)" if summary.recoveries else ""
    return [
        history.name,
        str(summary.episodes),
        duration_text(summary.open_ms / 1000),
        duration_text(summary.longest_open_ms / 1000),
        ("-" if mttr is None else duration_text(mttr / 1000)) + healed,
        str(summary.probes_failed),
        str(summary.commands),
        f"{history.status.state}: {why_text(history.status, now)}",
    ]


def show_history(
    out: Output, histories: Sequence[BreakerHistory], start: float, end: float, limit: int
) -> None:
    """The entries (newest ``limit`` per breaker, in time order), then the summary table
    and, on a terminal, one timeline strip per breaker."""
    start_ms, end_ms = round(start * 1000), round(end * 1000)
    shown = [(e.at_ms, h.name, e) for h in histories for e in h.entries[-limit:]]
    shown.sort(key=lambda item: (item[0], item[1]))
    if shown:
        rows = [entry_row(name, entry) for _, name, entry in shown]
        styles = [
            [None, None, STATE_STYLES.get(e.to_state), None, None, None, None] for *_, e in shown
        ]
        out.table("", HISTORY_COLUMNS, rows, styles)
    else:
        out.line("no history entries in the period")
    for h in histories:
        hidden = len(h.entries) - min(limit, len(h.entries))
        if hidden:
            out.line(f"{hidden} older entries of {h.name!r} not shown (--limit {limit})", "dim")
        if h.truncated:
            out.line(
                f"{h.name!r}: the read reached {HISTORY_LIMIT} entries; older ones omitted", "dim"
            )
    out.line("")
    summaries = [h.summary(start_ms, end_ms) for h in histories]
    title = f"from {moment(start_ms)} to {moment(end_ms)} ({duration_text(end - start)})"
    rows = [summary_row(h, s, end) for h, s in zip(histories, summaries, strict=True)]
    blank: list[str | None] = [None] * (len(SUMMARY_COLUMNS) - 1)
    styles = [[*blank, STATE_STYLES.get(h.status.state)] for h in histories]
    out.table(title, SUMMARY_COLUMNS, rows, styles)
    if out.rich:
        show_strips(out, histories, start_ms, end_ms)


def show_strips(
    out: Output, histories: Sequence[BreakerHistory], start_ms: int, end_ms: int
) -> None:
    """One line per breaker: the period in ``STRIP_WIDTH`` cells coloured by state."""
    width = max(len(h.name) for h in histories) if histories else 0
    for h in histories:
        cells = strip_cells(
            spans(h.entries, start_ms, end_ms, h.status.state), start_ms, end_ms, STRIP_WIDTH
        )
        line = Text(f"{h.name:<{width}}  {clock_time(start_ms / 1000)} ")
        for state in cells:
            line.append("█" if state else "·", style=STATE_STYLES.get(state, "dim"))
        line.append(f" {clock_time(end_ms / 1000)}")
        out.console.print(line)
    legend = Text(" " * (width + 2))
    for state, style in STATE_STYLES.items():
        legend.append("█", style=style)
        legend.append(f" {state}  ")
    out.console.print(legend)
