"""BreakerTransport and AsyncBreakerTransport over httpx.MockTransport, with an injected clock."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from distbreaker import CircuitOpenError
from distbreaker.httpx import AsyncBreakerTransport, BreakerTransport, CircuitOpenTransportError
from tests.conftest import FakeClock, config_for

URL = "http://api.test/items"


class Upstream:
    """A MockTransport handler: answers ``status`` with ``headers``, or raises ``error``."""

    def __init__(self) -> None:
        self.calls = 0
        self.status = 200
        self.headers: dict[str, str] = {}
        self.error: Exception | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.error is not None:
            raise self.error
        body = {"request": self.calls, "host": request.url.host}
        return httpx.Response(self.status, headers=self.headers, json=body)


class Hosts:
    """One ``Upstream`` per host name."""

    def __init__(self, *hosts: str) -> None:
        self.by_host = {host: Upstream() for host in hosts}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        return self.by_host[request.url.host](request)


class Chunks(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that records how many chunks were pulled, and when."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks
        self.pulled = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk


class Recording(httpx.MockTransport):
    """A MockTransport that notes being entered and closed."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        super().__init__(handler)
        self.entered = False
        self.closed = False

    def __enter__(self) -> Recording:
        self.entered = True
        return self

    def close(self) -> None:
        self.closed = True

    async def __aenter__(self) -> Recording:
        self.entered = True
        return self

    async def aclose(self) -> None:
        self.closed = True


# Strict only: in cached mode a transition event that reaches this process after the test
# moved the injected clock re-anchors the local refusal at the new time (see NOTES.md,
# "A flaky test and its cause"); these tests are about verdicts, which both modes share.


@pytest.fixture
def make_transport(
    client: Any, clock: FakeClock, prefix: str, consistency: str
) -> Callable[..., BreakerTransport]:
    def build(handler: Any, *, transport: Any = None, **options: Any) -> BreakerTransport:
        settings = {k: options.pop(k) for k in list(options) if k not in _TRANSPORT_OPTIONS}
        return BreakerTransport(
            client,
            transport=transport or httpx.MockTransport(handler),
            config=config_for(prefix, consistency, settings),
            clock=clock,
            **options,
        )

    return build


@pytest.fixture
def make_async_transport(
    async_client: Any, clock: FakeClock, prefix: str, consistency: str
) -> Callable[..., AsyncBreakerTransport]:
    def build(handler: Any, *, transport: Any = None, **options: Any) -> AsyncBreakerTransport:
        settings = {k: options.pop(k) for k in list(options) if k not in _TRANSPORT_OPTIONS}
        return AsyncBreakerTransport(
            async_client,
            transport=transport or httpx.MockTransport(handler),
            config=config_for(prefix, consistency, settings),
            clock=clock,
            **options,
        )

    return build


_TRANSPORT_OPTIONS = {"name", "classifier", "response_classifier"}


# -- what counts -----------------------------------------------------------------------


def test_5xx_responses_count_and_reach_the_caller_untouched(
    make_transport: Callable[..., BreakerTransport],
) -> None:
    upstream = Upstream()
    upstream.status = 503
    transport = make_transport(upstream, failure_threshold=3)
    with httpx.Client(transport=transport) as http:
        answers = [http.get(URL) for _ in range(3)]
        assert [a.status_code for a in answers] == [503, 503, 503]
        assert [a.json()["request"] for a in answers] == [1, 2, 3]
        with pytest.raises(CircuitOpenTransportError):
            http.get(URL)
    assert upstream.calls == 3
    assert transport.breaker_for(URL).status().state == "open"


