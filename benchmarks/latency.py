"""Per-call latency of every subject and case, in interleaved rounds.

Rounds interleave the subjects so that a noisy moment on the machine lands on all of
them alike; ratios computed from one run are then fair even when absolute numbers drift.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import redis

from benchmarks.subjects import Case, Subject, succeed
from benchmarks.timing import Samples, commands_between, server_commands, time_calls, warm_up
from distbreaker import Breaker, CircuitOpenError


@dataclass(frozen=True)
class Budget:
    """How many timed calls per subject and case, split over ``rounds``."""

    local_calls: int
    remote_calls: int
    rounds: int


Results = dict[tuple[str, Case], Samples]


def measure(subjects: list[Subject], cases: tuple[Case, ...], budget: Budget) -> Results:
    results: Results = {}
    for case in cases:
        runnable = [s for s in subjects if case in s.calls]
        for subject in runnable:
            remote = case in subject.remote
            warm_up(
                subject.calls[case],
                min(200, budget.remote_calls) if remote else min(2000, budget.local_calls),
            )
        for round_number in range(budget.rounds):
            # rotate the order each round: no subject always runs first or last
            shift = round_number % len(runnable)
            for subject in runnable[shift:] + runnable[:shift]:
                total = budget.remote_calls if case in subject.remote else budget.local_calls
                iterations = max(1, total // budget.rounds)
                sent_before = subject.counter.sent if subject.counter else 0
                samples = time_calls(subject.calls[case], iterations)
                sent = (subject.counter.sent if subject.counter else 0) - sent_before
                results.setdefault((subject.label, case), Samples()).add(samples, sent)
    return results


@dataclass(frozen=True)
class RoundTripCheck:
    """Server-side proof that a loop of cached decisions sent Redis nothing."""

    case: Case
    calls: int
    seconds: float
    commands: dict[str, int]
    cache_ttl: float

    @property
    def total(self) -> int:
        return sum(self.commands.values())

    @property
    def met(self) -> bool:
        # a loop longer than cache_ttl may refresh the cache: once per cache_ttl, never per call
        allowance = int(self.seconds / self.cache_ttl)
        return self.total <= allowance


@dataclass(frozen=True)
class ReportCheck:
    """Server-side proof that healthy calls under the rate rule send only batched reports."""

    calls: int
    seconds: float
    scripts: int
    report_interval: float

    @property
    def allowance(self) -> int:
        return int(self.seconds / self.report_interval) + 2

    @property
    def met(self) -> bool:
        return self.scripts <= self.allowance


def check_reports_only(admin: redis.Redis, breaker: Breaker, calls: int) -> ReportCheck:
    """``calls`` healthy calls on a rate-rule breaker, counting the script calls Redis saw."""
    breaker.execute(succeed)
    before = server_commands(admin)
    started = time.perf_counter()
    time_calls(lambda: breaker.execute(succeed), calls)
    seconds = time.perf_counter() - started
    commands = commands_between(before, server_commands(admin))
    scripts = sum(commands.get(name, 0) for name in ("evalsha", "eval"))
    return ReportCheck(calls, seconds, scripts, breaker.config.report_interval)


def check_no_round_trips(
    admin: redis.Redis, breaker: Breaker, case: Case, calls: int
) -> RoundTripCheck:
    """Refresh ``breaker``'s cache, then run ``calls`` calls watching ``INFO commandstats``.

    Run it while nothing else talks to the server: the counts are server-wide.
    """
    breaker._protocol.local.cache.invalidate()  # the next call asks the script: fresh cache
    with contextlib.suppress(CircuitOpenError):  # the refused case
        breaker.execute(succeed)
    before = server_commands(admin)
    started = time.perf_counter()
    time_calls(lambda: breaker.execute(succeed), calls)
    seconds = time.perf_counter() - started
    commands = commands_between(before, server_commands(admin))
    return RoundTripCheck(case, calls, seconds, commands, breaker.config.cache_ttl)
