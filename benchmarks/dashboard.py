"""How many pages the dashboard keeps updated at once, and what Redis load it adds:
``python -m benchmarks.dashboard [--streams 50] [--window 60] [--quick]``.

Four windows of the same background activity (a breaker flipped open and closed every few
seconds by this process): no dashboard; ``distbreaker dashboard`` with no page open; the
dashboard with one server-sent-event client (httpx); and with ``--streams`` of them plus,
where Debian's Chromium is installed, one real headless browser. The server's
``INFO commandstats`` before and after each window gives every command Redis ran (commands
inside scripts included), and each stream's arrival time of every flip gives the delivery
delay.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python benchmarks/dashboard.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

import distbreaker
from benchmarks.report import table
from benchmarks.subjects import delete_keys
from benchmarks.timing import commands_between, server_commands
from distbreaker import Breaker, BreakerConfig
from distbreaker.testing import RedisServer, find_redis_server, free_port

FLAPPER = "flappy"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dashboard", description=__doc__)
    parser.add_argument("--redis-url", help="an existing Redis (default: start a private one)")
    parser.add_argument("--streams", type=int, default=50, help="SSE clients (default 50)")
    parser.add_argument("--breakers", type=int, default=10, help="breakers listed (default 10)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds per window")
    parser.add_argument("--flip-every", type=float, default=5.0, help="seconds between flips")
    parser.add_argument("--quick", action="store_true", help="10 s windows")
    parser.add_argument("--no-browser", action="store_true", help="streams only")
    return parser.parse_args(argv)


class Flapper:
    """Flips one breaker between forced open and closed at a fixed pace, in a thread."""

    def __init__(self, breaker: Breaker, every: float) -> None:
        self.breaker = breaker
        self.every = every
        self.flips: list[tuple[float, str]] = []  # (wall time, state after)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Flapper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        opened = False
        while not self._stop.wait(self.every):
            if opened:
                self.breaker.reset()
            else:
                self.breaker.force_open()
            opened = not opened
            self.flips.append((time.time(), "forced_open" if opened else "closed"))


class Dashboard:
    """``python -m distbreaker dashboard`` on a free loopback port."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        args = [sys.executable, "-m", "distbreaker", "dashboard", "--redis-url", redis_url]
        args += ["--prefix", prefix, "--port", str(self.port)]
        self.process = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/api/breakers", timeout=2).status_code == 200:
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.log.seek(0)
        raise RuntimeError(f"dashboard did not start: {self.log.read().decode()}")

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else float("nan")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@dataclass
class Window:
    label: str
    pages: str
    seconds: float
    commands: dict[str, int]
    flips: int

    @property
    def total(self) -> int:
        return sum(self.commands.values())

    def top(self, count: int = 4) -> str:
        ranked = sorted(self.commands.items(), key=lambda item: -item[1])[:count]
        return ", ".join(f"{name} {calls}" for name, calls in ranked) or "-"


@dataclass
class Streams:
    """What every SSE client saw: the flapper's state per message, with arrival times."""

    seen: list[list[tuple[float, str]]] = field(default_factory=list)


def flapper_state(rows_html: str) -> str | None:
    found = re.search(rf'data-name="{FLAPPER}".*?data-state="(\w+)"', rows_html)
    return found.group(1) if found else None


async def follow(client: httpx.AsyncClient, url: str, log: list[tuple[float, str]]) -> None:
    async with client.stream("GET", f"{url}/events") as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                state = flapper_state(json.loads(line[6:])["fleet"]["rows"])
                if state is not None and (not log or log[-1][1] != state):
                    log.append((time.time(), state))


