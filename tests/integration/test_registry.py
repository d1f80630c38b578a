"""DockerImages against a real registry: Debian's ``docker-registry`` on loopback.

A tiny image built ``FROM scratch`` is pushed to the registry through a fault proxy
(``tests/integration/registry.py``), its local copy removed, then pulled for real by the
engine through ``DockerImages`` with the breaker in a real Redis. The proxy then fails as a
registry does (connection refused, 503, 429 ``TOOMANYREQUESTS``, a hang, a reset), and the
registry itself answers ``manifest unknown`` for a tag it does not have.

Without an engine these tests skip with the reason (fail under
``DISTBREAKER_REQUIRE_DOCKER=1``); without the ``docker-registry`` binary they skip, naming
the Debian package (``.ci/ensure-system-packages`` installs it).
"""

from __future__ import annotations

import contextlib
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

import distbreaker
from distbreaker import BreakerConfig, ImageUnavailableError
from distbreaker.docker import (
    RATE_LIMIT_COOL_OFF,
    DockerImages,
    PullTimeoutError,
    create_registry_operation,
    registry_breaker_name,
)
from distbreaker.operation import NetworkOperation
from distbreaker.testing.containers import build_scratch_image, docker_unavailable
from distbreaker.testing.plugin import skip_or_fail
from tests.integration.registry import FaultProxy, Mode, RegistryServer

pytestmark = [pytest.mark.integration, pytest.mark.docker]