def test_a_refusal_is_both_a_circuit_open_error_and_an_httpx_transport_error(
    make_transport: Callable[..., BreakerTransport],
) -> None:
    upstream = Upstream()
    upstream.status = 502
    transport = make_transport(upstream, failure_threshold=1, reset_timeout=30)
    with httpx.Client(transport=transport) as http:
        http.get(URL)
        with pytest.raises(httpx.HTTPError) as caught:
            http.get(URL)
    refusal = caught.value
    assert isinstance(refusal, CircuitOpenTransportError)
    assert isinstance(refusal, CircuitOpenError)
    assert isinstance(refusal, httpx.TransportError)
    assert not isinstance(refusal, httpx.ConnectError)
    assert (refusal.name, refusal.state) == ("http:api.test:80", "open")
    assert refusal.retry_after == pytest.approx(30.0)
    assert str(refusal.request.url) == URL
    assert upstream.calls == 1


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("connection refused"),
        httpx.RemoteProtocolError("peer closed connection without sending a response"),
        httpx.ReadTimeout("timed out"),
    ],
)
def test_transport_errors_count_and_propagate_unchanged(
    make_transport: Callable[..., BreakerTransport], error: Exception
) -> None:
    upstream = Upstream()
    upstream.error = error
    transport = make_transport(upstream, failure_threshold=2)
    with httpx.Client(transport=transport) as http:
        for _ in range(2):
            with pytest.raises(type(error)) as caught:
                http.get(URL)
            assert caught.value is error
        with pytest.raises(CircuitOpenTransportError):
            http.get(URL)
    assert upstream.calls == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 501])
def test_client_errors_do_not_count(
    make_transport: Callable[..., BreakerTransport], status: int
) -> None:
    upstream = Upstream()
    upstream.status = status
    transport = make_transport(upstream, failure_threshold=2)
    with httpx.Client(transport=transport) as http:
        assert [http.get(URL).status_code for _ in range(5)] == [status] * 5
    status_now = transport.breaker_for(URL).status()
    assert (status_now.state, status_now.failure_count) == ("closed", 0)
    assert upstream.calls == 5


# -- rate limits -------------------------------------------------------------------------


def test_a_429_with_retry_after_holds_the_breaker_open_and_is_returned(
    make_transport: Callable[..., BreakerTransport], clock: FakeClock
) -> None:
    upstream = Upstream()
    upstream.status = 429
    upstream.headers = {"Retry-After": "30"}
    transport = make_transport(upstream, failure_threshold=5)
    with httpx.Client(transport=transport) as http:
        answer = http.get(URL)
        assert (answer.status_code, answer.headers["retry-after"]) == (429, "30")
        assert answer.json()["request"] == 1
        status = transport.breaker_for(URL).status()
        assert status.state == "open"
        assert status.time_until_reset == pytest.approx(30.0)
        assert status.failure_count == 0  # a rate limit is no failure
        with pytest.raises(CircuitOpenTransportError):
            http.get(URL)
        assert upstream.calls == 1
        clock.advance(31)
        upstream.status, upstream.headers = 200, {}
        assert http.get(URL).status_code == 200
    assert transport.breaker_for(URL).status().state == "closed"


def test_a_403_with_exhausted_rate_limit_holds_until_the_reset_time(
    make_transport: Callable[..., BreakerTransport],
) -> None:
    upstream = Upstream()
    upstream.status = 403
    reset = int(time.time()) + 120  # x-ratelimit-reset is wall-clock epoch seconds
    upstream.headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}
    transport = make_transport(upstream)
    with httpx.Client(transport=transport) as http:
        assert http.get(URL).status_code == 403
    status = transport.breaker_for(URL).status()
    assert status.state == "open"
    assert status.time_until_reset == pytest.approx(120, abs=5)


def test_a_rate_limit_asking_for_no_wait_holds_nothing(
    make_transport: Callable[..., BreakerTransport],
) -> None:
    upstream = Upstream()
    upstream.status = 429
    upstream.headers = {"Retry-After": "0"}
    transport = make_transport(upstream)
    with httpx.Client(transport=transport) as http:
        assert [http.get(URL).status_code for _ in range(3)] == [429] * 3
    assert transport.breaker_for(URL).status().state == "closed"


# -- probes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probe_status", "state_after"),
    [(200, "closed"), (204, "closed"), (404, "closed"), (503, "open")],
)
def test_a_half_open_probe_is_judged_by_its_response(
    make_transport: Callable[..., BreakerTransport],
    clock: FakeClock,
    probe_status: int,
    state_after: str,
) -> None:
    upstream = Upstream()
    upstream.status = 500
    transport = make_transport(upstream, failure_threshold=1, reset_timeout=10)
    with httpx.Client(transport=transport) as http:
        http.get(URL)
        opened = transport.breaker_for(URL).status()
        clock.advance(10)
        upstream.status = probe_status
        assert http.get(URL).status_code == probe_status
    after = transport.breaker_for(URL).status()
    assert after.state == state_after
    assert after.generation == opened.generation + 2  # open -> half_open -> closed/open
    assert after.probes_in_flight == 0


