"""Nothing wedges a breaker (issue 12), on a real redis-server.

Hostile bytes in a breaker's keys, one transient store error, a health check polling
``status()`` during an outage, a restart, forged events: none of it may raise into a
caller's call, keep a probe lease, or keep the fleet out of shared mode for long.
Every wait is on a condition, bounded; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import distbreaker
from distbreaker import Breaker, BreakerConfig, CircuitOpenError
from distbreaker.diagnostics import load_scripts
from distbreaker.store import breaker_keys, events_channel
from distbreaker.testing import RedisServer, find_redis_server
from tests.conftest import wait_for_subscribers, wait_until

pytestmark = pytest.mark.integration

NAME = "svc"
DAY_MS = 86_400_000


def now_ms(client: Any) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


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


# -- a private redis-server to stop, kill, fill and lock down ------------------------


class OwnRedis:
    """A private ``redis-server`` that tests may SIGSTOP, SIGKILL and restart on the same
    port, fill up and lock down with ACLs, without disturbing the session's server."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.server = RedisServer(binary).start()
        self.port = self.server.port
        self.admin = distbreaker.connect(self.url, timeout=2.0)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def url_for(self, user: str) -> str:
        return f"redis://{user}:secret@127.0.0.1:{self.port}/0"

    def stop_signal(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def continue_signal(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: gone at once, nothing flushed (the server keeps nothing anyway)."""
        assert self.server.process is not None
        self.server.process.kill()
        self.server.process.wait()
        self.server.process = None

    def restart(self) -> None:
        """A new, empty server on the same port (returns once it answers)."""
        self.server = RedisServer(self.binary, port=self.port).start()

    def close(self) -> None:
        self.admin.close()
        if self.server.process is not None:
            self.continue_signal()
        self.server.stop()


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    binary = find_redis_server()
    if binary is None:
        pytest.skip("redis-server is not installed")
    own = OwnRedis(binary)
    yield own
    own.close()


class Blackhole:
    """A TCP proxy to Redis that can swallow everything the clients send, like a network
    that drops packets: a command sent then never reaches Redis, and its reply never comes."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.swallow = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, upstream: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not (upstream and self.swallow):
                    target.sendall(data)
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


# -- defect 2: a probe's outcome survives one store error ----------------------------


class Fault:
    """One transient store error, started inside a probe call and ended after it."""

    def __init__(self, own: OwnRedis, kind: str) -> None:
        self.own = own
        self.kind = kind
        self.proxy: Blackhole | None = None
        admin = own.admin
        if kind in ("acl", "noscript-no-load"):
            # a worker's user: everything, but (for this test) no SCRIPT LOAD of its own
            rules = ["+@all", "-script"] if kind == "noscript-no-load" else ["+@all"]
            admin.execute_command("ACL", "SETUSER", "worker", "on", ">secret", "~*", "&*", *rules)
            load_scripts(admin)
        if kind == "blackhole":
            self.proxy = Blackhole(own.port)

    @property
    def worker_url(self) -> str:
        if self.proxy is not None:
            return self.proxy.url
        if self.kind in ("acl", "noscript-no-load"):
            return self.own.url_for("worker")
        return self.own.url

    def start(self) -> None:
        admin = self.own.admin
        if self.kind == "blackhole":
            assert self.proxy is not None
            self.proxy.swallow = True
        elif self.kind == "sigstop":
            self.own.stop_signal()
        elif self.kind == "oom":
            admin.config_set("maxmemory-policy", "noeviction")
            admin.set("filler", b"x" * 1_000_000)
            admin.config_set("maxmemory", "1")
        elif self.kind.startswith("noscript"):
            admin.script_flush()
        elif self.kind == "acl":
            admin.execute_command("ACL", "SETUSER", "worker", "-evalsha")

    def end(self) -> None:
        admin = self.own.admin
        if self.kind == "blackhole":
            assert self.proxy is not None
            self.proxy.swallow = False
        elif self.kind == "sigstop":
            self.own.continue_signal()
        elif self.kind == "oom":
            admin.config_set("maxmemory", "0")
            admin.delete("filler")
        elif self.kind == "noscript-no-load":
            load_scripts(admin)  # what an operator (or `distbreaker diagnose`) does
        elif self.kind == "acl":
            admin.execute_command("ACL", "SETUSER", "worker", "+evalsha")

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()


@pytest.mark.parametrize(
    "kind", ["blackhole", "sigstop", "oom", "noscript", "noscript-no-load", "acl"]
)
def test_a_probe_outcome_lost_to_one_store_error_is_sent_once_redis_answers(
    own_redis: OwnRedis, prefix: str, consistency: str, kind: str
) -> None:
    """Before: the lease stayed until probe_timeout (30 s): the fleet was refused although
    the upstream had recovered. Now the outcome waits in the process and is sent again."""
    fault = Fault(own_redis, kind)
    config = BreakerConfig(
        key_prefix=prefix,
        consistency=consistency,
        failure_threshold=1,
        reset_timeout=0.05,
        probe_timeout=30,
    )
    prober = Breaker(NAME, distbreaker.connect(fault.worker_url), config)
    fleet = Breaker(NAME, distbreaker.connect(own_redis.url, timeout=2.0), config)
    assert prober.execute(down, fallback=lambda: "fallback") == "fallback"
    wait_until(
        lambda: fleet.status().time_until_reset == 0 and prober.known_refusal() is None,
        5,
        "the reset timeout passes",
    )

    def probe() -> str:
        fault.start()
        return "recovered"

    try:
        assert prober.execute(probe) == "recovered"  # admitted as the one probe
        if kind in ("noscript-no-load", "acl"):  # refused by the ACL: Redis answers, no outage
            assert prober.store_ok
        elif kind != "noscript":  # redis-py reloads the scripts itself after a plain flush
            assert not prober.store_ok  # its record failed
        if kind not in ("noscript", "sigstop"):  # (nobody reaches a stopped server)
            assert fleet.execute(ok, fallback=lambda: "refused") == "refused"  # lease held
    finally:
        fault.end()
    took = wait_until(
        lambda: fleet.execute(ok, fallback=lambda: "refused") == "ok", 10, "the fleet calls"
    )
    print(f"\n{kind}/{consistency}: fleet admitted {took:.3f}s after the fault ended")
    assert took < 2.0  # about one back-off, not probe_timeout
    status = fleet.status()
    assert (status.state, status.reason, status.probes_in_flight) == (
        "closed",
        "probe_succeeded",
        0,
    )
    wait_until(lambda: prober.store_ok, 5, "the prober resumes shared mode")
    fault.close()


# -- defect 3: a health check polling status() during an outage -----------------------

STORE_TIMEOUT = 0.25


def test_polling_status_during_an_outage_neither_waits_nor_stretches_the_backoff(
    own_redis: OwnRedis, prefix: str
) -> None:
    """Before: every ``status()`` cost a store timeout against the hung server and doubled
    the back-off; with 3 of them, healthy calls were refused for 8 s after Redis was back."""
    client = distbreaker.connect(own_redis.url, timeout=STORE_TIMEOUT)
    config = BreakerConfig(key_prefix=prefix, consistency="strict", failure_threshold=3)
    breaker = Breaker(NAME, client, config)
    assert breaker.execute(ok) == "ok"
    own_redis.stop_signal()
    for _ in range(3):  # the local shadow opens: healthy calls are refused meanwhile
        assert breaker.execute(down, fallback=lambda: "fallback") == "fallback"
    assert breaker.execute(ok, fallback=lambda: "refused") == "refused"
    polls, slow = 0, 0
    outage_ends = time.monotonic() + 2.5
    while time.monotonic() < outage_ends:  # a health check polling every 20 ms
        started = time.perf_counter()
        assert not breaker.status().store_ok
        slow += time.perf_counter() - started >= STORE_TIMEOUT * 0.8
        polls += 1
        time.sleep(0.02)  # the poller's own pace, not a wait for anything
    print(f"\n{polls} status() polls during the outage, {slow} of them asked Redis")
    assert slow <= 2  # at most one store timeout per back-off period
    own_redis.continue_signal()
    refused = 0

    def healthy_call_passes() -> bool:
        nonlocal refused
        passed = breaker.execute(ok, fallback=lambda: "refused") == "ok"
        refused += not passed
        return passed

    took = wait_until(healthy_call_passes, 10, "healthy calls pass again")
    print(f"healthy calls pass {took:.3f}s after Redis is back ({refused} refused meanwhile)")
    assert took < 1.0
    assert breaker.store_ok


# -- defect 4: shared mode resumes fast after any fault ------------------------------


def kill_in_flight(own: OwnRedis, breaker: Breaker) -> None:
    """CLIENT KILL TYPE normal while the breaker's record is in flight (a connection killed
    between commands is replaced by redis-py unnoticed): writes are paused, the record
    waits, the connections are killed, the record fails."""
    admin = own.admin
    admin.client_pause(5000, all=False)
    failed: list[str] = []
    call = threading.Thread(
        target=lambda: failed.append(breaker.execute(down, fallback=lambda: "fallback"))
    )
    call.start()

    def record_waits() -> bool:
        return any(c.get("name") == "victim" and "b" in c["flags"] for c in admin.client_list())

    try:
        wait_until(record_waits, 5, "the record waits behind the pause")
        admin.client_kill_filter(_type="normal", skipme=True)
        call.join(5)
    finally:
        admin.client_unpause()
    assert failed == ["fallback"]


@pytest.mark.parametrize("fault", ["sigkill-restart", "sigstop-sigcont", "client-kill"])
def test_shared_mode_resumes_well_under_a_second_after_redis_answers(
    own_redis: OwnRedis, prefix: str, consistency: str, fault: str
) -> None:
    timeout = 1.0 if fault == "client-kill" else STORE_TIMEOUT
    client = distbreaker.connect(own_redis.url, timeout=timeout, client_name="victim")
    breaker = Breaker(NAME, client, BreakerConfig(key_prefix=prefix, consistency=consistency))
    assert breaker.execute(down, fallback=lambda: "fallback") == "fallback"  # record.lua
    if fault == "client-kill":
        kill_in_flight(own_redis, breaker)  # Redis answers again at once
        answered = time.monotonic()
    else:
        if fault == "sigkill-restart":
            own_redis.kill()
        else:
            own_redis.stop_signal()
        assert breaker.execute(down, fallback=lambda: "fallback") == "fallback"
        assert not breaker.store_ok
        spent = 0.0
        for _ in range(50):  # calls meanwhile cost at most one store timeout in all
            started = time.perf_counter()
            breaker.execute(ok, fallback=lambda: "fallback")
            spent += time.perf_counter() - started
        assert spent < 2 * STORE_TIMEOUT
        if fault == "sigkill-restart":
            own_redis.restart()  # returns once the new server answers a PING
        else:
            own_redis.continue_signal()
        answered = time.monotonic()
    wait_until(lambda: breaker.store_ok, 10, "shared mode resumes")
    took = time.monotonic() - answered
    print(f"\n{fault}/{consistency}: shared mode resumed {took:.3f}s after Redis answered")
    assert took < 0.8
    before = breaker.status().failures_total
    assert breaker.execute(down, fallback=lambda: "fallback") == "fallback"
    assert breaker.status().failures_total == before + 1  # that failure reached Redis


def test_a_fleet_wide_force_open_right_after_a_restart_is_obeyed_within_a_second(
    own_redis: OwnRedis, prefix: str
) -> None:
    """Before: workers stayed on their local shadows for 2-5 s after the restart and let
    calls through although an operator had isolated the upstream."""
    config = BreakerConfig(key_prefix=prefix)  # cached, the default
    workers = [
        Breaker(NAME, distbreaker.connect(own_redis.url, timeout=STORE_TIMEOUT), config)
        for _ in range(3)
    ]
    strict = config.model_copy(update={"consistency": "strict"})
    workers.append(Breaker(NAME, distbreaker.connect(own_redis.url, timeout=STORE_TIMEOUT), strict))
    assert [w.execute(ok) for w in workers] == ["ok"] * 4
    own_redis.kill()
    for worker in workers:  # each notices (a failure always goes to Redis)
        assert worker.execute(down, fallback=lambda: "fallback") == "fallback"
    assert [w.execute(ok) for w in workers] == ["ok"] * 4  # local shadows: fail_open
    assert not any(w.store_ok for w in workers)
    own_redis.restart()
    operator = Breaker(NAME, own_redis.admin, strict)
    operator.force_open(actor="ops", reason="isolate after the restart")
    ordered = time.monotonic()
    pending = set(range(len(workers)))

    def all_refuse() -> bool:
        for i in list(pending):
            if workers[i].execute(ok, fallback=lambda: "refused") == "refused":
                pending.discard(i)
        return not pending

    wait_until(all_refuse, 10, "every worker refuses")
    took = time.monotonic() - ordered
    print(f"\nforce_open after a restart obeyed by every worker within {took:.3f}s")
    assert took < 1.3
    assert all(w.store_ok for w in workers)


# -- defect 6: the events channel is not trusted --------------------------------------


def event(**fields: Any) -> str:
    base = {"name": NAME, "from": "closed", "to": "open", "generation": 1, "at": 1, "reason": ""}
    return json.dumps({**base, **fields})


FORGED = [
    event(name="svc\x1b[2J\x1b[31mpwned"),
    event(reason="\x1b]0;title\x07 threshold"),
    event(actor="ops\x1b[8m"),
    event(at=10**30),
    event(at=2**53 - 1),  # a bounded integer, but no date can show it
    event(open_until=2**53 - 1),
    event(generation=-1),
    event(generation=1.5),
    event(to="banana"),
    event(reason="x" * 5000),
    "not json",
    "[1, 2]",
    json.dumps({"name": NAME}),
]


def test_watch_ignores_forged_events_and_prints_no_escape_byte(
    client: redis.Redis, keyspace: str, redis_url: str
) -> None:
    """Before: an ESC byte in an event reached the terminal raw, and ``at: 10**30`` ended
    the watch with OverflowError."""
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("DISTBREAKER_REDIS_URL", None)
    command = [sys.executable, "-m", "distbreaker", "watch", "--count", "1", "--timeout", "60"]
    watch = subprocess.Popen(
        [*command, "--redis-url", redis_url, "--prefix", keyspace],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        channel = events_channel(keyspace)
        wait_for_subscribers(client, channel, 1, timeout=30)
        for message in FORGED:
            client.publish(channel, message)
        breaker = Breaker(NAME, client, settings(keyspace, failure_threshold=1))
        breaker.execute(down, fallback=lambda: "fallback")  # one real transition
        stdout, stderr = watch.communicate(timeout=60)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 0, stderr
    assert b"\x1b" not in stdout + stderr
    [line] = stdout.decode().splitlines()
    assert f"  {NAME}  closed -> open  generation 1  (failure_threshold)" in line


class SeenEvents:
    """A hook: the events this process's subscribers delivered (after the caches saw them)."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_transition(self, seen: Any) -> None:
        self.events.append(seen)


@pytest.fixture
def seen() -> Iterator[SeenEvents]:
    hook = SeenEvents()
    distbreaker.hooks.add_hook(hook)
    yield hook
    distbreaker.hooks.remove_hook(hook)


def test_a_forged_closed_event_never_makes_cached_workers_admit(
    client: redis.Redis, keyspace: str, seen: SeenEvents, redis_url: str
) -> None:
    """Before: a ``closed`` event with a huge generation made cached workers admit calls to
    an open breaker for up to cache_ttl. Now only refusing news is taken as it comes."""
    config = settings(keyspace, failure_threshold=1, reset_timeout=60, cache_ttl=30)
    tripper = Breaker(NAME, client, config)
    worker = Breaker(NAME, distbreaker.connect(redis_url, timeout=2.0), config)
    assert tripper.execute(down, fallback=lambda: "fallback") == "fallback"
    assert worker.execute(ok, fallback=lambda: "refused") == "refused"  # cached: open
    channel = events_channel(keyspace)
    wait_for_subscribers(client, channel, 2)
    upstream_calls = 0

    def upstream() -> str:
        nonlocal upstream_calls
        upstream_calls += 1
        return "called"

    huge = 2**53 - 1
    forged = event(**{"from": "open", "to": "closed", "generation": huge, "at": now_ms(client)})
    client.publish(channel, forged)
    wait_until(lambda: any(e.generation == huge for e in seen.events), 10, "the forgery arrives")
    for breaker in (worker, tripper):
        assert [breaker.execute(upstream, fallback=lambda: "refused") for _ in range(5)] == [
            "refused"
        ] * 5
    assert upstream_calls == 0
    assert worker.status().state == "open"


def test_a_forged_open_event_costs_at_most_cache_ttl_of_refusals(
    client: redis.Redis, keyspace: str, seen: SeenEvents
) -> None:
    config = settings(keyspace, cache_ttl=0.3)
    worker = Breaker(NAME, client, config)
    assert worker.execute(ok) == "ok"
    channel = events_channel(keyspace)
    wait_for_subscribers(client, channel, 1)
    at = now_ms(client)
    huge = 2**53 - 1
    client.publish(channel, event(generation=huge, at=at, open_until=at + 10 * DAY_MS))
    wait_until(lambda: any(e.generation == huge for e in seen.events), 10, "the forgery arrives")
    started = time.monotonic()
    wait_until(lambda: worker.execute(ok, fallback=lambda: "refused") == "ok", 5, "calls pass")
    assert time.monotonic() - started < 0.3 + 0.5
    assert worker.status().state == "closed"


# -- defect 7: bad input is refused before any I/O -------------------------------------


@pytest.mark.parametrize(
    "seconds", [math.inf, -math.inf, math.nan, 1e300, -1, 7 * 86_400 + 1, True, "60", None]
)
def test_hold_open_refuses_bad_seconds_before_any_io(
    client: redis.Redis, keyspace: str, seconds: Any
) -> None:
    """Before: ``hold_open(inf)`` raised OverflowError and ``hold_open(1e300)`` reached Redis."""
    breaker = Breaker(NAME, client, settings(keyspace))
    with pytest.raises((ValueError, TypeError)):
        breaker.hold_open(seconds)
    with pytest.raises((ValueError, TypeError)):
        breaker.hold_open(seconds, "deploy", actor="ops")  # the operator's path too
    assert list(client.scan_iter(match=f"{keyspace}:*")) == []


@pytest.mark.parametrize(
    "field", ["failure_threshold", "half_open_max_calls", "success_threshold", "window"]
)
def test_a_bool_is_not_a_number_of_anything(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        BreakerConfig(**{field: True})