REPOSITORY = "distbreaker-test/tiny"
WAIT = 20.0  # the longest any condition is waited for, on a loaded machine


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    reason = docker_unavailable()
    if reason is not None:
        skip_or_fail(reason)
    client = docker.from_env(timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    if not Path(binary).is_file():
        pytest.skip(
            "docker-registry is not installed (Debian's docker-registry package; "
            ".ci/ensure-system-packages installs it)"
        )
    server = RegistryServer(binary, tmp_path_factory.mktemp("registry")).start()
    yield server
    server.stop()


@dataclass(frozen=True)
class Pushed:
    """The image in the registry: its reference through the proxy, digest and image id."""

    reference: str
    direct: str
    digest: str
    image_id: str

    @property
    def name(self) -> str:
        return self.reference.rsplit(":", 1)[0]


@pytest.fixture(scope="module")
def proxy(registry: RegistryServer) -> Iterator[FaultProxy]:
    with FaultProxy(registry.port) as started:
        yield started


@pytest.fixture(scope="module")
def pushed(
    engine: Any,
    proxy: FaultProxy,
    registry: RegistryServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pushed]:
    run = uuid.uuid4().hex[:10]
    content = tmp_path_factory.mktemp("image") / "hello.txt"
    content.write_text(f"distbreaker registry test {run}\n")
    reference = f"{proxy.address}/{REPOSITORY}:{run}"
    build_scratch_image(
        reference, {"/hello.txt": content}, entrypoint=["/hello.txt"], client=engine
    )
    events = list(
        engine.api.push(f"{proxy.address}/{REPOSITORY}", tag=run, stream=True, decode=True)
    )
    errors = [event for event in events if "error" in event]
    assert not errors, errors
    digest = next(event["aux"]["Digest"] for event in events if "aux" in event)
    image_id = str(engine.images.get(reference).id)
    image = Pushed(reference, f"{registry.address}/{REPOSITORY}:{run}", digest, image_id)
    yield image
    for name in (reference, image.direct):
        remove_local(engine, name)


def remove_local(engine: Any, reference: str) -> None:
    with contextlib.suppress(docker.errors.ImageNotFound):
        engine.images.remove(reference, force=True)


@pytest.fixture
def fresh(engine: Any, pushed: Pushed, proxy: FaultProxy) -> Iterator[Pushed]:
    """No local copy of the image, the proxy passing, at the start of each test."""
    proxy.mode = "pass"
    proxy.requests.clear()
    for name in (pushed.reference, pushed.direct, f"{pushed.name}@{pushed.digest}"):
        remove_local(engine, name)
    yield pushed
    proxy.mode = "pass"


@dataclass
class Setup:
    images: DockerImages
    sleeps: list[float]

    def operation(self, registry: str) -> NetworkOperation:
        found = self.images.operation_for(f"{registry}/x")
        assert found is not None
        return found


@pytest.fixture
def make_images(redis_url: str, engine: Any) -> Iterator[Callable[..., Setup]]:
    """DockerImages with one breaker per registry in a real Redis, under a test prefix."""
    redis = distbreaker.connect(redis_url, timeout=2.0)
    prefix = f"test-registry-{uuid.uuid4().hex[:10]}"

    def build(pull_timeout: float = 60.0, **settings: Any) -> Setup:
        sleeps: list[float] = []
        config = BreakerConfig(key_prefix=prefix, consistency="strict", on_store_error="raise")

        def factory(registry: str) -> NetworkOperation:
            return create_registry_operation(
                redis, registry, config=config, sleep=sleeps.append, **settings
            )

        images = DockerImages(engine, registry_operation=factory, pull_timeout=pull_timeout)
        return Setup(images, sleeps)

    yield build
    keys = list(redis.scan_iter(match=f"{prefix}:*"))
    if keys:
        redis.delete(*keys)
    redis.close()


def manifest_requests(proxy: FaultProxy) -> int:
    return sum(1 for line in proxy.requests if line.startswith("HEAD ") and "/manifests/" in line)


# -- a real pull ------------------------------------------------------------------------


def test_a_real_pull_comes_from_the_registry_with_its_digest(
    engine: Any, fresh: Pushed, proxy: FaultProxy, make_images: Callable[..., Setup]
) -> None:
    setup = make_images()
    pulled = setup.images.pull_image_with_fallback(fresh.reference)
    assert pulled.source == "registry"
    assert pulled.id == fresh.image_id
    digests = engine.images.get(fresh.reference).attrs["RepoDigests"]
    assert f"{fresh.name}@{fresh.digest}" in digests
    by_digest = setup.images.pull_image_with_fallback(f"{fresh.name}@{fresh.digest}")
    assert (by_digest.source, by_digest.id) == ("registry", fresh.image_id)
    status = setup.operation(proxy.address).status()
    assert status.name == registry_breaker_name(proxy.address)
    assert (status.state, status.failure_count) == ("closed", 0)


def test_a_tag_the_registry_does_not_have_is_manifest_unknown_and_not_counted(
    fresh: Pushed, proxy: FaultProxy, make_images: Callable[..., Setup]
) -> None:
    setup = make_images()
    missing = f"{fresh.name}:no-such-tag"
    with pytest.raises(ImageUnavailableError, match="manifest unknown") as caught:
        setup.images.pull_image_with_fallback(missing)
    assert "no local copy" in caught.value.cause
    assert setup.sleeps == []  # not retried
    status = setup.operation(proxy.address).status()
    assert (status.state, status.failure_count) == ("closed", 0)


# -- outages ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["refuse", "unavailable", "reset"])
def test_a_registry_outage_opens_its_breaker_and_serves_the_local_copy(
    fresh: Pushed, proxy: FaultProxy, make_images: Callable[..., Setup], mode: Mode
) -> None:
    setup = make_images(circuit_threshold=2, max_retries=3)
    assert setup.images.pull_image_with_fallback(fresh.reference).source == "registry"
    proxy.mode = mode
    fallback = setup.images.pull_image_with_fallback(fresh.reference)
    assert (fallback.source, fallback.id) == ("local-cache", fresh.image_id)
    assert len(setup.sleeps) == 1  # the second attempt opened the breaker: no third
    status = setup.operation(proxy.address).status()
    assert (status.state, status.failure_count) == ("open", 2)
    connections = proxy.connections
    assert setup.images.pull_image_with_fallback(fresh.reference).source == "local-cache"
    assert proxy.connections == connections  # refused without touching the registry
    with pytest.raises(ImageUnavailableError, match="paused"):
        setup.images.pull_image_with_fallback(f"{fresh.name}:other-tag")
    assert proxy.connections == connections


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("refuse", "connection refused"),
        ("unavailable", "503 Service Unavailable"),
        ("reset", "connection reset by peer"),
    ],
)
def test_the_engine_reports_each_outage_in_its_own_words(
    fresh: Pushed, proxy: FaultProxy, make_images: Callable[..., Setup], mode: Mode, message: str
) -> None:
    setup = make_images(circuit_threshold=5, max_retries=1)
    proxy.mode = mode
    with pytest.raises(ImageUnavailableError, match=message) as caught:
        setup.images.pull_image_with_fallback(fresh.reference)
    assert "no local copy" in caught.value.cause
    status = setup.operation(proxy.address).status()
    assert (status.state, status.failure_count) == ("closed", 1)