def test_a_probe_that_hits_a_rate_limit_holds_open_and_frees_its_permit(
    make_transport: Callable[..., BreakerTransport], clock: FakeClock
) -> None:
    upstream = Upstream()
    upstream.status = 500
    transport = make_transport(upstream, failure_threshold=1, reset_timeout=10)
    with httpx.Client(transport=transport) as http:
        http.get(URL)
        clock.advance(10)
        upstream.status, upstream.headers = 429, {"Retry-After": "60"}
        assert http.get(URL).status_code == 429
    status = transport.breaker_for(URL).status()
    assert status.state == "open"
    assert status.time_until_reset == pytest.approx(60.0)
    assert status.probes_in_flight == 0


# -- streaming -----------------------------------------------------------------------------


def test_a_streaming_response_is_returned_before_its_body_is_read(
    make_transport: Callable[..., BreakerTransport],
) -> None:
    body = Chunks(b"first,", b"second,", b"third")
    transport = make_transport(lambda request: httpx.Response(200, stream=body))
    with httpx.Client(transport=transport) as http, http.stream("GET", URL) as response:
        assert response.status_code == 200
        assert body.pulled == 0
        assert list(response.iter_raw()) == [b"first,", b"second,", b"third"]
    assert body.pulled == 3


def test_a_streamed_5xx_counts_at_headers_time_without_touching_the_body(
    make_transport: Callable[..., BreakerTransport],
) -> None:
    body = Chunks(b"upstream ", b"sick")
    transport = make_transport(lambda request: httpx.Response(503, stream=body))
    with httpx.Client(transport=transport) as http, http.stream("GET", URL) as response:
        assert response.status_code == 503
        assert body.pulled == 0
        assert transport.breaker_for(URL).status().failure_count == 1
        assert response.read() == b"upstream sick"


# -- one breaker per upstream, and names -----------------------------------------------------


def test_one_breaker_per_host_keeps_the_healthy_host_working(
    make_transport: Callable[..., BreakerTransport],
) -> None:
    hosts = Hosts("down.test", "up.test")
    hosts.by_host["down.test"].status = 503
    transport = make_transport(hosts, failure_threshold=2)
    with httpx.Client(transport=transport) as http:
        for _ in range(2):
            http.get("http://down.test/")
        with pytest.raises(CircuitOpenTransportError):
            http.get("http://down.test/")
        assert [http.get("http://up.test/").status_code for _ in range(3)] == [200] * 3
    assert sorted(transport.breakers) == ["http:down.test:80", "http:up.test:80"]
    assert hosts.by_host["down.test"].calls == 2
    assert transport.breaker_for("http://up.test/x").status().state == "closed"


def test_scheme_and_port_make_different_upstreams(
    make_transport: Callable[..., BreakerTransport],
) -> None:
    transport = make_transport(Upstream())
    names = {
        transport.breaker_for(url).name
        for url in ("http://a.test/", "https://a.test/", "http://a.test:8080/", "HTTP://A.TEST:80/")
    }
    assert names == {"http:a.test:80", "https:a.test:443", "http:a.test:8080"}
    assert transport.breaker_for("http://[::1]:9000/").name == "http:::1:9000"


def test_a_name_string_puts_every_host_behind_one_breaker(
    make_transport: Callable[..., BreakerTransport],
) -> None:
    hosts = Hosts("a.test", "b.test")
    hosts.by_host["a.test"].status = 500
    transport = make_transport(hosts, name="payments", failure_threshold=1)
    with httpx.Client(transport=transport) as http:
        http.get("http://a.test/")
        with pytest.raises(CircuitOpenTransportError) as caught:
            http.get("http://b.test/")
    assert caught.value.name == "payments"
    assert list(transport.breakers) == ["payments"]
    assert hosts.by_host["b.test"].calls == 0


