"""Per-request cost of the breaker transports over bare ones: ``python -m benchmarks.transports``.

A small stdlib HTTP server in its own process (so its threads do not share this one's GIL)
answers ``200`` on loopback. Each client (httpx, httpx async, requests) sends the
same GET through a bare transport and through the breaker transport in cached and strict
mode, plus a request its breaker refuses, in interleaved rounds so a noisy moment on the
machine lands on all of them alike. Each request is timed on its own, GC off; script runs
(round trips to Redis) per request come from the server's ``INFO commandstats`` around each
batch (commands run inside a script, such as ``TIME``, are not round trips: left out).
Without ``--redis-url`` a private ``redis-server`` is started on a free loopback port.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import multiprocessing
import platform
import random
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python benchmarks/transports.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import redis
import requests
import urllib3
from requests.adapters import HTTPAdapter

import distbreaker
from benchmarks.report import micro, table
from benchmarks.timing import Samples, commands_between, server_commands
from distbreaker import BreakerConfig
from distbreaker.httpx import AsyncBreakerTransport, BreakerTransport
from distbreaker.requests import BreakerAdapter

CLIENTS = ("httpx", "httpx async", "requests")
VARIANTS = ("bare", "cached", "strict", "refused")
# What a breaker client sends; everything else in commandstats ran inside a script.
ROUND_TRIPS = frozenset({"evalsha", "eval", "script|load", "script", "subscribe", "ping"})


@dataclass(frozen=True)
class Budget:
    requests: int  # timed requests per subject, split over the rounds
    rounds: int  # GC runs between rounds, never inside one
    round_trip_batch: int  # untimed requests per subject to count Redis round trips


FULL = Budget(requests=5000, rounds=10, round_trip_batch=2000)
QUICK = Budget(requests=600, rounds=3, round_trip_batch=300)


@dataclass
class Subject:
    """One client and variant; ``once()`` sends one request and returns its nanoseconds."""

    client: str
    variant: str
    once: Callable[[], int]
    samples: Samples = field(default_factory=Samples)
    round_trips: float = 0.0  # Redis round trips per request


# -- the upstream, in its own process ------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """200 with a small JSON body, in one write, without Nagle: no delayed-ACK stall."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    wbufsize = -1  # headers and body leave in one segment when the handler returns
    BODY = b'{"ok": true}'

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.BODY)))
        self.end_headers()
        self.wfile.write(self.BODY)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""


def _serve(ports: Any, stop: Any) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ports.put(server.server_address[1])
    stop.wait()
    server.shutdown()
    server.server_close()


