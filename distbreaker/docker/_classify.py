"""Which Docker pull errors are outages, rate limits, or the caller's own business."""

from __future__ import annotations

import re

import docker.errors

from distbreaker.classify import FAILURE, IGNORED, Verdict, classify

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
        verdict = _verdict_for_message(message_of(error))
        if verdict is not None:
            return verdict
        if isinstance(error, PullError):
            return IGNORED
    return classify(error)


def message_of(error: BaseException) -> str:
    if isinstance(error, PullError):
        return error.message
    explanation = getattr(error, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    return str(explanation) if explanation else str(error)
