"""pytest plugin for users of distbreaker (installed with the ``[test]`` extra).

Fixtures:
- ``redis_url`` (session): a real Redis, the first of these that works:
  1. ``$DISTBREAKER_TEST_REDIS_URL`` when set (CI sets it; nothing to start);
  2. a testcontainers Redis when a Docker engine answers: ``$DISTBREAKER_TEST_REDIS_IMAGE``
     if set, else an image built ``FROM scratch`` from the host's ``redis-server``
     (``distbreaker.testing.containers``, no registry needed), else ``redis:7-alpine`` (pulled);
  3. a private ``redis-server`` on a free loopback port when the binary is installed;
  4. else the test is skipped, with the reason.
  The server handed out must answer a PING: a URL that does not answer (a dead
  ``$DISTBREAKER_TEST_REDIS_URL``, say) fails each test using it with one line naming the
  URL, so no test passes without the Redis it is meant to exercise. The pytest header says
  which source this session uses; the summary says so again if it had to fall back.
- ``redis_container`` (session): a testcontainers Redis of its own (for fault tests that
  pause or stop it); skipped without an engine, failed instead when
  ``$DISTBREAKER_REQUIRE_DOCKER=1``.
- ``breaker_factory``: builds ``Breaker``s on ``redis_url`` with unique key prefixes, and
  deletes their keys afterwards. They raise ``StoreUnavailableError`` when Redis fails
  (``on_store_error="raise"``), so a test never passes on the local shadow breaker by
  accident; a test that means to exercise the fallback sets ``on_store_error`` itself, in
  its ``BreakerConfig`` or as ``build(on_store_error=...)``.
- ``flaky_upstream``: a started ``distbreaker.testing.FlakyUpstream`` on loopback; set its
  ``mode`` (ok / error / reset / hang / rate_limited) during the test.

Where the testcontainers reaper (Ryuk) image is not on the engine and
``TESTCONTAINERS_RYUK_DISABLED`` is unset, the reaper is disabled: it cannot be pulled
without a registry, and these fixtures remove their containers themselves.
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

import pytest

from distbreaker.breaker import Breaker
from distbreaker.config import BreakerConfig
from distbreaker.diagnostics import redact_url
from distbreaker.store import STORE_ERRORS, connect
from distbreaker.testing.containers import container_url, docker_unavailable, start_redis_container
from distbreaker.testing.servers import RedisServer, find_redis_server
from distbreaker.testing.upstream import FlakyUpstream

REDIS_URL_ENV = "DISTBREAKER_TEST_REDIS_URL"
REQUIRE_DOCKER_ENV = "DISTBREAKER_REQUIRE_DOCKER"
# How long a freshly handed-out Redis may take to answer its first PING.
ANSWER_TIMEOUT = 3.0
StoreErrorPolicy = Literal["fail_open", "fail_closed", "raise"]

Source = Literal["env", "container", "server", "none"]


@dataclass(frozen=True)
class RedisChoice:
    """Where this session's ``redis_url`` comes from, decided before anything starts."""

    source: Source
    detail: str

    def header(self) -> str:
        return f"distbreaker: redis_url = {self.detail}"


def choose_redis() -> RedisChoice:
    """The first usable source of the plugin's order (nothing is started here)."""
    url = os.environ.get(REDIS_URL_ENV)
    if url:
        return RedisChoice("env", f"{redact_url(url)} (from ${REDIS_URL_ENV})")
    reason = docker_unavailable()
    if reason is None:
        return RedisChoice("container", "a Redis container (a Docker engine answers), on first use")
    binary = find_redis_server()
    if binary is not None:
        return RedisChoice("server", f"a private {binary} on a loopback port, on first use")
    return RedisChoice(
        "none",
        f"none: tests that need it skip (set ${REDIS_URL_ENV}, start a Docker engine "
        "or install redis-server)",
    )


def check_answers(url: str, source: str, timeout: float = ANSWER_TIMEOUT) -> str:
    """``url`` once its Redis answers a PING; else fail the test in one line naming it."""
    try:
        client = connect(url, timeout=1.0)
    except ValueError as error:
        problem: str | None = f"is not a Redis URL: {error}"
    else:
        problem = _unanswered(client, time.monotonic() + timeout)
    if problem is None:
        return url
    pytest.fail(f"distbreaker: {redact_url(url)} ({source}) {problem}", pytrace=False)


def _unanswered(client: Any, deadline: float) -> str | None:
    """Why ``client`` got no PONG before ``deadline``; ``None`` once it did."""
    try:
        while True:
            try:
                client.ping()
                return None
            except STORE_ERRORS as error:
                if time.monotonic() >= deadline:
                    return f"does not answer: {type(error).__name__}: {error}"
            time.sleep(0.05)
    finally:
        client.close()


_CHOICE = pytest.StashKey[RedisChoice]()
_USED = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_CHOICE] = choose_redis()


def pytest_report_header(config: pytest.Config) -> str:
    return config.stash[_CHOICE].header()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    used = config.stash.get(_USED, None)
    if used is not None:
        terminalreporter.write_line(f"distbreaker: redis_url was {used}")


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
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A URL of a real Redis server that answers, for this test session (see the module doc)."""
    config = request.config
    choice = config.stash.get(_CHOICE, None) or choose_redis()
    if choice.source == "env":
        yield check_answers(os.environ[REDIS_URL_ENV], f"from ${REDIS_URL_ENV}", timeout=1.0)
        return
    if choice.source == "container":
        try:
            container = start_redis_container()
        except Exception as error:  # no image, engine refuses: try the next source
            container = None
            config.stash[_USED] = f"a private redis-server: the container did not start ({error})"
            warnings.warn(
                f"distbreaker: no Redis container ({error}); trying redis-server", stacklevel=1
            )
        if container is not None:
            try:
                yield check_answers(container_url(container), "the session's Redis container")
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
        yield check_answers(server.url, "the session's private redis-server")
    finally:
        server.stop()


@pytest.fixture
def breaker_factory(redis_url: str) -> Iterator[Callable[..., Breaker]]:
    """Build breakers on the session's Redis, each with its own key prefix (keys deleted
    afterwards); they raise on Redis trouble unless the test sets ``on_store_error``."""
    client = connect(redis_url, timeout=2.0)
    prefixes: list[str] = []

    def build(
        name: str | None = None,
        config: BreakerConfig | None = None,
        *,
        on_store_error: StoreErrorPolicy | None = None,
        **kwargs: Any,
    ) -> Breaker:
        given = config or BreakerConfig()
        settings = dict(given.model_dump())
        prefix = f"test-{uuid.uuid4().hex[:10]}"
        settings["key_prefix"] = prefix
        if on_store_error is not None:
            settings["on_store_error"] = on_store_error
        elif "on_store_error" not in given.model_fields_set:
            settings["on_store_error"] = "raise"
        prefixes.append(prefix)
        return Breaker(name or "upstream", client, BreakerConfig(**settings), **kwargs)

    yield build
    try:
        for prefix in prefixes:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
            if keys:
                client.delete(*keys)
    except STORE_ERRORS as error:
        warnings.warn(
            f"distbreaker: could not delete the test's breaker keys at {redact_url(redis_url)} "
            f"({type(error).__name__}: {error})",
            stacklevel=1,
        )
    finally:
        client.close()


@pytest.fixture
def flaky_upstream() -> Iterator[FlakyUpstream]:
    """An HTTP upstream on loopback, answering ``ok`` until the test sets ``.mode``."""
    with FlakyUpstream("ok", hang_seconds=5.0) as upstream:
        yield upstream