class Upstream:
    """The loopback HTTP server, in a spawned process of its own."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        ports = context.Queue()
        self._stop = context.Event()
        self._process = context.Process(target=_serve, args=(ports, self._stop), daemon=True)
        self._process.start()
        self.url = f"http://127.0.0.1:{ports.get(timeout=60)}/"

    def close(self) -> None:
        self._stop.set()
        self._process.join(timeout=10)


# -- in-memory answers, for the clients' own cost -----------------------------------------


def _answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=_Handler.BODY, headers={"Content-Type": "application/json"})


class _CannedAdapter(HTTPAdapter):
    """Answers every request from memory, as ``HTTPAdapter`` would from the network."""

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        headers = {"Content-Type": "application/json", "Content-Length": str(len(_Handler.BODY))}
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(_Handler.BODY), headers=headers, status=200, preload_content=False
        )
        return self.build_response(request, raw)


class _CannedBreakerAdapter(BreakerAdapter, _CannedAdapter):
    """``BreakerAdapter`` over the canned answers (it calls ``super().send``)."""


# -- subjects -----------------------------------------------------------------------------


class Subjects:
    """Builds every client and variant, and closes them all.

    With ``upstream_url`` the requests go to that server; with ``None`` they are answered in
    memory (``httpx.MockTransport``, a canned ``HTTPAdapter``): the clients' own cost alone.
    """

    def __init__(self, redis_url: str, upstream_url: str | None) -> None:
        self.redis_url = redis_url
        self.network = upstream_url is not None
        self.url = upstream_url or "http://in-process.test/"
        self.tag = uuid.uuid4().hex[:8]
        self.loop = asyncio.new_event_loop()
        self._closers: list[Callable[[], None]] = []

    def config(self, variant: str) -> BreakerConfig:
        consistency = "strict" if variant == "strict" else "cached"
        return BreakerConfig(key_prefix=f"bench-tr-{variant}-{self.tag}", consistency=consistency)

    def refused_name(self, client: str) -> str:
        return f"refused-{client.replace(' ', '-')}"

    def build(self) -> list[Subject]:
        subjects = []
        for variant in VARIANTS:
            subjects.append(Subject("httpx", variant, self._httpx(variant)))
            subjects.append(Subject("httpx async", variant, self._httpx_async(variant)))
            subjects.append(Subject("requests", variant, self._requests(variant)))
        return subjects

    def _redis(self) -> redis.Redis:
        client = distbreaker.connect(self.redis_url, timeout=2.0)
        self._closers.append(client.close)
        return client

    def _httpx(self, variant: str) -> Callable[[], int]:
        transport: httpx.BaseTransport = (
            httpx.HTTPTransport() if self.network else httpx.MockTransport(_answer)
        )
        if variant != "bare":
            name = self.refused_name("httpx") if variant == "refused" else None
            breakers = BreakerTransport(
                self._redis(), transport=transport, config=self.config(variant), name=name
            )
            if variant == "refused":
                breakers.breaker_for(self.url).force_open()
            transport = breakers
        client = httpx.Client(transport=transport)
        self._closers.append(client.close)
        url = self.url
        return timed(lambda: client.get(url))

    def _httpx_async(self, variant: str) -> Callable[[], int]:
        async def build() -> httpx.AsyncClient:
            transport: httpx.AsyncBaseTransport = (
                httpx.AsyncHTTPTransport() if self.network else httpx.MockTransport(_answer)
            )
            if variant != "bare":
                name = self.refused_name("httpx async") if variant == "refused" else None
                store = distbreaker.connect_async(self.redis_url, timeout=2.0)
                self._closers.append(lambda: self.loop.run_until_complete(store.aclose()))
                breakers = AsyncBreakerTransport(
                    store, transport=transport, config=self.config(variant), name=name
                )
                if variant == "refused":
                    await breakers.breaker_for(self.url).force_open()
                transport = breakers
            return httpx.AsyncClient(transport=transport)

        client = self.loop.run_until_complete(build())
        self._closers.append(lambda: self.loop.run_until_complete(client.aclose()))
        url = self.url

        def once() -> int:
            return self.loop.run_until_complete(timed_async(lambda: client.get(url)))

        return once

    def _requests(self, variant: str) -> Callable[[], int]:
        session = requests.Session()
        adapter = HTTPAdapter() if self.network else _CannedAdapter()
        if variant != "bare":
            name = self.refused_name("requests") if variant == "refused" else None
            breaker_adapter = BreakerAdapter if self.network else _CannedBreakerAdapter
            adapter = breaker_adapter(self._redis(), config=self.config(variant), name=name)
            if variant == "refused":
                adapter.breaker_for(self.url).force_open()
        session.mount("http://", adapter)
        self._closers.append(session.close)
        url = self.url
        return timed(lambda: session.get(url))

    def close(self) -> None:
        for close in reversed(self._closers):
            close()
        self.loop.close()


def timed(call: Callable[[], object]) -> Callable[[], int]:
    """One timed call; refused requests raise by design and are timed all the same."""
    clock = time.perf_counter_ns

    def once() -> int:
        start = clock()
        try:  # noqa: SIM105 - contextlib.suppress would add its own cost to every sample
            call()
        except Exception:
            pass
        return clock() - start

    return once


async def timed_async(call: Callable[[], Awaitable[object]]) -> int:
    """The async twin of ``timed``: the loop's own scheduling is outside the sample."""
    clock = time.perf_counter_ns
    start = clock()
    try:  # noqa: SIM105
        await call()
    except Exception:
        pass
    return clock() - start


# -- measuring and reporting -----------------------------------------------------------------


