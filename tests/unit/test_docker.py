"""DockerImages against a fake low-level docker client, through a real breaker on fakeredis."""

from __future__ import annotations

import logging
import pickle
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import docker
import docker.errors
import fakeredis
import pytest
import requests

from distbreaker import BreakerConfig, CircuitOpenError, ImageUnavailableError
from distbreaker.classify import Verdict
from distbreaker.docker import (
    RATE_LIMIT_COOL_OFF,
    DockerImages,
    PulledImage,
    PullError,
    PullTimeoutError,
    classify_pull_error,
    create_registry_operation,
)
from tests.conftest import FakeClock

REGISTRY_DOWN = (
    'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io: no such host'
)
RATE_LIMITED = (
    "toomanyrequests: You have reached your pull rate limit. You may increase the limit by"
    " authenticating and upgrading: https://www.docker.com/increase-rate-limit"
)
DENIED = (
    "pull access denied for acme/app, repository does not exist or may require 'docker login':"
    " denied: requested access to the resource is denied"
)
MANIFEST_UNKNOWN = "manifest for redis:99 not found: manifest unknown: manifest unknown"
LOCAL_ID = "sha256:" + "1" * 64
PULLED_ID = "sha256:" + "2" * 64


def api_error(status: int, explanation: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    cls = docker.errors.NotFound if status == 404 else docker.errors.APIError
    error: docker.errors.APIError = cls(f"{status} Server Error", response, explanation)
    return error


def error_event(message: str) -> dict[str, Any]:
    return {"errorDetail": {"message": message}, "error": message}


PROGRESS: list[dict[str, Any]] = [
    {"status": "Pulling from library/redis", "id": "7"},
    {"status": "Downloading", "progressDetail": {"current": 1, "total": 2}, "id": "abc"},
]


class FakeImage:
    def __init__(self, image_id: str) -> None:
        self.id = image_id


class FakeImages:
    def __init__(self, local: dict[str, str]) -> None:
        self.local = local
        self.lookups: list[str] = []
        self.error: BaseException | None = None

    def get(self, name: str) -> FakeImage:
        self.lookups.append(name)
        if self.error is not None:
            raise self.error
        if name not in self.local:
            raise docker.errors.ImageNotFound(f"No such image: {name}")
        return FakeImage(self.local[name])


Script = Callable[[str, str], Iterable[dict[str, Any]]]


class FakeAPI:
    """``pull`` answers from ``script``: an iterable of events, or it raises."""

    def __init__(self, images: FakeImages) -> None:
        self.images = images
        self.pulls: list[tuple[str, str]] = []
        self.script: Script = self.succeed

    def succeed(self, repository: str, tag: str) -> Iterable[dict[str, Any]]:
        separator = "@" if tag.startswith("sha256:") else ":"
        self.images.local[f"{repository}{separator}{tag}"] = PULLED_ID
        return [*PROGRESS, {"status": f"Downloaded newer image for {repository}:{tag}"}]

    def pull(
        self, repository: str, tag: str | None = None, stream: bool = False, decode: bool = False
    ) -> Iterable[dict[str, Any]]:
        # only the streaming, decoded pull reports errors event by event
        assert stream
        assert decode
        assert tag is not None
        self.pulls.append((repository, tag))
        return self.script(repository, tag)


class FakeDocker:
    def __init__(self, local: dict[str, str] | None = None) -> None:
        self.images = FakeImages(dict(local or {}))
        self.api = FakeAPI(self.images)
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def fail_pulls(self, error: BaseException) -> None:
        def script(repository: str, tag: str) -> Iterable[dict[str, Any]]:
            raise error

        self.api.script = script

    def stream_error(self, message: str) -> None:
        self.api.script = lambda repository, tag: [*PROGRESS, error_event(message)]


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


@pytest.fixture
def make_images(
    redis: fakeredis.FakeRedis, clock: FakeClock, sleeps: list[float]
) -> Callable[..., DockerImages]:
    def build(client: Any, pull_timeout: float = 300.0) -> DockerImages:
        config = BreakerConfig(
            failure_threshold=3,
            reset_timeout=180,
            key_prefix=f"t-{uuid.uuid4().hex[:10]}",
            consistency="strict",
        )
        operation = create_registry_operation(
            redis, config=config, clock=clock, sleep=sleeps.append
        )
        return DockerImages(client, operation=operation, pull_timeout=pull_timeout)

    return build


def state_of(images: DockerImages) -> tuple[str, int]:
    assert images.operation is not None
    status = images.operation.status()
    return status.state, status.failure_count


# -- classification ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "counts", "retryable", "rate_limited"),
    [
        (api_error(500, REGISTRY_DOWN), True, True, False),
        (
            api_error(500, "received unexpected HTTP status: 503 Service Unavailable"),
            True,
            True,
            False,
        ),
        (api_error(502, "Bad Gateway"), True, True, False),
        (api_error(500, RATE_LIMITED), False, False, True),
        (api_error(404, DENIED), False, False, False),
        (api_error(404, MANIFEST_UNKNOWN), False, False, False),
        (api_error(500, "unauthorized: authentication required"), False, False, False),
        (api_error(400, "invalid reference format"), False, False, False),
        (api_error(500, "something new"), True, True, False),  # unknown 5xx: status decides
        (
            PullError("redis:7", 'Get "https://r/v2/": net/http: TLS handshake timeout'),
            True,
            True,
            False,
        ),
        (PullError("redis:7", "read tcp 10.0.0.2:1->10.0.0.3:443: i/o timeout"), True, True, False),
        (PullError("redis:7", "unexpected EOF"), True, True, False),
        (PullError("redis:7", RATE_LIMITED), False, False, True),
        (PullError("redis:7", MANIFEST_UNKNOWN), False, False, False),
        (PullError("redis:7", DENIED), False, False, False),
        (
            PullError("redis:7", "write /var/lib/docker/tmp: no space left on device"),
            False,
            False,
            False,
        ),
        (PullTimeoutError("redis:7", 300.0), True, False, False),
        (requests.exceptions.ConnectionError("Connection aborted."), True, True, False),
        (
            docker.errors.DockerException("Error while fetching server API version"),
            True,
            True,
            False,
        ),
        (docker.errors.StreamParseError("bad json"), True, True, False),
        (ValueError("a bug"), False, False, False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_classify_pull_error(
    error: BaseException, counts: bool, retryable: bool, rate_limited: bool
) -> None:
    verdict = classify_pull_error(error)
    assert (verdict.counts, verdict.retryable, verdict.rate_limited) == (
        counts,
        retryable,
        rate_limited,
    )


def test_rate_limits_hold_for_the_cool_off() -> None:
    verdict = classify_pull_error(PullError("redis:7", RATE_LIMITED))
    assert verdict == Verdict(False, False, True, RATE_LIMIT_COOL_OFF)


# -- validation and laziness ---------------------------------------------------------------


@pytest.mark.parametrize("bad", ["redis; rm -rf /", "$(id)", "Redis:7", "redis:7\n", "a" * 256])
def test_bad_references_fail_before_any_call(
    bad: str, make_images: Callable[..., DockerImages], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeDocker()
    images = make_images(fake)
    monkeypatch.setattr(docker, "from_env", pytest.fail)
    for method in (images.pull_image_with_fallback, images.ensure_base_image):
        with pytest.raises(ValueError, match="invalid image reference"):
            method(bad)
    assert fake.api.pulls == []
    assert fake.images.lookups == []
    assert state_of(images) == ("closed", 0)


def test_the_client_is_created_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[FakeDocker] = []

    def from_env() -> FakeDocker:
        created.append(FakeDocker())
        return created[-1]

    monkeypatch.setattr(docker, "from_env", from_env)
    images = DockerImages()
    assert created == []
    pulled = images.pull_image_with_fallback("redis:7")
    assert pulled == PulledImage("redis:7", "registry", PULLED_ID)
    images.pull_image_with_fallback("redis:7")
    assert len(created) == 1
    images.close()
    assert created[0].closed


def test_a_stopped_daemon_is_an_outage_at_call_time(
    make_images: Callable[..., DockerImages],
    monkeypatch: pytest.MonkeyPatch,
    sleeps: list[float],
) -> None:
    calls: list[int] = []

    def from_env() -> Any:
        calls.append(1)
        raise docker.errors.DockerException("Error while fetching server API version: ...")

    monkeypatch.setattr(docker, "from_env", from_env)
    images = make_images(None)
    with pytest.raises(ImageUnavailableError, match="daemon is unreachable") as caught:
        images.pull_image_with_fallback("redis:7")
    assert caught.value.image == "redis:7"
    assert len(calls) == 3  # the third failure opened the breaker: no fourth attempt
    assert sleeps
    assert all(delay <= 4.4 for delay in sleeps)
    assert state_of(images)[0] == "open"


def test_a_given_client_is_not_closed() -> None:
    fake = FakeDocker()
    DockerImages(fake).close()
    assert not fake.closed


def test_pull_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="pull_timeout"):
        DockerImages(FakeDocker(), pull_timeout=0)


# -- the registry answers ------------------------------------------------------------------


def test_a_successful_pull_comes_from_the_registry(
    make_images: Callable[..., DockerImages],
) -> None:
    fake = FakeDocker()
    pulled = make_images(fake).pull_image_with_fallback("registry.example.com:5000/team/app")
    assert pulled == PulledImage("registry.example.com:5000/team/app", "registry", PULLED_ID)
    assert fake.api.pulls == [("registry.example.com:5000/team/app", "latest")]
    assert fake.images.lookups == ["registry.example.com:5000/team/app:latest"]


def test_a_digest_is_pulled_as_the_tag_and_inspected_by_digest(
    make_images: Callable[..., DockerImages],
) -> None:
    digest = "sha256:" + "f" * 64
    fake = FakeDocker()
    pulled = make_images(fake).pull_image_with_fallback(f"redis:7@{digest}")
    assert pulled.source == "registry"
    assert fake.api.pulls == [("redis", digest)]
    assert fake.images.lookups == [f"redis@{digest}"]


# -- outages: counted, retried, local copy -------------------------------------------------


def test_a_registry_outage_opens_the_breaker_and_serves_the_local_copy(
    make_images: Callable[..., DockerImages],
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeDocker({"redis:7": LOCAL_ID})
    fake.fail_pulls(api_error(500, REGISTRY_DOWN))
    images = make_images(fake)
    with caplog.at_level(logging.DEBUG, logger="distbreaker.docker"):
        first = images.pull_image_with_fallback("redis:7")
        second = images.pull_image_with_fallback("redis:7")
    assert first == second == PulledImage("redis:7", "local-cache", LOCAL_ID)
    assert len(fake.api.pulls) == 3  # threshold 3: the fourth attempt and the next call are refused
    assert 0.9 <= sleeps[0] <= 1.1
    assert 1.8 <= sleeps[1] <= 2.2
    assert state_of(images) == ("open", 3)
    records = [r for r in caplog.records if r.name == "distbreaker.docker"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.DEBUG]
    assert "local copy" in records[0].getMessage()
    assert "no such host" in records[0].getMessage()
    assert "paused" in records[1].getMessage()


def test_the_warning_comes_back_after_the_registry_recovered(
    make_images: Callable[..., DockerImages], caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeDocker({"redis:7": LOCAL_ID})
    images = DockerImages(fake)  # no breaker: one attempt per call
    with caplog.at_level(logging.DEBUG, logger="distbreaker.docker"):
        fake.fail_pulls(api_error(500, REGISTRY_DOWN))
        images.pull_image_with_fallback("redis:7")
        images.pull_image_with_fallback("redis:7")
        fake.api.script = fake.api.succeed
        assert images.pull_image_with_fallback("redis:7").source == "registry"
        fake.fail_pulls(api_error(500, REGISTRY_DOWN))
        images.pull_image_with_fallback("redis:7")
    levels = [r.levelno for r in caplog.records if r.name == "distbreaker.docker"]
    assert levels == [logging.WARNING, logging.DEBUG, logging.WARNING]


@pytest.mark.parametrize(
    "message",
    [REGISTRY_DOWN, "read tcp 10.0.0.2:51000->104.18.1.1:443: i/o timeout", "unexpected EOF"],
)
def test_an_outage_inside_the_stream_counts(
    message: str, make_images: Callable[..., DockerImages]
) -> None:
    fake = FakeDocker({"redis:7": LOCAL_ID})
    fake.stream_error(message)
    images = make_images(fake)
    assert images.pull_image_with_fallback("redis:7").source == "local-cache"
    assert len(fake.api.pulls) == 3
    assert state_of(images) == ("open", 3)


def test_no_registry_and_no_local_copy_is_image_unavailable(
    make_images: Callable[..., DockerImages],
) -> None:
    fake = FakeDocker()
    fake.fail_pulls(api_error(500, REGISTRY_DOWN))
    images = make_images(fake)
    with pytest.raises(ImageUnavailableError) as caught:
        images.pull_image_with_fallback("acme/app:1")
    error = caught.value
    assert error.image == "acme/app:1"
    assert "no such host" in error.cause
    assert "no local copy" in error.cause
    assert pickle.loads(pickle.dumps(error)).cause == error.cause
    with pytest.raises(ImageUnavailableError, match="paused") as refused:
        images.pull_image_with_fallback("acme/app:1")
    assert isinstance(refused.value.__cause__, CircuitOpenError)
    assert len(fake.api.pulls) == 3


# -- rate limits: hold the breaker open, no retries ----------------------------------------


@pytest.mark.parametrize("where", ["stream", "response"])
def test_a_rate_limit_holds_the_breaker_open_without_retrying(
    where: str, make_images: Callable[..., DockerImages], sleeps: list[float]
) -> None:
    fake = FakeDocker({"redis:7": LOCAL_ID})
    if where == "stream":
        fake.stream_error(RATE_LIMITED)
    else:
        fake.fail_pulls(api_error(500, RATE_LIMITED))
    images = make_images(fake)
    assert images.pull_image_with_fallback("redis:7").source == "local-cache"
    assert images.pull_image_with_fallback("redis:7").source == "local-cache"
    assert len(fake.api.pulls) == 1
    assert sleeps == []
    assert images.operation is not None
    status = images.operation.status()
    assert status.state == "open"
    assert status.failure_count == 0
    assert status.time_until_reset == pytest.approx(RATE_LIMIT_COOL_OFF, abs=1)


# -- not outages: not counted, not retried, local copy if any ------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        ("stream", MANIFEST_UNKNOWN),
        ("stream", DENIED),
        ("stream", "write /var/lib/docker/tmp/x: no space left on device"),
        ("response", DENIED),
        ("response", MANIFEST_UNKNOWN),
    ],
)
def test_errors_that_are_not_outages_are_not_counted(
    failure: tuple[str, str], make_images: Callable[..., DockerImages], sleeps: list[float]
) -> None:
    where, message = failure
    fake = FakeDocker({"acme/app:1": LOCAL_ID})
    if where == "stream":
        fake.stream_error(message)
    else:
        fake.fail_pulls(api_error(404, message))
    images = make_images(fake)
    assert images.pull_image_with_fallback("acme/app:1").source == "local-cache"
    with pytest.raises(ImageUnavailableError, match="no local copy"):
        images.pull_image_with_fallback("acme/other:1")
    assert len(fake.api.pulls) == 2
    assert sleeps == []
    assert state_of(images) == ("closed", 0)


# -- the daemon is unreachable ---------------------------------------------------------------


def test_an_unreachable_daemon_opens_the_breaker_and_is_left_alone(
    make_images: Callable[..., DockerImages],
) -> None:
    fake = FakeDocker({"redis:7": LOCAL_ID})
    down = requests.exceptions.ConnectionError("('Connection aborted.', FileNotFoundError(2))")
    fake.fail_pulls(down)
    fake.images.error = down
    images = make_images(fake)
    for _ in range(3):
        with pytest.raises(ImageUnavailableError, match="daemon is unreachable"):
            images.pull_image_with_fallback("redis:7")
        with pytest.raises(ImageUnavailableError, match="daemon is unreachable"):
            images.ensure_base_image("redis:7")
    assert len(fake.api.pulls) == 3
    assert fake.images.lookups == []
    assert state_of(images)[0] == "open"


def test_a_daemon_that_answers_again_serves_its_local_copy(
    make_images: Callable[..., DockerImages], clock: FakeClock
) -> None:
    fake = FakeDocker({"redis:7": LOCAL_ID})
    fake.fail_pulls(requests.exceptions.ConnectionError("refused"))
    images = make_images(fake)
    with pytest.raises(ImageUnavailableError):
        images.pull_image_with_fallback("redis:7")
    clock.advance(181)  # the probe after reset_timeout reaches the daemon, the registry is down
    fake.fail_pulls(api_error(500, REGISTRY_DOWN))
    assert images.pull_image_with_fallback("redis:7").source == "local-cache"
    assert fake.images.lookups == ["redis:7"]


# -- the pull deadline ------------------------------------------------------------------------


class SilentStream:
    """A pull stream that sends nothing until released, like a daemon waiting on a registry."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.release.wait(10)
        yield {"status": "late"}
        yield {"status": "later"}

    def close(self) -> None:
        self.closed.set()


def chatty_stream(repository: str, tag: str) -> Iterator[dict[str, Any]]:
    while True:  # progress forever, never done
        time.sleep(0.001)
        yield {"status": "Downloading", "id": "abc"}


def test_a_silent_pull_times_out_counts_once_and_is_not_retried(
    make_images: Callable[..., DockerImages], sleeps: list[float]
) -> None:
    silent = SilentStream()
    fake = FakeDocker({"redis:7": LOCAL_ID})
    fake.api.script = lambda repository, tag: silent
    images = make_images(fake, pull_timeout=0.05)
    started = time.monotonic()
    pulled = images.pull_image_with_fallback("redis:7")
    assert time.monotonic() - started < 1.0
    assert pulled.source == "local-cache"
    assert len(fake.api.pulls) == 1
    assert sleeps == []
    assert state_of(images) == ("closed", 1)
    silent.release.set()  # the reader thread sees the stop at the next event and closes
    assert silent.closed.wait(2)


def test_a_pull_that_never_ends_times_out(make_images: Callable[..., DockerImages]) -> None:
    fake = FakeDocker()
    fake.api.script = chatty_stream
    images = DockerImages(fake, pull_timeout=0.05)
    with pytest.raises(ImageUnavailableError, match=r"did not finish within 0\.05s") as caught:
        images.pull_image_with_fallback("redis:7")
    assert isinstance(caught.value.__cause__, PullTimeoutError)


def test_a_request_that_never_answers_times_out() -> None:
    release = threading.Event()
    fake = FakeDocker()

    def hang(repository: str, tag: str) -> Iterable[dict[str, Any]]:
        release.wait(10)  # the SDK's POST has no timeout: blocked before any event
        return []

    fake.api.script = hang
    with pytest.raises(ImageUnavailableError, match="did not finish"):
        DockerImages(fake, pull_timeout=0.05).pull_image_with_fallback("redis:7")
    release.set()


# -- without Redis, and ensure_base_image -------------------------------------------------------


def test_without_redis_one_attempt_then_the_local_copy() -> None:
    fake = FakeDocker({"redis:7": LOCAL_ID})
    fake.fail_pulls(api_error(500, REGISTRY_DOWN))
    images = DockerImages(fake)
    assert images.operation is None
    for _ in range(3):
        assert images.pull_image_with_fallback("redis:7").source == "local-cache"
    assert len(fake.api.pulls) == 3


def test_with_redis_the_shared_breaker_of_docker_hub_is_docker_registry(
    redis: fakeredis.FakeRedis,
) -> None:
    images = DockerImages(FakeDocker(), redis=redis)
    assert images.operation is None
    operation = images.operation_for("redis:7")
    assert operation is not None
    assert operation.status().name == "docker-registry"
    breaker = operation.breaker
    assert breaker.config.failure_threshold == 3
    assert breaker.config.reset_timeout == 180
    retry = operation.retry
    assert retry.max_attempts == 5
    assert retry.base_delay == 1.0
    for same in ("library/redis:7", "docker.io/library/redis", "index.docker.io/acme/app"):
        assert images.operation_for(same) is operation


def test_ensure_base_image_uses_a_present_image_without_the_registry(
    make_images: Callable[..., DockerImages],
) -> None:
    fake = FakeDocker({"redis:7": LOCAL_ID})
    assert make_images(fake).ensure_base_image("redis:7") == PulledImage(
        "redis:7", "local-cache", LOCAL_ID
    )
    assert fake.api.pulls == []


def test_ensure_base_image_pulls_a_missing_image(make_images: Callable[..., DockerImages]) -> None:
    fake = FakeDocker()
    assert make_images(fake).ensure_base_image("redis:7").source == "registry"
    assert fake.api.pulls == [("redis", "7")]


def test_ensure_base_image_without_registry_or_copy_is_unavailable(
    make_images: Callable[..., DockerImages],
) -> None:
    fake = FakeDocker()
    fake.fail_pulls(api_error(500, REGISTRY_DOWN))
    with pytest.raises(ImageUnavailableError, match="'redis:7'"):
        make_images(fake).ensure_base_image("redis:7")


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"error": "plain"}, "plain"),
        ({"errorDetail": {"message": "detailed"}, "error": "plain"}, "detailed"),
        ({"errorDetail": {}}, "unknown error"),
    ],
)
def test_every_error_event_shape_fails_the_pull(event: dict[str, Any], message: str) -> None:
    fake = FakeDocker()
    fake.api.script = lambda repository, tag: [event]
    with pytest.raises(ImageUnavailableError) as caught:
        DockerImages(fake).pull_image_with_fallback("redis:7")
    assert isinstance(caught.value.__cause__, PullError)
    assert caught.value.__cause__.message == message
