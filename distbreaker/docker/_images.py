"""``DockerImages``: pull through the registry's shared breaker, else serve the local copy."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import docker
import docker.errors
import requests

from distbreaker.config import BreakerConfig, host_breaker_name
from distbreaker.docker._classify import (
    PullError,
    PullTimeoutError,
    classify_pull_error,
    message_of,
)
from distbreaker.docker._pull import PullReader, stream_error
from distbreaker.errors import CircuitOpenError, ImageUnavailableError
from distbreaker.operation import NetworkOperation, create_network_operation
from distbreaker.references import DEFAULT_REGISTRY, ImageReference, parse_reference
from distbreaker.retry import RetryBudget

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


def registry_breaker_name(registry: str = DEFAULT_REGISTRY) -> str:
    """The default breaker of one registry: ``docker-registry`` for Docker Hub
    (``docker.io``), else ``docker-registry:host[:port]`` (``docker-registry:ghcr.io``,
    ``docker-registry:127.0.0.1:5000``), so one registry's outage leaves the others alone."""
    registry = registry.lower()
    if registry in (DEFAULT_REGISTRY, "index.docker.io", "registry-1.docker.io"):
        return BREAKER_NAME
    host, port = _split_port(registry)
    return host_breaker_name(BREAKER_NAME, host, port)


def _split_port(registry: str) -> tuple[str, int | None]:
    """``host[:port]`` (IPv6 hosts in brackets) into the host and the port, if any."""
    host, colon, port = registry.rpartition(":")
    if colon and port.isdigit() and (not host.startswith("[") or host.endswith("]")):
        return host, int(port)
    return registry, None


def create_registry_operation(
    redis: Any,
    registry: str = DEFAULT_REGISTRY,
    *,
    circuit_threshold: int | None = None,
    circuit_reset_timeout: float | None = None,
    max_retries: int = 5,
    base_delay: float = 1.0,
    max_delay: float = 30.0,
    multiplier: float = 2.0,
    jitter: float = 0.1,
    deadline: float | None = None,
    full_jitter: bool = False,
    config: BreakerConfig | None = None,
    name: str | None = None,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
    retry_budget: RetryBudget | None = None,
) -> NetworkOperation:
    """The shared operation of one registry, judged by ``classify_pull_error``.

    Defaults: threshold 3, reset 180 s, 5 attempts, 1 s base delay. ``circuit_threshold``
    and ``circuit_reset_timeout`` win over ``config``; without them, the ``failure_threshold``
    and ``reset_timeout`` that ``config`` sets are kept, and ``config`` supplies every other
    breaker setting (``key_prefix``, ``window``, ...). The breaker is
    ``registry_breaker_name(registry)`` unless ``name`` is given. ``clock`` and ``sleep``
    are for tests.
    """
    given = config or BreakerConfig()
    chosen = given.model_fields_set
    if circuit_threshold is None:
        circuit_threshold = given.failure_threshold if "failure_threshold" in chosen else 3
    if circuit_reset_timeout is None:
        circuit_reset_timeout = given.reset_timeout if "reset_timeout" in chosen else 180
    return create_network_operation(
        registry_breaker_name(registry) if name is None else name,
        redis,
        circuit_threshold=circuit_threshold,
        circuit_reset_timeout=circuit_reset_timeout,
        max_retries=max_retries,
        base_delay=base_delay,
        max_delay=max_delay,
        multiplier=multiplier,
        jitter=jitter,
        deadline=deadline,
        full_jitter=full_jitter,
        config=config,
        clock=clock,
        sleep=sleep,
        classifier=classify_pull_error,
        retry_budget=retry_budget,
    )


class DockerImages:
    """Pull images through shared breakers, falling back to the daemon's local copies.

    ``client`` is a ``docker.DockerClient``; without one, ``docker.from_env()`` is called on
    first use, so a stopped daemon is an outage at call time. Which breaker a pull goes
    through:

    - ``redis`` alone: one fleet-wide breaker per registry host, built on first use by
      ``create_registry_operation(redis, registry)`` (``docker-registry`` for Docker Hub,
      ``docker-registry:ghcr.io`` ...), so one registry's outage never stops pulls from
      another;
    - ``registry_operation``: your own per-registry operations, ``registry -> operation``
      (e.g. ``lambda registry: create_registry_operation(redis, registry, max_retries=2)``);
    - ``operation``: one operation for every registry (its breaker name is yours);
    - none of them: nothing to share, one pull attempt per call without retries.

    Whatever the operation, pulls are judged by ``classify_pull_error`` (a timed-out pull is
    not retried, ``toomanyrequests`` holds the breaker open for ``RATE_LIMIT_COOL_OFF``, an
    error inside the progress stream counts as the daemon reports it): an operation built
    with another classifier is used through ``judged_by(classify_pull_error)``, same breaker.
    """

    def __init__(
        self,
        client: Any = None,
        *,
        redis: Any = None,
        operation: NetworkOperation | None = None,
        registry_operation: Callable[[str], NetworkOperation] | None = None,
        pull_timeout: float = 300.0,
    ) -> None:
        if not pull_timeout > 0:
            raise ValueError("pull_timeout must be a positive number of seconds")
        if operation is not None and registry_operation is not None:
            raise ValueError("give operation (one for every registry) or registry_operation")
        if operation is not None and not isinstance(operation, NetworkOperation):
            raise TypeError("operation must be a NetworkOperation (DockerImages is synchronous)")
        self.pull_timeout = float(pull_timeout)
        self.operation = operation
        if registry_operation is None and operation is None and redis is not None:
            registry_operation = functools.partial(create_registry_operation, redis)
        self._registry_operation = registry_operation
        self._operations: dict[str, NetworkOperation] = {}
        self._operations_lock = threading.Lock()
        self._client = client
        self._owns_client = client is None
        self._client_lock = threading.Lock()
        # The last contact with the daemon failed to connect: its local images are out of
        # reach too, so refused calls do not knock on its socket again.
        self._daemon_unreachable = False
        self._warned: set[str] = set()

    def operation_for(self, image: str) -> NetworkOperation | None:
        """The operation pulls of ``image`` go through (built on first use), or ``None``
        when nothing is shared. ``ValueError`` for a bad reference."""
        return self._operation_of(parse_reference(image).registry)

    def _operation_of(self, registry: str) -> NetworkOperation | None:
        key = "" if self.operation is not None else registry
        if self.operation is None and self._registry_operation is None:
            return None
        with self._operations_lock:
            found = self._operations.get(key)
            if found is None:
                given = self.operation
                if given is None:
                    assert self._registry_operation is not None
                    given = self._registry_operation(registry)
                found = given.judged_by(classify_pull_error)
                self._operations[key] = found
            return found

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

        operation = self._operation_of(reference.registry)
        if operation is None:
            return attempt()
        return operation.execute(attempt)

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
