"""The plugin's fixtures together, as a user's test suite would use them."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from distbreaker import Breaker, BreakerConfig, CircuitOpenError
from distbreaker.classify import Verdict, classify, for_status
from distbreaker.testing import FlakyUpstream

pytestmark = pytest.mark.integration


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bytes(response.read())


def classify_urllib(error: BaseException) -> Verdict:
    """urllib's HTTPError by its status and headers (the default classifier sees an OSError)."""
    if isinstance(error, urllib.error.HTTPError):
        return for_status(error.code, dict(error.headers.items()))
    return classify(error)


def test_upstream_errors_open_the_breaker_and_spare_the_upstream(
    breaker_factory: Callable[..., Breaker], flaky_upstream: FlakyUpstream
) -> None:
    breaker = breaker_factory("payments", BreakerConfig(failure_threshold=3))
    assert b'"ok": true' in breaker.execute(lambda: fetch(flaky_upstream.url))
    flaky_upstream.mode = "error"
    for _ in range(3):
        with pytest.raises(urllib.error.HTTPError):
            breaker.execute(lambda: fetch(flaky_upstream.url))
    for _ in range(5):
        with pytest.raises(CircuitOpenError):
            breaker.execute(lambda: fetch(flaky_upstream.url))
    assert flaky_upstream.requests == 4
    assert breaker.status().state == "open"


def test_connection_resets_count_as_failures(
    breaker_factory: Callable[..., Breaker], flaky_upstream: FlakyUpstream
) -> None:
    breaker = breaker_factory(config=BreakerConfig(failure_threshold=2))
    flaky_upstream.mode = "reset"
    for _ in range(2):
        with pytest.raises(OSError):
            breaker.execute(lambda: fetch(flaky_upstream.url))
    assert breaker.status().state == "open"


def test_a_rate_limit_holds_the_breaker_open_for_retry_after(
    breaker_factory: Callable[..., Breaker], flaky_upstream: FlakyUpstream
) -> None:
    breaker = breaker_factory(config=BreakerConfig(failure_threshold=5), classifier=classify_urllib)
    flaky_upstream.mode = "rate_limited"
    with pytest.raises(urllib.error.HTTPError):
        breaker.execute(lambda: fetch(flaky_upstream.url))
    status = breaker.status()
    assert status.state == "open"
    assert status.failure_count == 0  # a rate limit is not an outage
    assert status.time_until_reset == pytest.approx(flaky_upstream.retry_after, abs=2)
    with pytest.raises(CircuitOpenError):
        breaker.execute(lambda: fetch(flaky_upstream.url))
    assert flaky_upstream.requests == 1
