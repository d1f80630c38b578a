"""``distbreaker demo``: worker processes share one breaker in front of a flaky upstream.

The parent starts a :class:`~distbreaker.upstream.FlakyUpstream` on loopback and switches
it ok → error → ok on a schedule; every worker process calls it through the same breaker
(``demo-upstream``), so once a few failures are seen *all* workers stop calling, serve
their fallback, and probe recovery together. Transitions are printed as the events channel
announces them. Without a reachable Redis the demo starts an embedded one (fakeredis's TCP
server, which runs the same Lua scripts) and shuts it down at the end.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from distbreaker.breaker import Breaker
from distbreaker.config import BreakerConfig
from distbreaker.diagnostics import redact_url
from distbreaker.events import parse_event
from distbreaker.store import STORE_ERRORS, connect, events_channel
from distbreaker.testing.upstream import FlakyUpstream

BREAKER_NAME = "demo-upstream"
DEMO_SETTINGS: dict[str, Any] = {"failure_threshold": 3, "reset_timeout": 2.0, "window": 10.0}
SHORTEST_DURATION = 6.0
CALL_INTERVAL = 0.05  # each worker calls 20 times a second
_COUNTERS = ("calls", "ok", "failed", "refused")


class Printer(Protocol):
    """Where the demo writes: the CLI gives one with colour on a terminal."""

    def line(self, text: str, style: str | None = None) -> None: ...

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None: ...


@dataclass(frozen=True)
class Phase:
    at: float
    mode: str
    why: str


def schedule(duration: float) -> list[Phase]:
    """ok, then an outage long enough for one failed probe, then recovery with time to
    close. Times are seconds from the start."""
    outage = max(1.0, round(duration * 0.15, 1))
    recovery = outage + max(2.5, round(duration * 0.3, 1))
    return [
        Phase(0.0, "ok", "upstream healthy"),
        Phase(outage, "error", "upstream starts failing (HTTP 503)"),
        Phase(recovery, "ok", "upstream recovers"),
    ]


def demo_config(prefix: str) -> BreakerConfig:
    return BreakerConfig(key_prefix=prefix, **DEMO_SETTINGS)


class EmbeddedRedis:
    """fakeredis's TCP server on a free loopback port, in a thread of this process."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("embedded Redis is not started")
        return f"redis://{self.host}:{self._server.server_address[1]}/0"

    def start(self) -> EmbeddedRedis:
        from fakeredis import TcpFakeServer  # the [cli] extra

        self._server = TcpFakeServer((self.host, 0))
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="embedded-redis",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """``shutdown()`` ends the handlers, ``server_close()`` waits for them and closes."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


@dataclass
class DemoResult:
    calls: int = 0
    ok: int = 0
    failed: int = 0
    refused: int = 0
    upstream_hits: int = 0
    transitions: list[tuple[str, str]] = field(default_factory=list)
    final_state: str = "unknown"
    embedded: bool = False
    interrupted: bool = False
    per_worker: list[dict[str, int]] = field(default_factory=list)

    @property
    def fallbacks(self) -> int:
        return self.failed + self.refused


def redis_problem(url: str) -> str | None:
    """Why Redis at ``url`` cannot be used, or None when it answers."""
    client = connect(url, timeout=1.0)  # ValueError for a URL that is not a Redis URL
    try:
        client.ping()
    except STORE_ERRORS as error:
        return type(error).__name__
    finally:
        client.close()
    return None


@contextlib.contextmanager
def redis_for_demo(url: str, printer: Printer) -> Iterator[tuple[str, bool]]:
    """``url`` when Redis answers there, else an embedded server's URL, for the block."""
    problem = redis_problem(url)
    if problem is None:
        yield url, False
        return
    printer.line(f"no Redis at {redact_url(url)} ({problem}); starting an embedded one")
    embedded = EmbeddedRedis().start()
    printer.line(f"embedded Redis (fakeredis, same Lua scripts) on {embedded.url}")
    try:
        yield embedded.url, True
    finally:
        embedded.stop()


