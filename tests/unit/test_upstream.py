"""FlakyUpstream: each mode answers as documented, on loopback, and stops cleanly."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from distbreaker.testing import FlakyUpstream


@pytest.fixture
def upstream() -> Iterator[FlakyUpstream]:
    with FlakyUpstream(hang_seconds=0.5, retry_after=7) as server:
        yield server


def test_ok_mode_answers_200_and_counts_requests(upstream: FlakyUpstream) -> None:
    assert upstream.url.startswith("http://127.0.0.1:")
    first = httpx.get(upstream.url, timeout=2)
    second = httpx.post(upstream.url + "anything", timeout=2)
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json() == {"ok": True, "request": 1}
    assert upstream.requests == 2


def test_error_mode_answers_503(upstream: FlakyUpstream) -> None:
    upstream.mode = "error"
    assert httpx.get(upstream.url, timeout=2).status_code == 503


def test_rate_limited_mode_answers_429_with_retry_after(upstream: FlakyUpstream) -> None:
    upstream.mode = "rate_limited"
    response = httpx.get(upstream.url, timeout=2)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"


def test_reset_mode_resets_the_connection(upstream: FlakyUpstream) -> None:
    upstream.mode = "reset"
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(upstream.url, timeout=2)
    assert upstream.requests == 1


def test_hang_mode_times_out_a_short_client_timeout(upstream: FlakyUpstream) -> None:
    upstream.mode = "hang"
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(upstream.url, timeout=0.1)
    # after hang_seconds it answers
    assert httpx.get(upstream.url, timeout=2).json()["late"] is True


def test_stop_releases_a_hanging_request_at_once() -> None:
    server = FlakyUpstream("hang", hang_seconds=30).start()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            httpx.get(server.url, timeout=10)
        except httpx.HTTPError as error:
            errors.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    while server.requests == 0:
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    caller.join(timeout=5)
    assert time.monotonic() - started < 2
    assert not caller.is_alive()
    assert errors  # the hanging request ended without an answer


def test_mode_can_switch_while_serving(upstream: FlakyUpstream) -> None:
    with httpx.Client(timeout=2) as client:
        assert client.get(upstream.url).status_code == 200
        upstream.mode = "error"
        assert client.get(upstream.url).status_code == 503
        upstream.mode = "ok"
        assert client.get(upstream.url).status_code == 200


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown upstream mode"):
        FlakyUpstream("flaky")
    server = FlakyUpstream()
    with pytest.raises(ValueError, match="unknown upstream mode"):
        server.mode = "down"
    assert server.mode == "ok"


def test_url_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = FlakyUpstream().url
