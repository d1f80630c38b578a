"""The httpx transports and the requests adapter against real loopback servers and real Redis.

Every case runs for the sync httpx transport, the async one and the requests adapter. The
"other process" is a fresh Python (``tests.integration.transport_client``) with its own
connections and breakers, sharing only Redis.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
import requests

import distbreaker
from distbreaker import BreakerConfig, BreakerStatus, CircuitOpenError
from distbreaker.httpx import AsyncBreakerTransport, BreakerTransport
from distbreaker.requests import BreakerAdapter
from distbreaker.testing import FlakyUpstream
from tests.integration.transport_client import SETTINGS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("httpx", "httpx-async", "requests")
THRESHOLD = SETTINGS["failure_threshold"]


# -- a loopback server for what FlakyUpstream does not do: any status, a slow stream ---------


class _Handler(BaseHTTPRequestHandler):
    server: StatusServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.count()
        if self.path == "/stream":
            self._stream()
            return
        status = int(self.path.rsplit("/", 1)[-1]) if self.path.startswith("/status/") else 200
        body = json.dumps({"status": status}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        """The first chunk at once; the rest only after the test released it (or 10 s)."""
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._chunk(StatusServer.FIRST)
        self.wfile.flush()
        if not self.server.release.wait(timeout=10):
            self.server.held_until_timeout = True
        self._chunk(StatusServer.REST)
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""


class StatusServer(ThreadingHTTPServer):
    """``/status/<code>`` answers that code; ``/stream`` streams two chunks. Counts requests."""

    daemon_threads = True
    block_on_close = False
    FIRST = b"first chunk\n"
    REST = b"the rest, sent once the client has read the first chunk\n"

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.release = threading.Event()
        self.held_until_timeout = False
        self._lock = threading.Lock()
        self.requests = 0

    def count(self) -> None:
        with self._lock:
            self.requests += 1

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


# -- one interface over the three clients ------------------------------------------------------


@dataclass
class Outcome:
    status: int | None = None
    refused: CircuitOpenError | None = None
    error: Exception | None = None


class Caller(Protocol):
    """One client of one kind with its own Redis connection; every method is awaitable."""

    library_error: type[Exception]

    async def get(self, url: str) -> Outcome: ...

    async def status(self, url: str) -> BreakerStatus: ...

    async def stream(self, url: str, release: Callable[[], None]) -> tuple[bytes, bytes]:
        """Read the first chunk, call ``release``, read the rest."""
        ...

    async def close(self) -> None: ...


class HttpxCaller:
    library_error: type[Exception] = httpx.TransportError

    def __init__(self, redis_url: str, config: BreakerConfig) -> None:
        self.redis = distbreaker.connect(redis_url, timeout=2.0)
        self.transport = BreakerTransport(self.redis, config=config)
        self.client = httpx.Client(transport=self.transport, timeout=10)

    async def get(self, url: str) -> Outcome:
        try:
            return Outcome(status=self.client.get(url).status_code)
        except CircuitOpenError as refusal:
            return Outcome(refused=refusal)
        except httpx.TransportError as error:
            return Outcome(error=error)

    async def status(self, url: str) -> BreakerStatus:
        return self.transport.breaker_for(url).status()

    async def stream(self, url: str, release: Callable[[], None]) -> tuple[bytes, bytes]:
        with self.client.stream("GET", url) as response:
            chunks = response.iter_raw()
            first = next(chunks)
            release()
            return first, b"".join(chunks)

    async def close(self) -> None:
        self.client.close()
        self.redis.close()


class AsyncHttpxCaller:
    library_error: type[Exception] = httpx.TransportError

    def __init__(self, redis_url: str, config: BreakerConfig) -> None:
        self.redis = distbreaker.connect_async(redis_url, timeout=2.0)
        self.transport = AsyncBreakerTransport(self.redis, config=config)
        self.client = httpx.AsyncClient(transport=self.transport, timeout=10)

    async def get(self, url: str) -> Outcome:
        try:
            return Outcome(status=(await self.client.get(url)).status_code)
        except CircuitOpenError as refusal:
            return Outcome(refused=refusal)
        except httpx.TransportError as error:
            return Outcome(error=error)

    async def status(self, url: str) -> BreakerStatus:
        return await self.transport.breaker_for(url).status()

    async def stream(self, url: str, release: Callable[[], None]) -> tuple[bytes, bytes]:
        async with self.client.stream("GET", url) as response:
            chunks = response.aiter_raw()
            first = await anext(chunks)
            release()
            return first, b"".join([chunk async for chunk in chunks])

    async def close(self) -> None:
        await self.client.aclose()
        await self.redis.aclose()


class RequestsCaller:
    library_error: type[Exception] = requests.ConnectionError

    def __init__(self, redis_url: str, config: BreakerConfig) -> None:
        self.redis = distbreaker.connect(redis_url, timeout=2.0)
        self.adapter = BreakerAdapter(self.redis, config=config)
        self.session = requests.Session()
        self.session.mount("http://", self.adapter)

    async def get(self, url: str) -> Outcome:
        try:
            return Outcome(status=self.session.get(url, timeout=10).status_code)
        except CircuitOpenError as refusal:
            return Outcome(refused=refusal)
        except requests.RequestException as error:
            return Outcome(error=error)

    async def status(self, url: str) -> BreakerStatus:
        return self.adapter.breaker_for(url).status()

    async def stream(self, url: str, release: Callable[[], None]) -> tuple[bytes, bytes]:
        with self.session.get(url, stream=True, timeout=10) as response:
            chunks = response.iter_content(chunk_size=len(StatusServer.FIRST))
            first = next(chunks)
            release()
            return first, b"".join(chunks)

    async def close(self) -> None:
        self.session.close()
        self.redis.close()


CALLERS: dict[str, Callable[[str, BreakerConfig], Caller]] = {
    "httpx": HttpxCaller,
    "httpx-async": AsyncHttpxCaller,
    "requests": RequestsCaller,
}


@pytest.fixture
def prefix() -> str:
    return f"tr-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_caller(
    redis_url: str, prefix: str, kind: str
) -> AsyncIterator[Callable[..., Caller]]:
    made: list[Caller] = []

    def build(**settings: Any) -> Caller:
        config = BreakerConfig(key_prefix=prefix, **{**SETTINGS, **settings})
        caller = CALLERS[kind](redis_url, config)
        made.append(caller)
        return caller

    yield build
    for caller in made:
        await caller.close()


@pytest.fixture
def upstream() -> Iterator[FlakyUpstream]:
    with FlakyUpstream(retry_after=60) as server:
        yield server


@pytest.fixture
def status_server() -> Iterator[StatusServer]:
    server = StatusServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def from_another_process(kind: str, redis_url: str, prefix: str, url: str) -> dict[str, Any]:
    """One request from a fresh Python process sharing only Redis."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.integration.transport_client", kind, redis_url, prefix, url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


