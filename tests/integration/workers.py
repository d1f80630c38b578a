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


def probe_once(url: str, settings: dict[str, Any], barrier: Any, queue: Any, attempts: Any) -> None:
    """Try one call at the same moment as the others. The one admitted as the probe holds
    its lease until every other process has tried (``attempts`` counts them), however
    slowly a loaded machine schedules them; at most 30 s."""
    breaker = _breaker(url, settings)
    breaker.status()
    ran = False

    def held_probe() -> str:
        nonlocal ran
        ran = True
        deadline = time.monotonic() + 30
        while attempts.value < barrier.parties - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        return "ok"

    barrier.wait()
    with contextlib.suppress(CircuitOpenError):
        breaker.execute(held_probe)
    if not ran:
        with attempts.get_lock():
            attempts.value += 1
    queue.put(ran)


def use_inherited_breaker(breaker: Breaker, queue: Any) -> None:
    """In a forked child: the parent's breaker must rebuild its per-process state."""
    parent_worker = breaker.worker_id

    def failing() -> None:
        raise ConnectionError("down")

    result = breaker.execute(failing, fallback=lambda: "fallback")
    status = breaker.status()
    queue.put((parent_worker != breaker.worker_id, result, status.store_ok, status.failures_total))
