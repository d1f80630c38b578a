"""Shared fixtures. ``redis_url`` and ``breaker_factory`` come from the distbreaker plugin."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import fakeredis
import pytest
import redis

import distbreaker
from distbreaker import AsyncBreaker, Breaker, BreakerConfig


class FakeClock:
    """A clock the test moves by hand (seconds)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.integration)])
def client(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The same suite on fakeredis (with lupa) and on the real redis-server."""
    if request.param == "fakeredis":
        yield fakeredis.FakeRedis(server=fakeredis.FakeServer())
        return
    url = request.getfixturevalue("redis_url")
    real = distbreaker.connect(url, timeout=2.0)
    yield real
    real.close()


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.integration)])
async def async_client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "fakeredis":
        yield fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        return
    url = request.getfixturevalue("redis_url")
    real = distbreaker.connect_async(url, timeout=2.0)
    yield real
    await real.aclose()


@pytest.fixture(params=["cached", "strict"])
def consistency(request: pytest.FixtureRequest) -> str:
    """Every behavioural test runs in both consistency modes."""
    return str(request.param)


def config_for(prefix: str, consistency: str, settings: dict[str, Any]) -> BreakerConfig:
    """The test's own key prefix and consistency mode unless a test says otherwise."""
    return BreakerConfig(**{"key_prefix": prefix, "consistency": consistency, **settings})


@pytest.fixture
def make_breaker(
    client: Any, clock: FakeClock, prefix: str, consistency: str
) -> Callable[..., Breaker]:
    def build(name: str = "upstream", **settings: Any) -> Breaker:
        return Breaker(name, client, config_for(prefix, consistency, settings), clock=clock)

    return build


@pytest.fixture
def make_async_breaker(
    async_client: Any, clock: FakeClock, prefix: str, consistency: str
) -> Callable[..., AsyncBreaker]:
    def build(name: str = "upstream", **settings: Any) -> AsyncBreaker:
        config = config_for(prefix, consistency, settings)
        return AsyncBreaker(name, async_client, config, clock=clock)

    return build


def raise_connection_error() -> Any:
    raise ConnectionError("upstream down")


def unreachable_redis() -> redis.Redis:
    """A client whose server does not exist: every command fails fast."""
    return distbreaker.connect("redis://127.0.0.1:1/0", timeout=0.2)


def wait_for_subscribers(client: Any, channel: str, count: int, timeout: float = 10.0) -> None:
    """Wait until ``count`` connections subscribe to ``channel`` (``PUBSUB NUMSUB``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [(_, subscribed)] = client.pubsub_numsub(channel)
        if subscribed >= count:
            return
        time.sleep(0.01)
    raise AssertionError(f"{count} subscribers on {channel} expected within {timeout}s")


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "it") -> float:
    """Poll ``condition`` every 10 ms until it is true; the seconds that took. Fails the test
    after ``timeout``: integration tests wait on conditions, never on time."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(0.01)
    return time.monotonic() - started