async def wait_until(condition: Callable[[], Any]) -> None:
    """Poll an awaitable condition until it holds (10 s at most)."""
    async with asyncio.timeout(10):
        while not await condition():  # noqa: ASYNC110 - the condition lives in Redis
            await asyncio.sleep(0.02)


# -- the cases -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["error", "reset"])
async def test_failures_open_the_breaker_for_another_process_which_sends_nothing(
    make_caller: Callable[..., Caller],
    upstream: FlakyUpstream,
    redis_url: str,
    prefix: str,
    kind: str,
    mode: str,
) -> None:
    caller = make_caller()
    upstream.mode = mode
    outcomes = [await caller.get(upstream.url) for _ in range(THRESHOLD)]
    if mode == "error":
        assert [o.status for o in outcomes] == [503] * THRESHOLD  # returned, and counted
    else:
        assert all(o.error is not None for o in outcomes), outcomes
    assert upstream.requests == THRESHOLD
    assert (await caller.status(upstream.url)).state == "open"

    other = from_another_process(kind, redis_url, prefix, upstream.url)
    name = f"http:127.0.0.1:{upstream.port}"
    assert other == {
        "refused": "CircuitOpenConnectionError"
        if kind == "requests"
        else "CircuitOpenTransportError",
        "name": name,
        "state": "open",
        "library_error": True,
    }
    refused = await caller.get(upstream.url)
    assert refused.refused is not None
    assert isinstance(refused.refused, caller.library_error)
    assert upstream.requests == THRESHOLD  # neither refusal reached the upstream


async def test_a_429_with_retry_after_holds_the_breaker_open_for_the_fleet(
    make_caller: Callable[..., Caller],
    upstream: FlakyUpstream,
    redis_url: str,
    prefix: str,
    kind: str,
) -> None:
    caller = make_caller()
    upstream.mode = "rate_limited"
    assert (await caller.get(upstream.url)).status == 429  # the caller still sees the answer
    status = await caller.status(upstream.url)
    assert status.state == "open"
    assert status.failure_count == 0
    assert 50 < status.time_until_reset <= 60
    assert (await caller.get(upstream.url)).refused is not None
    other = from_another_process(kind, redis_url, prefix, upstream.url)
    assert other["state"] == "open"
    assert "refused" in other
    assert upstream.requests == 1


async def test_a_404_does_not_count(
    make_caller: Callable[..., Caller], status_server: StatusServer
) -> None:
    caller = make_caller(failure_threshold=2)
    url = status_server.url + "/status/404"
    outcomes = [await caller.get(url) for _ in range(5)]
    assert [o.status for o in outcomes] == [404] * 5
    status = await caller.status(url)
    assert (status.state, status.failure_count) == ("closed", 0)
    assert status_server.requests == 5


async def test_a_streaming_response_still_streams(
    make_caller: Callable[..., Caller], status_server: StatusServer
) -> None:
    caller = make_caller()
    first, rest = await caller.stream(status_server.url + "/stream", status_server.release.set)
    assert first == StatusServer.FIRST
    assert rest == StatusServer.REST
    assert not status_server.held_until_timeout  # the first chunk arrived before the rest was sent


async def test_one_breaker_per_host_keeps_the_healthy_upstream_working(
    make_caller: Callable[..., Caller], upstream: FlakyUpstream
) -> None:
    with FlakyUpstream() as healthy:
        caller = make_caller()
        upstream.mode = "error"
        for _ in range(THRESHOLD):
            await caller.get(upstream.url)
        assert (await caller.get(upstream.url)).refused is not None
        assert [(await caller.get(healthy.url)).status for _ in range(3)] == [200] * 3
        assert (await caller.status(healthy.url)).state == "closed"
        assert (await caller.status(upstream.url)).state == "open"
        assert healthy.requests == 3
        assert upstream.requests == THRESHOLD


async def test_recovers_through_a_probe_once_the_upstream_answers(
    make_caller: Callable[..., Caller], upstream: FlakyUpstream
) -> None:
    caller = make_caller(reset_timeout=0.3)
    upstream.mode = "error"
    for _ in range(THRESHOLD):
        await caller.get(upstream.url)

    async def reset_timeout_passed() -> bool:
        return (await caller.status(upstream.url)).time_until_reset == 0

    await wait_until(reset_timeout_passed)
    upstream.mode = "ok"
    assert (await caller.get(upstream.url)).status == 200
    status = await caller.status(upstream.url)
    assert (status.state, status.failure_count) == ("closed", 0)