def _worker(
    index: int,
    redis_url: str,
    prefix: str,
    upstream_url: str,
    ready: Any,
    stop: Any,
    counters: Any,
) -> None:
    """One worker process: call the upstream through the shared breaker until told to stop."""
    import httpx

    # Ctrl-C reaches the whole process group: the parent alone decides when workers stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    breaker = Breaker(BREAKER_NAME, connect(redis_url, timeout=1.0), demo_config(prefix))
    base = index * len(_COUNTERS)
    with httpx.Client(timeout=1.0) as http:
        touched = False

        def call_upstream() -> str:
            nonlocal touched
            touched = True
            http.get(upstream_url).raise_for_status()
            return "upstream"

        def fallback() -> str:
            return "cached answer"

        ready.set()
        while not stop.is_set():
            touched = False
            answer = breaker.execute(call_upstream, fallback=fallback)
            with counters.get_lock():
                counters[base] += 1
                if answer == "upstream":
                    counters[base + 1] += 1
                elif touched:
                    counters[base + 2] += 1
                else:
                    counters[base + 3] += 1
            stop.wait(CALL_INTERVAL)


class _Screen:
    """The parent's view: phases, transitions and a progress line a second."""

    def __init__(self, printer: Printer, started: float) -> None:
        self.printer = printer
        self.started = started

    def stamp(self) -> str:
        return f"{time.monotonic() - self.started:5.1f}s"

    def phase(self, phase: Phase) -> None:
        self.printer.line(f"{self.stamp()}  upstream -> {phase.mode:<5}  {phase.why}", "cyan")

    def transition(self, source: str, target: str, generation: int, reason: str) -> None:
        style = {"open": "bold red", "half_open": "bold yellow", "closed": "bold green"}.get(target)
        self.printer.line(
            f"{self.stamp()}  breaker {source} -> {target}  (generation {generation}, {reason})",
            style,
        )

    def progress(self, totals: dict[str, int], hits: int, mode: str) -> None:
        self.printer.line(
            f"{self.stamp()}  upstream {mode:<5}  calls {totals['calls']:5d}  ok {totals['ok']:5d}"
            f"  failed {totals['failed']:3d}  fallbacks {totals['failed'] + totals['refused']:5d}"
            f"  upstream hits {hits:5d}",
            "dim",
        )


def _totals(counters: Any, workers: int) -> tuple[dict[str, int], list[dict[str, int]]]:
    with counters.get_lock():
        values = list(counters[:])
    per_worker = [
        dict(zip(_COUNTERS, values[i * len(_COUNTERS) : (i + 1) * len(_COUNTERS)], strict=True))
        for i in range(workers)
    ]
    totals = {name: sum(w[name] for w in per_worker) for name in _COUNTERS}
    return totals, per_worker


