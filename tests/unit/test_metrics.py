"""Prometheus metrics: fed by breaker hooks, scraped and parsed like a Prometheus server would."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from distbreaker import Breaker, BreakerConfig, CircuitOpenError
from distbreaker.core import Event
from distbreaker.metrics import BreakerMetrics, disable_metrics, enable_metrics, serve_metrics
from distbreaker.testing import free_port
from tests.conftest import FakeClock


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Iterator[BreakerMetrics]:
    hook = enable_metrics(registry)
    yield hook
    disable_metrics(hook)


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}, parsed from the exposition text."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def boom() -> None:
    raise ConnectionError("upstream down")


def test_a_trip_shows_failures_rejections_and_open_state(
    metrics: BreakerMetrics, registry: CollectorRegistry, clock: FakeClock
) -> None:
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    config = BreakerConfig(failure_threshold=3, key_prefix="m", consistency="strict")
    breaker = Breaker("payments", client, config, clock=clock)
    assert breaker.execute(lambda: "fine") == "fine"
    for _ in range(3):
        with pytest.raises(ConnectionError):
            breaker.execute(boom)
    for _ in range(2):
        with pytest.raises(CircuitOpenError):
            breaker.execute(lambda: "never")

    samples = scrape(registry)
    calls = "distbreaker_calls_total"
    assert samples[(calls, (("breaker", "payments"), ("outcome", "success")))] == 1
    assert samples[(calls, (("breaker", "payments"), ("outcome", "failure")))] == 3
    assert samples[(calls, (("breaker", "payments"), ("outcome", "refused")))] == 2
    assert samples[("distbreaker_rejections_total", (("breaker", "payments"),))] == 2
    state = "distbreaker_state"
    assert samples[(state, (("breaker", "payments"), ("state", "open")))] == 1
    assert samples[(state, (("breaker", "payments"), ("state", "closed")))] == 0
    duration = "distbreaker_call_duration_seconds_count"
    assert samples[(duration, (("breaker", "payments"),))] == 4  # refused calls take no time


def test_transitions_are_counted_and_set_the_state(
    metrics: BreakerMetrics, registry: CollectorRegistry
) -> None:
    metrics.on_transition(Event("github", "closed", "open", 1, 1_000, "failure_threshold", 61_000))
    metrics.on_transition(Event("github", "open", "half_open", 2, 61_000, "reset_timeout", 0))
    samples = scrape(registry)
    key = (("breaker", "github"), ("from_state", "closed"), ("to_state", "open"))
    assert samples[("distbreaker_transitions_total", key)] == 1
    assert samples[("distbreaker_state", (("breaker", "github"), ("state", "half_open")))] == 1
    assert samples[("distbreaker_state", (("breaker", "github"), ("state", "open")))] == 0


def test_store_errors_are_counted_by_type(
    metrics: BreakerMetrics, registry: CollectorRegistry
) -> None:
    metrics.on_store_error("github", TimeoutError("slow redis"))
    metrics.on_store_error("github", TimeoutError("slow redis"))
    samples = scrape(registry)
    key = (("breaker", "github"), ("error", "TimeoutError"))
    assert samples[("distbreaker_store_errors_total", key)] == 2


def test_enable_twice_on_one_registry_gives_the_same_hook(registry: CollectorRegistry) -> None:
    first = enable_metrics(registry)
    try:
        assert enable_metrics(registry) is first
    finally:
        disable_metrics(first)


def test_a_disabled_hook_stops_counting(registry: CollectorRegistry, clock: FakeClock) -> None:
    hook = enable_metrics(registry)
    disable_metrics(hook)
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    Breaker("quiet", client, BreakerConfig(key_prefix="m2"), clock=clock).execute(lambda: 1)
    assert not any(name == "distbreaker_calls_total" for name, _ in scrape(registry))


def test_serve_metrics_exposes_them_over_http(registry: CollectorRegistry) -> None:
    port = free_port()
    server = serve_metrics(port, registry=registry)
    try:
        hook = enable_metrics(registry)
        hook.on_store_error("github", OSError("gone"))
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    finally:
        server.shutdown()
        server.server_close()
        disable_metrics(hook)
    assert response.status_code == 200
    assert 'distbreaker_store_errors_total{breaker="github",error="OSError"} 1.0' in response.text
