"""Prometheus metrics: fed by breaker hooks, scraped and parsed like a Prometheus server would."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from distbreaker import Breaker, BreakerConfig, BreakerStatus, CircuitOpenError
from distbreaker.core import Event
from distbreaker.fleet import BreakerRow, FleetListing
from distbreaker.hooks import CallInfo
from distbreaker.metrics import (
    BreakerMetrics,
    FleetCollector,
    disable_metrics,
    enable_metrics,
    serve_metrics,
)
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
    assert samples[(duration, (("breaker", "payments"), ("outcome", "success")))] == 1
    assert samples[(duration, (("breaker", "payments"), ("outcome", "failure")))] == 3
    # refused calls take no time: no duration series for them
    assert (duration, (("breaker", "payments"), ("outcome", "refused"))) not in samples
    assert samples[("distbreaker_store_ok", (("breaker", "payments"),))] == 1


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


def store_ok(registry: CollectorRegistry, name: str = "github") -> float:
    return scrape(registry)[("distbreaker_store_ok", (("breaker", name),))]


def test_store_ok_follows_store_errors_and_recovery(registry: CollectorRegistry) -> None:
    clock = FakeClock()
    hook = BreakerMetrics(registry, clock=clock)
    hook.on_call(CallInfo("github", "success", "closed", 0.01, shared=True))
    assert store_ok(registry) == 1
    hook.on_store_error("github", TimeoutError("slow redis"))
    assert store_ok(registry) == 0
    clock.advance(1.0)
    hook.on_call(CallInfo("github", "success", "closed", 0.01, shared=False))
    assert store_ok(registry) == 0  # decided locally
    hook.on_call(CallInfo("github", "success", "closed", 0.01, shared=True))
    assert store_ok(registry) == 0  # only the breaker knows when Redis is back
    hook.on_store_recovered("github")
    assert store_ok(registry) == 1


def test_a_call_whose_record_met_a_store_error_keeps_store_ok_at_zero(
    registry: CollectorRegistry,
) -> None:
    clock = FakeClock()
    hook = BreakerMetrics(registry, clock=clock)
    clock.advance(0.3)  # the call ran for 0.5 s; Redis failed while its outcome was recorded
    hook.on_store_error("github", ConnectionError("gone"))
    clock.advance(0.2)
    hook.on_call(CallInfo("github", "failure", "closed", 0.5, shared=True))
    assert store_ok(registry) == 0


def test_a_shadow_breaker_reports_store_ok_zero_while_redis_is_down(
    metrics: BreakerMetrics, registry: CollectorRegistry, clock: FakeClock
) -> None:
    server = fakeredis.FakeServer()
    config = BreakerConfig(key_prefix="m3", consistency="strict")  # every call asks Redis
    breaker = Breaker("github", fakeredis.FakeRedis(server=server), config, clock=clock)
    breaker.execute(lambda: "fine")
    assert store_ok(registry) == 1
    server.connected = False
    breaker.execute(lambda: "local")
    assert store_ok(registry) == 0


def status(name: str, state: str = "closed", **fields: object) -> BreakerStatus:
    values: dict[str, object] = {
        "name": name,
        "state": state,
        "failure_count": 2,
        "generation": 3,
        "opened_at": None,
        "time_until_reset": 0.0,
        "last_failure_at": None,
        "store_ok": True,
        "healthy": state == "closed",
        "opens_total": 1,
        "failures_total": 7,
    }
    values.update(fields)
    return BreakerStatus.model_validate(values)


def listing(*rows: BreakerRow, store_ok: bool = True) -> FleetListing:
    return FleetListing(prefix="p", rows=rows, store_ok=store_ok, read_at=0.0)


def test_the_fleet_collector_reads_gauges_from_the_listing() -> None:
    registry = CollectorRegistry(auto_describe=False)
    rows = (
        BreakerRow(status("github", "open", time_until_reset=12.5), BreakerConfig()),
        BreakerRow(status("docker"), None),  # settings not stored yet: no threshold
    )
    registry.register(FleetCollector(lambda: listing(*rows)))
    samples = scrape(registry)
    assert samples[("distbreaker_fleet_store_ok", ())] == 1
    assert samples[("distbreaker_fleet_breakers", ())] == 2
    open_github = (("breaker", "github"), ("state", "open"))
    assert samples[("distbreaker_fleet_state", open_github)] == 1
    assert samples[("distbreaker_fleet_state", (("breaker", "github"), ("state", "closed")))] == 0
    github = (("breaker", "github"),)
    assert samples[("distbreaker_fleet_time_until_reset_seconds", github)] == 12.5
    assert samples[("distbreaker_fleet_failures_in_window", github)] == 2
    assert samples[("distbreaker_fleet_failure_threshold", github)] == 5
    assert samples[("distbreaker_fleet_opens_total", github)] == 1
    assert samples[("distbreaker_fleet_failures_total", github)] == 7
    assert ("distbreaker_fleet_failure_threshold", (("breaker", "docker"),)) not in samples
    # fields BreakerStatus does not have yet are left out, not invented
    assert ("distbreaker_fleet_failure_rate", github) not in samples


def test_the_fleet_collector_shows_rate_fields_where_the_status_has_them() -> None:
    class RateStatus(BreakerStatus):
        calls_in_window: int = 0
        failure_rate: float | None = None

    base = status("api").model_dump()
    rated = RateStatus.model_validate({**base, "calls_in_window": 40, "failure_rate": 0.25})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(lambda: listing(BreakerRow(rated, None))))
    samples = scrape(registry)
    assert samples[("distbreaker_fleet_calls_in_window", (("breaker", "api"),))] == 40
    assert samples[("distbreaker_fleet_failure_rate", (("breaker", "api"),))] == 0.25


def test_the_fleet_collector_leaves_out_stale_rows_while_redis_is_unreachable() -> None:
    registry = CollectorRegistry(auto_describe=False)
    row = BreakerRow(status("github"), None)
    registry.register(FleetCollector(lambda: listing(row, store_ok=False)))
    samples = scrape(registry)
    assert samples[("distbreaker_fleet_store_ok", ())] == 0
    assert not any(name == "distbreaker_fleet_state" for name, _ in samples)


def test_registering_the_fleet_collector_reads_nothing() -> None:
    reads: list[int] = []

    def read() -> FleetListing:
        reads.append(1)
        return listing()

    CollectorRegistry(auto_describe=True).register(FleetCollector(read))
    assert reads == []