async def streams_for(url: str, count: int, seconds: float) -> Streams:
    streams = Streams(seen=[[] for _ in range(count)])
    limits = httpx.Limits(max_connections=count + 5)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None), limits=limits) as client:
        tasks = [asyncio.create_task(follow(client, url, log)) for log in streams.seen]
        await asyncio.sleep(seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return streams


def delays(flips: list[tuple[float, str]], seen: list[list[tuple[float, str]]]) -> list[float]:
    """For each flip and each stream, seconds until the stream showed the new state; a
    flip a stream never showed counts as infinite (a miss)."""
    out = []
    for index, (at, state) in enumerate(flips):
        until = flips[index + 1][0] if index + 1 < len(flips) else float("inf")
        for log in seen:
            arrivals = [t for t, s in log if s == state and at - 0.05 <= t < until + 1.0]
            out.append(min(arrivals) - at if arrivals else float("inf"))
    return out


@contextlib.contextmanager
def browser(url: str, enabled: bool) -> Iterator[Any]:
    if not enabled or not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        yield None
        return
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        driver.get(url)
        yield driver
    finally:
        driver.quit()


def measure(client: Any, seconds: float, flapper: Flapper, label: str, pages: str) -> Window:
    before, flips_before = server_commands(client), len(flapper.flips)
    time.sleep(seconds)
    after = server_commands(client)
    return Window(
        label, pages, seconds, commands_between(before, after), len(flapper.flips) - flips_before
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class Delivery:
    """One window with pages open: what each stream saw of the flips inside it."""

    streams: int
    flips: list[tuple[float, str]]
    seen: Streams
    browser_state: str | None


def pages_window(
    client: Any, dashboard: Dashboard, flapper: Flapper, count: int, seconds: float, real: bool
) -> tuple[Window, Delivery]:
    with browser(dashboard.url, real) as page:
        flips_from = len(flapper.flips)
        before = server_commands(client)
        streams = asyncio.run(streams_for(dashboard.url, count, seconds))
        after = server_commands(client)
        state = None
        if page is not None:
            state = page.execute_script(
                f"const c = document.querySelector(`tr[data-name='{FLAPPER}'] td.state`);"
                "return c ? c.dataset.state : null;"
            )
    flips = flapper.flips[flips_from:]
    pages = f"{count + (page is not None)} ({count} stream{'' if count == 1 else 's'}"
    pages += " + 1 browser)" if page is not None else ")"
    window = Window(
        "dashboard, pages open", pages, seconds, commands_between(before, after), len(flips)
    )
    return window, Delivery(count, flips, streams, state)


def run(url: str, args: argparse.Namespace) -> None:
    seconds = 10.0 if args.quick else args.window
    prefix = f"bench-dash-{uuid.uuid4().hex[:8]}"
    client = distbreaker.connect(url, timeout=5.0)
    config = BreakerConfig(key_prefix=prefix, failure_threshold=5, consistency="strict")
    for index in range(args.breakers - 1):
        breaker = Breaker(f"upstream-{index:02d}", client, config)
        with contextlib.suppress(ConnectionError):
            breaker.execute(lambda: (_ for _ in ()).throw(ConnectionError("down")))
    flappy = Breaker(FLAPPER, client, config)
    flappy.reset()
    windows: list[Window] = []
    deliveries: list[Delivery] = []
    try:
        with Flapper(flappy, args.flip_every) as flapper:
            windows.append(measure(client, seconds, flapper, "no dashboard", "-"))
            dashboard = Dashboard(url, prefix)
            try:
                time.sleep(1.0)  # its start-up reads are not part of the idle window
                windows.append(measure(client, seconds, flapper, "dashboard, no page open", "0"))
                for count, real in ((1, False), (args.streams, not args.no_browser)):
                    window, delivery = pages_window(
                        client, dashboard, flapper, count, seconds, real
                    )
                    windows.append(window)
                    deliveries.append(delivery)
                reads = dashboard.metric("distbreaker_dashboard_fleet_reads_total")
            finally:
                dashboard.stop()
    finally:
        delete_keys(client, f"{prefix}:*")
    print_report(windows, deliveries, flapper.flips, args, reads)


def print_report(
    windows: list[Window],
    deliveries: list[Delivery],
    all_flips: list[tuple[float, str]],
    args: argparse.Namespace,
    reads: float,
) -> None:
    every = f"{args.flip_every:g} s"
    print(f"\n### Dashboard load ({args.breakers} breakers, one flipped every {every})\n")
    # the flipper's own commands, per flip, from the window without a dashboard
    per_flip = windows[0].total / max(1, windows[0].flips)

    def added(w: Window) -> str:
        return f"{(w.total - w.flips * per_flip) / w.seconds:.1f}"

    header = ["window", "pages open", "seconds", "flips", "server commands", "commands/s"]
    header += ["added by the dashboard /s", "top commands"]
    rows = [
        [
            *(w.label, w.pages, f"{w.seconds:g}", w.flips, w.total, f"{w.total / w.seconds:.1f}"),
            added(w) if i else "-",
            w.top(),
        ]
        for i, w in enumerate(windows)
    ]
    print(table(header, rows))
    print(f"\n{reads:.0f} fleet listings read by the dashboard in all")
    print("\n### Delivery of the flips to every stream\n")
    lines = []
    for delivery in deliveries:
        waits = delays(delivery.flips, delivery.seen.seen)
        got = [d * 1000 for d in waits if d != float("inf")]
        lines.append(
            [
                delivery.streams,
                len(delivery.flips),
                len(waits),
                len(waits) - len(got),
                f"{percentile(got, 0.5):.0f}" if got else "-",
                f"{percentile(got, 0.99):.0f}" if got else "-",
                f"{max(got):.0f}" if got else "-",
            ]
        )
    print(table(["streams", "flips", "deliveries", "missed", "p50 ms", "p99 ms", "max ms"], lines))
    last = deliveries[-1].browser_state
    if last is not None:
        final = all_flips[-1][1] if all_flips else "?"
        print(f"\nthe browser's row at the end: {last} (the flipper's state then: {final})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.redis_url:
        run(args.redis_url, args)
        return 0
    binary = find_redis_server()
    if binary is None:
        print("no redis-server on PATH: pass --redis-url", file=sys.stderr)
        return 2
    server = RedisServer(binary).start()
    try:
        run(server.url, args)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
