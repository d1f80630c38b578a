"""A breaker shared by threads with no lock around calls, and inherited across fork()."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid

import pytest

import distbreaker
from distbreaker import Breaker, BreakerConfig
from tests.integration import workers

pytestmark = pytest.mark.integration


def test_threads_share_a_breaker_without_serialising_calls(redis_url: str) -> None:
    config = BreakerConfig(key_prefix=f"th-{uuid.uuid4().hex[:8]}")
    breaker = Breaker("threads", distbreaker.connect(redis_url), config)
    inside = 0
    most_inside = 0
    lock = threading.Lock()

    def slow_call() -> str:
        nonlocal inside, most_inside
        with lock:
            inside += 1
            most_inside = max(most_inside, inside)
        time.sleep(0.2)  # real threads overlapping in the user's call
        with lock:
            inside -= 1
        return "ok"

    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(breaker.execute(slow_call)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["ok"] * 8
    assert most_inside == 8  # no lock held around the call


def test_forked_child_builds_its_own_connections_and_ids(redis_url: str) -> None:
    config = BreakerConfig(key_prefix=f"fork-{uuid.uuid4().hex[:8]}", failure_threshold=10)
    breaker = Breaker("forked", distbreaker.connect(redis_url), config)
    assert breaker.execute(lambda: "parent") == "parent"  # parent's subscriber and sockets
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [
        context.Process(target=workers.use_inherited_breaker, args=(breaker, queue))
        for _ in range(3)
    ]
    for child in children:
        child.start()
    results = [queue.get(timeout=30) for _ in children]
    for child in children:
        child.join(timeout=10)
        assert child.exitcode == 0
    assert all(
        new_id and result == "fallback" and store_ok for new_id, result, store_ok, _ in results
    )
    assert breaker.status().failures_total == 3  # each child's failure reached Redis once
