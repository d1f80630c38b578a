"""consistency="cached": local decisions, bounded staleness, probes always through the script."""

from __future__ import annotations

import time
from typing import Any

import pytest

import distbreaker
from distbreaker import Breaker, BreakerConfig, CircuitOpenError
from tests.conftest import FakeClock, raise_connection_error, wait_for_subscribers


def worker(
    client: Any, clock: FakeClock, prefix: str, *, listen: bool = False, **settings: Any
) -> Breaker:
    """A breaker as another process would hold it; ``listen=False`` means no subscriber."""
    redis = client if listen else Deaf(client)  # only cache_ttl bounds its staleness
    return Breaker("shared", redis, BreakerConfig(key_prefix=prefix, **settings), clock=clock)


class Deaf:
    """A client whose pub/sub never connects: the breaker's subscriber keeps retrying."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def register_script(self, text: str) -> Any:
        return self.inner.register_script(text)

    def pubsub(self, **_: Any) -> Any:
        raise ConnectionError("no events for this worker")


class CountingClient(Deaf):
    """Wraps a client and counts script calls (EVALSHA/EVAL)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.scripts = 0

    def register_script(self, text: str) -> Any:
        script = self.inner.register_script(text)

        def run(*args: Any, **kwargs: Any) -> Any:
            self.scripts += 1
            return script(*args, **kwargs)

        return run


def test_healthy_and_refused_calls_need_no_round_trip(
    client: Any, clock: FakeClock, prefix: str
) -> None:
    counting = CountingClient(client)
    breaker = worker(counting, clock, prefix, failure_threshold=1, reset_timeout=30)
    breaker.execute(lambda: "first")  # fills the cache
    before = counting.scripts
    for _ in range(100):
        breaker.execute(lambda: "ok")
    assert counting.scripts == before
    breaker.execute(raise_connection_error, fallback=lambda: None)  # one record: trips
    before = counting.scripts
    for _ in range(100):
        assert breaker.execute(lambda: "no", fallback=lambda: "refused") == "refused"
    assert counting.scripts == before


def test_trip_by_another_worker_seen_within_cache_ttl_without_subscriber(
    client: Any, clock: FakeClock, prefix: str
) -> None:
    tripper = worker(client, clock, prefix, failure_threshold=1)
    follower = worker(client, clock, prefix, failure_threshold=1, cache_ttl=1.0)
    assert follower.execute(lambda: "cached closed") == "cached closed"
    tripper.execute(raise_connection_error, fallback=lambda: None)
    clock.advance(0.999)
    assert follower.execute(lambda: "stale but bounded") == "stale but bounded"
    clock.advance(0.001)
    with pytest.raises(CircuitOpenError):
        follower.execute(lambda: "must not run")


def test_stale_caches_never_admit_more_probes_than_allowed(
    client: Any, clock: FakeClock, prefix: str
) -> None:
    settings = {"failure_threshold": 1, "reset_timeout": 5, "half_open_max_calls": 2}
    fleet = [worker(client, clock, prefix, **settings) for _ in range(6)]
    fleet[0].execute(raise_connection_error, fallback=lambda: None)
    for breaker in fleet:  # every cache now says open, due in 5 s
        assert breaker.execute(lambda: "x", fallback=lambda: "refused") == "refused"
    clock.advance(5)
    admitted = []

    def probe(index: int) -> str:
        admitted.append(index)
        if index + 1 < len(fleet):  # the next worker tries while this probe is in flight
            fleet[index + 1].execute(lambda: probe(index + 1), fallback=lambda: "refused")
        return "ok"

    fleet[0].execute(lambda: probe(0), fallback=lambda: "refused")
    assert admitted == [0, 1]


@pytest.mark.integration
def test_subscriber_pushes_a_trip_to_other_processes_in_milliseconds(
    redis_url: str, prefix: str
) -> None:
    config = BreakerConfig(failure_threshold=1, key_prefix=prefix, cache_ttl=30)
    tripper = Breaker("pushed", distbreaker.connect(redis_url), config)
    follower = Breaker("pushed", distbreaker.connect(redis_url), config)
    assert follower.execute(lambda: "warm") == "warm"
    assert tripper.execute(lambda: "warm") == "warm"
    wait_for_subscribers(distbreaker.connect(redis_url), f"{prefix}:events", 2)
    tripper.execute(raise_connection_error, fallback=lambda: None)
    started = time.monotonic()
    while follower.known_refusal() is None and time.monotonic() - started < 2:
        time.sleep(0.001)
    elapsed = time.monotonic() - started
    assert follower.known_refusal() is not None
    assert elapsed < 0.5
    assert follower.execute(lambda: "no", fallback=lambda: "refused") == "refused"


@pytest.mark.integration
def test_killed_subscriber_reconnects_and_trips_are_still_seen(redis_url: str, prefix: str) -> None:
    config = BreakerConfig(failure_threshold=1, key_prefix=prefix, cache_ttl=1.0)
    admin = distbreaker.connect(redis_url, timeout=2.0)
    tripper = Breaker("killed", distbreaker.connect(redis_url), config)
    follower = Breaker("killed", distbreaker.connect(redis_url), config)
    assert follower.execute(lambda: "warm") == "warm"
    assert tripper.execute(lambda: "warm") == "warm"
    wait_for_subscribers(admin, f"{prefix}:events", 2)
    admin.client_kill_filter(_type="pubsub")
    tripper.execute(raise_connection_error, fallback=lambda: None)
    started = time.monotonic()
    refused = False
    while time.monotonic() - started < 1.5:
        if follower.execute(lambda: "allowed", fallback=lambda: "refused") == "refused":
            refused = True
            break
        time.sleep(0.01)
    assert refused
    assert time.monotonic() - started <= 1.0 + 0.3  # within cache_ttl (+ scheduling slack)


def test_cache_accepts_a_lower_generation_once_stale(
    client: Any, clock: FakeClock, prefix: str
) -> None:
    counting = CountingClient(client)
    breaker = worker(counting, clock, prefix, failure_threshold=1, reset_timeout=1)
    breaker.execute(raise_connection_error, fallback=lambda: None)  # generation 1, open
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)  # the keys expired: Redis is back at generation 0
    clock.advance(2)
    assert breaker.execute(lambda: "closed again") == "closed again"
    assert breaker.status().generation == 0
    before = counting.scripts
    clock.advance(0.5)
    assert breaker.execute(lambda: "from the cache") == "from the cache"
    assert counting.scripts == before  # generation 0 was taken: decided locally


def test_half_open_refusals_are_cached_but_probes_always_ask(
    client: Any, clock: FakeClock, prefix: str
) -> None:
    counting = CountingClient(client)
    settings = {"failure_threshold": 1, "reset_timeout": 5, "probe_timeout": 10}
    prober = worker(client, clock, prefix, **settings)
    waiting = worker(counting, clock, prefix, cache_ttl=1.0, **settings)
    prober.execute(raise_connection_error, fallback=lambda: None)
    clock.advance(5)

    def probe() -> str:
        assert waiting.execute(lambda: "x", fallback=lambda: "refused") == "refused"
        calls = counting.scripts
        for _ in range(50):  # refused from the cache: half_open, probe in flight
            assert waiting.execute(lambda: "x", fallback=lambda: "refused") == "refused"
        assert counting.scripts == calls
        clock.advance(1.0)  # cache_ttl later the script is asked again
        assert waiting.execute(lambda: "x", fallback=lambda: "refused") == "refused"
        assert counting.scripts == calls + 1
        return "ok"

    assert prober.execute(probe) == "ok"
