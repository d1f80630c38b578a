"""pytest plugin for users of distbreaker (installed with the ``[test]`` extra).

Fixtures:
- ``redis_url``: a real Redis for the session: ``$DISTBREAKER_TEST_REDIS_URL`` when set,
  else a private ``redis-server`` on a free loopback port when the binary is on PATH,
  else the test is skipped with the reason.
- ``breaker_factory``: builds ``Breaker``s on that Redis with unique names and key
  prefixes, and deletes their keys afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from distbreaker.breaker import Breaker
from distbreaker.config import BreakerConfig
from distbreaker.store import connect

REDIS_URL_ENV = "DISTBREAKER_TEST_REDIS_URL"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A private ``redis-server`` on loopback, with no persistence, for one test session."""

    def __init__(self, binary: str = "redis-server", port: int | None = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ]
        self.process = subprocess.Popen(  # noqa: S603 - fixed argument list, no shell
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        client = connect(self.url)
        while time.monotonic() < deadline:
            try:
                client.ping()
                client.close()
                return self
            except OSError:
                time.sleep(0.05)
            except Exception:  # redis ConnectionError while it starts
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def find_redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    debian = Path("/usr/bin/redis-server")
    return str(debian) if debian.exists() else None


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A URL of a real Redis server for this test session."""
    url = os.environ.get(REDIS_URL_ENV)
    if url:
        yield url
        return
    binary = find_redis_server()
    if binary is None:
        pytest.skip(f"no real Redis: set {REDIS_URL_ENV} or install redis-server")
    server = RedisServer(binary).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def breaker_factory(redis_url: str) -> Iterator[Callable[..., Breaker]]:
    """Build breakers with unique names on the session's Redis; their keys go afterwards."""
    client = connect(redis_url, timeout=2.0)
    prefixes: list[str] = []

    def build(
        name: str | None = None, config: BreakerConfig | None = None, **kwargs: Any
    ) -> Breaker:
        settings = dict((config or BreakerConfig()).model_dump())
        prefix = f"test-{uuid.uuid4().hex[:10]}"
        settings["key_prefix"] = prefix
        prefixes.append(prefix)
        return Breaker(name or "upstream", client, BreakerConfig(**settings), **kwargs)

    yield build
    for prefix in prefixes:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        if keys:
            client.delete(*keys)
    client.close()
