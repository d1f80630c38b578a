"""What the httpx transports and the requests adapter share (no HTTP library imported here).

- ``upstream_name``: the default breaker name of an upstream, from scheme, host and port.
- ``Breakers``: one breaker per name, created on first use, safe between threads.
- ``response_verdict`` and ``CountedResponse``: a response is not an exception, yet a 5xx
  must count and a rate limit must hold the breaker open. The transport raises
  ``CountedResponse`` inside ``execute`` so the breaker records it, then catches it outside
  and returns the response untouched.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import threading
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from distbreaker.classify import IGNORED, Classifier, Verdict, as_verdict, classify, for_status
from distbreaker.config import validate_name

logger = logging.getLogger("distbreaker")

B = TypeVar("B")

Clock = Callable[[], float]  # seconds; the breakers' clock, for tests

DEFAULT_PORTS: Mapping[str, int] = {"http": 80, "https": 443}

ResponseClassifier = Callable[[int, Mapping[str, str]], "Verdict | bool"]
"""Judges a response from its status and headers (never its body, which the caller reads)."""

# 5xx (but 501/505) counts; 429, and 403 with rate-limit headers, hold the breaker open.
DEFAULT_RESPONSE_CLASSIFIER: ResponseClassifier = for_status

# Lowercase only: an uppercase letter marks a digested name, so the two forms never meet.
_READABLE = re.compile(r"[a-z0-9._:-]{1,128}", re.ASCII)
_UNSAFE = re.compile(r"[^a-z0-9._:-]", re.ASCII)


@functools.lru_cache(maxsize=4096)
def upstream_name(scheme: str, host: str, port: int | None) -> str:
    """The breaker name of one upstream: ``scheme:host:port``, e.g. ``http:127.0.0.1:8080``.

    Case and a trailing dot do not matter, IPv6 brackets are dropped (``http:::1:8080``),
    the default port is filled in (``https:api.github.com:443``). A host that cannot be
    spelled in 128 name characters (very long, a zone id, not IDNA-encoded) becomes
    ``scheme:<first 64 characters>.H<20 hex digits of SHA-256>:port``: still stable and
    distinct, and never equal to a readable name (those have no uppercase letter).
    """
    scheme = scheme.lower()
    host = host.lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host.removesuffix(".")
    if port is None:
        port = DEFAULT_PORTS.get(scheme)
    port_text = "" if port is None else str(port)
    readable = f"{scheme}:{host}:{port_text}"
    if _READABLE.fullmatch(readable):
        return readable
    digest = hashlib.sha256(readable.encode("utf-8", "surrogatepass")).hexdigest()[:20]
    scheme_part = _UNSAFE.sub("-", scheme)[:16]
    host_part = _UNSAFE.sub("-", host)[:64]
    return f"{scheme_part}:{host_part}.H{digest}:{port_text[:8]}"


class Breakers(Generic[B]):
    """One breaker per name, built by ``build`` on first use; safe to share between threads."""

    def __init__(self, build: Callable[[str], B]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._by_name: dict[str, B] = {}

    def get(self, name: str) -> B:
        breaker = self._by_name.get(name)  # no lock on the hot path: dict reads are atomic
        if breaker is not None:
            return breaker
        with self._lock:
            breaker = self._by_name.get(name)
            if breaker is None:
                breaker = self._build(name)
                self._by_name[name] = breaker
            return breaker

    def snapshot(self) -> dict[str, B]:
        """The breakers created so far, by name."""
        with self._lock:
            return dict(self._by_name)


class CountedResponse(Exception):
    """Carries a response the breaker must record (a 5xx, a rate limit) out of ``execute``."""

    def __init__(self, response: object, verdict: Verdict) -> None:
        super().__init__(f"response judged {verdict}")
        self.response = response
        self.verdict = verdict


def response_verdict(
    classifier: ResponseClassifier, status: int, headers: Mapping[str, str], name: str
) -> Verdict:
    """``classifier``'s verdict on a response; a classifier that fails counts nothing."""
    try:
        verdict = as_verdict(classifier(status, headers))
    except Exception as error:
        logger.warning(
            "breaker %r: response classifier failed on status %s (%s: %s); not counted",
            name,
            status,
            type(error).__name__,
            error,
        )
        return IGNORED
    if verdict.rate_limited and verdict.retry_after is not None and verdict.retry_after <= 0:
        return IGNORED  # "Retry-After: 0" asks nobody to wait: nothing to hold open
    return verdict


def record_through_breaker(
    classifier: ResponseClassifier,
    response: object,
    status: int,
    headers: Mapping[str, str],
    name: str,
) -> None:
    """Raise ``CountedResponse`` when the breaker must record ``response``; else nothing."""
    verdict = response_verdict(classifier, status, headers, name)
    if verdict.counts or verdict.rate_limited:
        raise CountedResponse(response, verdict)


def error_classifier(classifier: Classifier | None) -> Classifier:
    """For the breakers: a counted response keeps its verdict, errors go to ``classifier``."""
    judge = classifier or classify

    def classify_error(error: BaseException) -> Verdict | bool:
        if isinstance(error, CountedResponse):
            return error.verdict
        return judge(error)

    return classify_error


def check_name_rule(name: object) -> None:
    """``name=`` is a breaker name, a callable giving one per request, or ``None``."""
    if name is None or callable(name):
        return
    if isinstance(name, str):
        validate_name(name)
        return
    raise TypeError("name must be a breaker name, a callable taking the request, or None")
