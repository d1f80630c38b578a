"""BreakerAdapter over a canned HTTPAdapter (no network), with an injected clock."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from distbreaker import CircuitOpenError
from distbreaker.requests import BreakerAdapter, CircuitOpenConnectionError
from tests.conftest import FakeClock, config_for

URL = "http://api.test/items"


class Body(io.BytesIO):
    """A response body that records how many reads it served."""

    reads = 0

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        return super().read(size)


class Upstream:
    """Answers ``status`` with ``headers`` and ``body``, or raises ``error``; counts calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.status = 200
        self.headers: dict[str, str] = {}
        self.body = b'{"ok": true}'
        self.error: Exception | None = None
        self.bodies: list[Body] = []
        self.sent: list[dict[str, Any]] = []

    def answer(
        self, request: requests.PreparedRequest, options: dict[str, Any]
    ) -> requests.Response:
        self.calls += 1
        self.sent.append(options)
        if self.error is not None:
            raise self.error
        body = Body(self.body)
        self.bodies.append(body)
        response = requests.Response()
        response.status_code = self.status
        response.headers = CaseInsensitiveDict(self.headers)
        response.raw = urllib3.HTTPResponse(
            body=body, status=self.status, headers=self.headers, preload_content=False
        )
        response.url = request.url or ""
        response.request = request
        return response


class CannedAdapter(HTTPAdapter):
    """Answers from ``upstream``, not the network (``BreakerAdapter`` calls ``super().send``)."""

    upstream: Upstream

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        options = {"stream": stream, "timeout": timeout, "verify": verify, "cert": cert}
        host = (request.url or "").split("/")[2].split(":")[0]
        return self.upstream_for(host).answer(request, options)

    def upstream_for(self, host: str) -> Upstream:
        return self.upstream


class Adapter(BreakerAdapter, CannedAdapter):
    """The adapter under test: the breaker around a canned answer."""


class HostsAdapter(BreakerAdapter, CannedAdapter):
    """One ``Upstream`` per host."""

    by_host: dict[str, Upstream]

    def upstream_for(self, host: str) -> Upstream:
        return self.by_host[host]


# Strict only: in cached mode a transition event that reaches this process after the test
# moved the injected clock re-anchors the local refusal at the new time (see NOTES.md,
# "A flaky test and its cause"); these tests are about verdicts, which both modes share.


@pytest.fixture
def make_adapter(
    client: Any, clock: FakeClock, prefix: str, consistency: str
) -> Callable[..., BreakerAdapter]:
    def build(
        upstream: Upstream | dict[str, Upstream], *, name: Any = None, **settings: Any
    ) -> BreakerAdapter:
        config = config_for(prefix, consistency, settings)
        adapter: Adapter | HostsAdapter
        if isinstance(upstream, dict):
            adapter = HostsAdapter(client, config=config, name=name, clock=clock)
            adapter.by_host = upstream
        else:
            adapter = Adapter(client, config=config, name=name, clock=clock)
            adapter.upstream = upstream
        return adapter

    return build


def session_with(adapter: BreakerAdapter) -> requests.Session:
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def test_5xx_responses_count_and_reach_the_caller_untouched(
    make_adapter: Callable[..., BreakerAdapter],
) -> None:
    upstream = Upstream()
    upstream.status, upstream.body = 503, b'{"error": "unavailable"}'
    adapter = make_adapter(upstream, failure_threshold=3)
    with session_with(adapter) as session:
        answers = [session.get(URL) for _ in range(3)]
        assert [a.status_code for a in answers] == [503] * 3
        assert answers[0].json() == {"error": "unavailable"}
        with pytest.raises(CircuitOpenConnectionError):
            session.get(URL)
    assert upstream.calls == 3
    assert adapter.breaker_for(URL).status().state == "open"


def test_a_refusal_is_both_a_circuit_open_error_and_a_requests_connection_error(
    make_adapter: Callable[..., BreakerAdapter],
) -> None:
    upstream = Upstream()
    upstream.status = 500
    adapter = make_adapter(upstream, failure_threshold=1, reset_timeout=30)
    with session_with(adapter) as session:
        session.get(URL)
        with pytest.raises(requests.RequestException) as caught:
            session.get(URL)
    refusal = caught.value
    assert isinstance(refusal, CircuitOpenConnectionError)
    assert isinstance(refusal, CircuitOpenError)
    assert isinstance(refusal, requests.ConnectionError)
    assert (refusal.name, refusal.state) == ("http:api.test:80", "open")
    assert refusal.retry_after == pytest.approx(30.0)
    assert refusal.request is not None
    assert refusal.request.url == URL
    assert upstream.calls == 1