def test_a_name_callable_picks_the_breaker_per_request(
    make_transport: Callable[..., BreakerTransport],
) -> None:
    def by_first_path_segment(request: httpx.Request) -> str:
        return "svc-" + request.url.path.split("/")[1]

    transport = make_transport(Upstream(), name=by_first_path_segment)
    with httpx.Client(transport=transport) as http:
        http.get("http://api.test/users/1")
        http.get("http://api.test/orders/7")
    assert sorted(transport.breakers) == ["svc-orders", "svc-users"]


def test_a_bad_name_fails_before_any_request(
    make_transport: Callable[..., BreakerTransport],
) -> None:
    upstream = Upstream()
    transport = make_transport(upstream, name=lambda request: "not a name!")
    with httpx.Client(transport=transport) as http, pytest.raises(ValueError, match="invalid"):
        http.get(URL)
    assert upstream.calls == 0
    with pytest.raises(ValueError, match="invalid breaker name"):
        make_transport(upstream, name="no spaces")
    with pytest.raises(TypeError, match="name must be"):
        make_transport(upstream, name=42)


def test_a_request_without_a_host_fails_before_any_io(
    make_transport: Callable[..., BreakerTransport],
) -> None:
    upstream = Upstream()
    transport = make_transport(upstream)
    with pytest.raises(httpx.UnsupportedProtocol, match="no host"):
        transport.handle_request(httpx.Request("GET", "http:///nowhere"))
    assert upstream.calls == 0
    assert transport.breakers == {}


# -- classifiers ----------------------------------------------------------------------------


def test_a_response_classifier_decides_which_answers_count(
    make_transport: Callable[..., BreakerTransport],
) -> None:
    upstream = Upstream()
    upstream.status = 404
    transport = make_transport(
        upstream, failure_threshold=2, response_classifier=lambda status, headers: status == 404
    )
    with httpx.Client(transport=transport) as http:
        assert [http.get(URL).status_code for _ in range(2)] == [404, 404]
        with pytest.raises(CircuitOpenTransportError):
            http.get(URL)