def test_one_registrys_outage_leaves_another_registry_alone(
    fresh: Pushed, proxy: FaultProxy, registry: RegistryServer, make_images: Callable[..., Setup]
) -> None:
    setup = make_images(circuit_threshold=1, max_retries=1)
    proxy.mode = "unavailable"
    with pytest.raises(ImageUnavailableError):
        setup.images.pull_image_with_fallback(fresh.reference)
    assert setup.operation(proxy.address).status().state == "open"
    direct = setup.images.pull_image_with_fallback(fresh.direct)  # same storage, other host
    assert (direct.source, direct.id) == ("registry", fresh.image_id)
    other = setup.operation(registry.address).status()
    assert (other.name, other.state) == (registry_breaker_name(registry.address), "closed")


def test_a_rate_limit_holds_the_breaker_open_for_the_cool_off_without_retries(
    fresh: Pushed, proxy: FaultProxy, make_images: Callable[..., Setup]
) -> None:
    setup = make_images()
    assert setup.images.pull_image_with_fallback(fresh.reference).source == "registry"
    proxy.mode = "rate_limited"
    proxy.requests.clear()
    assert setup.images.pull_image_with_fallback(fresh.reference).source == "local-cache"
    assert manifest_requests(proxy) == 1  # one attempt
    assert setup.sleeps == []
    status = setup.operation(proxy.address).status()
    assert (status.state, status.failure_count) == ("open", 0)
    assert status.time_until_reset == pytest.approx(RATE_LIMIT_COOL_OFF, abs=5)


def test_a_hung_registry_costs_one_pull_timeout_and_no_retry(
    fresh: Pushed, proxy: FaultProxy, make_images: Callable[..., Setup]
) -> None:
    setup = make_images(pull_timeout=2.0)
    proxy.mode = "hang"
    started = time.monotonic()
    with pytest.raises(ImageUnavailableError, match="did not finish within 2s") as caught:
        setup.images.pull_image_with_fallback(fresh.reference)
    elapsed = time.monotonic() - started
    assert 2.0 <= elapsed < 2.0 + WAIT / 2
    assert isinstance(caught.value.__cause__, PullTimeoutError)
    assert setup.sleeps == []
    assert len(proxy.requests) == 1  # the engine's first request, never answered
    status = setup.operation(proxy.address).status()
    assert (status.state, status.failure_count) == ("closed", 1)


def test_pulls_resume_after_the_reset_timeout(
    fresh: Pushed, proxy: FaultProxy, make_images: Callable[..., Setup]
) -> None:
    setup = make_images(circuit_threshold=1, circuit_reset_timeout=1.0, max_retries=1)
    proxy.mode = "unavailable"
    with pytest.raises(ImageUnavailableError):
        setup.images.pull_image_with_fallback(fresh.reference)
    operation = setup.operation(proxy.address)
    assert operation.status().state == "open"
    proxy.mode = "pass"
    deadline = time.monotonic() + WAIT
    while operation.status().time_until_reset > 0:
        assert time.monotonic() < deadline, "the reset timeout never passed"
        time.sleep(0.05)
    pulled = setup.images.pull_image_with_fallback(fresh.reference)
    assert (pulled.source, pulled.id) == ("registry", fresh.image_id)
    status = operation.status()
    assert (status.state, status.failure_count) == ("closed", 0)
    assert status.generation == 3  # open, half_open for the probe, closed
