"""Nothing wedges a breaker (issue 12), on a real redis-server.

Hostile bytes in a breaker's keys, one transient store error, a health check polling
``status()`` during an outage, a restart, forged events: none of it may raise into a
caller's call, keep a probe lease, or keep the fleet out of shared mode for long.
Every wait is on a condition, bounded; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

import distbreaker
from distbreaker import Breaker, BreakerConfig, CircuitOpenError
from distbreaker.store import breaker_keys, events_channel
from tests.conftest import wait_for_subscribers

pytestmark = pytest.mark.integration

NAME = "svc"
DAY_MS = 86_400_000


def now_ms(client: Any) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until true (seconds it took), or fail after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.01)
    return time.monotonic() - started


def ok() -> str:
    return "ok"


def down() -> str:
    raise ConnectionError("upstream down")


class EventLog:
    """Every message on the breakers' channel, read up to a marker the test publishes
    itself: "all events so far" without waiting for a fixed time."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.channel = events_channel(prefix)
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(self.channel)
        wait_for_subscribers(client, self.channel, 1)
        self.seen: list[dict[str, Any]] = []

    def so_far(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        marker = f"marker-{uuid.uuid4().hex}"
        self.client.publish(self.channel, marker)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=0.2)
            if message is None:
                continue
            data = message["data"].decode()
            if data == marker:
                return self.seen
            if not data.startswith("marker-"):
                self.seen.append(json.loads(data))
        raise AssertionError("the marker did not come back")

    def reasons(self) -> list[str]:
        return [event["reason"] for event in self.so_far()]

    def close(self) -> None:
        self.pubsub.close()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    own = distbreaker.connect(redis_url, timeout=2.0)
    yield own
    own.close()


@pytest.fixture
def keyspace(client: redis.Redis, prefix: str) -> Iterator[str]:
    """The test's key prefix; its keys are deleted afterwards (never FLUSHDB)."""
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
    if keys:
        client.delete(*keys)


@pytest.fixture
def events(client: redis.Redis, keyspace: str) -> Iterator[EventLog]:
    log = EventLog(client, keyspace)
    yield log
    log.close()


def settings(prefix: str, **overrides: Any) -> BreakerConfig:
    return BreakerConfig(key_prefix=prefix, **overrides)


def stored(client: redis.Redis, key: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(key).items()}


NUMERIC_FIELDS = ("generation", "opened_at", "open_until", "probe_successes", "open_streak")


def assert_rewritten(client: redis.Redis, prefix: str) -> None:
    """Every numeric field an integer, every key with a TTL, the hash readable again."""
    keys = breaker_keys(prefix, NAME)
    fields = stored(client, keys.state)
    for field in NUMERIC_FIELDS:
        assert fields[field].isdigit(), (field, fields[field])
    assert int(fields["open_until"]) <= now_ms(client) + 11 * DAY_MS
    for key in keys:
        assert client.pttl(key) != -1, f"{key} has no TTL"
    probe = Breaker(NAME, client, settings(prefix))
    assert probe.status().malformed == ""


# -- defect 1: a malformed state hash ------------------------------------------------


def test_unreadable_generation_is_repaired_once_and_every_worker_calls_on(
    client: redis.Redis, keyspace: str, events: EventLog, consistency: str
) -> None:
    keys = breaker_keys(keyspace, NAME)
    client.hset(keys.state, mapping={"state": "closed", "generation": "xyz"})
    config = settings(keyspace, consistency=consistency)
    workers = [Breaker(NAME, client, config) for _ in range(3)]
    assert [w.execute(ok) for w in workers for _ in range(5)] == ["ok"] * 15
    assert events.reasons() == ["repaired"]
    assert_rewritten(client, keyspace)
    assert all(w.store_ok for w in workers)
    history = workers[0].history()
    assert [(e.event, e.note) for e in history] == [("repaired", "generation")]


