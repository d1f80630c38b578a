"""Every error distbreaker raises.

    DistbreakerError
    ├── CircuitOpenError        the breaker refused the call (name, state, retry_after)
    ├── StoreUnavailableError   Redis did not answer and on_store_error="raise"
    ├── PermissionDeniedError   Redis refused a command: the Redis user (ACL) lacks a permission
                                (also a ``PermissionError``)
    ├── TokenUnavailableError   no GitHub App token: the API is down and no cached token is valid
    └── ImageUnavailableError   no registry and no local copy of a Docker image

Bad input (names, configuration, URLs, image references) is a ``ValueError`` (pydantic's
``ValidationError`` for configuration), raised before any I/O.

The clients add their own, outside this tree: ``distbreaker.github.GitHubAPIError`` (an
``httpx.HTTPStatusError`` for an answer the client cannot turn into a result, such as a 422),
and, never escaping ``DockerImages`` (they become the ``__cause__`` of
``ImageUnavailableError``), ``distbreaker.docker.PullError`` (an error event in a pull stream)
and ``distbreaker.docker.PullTimeoutError`` (``pull_timeout`` passed).
"""

from __future__ import annotations

from typing import Any


class DistbreakerError(Exception):
    """Base class of every error raised by distbreaker."""


class CircuitOpenError(DistbreakerError):
    """The breaker refused the call without touching the upstream.

    ``locally``: this process refused on its own evidence while the fleet's breaker is
    closed (too few reporters fail for the fleet to open).
    """

    def __init__(
        self, name: str, state: str, retry_after: float | None = None, *, locally: bool = False
    ) -> None:
        self.name = name
        self.state = state
        self.retry_after = retry_after
        self.locally = locally
        when = "" if retry_after is None else f"; retry in {retry_after:.3f}s"
        where = " (locally)" if locally else ""
        super().__init__(f"circuit {name!r} is {state}{where}{when}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_refusal,
            (type(self), self.name, self.state, self.retry_after, self.locally),
        )


def _rebuild_refusal(
    kind: type[CircuitOpenError], name: str, state: str, retry_after: float | None, locally: bool
) -> CircuitOpenError:
    return kind(name, state, retry_after, locally=locally)


class StoreUnavailableError(DistbreakerError):
    """Redis could not be reached and the breaker is configured to raise."""

    def __init__(self, name: str, cause: str) -> None:
        self.name = name
        self.cause = cause
        super().__init__(f"breaker store for {name!r} is unavailable: {cause}")

    def __reduce__(self) -> tuple[type[StoreUnavailableError], tuple[str, str]]:
        return (type(self), (self.name, self.cause))


class PermissionDeniedError(DistbreakerError, PermissionError):
    """Redis refused one of the breaker's commands: its ACL user lacks a permission.

    Redis answered, so this is no outage: the breaker stays in shared mode (no local mode,
    no back-off). ``operation`` names what was refused (``"force_open"``, ``"status"``…),
    ``needed`` the permission that would allow it, ``detail`` Redis's own words.
    """

    def __init__(self, name: str, operation: str, needed: str, detail: str) -> None:
        self.name = name
        self.operation = operation
        self.needed = needed
        self.detail = detail
        super().__init__(
            f"Redis refused {operation} for breaker {name!r}: this Redis user lacks {needed} "
            f"({detail})"
        )

    def __reduce__(self) -> tuple[type[PermissionDeniedError], tuple[str, str, str, str]]:
        return (type(self), (self.name, self.operation, self.needed, self.detail))


class TokenUnavailableError(DistbreakerError):
    """No usable GitHub App token: minting failed and no cached token is still valid."""


class ImageUnavailableError(DistbreakerError):
    """A Docker image is neither pullable from its registry nor present locally."""

    def __init__(self, image: str, cause: str) -> None:
        self.image = image
        self.cause = cause
        super().__init__(f"image {image!r} is unavailable: {cause}")

    def __reduce__(self) -> tuple[type[ImageUnavailableError], tuple[str, str]]:
        return (type(self), (self.image, self.cause))


def missing_extra(extra: str, module: str) -> ImportError:
    """The one-line error for importing ``module`` without the extra that brings its needs."""
    return ImportError(f"{module} needs the [{extra}] extra: pip install 'distbreaker[{extra}]'")
