"""Store load: Redis commands per second against request rate, workers and failures.

A pool of worker processes (cached mode, one client and one subscriber each) serves calls
at a fixed rate per process; the server's ``INFO commandstats`` before and after the
window gives the commands the whole fleet sent. Workers persist across scenarios, so each
scenario only builds a fresh breaker (a fresh name) in the processes it uses.
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import distbreaker
from benchmarks.subjects import delete_keys
from benchmarks.timing import commands_between, server_commands
from distbreaker import Breaker, BreakerConfig, CircuitOpenError
from distbreaker.core import Event
from distbreaker.events import subscribe
from distbreaker.store import events_channel

SETUP_MARGIN = 0.5  # seconds between handing out a scenario and its start
SCRIPT_CALLS = ("evalsha", "eval", "evalsha_ro", "eval_ro")


@dataclass(frozen=True)
class Scenario:
    """One row: ``processes`` workers at ``rate`` calls/s each for ``seconds``."""

    label: str
    processes: int
    rate: int
    failure_every: int = 0  # every n-th call fails; 0 = none, 1 = upstream down
    failure_threshold: int = 5
    reset_timeout: float = 60.0
    slow_failure: float = 0.0  # a failing call takes this long before it raises
    failure_rate: float | None = None  # the rate rule (successes reported in batches)


@dataclass(frozen=True)
class Job:
    scenario: Scenario
    url: str
    prefix: str
    start_at: float  # wall clock, shared by the processes of one machine
    seconds: float


@dataclass
class Tally:
    calls: int = 0
    refused: int = 0
    failed: int = 0
    late: bool = False  # set-up finished after the window opened


@dataclass
class LoadResult:
    scenario: Scenario
    seconds: float
    tally: Tally
    commands: dict[str, int] = field(default_factory=dict)

    @property
    def request_rate(self) -> float:
        return self.tally.calls / self.seconds

    @property
    def command_rate(self) -> float:
        """Every command the server ran, those inside scripts included."""
        return sum(self.commands.values()) / self.seconds

    @property
    def script_rate(self) -> float:
        """Script calls: the round trips breakers make (plus a rare SUBSCRIBE)."""
        return sum(self.commands.get(name, 0) for name in SCRIPT_CALLS) / self.seconds


class _Quiet:
    """Only here to reach the process's shared subscriber."""

    def on_event(self, event: Event) -> None:
        """The breaker's own listener handles events."""

    def on_reconnect(self) -> None:
        """Nothing to do."""

    def on_disconnect(self, error: BaseException) -> None:
        """Nothing to do."""


_QUIET = _Quiet()


def _prepare(client: Any, job: Job) -> Breaker:
    scenario = job.scenario
    config = BreakerConfig(
        key_prefix=job.prefix,
        failure_threshold=scenario.failure_threshold,
        reset_timeout=scenario.reset_timeout,
        window=10.0,
        failure_rate_threshold=scenario.failure_rate,
        minimum_calls=1_000_000,
    )
    breaker = Breaker("upstream", client, config)
    breaker.execute(lambda: None)  # subscribes and fills the cache
    subscribe(client, events_channel(job.prefix), "upstream", _QUIET).connected.wait(10)
    return breaker


def _serve(breaker: Breaker, job: Job) -> Tally:
    scenario = job.scenario
    tally = Tally(late=time.time() > job.start_at)
    interval = 1.0 / scenario.rate
    end = job.start_at + job.seconds
    next_call = job.start_at

    def failing() -> None:
        if scenario.slow_failure:
            time.sleep(scenario.slow_failure)
        raise ConnectionError("upstream unreachable")

    while True:
        now = time.time()
        if now >= end:
            return tally
        if now < next_call:
            time.sleep(next_call - now)
            continue
        next_call += interval
        tally.calls += 1
        fails = scenario.failure_every and tally.calls % scenario.failure_every == 0
        try:
            breaker.execute(failing if fails else _ok)
        except CircuitOpenError:
            tally.refused += 1
        except ConnectionError:
            tally.failed += 1


def _ok() -> None:
    return None


def load_worker(url: str, jobs: Any, results: Any) -> None:
    """Process entry point: run jobs until a ``None`` arrives."""
    client = distbreaker.connect(url, timeout=2.0)
    client.ping()
    results.put("ready")
    while (job := jobs.get()) is not None:
        breaker = _prepare(client, job)
        results.put(_serve(breaker, job))


class WorkerPool:
    """Long-lived worker processes, each with its own job queue."""

    def __init__(self, url: str, size: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.url = url
        self.results = context.Queue()
        self.queues = [context.Queue() for _ in range(size)]
        self.processes = [
            context.Process(target=load_worker, args=(url, q, self.results), daemon=True)
            for q in self.queues
        ]
        for process in self.processes:
            process.start()
        for _ in self.processes:
            if self.results.get(timeout=120) != "ready":
                raise RuntimeError("a load worker did not start")

    def run(self, admin: Any, scenario: Scenario, seconds: float) -> LoadResult:
        prefix = f"bench-load-{uuid.uuid4().hex[:8]}"
        start_at = time.time() + SETUP_MARGIN
        job = Job(scenario, self.url, prefix, start_at, seconds)
        for q in self.queues[: scenario.processes]:
            q.put(job)
        time.sleep(max(0.0, start_at - time.time()))
        before = server_commands(admin)
        time.sleep(max(0.0, start_at + seconds - time.time()))
        after = server_commands(admin)
        total = Tally()
        for _ in range(scenario.processes):
            tally = self.results.get(timeout=60)
            total.calls += tally.calls
            total.refused += tally.refused
            total.failed += tally.failed
            total.late = total.late or tally.late
        delete_keys(admin, f"{prefix}:*")
        return LoadResult(scenario, seconds, total, commands_between(before, after))

    def close(self) -> None:
        for q in self.queues:
            q.put(None)
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()


def scenarios(quick: bool) -> list[Scenario]:
    """Traffic, workers, failures: which of them the store load follows."""
    rows = [Scenario("healthy", n, 500) for n in (1, 2, 4, 8)]
    rows += [Scenario("healthy", 1, rate) for rate in ((2000,) if quick else (100, 2000))]
    counts = (1, 4) if quick else (1, 2, 4, 8)
    rows += [
        Scenario("10% of calls fail", n, 500, failure_every=10, failure_threshold=100_000)
        for n in counts
    ]
    rows.append(
        Scenario("upstream down (reset_timeout 1 s)", 4, 500, failure_every=1, reset_timeout=1.0)
    )
    rate_rows = (
        ((1, 500), (8, 500), (1, 2000))
        if quick
        else [(n, r) for n in (1, 2, 4, 8) for r in (100, 500, 2000)]
    )
    rows += [Scenario("healthy, rate rule", n, r, failure_rate=0.5) for n, r in rate_rows]
    if not quick:
        rows.append(
            Scenario(
                "upstream down, probes hang 0.2 s",
                4,
                500,
                failure_every=1,
                reset_timeout=1.0,
                slow_failure=0.2,
            )
        )
    return rows
