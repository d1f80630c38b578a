"""Redis stopped, hung (SIGSTOP) and back: calls go on, stay bounded, shared mode resumes."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator

import pytest

import distbreaker
from distbreaker import Breaker, BreakerConfig, CircuitOpenError, StoreUnavailableError
from distbreaker.testing import RedisServer, find_redis_server

pytestmark = pytest.mark.integration

STORE_TIMEOUT = 0.25


@pytest.fixture
def server() -> Iterator[RedisServer]:
    binary = find_redis_server()
    if binary is None:
        pytest.skip("redis-server is not installed")
    own = RedisServer(binary).start()
    yield own
    if own.process is not None:
        os.kill(own.process.pid, signal.SIGCONT)
    own.stop()


def failing() -> None:
    raise ConnectionError("upstream down")


def wait_for_shared_mode(breaker: Breaker, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if breaker.status().store_ok:
            return
        time.sleep(0.2)
    raise AssertionError("shared mode did not resume")


def test_stopped_redis_falls_back_to_local_protection_then_resumes(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    breaker = Breaker("svc", distbreaker.connect(server.url), BreakerConfig(failure_threshold=3))
    assert breaker.execute(lambda: "up") == "up"
    server.stop()
    calls = 0

    def counting_failure() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("upstream down")

    with caplog.at_level(logging.WARNING, logger="distbreaker"):
        results = [breaker.execute(counting_failure, fallback=lambda: "fb") for _ in range(10)]
    assert results == ["fb"] * 10
    assert calls == 3  # the local shadow breaker opened after the threshold
    status = breaker.status()
    assert (status.store_ok, status.state) == (False, "open")
    unreachable = [r for r in caplog.records if "Redis unreachable (" in r.getMessage()]
    assert len(unreachable) == 1  # one warning, not one per call
    assert all(r.exc_info is None for r in caplog.records)  # never a traceback

    server.start()
    wait_for_shared_mode(breaker)
    status = breaker.status()
    assert (status.store_ok, status.state) == (True, "closed")  # Redis never saw the outage
    assert breaker.execute(lambda: "shared again") == "shared again"


def test_hung_redis_costs_one_timeout_per_backoff_not_per_call(server: RedisServer) -> None:
    client = distbreaker.connect(server.url, timeout=STORE_TIMEOUT)
    breaker = Breaker("svc", client, BreakerConfig(failure_threshold=5, consistency="strict"))
    assert breaker.execute(lambda: "up") == "up"
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    durations = []
    started = time.perf_counter()
    for _ in range(100):
        begin = time.perf_counter()
        breaker.execute(lambda: "served", fallback=lambda: "fb")
        durations.append(time.perf_counter() - begin)
    total = time.perf_counter() - started
    print(f"\nhung Redis: 100 calls in {total:.3f}s, slowest {max(durations):.3f}s")
    assert max(durations) < STORE_TIMEOUT * 2 + 0.2
    assert total < 100 * STORE_TIMEOUT / 10
    assert not breaker.status().store_ok

    os.kill(server.process.pid, signal.SIGCONT)
    wait_for_shared_mode(breaker)
    assert breaker.execute(lambda: "resumed") == "resumed"


def test_fail_closed_and_raise_modes(server: RedisServer) -> None:
    client = distbreaker.connect(server.url)
    closed = Breaker("a", client, BreakerConfig(on_store_error="fail_closed"))
    raising = Breaker("b", client, BreakerConfig(on_store_error="raise"))
    server.stop()
    assert closed.execute(lambda: "x", fallback=lambda: "refused") == "refused"
    with pytest.raises(CircuitOpenError):
        closed.execute(lambda: "x")
    with pytest.raises(StoreUnavailableError):
        raising.execute(lambda: "x")
    with pytest.raises(StoreUnavailableError):
        raising.status()
    with pytest.raises(StoreUnavailableError):
        closed.force_open()
