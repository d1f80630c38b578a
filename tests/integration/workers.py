"""Functions run in separate worker processes by the multi-process tests (spawn-safe)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import distbreaker
from distbreaker import Breaker, BreakerConfig, CircuitOpenError


def _breaker(url: str, settings: dict[str, Any]) -> Breaker:
    return Breaker("shared", distbreaker.connect(url, timeout=2.0), BreakerConfig(**settings))


def hammer_until_refused(url: str, settings: dict[str, Any], barrier: Any, queue: Any) -> None:
    """Fail calls as fast as possible until the shared breaker refuses; report the count."""
    breaker = _breaker(url, settings)
    breaker.status()  # connect and load scripts before the race
    calls = 0

    def failing() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("upstream down")

    barrier.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            breaker.execute(failing)
        except ConnectionError:
            continue
        except CircuitOpenError:
            break
    queue.put(calls)


def probe_once(url: str, settings: dict[str, Any], barrier: Any, queue: Any) -> None:
    """Try one call at the same moment as the others; the call holds its probe 0.5 s."""
    breaker = _breaker(url, settings)
    breaker.status()
    ran = False

    def slow_success() -> str:
        nonlocal ran
        ran = True
        time.sleep(0.5)  # keep the probe in flight while the other processes try
        return "ok"

    barrier.wait()
    with contextlib.suppress(CircuitOpenError):
        breaker.execute(slow_success)
    queue.put(ran)


def use_inherited_breaker(breaker: Breaker, queue: Any) -> None:
    """In a forked child: the parent's breaker must rebuild its per-process state."""
    parent_worker = breaker.worker_id

    def failing() -> None:
        raise ConnectionError("down")

    result = breaker.execute(failing, fallback=lambda: "fallback")
    status = breaker.status()
    queue.put((parent_worker != breaker.worker_id, result, status.store_ok, status.failures_total))
