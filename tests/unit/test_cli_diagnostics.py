"""diagnostics: finding breakers with a bounded SCAN, reading their own settings, health."""

from __future__ import annotations

import fakeredis
import pytest

from distbreaker import Breaker, BreakerConfig
from distbreaker.diagnostics import (
    breaker_exists,
    find_breakers,
    get_network_status,
    redact_url,
    scan_breakers,
    stored_config,
)
from distbreaker.store import breaker_keys
from tests.conftest import FakeClock


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


def trip(
    redis: fakeredis.FakeRedis, name: str, clock: FakeClock | None, **settings: object
) -> Breaker:
    config = BreakerConfig(key_prefix="p", consistency="strict", **settings)  # type: ignore[arg-type]
    breaker = Breaker(name, redis, config, clock=clock)
    for _ in range(config.failure_threshold):
        with pytest.raises(ConnectionError):
            breaker.execute(lambda: (_ for _ in ()).throw(ConnectionError("down")))
    return breaker


def test_breakers_are_found_by_their_state_keys_only(
    redis: fakeredis.FakeRedis, clock: FakeClock
) -> None:
    trip(redis, "github", clock, failure_threshold=1)
    trip(redis, "docker-registry:eu.1", clock, failure_threshold=1)
    redis.set("p:unrelated", "x")
    redis.set("other:{github}:state", "x")
    assert find_breakers(redis, "p") == ["docker-registry:eu.1", "github"]
    assert find_breakers(redis, "other-prefix") == []


def test_the_scan_stops_at_its_budget(redis: fakeredis.FakeRedis) -> None:
    for i in range(3000):
        redis.set(f"filler:{i}", "x")
    redis.hset(breaker_keys("p", "late")[0], "state", "closed")
    names, truncated = scan_breakers(redis, "p", budget=1000)
    assert truncated
    assert names in ([], ["late"])
    assert scan_breakers(redis, "p") == (["late"], False)


def test_a_budget_below_one_scan_page_still_bounds_the_scan(redis: fakeredis.FakeRedis) -> None:
    for i in range(3000):
        redis.set(f"filler:{i}", "x")
    assert scan_breakers(redis, "p", budget=10) == ([], True)


def test_a_single_redis_reports_no_primaries(redis: fakeredis.FakeRedis) -> None:
    status = get_network_status(redis, prefix="p")
    assert status.redis.reachable
    assert status.redis.primaries is None


def test_stored_config_uses_the_breakers_own_window(
    redis: fakeredis.FakeRedis, clock: FakeClock
) -> None:
    trip(redis, "github", clock, failure_threshold=2, window=30.0, reset_timeout=7.0)
    config = stored_config(redis, "p", "github")
    assert (config.failure_threshold, config.window, config.reset_timeout) == (2, 30.0, 7.0)
    assert config.key_prefix == "p"


def test_stored_config_falls_back_to_defaults_on_junk(redis: fakeredis.FakeRedis) -> None:
    redis.hset(breaker_keys("p", "odd")[0], "config", "{not json")
    assert stored_config(redis, "p", "odd").window == BreakerConfig().window
    redis.hset(breaker_keys("p", "odd")[0], "config", '{"window": -5}')
    assert stored_config(redis, "p", "odd").window == BreakerConfig().window


def test_network_status_has_state_failures_and_health(redis: fakeredis.FakeRedis) -> None:
    # status reads the window on the server's clock: record failures on it too
    trip(redis, "github", None, failure_threshold=2)
    Breaker("calm", redis, BreakerConfig(key_prefix="p")).force_closed()
    status = get_network_status(redis, prefix="p")
    assert status.redis.reachable
    assert status.redis.latency_ms is not None
    assert status.summary() == {
        "calm": {"state": "forced_closed", "failure_count": 0, "healthy": True},
        "github": {"state": "open", "failure_count": 2, "healthy": False},
    }
    assert not status.healthy
    assert breaker_exists(redis, "p", "github")
    assert not breaker_exists(redis, "p", "nosuch")


def test_network_status_of_an_unreachable_redis_never_raises() -> None:
    status = get_network_status("redis://127.0.0.1:1/0")
    assert not status.redis.reachable
    assert "Connection refused" in (status.redis.error or "")
    assert status.breakers == {}
    assert not status.healthy


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("redis://u:pw@h:6379/0") == "redis://u:***@h:6379/0"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
