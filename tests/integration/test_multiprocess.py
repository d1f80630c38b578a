"""Many worker processes on one real Redis: no lost updates, one event, one probe."""

from __future__ import annotations

import json
import multiprocessing
import time
import uuid
from typing import Any

import pytest

import distbreaker
from distbreaker import Breaker, BreakerConfig
from tests.integration import workers

pytestmark = pytest.mark.integration

PROCESSES = 8
THRESHOLD = 5


def run_all(target: Any, url: str, settings: dict[str, Any]) -> list[Any]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    queue = context.Queue()
    processes = [
        context.Process(target=target, args=(url, settings, barrier, queue))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    results = [queue.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=10)
        assert process.exitcode == 0
    return results


def drain_events(pubsub: Any) -> list[dict[str, Any]]:
    """Every event that arrives until the channel has been quiet for half a second."""
    events = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < 0.5:
        message = pubsub.get_message(timeout=0.1)
        if message and message["type"] == "message":
            events.append(json.loads(message["data"]))
            quiet_since = time.monotonic()
    return events


@pytest.mark.parametrize("consistency", ["strict", "cached"])
def test_eight_processes_trip_once_and_probe_once(redis_url: str, consistency: str) -> None:
    prefix = f"mp-{uuid.uuid4().hex[:10]}"
    settings = {
        "failure_threshold": THRESHOLD,
        "reset_timeout": 1.5,
        "key_prefix": prefix,
        "consistency": consistency,
        "half_open_max_calls": 1,
    }
    client = distbreaker.connect(redis_url, timeout=2.0)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"{prefix}:events")

    calls = run_all(workers.hammer_until_refused, redis_url, settings)
    total = sum(calls)
    observer = Breaker("shared", client, BreakerConfig(**settings))
    status = observer.status()
    events = drain_events(pubsub)
    overshoot = total - THRESHOLD
    print(
        f"\n[{consistency}] calls per process {calls}: total {total}, "
        f"overshoot {overshoot} (bound {PROCESSES - 1})"
    )
    assert [(e["from"], e["to"]) for e in events] == [("closed", "open")]
    assert status.failures_total == total  # every failure reached Redis exactly once
    assert THRESHOLD <= total <= THRESHOLD + PROCESSES - 1

    time.sleep(max(0.0, status.time_until_reset) + 0.05)
    ran = run_all(workers.probe_once, redis_url, settings)
    print(f"[{consistency}] probes admitted at once: {sum(ran)} of {PROCESSES}")
    assert sum(ran) == 1
    assert observer.status().state == "closed"
    events = drain_events(pubsub)
    assert [(e["from"], e["to"]) for e in events] == [
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    pubsub.close()
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)
