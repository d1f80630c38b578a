"""The rate rule and batched reports with real processes on a real Redis."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid
from typing import Any

import pytest

import distbreaker
from distbreaker import Breaker, BreakerConfig, upkeep
from tests.integration import fleet_workers
from tests.integration.test_multiprocess import drain_events

pytestmark = pytest.mark.integration

PROCESSES = 8
CALLS = 2_500  # per process: 20 000 in all
RATE = {
    "failure_rate_threshold": 0.5,
    "minimum_calls": 50,
    "window": 60.0,
    "reset_timeout": 60.0,
    "report_interval": 0.1,
}


def run_fleet(
    url: str, prefix: str, ratio: float, calls: int
) -> tuple[list[dict[str, int]], list[dict[str, Any]]]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    queue = context.Queue()
    settings = {**RATE, "key_prefix": prefix}
    admin = distbreaker.connect(url, timeout=2.0)
    pubsub = admin.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"{prefix}:events")
    processes = [
        context.Process(
            target=fleet_workers.mixed_calls,
            args=(url, settings, ratio, calls, seed, barrier, queue),
        )
        for seed in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    results = [queue.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    events = drain_events(admin, pubsub, f"{prefix}:events")
    pubsub.close()
    return results, events


def test_a_true_failure_ratio_of_70_percent_opens_the_fleet_once(
    redis_url: str, prefix: str
) -> None:
    results, events = run_fleet(redis_url, prefix, 0.7, CALLS)
    opens = [e for e in events if e["to"] == "open"]
    assert len(opens) == 1
    assert opens[0]["reason"] == "failure_rate"
    assert sum(r["refused"] for r in results) > 0.8 * PROCESSES * CALLS


def test_a_true_failure_ratio_of_30_percent_never_opens(redis_url: str, prefix: str) -> None:
    results, events = run_fleet(redis_url, prefix, 0.3, CALLS)
    assert [e for e in events if e["to"] == "open"] == []
    assert sum(r["hits"] for r in results) == PROCESSES * CALLS
    status = Breaker(
        "fleet", distbreaker.connect(redis_url), BreakerConfig(**RATE, key_prefix=prefix)
    ).status()
    assert status.calls_in_window == PROCESSES * CALLS  # every call reached the totals
    assert status.failure_rate is not None
    assert 0.27 < status.failure_rate < 0.33


def test_below_minimum_calls_nothing_opens(redis_url: str, prefix: str) -> None:
    _, events = run_fleet(redis_url, prefix, 1.0, 6)  # 48 failing calls, minimum 50
    assert [e for e in events if e["to"] == "open"] == []


def test_a_killed_process_loses_at_most_one_report_interval(redis_url: str) -> None:
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    settings = {**RATE, "key_prefix": prefix, "report_interval": 0.2}
    context = multiprocessing.get_context("spawn")
    counted = context.Value("i", 0)
    rate = 500.0
    process = context.Process(
        target=fleet_workers.paced_successes, args=(redis_url, settings, rate, counted)
    )
    process.start()
    breaker = Breaker("paced", distbreaker.connect(redis_url), BreakerConfig(**settings))
    deadline = time.monotonic() + 30
    while (breaker.status().calls_in_window or 0) < 500 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    process.join(timeout=10)
    made = counted.value
    reported = breaker.status().calls_in_window or 0
    lost = made - reported
    print(f"made {made}, reported {reported}, lost {lost} (one interval = {rate * 0.2:.0f})")
    assert 0 <= lost <= rate * 0.2 * 1.5 + 5


def test_a_forked_child_reports_its_own_counts(redis_url: str, prefix: str) -> None:
    upkeep.run_in_background(False)
    try:
        settings = {**RATE, "key_prefix": prefix}
        breaker = Breaker("forked", distbreaker.connect(redis_url), BreakerConfig(**settings))
        for _ in range(100):
            breaker.execute(lambda: "ok")  # counted, not yet reported
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=fleet_workers.forked_child, args=(breaker, 10, queue))
        child.start()
        child_worker = queue.get(timeout=30)
        child.join(timeout=10)
        assert child.exitcode == 0
        assert child_worker != breaker.worker_id
        assert breaker.status().calls_in_window == 10  # the child's, not the parent's
        breaker.upkeep(final=True)
        assert breaker.status().calls_in_window == 110
    finally:
        upkeep.run_in_background(True)