@pytest.mark.parametrize(
    "error",
    [
        requests.ConnectionError("Connection reset by peer"),
        requests.ConnectTimeout("connect timed out"),
        requests.ReadTimeout("read timed out"),
    ],
)
def test_connection_errors_count_and_propagate_unchanged(
    make_adapter: Callable[..., BreakerAdapter], error: Exception
) -> None:
    upstream = Upstream()
    upstream.error = error
    adapter = make_adapter(upstream, failure_threshold=2)
    with session_with(adapter) as session:
        for _ in range(2):
            with pytest.raises(type(error)) as caught:
                session.get(URL)
            assert caught.value is error
        with pytest.raises(CircuitOpenConnectionError):
            session.get(URL)
    assert upstream.calls == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 501])
def test_client_errors_do_not_count(
    make_adapter: Callable[..., BreakerAdapter], status: int
) -> None:
    upstream = Upstream()
    upstream.status = status
    adapter = make_adapter(upstream, failure_threshold=2)
    with session_with(adapter) as session:
        assert [session.get(URL).status_code for _ in range(4)] == [status] * 4
    breaker_status = adapter.breaker_for(URL).status()
    assert (breaker_status.state, breaker_status.failure_count) == ("closed", 0)


def test_a_429_with_retry_after_holds_the_breaker_open_and_is_returned(
    make_adapter: Callable[..., BreakerAdapter], clock: FakeClock
) -> None:
    upstream = Upstream()
    upstream.status, upstream.headers = 429, {"Retry-After": "45"}
    adapter = make_adapter(upstream)
    with session_with(adapter) as session:
        answer = session.get(URL)
        assert (answer.status_code, answer.headers["retry-after"]) == (429, "45")
        status = adapter.breaker_for(URL).status()
        assert (status.state, status.failure_count) == ("open", 0)
        assert status.time_until_reset == pytest.approx(45.0)
        with pytest.raises(CircuitOpenConnectionError):
            session.get(URL)
        assert upstream.calls == 1
        clock.advance(46)
        upstream.status, upstream.headers = 200, {}
        assert session.get(URL).status_code == 200
    assert adapter.breaker_for(URL).status().state == "closed"


@pytest.mark.parametrize(
    ("probe_status", "state_after"), [(200, "closed"), (404, "closed"), (502, "open")]
)
def test_a_half_open_probe_is_judged_by_its_response(
    make_adapter: Callable[..., BreakerAdapter],
    clock: FakeClock,
    probe_status: int,
    state_after: str,
) -> None:
    upstream = Upstream()
    upstream.status = 500
    adapter = make_adapter(upstream, failure_threshold=1, reset_timeout=10)
    with session_with(adapter) as session:
        session.get(URL)
        clock.advance(10)
        upstream.status = probe_status
        assert session.get(URL).status_code == probe_status
    status = adapter.breaker_for(URL).status()
    assert (status.state, status.probes_in_flight) == (state_after, 0)


def test_stream_true_returns_before_the_body_is_read(
    make_adapter: Callable[..., BreakerAdapter],
) -> None:
    upstream = Upstream()
    upstream.body = b"x" * 10_000
    adapter = make_adapter(upstream)
    with session_with(adapter) as session:
        response = session.get(URL, stream=True)
        assert upstream.bodies[0].reads == 0
        assert b"".join(response.iter_content(1000)) == b"x" * 10_000
    assert upstream.bodies[0].reads > 1
    assert upstream.sent[0]["stream"] is True


def test_a_streamed_5xx_counts_at_headers_time_without_reading_the_body(
    make_adapter: Callable[..., BreakerAdapter],
) -> None:
    upstream = Upstream()
    upstream.status = 503
    adapter = make_adapter(upstream)
    with session_with(adapter) as session:
        response = session.get(URL, stream=True)
        assert upstream.bodies[0].reads == 0
        assert adapter.breaker_for(URL).status().failure_count == 1
        assert response.content == b'{"ok": true}'


