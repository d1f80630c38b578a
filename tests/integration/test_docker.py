"""DockerImages on the machine's real Docker engine, with the breaker in a real Redis.

The engine here reaches no registry, so every pull fails as in a registry outage; the
images are built locally ``FROM scratch``. Without an engine these tests skip with the
reason; with ``DISTBREAKER_REQUIRE_DOCKER=1`` (set by ``.ci/run`` when ``docker info``
works) they fail instead.
"""

from __future__ import annotations

import io
import os
import socket
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

import distbreaker
from distbreaker import BreakerConfig, ImageUnavailableError
from distbreaker.docker import (
    DockerImages,
    PulledImage,
    PullTimeoutError,
    create_registry_operation,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker]

REQUIRE_DOCKER = "DISTBREAKER_REQUIRE_DOCKER"


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    """The local Docker engine, or a visible skip (a failure when it is required)."""
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as error:
        reason = f"no Docker engine answers: {type(error).__name__}: {error}"
        if os.environ.get(REQUIRE_DOCKER) == "1":
            pytest.fail(f"{reason} ({REQUIRE_DOCKER}=1 requires one)")
        pytest.skip(reason)
    yield client
    client.close()


def build_context(files: dict[str, bytes]) -> io.BytesIO:
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    return context


@pytest.fixture(scope="module")
def tiny_image(engine: Any) -> Iterator[PulledImage]:
    """A tiny image built FROM scratch, unique to this run, removed afterwards."""
    run = uuid.uuid4().hex[:10]
    tag = f"distbreaker-test/tiny:{run}"
    context = build_context(
        {
            "Dockerfile": b"FROM scratch\nCOPY hello.txt /hello.txt\n",
            "hello.txt": f"distbreaker test image {run}\n".encode(),
        }
    )
    image, _ = engine.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
    yield PulledImage(tag, "local-cache", image.id)
    engine.images.remove(tag)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_images(redis_url: str, sleeps: list[float]) -> Iterator[Callable[[Any], DockerImages]]:
    """DockerImages on the shared breaker settings, under a key prefix unique to the test."""
    redis = distbreaker.connect(redis_url, timeout=2.0)
    prefix = f"test-docker-{uuid.uuid4().hex[:10]}"
    config = BreakerConfig(failure_threshold=3, reset_timeout=180, key_prefix=prefix)

    def build(client: Any) -> DockerImages:
        operation = create_registry_operation(redis, config=config, sleep=sleeps.append)
        return DockerImages(client, operation=operation, pull_timeout=60)

    yield build
    keys = list(redis.scan_iter(match=f"{prefix}:*"))
    if keys:
        redis.delete(*keys)
    redis.close()


