"""One soak worker process: threads calling the upstream through shared breakers.

Each thread is bound to one consistency mode and calls ``breaker.execute`` (no fallback, so
whatever distbreaker lets through reaches the caller and is recorded) at a paced rate,
using the breaker of the phase the clock is in. In half of the workers a health thread
calls ``status()`` twice a second, as a health endpoint would. Everything is observed
through the public API and ``distbreaker.hooks``; the records go to a JSON-lines file.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

import distbreaker
from benchmarks.soak.timeline import Call, StatusPoll, StoreError, write_records
from distbreaker import Breaker, BreakerConfig, hooks
from distbreaker.hooks import CallInfo

HTTP_TIMEOUT = 2.0
# FlakyUpstream writes headers and body separately: on a kept-alive connection Nagle and
# delayed ACKs make every answer ~40 ms late. A fresh connection per call answers in ~1 ms.
HTTP_HEADERS = {"Connection": "close"}
START_TIMEOUT = 120.0


def breaker_name(phase: int, fault: str, mode: str) -> str:
    return f"p{phase:02d}-{fault}-{mode}"


@dataclass(frozen=True)
class WorkerJob:
    """Everything a worker needs; times are seconds after the shared start."""

    index: int
    redis_url: str
    upstream_url: str
    prefix: str
    phases: tuple[tuple[int, str, float, float], ...]  # index, fault, start, end
    modes: tuple[str, ...]
    threads: int
    rate: float
    settings: dict[str, Any]
    out: str
    seed: int
    status_interval: float | None = None  # seconds between status() polls; None: no poller

    @property
    def run_end(self) -> float:
        return max(end for _, _, _, end in self.phases)


class Observer:
    """The hook: the current thread's ``CallInfo`` and every store error, with its breaker."""

    def __init__(self, worker: int, names: dict[str, tuple[int, str]]) -> None:
        self._worker = worker
        self._names = names
        self._local = threading.local()
        self.store_errors: list[StoreError] = []

    def forget(self) -> None:
        self._local.info = None

    def taken(self) -> CallInfo | None:
        info: CallInfo | None = getattr(self._local, "info", None)
        return info

    def on_call(self, info: CallInfo) -> None:
        self._local.info = info

    def on_store_error(self, name: str, error: BaseException) -> None:
        phase, mode = self._names.get(name, (-1, ""))
        at = time.monotonic()
        self.store_errors.append(StoreError(self._worker, phase, mode, at, type(error).__name__))