def test_send_options_reach_the_pool_unchanged(
    make_adapter: Callable[..., BreakerAdapter],
) -> None:
    upstream = Upstream()
    adapter = make_adapter(upstream)
    with session_with(adapter) as session:
        session.get(URL, timeout=(1.5, 4.0), verify=False)
    assert upstream.sent == [
        {"stream": False, "timeout": (1.5, 4.0), "verify": False, "cert": None}
    ]


def test_one_breaker_per_host_keeps_the_healthy_host_working(
    make_adapter: Callable[..., BreakerAdapter],
) -> None:
    hosts = {"down.test": Upstream(), "up.test": Upstream()}
    hosts["down.test"].error = requests.ConnectionError("refused")
    adapter = make_adapter(hosts, failure_threshold=2)
    with session_with(adapter) as session:
        for _ in range(2):
            with pytest.raises(requests.ConnectionError):
                session.get("http://down.test/")
        with pytest.raises(CircuitOpenConnectionError):
            session.get("http://down.test/")
        assert [session.get("http://up.test/").status_code for _ in range(3)] == [200] * 3
    assert sorted(adapter.breakers) == ["http:down.test:80", "http:up.test:80"]
    assert hosts["down.test"].calls == 2


def test_names_follow_scheme_host_and_port(make_adapter: Callable[..., BreakerAdapter]) -> None:
    adapter = make_adapter(Upstream())
    names = {
        adapter.breaker_for(url).name
        for url in ("http://a.test/", "https://A.test/", "http://a.test:8080/", "http://a.test:80/")
    }
    assert names == {"http:a.test:80", "https:a.test:443", "http:a.test:8080"}
    assert adapter.breaker_for("http://[::1]:9000/").name == "http:::1:9000"
    assert adapter.breaker_for("https://bücher.example/").name == "https:xn--bcher-kva.example:443"


def test_a_name_string_or_callable_chooses_the_breaker(
    make_adapter: Callable[..., BreakerAdapter],
) -> None:
    fixed = make_adapter(Upstream(), name="payments")
    assert fixed.breaker_for("http://a.test/").name == "payments"
    assert fixed.breaker_for("https://b.test/").name == "payments"
    per_path = make_adapter(
        Upstream(), name=lambda request: "svc-" + (request.path_url or "/").split("/")[1]
    )
    with session_with(per_path) as session:
        session.get("http://api.test/users/1")
        session.get("http://api.test/orders/2")
    assert sorted(per_path.breakers) == ["svc-orders", "svc-users"]


def test_bad_names_and_urls_fail_before_any_request(
    make_adapter: Callable[..., BreakerAdapter],
) -> None:
    upstream = Upstream()
    bad = make_adapter(upstream, name=lambda request: "not a name!")
    with session_with(bad) as session, pytest.raises(ValueError, match="invalid breaker name"):
        session.get(URL)
    with pytest.raises(ValueError, match="invalid breaker name"):
        make_adapter(upstream, name="no spaces")
    adapter = make_adapter(upstream)
    for url in ("http:///nowhere", "http://[::1/", "http://user:secret@a.test:99999/"):
        request = requests.PreparedRequest()
        request.method, request.url, request.headers = "GET", url, CaseInsensitiveDict()
        with pytest.raises(requests.exceptions.InvalidURL) as caught:
            adapter.send(request)
        assert "nowhere" not in str(caught.value)  # a URL may carry credentials: never echoed
        assert "secret" not in str(caught.value)
    assert upstream.calls == 0
    assert adapter.breakers == {}


def test_adapter_options_pass_through_and_close_empties_the_pools(client: Any, prefix: str) -> None:
    adapter = BreakerAdapter(client, config=config_for(prefix, "strict", {}), max_retries=3)
    assert adapter.max_retries.total == 3
    adapter.poolmanager.connection_from_url("http://a.test/")
    assert len(adapter.poolmanager.pools) == 1
    with session_with(adapter):
        pass
    assert len(adapter.poolmanager.pools) == 0


def test_without_requests_the_import_error_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['requests'] = None\n"
        "try:\n"
        "    from distbreaker.requests import BreakerAdapter\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    expected = "distbreaker.requests needs requests: pip install 'distbreaker[requests]'"
    assert result.stdout.strip() == expected
