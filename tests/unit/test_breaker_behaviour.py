"""The breaker's behaviour through the public API, on fakeredis and on a real redis-server."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from distbreaker import AsyncBreaker, Breaker, BreakerConfig, CircuitOpenError
from distbreaker.classify import Verdict
from tests.conftest import FakeClock, raise_connection_error


class Upstream:
    """Counts calls; fails while ``down``."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False

    def __call__(self) -> str:
        self.calls += 1
        if self.down:
            raise ConnectionError("upstream down")
        return "fresh"


def fail(breaker: Breaker, times: int) -> None:
    for _ in range(times):
        breaker.execute(raise_connection_error, fallback=lambda: None)


def test_trips_after_threshold_and_refuses_without_calling(
    make_breaker: Callable[..., Breaker],
) -> None:
    breaker = make_breaker(failure_threshold=3)
    upstream = Upstream()
    upstream.down = True
    results = [breaker.execute(upstream, fallback=lambda: "cached") for _ in range(5)]
    assert results == ["cached"] * 5
    assert upstream.calls == 3
    status = breaker.status()
    assert (status.state, status.failure_count, status.generation, status.healthy) == (
        "open",
        3,
        1,
        False,
    )


def test_refusal_without_fallback_raises_with_retry_after(
    make_breaker: Callable[..., Breaker], clock: FakeClock
) -> None:
    breaker = make_breaker(failure_threshold=1, reset_timeout=30, consistency="strict")
    fail(breaker, 1)
    clock.advance(10)
    with pytest.raises(CircuitOpenError) as caught:
        breaker.execute(lambda: "never")
    assert caught.value.name == "upstream"
    assert caught.value.state == "open"
    assert caught.value.retry_after == pytest.approx(20.0)


def test_recovers_through_half_open_probe(
    make_breaker: Callable[..., Breaker], clock: FakeClock
) -> None:
    breaker = make_breaker(failure_threshold=2, reset_timeout=5)
    fail(breaker, 2)
    clock.advance(5)
    assert breaker.execute(lambda: "probe ok") == "probe ok"
    status = breaker.status()
    assert (status.state, status.generation, status.failure_count) == ("closed", 3, 0)


def test_probe_failure_reopens(make_breaker: Callable[..., Breaker], clock: FakeClock) -> None:
    breaker = make_breaker(failure_threshold=1, reset_timeout=5)
    fail(breaker, 1)
    clock.advance(5)
    fail(breaker, 1)
    status = breaker.status()
    assert (status.state, status.generation, status.time_until_reset) == ("open", 3, 5.0)


def test_success_in_closed_writes_nothing(
    make_breaker: Callable[..., Breaker], client: Any, prefix: str
) -> None:
    breaker = make_breaker(consistency="strict")
    for _ in range(10):
        assert breaker.execute(lambda: 1) == 1
    assert list(client.scan_iter(match=f"{prefix}:*")) == []


def test_errors_that_do_not_count_propagate_and_leave_state(
    make_breaker: Callable[..., Breaker],
) -> None:
    breaker = make_breaker(failure_threshold=1)

    def bad_input() -> None:
        raise ValueError("bad request built by us")

    with pytest.raises(ValueError, match="bad request"):
        breaker.execute(bad_input, fallback=lambda: "not used")
    assert breaker.status().state == "closed"
    assert breaker.status().failure_count == 0


def test_custom_predicate_decides(
    make_breaker: Callable[..., Breaker], client: Any, clock: FakeClock, prefix: str
) -> None:
    breaker = Breaker(
        "pred",
        client,
        BreakerConfig(failure_threshold=1, key_prefix=prefix),
        clock=clock,
        classifier=lambda error: isinstance(error, KeyError),
    )

    def missing() -> None:
        raise KeyError("x")

    breaker.execute(missing, fallback=lambda: None)
    assert breaker.status().state == "open"


def test_slow_call_counts_as_failure_but_returns(
    client: Any, clock: FakeClock, prefix: str
) -> None:
    config = BreakerConfig(failure_threshold=2, slow_call_threshold=2.0, key_prefix=prefix)
    breaker = Breaker("slow", client, config, clock=clock)

    def takes(seconds: float) -> str:
        clock.advance(seconds)
        return "late but fine"

    assert breaker.execute(lambda: takes(1.9)) == "late but fine"
    assert breaker.status().failure_count == 0
    assert breaker.execute(lambda: takes(2.5)) == "late but fine"
    assert breaker.execute(lambda: takes(2.5)) == "late but fine"
    assert breaker.status().state == "open"


