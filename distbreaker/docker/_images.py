"""``DockerImages``: pull through the shared breaker, else serve the daemon's local copy."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import docker
import docker.errors
import requests

from distbreaker.config import BreakerConfig
from distbreaker.docker._classify import (
    PullError,
    PullTimeoutError,
    classify_pull_error,
    message_of,
)
from distbreaker.docker._pull import PullReader, stream_error
from distbreaker.errors import CircuitOpenError, ImageUnavailableError
from distbreaker.operation import NetworkOperation, create_network_operation
from distbreaker.references import ImageReference, parse_reference

logger = logging.getLogger("distbreaker.docker")

BREAKER_NAME = "docker-registry"


# What a failed pull may raise; anything else (bad input, bugs) propagates unchanged.
_PULL_FAILURES: tuple[type[BaseException], ...] = (
    CircuitOpenError,
    PullError,
    PullTimeoutError,
    docker.errors.DockerException,
    docker.errors.StreamParseError,
    requests.exceptions.RequestException,
    OSError,
)


@dataclass(frozen=True, slots=True)
class PulledImage:
    """An image ready to use: ``source`` says whether the registry or the local copy gave it."""

    image: str
    source: Literal["registry", "local-cache"]
    id: str


def create_registry_operation(
    redis: Any,
    *,
    config: BreakerConfig | None = None,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> NetworkOperation:
    """The shared ``docker-registry`` operation: threshold 3, reset 180 s, 5 attempts, 1 s base.

    ``config`` supplies the other breaker settings (e.g. another ``key_prefix``); ``clock``
    and ``sleep`` are for tests.
    """
    return create_network_operation(
        BREAKER_NAME,
        redis,
        circuit_threshold=3,
        circuit_reset_timeout=180,
        max_retries=5,
        base_delay=1.0,
        config=config,
        clock=clock,
        sleep=sleep,
        classifier=classify_pull_error,
    )


class DockerImages:
    """Pull images through the shared breaker, falling back to the daemon's local copies.

    ``client`` is a ``docker.DockerClient``; without one, ``docker.from_env()`` is called on
    first use, so a stopped daemon is an outage at call time. With ``redis`` and no
    ``operation``, pulls go through the fleet-wide ``docker-registry`` breaker
    (``create_registry_operation``). With neither, there is nothing to share: each call
    makes one pull attempt, without retries, and falls back to the local copy.
    """

    def __init__(
        self,
        client: Any = None,
        *,
        redis: Any = None,
        operation: NetworkOperation | None = None,
        pull_timeout: float = 300.0,
    ) -> None:
        if not pull_timeout > 0:
            raise ValueError("pull_timeout must be a positive number of seconds")
        self.pull_timeout = float(pull_timeout)
        if operation is None and redis is not None:
            operation = create_registry_operation(redis)
        self.operation = operation
        self._client = client
        self._owns_client = client is None
        self._client_lock = threading.Lock()
        # The last contact with the daemon failed to connect: its local images are out of
        # reach too, so refused calls do not knock on its socket again.
        self._daemon_unreachable = False
        self._warned: set[str] = set()

    def pull_image_with_fallback(self, image: str) -> PulledImage:
        """Pull ``image`` from its registry; if that fails, use the local copy.

        Raises ``ValueError`` for a bad reference (before any I/O) and
        ``ImageUnavailableError`` when neither the registry nor the daemon has the image.
        """
        reference = parse_reference(image)
        failed_attempts: list[BaseException] = []
        try:
            pulled = self._pull_through_breaker(reference, failed_attempts)
        except _PULL_FAILURES as error:
            return self._local_copy(
                reference, error, _describe_pull_failure(error, failed_attempts)
            )
        self._warned.discard(pulled.image)
        return pulled

    def ensure_base_image(self, image: str) -> PulledImage:
        """Make sure ``image`` is present: the local copy if the daemon has one, else a pull.

        A present image costs one inspect and no registry call, so builds keep working
        offline; a missing one is pulled with ``pull_image_with_fallback``.
        """
        reference = parse_reference(image)
        if not self._daemon_unreachable:
            with contextlib.suppress(*_PULL_FAILURES):
                found = self._find_local(reference)
                if found is not None:
                    return found
        return self.pull_image_with_fallback(image)

    def close(self) -> None:
        """Close the Docker client if this object created it."""
        if not self._owns_client:
            return
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- the registry -------------------------------------------------------------------

    def _pull_through_breaker(
        self, reference: ImageReference, failed_attempts: list[BaseException]
    ) -> PulledImage:
        def attempt() -> PulledImage:
            try:
                return self._pull(reference)
            except Exception as error:
                failed_attempts.append(error)
                raise

        if self.operation is None:
            return attempt()
        return self.operation.execute(attempt)

    def _pull(self, reference: ImageReference) -> PulledImage:
        """One pull attempt: stream the progress, fail on an error event, then inspect."""
        image = str(reference)
        with self._daemon_contact():
            client = self._docker()
            reader = PullReader(
                lambda: client.api.pull(
                    reference.name, tag=reference.pull_tag, stream=True, decode=True
                ),
                image,
                self.pull_timeout,
            )
            try:
                for event in reader.events():
                    message = stream_error(event)
                    if message is not None:
                        raise PullError(image, message)
            finally:
                reader.stop()  # whatever ended the wait, the reader closes the stream
            pulled = client.images.get(reference.pinned)
        return PulledImage(image, "registry", str(pulled.id))

    # -- the local copy -----------------------------------------------------------------

    def _local_copy(
        self, reference: ImageReference, error: BaseException, cause: str
    ) -> PulledImage:
        image = str(reference)
        if self._daemon_unreachable:
            raise ImageUnavailableError(
                image, f"{cause}; the Docker daemon is unreachable, so no local copy either"
            ) from error
        try:
            found = self._find_local(reference)
        except _PULL_FAILURES as lookup_error:
            raise ImageUnavailableError(
                image,
                f"{cause}; looking for a local copy failed: {_describe_failure(lookup_error)}",
            ) from error
        if found is None:
            raise ImageUnavailableError(image, f"{cause}; no local copy") from error
        self._log_local_use(found, cause)
        return found

    def _find_local(self, reference: ImageReference) -> PulledImage | None:
        with self._daemon_contact():
            client = self._docker()
            try:
                local = client.images.get(str(reference))
            except docker.errors.NotFound:
                return None
        return PulledImage(str(reference), "local-cache", str(local.id))

    def _log_local_use(self, found: PulledImage, cause: str) -> None:
        first = found.image not in self._warned
        self._warned.add(found.image)
        logger.log(
            logging.WARNING if first else logging.DEBUG,
            "image %s: using the local copy %s because the registry pull failed: %s",
            found.image,
            found.id,
            cause,
        )

    # -- the daemon ---------------------------------------------------------------------

    def _docker(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = docker.from_env()
            return self._client

    @contextlib.contextmanager
    def _daemon_contact(self) -> Iterator[None]:
        """Remember whether the daemon answered the calls made inside."""
        try:
            yield
        except BaseException as error:
            if _is_daemon_unreachable(error):
                self._daemon_unreachable = True
            elif isinstance(error, docker.errors.APIError | PullError):
                self._daemon_unreachable = False
            raise
        self._daemon_unreachable = False


def _is_daemon_unreachable(error: BaseException) -> bool:
    """No answer from the Docker daemon at all (its socket or host is down)."""
    if isinstance(error, requests.exceptions.ConnectionError):
        return True
    return type(error) is docker.errors.DockerException  # from_env() found no daemon


def _describe_failure(error: BaseException) -> str:
    """A one-line reason for logs and ``ImageUnavailableError``."""
    if isinstance(error, CircuitOpenError):
        return f"registry pulls are paused ({error})"
    return f"{type(error).__name__}: {message_of(error)}"


def _describe_pull_failure(error: BaseException, failed_attempts: list[BaseException]) -> str:
    """Why a pull gave nothing: the last attempt's error, and the refusal that ended it, if any."""
    if not failed_attempts:
        return _describe_failure(error)
    last = failed_attempts[-1]
    cause = _describe_failure(last)
    if len(failed_attempts) > 1:
        cause += f" ({len(failed_attempts)} attempts)"
    if error is not last:
        cause += f"; then {_describe_failure(error)}"
    return cause
