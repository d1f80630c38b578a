"""The soak's output: one markdown table (rounds merged per fault and mode) and the violations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks.soak.checker import Bounds, Row, Violation

HEADER = (
    "| fault | mode | calls | transitions | lost records | max probes "
    "| worst added latency | longest refusal, upstream up | resume | verdict |"
)


@dataclass
class Line:
    """One fault and mode over every round."""

    fault: str
    mode: str
    calls: int = 0
    transitions: int = 0
    events_excused: int = 0
    lost_low: int = 0
    lost_high: int = 0
    excused: int = 0
    unaccounted: int = 0
    max_probes: int = 0
    worst_added: float = 0.0
    longest_refusal: float = 0.0
    resume: float | None = 0.0
    resume_window: float = 0.0
    violations: list[tuple[int, Violation]] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.calls += row.calls
        self.transitions += row.events.transitions
        self.events_excused += row.events.excused
        self.lost_low += row.records.lost_low
        self.lost_high += row.records.lost_high
        self.excused += row.records.excused
        self.unaccounted += row.records.unaccounted
        self.max_probes = max(self.max_probes, row.max_probes)
        self.worst_added = max(self.worst_added, row.worst_added)
        self.longest_refusal = max(self.longest_refusal, row.longest_refusal)
        self.resume_window = max(self.resume_window, row.resume_window)
        if self.resume is not None:
            self.resume = None if row.resume is None else max(self.resume, row.resume)
        self.violations += [(row.round, v) for v in row.violations]

    @property
    def verdict(self) -> str:
        names = list(dict.fromkeys(v.invariant for _, v in self.violations))
        return "ok" if not names else "**FAIL**: " + ", ".join(names)


def merge(rows: Sequence[Row]) -> list[Line]:
    lines: dict[tuple[str, str], Line] = {}
    for row in rows:
        key = (row.fault, row.mode)
        if key not in lines:
            lines[key] = Line(row.fault, row.mode)
        lines[key].add(row)
    return list(lines.values())


def _lost(line: Line) -> str:
    text = str(line.lost_low)
    if line.lost_high != line.lost_low:
        text = f"{line.lost_low}-{line.lost_high}"
    if line.lost_high and not any(v.invariant == "lost records" for _, v in line.violations):
        text += " (store errors)"
    if line.unaccounted:
        text += f" (+{line.unaccounted} n/a)"
    return text


def _resume(line: Line) -> str:
    if line.resume is None:
        return f"never (> {line.resume_window:.1f} s)"
    return f"{line.resume:.2f} s"


def table(lines: Sequence[Line], bounds: Bounds) -> str:
    out = [HEADER, "|" + "---|" * 10]
    for line in lines:
        cells = (
            line.fault,
            line.mode,
            str(line.calls),
            str(line.transitions),
            _lost(line),
            f"{line.max_probes}/{bounds.half_open_max_calls}",
            f"{line.worst_added * 1000:.0f} ms",
            f"{line.longest_refusal:.2f} s",
            _resume(line),
            line.verdict,
        )
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def violations(lines: Sequence[Line], rounds: int) -> list[str]:
    found = []
    for line in lines:
        for number, violation in line.violations:
            where = f"{line.fault}/{line.mode}" + (f" (round {number + 1})" if rounds > 1 else "")
            found.append(f"- {where}: {violation.invariant}: {violation.detail}")
    return found


def render(rows: Sequence[Row], bounds: Bounds, notes: Sequence[str] = ()) -> str:
    """The table, the bounds it was judged by, then every violation with its numbers."""
    lines = merge(rows)
    rounds = 1 + max((row.round for row in rows), default=0)
    parts = [table(lines, bounds), ""]
    parts.append(
        f"Bounds: at most half_open_max_calls={bounds.half_open_max_calls} probes at once; "
        f"a call spends at most {bounds.added_latency:.2f} s in distbreaker; shared mode "
        f"resumes at most {bounds.resume:.2f} s after a fault ends; a healthy upstream is "
        f"refused for at most {bounds.refusal:.2f} s; every key has a TTL; "
        "lost records only where a store error or its back-off met the record."
    )
    excused = sum(line.excused for line in lines)
    unaccounted = sum(line.unaccounted for line in lines)
    parts.append(
        f"Lost records: failures sent through Redis but missing from failures_total; "
        f"{excused} sent failures met a store error or the back-off (allowed to be lost); "
        f"n/a: {unaccounted} sent while Redis had lost or garbled its counters."
    )
    transitions = sum(line.transitions for line in lines)
    unheard = sum(line.events_excused for line in lines)
    parts.append(
        f"Events: {transitions} transitions between samples, each checked for exactly one event "
        f"on the channel; {unheard} had none while the recorder was not provably listening "
        "(allowed)."
    )
    found = violations(lines, rounds)
    parts += ["", f"Violations: {len(found)}" if found else "Violations: none"]
    parts += found
    if notes:
        parts += ["", "Notes:", *(f"- {note}" for note in notes)]
    return "\n".join(parts)
