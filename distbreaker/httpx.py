"""httpx transports that put a shared breaker in front of every upstream (extra ``[httpx]``).

    client = httpx.Client(transport=BreakerTransport(distbreaker.connect(url)))
    client = httpx.AsyncClient(transport=AsyncBreakerTransport(distbreaker.connect_async(url)))

Each upstream gets its own breaker, named ``scheme:host:port`` (``http:127.0.0.1:8080``,
``https:api.github.com:443``) unless ``name=`` says otherwise, created on first use with one
``BreakerConfig`` and shared through Redis with every process that uses the same name.

Transport errors and timeouts count (``distbreaker.classify``), and so do 5xx responses but
501/505; a 429, or a 403 with rate-limit headers, holds the breaker open for the whole fleet
for ``Retry-After`` (or until ``x-ratelimit-reset``). Every response, 5xx and 429 included, is
returned untouched, streaming bodies too: the verdict is taken when the headers arrive, so
an error while the caller reads the body later does not count.

A refused request raises ``CircuitOpenTransportError``: a ``CircuitOpenError`` and an
``httpx.TransportError``. The request was never sent, as with an unreachable host, so code
written as ``except httpx.HTTPError`` (or ``RequestError``, ``TransportError``) keeps working.
It is no ``ConnectError``: nothing was attempted.

Configure TLS, proxies, retries and limits on the wrapped transport
(``transport=httpx.HTTPTransport(...)``): a client given ``transport=`` builds none of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast

try:
    import httpx
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("distbreaker.httpx needs httpx: pip install 'distbreaker[httpx]'") from error

from distbreaker import AsyncBreaker, Breaker, BreakerConfig, CircuitOpenError
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

__all__ = ["AsyncBreakerTransport", "BreakerTransport", "CircuitOpenTransportError"]

B = TypeVar("B", Breaker, AsyncBreaker)
NameRule = str | Callable[[httpx.Request], str] | None


class CircuitOpenTransportError(CircuitOpenError, httpx.TransportError):
    """The breaker refused the request: it never left this process.

    Carries ``name``, ``state`` and ``retry_after`` (seconds, or ``None``) like every
    ``CircuitOpenError``, and ``request`` like every ``httpx.RequestError``.
    """

    def __init__(
        self,
        name: str,
        state: str,
        retry_after: float | None = None,
        *,
        request: httpx.Request | None = None,
    ) -> None:
        super().__init__(name, state, retry_after)
        if request is not None:
            self.request = request


def _refused(refusal: CircuitOpenError, request: httpx.Request) -> CircuitOpenTransportError:
    if isinstance(refusal, CircuitOpenTransportError):
        return refusal  # a wrapped BreakerTransport refused already
    return CircuitOpenTransportError(
        refusal.name, refusal.state, refusal.retry_after, request=request
    )


class _TransportBase(Generic[B]):
    """Naming, the breakers and the response verdict: everything but the I/O."""

    def __init__(
        self,
        build: Callable[[str], B],
        name: NameRule,
        response_classifier: ResponseClassifier | None,
    ) -> None:
        check_name_rule(name)
        self._name = name
        self._response_classifier = response_classifier or DEFAULT_RESPONSE_CLASSIFIER
        self._breakers: Breakers[B] = Breakers(build)

    def breaker_for(self, url: httpx.Request | httpx.URL | str) -> B:
        """The breaker that requests to ``url`` go through (created if it does not exist)."""
        request = url if isinstance(url, httpx.Request) else httpx.Request("GET", url)
        return self._breakers.get(self._name_of(request))

    @property
    def breakers(self) -> dict[str, B]:
        """The breakers this transport has used so far, by name."""
        return self._breakers.snapshot()

    def _name_of(self, request: httpx.Request) -> str:
        rule = self._name
        if isinstance(rule, str):
            return rule
        if rule is not None:
            return validate_name(rule(request))
        url = request.url
        if not url.raw_host:
            raise httpx.UnsupportedProtocol("Request URL has no host.", request=request)
        return upstream_name(url.scheme, url.raw_host.decode("latin-1"), url.port)

    def _judged(self, response: httpx.Response, name: str) -> httpx.Response:
        """``response`` if the breaker has nothing to record; else raise it out of ``execute``."""
        classifier = self._response_classifier
        record_through_breaker(classifier, response, response.status_code, response.headers, name)
        return response


class BreakerTransport(_TransportBase[Breaker], httpx.BaseTransport):
    """Wraps an httpx transport (default ``httpx.HTTPTransport()``) with a breaker per upstream.

    ``redis`` is a ``redis.Redis`` (``distbreaker.connect``) or cluster client; it is not
    closed by ``close()``, the wrapped transport is. ``name`` is a breaker name for every
    request, or a callable ``request -> name``. ``classifier`` judges exceptions,
    ``response_classifier(status, headers)`` judges responses (default
    ``distbreaker.classify.for_status``); ``clock`` is for tests.
    """

    def __init__(
        self,
        redis: Any,
        *,
        transport: httpx.BaseTransport | None = None,
        config: BreakerConfig | None = None,
        name: NameRule = None,
        classifier: Classifier | None = None,
        response_classifier: ResponseClassifier | None = None,
        clock: Clock | None = None,
    ) -> None:
        judge = error_classifier(classifier)

        def build(breaker_name: str) -> Breaker:
            return Breaker(breaker_name, redis, config, clock, classifier=judge)

        super().__init__(build, name, response_classifier)
        self._transport = transport if transport is not None else httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        name = self._name_of(request)
        breaker = self._breakers.get(name)

        def send() -> httpx.Response:
            return self._judged(self._transport.handle_request(request), name)

        try:
            return breaker.execute(send)
        except CountedResponse as counted:
            return cast(httpx.Response, counted.response)
        except CircuitOpenError as refusal:
            raise _refused(refusal, request) from None

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Self:
        self._transport.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self._transport.__exit__(exc_type, exc_value, traceback)

    def __repr__(self) -> str:
        return f"<BreakerTransport over {type(self._transport).__name__}>"


class AsyncBreakerTransport(_TransportBase[AsyncBreaker], httpx.AsyncBaseTransport):
    """The asyncio twin of :class:`BreakerTransport`, over a ``redis.asyncio`` client.

    Wraps ``httpx.AsyncHTTPTransport()`` unless ``transport`` is given; ``aclose()`` closes it.
    """

    def __init__(
        self,
        redis: Any,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        config: BreakerConfig | None = None,
        name: NameRule = None,
        classifier: Classifier | None = None,
        response_classifier: ResponseClassifier | None = None,
        clock: Clock | None = None,
    ) -> None:
        judge = error_classifier(classifier)

        def build(breaker_name: str) -> AsyncBreaker:
            return AsyncBreaker(breaker_name, redis, config, clock, classifier=judge)

        super().__init__(build, name, response_classifier)
        self._transport = transport if transport is not None else httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        name = self._name_of(request)
        breaker = self._breakers.get(name)

        async def send() -> httpx.Response:
            return self._judged(await self._transport.handle_async_request(request), name)

        try:
            return await breaker.execute(send)
        except CountedResponse as counted:
            return cast(httpx.Response, counted.response)
        except CircuitOpenError as refusal:
            raise _refused(refusal, request) from None

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> Self:
        await self._transport.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self._transport.__aexit__(exc_type, exc_value, traceback)

    def __repr__(self) -> str:
        return f"<AsyncBreakerTransport over {type(self._transport).__name__}>"
