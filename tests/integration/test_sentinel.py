"""A breaker on a Sentinel-managed client: a master, a replica and one Sentinel on loopback
(ports 7160-7162). The master is killed; Sentinel promotes the replica; calls go on through
the local shadow meanwhile, and the replicated breaker state is there afterwards.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from distbreaker import Breaker, BreakerConfig
from distbreaker.store import breaker_keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MASTER, REPLICA, SENTINEL = 7160, 7161, 7162
SERVICE = "distbreaker-test"
STORE_TIMEOUT = 0.25


def failing() -> None:
    raise ConnectionError("upstream down")


class SentinelSetup:
    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="distbreaker-sentinel-"))
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def start(self) -> SentinelSetup:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is needed for the Sentinel test")
        self._spawn(binary, MASTER, [])
        self._spawn(binary, REPLICA, ["--replicaof", "127.0.0.1", str(MASTER)])
        config = self.workdir / "sentinel.conf"
        config.write_text(
            f"port {SENTINEL}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {MASTER} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 3000\n"
        )
        log = (self.workdir / "sentinel.log").open("wb")
        self.processes[SENTINEL] = subprocess.Popen(
            [binary, str(config), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
        )
        self._wait(lambda: self._replica_synced(), "the replica did not sync")
        self._wait(lambda: self._sentinel_sees_replica(), "Sentinel did not find the replica")
        return self

    def _spawn(self, binary: str, port: int, extra: list[str]) -> None:
        folder = self.workdir / str(port)
        folder.mkdir()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
        args += ["--save", "", "--appendonly", "no", *extra]
        log = (folder / "redis.log").open("wb")
        self.processes[port] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    @staticmethod
    def _wait(check: Any, message: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError(message)

    def _replica_synced(self) -> bool:
        with redis.Redis(port=REPLICA, socket_timeout=1) as replica:
            return str(replica.info("replication").get("master_link_status")) == "up"

    def _sentinel_sees_replica(self) -> bool:
        with redis.Redis(port=SENTINEL, socket_timeout=1) as sentinel:
            return bool(sentinel.sentinel_slaves(SERVICE))

    def kill(self, port: int) -> None:
        self.processes[port].send_signal(signal.SIGKILL)
        self.processes[port].wait(timeout=10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture
def sentinel_setup() -> Iterator[SentinelSetup]:
    setup = SentinelSetup().start()
    yield setup
    setup.stop()


def test_breaker_on_a_sentinel_client_survives_a_failover(sentinel_setup: SentinelSetup) -> None:
    timeouts = {"socket_timeout": STORE_TIMEOUT, "socket_connect_timeout": STORE_TIMEOUT}
    sentinel_class: Any = Sentinel  # redis-py's sentinel module is untyped
    sentinel = sentinel_class([("127.0.0.1", SENTINEL)], sentinel_kwargs=timeouts, **timeouts)
    client = sentinel.master_for(SERVICE, retry=Retry(NoBackoff(), 0), **timeouts)
    prefix = f"se-{uuid.uuid4().hex[:10]}"
    config = BreakerConfig(key_prefix=prefix, failure_threshold=5, consistency="strict")
    breaker = Breaker("orders", client, config)
    for _ in range(3):
        breaker.execute(failing, fallback=lambda: None)
    assert client.execute_command("WAIT", 1, 1000) >= 1

    sentinel_setup.kill(MASTER)
    killed_at = time.monotonic()
    shared: list[bool] = []
    durations: list[float] = []
    while time.monotonic() - killed_at < 30:
        started = time.perf_counter()
        assert breaker.execute(lambda: "ok", fallback=lambda: "fallback") == "ok"
        shared.append(breaker.status().store_ok)
        durations.append(time.perf_counter() - started)
        if shared[-1] and sentinel.discover_master(SERVICE)[1] == REPLICA:
            break
        time.sleep(0.1)

    assert False in shared, "the failover was never felt"
    assert shared[-1] is True
    assert max(durations) < 2.0, max(durations)
    assert sentinel.discover_master(SERVICE) == ("127.0.0.1", REPLICA)
    status = breaker.status()
    assert (status.state, status.failure_count, status.store_ok) == ("closed", 3, True)
    for _ in range(2):
        breaker.execute(failing, fallback=lambda: None)
    assert client.hget(breaker_keys(prefix, "orders")[0], "state") == b"open"
    print(
        f"sentinel failover: {time.monotonic() - killed_at:.1f} s, {len(shared)} calls, "
        f"{shared.count(False)} in local mode, slowest {max(durations) * 1000:.0f} ms"
    )
