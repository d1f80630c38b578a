"""Worker processes for the fleet-evidence tests (spawn-safe, top-level functions)."""

from __future__ import annotations

import random
import time
from typing import Any

import distbreaker
from distbreaker import Breaker, BreakerConfig, CircuitOpenError


def mixed_calls(
    url: str,
    settings: dict[str, Any],
    ratio: float,
    calls: int,
    seed: int,
    barrier: Any,
    queue: Any,
) -> None:
    """``calls`` calls failing with probability ``ratio``; report hits and refusals."""
    breaker = Breaker("fleet", distbreaker.connect(url, timeout=2.0), BreakerConfig(**settings))
    breaker.status()  # connect and load the scripts before the race
    rng = random.Random(seed)
    hits = refused = 0

    def call() -> str:
        nonlocal hits
        hits += 1
        if rng.random() < ratio:
            raise ConnectionError("upstream down")
        return "ok"

    barrier.wait()
    for _ in range(calls):
        try:
            breaker.execute(call)
        except ConnectionError:
            pass
        except CircuitOpenError:
            refused += 1
    breaker.upkeep(final=True)
    queue.put({"hits": hits, "refused": refused})


def paced_successes(url: str, settings: dict[str, Any], rate: float, counted: Any) -> None:
    """Successes at ``rate`` per second until killed; ``counted`` holds how many were made."""
    breaker = Breaker("paced", distbreaker.connect(url, timeout=2.0), BreakerConfig(**settings))
    interval = 1.0 / rate
    next_at = time.monotonic()
    while True:
        breaker.execute(lambda: "ok")
        with counted.get_lock():
            counted.value += 1
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))


def forked_child(breaker: Breaker, calls: int, queue: Any) -> None:
    """In a forked child: calls through the parent's breaker, then one final report."""
    for _ in range(calls):
        breaker.execute(lambda: "ok")
    breaker.upkeep(final=True)
    queue.put(breaker.worker_id)
