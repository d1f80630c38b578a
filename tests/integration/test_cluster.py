"""Breakers on a real Redis Cluster of local ``redis-server`` processes (ports 7100-7199).

A 3-master cluster for slots, spread and events; a 3-master + 3-replica cluster for the
failover: a master is killed, its replica is promoted, calls go on in the meantime
(``fail_open``: the local shadow breaker) and the breaker is consistent afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio.cluster
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from distbreaker import AsyncBreaker, Breaker, BreakerConfig, CircuitOpenError
from distbreaker.diagnostics import get_network_status, scan_breakers
from distbreaker.store import breaker_keys, events_channel, script_source
from tests.conftest import FakeClock

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

STORE_TIMEOUT = 0.25
NODE_TIMEOUT_MS = 1000


class LocalCluster:
    """``redis-server --cluster-enabled yes`` processes on loopback, joined by redis-cli."""

    def __init__(self, first_port: int, masters: int = 3, replicas: int = 0) -> None:
        self.ports = list(range(first_port, first_port + masters * (1 + replicas)))
        self.replicas = replicas
        self.workdir = Path(tempfile.mkdtemp(prefix="distbreaker-cluster-"))
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, timeout: float = 30.0) -> LocalCluster:
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            pytest.skip("redis-server and redis-cli are needed for the cluster tests")
        for port in self.ports:
            self._start_node(binary, port)
        for port in self.ports:
            self._wait_for_ping(port, timeout)
        create = [cli, "--cluster", "create"]
        create += [f"127.0.0.1:{port}" for port in self.ports]
        create += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        subprocess.run(create, check=True, capture_output=True, timeout=timeout)
        self.wait_until_ok(timeout)
        self.wait_for_replication(timeout)
        return self

    def wait_for_replication(self, timeout: float) -> None:
        """Every replica has synced with its master: only then can it be promoted."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            links = [self._replica_link(port) for port in self.alive()]
            if links.count("up") == len(self.ports) - len(self.masters()):
                return
            time.sleep(0.1)
        raise RuntimeError("cluster replicas did not sync")

    def _replica_link(self, port: int) -> str:
        with self.node(port) as node:
            info = node.info("replication")
        return str(info.get("master_link_status", "")) if info.get("role") == "slave" else ""

    def _start_node(self, binary: str, port: int) -> None:
        folder = self.workdir / str(port)
        folder.mkdir(exist_ok=True)
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
        args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        args += ["--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--save", ""]
        args += ["--appendonly", "no", "--protected-mode", "no"]
        log = (folder / "redis.log").open("wb")
        self.processes[port] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)

    def _wait_for_ping(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with self.node(port) as node:
                    node.ping()
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"cluster node on port {port} did not start")

    def alive(self) -> list[int]:
        return [port for port, p in self.processes.items() if p.poll() is None]

    def wait_until_ok(self, timeout: float = 30.0) -> None:
        """Every live node sees ``cluster_state:ok`` and the same number of masters."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._node_ok(port) for port in self.alive()):
                return
            time.sleep(0.1)
        raise RuntimeError("cluster did not reach cluster_state:ok")

    def _node_ok(self, port: int) -> bool:
        try:
            with self.node(port) as node:
                info = node.cluster("INFO")
        except redis.RedisError:
            return False
        return str(info.get("cluster_state")) == "ok" if isinstance(info, dict) else False

    def masters(self) -> dict[int, list[tuple[int, int]]]:
        """Live master ports and the slot ranges each serves."""
        with self.node(self.alive()[0]) as node:
            slots = node.execute_command("CLUSTER SLOTS")
        result: dict[int, list[tuple[int, int]]] = {}
        for start, end, master, *_ in slots:
            result.setdefault(int(master[1]), []).append((int(start), int(end)))
        return result

    def replica_of(self, master_port: int) -> int:
        for port in self.alive():
            with self.node(port) as node:
                info = node.info("replication")
            if info.get("role") == "slave" and int(info["master_port"]) == master_port:
                return port
        raise LookupError(f"no replica of {master_port}")

    def kill(self, port: int) -> None:
        process = self.processes[port]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def client(self, **options: Any) -> Any:
        options.setdefault("socket_timeout", STORE_TIMEOUT)
        options.setdefault("socket_connect_timeout", STORE_TIMEOUT)
        options.setdefault("retry", Retry(NoBackoff(), 1))
        node: Any = ClusterNode  # redis-py's cluster module is untyped
        return RedisCluster(startup_nodes=[node("127.0.0.1", p) for p in self.ports], **options)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    own = LocalCluster(7100, masters=3).start()
    yield own
    own.stop()


@pytest.fixture
def cluster_client(cluster: LocalCluster) -> Iterator[Any]:
    client = cluster.client()
    yield client
    client.close()


def unique_prefix() -> str:
    return f"cl-{uuid.uuid4().hex[:10]}"


def failing() -> None:
    raise ConnectionError("upstream down")


def test_one_breakers_keys_share_one_slot(cluster_client: Any) -> None:
    prefix = unique_prefix()
    breaker = Breaker("payments", cluster_client, BreakerConfig(key_prefix=prefix))
    breaker.execute(failing, fallback=lambda: None)
    slots = {cluster_client.keyslot(key) for key in breaker_keys(prefix, "payments")}
    assert len(slots) == 1
    # the server agrees with the client's hashing
    server_slot = cluster_client.execute_command(
        "CLUSTER KEYSLOT", breaker_keys(prefix, "payments")[0]
    )
    assert slots == {int(server_slot)}
    assert cluster_client.exists(breaker_keys(prefix, "payments")[0]) == 1


def test_breaker_trips_refuses_and_closes_on_a_cluster(
    cluster_client: Any, clock: FakeClock
) -> None:
    config = BreakerConfig(key_prefix=unique_prefix(), failure_threshold=3, reset_timeout=20)
    breaker = Breaker("search", cluster_client, config, clock=clock)
    for _ in range(3):
        with pytest.raises(ConnectionError):
            breaker.execute(failing)
    with pytest.raises(CircuitOpenError):
        breaker.execute(lambda: "never")
    clock.advance(21)
    assert breaker.execute(lambda: "probe") == "probe"
    status = breaker.status()
    assert (status.state, status.store_ok, status.opens_total) == ("closed", True, 1)


def test_many_breakers_spread_over_every_master(cluster: LocalCluster, cluster_client: Any) -> None:
    prefix = unique_prefix()
    config = BreakerConfig(key_prefix=prefix, failure_threshold=1)
    names = [f"service-{i}" for i in range(30)]
    for name in names:
        Breaker(name, cluster_client, config).execute(failing, fallback=lambda: None)
    owners = {
        int(cluster_client.get_node_from_key(breaker_keys(prefix, name)[0]).port) for name in names
    }
    assert owners == set(cluster.masters())
    for name in names:
        assert Breaker(name, cluster_client, config).status().state == "open"


def test_events_arrive_through_cluster_pubsub(cluster_client: Any) -> None:
    prefix = unique_prefix()
    pubsub = cluster_client.pubsub()
    pubsub.subscribe(events_channel(prefix))
    deadline = time.monotonic() + 5
    while pubsub.get_message(timeout=0.1) is None and time.monotonic() < deadline:
        pass  # the subscribe confirmation
    breaker = Breaker("mail", cluster_client, BreakerConfig(key_prefix=prefix, failure_threshold=1))
    breaker.execute(failing, fallback=lambda: None)
    message = None
    while message is None and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
    pubsub.close()
    assert message is not None
    assert message["type"] == "message"
    assert b'"to":"open"' in message["data"]
    assert b'"name":"mail"' in message["data"]


def test_cached_breakers_learn_other_workers_transitions_on_a_cluster(
    cluster: LocalCluster,
) -> None:
    config = BreakerConfig(key_prefix=unique_prefix(), failure_threshold=1, cache_ttl=30)
    first_client, second_client = cluster.client(), cluster.client()
    try:
        first = Breaker("ledger", first_client, config)
        second = Breaker("ledger", second_client, config)
        assert first.execute(lambda: "warm") == "warm"  # caches "closed" and subscribes
        deadline = time.monotonic() + 5
        with pytest.raises(ConnectionError):
            second.execute(failing)
        while time.monotonic() < deadline:
            try:
                first.execute(lambda: "admitted")
            except CircuitOpenError:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the cached breaker never saw the open event")
    finally:
        first_client.close()
        second_client.close()


async def test_async_breaker_on_an_asyncio_cluster(cluster: LocalCluster, clock: FakeClock) -> None:
    client = redis.asyncio.cluster.RedisCluster(
        host="127.0.0.1",
        port=cluster.ports[0],
        socket_timeout=STORE_TIMEOUT,
        socket_connect_timeout=STORE_TIMEOUT,
    )
    prefix = unique_prefix()
    breaker = AsyncBreaker(
        "async", client, BreakerConfig(key_prefix=prefix, failure_threshold=2), clock=clock
    )

    async def failing_call() -> None:
        raise ConnectionError("upstream down")

    try:
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await breaker.execute(failing_call)
        with pytest.raises(CircuitOpenError):
            await breaker.execute(failing_call)
        status = await breaker.status()
        assert (status.state, status.store_ok) == ("open", True)
        assert await client.hget(breaker_keys(prefix, "async")[0], "state") == b"open"
    finally:
        await client.aclose()


# -- failover -----------------------------------------------------------------------------


@pytest.fixture
def replicated_cluster() -> Iterator[LocalCluster]:
    own = LocalCluster(7110, masters=3, replicas=1).start()
    yield own
    own.stop()


@pytest.mark.slow
def test_failover_calls_go_on_and_the_breaker_is_consistent_after(
    replicated_cluster: LocalCluster,
) -> None:
    cluster = replicated_cluster
    client = cluster.client()
    prefix = unique_prefix()
    # strict: every call asks its master, so the failover is felt by every call
    config = BreakerConfig(
        key_prefix=prefix, failure_threshold=5, reset_timeout=60, consistency="strict"
    )
    breaker = Breaker("billing", client, config)
    state_key = breaker_keys(prefix, "billing")[0]
    for _ in range(3):
        breaker.execute(failing, fallback=lambda: None)
    owner = int(client.get_node_from_key(state_key).port)
    with cluster.node(owner) as master:  # the failures reached the replica before the kill
        assert master.execute_command("WAIT", 1, 1000) >= 1
    before = breaker.status()
    assert (before.state, before.failure_count) == ("closed", 3)
    # scripts are not replicated: the promoted replica will answer NOSCRIPT once, and
    # redis-py's Script object loads the script again by itself
    admit_sha = hashlib.sha1(script_source("admit").encode()).hexdigest()
    with cluster.node(cluster.replica_of(owner)) as replica:
        assert replica.script_exists(admit_sha) == [False]

    cluster.kill(owner)
    killed_at = time.monotonic()
    durations: list[float] = []
    results: list[str] = []
    shared: list[bool] = []
    while time.monotonic() - killed_at < 20:
        started = time.perf_counter()
        results.append(breaker.execute(lambda: "ok", fallback=lambda: "fallback"))
        shared.append(breaker.status().store_ok)
        durations.append(time.perf_counter() - started)
        if shared[-1] and int(client.get_node_from_key(state_key).port) != owner:
            break
        time.sleep(0.05)
    promoted_after = time.monotonic() - killed_at
    cluster.wait_until_ok()

    # calls went on during the failover (some in local mode), none stuck for long
    assert all(result == "ok" for result in results)
    assert False in shared, "the failover was never felt"
    assert shared[-1] is True
    assert max(durations) < 2.0, max(durations)
    new_owner = int(client.get_node_from_key(state_key).port)
    assert new_owner != owner
    assert new_owner in cluster.masters()
    # the replicated failures survived on the promoted replica; the breaker goes on from there
    after = breaker.status()
    assert (after.state, after.failure_count, after.store_ok) == ("closed", 3, True)
    for _ in range(2):
        breaker.execute(failing, fallback=lambda: None)
    assert breaker.status().state == "open"
    assert client.hget(state_key, "state") == b"open"
    client.close()
    print(
        f"failover: promoted after {promoted_after:.1f} s; {len(results)} calls, "
        f"{shared.count(False)} in local mode, slowest {max(durations) * 1000:.0f} ms"
    )


async def test_async_cached_breakers_learn_transitions_on_an_asyncio_cluster(
    cluster: LocalCluster,
) -> None:
    def connect() -> Any:
        return redis.asyncio.cluster.RedisCluster(
            host="127.0.0.1", port=cluster.ports[1], socket_timeout=STORE_TIMEOUT
        )

    config = BreakerConfig(key_prefix=unique_prefix(), failure_threshold=1, cache_ttl=30)
    first_client, second_client = connect(), connect()
    first = AsyncBreaker("inventory", first_client, config)
    second = AsyncBreaker("inventory", second_client, config)

    async def ok() -> str:
        return "ok"

    async def failing_call() -> None:
        raise ConnectionError("upstream down")

    try:
        assert await first.execute(ok) == "ok"  # caches "closed" and subscribes
        await asyncio.sleep(0.3)  # let the subscription reach the server
        with pytest.raises(ConnectionError):
            await second.execute(failing_call)
        for _ in range(100):
            try:
                await first.execute(ok)
            except CircuitOpenError:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the cached async breaker never saw the open event")
    finally:
        await first_client.aclose()
        await second_client.aclose()


# -- operator tools on a cluster ----------------------------------------------------------


def cluster_breakers(cluster_client: Any, prefix: str) -> dict[str, str]:
    """Twelve breakers spread over every master, each with keys; ``service-0`` tripped."""
    config = BreakerConfig(key_prefix=prefix, failure_threshold=2, consistency="strict")
    names = [f"service-{i}" for i in range(12)]
    for name in names:
        Breaker(name, cluster_client, config).execute(failing, fallback=lambda: None)
    Breaker("service-0", cluster_client, config).execute(failing, fallback=lambda: None)
    return {name: "open" if name == "service-0" else "closed" for name in names}


def distbreaker_on_cluster(
    cluster: LocalCluster, prefix: str, *args: str
) -> subprocess.CompletedProcess[str]:
    url = f"redis://127.0.0.1:{cluster.ports[-1]}/0"  # one node: the others are discovered
    where = ["--cluster", "--redis-url", url, "--prefix", prefix]
    return subprocess.run(
        [sys.executable, "-m", "distbreaker", *args, *where],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
        check=False,
    )


def test_status_cli_lists_breakers_from_every_master(
    cluster: LocalCluster, cluster_client: Any
) -> None:
    prefix = unique_prefix()
    expected = cluster_breakers(cluster_client, prefix)
    owners = {
        int(cluster_client.get_node_from_key(breaker_keys(prefix, name)[0]).port)
        for name in expected
    }
    assert owners == set(cluster.masters())
    result = distbreaker_on_cluster(cluster, prefix, "status", "--json")
    assert result.returncode == 0, result.stderr
    shown = {entry["name"]: entry["state"] for entry in json.loads(result.stdout)}
    assert shown == expected


def test_network_status_scans_every_primary(cluster_client: Any) -> None:
    prefix = unique_prefix()
    expected = cluster_breakers(cluster_client, prefix)
    status = get_network_status(cluster_client, prefix=prefix)
    assert status.redis.reachable
    assert status.redis.primaries == 3
    assert status.redis.version not in (None, "unknown")
    assert {name: s.state for name, s in status.breakers.items()} == expected
    assert not status.truncated
    assert not status.healthy  # service-0 is open


def test_the_cluster_scan_shares_its_budget_among_the_primaries(cluster_client: Any) -> None:
    prefix = unique_prefix()
    cluster_breakers(cluster_client, prefix)
    names, truncated = scan_breakers(cluster_client, prefix, budget=3)
    # one key walked per primary: a bounded look, and it says it may have missed some
    assert truncated
    assert len(names) <= 12


def test_diagnose_cli_on_a_cluster_exits_0(cluster: LocalCluster, cluster_client: Any) -> None:
    prefix = unique_prefix()
    cluster_breakers(cluster_client, prefix)
    result = distbreaker_on_cluster(
        cluster, prefix, "diagnose", "--json", "--github-url", "http://127.0.0.1:1/"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["redis"]["primaries"] == 3
    assert set(report["scripts"]) == {"admit", "record", "report", "control", "status"}
    assert len(report["breakers"]) == 12


def test_history_cli_reads_every_masters_streams(
    cluster: LocalCluster, cluster_client: Any
) -> None:
    prefix = unique_prefix()
    expected = cluster_breakers(cluster_client, prefix)
    result = distbreaker_on_cluster(cluster, prefix, "history", "--json")
    assert result.returncode == 0, result.stderr
    shown = {b["name"]: b for b in json.loads(result.stdout)["breakers"]}
    assert {name: b["status"]["state"] for name, b in shown.items()} == expected
    assert [e["to"] for e in shown["service-0"]["entries"]] == ["open"]
    assert all(b["entries"] == [] for name, b in shown.items() if name != "service-0")
