"""How the command shows things: tables with colour on a terminal, plain text when piped."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table
from rich.text import Text

from distbreaker.config import BreakerConfig
from distbreaker.core import Event
from distbreaker.status import BreakerStatus
from distbreaker.store import printable

STATE_STYLES = {
    "closed": "green",
    "open": "bold red",
    "half_open": "yellow",
    "forced_open": "bold magenta",
    "forced_closed": "magenta",
}


class Output:
    """Rich tables and colour on a terminal, plain aligned text when piped."""

    def __init__(self) -> None:
        self.console = Console(highlight=False, soft_wrap=True)
        self.rich = self.console.is_terminal

    def line(self, text: str, style: str | None = None) -> None:
        if self.rich:
            self.console.print(Text(text, style=style or ""))
        else:
            print(text, flush=True)

    def table(
        self,
        title: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[str]],
        styles: Sequence[Sequence[str | None]] | None = None,
    ) -> None:
        if self.rich:
            table = Table(title=title or None, title_justify="left")
            for column in columns:
                table.add_column(column)
            for i, row in enumerate(rows):
                row_styles = styles[i] if styles else [None] * len(row)
                table.add_row(
                    *(
                        Text(cell, style=style or "")
                        for cell, style in zip(row, row_styles, strict=True)
                    )
                )
            self.console.print(table)
            return
        for text in plain_table(title, columns, rows):
            print(text)
        sys.stdout.flush()


def plain_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns separated by two spaces, padded to the widest cell; no trailing blanks."""
    everything = [list(columns), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in everything) for i in range(len(columns))]
    lines = [f"{title}:"] if title else []
    for row in everything:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return lines


def error_line(message: str) -> None:
    print(f"distbreaker: error: {message}", file=sys.stderr, flush=True)


# -- formatting -----------------------------------------------------------------------


def ago(moment: float | None, now: float) -> str:
    """``"12s ago"``-style age of an epoch time; ``"never"`` for None."""
    if moment is None:
        return "never"
    seconds = max(0.0, now - moment)
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h ago"
    return f"{seconds / 86400:.1f}d ago"


def resets_in(status: BreakerStatus) -> str:
    if status.state == "open":
        return f"{status.time_until_reset:.1f}s" if status.time_until_reset > 0 else "due"
    if status.state == "forced_open":
        return "manual"
    return "-"


def clock_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S UTC")


def evidence(status: BreakerStatus, config: BreakerConfig | None) -> str:
    """The evidence against the rule in use: ``3/5 in 120s`` or ``40% of 250 calls ...``."""
    window = BreakerConfig().window if config is None else config.window
    if config is not None and config.failure_rate_threshold is not None:
        rate = status.failure_rate or 0.0
        text = (
            f"{rate:.0%} of {status.calls_in_window or 0} calls in {window:g}s "
            f"(opens at {config.failure_rate_threshold:.0%}, min {config.minimum_calls})"
        )
    else:
        threshold = "?" if config is None else str(config.failure_threshold)
        text = f"{status.failure_count}/{threshold} in {window:g}s"
    if config is not None and config.min_reporters > 1:
        text += f", {status.reporters}/{config.min_reporters} reporters"
    if status.locally_open_reporters:
        text += f"; open locally on {', '.join(status.locally_open_reporters)}"
    return text


def conflict_text(raw: str) -> str:
    """The stored record of two writers with different settings, in one line."""
    try:
        record = json.loads(raw)
        first, second = (json.loads(text) for text in record["settings"])
        differ = sorted(k for k in first.keys() | second.keys() if first.get(k) != second.get(k))
        parts = [f"{printable(k, 40)} {first.get(k)!r} vs {second.get(k)!r}" for k in differ]
        when = datetime.fromtimestamp(record["at"] / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (ValueError, KeyError, TypeError, AttributeError):
        return "processes use different settings (the record of it is unreadable)"
    return f"processes use different settings ({'; '.join(parts) or 'same values'}), seen {when}"


def state_text(status: BreakerStatus) -> str:
    return f"{status.state} (dry run)" if status.dry_run else status.state


def status_row(status: BreakerStatus, config: BreakerConfig | None, now: float) -> list[str]:
    """One table row; ``config`` is None while the breaker has stored no settings."""
    return [
        status.name,
        state_text(status),
        evidence(status, config),
        str(status.generation),
        resets_in(status),
        ago(status.last_failure_at, now),
        str(status.opens_total),
    ]


STATUS_COLUMNS = [
    "BREAKER",
    "STATE",
    "FAILURES",
    "GENERATION",
    "RESETS IN",
    "LAST FAILURE",
    "OPENS",
]


def event_line(event: Event) -> str:
    """One transition as ``watch`` prints it."""
    at = datetime.fromtimestamp(event.at_ms / 1000, UTC).isoformat(timespec="milliseconds")
    text = f"{at.replace('+00:00', 'Z')}  {event.name}  {event.from_state} -> {event.to_state}"
    text += f"  generation {event.generation}"
    if event.reason:
        text += f"  ({event.reason})"
    if event.to_state == "open" and event.open_until_ms:
        text += f"  until {clock_time(event.open_until_ms / 1000)}"
    return text


def event_json(event: Event) -> str:
    """One transition in the channel's JSON form (``watch --json``)."""
    return json.dumps(
        {
            "name": event.name,
            "from": event.from_state,
            "to": event.to_state,
            "generation": event.generation,
            "at": event.at_ms,
            "reason": event.reason,
            "open_until": event.open_until_ms,
        }
    )
