"""NetworkOperation twins on a real redis-server: each worker has its own connection.

Every scenario runs with the sync and the async operation. The breaker's scripts take the
test's ``FakeClock``; the injected sleep moves it, so nothing really sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

import distbreaker
from distbreaker import (
    CircuitOpenError,
    create_async_network_operation,
    create_network_operation,
    hooks,
)
from distbreaker.core import Event
from distbreaker.store import breaker_keys, events_channel
from tests.conftest import FakeClock
from tests.unit.test_operation import Twin, Upstream, down, http_error

pytestmark = pytest.mark.integration


@pytest.fixture(
    params=[(kind, mode) for kind in ("sync", "async") for mode in ("cached", "strict")],
    ids="-".join,
)
async def twin(
    request: pytest.FixtureRequest, redis_url: str, clock: FakeClock, prefix: str
) -> AsyncIterator[Twin]:
    """Workers on real Redis; every ``build()`` opens its own connection."""
    kind, consistency = request.param
    opened: list[Any] = []

    def connect() -> Any:
        opened.append(distbreaker.connect(redis_url, timeout=2.0))
        return opened[-1]

    def connect_async() -> Any:
        opened.append(distbreaker.connect_async(redis_url, timeout=2.0))
        return opened[-1]

    yield Twin(kind, connect, connect_async, clock, prefix, consistency)
    cleanup = distbreaker.connect(redis_url, timeout=2.0)
    cleanup.delete(*breaker_keys(prefix, "net"))  # never FLUSHDB: other suites share the server
    cleanup.close()
    for client in opened:
        closing = client.aclose() if hasattr(client, "aclose") else client.close()
        if asyncio.iscoroutine(closing):
            await closing


async def test_transient_then_success_returns_after_the_right_attempts(twin: Twin) -> None:
    operation = twin.build(circuit_threshold=5, max_retries=4)
    upstream = Upstream(down(), http_error(503), down())
    assert await operation.execute(upstream, lambda: "fallback") == "value"
    assert upstream.calls == 4
    assert twin.sleeps == [1.0, 2.0, 4.0]
    status = await operation.status()
    assert (status.state, status.failure_count, status.store_ok) == ("closed", 3, True)


async def test_client_error_is_not_retried(twin: Twin) -> None:
    operation = twin.build()
    upstream = Upstream(http_error(404))
    with pytest.raises(httpx.HTTPStatusError):
        await operation.execute(upstream, lambda: "fallback")
    assert (upstream.calls, twin.sleeps) == (1, [])
    assert (await operation.status()).failures_total == 0


async def test_breaker_opening_mid_retry_stops_attempts_and_yields_the_fallback(
    twin: Twin,
) -> None:
    operation = twin.build(circuit_threshold=3, max_retries=10)
    upstream = Upstream(*[down() for _ in range(10)])
    assert await operation.execute(upstream, lambda: "fallback") == "fallback"
    assert upstream.calls == 3
    assert twin.sleeps == [1.0, 2.0]
    status = await operation.status()
    assert (status.state, status.opens_total, status.time_until_reset) == ("open", 1, 60.0)


async def test_breaker_opening_mid_retry_without_fallback_raises(twin: Twin) -> None:
    operation = twin.build(circuit_threshold=2, max_retries=10)
    with pytest.raises(CircuitOpenError) as caught:
        await operation.execute(Upstream(*[down() for _ in range(10)]))
    assert (caught.value.name, caught.value.state) == ("net", "open")


async def test_second_worker_is_refused_without_calling_the_upstream(twin: Twin) -> None:
    first = twin.build(circuit_threshold=2, max_retries=3)
    second = twin.build(circuit_threshold=2, max_retries=3)
    assert await first.execute(Upstream(down(), down(), down()), lambda: "first") == "first"
    upstream = Upstream()
    assert await second.execute(upstream, lambda: "second") == "second"
    with pytest.raises(CircuitOpenError):
        await second.execute(upstream)
    assert upstream.calls == 0
    assert twin.sleeps == [1.0]  # only the first worker ever backed off


class SeenEvents:
    """A hook: the transitions this process's subscribers delivered."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def on_transition(self, event: Event) -> None:
        self.events.append(event)

    async def wait_for(self, to_state: str, count: int) -> None:
        """Until ``count`` deliveries of a transition to ``to_state`` (yielding to the
        loop, where the async twin's subscribers run); at most 10 s."""
        async with asyncio.timeout(10):
            # the events arrive on subscriber threads as well as on this loop
            while sum(e.to_state == to_state for e in self.events) < count:  # noqa: ASYNC110
                await asyncio.sleep(0.01)


