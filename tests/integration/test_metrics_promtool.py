"""The exposition checked by Prometheus's own linter, ``promtool check metrics``: a worker's
registry after real calls on a real Redis, and the dashboard's ``/metrics`` scrape."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from distbreaker import Breaker, BreakerConfig, CircuitOpenError
from distbreaker.metrics import BreakerMetrics, disable_metrics, enable_metrics
from distbreaker.store import connect
from tests.conftest import wait_until
from tests.integration.test_dashboard import (
    DashboardProcess,
    trip_elsewhere,
    write_token,
)
from tests.integration.test_dashboard import prefix as prefix  # its keys are deleted after

pytestmark = pytest.mark.integration


@pytest.fixture
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip(
            "promtool missing: Debian's prometheus package brings it "
            "(.ci/ensure-system-packages installs it)"
        )
    return found


def check(promtool: str, exposition: str) -> None:
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = (done.stdout + done.stderr).strip()
    assert done.returncode == 0, problems
    assert problems == "", problems  # promtool prints lint findings even when it exits 0


@pytest.fixture
def worker_metrics() -> Iterator[tuple[CollectorRegistry, BreakerMetrics]]:
    registry = CollectorRegistry()
    hook = enable_metrics(registry)
    yield registry, hook
    disable_metrics(hook)


def boom() -> None:
    raise ConnectionError("upstream down")


def test_a_workers_metrics_pass_promtool(
    promtool: str,
    worker_metrics: tuple[CollectorRegistry, BreakerMetrics],
    redis_url: str,
    prefix: str,
) -> None:
    registry, _ = worker_metrics
    config = BreakerConfig(key_prefix=prefix, failure_threshold=2, consistency="strict")
    breaker = Breaker("payments", connect(redis_url, timeout=2.0), config)
    breaker.execute(lambda: "fine")
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.execute(boom)
    with pytest.raises(CircuitOpenError):
        breaker.execute(lambda: "never")
    exposition = generate_latest(registry).decode()
    assert 'distbreaker_store_ok{breaker="payments"} 1.0' in exposition
    assert 'outcome="failure"' in exposition
    check(promtool, exposition)


def test_the_dashboard_scrape_passes_promtool(
    promtool: str, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    trip_elsewhere(redis_url, prefix, "payments")
    server = DashboardProcess(redis_url, prefix, write_token(tmp_path))
    try:
        server.wait_ready()
        wait_until(
            lambda: 'breaker="payments"' in httpx.get(f"{server.url}/metrics", timeout=5).text,
            20,
            "the breaker in the scrape",
        )
        response = httpx.get(f"{server.url}/metrics", timeout=5)
    finally:
        server.stop()
    assert response.headers["content-type"].startswith("text/plain")
    assert 'distbreaker_fleet_state{breaker="payments",state="open"} 1.0' in response.text
    check(promtool, response.text)
