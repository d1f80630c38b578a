"""NetworkOperation twins on fakeredis and on a real redis-server: retries, breaker, fallback."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from distbreaker import (
    AsyncNetworkOperation,
    BreakerConfig,
    CircuitOpenError,
    NetworkOperation,
    create_async_network_operation,
    create_network_operation,
)
from tests.conftest import FakeClock

REQUEST = httpx.Request("GET", "https://upstream.test/")


class Upstream:
    """Fails with the given errors in turn, then answers."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "value"

    async def coroutine(self) -> str:
        return self()


def down() -> ConnectionError:
    return ConnectionError("upstream down")


def not_found() -> httpx.HTTPStatusError:
    response = httpx.Response(404, request=REQUEST)
    return httpx.HTTPStatusError("404", request=REQUEST, response=response)


def build(
    client: Any, clock: FakeClock, prefix: str, sleeps: list[float], **kwargs: Any
) -> NetworkOperation:
    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)

    kwargs.setdefault("jitter", 0)
    return create_network_operation(
        "net", client, config=BreakerConfig(key_prefix=prefix), clock=clock, sleep=sleep, **kwargs
    )


def test_transient_then_success_returns_after_the_right_attempts(
    client: Any, clock: FakeClock, prefix: str
) -> None:
    sleeps: list[float] = []
    operation = build(client, clock, prefix, sleeps, circuit_threshold=5, max_retries=3)
    upstream = Upstream(down(), down())
    assert operation.execute(upstream, fallback=lambda: "fallback") == "value"
    assert upstream.calls == 3
    assert sleeps == [1.0, 2.0]
    assert operation.status().failure_count == 2


def test_client_error_is_not_retried_and_propagates(
    client: Any, clock: FakeClock, prefix: str
) -> None:
    sleeps: list[float] = []
    operation = build(client, clock, prefix, sleeps)
    upstream = Upstream(not_found())
    with pytest.raises(httpx.HTTPStatusError):
        operation.execute(upstream, fallback=lambda: "fallback")
    assert (upstream.calls, sleeps) == (1, [])
    assert operation.status().failure_count == 0


def test_breaker_opening_mid_retry_stops_attempts_and_falls_back(
    client: Any, clock: FakeClock, prefix: str
) -> None:
    sleeps: list[float] = []
    operation = build(client, clock, prefix, sleeps, circuit_threshold=2, max_retries=5)
    upstream = Upstream(*[down() for _ in range(5)])
    assert operation.execute(upstream, fallback=lambda: "fallback") == "fallback"
    assert upstream.calls == 2  # the third attempt was refused by the open breaker
    assert operation.status().state == "open"


def test_exhausted_attempts_raise_without_fallback(
    client: Any, clock: FakeClock, prefix: str
) -> None:
    operation = build(client, clock, prefix, [], circuit_threshold=10, max_retries=2)
    with pytest.raises(ConnectionError):
        operation.execute(Upstream(down(), down(), down()))
    tripping = build(client, clock, prefix, [], circuit_threshold=1)
    with pytest.raises(CircuitOpenError):  # the retry after the trip is refused
        tripping.execute(Upstream(down()))


def test_second_worker_is_refused_without_calling_upstream(
    client: Any, clock: FakeClock, prefix: str
) -> None:
    first = build(client, clock, prefix, [], circuit_threshold=2, max_retries=3)
    second = build(client, clock, prefix, [], circuit_threshold=2, max_retries=3)
    first.execute(Upstream(down(), down(), down()), fallback=lambda: None)
    upstream = Upstream()
    assert second.execute(upstream, fallback=lambda: "fallback") == "fallback"
    assert upstream.calls == 0


def test_deadline_stops_retries(client: Any, clock: FakeClock, prefix: str) -> None:
    sleeps: list[float] = []
    operation = build(
        client, clock, prefix, sleeps, circuit_threshold=10, max_retries=10, deadline=4.0
    )
    upstream = Upstream(*[down() for _ in range(10)])
    assert operation.execute(upstream, fallback=lambda: "late") == "late"
    assert sleeps == [1.0, 2.0]  # the next wait (4 s) would end past the 4 s budget
    assert upstream.calls == 3


def test_rate_limit_is_not_retried_and_holds_the_fleet(
    client: Any, clock: FakeClock, prefix: str
) -> None:
    sleeps: list[float] = []
    operation = build(client, clock, prefix, sleeps)
    response = httpx.Response(429, headers={"retry-after": "90"}, request=REQUEST)
    limited = httpx.HTTPStatusError("429", request=REQUEST, response=response)
    upstream = Upstream(limited)
    assert operation.execute(upstream, fallback=lambda: "cached") == "cached"
    assert (upstream.calls, sleeps) == (1, [])
    status = operation.status()
    assert (status.state, status.failures_total, status.time_until_reset) == ("open", 0, 90.0)


async def test_async_twin_behaves_the_same(
    async_client: Any, clock: FakeClock, prefix: str
) -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)

    operation = create_async_network_operation(
        "net",
        async_client,
        circuit_threshold=2,
        max_retries=3,
        jitter=0,
        config=BreakerConfig(key_prefix=prefix),
        clock=clock,
        sleep=sleep,
    )
    assert isinstance(operation, AsyncNetworkOperation)
    upstream = Upstream(down())
    assert await operation.execute(upstream.coroutine) == "value"
    assert (upstream.calls, sleeps) == (2, [1.0])
    failing = Upstream(down(), down(), down())

    async def fallback() -> str:
        return "fallback"

    assert await operation.execute(failing.coroutine, fallback=fallback) == "fallback"
    assert failing.calls == 1  # one more failure reached the threshold: refused at once
    assert (await operation.status()).state == "open"
    same = create_network_operation(
        "net", async_client, config=BreakerConfig(key_prefix=prefix), clock=clock
    )
    assert isinstance(same, AsyncNetworkOperation)  # the client decides the twin
