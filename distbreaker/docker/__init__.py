"""Docker images through one shared breaker per registry: pull, else use the local copy.

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

from distbreaker.errors import missing_extra

try:
    import docker as _docker  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised from a core-only install
    raise missing_extra("docker", "distbreaker.docker") from error

from distbreaker.docker._classify import (
    RATE_LIMIT_COOL_OFF,
    PullError,
    PullTimeoutError,
    classify_pull_error,
)
from distbreaker.docker._images import (
    BREAKER_NAME,
    DockerImages,
    PulledImage,
    create_registry_operation,
    registry_breaker_name,
)

__all__ = [
    "BREAKER_NAME",
    "RATE_LIMIT_COOL_OFF",
    "DockerImages",
    "PullError",
    "PullTimeoutError",
    "PulledImage",
    "classify_pull_error",
    "create_registry_operation",
    "registry_breaker_name",
]