def test_rate_limit_holds_open_fleet_wide_and_is_not_a_failure(
    make_breaker: Callable[..., Breaker], client: Any, clock: FakeClock, prefix: str
) -> None:
    breaker = Breaker(
        "limited",
        client,
        BreakerConfig(key_prefix=prefix),
        clock=clock,
        classifier=lambda e: Verdict(False, False, rate_limited=True, retry_after=90),
    )
    other_worker = Breaker("limited", client, BreakerConfig(key_prefix=prefix), clock=clock)

    def limited() -> None:
        raise RuntimeError("429")

    with pytest.raises(RuntimeError):
        breaker.execute(limited)
    status = other_worker.status()
    assert (status.state, status.failures_total, status.time_until_reset) == ("open", 0, 90.0)
    with pytest.raises(CircuitOpenError):
        other_worker.execute(lambda: "no")


def test_manual_controls(make_breaker: Callable[..., Breaker]) -> None:
    breaker = make_breaker(failure_threshold=1)
    breaker.force_open()
    assert breaker.execute(lambda: "x", fallback=lambda: "isolated") == "isolated"
    assert breaker.status().state == "forced_open"
    breaker.force_closed()
    fail(breaker, 5)
    assert breaker.status().state == "forced_closed"
    assert breaker.execute(lambda: "passes") == "passes"
    breaker.reset()
    status = breaker.status()
    assert (status.state, status.failure_count) == ("closed", 0)


def test_hold_open_then_probe(make_breaker: Callable[..., Breaker], clock: FakeClock) -> None:
    breaker = make_breaker(reset_timeout=5)
    breaker.hold_open(120, "rate limit reset")
    assert breaker.status().time_until_reset == 120.0
    clock.advance(119)
    assert breaker.execute(lambda: 1, fallback=lambda: 0) == 0
    clock.advance(1)
    assert breaker.execute(lambda: 1, fallback=lambda: 0) == 1
    assert breaker.status().state == "closed"
    with pytest.raises(ValueError, match="between 0 and"):
        breaker.hold_open(-1)


def test_one_event_per_transition(
    make_breaker: Callable[..., Breaker], client: Any, clock: FakeClock, prefix: str
) -> None:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"{prefix}:events")
    breaker = make_breaker(failure_threshold=2, reset_timeout=5)
    fail(breaker, 3)
    clock.advance(5)
    breaker.execute(lambda: "ok")
    events = []
    for _ in range(50):
        message = pubsub.get_message(timeout=0.1)
        if message and message["type"] == "message":
            events.append(json.loads(message["data"]))
        if len(events) == 3:
            break
    pubsub.close()
    assert [(e["from"], e["to"], e["generation"]) for e in events] == [
        ("closed", "open", 1),
        ("open", "half_open", 2),
        ("half_open", "closed", 3),
    ]
    assert set(events[0]) >= {"name", "from", "to", "generation", "at", "reason"}
    assert events[0]["at"] == int(clock.now * 1000) - 5000


def test_decorator(make_breaker: Callable[..., Breaker]) -> None:
    breaker = make_breaker(failure_threshold=1)

    @breaker
    def fetch(x: int) -> int:
        return x * 2

    assert fetch(21) == 42
    assert fetch.__name__ == "fetch"


async def test_async_twin_behaves_the_same(
    make_async_breaker: Callable[..., AsyncBreaker], clock: FakeClock
) -> None:
    breaker = make_async_breaker(failure_threshold=2, reset_timeout=5)
    calls = 0

    async def down() -> str:
        nonlocal calls
        calls += 1
        raise ConnectionError("down")

    async def cached() -> str:
        return "cached"

    results = [await breaker.execute(down, fallback=cached) for _ in range(4)]
    assert results == ["cached"] * 4
    assert calls == 2
    assert (await breaker.status()).state == "open"
    clock.advance(5)

    @breaker
    async def healthy() -> str:
        return "ok"

    assert await healthy() == "ok"
    status = await breaker.status()
    assert (status.state, status.generation) == ("closed", 3)
    await breaker.hold_open(10)
    with pytest.raises(CircuitOpenError):
        await breaker.execute(healthy)
    await breaker.force_open()
    await breaker.force_closed()
    await breaker.reset()
    assert (await breaker.status()).state == "closed"


def test_decorator_refuses_wrong_kind(make_breaker: Callable[..., Breaker]) -> None:
    breaker = make_breaker()

    async def coroutine() -> None:
        return None

    with pytest.raises(TypeError):
        breaker(coroutine)