def measure(subjects: list[Subject], budget: Budget) -> None:
    """One request per subject at a time, in shuffled cycles: drift lands on all alike."""
    for subject in subjects:
        for _ in range(50):  # connections, scripts, caches, subscribers: set up before timing
            subject.once()
    per_round = max(1, budget.requests // budget.rounds)
    order = list(subjects)
    shuffle = random.Random(8).shuffle
    for _ in range(budget.rounds):
        gc.collect()
        gc.disable()
        try:
            for _ in range(per_round):
                shuffle(order)  # a new order every cycle: no subject always follows another
                for subject in order:
                    subject.samples.values.append(subject.once())
        finally:
            gc.enable()


def count_round_trips(subjects: list[Subject], admin: redis.Redis, requests: int) -> None:
    """Round trips per request from the server's ``INFO commandstats``, around a batch each."""
    for subject in subjects:
        before = server_commands(admin)
        for _ in range(requests):
            subject.once()
        ran = commands_between(before, server_commands(admin))
        subject.round_trips = sum(n for name, n in ran.items() if name in ROUND_TRIPS) / requests


def report(subjects: list[Subject]) -> str:
    by_key = {(s.client, s.variant): s for s in subjects}
    rows: list[list[object]] = []
    for client in CLIENTS:
        bare, cached, strict, refused = (by_key[(client, v)] for v in VARIANTS)
        base = bare.samples.median
        rows.append(
            [
                client,
                micro(base),
                micro(cached.samples.median),
                micro(cached.samples.median - base),
                f"{cached.samples.median / base:.3f}",
                f"{cached.round_trips:.4f}",
                micro(strict.samples.median),
                micro(strict.samples.median - base),
                f"{strict.round_trips:.2f}",
                micro(refused.samples.median),
            ]
        )
    header = [
        "client",
        "bare µs",
        "cached µs",
        "cached overhead µs",
        "cached / bare",
        "round trips/req (cached)",
        "strict µs",
        "strict overhead µs",
        "round trips/req (strict)",
        "refused µs",
    ]
    return table(header, rows)


def versions(admin: redis.Redis) -> str:
    from importlib.metadata import version

    server = admin.info("server")["redis_version"]
    packages = ", ".join(f"{p} {version(p)}" for p in ("httpx", "requests", "redis"))
    return f"Python {platform.python_version()}, redis-server {server}; {packages}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transports", description=__doc__)
    parser.add_argument("--redis-url", help="an existing Redis (default: start a private one)")
    parser.add_argument(
        "--quick", action="store_true", help="fewer samples (~10 s instead of ~1 min)"
    )
    parser.add_argument("--requests", type=int, help="timed requests per subject (overrides)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = QUICK if args.quick else FULL
    if args.requests is not None:
        rounds = min(budget.rounds, args.requests)
        budget = Budget(args.requests, rounds, min(budget.round_trip_batch, args.requests))
    server = None
    url = args.redis_url
    if url is None:
        from distbreaker.testing import RedisServer, find_redis_server

        binary = find_redis_server()
        if binary is None:
            print("no --redis-url and no redis-server on PATH", file=sys.stderr)
            return 2
        server = RedisServer(binary).start()
        url = server.url
    started = time.monotonic()
    admin = distbreaker.connect(url, timeout=5.0)
    upstream = Upstream()
    loopback = Subjects(url, upstream.url)
    in_memory = Subjects(url, None)
    try:
        over_network, from_memory = loopback.build(), in_memory.build()
        measure(over_network + from_memory, budget)
        count_round_trips(over_network + from_memory, admin, budget.round_trip_batch)
        print("# Breaker transports: per-request cost\n")
        print(versions(admin) + "\n")
        print(
            f"{budget.requests} timed requests per cell, one request per cell at a time in "
            "shuffled cycles (both tables in the same run); medians. Overhead = breaker median "
            "minus bare median of the same client. Round trips: Redis script runs per request "
            f"over {budget.round_trip_batch} more requests (server-side `INFO commandstats`). "
            "`refused`: a request its breaker refuses (forced open, cached mode), which never "
            "reaches the network.\n"
        )
        print("## Loopback: GET of a small JSON answer from a server in another process\n")
        print(report(over_network))
        print(
            "\n## In memory: the same clients answered by `httpx.MockTransport` and a canned "
            "`HTTPAdapter` (no network: the clients' own cost, and the breaker's)\n"
        )
        print(report(from_memory))
    finally:
        in_memory.close()
        loopback.close()
        upstream.close()
        admin.close()
        if server is not None:
            server.stop()
    print(f"\n(took {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
