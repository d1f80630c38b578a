"""Docker images through the shared ``docker-registry`` breaker: pull, else use the local copy.

``DockerImages.pull_image_with_fallback(image)`` validates the reference (no I/O before),
pulls it through the breaker with retries, and when the registry cannot deliver it (outage,
rate limit, refusal, not found) serves the copy the daemon already has, or raises
``ImageUnavailableError`` naming the image and the cause.

Pull deadline: the SDK's pull sends its request with no timeout at all and then blocks in
the socket for as long as the daemon says nothing. So the low-level streaming pull runs on a
daemon thread that hands each progress event to the caller through a queue; the caller waits
at most until ``pull_timeout`` has passed since the pull began, whether the stream is silent
or chatty, then raises ``PullTimeoutError``. The reader thread stops at the next event or at
the end of the stream (closing the response cancels the daemon's pull); a stream that never
sends anything again keeps that one idle thread parked until the daemon closes it. (A
socket-level timeout is out of reach: ``APIClient.pull`` passes ``timeout=None`` itself.)
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import docker
import docker.errors
import requests

from distbreaker.classify import FAILURE, IGNORED, Verdict, classify
from distbreaker.config import BreakerConfig
from distbreaker.errors import CircuitOpenError, ImageUnavailableError
from distbreaker.operation import NetworkOperation, create_network_operation
from distbreaker.references import ImageReference, parse_reference

__all__ = [
    "BREAKER_NAME",
    "RATE_LIMIT_COOL_OFF",
    "DockerImages",
    "PullError",
    "PullTimeoutError",
    "PulledImage",
    "classify_pull_error",
    "create_registry_operation",
]

logger = logging.getLogger("distbreaker.docker")

BREAKER_NAME = "docker-registry"
# Docker Hub counts pulls over hours and names no reset time: pause the fleet for a while.
RATE_LIMIT_COOL_OFF = 300.0

_RATE_LIMITED = re.compile(r"toomanyrequests|rate limit", re.IGNORECASE)
_NOT_AN_OUTAGE = re.compile(
    r"manifest unknown|not found|denied|unauthorized|authentication required|forbidden"
    r"|invalid reference format|does not exist|name unknown|no matching manifest",
    re.IGNORECASE,
)
_OUTAGE = re.compile(
    r"dial tcp|i/o timeout|no such host|connection refused|connection reset|tls handshake"
    r"|net/http|\beof\b|service unavailable|bad gateway|gateway timeout|internal server error"
    r"|unexpected http status: 5\d\d|context deadline exceeded|name resolution"
    r"|network is unreachable|request canceled|broken pipe|server misbehaving",
    re.IGNORECASE,
)


class PullError(Exception):
    """The daemon reported an error inside a pull's progress stream."""

    def __init__(self, image: str, message: str) -> None:
        self.image = image
        self.message = message
        super().__init__(f"pulling {image!r} failed: {message}")

    def __reduce__(self) -> tuple[type[PullError], tuple[str, str]]:
        return (type(self), (self.image, self.message))


class PullTimeoutError(TimeoutError):
    """A pull did not finish within ``pull_timeout`` seconds."""

    def __init__(self, image: str, timeout: float) -> None:
        self.image = image
        self.timeout = timeout
        super().__init__(f"pulling {image!r} did not finish within {timeout:g}s")

    def __reduce__(self) -> tuple[type[PullTimeoutError], tuple[str, float]]:
        return (type(self), (self.image, self.timeout))


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


def _verdict_for_message(message: str) -> Verdict | None:
    """The verdict for a daemon's error text about a pull, or ``None`` if the text says nothing."""
    if _RATE_LIMITED.search(message):
        return Verdict(
            counts=False, retryable=False, rate_limited=True, retry_after=RATE_LIMIT_COOL_OFF
        )
    if _NOT_AN_OUTAGE.search(message):
        return IGNORED
    if _OUTAGE.search(message):
        return FAILURE
    return None


def classify_pull_error(error: BaseException) -> Verdict:
    """Registry or daemon unreachable, 5xx: outage. ``toomanyrequests``: rate limit.

    Not found, denied, unauthorized, bad reference: not an outage. A timed-out pull counts
    but is not retried (another full wait would only delay the local copy). Other stream
    errors (a full disk, a corrupt layer) are local trouble and do not count.
    """
    if isinstance(error, PullTimeoutError):
        return Verdict(counts=True, retryable=False)
    if isinstance(error, docker.errors.StreamParseError):
        return FAILURE
    if isinstance(error, PullError | docker.errors.APIError):
        verdict = _verdict_for_message(_message_of(error))
        if verdict is not None:
            return verdict
        if isinstance(error, PullError):
            return IGNORED
    return classify(error)


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
            reader = _PullReader(
                lambda: client.api.pull(
                    reference.name, tag=reference.pull_tag, stream=True, decode=True
                ),
                image,
                self.pull_timeout,
            )
            try:
                for event in reader.events():
                    message = _stream_error(event)
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
    return f"{type(error).__name__}: {_message_of(error)}"


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


def _message_of(error: BaseException) -> str:
    if isinstance(error, PullError):
        return error.message
    explanation = getattr(error, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    return str(explanation) if explanation else str(error)


def _stream_error(event: Any) -> str | None:
    """The error text of one progress event, or ``None`` for progress."""
    if not isinstance(event, dict):
        return None
    detail = event.get("errorDetail")
    error = event.get("error")
    if detail is None and error is None:
        return None
    if isinstance(detail, dict) and detail.get("message"):
        return str(detail["message"])
    return str(error or detail or "unknown error")


class _PullReader:
    """Reads a pull's progress events on a daemon thread so the caller can stop waiting."""

    def __init__(self, start: Callable[[], Iterable[Any]], image: str, timeout: float) -> None:
        self._image = image
        self._timeout = timeout
        self._deadline = time.monotonic() + timeout
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._stopped = threading.Event()
        thread = threading.Thread(
            target=self._read, args=(start,), name="distbreaker-docker-pull", daemon=True
        )
        thread.start()

    def events(self) -> Iterator[Any]:
        """Each event as it arrives; ``PullTimeoutError`` once the deadline has passed."""
        while True:
            remaining = self._deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise queue.Empty
                kind, value = self._queue.get(timeout=remaining)
            except queue.Empty:
                raise PullTimeoutError(self._image, self._timeout) from None
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    def stop(self) -> None:
        self._stopped.set()

    def _read(self, start: Callable[[], Iterable[Any]]) -> None:
        try:
            stream = start()
            try:
                for event in stream:
                    if self._stopped.is_set():
                        return
                    self._queue.put(("event", event))
            finally:
                close = getattr(stream, "close", None)
                if callable(close):
                    close()
        except BaseException as error:  # handed to the waiting caller, who re-raises it
            self._queue.put(("error", error))
            return
        self._queue.put(("end", None))
