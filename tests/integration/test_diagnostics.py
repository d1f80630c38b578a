"""get_network_status and the diagnose checks against the real test Redis."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import distbreaker
from distbreaker import Breaker, BreakerConfig
from distbreaker.diagnostics import check_github, get_network_status, load_scripts
from distbreaker.store import SCRIPT_NAMES
from distbreaker.testing import FlakyUpstream

pytestmark = pytest.mark.integration


def fail(breaker: Breaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionError):
            breaker.execute(lambda: (_ for _ in ()).throw(ConnectionError("down")))


def test_network_status_by_url_lists_every_breaker_with_its_own_window(
    breaker_factory: Callable[..., Breaker], redis_url: str
) -> None:
    short = breaker_factory("short", BreakerConfig(failure_threshold=2, window=5))
    prefix = short.config.key_prefix
    long = Breaker("long", short.redis, BreakerConfig(key_prefix=prefix, failure_threshold=10))
    fail(short, 2)
    fail(long, 3)
    status = get_network_status(redis_url, prefix=prefix)
    assert status.redis.reachable
    assert status.redis.version is not None
    assert status.redis.version.split(".")[0].isdigit()
    assert status.redis.latency_ms is not None
    assert status.redis.latency_ms < 100
    assert status.summary() == {
        "long": {"state": "closed", "failure_count": 3, "healthy": True},
        "short": {"state": "open", "failure_count": 2, "healthy": False},
    }
    shown = status.breakers["short"]
    assert shown == short.status().model_copy(
        update={"time_until_reset": shown.time_until_reset, "since": shown.since}
    )


def test_network_status_from_a_client(
    breaker_factory: Callable[..., Breaker], redis_url: str
) -> None:
    breaker = breaker_factory("github")
    breaker.force_open()
    client = distbreaker.connect(redis_url)
    status = get_network_status(client, prefix=breaker.config.key_prefix)
    assert status.redis.url == redis_url
    assert status.summary() == {
        "github": {"state": "forced_open", "failure_count": 0, "healthy": False}
    }


def test_every_script_loads(redis_url: str) -> None:
    shas = load_scripts(distbreaker.connect(redis_url, timeout=2.0))
    assert set(shas) == set(SCRIPT_NAMES)
    assert all(len(sha) == 40 for sha in shas.values())


def test_github_check_reports_an_answer_and_an_outage() -> None:
    with FlakyUpstream("ok") as upstream:
        answered = check_github(upstream.url)
        upstream.mode = "error"
        failing = check_github(upstream.url)
        upstream.mode = "reset"
        reset = check_github(upstream.url)
    assert answered.ok
    assert "answered HTTP 200" in answered.detail
    assert not failing.ok
    assert "HTTP 503" in failing.detail
    assert not reset.ok
    assert "ReadError" in reset.detail