def run_cli(*args: str, url: str, prefix: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("DISTBREAKER_REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "distbreaker", *args, "--redis-url", url, "--prefix", prefix],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.mark.parametrize("field", ["opened_at", "open_until", "generation", "probe_successes"])
def test_non_numeric_field_shows_in_status_and_reset_repairs_it(
    client: redis.Redis, keyspace: str, events: EventLog, redis_url: str, field: str
) -> None:
    keys = breaker_keys(keyspace, NAME)
    now = now_ms(client)
    good = {"generation": 3, "opened_at": now, "open_until": now + 60_000, "probe_successes": 0}
    client.hset(keys.state, mapping={"state": "open", **good, field: "soon"})
    shown = Breaker(NAME, client, settings(keyspace)).status()  # read-only: nothing written
    assert field in shown.malformed.split(",")
    assert shown.state == ("closed" if field in ("generation", "open_until") else "open")
    assert stored(client, keys.state)[field] == "soon"

    listed = run_cli("status", "--json", url=redis_url, prefix=keyspace)
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert (row["name"], row["malformed"]) == (NAME, shown.malformed)
    table = run_cli("status", url=redis_url, prefix=keyspace)
    assert table.returncode == 0, table.stderr
    assert NAME in table.stdout

    reset = run_cli("reset", NAME, url=redis_url, prefix=keyspace)
    assert reset.returncode == 0, reset.stderr
    assert f"breaker {NAME!r} is closed" in reset.stdout
    assert_rewritten(client, keyspace)
    assert events.reasons() == ["reset"]


def test_unknown_state_hands_out_no_lease_and_drops_a_stale_one(
    client: redis.Redis, keyspace: str, events: EventLog
) -> None:
    keys = breaker_keys(keyspace, NAME)
    client.hset(keys.state, mapping={"state": "banana", "generation": "3"})
    client.zadd(keys.probes, {"someone:1": now_ms(client) + 30_000})
    breaker = Breaker(NAME, client, settings(keyspace, consistency="strict"))
    assert [breaker.execute(ok) for _ in range(3)] == ["ok"] * 3
    assert client.zcard(keys.probes) == 0
    assert breaker.status().state == "closed"
    assert events.reasons() == ["repaired"]
    assert_rewritten(client, keyspace)


def test_repair_of_a_half_open_breaker_frees_the_leases_it_fences(
    client: redis.Redis, keyspace: str, events: EventLog
) -> None:
    """A repair moves the generation on, so an older probe's outcome can no longer
    return its lease: the repair drops it, and the next caller probes at once."""
    keys = breaker_keys(keyspace, NAME)
    client.hset(keys.state, mapping={"state": "half_open", "generation": 3, "open_until": 0})
    client.hset(keys.state, "probe_successes", "many")
    client.zadd(keys.probes, {"other-worker:7": now_ms(client) + 30_000})
    breaker = Breaker(NAME, client, settings(keyspace, consistency="strict"))
    assert breaker.execute(ok, fallback=lambda: "refused") == "ok"
    assert breaker.status().state == "closed"
    assert events.reasons() == ["repaired", "probe_succeeded"]


def test_a_lease_that_never_expires_is_dropped(client: redis.Redis, keyspace: str) -> None:
    keys = breaker_keys(keyspace, NAME)
    client.hset(keys.state, mapping={"state": "half_open", "generation": 3, "open_until": 0})
    client.zadd(keys.probes, {"forever:1": math.inf})
    breaker = Breaker(NAME, client, settings(keyspace, consistency="strict"))
    assert breaker.execute(ok, fallback=lambda: "refused") == "ok"
    assert breaker.status().state == "closed"


@pytest.mark.parametrize("open_until", ["1e999", "9e18", "inf", "-5"])
def test_an_impossible_deadline_is_repaired_not_open_forever(
    client: redis.Redis, keyspace: str, events: EventLog, consistency: str, open_until: str
) -> None:
    keys = breaker_keys(keyspace, NAME)
    client.hset(keys.state, mapping={"state": "open", "generation": 5, "open_until": open_until})
    breaker = Breaker(NAME, client, settings(keyspace, consistency=consistency))
    assert breaker.execute(ok, fallback=lambda: "refused") == "ok"
    assert events.reasons() == ["repaired"]
    assert_rewritten(client, keyspace)


def test_a_deadline_weeks_away_is_clamped_to_one_reset_timeout(
    client: redis.Redis, keyspace: str, events: EventLog
) -> None:
    keys = breaker_keys(keyspace, NAME)
    far = now_ms(client) + 30 * DAY_MS
    client.hset(keys.state, mapping={"state": "open", "generation": 5, "open_until": far})
    breaker = Breaker(NAME, client, settings(keyspace, reset_timeout=20))
    with pytest.raises(CircuitOpenError) as refused:
        breaker.execute(ok)
    assert refused.value.retry_after is not None
    assert 0 < refused.value.retry_after <= 20
    assert events.reasons() == ["repaired"]
    assert 0 < client.pttl(keys.state) < 2 * DAY_MS
    assert_rewritten(client, keyspace)


@pytest.mark.parametrize("state", ["closed", "open"])
def test_a_hash_written_without_ttl_gets_one(
    client: redis.Redis, keyspace: str, consistency: str, state: str
) -> None:
    keys = breaker_keys(keyspace, NAME)
    due = now_ms(client) + 5_000
    client.hset(keys.state, mapping={"state": state, "generation": 4, "open_until": due})
    assert client.pttl(keys.state) == -1
    breaker = Breaker(NAME, client, settings(keyspace, consistency=consistency))
    breaker.execute(ok, fallback=lambda: "refused")
    assert client.pttl(keys.state) > 0


@pytest.mark.parametrize(
    "field", ["failures_total", "opens_total", "would_refuse_total", "last_failure_at"]
)
def test_a_garbage_counter_never_stops_the_breaker_from_opening(
    client: redis.Redis, keyspace: str, events: EventLog, consistency: str, field: str
) -> None:
    """Before: every record failed on HINCRBY, so the fleet never opened and each worker
    fell back to its local shadow, for good."""
    keys = breaker_keys(keyspace, NAME)
    client.hset(keys.state, mapping={"state": "closed", "generation": 2, field: "lots"})
    config = settings(keyspace, consistency=consistency, failure_threshold=2)
    breaker = Breaker(NAME, client, config)
    for _ in range(2):
        assert breaker.execute(down, fallback=lambda: "fallback") == "fallback"
    status = breaker.status()
    assert (status.state, status.store_ok, status.malformed) == ("open", True, "")
    assert status.failures_total == 2
    assert events.reasons() == ["repaired", "failure_threshold"]
    assert_rewritten(client, keyspace)


@pytest.mark.parametrize(
    "part", ["state", "failures", "probes", "history", "calls", "reporters", "control"]
)
def test_a_foreign_value_under_a_breaker_key_is_dropped(
    client: redis.Redis, keyspace: str, consistency: str, redis_url: str, part: str
) -> None:
    """A plain string where a hash, set or stream belongs: WRONGTYPE in every script
    before, so the breaker left shared mode for good and ``reset`` could not fix it."""
    keys = breaker_keys(keyspace, NAME)
    config = settings(keyspace, consistency=consistency, failure_threshold=2)
    Breaker(NAME, client, config).execute(down, fallback=lambda: "fallback")  # keys exist
    client.delete(getattr(keys, part))
    client.set(getattr(keys, part), "not yours")
    breaker = Breaker(NAME, client, config)
    assert breaker.status().state in ("closed", "open")  # no exception, read-only
    for _ in range(2):
        assert breaker.execute(down, fallback=lambda: "fallback") == "fallback"
    status = breaker.status()
    assert (status.state, status.store_ok) == ("open", True)
    reset = run_cli("reset", NAME, url=redis_url, prefix=keyspace)
    assert reset.returncode == 0, reset.stderr
    assert breaker.status().state == "closed"
    assert client.type(getattr(keys, part)) in (b"hash", b"zset", b"stream", b"none")
    assert_rewritten(client, keyspace)
