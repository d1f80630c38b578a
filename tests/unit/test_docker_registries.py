"""One breaker per registry host, and Docker's pull classification whatever the operation."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from typing import Any

import fakeredis
import pytest

from distbreaker import BreakerConfig, create_network_operation
from distbreaker.docker import (
    BREAKER_NAME,
    RATE_LIMIT_COOL_OFF,
    DockerImages,
    create_registry_operation,
    registry_breaker_name,
)
from distbreaker.operation import NetworkOperation
from distbreaker.references import parse_reference
from tests.conftest import FakeClock
from tests.unit.test_docker import (
    LOCAL_ID,
    RATE_LIMITED,
    REGISTRY_DOWN,
    FakeDocker,
    SilentStream,
    api_error,
    error_event,
)

PRIVATE = "127.0.0.1:5000"


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


@pytest.fixture
def config() -> BreakerConfig:
    return BreakerConfig(key_prefix=f"t-{uuid.uuid4().hex[:10]}", consistency="strict")


# -- names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "registry", "breaker"),
    [
        ("redis:7", "docker.io", "docker-registry"),
        ("library/redis", "docker.io", "docker-registry"),
        ("acme/app:1", "docker.io", "docker-registry"),
        ("docker.io/library/redis", "docker.io", "docker-registry"),
        ("index.docker.io/acme/app", "docker.io", "docker-registry"),
        ("registry-1.docker.io/acme/app", "docker.io", "docker-registry"),
        ("ghcr.io/acme/app:1", "ghcr.io", "docker-registry:ghcr.io"),
        ("GHCR.io/acme/app", "ghcr.io", "docker-registry:ghcr.io"),
        ("127.0.0.1:5000/tiny:1", "127.0.0.1:5000", "docker-registry:127.0.0.1:5000"),
        ("localhost/app", "localhost", "docker-registry:localhost"),
        ("localhost:5000/app", "localhost:5000", "docker-registry:localhost:5000"),
        ("[::1]:5000/app", "[::1]:5000", "docker-registry:::1:5000"),
    ],
)
def test_the_breaker_is_keyed_by_the_references_registry_host(
    image: str, registry: str, breaker: str
) -> None:
    assert parse_reference(image).registry == registry
    assert registry_breaker_name(registry) == breaker


def test_a_registry_host_too_long_for_a_name_still_gets_a_valid_distinct_name() -> None:
    long_a = "a" * 70 + ".example.com"
    long_b = "a" * 70 + ".example.org"
    name_a, name_b = registry_breaker_name(long_a), registry_breaker_name(long_b)
    assert name_a != name_b
    assert len(name_a) <= 128
    assert name_a.startswith("docker-registry:aaaa")


def test_operations_are_built_once_per_registry_even_from_many_threads(
    redis: fakeredis.FakeRedis,
) -> None:
    built: list[str] = []
    lock = threading.Lock()

    def factory(registry: str) -> NetworkOperation:
        with lock:
            built.append(registry)
        return create_registry_operation(redis, registry)

    images = DockerImages(FakeDocker(), registry_operation=factory)
    start = threading.Barrier(8)
    seen: list[NetworkOperation | None] = []

    def look() -> None:
        start.wait()
        for image in ("redis:7", "ghcr.io/a/b", "redis:8", "ghcr.io/c/d"):
            seen.append(images.operation_for(image))

    threads = [threading.Thread(target=look) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(built) == ["docker.io", "ghcr.io"]
    names = {operation.breaker.name for operation in seen if operation is not None}
    assert names == {"docker-registry", "docker-registry:ghcr.io"}
    assert len({id(operation) for operation in seen}) == 2


def test_with_redis_alone_each_registry_gets_its_default_operation(
    redis: fakeredis.FakeRedis,
) -> None:
    images = DockerImages(FakeDocker(), redis=redis)
    hub, private = images.operation_for("redis:7"), images.operation_for(f"{PRIVATE}/x")
    assert hub is not None
    assert private is not None
    assert (hub.breaker.name, private.breaker.name) == (
        BREAKER_NAME,
        "docker-registry:127.0.0.1:5000",
    )
    assert private.breaker.config.failure_threshold == 3
    assert private.retry.max_attempts == 5


def test_one_registrys_outage_leaves_pulls_from_another_alone(
    redis: fakeredis.FakeRedis, config: BreakerConfig, clock: FakeClock
) -> None:
    fake = FakeDocker({f"{PRIVATE}/app:1": LOCAL_ID})
    succeed = fake.api.succeed

    def script(repository: str, tag: str) -> Iterable[dict[str, Any]]:
        if repository.startswith(PRIVATE):
            raise api_error(500, f'Get "http://{PRIVATE}/v2/": dial tcp: connection refused')
        return succeed(repository, tag)

    fake.api.script = script
    sleeps: list[float] = []
    images = DockerImages(
        fake,
        registry_operation=lambda registry: create_registry_operation(
            redis, registry, config=config, clock=clock, sleep=sleeps.append
        ),
    )
    assert images.pull_image_with_fallback(f"{PRIVATE}/app:1").source == "local-cache"
    private = images.operation_for(f"{PRIVATE}/app:1")
    assert private is not None
    assert private.status().state == "open"
    for _ in range(3):
        assert images.pull_image_with_fallback("redis:7").source == "registry"
    hub = images.operation_for("redis:7")
    assert hub is not None
    assert hub.status().state == "closed"
    assert [pull for pull in fake.api.pulls if pull[0] == "redis"] == [("redis", "7")] * 3


def test_operation_and_registry_operation_exclude_each_other(
    redis: fakeredis.FakeRedis,
) -> None:
    with pytest.raises(ValueError, match="registry_operation"):
        DockerImages(
            FakeDocker(),
            operation=create_registry_operation(redis),
            registry_operation=lambda registry: create_registry_operation(redis, registry),
        )


def test_one_given_operation_serves_every_registry(redis: fakeredis.FakeRedis) -> None:
    operation = create_network_operation("all-registries", redis)
    images = DockerImages(FakeDocker(), operation=operation)
    hub, other = images.operation_for("redis:7"), images.operation_for("ghcr.io/a/b")
    assert hub is other
    assert hub is not None
    assert hub.breaker.name == "all-registries"


# -- a custom operation keeps Docker's classification (issue 15, item 5) --------------------


@pytest.fixture
def custom(
    redis: fakeredis.FakeRedis, config: BreakerConfig, clock: FakeClock
) -> tuple[NetworkOperation, list[float]]:
    """What a user builds for other thresholds: a plain network operation, default classifier."""
    sleeps: list[float] = []
    operation = create_network_operation(
        "docker-registry",
        redis,
        circuit_threshold=2,
        circuit_reset_timeout=30,
        max_retries=3,
        config=config,
        clock=clock,
        sleep=sleeps.append,
    )
    return operation, sleeps


def test_a_timed_out_pull_is_not_retried_through_a_custom_operation(
    custom: tuple[NetworkOperation, list[float]],
) -> None:
    operation, sleeps = custom
    silent = SilentStream()
    fake = FakeDocker({"redis:7": LOCAL_ID})
    fake.api.script = lambda repository, tag: silent
    images = DockerImages(fake, operation=operation, pull_timeout=0.05)
    try:
        assert images.pull_image_with_fallback("redis:7").source == "local-cache"
    finally:
        silent.release.set()
    assert len(fake.api.pulls) == 1
    assert sleeps == []
    status = operation.status()
    assert (status.state, status.failure_count) == ("closed", 1)


@pytest.mark.parametrize("where", ["stream", "response"])
def test_a_rate_limit_holds_for_the_docker_cool_off_through_a_custom_operation(
    custom: tuple[NetworkOperation, list[float]], where: str
) -> None:
    operation, sleeps = custom
    fake = FakeDocker({"redis:7": LOCAL_ID})
    if where == "stream":
        fake.stream_error(RATE_LIMITED)
    else:
        fake.fail_pulls(api_error(500, RATE_LIMITED))
    images = DockerImages(fake, operation=operation)
    assert images.pull_image_with_fallback("redis:7").source == "local-cache"
    assert len(fake.api.pulls) == 1
    assert sleeps == []
    status = operation.status()
    assert status.state == "open"
    assert status.time_until_reset == pytest.approx(RATE_LIMIT_COOL_OFF, abs=1)


def test_an_outage_reported_inside_the_stream_counts_through_a_custom_operation(
    custom: tuple[NetworkOperation, list[float]],
) -> None:
    operation, sleeps = custom
    fake = FakeDocker({"redis:7": LOCAL_ID})
    fake.api.script = lambda repository, tag: [error_event(REGISTRY_DOWN)]
    images = DockerImages(fake, operation=operation)
    assert images.pull_image_with_fallback("redis:7").source == "local-cache"
    assert len(fake.api.pulls) == 2  # threshold 2: the third attempt is refused
    assert len(sleeps) == 1
    status = operation.status()
    assert (status.state, status.failure_count) == ("open", 2)


# -- create_registry_operation takes the settings a user changes ------------------------------


def test_create_registry_operation_takes_thresholds_reset_and_retries(
    redis: fakeredis.FakeRedis,
) -> None:
    operation = create_registry_operation(
        redis,
        "ghcr.io",
        circuit_threshold=7,
        circuit_reset_timeout=45,
        max_retries=2,
        base_delay=0.5,
        max_delay=4.0,
        deadline=20.0,
    )
    assert operation.breaker.name == "docker-registry:ghcr.io"
    assert operation.breaker.config.failure_threshold == 7
    assert operation.breaker.config.reset_timeout == 45
    assert (operation.retry.max_attempts, operation.retry.base_delay) == (2, 0.5)
    assert (operation.retry.max_delay, operation.retry.deadline) == (4.0, 20.0)


def test_create_registry_operation_keeps_the_threshold_and_reset_a_config_sets(
    redis: fakeredis.FakeRedis,
) -> None:
    config = BreakerConfig(failure_threshold=9, reset_timeout=12, window=30)
    operation = create_registry_operation(redis, config=config, name="mirror")
    assert operation.breaker.name == "mirror"
    assert operation.breaker.config.failure_threshold == 9
    assert operation.breaker.config.reset_timeout == 12
    assert operation.breaker.config.window == 30
    defaults = create_registry_operation(redis, config=BreakerConfig(window=30)).breaker.config
    assert (defaults.failure_threshold, defaults.reset_timeout) == (3, 180)


def test_the_operation_a_user_passes_is_judged_by_the_pull_classifier(
    custom: tuple[NetworkOperation, list[float]],
) -> None:
    operation, _ = custom
    images = DockerImages(FakeDocker(), operation=operation)
    used = images.operation_for("redis:7")
    assert used is not None
    assert used is not operation
    assert used.breaker.name == operation.breaker.name
    assert used.breaker.config == operation.breaker.config
    assert used.retry == operation.retry
    verdict = used.breaker.classify(api_error(500, RATE_LIMITED))
    assert verdict.rate_limited
    assert verdict.retry_after == RATE_LIMIT_COOL_OFF


def test_a_registry_operation_is_built_on_the_first_pull_of_its_registry() -> None:
    calls: list[str] = []

    def factory(registry: str) -> NetworkOperation:
        calls.append(registry)
        raise RuntimeError("no")

    images = DockerImages(FakeDocker(), registry_operation=factory)
    assert calls == []
    with pytest.raises(RuntimeError):
        images.operation_for("redis:7")
    assert calls == ["docker.io"]
