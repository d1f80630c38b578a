"""A requests adapter that puts a shared breaker in front of every upstream (extra ``[requests]``).

    session.mount("https://", BreakerAdapter(distbreaker.connect(url)))

The same behaviour as ``distbreaker.httpx.BreakerTransport``: one breaker per upstream,
named ``scheme:host:port`` (``https:api.github.com:443``) unless ``name=`` says otherwise,
created on first use with one ``BreakerConfig`` and shared through Redis. Connection errors
and timeouts count, and so do 5xx responses but 501/505; a 429, or a 403 with rate-limit
headers, holds the breaker open for the whole fleet for ``Retry-After`` (or until
``x-ratelimit-reset``). Responses are returned untouched: the verdict is taken when the
headers arrive, before requests reads the body (``stream=True`` still streams).

A refused request raises ``CircuitOpenConnectionError``: a ``CircuitOpenError`` and a
``requests.ConnectionError``, the error requests raises when a request could not be sent,
so ``except requests.ConnectionError`` (or ``RequestException``) code keeps working.

``BreakerAdapter`` is an ``HTTPAdapter``: it takes ``pool_connections``, ``pool_maxsize``,
``max_retries`` and ``pool_block`` as usual (urllib3's retries happen inside one breaker
call), and combines with another ``HTTPAdapter`` subclass as ``class A(BreakerAdapter, Yours)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast
from urllib.parse import urlsplit

try:
    import requests
    from requests.adapters import DEFAULT_POOLBLOCK, DEFAULT_POOLSIZE, DEFAULT_RETRIES, HTTPAdapter
    from urllib3.util import Retry
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "distbreaker.requests needs requests: pip install 'distbreaker[requests]'"
    ) from error

from distbreaker import Breaker, BreakerConfig, CircuitOpenError
from distbreaker._http import (
    DEFAULT_RESPONSE_CLASSIFIER,
    Breakers,
    Clock,
    CountedResponse,
    ResponseClassifier,
    check_name_rule,
    error_classifier,
    record_through_breaker,
    upstream_name,
)
from distbreaker.classify import Classifier
from distbreaker.config import validate_name

__all__ = ["BreakerAdapter", "CircuitOpenConnectionError"]

NameRule = str | Callable[[requests.PreparedRequest], str] | None
Timeout = float | tuple[float, float] | tuple[float, None] | None
Cert = bytes | str | tuple[bytes | str, bytes | str] | None


class CircuitOpenConnectionError(CircuitOpenError, requests.ConnectionError):
    """The breaker refused the request: it never left this process.

    Carries ``name``, ``state`` and ``retry_after`` (seconds, or ``None``) like every
    ``CircuitOpenError``, and ``request`` like every ``requests.RequestException``.
    """

    def __init__(
        self,
        name: str,
        state: str,
        retry_after: float | None = None,
        *,
        request: requests.PreparedRequest | None = None,
    ) -> None:
        super().__init__(name, state, retry_after)
        self.request = request


def _refused(
    refusal: CircuitOpenError, request: requests.PreparedRequest
) -> CircuitOpenConnectionError:
    if isinstance(refusal, CircuitOpenConnectionError):
        return refusal  # a wrapped BreakerAdapter refused already
    return CircuitOpenConnectionError(
        refusal.name, refusal.state, refusal.retry_after, request=request
    )


class BreakerAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose every request goes through the breaker of its upstream.

    ``redis`` is a ``redis.Redis`` (``distbreaker.connect``) or cluster client; ``close()``
    closes the connection pools, not ``redis``. ``name`` is a breaker name for every request,
    or a callable ``PreparedRequest -> name``. ``classifier`` judges exceptions,
    ``response_classifier(status, headers)`` judges responses (default
    ``distbreaker.classify.for_status``); ``clock`` is for tests.
    """

    def __init__(
        self,
        redis: Any,
        *,
        config: BreakerConfig | None = None,
        name: NameRule = None,
        classifier: Classifier | None = None,
        response_classifier: ResponseClassifier | None = None,
        clock: Clock | None = None,
        pool_connections: int = DEFAULT_POOLSIZE,
        pool_maxsize: int = DEFAULT_POOLSIZE,
        max_retries: Retry | int | None = DEFAULT_RETRIES,
        pool_block: bool = DEFAULT_POOLBLOCK,
    ) -> None:
        check_name_rule(name)
        judge = error_classifier(classifier)

        def build(breaker_name: str) -> Breaker:
            return Breaker(breaker_name, redis, config, clock, classifier=judge)

        self._name = name
        self._response_classifier = response_classifier or DEFAULT_RESPONSE_CLASSIFIER
        self._breakers = Breakers(build)
        super().__init__(pool_connections, pool_maxsize, max_retries, pool_block)

    def breaker_for(self, url: requests.PreparedRequest | str) -> Breaker:
        """The breaker that requests to ``url`` go through (created if it does not exist)."""
        if isinstance(url, str):
            url = requests.Request("GET", url).prepare()
        return self._breakers.get(self._name_of(url))

    @property
    def breakers(self) -> dict[str, Breaker]:
        """The breakers this adapter has used so far, by name."""
        return self._breakers.snapshot()

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Timeout = None,
        verify: bool | str = True,
        cert: Cert = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        name = self._name_of(request)
        breaker = self._breakers.get(name)
        send_through_pool = super().send

        def send() -> requests.Response:
            response = send_through_pool(
                request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies
            )
            return self._judged(response, name)

        try:
            return breaker.execute(send)
        except CountedResponse as counted:
            return cast(requests.Response, counted.response)
        except CircuitOpenError as refusal:
            raise _refused(refusal, request) from None

    def _name_of(self, request: requests.PreparedRequest) -> str:
        rule = self._name
        if isinstance(rule, str):
            return rule
        if rule is not None:
            return validate_name(rule(request))
        try:  # the stdlib's parser: a third of urllib3's cost, and requests normalised the URL
            url = urlsplit(request.url or "")
            scheme, host, port = url.scheme, url.hostname, url.port
        except ValueError:
            # the message would echo the URL, and with it any credentials in it
            raise requests.exceptions.InvalidURL(
                "request URL cannot be parsed", request=request
            ) from None
        if not host:
            raise requests.exceptions.InvalidURL("request URL has no host", request=request)
        return upstream_name(scheme, host, port)

    def _judged(self, response: requests.Response, name: str) -> requests.Response:
        """``response`` if the breaker has nothing to record; else raise it out of ``execute``."""
        classifier = self._response_classifier
        record_through_breaker(classifier, response, response.status_code, response.headers, name)
        return response

    def __repr__(self) -> str:
        return f"<BreakerAdapter breakers={sorted(self._breakers.snapshot())}>"
