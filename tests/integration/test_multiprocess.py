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
from tests.conftest import wait_until
from tests.integration import workers

pytestmark = pytest.mark.integration

PROCESSES = 8
THRESHOLD = 5


def run_all(target: Any, url: str, settings: dict[str, Any], *, counter: bool = False) -> list[Any]:
    """``target(url, settings, barrier, queue[, counter])`` in each of the processes."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    queue = context.Queue()
    extra = (context.Value("i", 0),) if counter else ()
    processes = [
        context.Process(target=target, args=(url, settings, barrier, queue, *extra))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    results = [queue.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=10)
        assert process.exitcode == 0
    return results


def drain_events(client: Any, pubsub: Any, channel: str) -> list[dict[str, Any]]:
    """Every event published so far: read up to a marker this test publishes after them
    (one subscriber connection receives in publishing order), at most 30 s."""
    marker = f"marker-{uuid.uuid4().hex}"
    client.publish(channel, marker)
    events = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message and message["type"] == "message":
            if message["data"].decode() == marker:
                return events
            events.append(json.loads(message["data"]))
    raise AssertionError("the marker did not come back")


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
    channel = f"{prefix}:events"
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    wait_until(lambda: client.pubsub_numsub(channel)[0][1] >= 1, 10)

    calls = run_all(workers.hammer_until_refused, redis_url, settings)
    total = sum(calls)
    observer = Breaker("shared", client, BreakerConfig(**settings))
    status = observer.status()
    events = drain_events(client, pubsub, channel)
    overshoot = total - THRESHOLD
    print(
        f"\n[{consistency}] calls per process {calls}: total {total}, "
        f"overshoot {overshoot} (bound {PROCESSES - 1})"
    )
    assert [(e["from"], e["to"]) for e in events] == [("closed", "open")]
    assert status.failures_total == total  # every failure reached Redis exactly once
    assert THRESHOLD <= total <= THRESHOLD + PROCESSES - 1

    wait_until(lambda: observer.status().time_until_reset == 0, 30)  # Redis time
    ran = run_all(workers.probe_once, redis_url, settings, counter=True)
    print(f"[{consistency}] probes admitted at once: {sum(ran)} of {PROCESSES}")
    assert sum(ran) == 1
    assert observer.status().state == "closed"
    events = drain_events(client, pubsub, channel)
    assert [(e["from"], e["to"]) for e in events] == [
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    pubsub.close()
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)
