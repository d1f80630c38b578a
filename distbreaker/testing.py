"""pytest plugin for users of distbreaker (installed with the ``[test]`` extra).

Fixtures:
- ``redis_url`` (session): a real Redis, the first of these that works:
  1. ``$DISTBREAKER_TEST_REDIS_URL`` when set (CI sets it; nothing to start);
  2. a testcontainers Redis when a Docker engine answers: ``$DISTBREAKER_TEST_REDIS_IMAGE``
     if set, else an image built ``FROM scratch`` from the host's ``redis-server``
     (``distbreaker.containers``, no registry needed), else ``redis:7-alpine`` (pulled);
  3. a private ``redis-server`` on a free loopback port when the binary is installed;
  4. else the test is skipped, with the reason.
- ``redis_container`` (session): a testcontainers Redis of its own (for fault tests that
  pause or stop it); skipped without an engine, failed instead when
  ``$DISTBREAKER_REQUIRE_DOCKER=1``.
- ``breaker_factory``: builds ``Breaker``s on ``redis_url`` with unique names and key
  prefixes, and deletes their keys afterwards.
- ``flaky_upstream``: a started ``distbreaker.upstream.FlakyUpstream`` on loopback; set its
  ``mode`` (ok / error / reset / hang / rate_limited) during the test.

Where the testcontainers reaper (Ryuk) image is not on the engine and
``TESTCONTAINERS_RYUK_DISABLED`` is unset, the reaper is disabled: it cannot be pulled
without a registry, and these fixtures remove their containers themselves.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from distbreaker.breaker import Breaker
from distbreaker.config import BreakerConfig
from distbreaker.store import STORE_ERRORS, connect
from distbreaker.upstream import FlakyUpstream

REDIS_URL_ENV = "DISTBREAKER_TEST_REDIS_URL"
REDIS_IMAGE_ENV = "DISTBREAKER_TEST_REDIS_IMAGE"
REQUIRE_DOCKER_ENV = "DISTBREAKER_REQUIRE_DOCKER"
# Only where no image can be built from the host: the engine pulls it as usual.
PULLED_REDIS_IMAGE = "redis:7-alpine"


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
            except STORE_ERRORS:  # not listening yet
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


def require_docker() -> bool:
    """True when ``$DISTBREAKER_REQUIRE_DOCKER=1``: a missing engine fails instead of skips."""
    return os.environ.get(REQUIRE_DOCKER_ENV) == "1"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test, visibly; fail it instead where Docker is required."""
    if require_docker():
        pytest.fail(f"{reason} ({REQUIRE_DOCKER_ENV}=1)", pytrace=False)
    pytest.skip(reason)


def docker_unavailable() -> str | None:
    """Why no Docker engine can be used here, or ``None`` when one answers."""
    try:
        import docker
    except ImportError:
        return "the docker package is not installed (pip install 'distbreaker[test]')"
    try:
        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as error:  # DockerException, requests errors: all mean "no engine"
        return f"no Docker engine answers ({type(error).__name__}: {error})"
    return None


def _redis_container_class() -> Any:
    try:
        from testcontainers.community.redis import RedisContainer
    except ImportError:  # testcontainers before 4.10 had it at the old path
        from testcontainers.redis import RedisContainer
    return RedisContainer


def _disable_unreachable_reaper() -> None:
    """Turn off Ryuk when its image is not on the engine and the user said nothing."""
    if "TESTCONTAINERS_RYUK_DISABLED" in os.environ:
        return
    import docker
    import docker.errors
    from testcontainers.core.config import testcontainers_config

    client = docker.from_env(timeout=5)
    try:
        client.images.get(testcontainers_config.ryuk_image)
    except docker.errors.ImageNotFound:
        testcontainers_config.ryuk_disabled = True
    finally:
        client.close()


def redis_test_image() -> str:
    """``$DISTBREAKER_TEST_REDIS_IMAGE``; else an image built from the host's Linux
    ``redis-server``; else (no binary, no ``ldd``: macOS, say) the registry's ``redis``."""
    image = os.environ.get(REDIS_IMAGE_ENV)
    if image:
        return image
    from distbreaker.containers import ImageBuildError, build_redis_image

    try:
        return build_redis_image()
    except ImageBuildError:
        return PULLED_REDIS_IMAGE


def start_redis_container(image: str | None = None) -> Any:
    """A started testcontainers ``RedisContainer``; the caller must ``stop()`` it."""
    _disable_unreachable_reaper()
    container = _redis_container_class()(image or redis_test_image())
    try:
        container.start()
    except BaseException:
        with contextlib.suppress(Exception):  # it may never have been created
            container.stop()
        raise
    return container


def container_url(container: Any) -> str:
    host = container.get_container_host_ip()
    return f"redis://{host}:{container.get_exposed_port(container.port)}/0"


@pytest.fixture(scope="session")
def redis_container() -> Iterator[Any]:
    """A testcontainers Redis for this session, for tests that pause or stop it."""
    reason = docker_unavailable()
    if reason is not None:
        skip_or_fail(reason)
    try:
        container = start_redis_container()
    except Exception as error:
        skip_or_fail(f"cannot start a Redis container: {type(error).__name__}: {error}")
    try:
        yield container
    finally:
        container.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A URL of a real Redis server for this test session (see the module doc for which)."""
    url = os.environ.get(REDIS_URL_ENV)
    if url:
        yield url
        return
    container = None
    if docker_unavailable() is None:
        try:
            container = start_redis_container()
        except Exception as error:  # no image, engine refuses: try the next source
            warnings.warn(
                f"distbreaker: no Redis container ({error}); trying redis-server", stacklevel=1
            )
    if container is not None:
        try:
            yield container_url(container)
        finally:
            container.stop()
        return
    binary = find_redis_server()
    if binary is None:
        pytest.skip(
            f"no real Redis: set {REDIS_URL_ENV}, start a Docker engine or install redis-server"
        )
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


@pytest.fixture
def flaky_upstream() -> Iterator[FlakyUpstream]:
    """An HTTP upstream on loopback, answering ``ok`` until the test sets ``.mode``."""
    with FlakyUpstream("ok", hang_seconds=5.0) as upstream:
        yield upstream
