"""HTML fragments of the dashboard, rendered once per update and sent to every page.

Every text that comes from Redis, the events channel or a user (names, states, reasons,
error messages) goes through ``html.escape``; states become CSS classes only when they
are one of the five known states. The page swaps these fragments in as they arrive.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from distbreaker.config import BreakerConfig
from distbreaker.core import STATES, Event
from distbreaker.dashboard.timeline import Span, short
from distbreaker.fleet import BreakerRow, FleetListing

COLUMNS = (
    "Breaker",
    "State",
    "Failures in window",
    "Resets in",
    "Opens",
    "Generation",
    "Last failure",
    "Timeline",
)


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def state_class(state: str) -> str:
    return f"s-{state}" if state in STATES else "s-unknown"


def clock(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%H:%M:%S UTC")


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def ago(moment: float | None, now_s: float) -> str:
    return "never" if moment is None else f"{duration(max(0.0, now_s - moment))} ago"


def failures_text(status: Any, config: BreakerConfig | None) -> str:
    """``3/5 in 120s``, or under the rate rule ``40% of 25 calls (opens at 50%)``."""
    rate = getattr(status, "failure_rate", None)
    if getattr(status, "rule", None) == "rate" and isinstance(rate, int | float):
        calls = getattr(status, "calls_in_window", None)
        threshold = getattr(config, "failure_rate_threshold", None)
        text = f"{rate:.0%}"
        if isinstance(calls, int):
            text += f" of {calls} call{'' if calls == 1 else 's'}"
        if isinstance(threshold, int | float):
            text += f" (opens at {threshold:.0%})"
        return text
    threshold_text = "?" if config is None else str(config.failure_threshold)
    window = BreakerConfig().window if config is None else config.window
    return f"{status.failure_count}/{threshold_text} in {window:g}s"


def resets_cell(status: Any) -> str:
    """The countdown cell: the page counts ``data-reset-in`` down between updates."""
    if status.state == "open" and status.time_until_reset > 0:
        seconds = float(status.time_until_reset)
        return f'<td class="resets" data-reset-in="{seconds:.3f}">{seconds:.1f}s</td>'
    if status.state == "open":
        return '<td class="resets">due</td>'
    if status.state == "forced_open":
        return '<td class="resets">manual</td>'
    return '<td class="resets">-</td>'


def state_cell(status: Any) -> str:
    notes = []
    if getattr(status, "locally_open", False) is True:
        notes.append("locally open")
    who = getattr(status, "actor", None)
    why = getattr(status, "reason", None)
    if who:
        notes.append(f"by {short(str(who), 64)}")
    if why:
        notes.append(short(str(why)))
    since = getattr(status, "since", None)
    if isinstance(since, int | float) and not isinstance(since, bool) and since >= 0:
        notes.append(f"for {duration(since)}")
    if not status.store_ok:
        notes.append("store degraded")
    note = f'<span class="note">{esc(" · ".join(notes))}</span>' if notes else ""
    label = str(status.state).replace("_", " ")
    return (
        f'<td class="state {state_class(status.state)}" data-state="{esc(status.state)}">'
        f"{esc(label)}{note}</td>"
    )


def breaker_row(row: BreakerRow, spans: Sequence[Span], start_ms: int, now_s: float) -> str:
    status = row.status
    now_ms = round(now_s * 1000)
    return (
        f'<tr data-name="{esc(status.name)}">'
        f'<td class="name">{esc(status.name)}</td>'
        f"{state_cell(status)}"
        f'<td class="failures">{esc(failures_text(status, row.config))}</td>'
        f"{resets_cell(status)}"
        f'<td class="opens">{esc(status.opens_total)}</td>'
        f'<td class="generation">{esc(status.generation)}</td>'
        f'<td class="last-failure">{esc(ago(status.last_failure_at, now_s))}</td>'
        f'<td class="timeline">{timeline_svg(status.name, spans, start_ms, now_ms)}</td>'
        "</tr>"
    )


def rows_html(
    listing: FleetListing, spans: dict[str, list[Span]], start_ms: int, now_s: float
) -> str:
    if not listing.rows:
        where = f"under prefix {listing.prefix!r}"
        text = "no breakers " + where if listing.store_ok else "no breakers read yet"
        return f'<tr class="empty"><td colspan="{len(COLUMNS)}">{esc(text)}</td></tr>'
    return "".join(
        breaker_row(row, spans.get(row.status.name, []), start_ms, now_s) for row in listing.rows
    )


def timeline_svg(name: str, spans: Iterable[Span], start_ms: int, now_ms: int) -> str:
    """States from ``start_ms`` to ``now_ms`` as coloured spans, one SVG unit per second,
    each with a ``title`` (the tooltip)."""
    start = start_ms
    width_s = max(1, (now_ms - start_ms) // 1000)
    parts = [
        f'<svg class="timeline" viewBox="0 0 {width_s} 10" preserveAspectRatio="none" '
        f'role="img" aria-label="{esc(name)}: states since {clock(start_ms / 1000)}">'
    ]
    for span in spans:
        x = max(0, span.start_ms - start) / 1000
        width = max(1.0, (span.end_ms - span.start_ms) / 1000)
        label = f"{span.state.replace('_', ' ')} {clock(span.start_ms / 1000)}"
        label += f" to {clock(span.end_ms / 1000)}"
        if span.reason:
            label += f" · {span.reason}"
        parts.append(
            f'<rect class="{state_class(span.state)}" x="{x:.1f}" y="0" '
            f'width="{width:.1f}" height="10"><title>{esc(label)}</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)


def span_text(seconds: float) -> str:
    if seconds >= 3599:
        return "the last hour"
    if seconds >= 120:
        return f"the last {seconds / 60:.0f} min"
    return f"the last {seconds:.0f} s"


def health_html(listing: FleetListing, clients: int, timeline_s: float | None = None) -> str:
    """The dashboard's own Redis connection, how fresh the listing is, what the
    timelines cover."""
    viewers = f"{clients} page{'' if clients == 1 else 's'} open"
    if timeline_s is not None:
        viewers += f" · timelines: {span_text(timeline_s)}"
    if listing.store_ok:
        latency = "" if listing.latency_ms is None else f", read in {listing.latency_ms:.1f} ms"
        count = len(listing.rows)
        text = f"Redis ok{latency} · {count} breaker{'' if count == 1 else 's'} · {viewers}"
        if listing.truncated:
            text += " · key scan stopped at its budget: some breakers may be missing"
        return f'<span class="health ok">{esc(text)}</span>'
    text = f"Redis unreachable from the dashboard ({listing.error}); showing the last good read"
    return f'<span class="health bad">{esc(text)} · {esc(viewers)}</span>'


def events_html(events: Sequence[Event]) -> str:
    """The latest transitions, newest first."""
    if not events:
        return '<li class="empty">no transitions since the dashboard started</li>'
    items = []
    for event in reversed(events):
        reason = f" ({short(event.reason)})" if event.reason else ""
        text = (
            f"{clock(event.at_ms / 1000)} {event.name}: "
            f"{event.from_state} → {event.to_state}, generation {event.generation}{reason}"
        )
        items.append(f'<li class="{state_class(event.to_state)}">{esc(text)}</li>')
    return "".join(items)
