"""Which errors say the upstream is unhealthy, which are worth retrying, which are rate limits.

One place decides, for the breaker and for retries alike. The default ``classify`` knows
httpx, requests, the docker SDK and the standard library without importing any of them
eagerly; pass your own callable (returning a ``Verdict`` or a plain bool) to change it.
"""

from __future__ import annotations

import datetime
import email.utils
import errno
import re
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from distbreaker.errors import CircuitOpenError

# A rate limit that names no time: wait this long (GitHub documents "at least a minute").
DEFAULT_RATE_LIMIT_WAIT = 60.0
# Never hold a breaker open longer than this on an upstream's word alone.
MAX_RATE_LIMIT_WAIT = 3600.0

_NOT_OUTAGE_5XX = frozenset({501, 505})  # Not Implemented, HTTP Version Not Supported
_LOCAL_OS_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    ChildProcessError,
)
# OSErrors about this machine (files, descriptors, memory, disk), not about the network.
_LOCAL_ERRNO_NAMES = """ENOENT EACCES EPERM EEXIST EISDIR ENOTDIR ENOTEMPTY ENAMETOOLONG ELOOP
EXDEV EROFS ENOSPC EDQUOT EMFILE ENFILE ENOMEM EBADF"""
_LOCAL_ERRNOS = frozenset(
    getattr(errno, n) for n in _LOCAL_ERRNO_NAMES.split() if hasattr(errno, n)
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one error means.

    ``counts``: an upstream failure for the breaker. ``retryable``: worth another attempt.
    ``rate_limited``: the upstream is healthy but asks us to wait ``retry_after`` seconds.
    """

    counts: bool
    retryable: bool
    rate_limited: bool = False
    retry_after: float | None = None


FAILURE = Verdict(counts=True, retryable=True)
IGNORED = Verdict(counts=False, retryable=False)

Classifier = Callable[[BaseException], "Verdict | bool"]


def as_verdict(value: Verdict | bool) -> Verdict:
    """Accept a predicate's bool as well as a full ``Verdict``."""
    if isinstance(value, Verdict):
        return value
    return FAILURE if value else IGNORED


# Delta-seconds as RFC 9110 has them (ASCII digits only: "²" and "١٢" are digits to
# str.isdigit, and float() refuses the first), or the "1.5" some servers send.
_SECONDS = re.compile(r"[0-9]{1,20}(\.[0-9]{1,9})?", re.ASCII)
_EPOCH_SECONDS = re.compile(r"[0-9]{1,20}", re.ASCII)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date.

    Anything else, however odd (``"²"``, ``"inf"``, a date Python cannot represent), reads
    as no header: ``None``, never an exception.
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text:
        return None
    if _SECONDS.fullmatch(text):
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": the date is UTC, the sender just will not say so
        when = when.replace(tzinfo=datetime.UTC)
    current = time.time() if now is None else now
    try:
        return max(0.0, when.timestamp() - current)
    except (OverflowError, OSError, ValueError):  # a date no clock can reach
        return None


def rate_limit_wait(
    status: int, headers: Mapping[str, str], body: str = "", now: float | None = None
) -> float | None:
    """If a response is a rate limit, the seconds to wait; otherwise ``None``.

    Primary limits (``x-ratelimit-remaining: 0``) wait until ``x-ratelimit-reset``;
    secondary limits honour ``retry-after`` or wait a minute.
    """
    if status not in (403, 429):
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    current = time.time() if now is None else now
    retry_after = parse_retry_after(lowered.get("retry-after"), current)
    if retry_after is not None:
        return min(retry_after, MAX_RATE_LIMIT_WAIT)
    if lowered.get("x-ratelimit-remaining", "").strip() == "0":
        reset = lowered.get("x-ratelimit-reset", "").strip()
        if _EPOCH_SECONDS.fullmatch(reset):  # ASCII digits only, as for Retry-After
            return min(max(0.0, float(reset) - current), MAX_RATE_LIMIT_WAIT)
        return DEFAULT_RATE_LIMIT_WAIT
    if status == 429 or "rate limit" in body.lower():
        return DEFAULT_RATE_LIMIT_WAIT
    return None


def for_status(
    status: int, headers: Mapping[str, str] | None = None, body: str = "", now: float | None = None
) -> Verdict:
    """The verdict for an HTTP response status (with headers for rate limits)."""
    wait = rate_limit_wait(status, headers or {}, body, now)
    if wait is not None:
        return Verdict(counts=False, retryable=False, rate_limited=True, retry_after=wait)
    if status >= 500 and status not in _NOT_OUTAGE_5XX:
        retry_after = parse_retry_after((headers or {}).get("retry-after"), now)
        return Verdict(counts=True, retryable=True, retry_after=retry_after)
    return IGNORED


def classify(exc: BaseException) -> Verdict:
    """The default classifier (see the module docstring)."""
    if isinstance(exc, CircuitOpenError):
        return IGNORED  # a breaker's own refusal (also an httpx/requests error) is no outage
    for check in (_httpx, _docker, _requests, _urllib, _status_attribute):
        verdict = check(exc)
        if verdict is not None:
            return verdict
    if isinstance(exc, TimeoutError | ConnectionError) or _is_socket_error(exc):
        return FAILURE
    if isinstance(exc, (*_LOCAL_OS_ERRORS, ValueError)):
        return IGNORED  # io.UnsupportedOperation is an OSError and a ValueError: a bug
    if isinstance(exc, OSError):
        return IGNORED if exc.errno in _LOCAL_ERRNOS else FAILURE
    return IGNORED


def _is_socket_error(exc: BaseException) -> bool:
    """TLS and name-resolution errors: their ``errno`` is not an errno (SSL_ERROR_SSL is 1)."""
    if isinstance(exc, socket.gaierror | socket.herror):
        return True
    ssl = sys.modules.get("ssl")  # not imported: no TLS error can exist
    return ssl is not None and isinstance(exc, ssl.SSLError)


def is_failure(exc: BaseException) -> bool:
    """The default predicate: does this error count against the upstream's health?"""
    return classify(exc).counts


def _headers_of(response: Any) -> dict[str, str]:
    headers = getattr(response, "headers", None) or {}
    try:
        return {str(k): str(v) for k, v in headers.items()}
    except AttributeError:
        return {}


def _body_of(response: Any) -> str:
    try:
        text = response.text
    except Exception:  # a streamed or closed body: nothing to read
        return ""
    return text[:2000] if isinstance(text, str) else ""


def _httpx(exc: BaseException) -> Verdict | None:
    httpx = sys.modules.get("httpx")
    if httpx is None:
        return None
    if isinstance(exc, httpx.HTTPStatusError):
        response = exc.response
        return for_status(response.status_code, _headers_of(response), _body_of(response))
    if isinstance(exc, httpx.PoolTimeout):
        return IGNORED  # our own connection pool is full: the upstream is not to blame
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
        return IGNORED  # a bad URL or a request we built wrong
    if isinstance(exc, httpx.TransportError):
        return FAILURE
    if isinstance(exc, httpx.InvalidURL):
        return IGNORED
    return None


def _docker(exc: BaseException) -> Verdict | None:
    errors = sys.modules.get("docker.errors")
    if errors is None:
        return None
    if isinstance(exc, errors.NotFound):
        return IGNORED  # also when raised without a response (ImageNotFound)
    if isinstance(exc, errors.APIError):
        explanation = str(getattr(exc, "explanation", "") or exc)
        if "toomanyrequests" in explanation.lower():
            wait = DEFAULT_RATE_LIMIT_WAIT
            return Verdict(counts=False, retryable=False, rate_limited=True, retry_after=wait)
        status = exc.status_code
        if status is None:
            return FAILURE
        return for_status(int(status), _headers_of(exc.response))
    if type(exc) is errors.DockerException:
        return FAILURE  # from_env() could not reach the daemon
    return None


def _requests(exc: BaseException) -> Verdict | None:
    requests_errors = sys.modules.get("requests.exceptions")
    if requests_errors is None:
        return None
    if isinstance(exc, ValueError) and isinstance(exc, requests_errors.RequestException):
        return IGNORED  # InvalidURL, MissingSchema, InvalidHeader …: our input
    if isinstance(exc, requests_errors.HTTPError):
        response = exc.response
        if response is None:
            return FAILURE
        return for_status(response.status_code, _headers_of(response), _body_of(response))
    if isinstance(exc, requests_errors.ConnectionError | requests_errors.Timeout):
        return FAILURE
    if isinstance(exc, requests_errors.ChunkedEncodingError | requests_errors.RetryError):
        return FAILURE  # the connection broke mid-body; urllib3 gave up on 5xx answers
    if isinstance(exc, requests_errors.RequestException):
        return IGNORED
    return None


def _urllib(exc: BaseException) -> Verdict | None:
    """The standard library's ``urllib.error.HTTPError`` (an OSError with ``code``)."""
    errors = sys.modules.get("urllib.error")
    if errors is None or not isinstance(exc, errors.HTTPError):
        return None
    headers = {str(k): str(v) for k, v in exc.headers.items()} if exc.headers else {}
    return for_status(int(exc.code), headers)


def _status_attribute(exc: BaseException) -> Verdict | None:
    """Errors of other clients that carry ``status_code`` (and maybe ``headers``)."""
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int) or isinstance(status, bool):
        return None
    headers = getattr(exc, "headers", None)
    mapping = dict(headers) if isinstance(headers, Mapping) else {}
    return for_status(status, mapping)
