"""The breaker on a Redis in a container (testcontainers, image built FROM scratch locally).

Part of the behavioural suite runs through the container; the fault test pauses it (the
cgroup freezer: connections are accepted, nothing answers: a hung store), checks that calls
stay bounded and local protection continues, then unpauses and checks shared mode resumes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

import distbreaker
from distbreaker import AsyncBreaker, Breaker, BreakerConfig, CircuitOpenError
from distbreaker.store import breaker_keys
from distbreaker.testing.containers import _parse_ldd, container_url, scratch_context
from distbreaker.testing.plugin import REQUIRE_DOCKER_ENV, skip_or_fail
from tests.conftest import FakeClock

STORE_TIMEOUT = 0.25
pytestmark = [pytest.mark.integration, pytest.mark.docker]


def failing() -> None:
    raise ConnectionError("upstream down")


@pytest.fixture
def container_redis(redis_container: Any) -> Iterator[redis.Redis]:
    client = distbreaker.connect(container_url(redis_container), timeout=STORE_TIMEOUT)
    yield client
    client.close()


@pytest.fixture
def build(container_redis: redis.Redis, clock: FakeClock) -> Callable[..., Breaker]:
    def make(consistency: str = "strict", **settings: Any) -> Breaker:
        config = BreakerConfig(
            key_prefix=f"tc-{uuid.uuid4().hex[:10]}", consistency=consistency, **settings
        )
        return Breaker("upstream", container_redis, config, clock=clock)

    return make


# -- the fixtures' own rules (no engine needed) ------------------------------------------


def test_skip_or_fail_skips_without_the_require_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_DOCKER_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no engine"):
        skip_or_fail("no engine")


def test_skip_or_fail_fails_when_docker_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_DOCKER_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="no engine"):
        skip_or_fail("no engine")


def test_ldd_output_gives_library_paths_and_the_loader() -> None:
    output = (
        "\tlinux-vdso.so.1 (0x00007ffd)\n"
        "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f00)\n"
        "\t/lib64/ld-linux-x86-64.so.2 (0x00007f01)\n"
    )
    assert [str(p) for p in _parse_ldd(output, "x")] == [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/ld-linux-x86-64.so.2",
    ]


def test_build_context_is_a_scratch_dockerfile_plus_files(tmp_path: Any) -> None:
    import tarfile

    binary = tmp_path / "server"
    binary.write_bytes(b"\x7fELF")
    binary.chmod(0o755)
    context = scratch_context({"/usr/bin/server": binary}, entrypoint=["/usr/bin/server"])
    with tarfile.open(fileobj=context) as tar:
        names = tar.getnames()
        dockerfile = tar.extractfile("Dockerfile").read().decode()  # type: ignore[union-attr]
        mode = tar.getmember("rootfs/usr/bin/server").mode
    assert names == ["Dockerfile", "rootfs/usr/bin/server"]
    assert dockerfile.startswith("FROM scratch\nCOPY rootfs/ /\n")
    assert 'ENTRYPOINT ["/usr/bin/server"]' in dockerfile
    assert mode & 0o111


# -- the behavioural suite, through the container -----------------------------------------


@pytest.mark.parametrize("consistency", ["cached", "strict"])
def test_trips_refuses_probes_and_closes_in_the_container(
    build: Callable[..., Breaker], clock: FakeClock, consistency: str
) -> None:
    breaker = build(consistency, failure_threshold=3, reset_timeout=30)
    for _ in range(3):
        with pytest.raises(ConnectionError):
            breaker.execute(failing)
    assert breaker.status().state == "open"
    with pytest.raises(CircuitOpenError) as refused:
        breaker.execute(lambda: "never")
    assert refused.value.retry_after == pytest.approx(30, abs=1)

    clock.advance(31)
    assert breaker.execute(lambda: "probe") == "probe"
    status = breaker.status()
    assert (status.state, status.failure_count, status.opens_total) == ("closed", 0, 1)


def test_a_failed_probe_reopens_with_a_new_generation(
    build: Callable[..., Breaker], clock: FakeClock
) -> None:
    breaker = build(failure_threshold=1, reset_timeout=10)
    with pytest.raises(ConnectionError):
        breaker.execute(failing)
    opened = breaker.status().generation
    clock.advance(11)
    with pytest.raises(ConnectionError):
        breaker.execute(failing)
    status = breaker.status()
    assert status.state == "open"
    assert status.generation > opened


def test_two_workers_share_one_breaker_in_the_container(
    container_redis: redis.Redis, clock: FakeClock
) -> None:
    # strict: every call asks Redis (cached mode may admit once more until its copy ages)
    prefix = f"tc-{uuid.uuid4().hex[:10]}"
    config = BreakerConfig(key_prefix=prefix, failure_threshold=2, consistency="strict")
    first = Breaker("shared", container_redis, config, clock=clock)
    second = Breaker("shared", container_redis, config, clock=clock)
    with pytest.raises(ConnectionError):
        first.execute(failing)
    with pytest.raises(ConnectionError):
        second.execute(failing)
    with pytest.raises(CircuitOpenError):
        first.execute(lambda: "never")


async def test_async_breaker_trips_in_the_container(redis_container: Any, clock: FakeClock) -> None:
    client = distbreaker.connect_async(container_url(redis_container), timeout=STORE_TIMEOUT)
    config = BreakerConfig(key_prefix=f"tc-{uuid.uuid4().hex[:10]}", failure_threshold=2)
    breaker = AsyncBreaker("upstream", client, config, clock=clock)

    async def failing_call() -> None:
        raise ConnectionError("upstream down")

    try:
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await breaker.execute(failing_call)
        assert (await breaker.status()).state == "open"
    finally:
        await client.aclose()


# -- the fault the container makes possible: a hung store ---------------------------------


def wait_for_shared_mode(breaker: Breaker, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if breaker.status().store_ok:
            return
        time.sleep(0.1)
    raise AssertionError("shared mode did not resume after unpause")


@pytest.mark.slow
@pytest.mark.parametrize("consistency", ["cached", "strict"])
def test_paused_redis_bounds_calls_keeps_protecting_and_resumes(
    redis_container: Any, container_redis: redis.Redis, consistency: str
) -> None:
    prefix = f"tc-{uuid.uuid4().hex[:10]}"
    config = BreakerConfig(key_prefix=prefix, failure_threshold=3, consistency=consistency)
    breaker = Breaker("paused", container_redis, config)  # real time: the back-off is real
    assert breaker.execute(lambda: "up") == "up"
    assert breaker.status().store_ok

    attempts = 0

    def counting_failure() -> str:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("upstream down")

    durations: list[float] = []
    container = redis_container.get_wrapped_container()
    container.pause()
    try:
        for _ in range(100):
            started = time.perf_counter()
            assert breaker.execute(counting_failure, fallback=lambda: "fallback") == "fallback"
            durations.append(time.perf_counter() - started)
        during = breaker.status()
    finally:
        container.unpause()

    total = sum(durations)
    # each call waits at most one store timeout; the store back-off spares all the others
    assert max(durations) < STORE_TIMEOUT + 0.25, max(durations)
    assert total < 100 * STORE_TIMEOUT / 10, total
    # the local shadow breaker still opened after failure_threshold failures
    assert attempts == 3
    assert (during.store_ok, during.state) == (False, "open")

    print(
        f"paused store ({consistency}): 100 calls in {total * 1000:.0f} ms, slowest "
        f"{max(durations) * 1000:.0f} ms, upstream called {attempts} times"
    )
    wait_for_shared_mode(breaker)
    after = breaker.status()
    # Redis saw none of the outage's failures, except perhaps the one script that was
    # already sent when the pause hit: the frozen server runs it once thawed.
    assert (after.store_ok, after.state) == (True, "closed")
    assert after.failure_count <= 1
    for _ in range(3):
        breaker.execute(failing, fallback=lambda: None)
    state_key = breaker_keys(prefix, "paused")[0]
    assert container_redis.hget(state_key, "state") == b"open"
    assert breaker.status().state == "open"
