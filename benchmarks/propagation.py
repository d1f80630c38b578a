"""Trip propagation: one process trips a breaker; how soon do N other processes refuse?

Observers are separate processes in cached mode, all on one machine, so ``time.time_ns()``
(CLOCK_REALTIME) is one clock for all of them. Two ways of watching:

- ``listener``: a callback on the process's events subscriber, called right after the
  breaker's own cache update, makes a real ``execute()`` and stamps the refusal. This is
  the delivery time itself.
- ``paced``: the process's main thread serves calls at ~1000/s and stamps its first
  refused call, as a busy worker would see it (adds up to one call interval and the
  interpreter's thread switch).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import distbreaker
from benchmarks.subjects import delete_keys, fail, succeed
from distbreaker import Breaker, BreakerConfig, CircuitOpenError
from distbreaker.core import Event
from distbreaker.events import subscribe
from distbreaker.store import events_channel

Mode = Literal["listener", "paced"]
PACED_INTERVAL = 0.001


def trip_config(prefix: str) -> BreakerConfig:
    # one failure trips it; it stays open until the tripper resets it
    return BreakerConfig(key_prefix=prefix, failure_threshold=1, reset_timeout=3600)


class Observer:
    """Watches one breaker in one process and reports when it refuses and admits again."""

    def __init__(self, breaker: Breaker, messages: Any, mode: Mode) -> None:
        self.breaker = breaker
        self.messages = messages
        self.mode = mode
        self.pid = os.getpid()

    def report(self, kind: str) -> None:
        self.messages.put((kind, self.pid, time.time_ns()))

    def on_event(self, event: Event) -> None:
        """Runs on the subscriber thread, after the breaker's own listener; paced observers
        learn of transitions through their breaker alone."""
        if self.mode == "paced":
            return
        if event.to_state == "closed":
            self.report("closed")
            return
        if event.to_state != "open":
            return
        try:
            self.breaker.execute(succeed)
        except CircuitOpenError:
            self.report("refused")
        else:
            self.report("admitted")

    def on_reconnect(self) -> None:
        """Nothing to replay: the breaker's own cache refreshes itself."""

    def on_disconnect(self, error: BaseException) -> None:
        """The subscriber reconnects by itself."""

    def serve(self, stop: Any) -> None:
        """Paced calls until ``stop``; report each change between admitted and refused."""
        admitting = True
        while not stop.is_set():
            try:
                self.breaker.execute(succeed)
            except CircuitOpenError:
                if admitting:
                    admitting = False
                    self.report("refused")
            else:
                if not admitting:
                    admitting = True
                    self.report("closed")
            time.sleep(PACED_INTERVAL)


def observe(url: str, prefix: str, name: str, mode: Mode, messages: Any, stop: Any) -> None:
    """Process entry point: one observer until ``stop`` is set."""
    client = distbreaker.connect(url, timeout=2.0)
    breaker = Breaker(name, client, trip_config(prefix))
    breaker.execute(succeed)  # subscribes and fills the cache
    observer = Observer(breaker, messages, mode)
    # the registry holds listeners weakly; the observer lives as long as this process
    subscriber = subscribe(client, events_channel(prefix), name, observer)
    subscriber.connected.wait(10)
    observer.report("ready")
    if mode == "listener":
        stop.wait()
    else:
        observer.serve(stop)


@dataclass
class Propagation:
    """Latencies in milliseconds from the start of the tripping call."""

    mode: Mode
    observers: int
    trips: int
    each: list[float] = field(default_factory=list)  # one per observer per trip
    all_refuse: list[float] = field(default_factory=list)  # the slowest observer per trip
    after_reply: list[float] = field(default_factory=list)  # slowest, from the tripper's reply
    missed: int = 0  # observers that did not refuse within 2 s


def _collect(messages: Any, kind: str, count: int, timeout: float) -> list[int]:
    stamps: list[int] = []
    deadline = time.monotonic() + timeout
    while len(stamps) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            got, _pid, stamp = messages.get(timeout=left)
        except queue.Empty:
            break
        if got == "admitted":
            raise RuntimeError("an observer admitted a call after the open event")
        if got == kind:
            stamps.append(stamp)
    return stamps


def measure_propagation(url: str, observers: int, trips: int, mode: Mode) -> Propagation:
    context = multiprocessing.get_context("spawn")
    prefix = f"bench-propagation-{uuid.uuid4().hex[:8]}"
    name = "upstream"
    messages = context.Queue()
    stop = context.Event()
    processes = [
        context.Process(target=observe, args=(url, prefix, name, mode, messages, stop), daemon=True)
        for _ in range(observers)
    ]
    for process in processes:
        process.start()
    client = distbreaker.connect(url, timeout=2.0)
    result = Propagation(mode, observers, trips)
    try:
        if len(_collect(messages, "ready", observers, timeout=60)) < observers:
            raise RuntimeError("observer processes did not start")
        tripper = Breaker(name, client, trip_config(prefix))
        tripper.execute(succeed)
        for trip in range(trips):
            if trip:
                tripper.reset()
                _collect(messages, "closed", observers, timeout=2)
            time.sleep(0.01)  # let every observer settle before the next trip
            started = time.time_ns()
            with contextlib.suppress(ConnectionError):
                tripper.execute(fail)
            replied = time.time_ns()
            stamps = _collect(messages, "refused", observers, timeout=2)
            result.missed += observers - len(stamps)
            if stamps:
                result.each.extend((s - started) / 1e6 for s in stamps)
                result.all_refuse.append((max(stamps) - started) / 1e6)
                result.after_reply.append((max(stamps) - replied) / 1e6)
    finally:
        stop.set()
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
        delete_keys(client, f"{prefix}:*")
        client.close()
    return result
