"""pytest plugin for users of distbreaker (installed with the ``[test]`` extra).

Fixtures:
- ``redis_url`` (session): a real Redis, the first of these that works:
  1. ``$DISTBREAKER_TEST_REDIS_URL`` when set (CI sets it; nothing to start);
  2. a testcontainers Redis when a Docker engine answers: ``$DISTBREAKER_TEST_REDIS_IMAGE``
     if set, else an image built ``FROM scratch`` from the host's ``redis-server``
     (``distbreaker.testing.containers``, no registry needed), else ``redis:7-alpine`` (pulled);
  3. a private ``redis-server`` on a free loopback port when the binary is installed;
  4. else the test is skipped, with the reason.
- ``redis_container`` (session): a testcontainers Redis of its own (for fault tests that
  pause or stop it); skipped without an engine, failed instead when
  ``$DISTBREAKER_REQUIRE_DOCKER=1``.
- ``breaker_factory``: builds ``Breaker``s on ``redis_url`` with unique names and key
  prefixes, and deletes their keys afterwards.
- ``flaky_upstream``: a started ``distbreaker.testing.FlakyUpstream`` on loopback; set its
  ``mode`` (ok / error / reset / hang / rate_limited) during the test.

Where the testcontainers reaper (Ryuk) image is not on the engine and
``TESTCONTAINERS_RYUK_DISABLED`` is unset, the reaper is disabled: it cannot be pulled
without a registry, and these fixtures remove their containers themselves.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest

from distbreaker.breaker import Breaker
from distbreaker.config import BreakerConfig
from distbreaker.store import connect
from distbreaker.testing.containers import container_url, docker_unavailable, start_redis_container
from distbreaker.testing.servers import RedisServer, find_redis_server
from distbreaker.testing.upstream import FlakyUpstream

REDIS_URL_ENV = "DISTBREAKER_TEST_REDIS_URL"
REQUIRE_DOCKER_ENV = "DISTBREAKER_REQUIRE_DOCKER"


def require_docker() -> bool:
    """True when ``$DISTBREAKER_REQUIRE_DOCKER=1``: a missing engine fails instead of skips."""
    return os.environ.get(REQUIRE_DOCKER_ENV) == "1"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test, visibly; fail it instead where Docker is required."""
    if require_docker():
        pytest.fail(f"{reason} ({REQUIRE_DOCKER_ENV}=1)", pytrace=False)
    pytest.skip(reason)


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