class Worker:
    def __init__(self, job: WorkerJob) -> None:
        self.job = job
        config = dict(job.settings, key_prefix=job.prefix)
        self.client = distbreaker.connect(job.redis_url)
        self.breakers: dict[tuple[int, str], Breaker] = {}
        names: dict[str, tuple[int, str]] = {}
        for index, fault, _, _ in job.phases:
            for mode in job.modes:
                name = breaker_name(index, fault, mode)
                settings = BreakerConfig(**config, consistency=mode)
                self.breakers[(index, mode)] = Breaker(name, self.client, settings)
                names[name] = (index, mode)
        self.observer = Observer(job.index, names)
        self.calls: list[Call] = []
        self.polls: list[StatusPoll] = []
        self.crashes: list[str] = []
        self.t0 = 0.0

    def warm_up(self) -> None:
        """One call and one status() per mode on breakers of their own, unrecorded.

        Connections, scripts and the events subscriber are then ready before the first
        phase, whose figures would otherwise be this process's start-up.
        """
        config = dict(self.job.settings, key_prefix=self.job.prefix)
        with httpx.Client(timeout=HTTP_TIMEOUT, headers=HTTP_HEADERS) as http:
            for mode in self.job.modes:
                settings = BreakerConfig(**config, consistency=mode)
                breaker = Breaker(f"warm-up-{mode}", self.client, settings)
                breaker.execute(lambda: http.get(self.job.upstream_url).status_code)
                breaker.status()

    def phase_at(self, now: float) -> int | None:
        offset = now - self.t0
        for index, _, start, end in self.job.phases:
            if start <= offset < end:
                return index
        return None

    def run(self, t0: float) -> None:
        self.t0 = t0
        hooks.add_hook(self.observer)
        threads = [
            threading.Thread(target=self._guarded, args=(self._calls, n), name=f"caller-{n}")
            for n in range(self.job.threads)
        ]
        if self.job.status_interval is not None:
            threads.append(threading.Thread(target=self._guarded, args=(self._health, -1)))
        for thread in threads:
            thread.start()
        deadline = t0 + self.job.run_end + 60
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        hooks.remove_hook(self.observer)

    def _guarded(self, loop: Callable[[int], None], number: int) -> None:
        try:
            loop(number)
        except BaseException:
            self.crashes.append(traceback.format_exc())

    def _calls(self, number: int) -> None:
        job = self.job
        mode = job.modes[number % len(job.modes)]
        rng = random.Random(job.seed * 1000 + job.index * 50 + number)
        interval = 1.0 / job.rate
        end = self.t0 + job.run_end
        next_at = self.t0 + rng.uniform(0, interval)
        with httpx.Client(timeout=HTTP_TIMEOUT, headers=HTTP_HEADERS) as http:
            while True:
                _sleep_until(next_at)
                now = time.monotonic()
                if now >= end:
                    return
                phase = self.phase_at(now)
                if phase is not None:
                    self.calls.append(self._one_call(http, number, phase, mode))
                next_at = max(next_at + interval * rng.uniform(0.5, 1.5), time.monotonic())

    def _one_call(self, http: httpx.Client, number: int, phase: int, mode: str) -> Call:
        breaker = self.breakers[(phase, mode)]
        seen: dict[str, Any] = {}

        def operation() -> int:
            seen["op_started"] = time.monotonic()
            try:
                response = http.get(self.job.upstream_url)
                response.raise_for_status()
                return response.status_code
            except Exception as error:
                seen["raised"] = error
                raise
            finally:
                seen["op_ended"] = time.monotonic()
                seen["store_ok_after_op"] = breaker.store_ok

        self.observer.forget()
        caught: Exception | None = None
        started = time.monotonic()
        try:
            breaker.execute(operation)
        except Exception as error:
            caught = error
        ended = time.monotonic()
        store_ok = breaker.store_ok
        info = self.observer.taken()
        own = caught is not None and caught is seen.get("raised")
        foreign = caught is not None and not own
        return Call(
            worker=self.job.index,
            thread=number,
            phase=phase,
            mode=mode,
            started=started,
            ended=ended,
            op_started=seen.get("op_started"),
            op_ended=seen.get("op_ended"),
            store_ok_after_op=seen.get("store_ok_after_op"),
            store_ok_at_end=store_ok,
            outcome=None if info is None else info.outcome,
            state=None if info is None else info.state,
            shared=None if info is None else info.shared,
            error=None if caught is None else type(caught).__name__,
            own_error=own,
            message=str(caught)[:160] if foreign else "",
        )

    def _health(self, _: int) -> None:
        job = self.job
        assert job.status_interval is not None
        end = self.t0 + job.run_end
        next_at = self.t0
        while True:
            _sleep_until(next_at)
            if time.monotonic() >= end:
                return
            phase = self.phase_at(time.monotonic())
            if phase is not None:
                self.polls.extend(self._poll(phase, mode) for mode in job.modes)
            next_at = max(next_at + job.status_interval, time.monotonic())

    def _poll(self, phase: int, mode: str) -> StatusPoll:
        started = time.monotonic()
        try:
            status = self.breakers[(phase, mode)].status()
        except Exception as error:
            ended = time.monotonic()
            failed = type(error).__name__
            message = str(error)[:160]
            return StatusPoll(
                self.job.index, phase, mode, started, ended, None, None, failed, message
            )
        ended = time.monotonic()
        return StatusPoll(
            self.job.index, phase, mode, started, ended, status.store_ok, status.state
        )

    def write(self) -> None:
        records: list[Any] = [*self.calls, *self.polls, *self.observer.store_errors]
        write_records(Path(self.job.out), records)


def _sleep_until(moment: float) -> None:
    """Pace the workload (this is the load generator's rhythm, not a test waiting)."""
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def run_worker(job: WorkerJob, ready: Any, go: Any, start_at: Any) -> None:
    """Process entry point: build, report ready, wait for the start, run, write, exit."""
    logging.getLogger("distbreaker").setLevel(logging.ERROR)  # the table says it all
    worker = Worker(job)
    worker.warm_up()
    ready.put(job.index)
    if not go.wait(START_TIMEOUT):
        sys.exit(4)
    worker.run(start_at.value)
    worker.write()
    for crash in worker.crashes:
        print(f"soak worker {job.index}: a thread crashed:\n{crash}", file=sys.stderr)
    if worker.crashes:
        sys.exit(3)