@pytest.fixture
def seen() -> Iterator[SeenEvents]:
    hook = SeenEvents()
    hooks.add_hook(hook)
    yield hook
    hooks.remove_hook(hook)


async def wait_for_subscribers(redis_url: str, channel: str, count: int) -> None:
    client = distbreaker.connect(redis_url, timeout=2.0)
    try:
        async with asyncio.timeout(10):
            while client.pubsub_numsub(channel)[0][1] < count:  # noqa: ASYNC110 - in Redis
                await asyncio.sleep(0.01)
    finally:
        client.close()


async def test_both_workers_recover_together_after_the_reset_timeout(
    twin: Twin, seen: SeenEvents, redis_url: str
) -> None:
    first = twin.build(circuit_threshold=1, circuit_reset_timeout=30, max_retries=1)
    second = twin.build(circuit_threshold=1, circuit_reset_timeout=30, max_retries=1)
    cached = twin.consistency == "cached"
    if cached:
        # both subscribed before the trip, so the open event reaches both, and before the
        # clock moves: a late event must not be what the test races against
        await first.status()
        await second.status()
        await wait_for_subscribers(redis_url, events_channel(twin.prefix), 2)
    await first.execute(Upstream(down()), lambda: None)
    if cached:
        await seen.wait_for("open", 2)
    twin.clock.advance(31)
    assert await second.execute(Upstream()) == "value"  # the probe closes it for everyone
    assert await first.execute(Upstream()) == "value"
    assert (await first.status()).state == "closed"


async def test_a_rate_limit_on_one_worker_holds_the_other(twin: Twin) -> None:
    first = twin.build()
    second = twin.build()
    limited = Upstream(http_error(429, {"retry-after": "120"}))
    assert await first.execute(limited, lambda: "cached") == "cached"
    upstream = Upstream()
    assert await second.execute(upstream, lambda: "held") == "held"
    assert (limited.calls, upstream.calls, twin.sleeps) == (1, 0, [])
    status = await second.status()
    assert (status.state, status.failures_total, status.time_until_reset) == ("open", 0, 120.0)


async def test_a_long_retry_after_on_a_503_holds_the_fleet(twin: Twin) -> None:
    first = twin.build(max_delay=30)
    second = twin.build(max_delay=30)
    assert await first.execute(Upstream(http_error(503, {"retry-after": "600"})), list) == []
    upstream = Upstream()
    assert await second.execute(upstream, lambda: "held") == "held"
    assert upstream.calls == 0
    assert (await second.status()).time_until_reset == 600.0


def test_redis_time_and_real_sleeps_end_to_end(redis_url: str, prefix: str) -> None:
    """No injected clock: Redis TIME, time.monotonic and time.sleep with tiny delays."""
    client = distbreaker.connect(redis_url, timeout=2.0)
    config = distbreaker.BreakerConfig(key_prefix=prefix)
    operation = create_network_operation(
        "net", client, circuit_threshold=5, base_delay=0.01, config=config
    )
    upstream = Upstream(down(), down())
    started = time.monotonic()
    assert operation.execute(upstream) == "value"
    assert upstream.calls == 3
    assert 0.02 <= time.monotonic() - started < 1.0  # slept about 0.01 + 0.02 s
    assert operation.status().failure_count == 2
    client.delete(*breaker_keys(prefix, "net"))
    client.close()


async def test_async_redis_time_and_real_sleeps_end_to_end(redis_url: str, prefix: str) -> None:
    client = distbreaker.connect_async(redis_url, timeout=2.0)
    config = distbreaker.BreakerConfig(key_prefix=prefix)
    operation = create_async_network_operation(
        "net", client, circuit_threshold=2, base_delay=0.01, max_retries=5, config=config
    )
    upstream = Upstream(*[down() for _ in range(5)])
    assert await operation.execute(upstream.coroutine, lambda: "fallback") == "fallback"
    assert upstream.calls == 2
    assert (await operation.status()).state == "open"
    await client.delete(*breaker_keys(prefix, "net"))
    await client.aclose()