class CountingSocket:
    """A unix socket where no daemon answers: it counts connections and closes each at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connections = 0
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(16)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return  # closed
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self._thread.join(5)


class SilentDaemon:
    """A unix socket daemon whose pull answers 200, sends one event, then nothing until released.

    Other requests (the local-copy lookup) get a 404. ``client_closed`` is set when the
    client hangs up on the pull's connection after the release.
    """

    EVENT = b'{"status":"Pulling from library/redis","id":"7"}\r\n'

    def __init__(self, path: Path) -> None:
        self.path = path
        self.release = threading.Event()
        self.client_closed = threading.Event()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(16)
        self._first = True
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            handler = self._pull if self._first else self._not_found
            self._first = False
            threading.Thread(target=handler, args=(connection,), daemon=True).start()

    @staticmethod
    def _read_request(connection: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(4096)
            if not chunk:
                return
            data += chunk

    def _chunk(self) -> bytes:
        return b"%x\r\n%s\r\n" % (len(self.EVENT), self.EVENT)

    def _pull(self, connection: socket.socket) -> None:
        with connection:
            self._read_request(connection)
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + self._chunk()
            )
            self.release.wait(30)
            for _ in range(50):  # the client should hang up at the next event
                try:
                    connection.sendall(self._chunk())
                except OSError:  # EPIPE: the client closed its end
                    self.client_closed.set()
                    return
                time.sleep(0.05)

    def _not_found(self, connection: socket.socket) -> None:
        with connection:
            self._read_request(connection)
            body = b'{"message":"No such image: redis:7"}'
            connection.sendall(
                b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )

    def close(self) -> None:
        self.release.set()
        self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()


def status_of(images: DockerImages) -> tuple[str, int]:
    assert images.operation is not None
    status = images.operation.status()
    return status.state, status.failure_count


def test_an_unreachable_registry_falls_back_to_the_local_image(
    engine: Any, tiny_image: PulledImage, make_images: Callable[[Any], DockerImages]
) -> None:
    images = make_images(engine)
    pulled = images.pull_image_with_fallback(tiny_image.image)
    assert pulled == tiny_image  # the real id of the image built above
    assert pulled.id == engine.images.get(tiny_image.image).id
    # every real pull failed as an outage: the shared breaker counted them and opened
    assert status_of(images) == ("open", 3)
    assert images.pull_image_with_fallback(tiny_image.image) == tiny_image


def test_ensure_base_image_finds_the_local_image_without_pulling(
    engine: Any, tiny_image: PulledImage, make_images: Callable[[Any], DockerImages]
) -> None:
    images = make_images(engine)
    assert images.ensure_base_image(tiny_image.image) == tiny_image
    assert status_of(images) == ("closed", 0)  # the registry was never asked


def test_a_missing_image_is_unavailable(
    engine: Any, make_images: Callable[[Any], DockerImages], sleeps: list[float]
) -> None:
    missing = f"distbreaker-test/missing:{uuid.uuid4().hex[:10]}"
    images = make_images(engine)
    with pytest.raises(ImageUnavailableError) as caught:
        images.pull_image_with_fallback(missing)
    assert caught.value.image == missing
    assert "no local copy" in caught.value.cause
    assert "APIError" in caught.value.cause  # the engine's own words about the registry
    assert sleeps  # backoff was requested, never really slept


def test_a_socket_without_daemon_opens_the_breaker(
    tmp_path: Path, make_images: Callable[[Any], DockerImages]
) -> None:
    nowhere = tmp_path / "nothing.sock"
    client = docker.DockerClient(base_url=f"unix://{nowhere}", version="1.41")
    images = make_images(client)
    with pytest.raises(ImageUnavailableError, match="daemon is unreachable") as caught:
        images.pull_image_with_fallback("redis:7")
    assert "ConnectionError" in caught.value.cause
    assert status_of(images) == ("open", 3)


def test_an_open_breaker_keeps_later_calls_off_the_socket(
    make_images: Callable[[Any], DockerImages],
) -> None:
    # AF_UNIX paths are short (108 bytes): tmp_path is often too long
    path = Path("/tmp") / f"distbreaker-{uuid.uuid4().hex[:10]}.sock"
    counting = CountingSocket(path)
    try:
        client = docker.DockerClient(base_url=f"unix://{path}", version="1.41")
        images = make_images(client)
        with pytest.raises(ImageUnavailableError):
            images.pull_image_with_fallback("redis:7")
        assert counting.connections == 3  # threshold 3: the fourth attempt was refused
        assert status_of(images) == ("open", 3)
        for _ in range(5):
            with pytest.raises(ImageUnavailableError, match="paused"):
                images.pull_image_with_fallback("redis:7")
            with pytest.raises(ImageUnavailableError, match="paused"):
                images.ensure_base_image("redis:7")
        assert counting.connections == 3
    finally:
        counting.close()
        path.unlink(missing_ok=True)


def test_a_silent_pull_stream_times_out_through_the_real_sdk() -> None:
    path = Path("/tmp") / f"distbreaker-{uuid.uuid4().hex[:10]}.sock"
    daemon = SilentDaemon(path)
    try:
        client = docker.DockerClient(base_url=f"unix://{path}", version="1.41")
        images = DockerImages(client, pull_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(ImageUnavailableError, match=r"did not finish within 0\.3s") as caught:
            images.pull_image_with_fallback("redis:7")
        assert time.monotonic() - started < 2.0
        assert isinstance(caught.value.__cause__, PullTimeoutError)
        assert "no local copy" in caught.value.cause  # the lookup got the daemon's 404
        daemon.release.set()  # the parked reader sees the next event, stops, hangs up
        assert daemon.client_closed.wait(5)
    finally:
        daemon.close()
        path.unlink(missing_ok=True)
