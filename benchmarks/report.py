"""Markdown tables and the goals of issue 8, all from the numbers of one run."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from benchmarks.latency import ReportCheck, Results, RoundTripCheck
from benchmarks.load import LoadResult
from benchmarks.propagation import Propagation
from benchmarks.subjects import (
    ADMIT_SCRIPT,
    BARE,
    CACHED,
    CASES,
    EVALSHA,
    INTERLOCK_MEMORY,
    INTERLOCK_REDIS,
    PING,
    PYBREAKER_MEMORY,
    PYBREAKER_REDIS,
    RATE,
    STRICT,
    Case,
    Subject,
)


def table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def micro(value: float) -> str:
    """Microseconds, with the precision that matters at that size."""
    if abs(value) < 10:
        return f"{value:.2f}"
    return f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


class Numbers:
    """Medians and overheads looked up by subject label and case."""

    def __init__(self, results: Results) -> None:
        self.results = results

    def has(self, label: str, case: Case) -> bool:
        return (label, case) in self.results

    def median(self, label: str, case: Case = "healthy") -> float:
        return self.results[(label, case)].median

    def overhead(self, label: str, case: Case = "healthy") -> float:
        """The breaker's own cost: its call minus the bare call of the same case."""
        return self.median(label, case) - self.median(BARE, case)


def latency_table(subjects: list[Subject], numbers: Numbers) -> str:
    rows: list[list[object]] = []
    for case in CASES:
        for subject in subjects:
            if subject.skipped:
                if case == "healthy":
                    rows.append([case, subject.label, subject.skipped, "", "", ""])
                continue
            if not numbers.has(subject.label, case):
                continue
            samples = numbers.results[(subject.label, case)]
            overhead = "" if subject.label == BARE else micro(numbers.overhead(subject.label, case))
            commands = f"{samples.commands_per_call:.4g}" if subject.counter else "0 (no client)"
            rows.append(
                [case, subject.label, micro(samples.median), micro(samples.p99), overhead, commands]
            )
    header = ["case", "subject", "median µs", "p99 µs", "overhead µs", "round trips/call"]
    return table(header, rows)


@dataclass(frozen=True)
class Goal:
    goal: str
    measured: str
    met: bool | None  # None: not measured in this run

    @property
    def verdict(self) -> str:
        return "n/a" if self.met is None else ("**met**" if self.met else "**missed**")


def goals(
    numbers: Numbers,
    checks: list[RoundTripCheck],
    propagation: list[Propagation],
) -> list[Goal]:
    cached = numbers.overhead(CACHED)
    in_process = numbers.overhead(PYBREAKER_MEMORY)
    redis_peer = numbers.overhead(PYBREAKER_REDIS)
    strict = numbers.overhead(STRICT)
    evalsha = numbers.median(EVALSHA)
    result = [
        Goal(
            "healthy cached overhead ≤ 2x in-process breaker (pybreaker) overhead",
            f"{cached / in_process:.2f}x ({micro(cached)} / {micro(in_process)} µs)",
            cached <= 2 * in_process,
        ),
        Goal(
            "healthy cached ≥ 10x faster than pybreaker + CircuitRedisStorage",
            f"{redis_peer / cached:.0f}x by overhead ({micro(redis_peer)} / {micro(cached)} µs); "
            f"{numbers.median(PYBREAKER_REDIS) / numbers.median(CACHED):.0f}x by whole call",
            redis_peer >= 10 * cached,
        ),
    ]
    refused = [c for c in checks if c.case == "refused"]
    if refused:
        check = refused[0]
        result.append(
            Goal(
                "refused call without a round trip (server-side INFO commandstats)",
                f"{check.total} commands during {check.calls} refused calls "
                f"({check.seconds:.2f} s; cache_ttl {check.cache_ttl:g} s)",
                check.met,
            )
        )
    listener = [p for p in propagation if p.mode == "listener" and p.all_refuse]
    if listener:
        p = listener[0]
        p99 = percentile(p.all_refuse, 0.99)
        result.append(
            Goal(
                "trip propagation p99 ≤ 10 ms on loopback (all observers refuse)",
                f"p99 {p99:.2f} ms, p50 {percentile(p.all_refuse, 0.5):.2f} ms "
                f"({p.observers} processes, {p.trips} trips, {p.missed} missed)",
                p99 <= 10 and p.missed == 0,
            )
        )
    result.append(
        Goal(
            "strict admission ≤ 1.3x a bare EVALSHA",
            f"{strict / evalsha:.2f}x (strict overhead {micro(strict)} µs / "
            f"EVALSHA {micro(evalsha)} µs)",
            strict <= 1.3 * evalsha,
        )
    )
    return result


def goals_table(rows: list[Goal]) -> str:
    rows_out = [[g.goal, g.measured, g.verdict] for g in rows]
    return table(["goal", "measured (this run)", "result"], rows_out)