def run_demo(
    redis_url: str,
    printer: Printer,
    *,
    workers: int = 3,
    duration: float = 15.0,
    prefix: str = "distbreaker",
) -> DemoResult:
    """Run the demo for ``duration`` seconds (after the workers are up); print as it goes."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if duration < SHORTEST_DURATION:
        raise ValueError(f"duration must be at least {SHORTEST_DURATION:g} s to show a recovery")
    with redis_for_demo(redis_url, printer) as (url, embedded):
        result = _run(url, printer, workers, duration, prefix)
        result.embedded = embedded
        return result


class _Workers:
    """The worker processes (spawned: no sockets inherited) and their shared counters."""

    def __init__(self, count: int, url: str, prefix: str, upstream_url: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.count = count
        self.counters = context.Array("q", count * len(_COUNTERS))
        self.stop_event = context.Event()
        self.readies = [context.Event() for _ in range(count)]
        self.processes = [
            context.Process(
                target=_worker,
                args=(
                    i,
                    url,
                    prefix,
                    upstream_url,
                    self.readies[i],
                    self.stop_event,
                    self.counters,
                ),
                name=f"demo-worker-{i}",
                daemon=True,
            )
            for i in range(count)
        ]

    def start(self, timeout: float = 60.0) -> None:
        """Start every worker and wait until each one is calling."""
        for process in self.processes:
            process.start()
        deadline = time.monotonic() + timeout
        for ready, process in zip(self.readies, self.processes, strict=True):
            while not ready.wait(0.1):
                if not process.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{process.name} did not start (exit code {process.exitcode})"
                    )

    def totals(self) -> tuple[dict[str, int], list[dict[str, int]]]:
        return _totals(self.counters, self.count)

    def stop(self) -> None:
        self.stop_event.set()
        for process in self.processes:
            if process.pid is None:
                continue  # never started
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)


def _run(url: str, printer: Printer, workers: int, duration: float, prefix: str) -> DemoResult:
    client = connect(url, timeout=2.0)
    config = demo_config(prefix)
    breaker = Breaker(BREAKER_NAME, client, config)
    breaker.reset()  # a fresh start, whatever an earlier run left behind
    pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe(events_channel(prefix))
    result = DemoResult()
    with FlakyUpstream("ok", hang_seconds=2.0) as upstream:
        printer.line(
            f"{workers} worker processes share breaker {BREAKER_NAME!r} "
            f"(failure_threshold={config.failure_threshold}, "
            f"reset_timeout={config.reset_timeout:g}s, window={config.window:g}s) "
            f"in front of {upstream.url}"
        )
        pool = _Workers(workers, url, prefix, upstream.url)
        try:
            pool.start()
            _play(printer, upstream, pubsub, pool, duration, result)
        except KeyboardInterrupt:
            result.interrupted = True
        finally:
            pool.stop()
            totals, result.per_worker = pool.totals()
            result.calls, result.ok = totals["calls"], totals["ok"]
            result.failed, result.refused = totals["failed"], totals["refused"]
            result.upstream_hits = upstream.requests
            with contextlib.suppress(*STORE_ERRORS):
                _drain(pubsub, None, result)
                result.final_state = breaker.status().state
            with contextlib.suppress(*STORE_ERRORS):
                pubsub.close()
            client.close()
    _summary(printer, result)
    if result.interrupted:
        raise KeyboardInterrupt  # after the summary: the command still exits 130
    return result


def _play(
    printer: Printer,
    upstream: FlakyUpstream,
    pubsub: Any,
    pool: _Workers,
    duration: float,
    result: DemoResult,
) -> None:
    started = time.monotonic()
    screen = _Screen(printer, started)
    pending = schedule(duration)
    next_progress = 1.0
    while (elapsed := time.monotonic() - started) < duration:
        while pending and pending[0].at <= elapsed:
            phase = pending.pop(0)
            upstream.mode = phase.mode
            screen.phase(phase)
        _drain(pubsub, screen, result, wait=0.1)
        if elapsed >= next_progress:
            next_progress += 1.0
            screen.progress(pool.totals()[0], upstream.requests, upstream.mode)


def _drain(pubsub: Any, screen: _Screen | None, result: DemoResult, wait: float = 0.0) -> None:
    """Print (and remember) every transition the events channel has for the demo breaker."""
    message = pubsub.get_message(timeout=wait)
    while message is not None:
        event = parse_event(message["data"]) if message.get("type") == "message" else None
        if event is not None and event.name == BREAKER_NAME:
            result.transitions.append((event.from_state, event.to_state))
            if screen is not None:
                screen.transition(event.from_state, event.to_state, event.generation, event.reason)
        message = pubsub.get_message(timeout=0.0)


def _summary(printer: Printer, result: DemoResult) -> None:
    rows = [
        [
            f"worker {i}",
            str(w["calls"]),
            str(w["ok"]),
            str(w["failed"]),
            str(w["refused"]),
            str(w["failed"] + w["refused"]),
        ]
        for i, w in enumerate(result.per_worker)
    ]
    rows.append(
        [
            "total",
            str(result.calls),
            str(result.ok),
            str(result.failed),
            str(result.refused),
            str(result.fallbacks),
        ]
    )
    printer.table(
        "summary",
        ["", "calls", "ok", "failed", "refused", "fallbacks"],
        rows,
    )
    counted = Counter(f"{a} -> {b}" for a, b in result.transitions)
    listed = ", ".join(f"{name} x{n}" for name, n in counted.items()) or "none"
    printer.line(f"transitions: {len(result.transitions)} ({listed})")
    printer.line(
        f"upstream hits: {result.upstream_hits} of {result.calls} calls; "
        f"{result.refused} calls were answered by the fallback without touching the upstream"
    )
    ending = "is" if result.interrupted else "ends"
    printer.line(f"breaker {BREAKER_NAME!r} {ending} {result.final_state}")
    if result.interrupted:
        printer.line("interrupted before the end of the schedule")