def test_a_failing_response_classifier_returns_the_response_and_counts_nothing(
    make_transport: Callable[..., BreakerTransport], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(status: int, headers: Any) -> bool:
        raise RuntimeError("classifier bug")

    upstream = Upstream()
    upstream.status = 503
    transport = make_transport(upstream, failure_threshold=1, response_classifier=broken)
    with (
        caplog.at_level(logging.WARNING, logger="distbreaker"),
        httpx.Client(transport=transport) as http,
    ):
        assert http.get(URL).status_code == 503
    assert transport.breaker_for(URL).status().state == "closed"
    assert any("classifier bug" in record.getMessage() for record in caplog.records)


def test_the_classifier_judges_transport_errors(
    make_transport: Callable[..., BreakerTransport],
) -> None:
    upstream = Upstream()
    upstream.error = httpx.ConnectError("refused")
    transport = make_transport(upstream, failure_threshold=1, classifier=lambda error: False)
    with httpx.Client(transport=transport) as http:
        for _ in range(3):
            with pytest.raises(httpx.ConnectError):
                http.get(URL)
    assert upstream.calls == 3
    assert transport.breaker_for(URL).status().state == "closed"


# -- lifecycle ----------------------------------------------------------------------------------


def test_the_client_enters_and_closes_the_wrapped_transport(
    make_transport: Callable[..., BreakerTransport],
) -> None:
    inner = Recording(Upstream())
    transport = make_transport(None, transport=inner)
    with httpx.Client(transport=transport) as http:
        assert inner.entered
        http.get(URL)
    assert inner.closed


def test_close_closes_the_wrapped_transport(
    make_transport: Callable[..., BreakerTransport],
) -> None:
    inner = Recording(Upstream())
    transport = make_transport(None, transport=inner)
    transport.close()
    assert inner.closed


# -- the async twin ------------------------------------------------------------------------------


async def test_async_5xx_count_and_refusals_do_not_reach_the_upstream(
    make_async_transport: Callable[..., AsyncBreakerTransport],
) -> None:
    upstream = Upstream()
    upstream.status = 503
    transport = make_async_transport(upstream, failure_threshold=2)
    async with httpx.AsyncClient(transport=transport) as http:
        answers = [await http.get(URL) for _ in range(2)]
        assert [a.status_code for a in answers] == [503, 503]
        with pytest.raises(httpx.TransportError) as caught:
            await http.get(URL)
    assert isinstance(caught.value, CircuitOpenTransportError)
    assert caught.value.name == "http:api.test:80"
    assert upstream.calls == 2
    assert (await transport.breaker_for(URL).status()).state == "open"


async def test_async_transport_errors_count_and_propagate(
    make_async_transport: Callable[..., AsyncBreakerTransport],
) -> None:
    upstream = Upstream()
    upstream.error = httpx.RemoteProtocolError("connection reset")
    transport = make_async_transport(upstream, failure_threshold=1)
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(URL)
        with pytest.raises(CircuitOpenTransportError):
            await http.get(URL)
    assert upstream.calls == 1


async def test_async_429_holds_open_and_a_404_does_not_count(
    make_async_transport: Callable[..., AsyncBreakerTransport], clock: FakeClock
) -> None:
    upstream = Upstream()
    upstream.status = 404
    transport = make_async_transport(upstream, failure_threshold=1)
    async with httpx.AsyncClient(transport=transport) as http:
        assert (await http.get(URL)).status_code == 404
        assert (await transport.breaker_for(URL).status()).state == "closed"
        upstream.status, upstream.headers = 429, {"Retry-After": "20"}
        assert (await http.get(URL)).status_code == 429
        status = await transport.breaker_for(URL).status()
        assert status.state == "open"
        assert status.time_until_reset == pytest.approx(20.0)
        with pytest.raises(CircuitOpenTransportError):
            await http.get(URL)
        clock.advance(21)
        upstream.status, upstream.headers = 404, {}
        assert (await http.get(URL)).status_code == 404  # the probe: answered, so closed
    assert (await transport.breaker_for(URL).status()).state == "closed"
    assert upstream.calls == 3


async def test_async_streaming_response_is_returned_before_its_body_is_read(
    make_async_transport: Callable[..., AsyncBreakerTransport],
) -> None:
    body = Chunks(b"a", b"b", b"c")
    transport = make_async_transport(lambda request: httpx.Response(200, stream=body))
    async with (
        httpx.AsyncClient(transport=transport) as http,
        http.stream("GET", URL) as response,
    ):
        assert body.pulled == 0
        assert [chunk async for chunk in response.aiter_raw()] == [b"a", b"b", b"c"]


async def test_async_one_breaker_per_host(
    make_async_transport: Callable[..., AsyncBreakerTransport],
) -> None:
    hosts = Hosts("down.test", "up.test")
    hosts.by_host["down.test"].error = httpx.ConnectError("refused")
    transport = make_async_transport(hosts, failure_threshold=1)
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("http://down.test/")
        with pytest.raises(CircuitOpenTransportError):
            await http.get("http://down.test/")
        assert (await http.get("http://up.test/")).status_code == 200
    assert sorted(transport.breakers) == ["http:down.test:80", "http:up.test:80"]


async def test_async_client_enters_and_closes_the_wrapped_transport(
    make_async_transport: Callable[..., AsyncBreakerTransport],
) -> None:
    inner = Recording(Upstream())
    transport = make_async_transport(None, transport=inner)
    async with httpx.AsyncClient(transport=transport) as http:
        assert inner.entered
        await http.get(URL)
    assert inner.closed


# -- packaging ----------------------------------------------------------------------------------


def test_importing_distbreaker_does_not_import_httpx_or_requests() -> None:
    code = (
        "import sys, distbreaker\n"
        "print(sorted(m for m in ('httpx', 'requests', 'distbreaker.httpx') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_without_httpx_the_import_error_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['httpx'] = None\n"
        "try:\n"
        "    from distbreaker.httpx import BreakerTransport\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert (
        result.stdout.strip() == "distbreaker.httpx needs httpx: pip install 'distbreaker[httpx]'"
    )