def rate_goals(numbers: Numbers, check: ReportCheck) -> list[Goal]:
    """Issue 13: the rate rule's healthy call against the count rule's and pybreaker's."""
    rate = numbers.overhead(RATE)
    cached = numbers.overhead(CACHED)
    in_process = numbers.overhead(PYBREAKER_MEMORY)
    return [
        Goal(
            "healthy overhead, rate rule ≤ 1.5x count rule (both cached)",
            f"{rate / cached:.2f}x ({micro(rate)} / {micro(cached)} µs)",
            rate <= 1.5 * cached,
        ),
        Goal(
            "healthy overhead, rate rule ≤ pybreaker in-process",
            f"{rate / in_process:.2f}x ({micro(rate)} / {micro(in_process)} µs)",
            rate <= in_process,
        ),
        Goal(
            "rate rule: no inline round trip (server-side script calls during healthy calls)",
            f"{check.scripts} script calls during {check.calls} calls in {check.seconds:.2f} s "
            f"(batched reports allowed: {check.allowance}, report_interval "
            f"{check.report_interval:g} s)",
            check.met,
        ),
    ]


def ratios_table(numbers: Numbers) -> str:
    """Further same-run ratios that explain the goals."""
    rows: list[list[str]] = []

    def add(text: str, top: float, bottom: float) -> None:
        rows.append([text, f"{top / bottom:.2f}x", f"{micro(top)} / {micro(bottom)} µs"])

    add(
        "healthy: cached overhead / pybreaker in-process overhead",
        numbers.overhead(CACHED),
        numbers.overhead(PYBREAKER_MEMORY),
    )
    if numbers.has(INTERLOCK_MEMORY, "healthy"):
        add(
            "healthy: cached overhead / interlock in-process overhead",
            numbers.overhead(CACHED),
            numbers.overhead(INTERLOCK_MEMORY),
        )
    add(
        "healthy: pybreaker-redis overhead / cached overhead",
        numbers.overhead(PYBREAKER_REDIS),
        numbers.overhead(CACHED),
    )
    if numbers.has(INTERLOCK_REDIS, "healthy"):
        add(
            "healthy: interlock-redis overhead / cached overhead",
            numbers.overhead(INTERLOCK_REDIS),
            numbers.overhead(CACHED),
        )
    add(
        "refused: cached overhead / pybreaker in-process overhead",
        numbers.overhead(CACHED, "refused"),
        numbers.overhead(PYBREAKER_MEMORY, "refused"),
    )
    add(
        "refused: pybreaker-redis overhead / cached overhead",
        numbers.overhead(PYBREAKER_REDIS, "refused"),
        numbers.overhead(CACHED, "refused"),
    )
    add(
        "healthy: strict overhead / bare EVALSHA", numbers.overhead(STRICT), numbers.median(EVALSHA)
    )
    add("healthy: strict overhead / PING", numbers.overhead(STRICT), numbers.median(PING))
    add("admit.lua alone / bare EVALSHA", numbers.median(ADMIT_SCRIPT), numbers.median(EVALSHA))
    add(
        "failing: cached overhead / bare EVALSHA (one record script)",
        numbers.overhead(CACHED, "failing"),
        numbers.median(EVALSHA),
    )
    add(
        "failing: strict overhead / bare EVALSHA (admit + record)",
        numbers.overhead(STRICT, "failing"),
        numbers.median(EVALSHA),
    )
    add(
        "failing: pybreaker-redis overhead / cached overhead",
        numbers.overhead(PYBREAKER_REDIS, "failing"),
        numbers.overhead(CACHED, "failing"),
    )
    return table(["ratio", "value", "from"], rows)


def checks_table(checks: list[RoundTripCheck]) -> str:
    rows = [
        [
            c.case,
            c.calls,
            f"{c.seconds:.2f}",
            c.total,
            ", ".join(f"{k} {v}" for k, v in sorted(c.commands.items())) or "-",
        ]
        for c in checks
    ]
    return table(["distbreaker cached loop", "calls", "seconds", "server commands", "which"], rows)


def propagation_table(results: list[Propagation]) -> str:
    rows = [
        [
            p.mode,
            p.observers,
            p.trips,
            f"{percentile(p.each, 0.5):.2f}",
            f"{percentile(p.each, 0.99):.2f}",
            f"{percentile(p.all_refuse, 0.5):.2f}",
            f"{percentile(p.all_refuse, 0.99):.2f}",
            f"{percentile(p.after_reply, 0.5):.2f}",
            p.missed,
        ]
        for p in results
    ]
    header = [
        "watcher",
        "processes",
        "trips",
        "each p50 ms",
        "each p99 ms",
        "all refuse p50 ms",
        "all refuse p99 ms",
        "after tripper's reply p50 ms",
        "missed",
    ]
    return table(header, rows)


def load_table(results: list[LoadResult]) -> str:
    rows = []
    for r in results:
        s = r.scenario
        per_thousand = 1000 * r.script_rate / r.request_rate if r.request_rate else 0.0
        top = sorted(r.commands.items(), key=lambda item: -item[1])[:4]
        label = s.label + (" (late start)" if r.tally.late else "")
        rows.append(
            [
                label,
                s.processes,
                s.rate,
                f"{r.request_rate:.0f}",
                f"{r.tally.failed / r.seconds:.0f}",
                f"{r.tally.refused / r.seconds:.0f}",
                f"{r.script_rate:.1f}",
                f"{per_thousand:.2f}",
                f"{r.command_rate:.1f}",
                ", ".join(f"{k} {v}" for k, v in top) or "-",
            ]
        )
    header = [
        "scenario",
        "processes",
        "calls/s each",
        "calls/s total",
        "failures/s",
        "refused/s",
        "script calls/s",
        "script calls per 1000 calls",
        "all commands/s (incl. inside scripts)",
        "top commands in window",
    ]
    return table(header, rows)
