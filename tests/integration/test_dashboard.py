"""``distbreaker dashboard`` as a user runs it (a subprocess) against a real redis-server:
live updates fanned out to many clients, the JSON listing, controls, hostile input."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import distbreaker
from distbreaker import Breaker, BreakerConfig
from distbreaker.testing import free_port
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

TOKEN = "integration-token-0123456789abcdef"
TOKEN_HEADER = "X-Distbreaker-Token"

# A worker in another process: fails `threshold` times through the shared breaker.
TRIPPER = """
import sys
import distbreaker
from distbreaker import Breaker, BreakerConfig
url, prefix, name, threshold, reset = sys.argv[1:6]
config = BreakerConfig(
    key_prefix=prefix, failure_threshold=int(threshold), reset_timeout=float(reset),
    consistency="strict",
)
breaker = Breaker(name, distbreaker.connect(url, timeout=2.0), config)
def boom():
    raise ConnectionError("upstream down")
for _ in range(int(threshold)):
    try:
        breaker.execute(boom)
    except (ConnectionError, distbreaker.CircuitOpenError):
        pass
print(breaker.status().state)
"""


def trip_elsewhere(
    redis_url: str, prefix: str, name: str, threshold: int = 3, reset: float = 60
) -> str:
    """Trip ``name`` from another process; the state it ended in."""
    done = subprocess.run(
        [sys.executable, "-c", TRIPPER, redis_url, prefix, name, str(threshold), str(reset)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class DashboardProcess:
    """``python -m distbreaker dashboard`` on a free loopback port."""

    def __init__(self, redis_url: str, prefix: str, token_file: Path | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        args = [
            sys.executable,
            "-m",
            "distbreaker",
            "dashboard",
            "--redis-url",
            redis_url,
            "--prefix",
            prefix,
            "--port",
            str(self.port),
        ]
        if token_file is not None:
            args += ["--token-file", str(token_file)]
        self.process = subprocess.Popen(args, stdout=self.log, stderr=self.log)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"dashboard exited: {self.output()}")
            try:
                if httpx.get(f"{self.url}/api/breakers", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"dashboard not ready after {timeout:g}s: {self.output()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def write_token(directory: Path) -> Path:
    path = directory / "dashboard-token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"dash-{uuid.uuid4().hex[:10]}"
    yield name
    client = distbreaker.connect(redis_url, timeout=2.0)
    keys = list(client.scan_iter(match=f"{name}:*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def dashboard(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[DashboardProcess]:
    server = DashboardProcess(redis_url, prefix, write_token(tmp_path))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def breaker(redis_url: str, prefix: str, name: str, threshold: int = 3) -> Breaker:
    config = BreakerConfig(key_prefix=prefix, failure_threshold=threshold, consistency="strict")
    return Breaker(name, distbreaker.connect(redis_url, timeout=2.0), config)


def one_failure(target: Breaker) -> None:
    with pytest.raises(ConnectionError):
        target.execute(lambda: (_ for _ in ()).throw(ConnectionError("down")))


def state_in(message: dict[str, Any], name: str) -> str | None:
    found = re.search(rf'data-name="{re.escape(name)}".*?data-state="(\w+)"', message["rows"])
    return found.group(1) if found else None


async def watch_until(
    client: httpx.AsyncClient, url: str, name: str, state: str, ready: asyncio.Event
) -> float:
    """Follow the stream until ``name`` shows ``state``; the wall-clock time it did."""
    async with client.stream("GET", f"{url}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            fleet = json.loads(line[len("data: ") :])["fleet"]
            ready.set()
            if state_in(fleet, name) == state:
                return time.time()
    raise AssertionError("stream ended")


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in {text}"
    return float(found.group(1))


async def test_one_trip_reaches_every_open_page_through_one_subscriber(
    dashboard: DashboardProcess, redis_url: str, prefix: str
) -> None:
    clients = 25
    one_failure(breaker(redis_url, prefix, "payments"))  # the row exists, closed
    reads_before = metric(dashboard.url, "distbreaker_dashboard_fleet_reads_total")
    limits = httpx.Limits(max_connections=clients + 5)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=60), limits=limits) as client:
        readies = [asyncio.Event() for _ in range(clients)]
        watchers = [
            asyncio.create_task(watch_until(client, dashboard.url, "payments", "open", ready))
            for ready in readies
        ]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), timeout=60)
        assert metric(dashboard.url, "distbreaker_dashboard_clients") == clients
        started = time.monotonic()
        assert await asyncio.to_thread(trip_elsewhere, redis_url, prefix, "payments") == "open"
        seen = await asyncio.wait_for(asyncio.gather(*watchers), timeout=60)
    elapsed = time.monotonic() - started
    opened_at = breaker(redis_url, prefix, "payments").status().opened_at
    assert opened_at is not None
    delays = sorted(at - opened_at for at in seen)
    print(
        f"\n{clients} streams saw the trip {delays[0] * 1000:.0f} to {delays[-1] * 1000:.0f} ms "
        "after the breaker opened"
    )
    assert len(seen) == clients
    # one listing per update for all of them: at most one read per 0.25 s, however many
    reads = metric(dashboard.url, "distbreaker_dashboard_fleet_reads_total") - reads_before
    assert reads <= elapsed / 0.25 + 4


def test_the_json_listing_is_what_status_json_prints(
    dashboard: DashboardProcess, redis_url: str, prefix: str
) -> None:
    one_failure(breaker(redis_url, prefix, "github", threshold=5))
    trip_elsewhere(redis_url, prefix, "payments")
    printed = subprocess.run(
        [
            sys.executable,
            "-m",
            "distbreaker",
            "status",
            "--json",
            "--prefix",
            prefix,
            "--redis-url",
            redis_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    expected = json.loads(printed.stdout)
    wait_until(
        lambda: len(httpx.get(f"{dashboard.url}/api/breakers", timeout=5).json()) == 2,
        20,
        "both breakers in the JSON listing",
    )
    served = httpx.get(f"{dashboard.url}/api/breakers", timeout=5).json()
    assert [sorted(entry) for entry in served] == [sorted(entry) for entry in expected]
    for mine, theirs in zip(served, expected, strict=True):
        assert abs(mine.pop("time_until_reset") - theirs.pop("time_until_reset")) < 5
        since, expected_since = mine.pop("since"), theirs.pop("since")
        assert (since is None) == (expected_since is None)
        assert since is None or abs(since - expected_since) < 5
        assert mine == theirs


def test_controls_without_the_token_are_refused_and_change_nothing(
    dashboard: DashboardProcess, redis_url: str, prefix: str
) -> None:
    trip_elsewhere(redis_url, prefix, "payments")
    target = breaker(redis_url, prefix, "payments")
    before = target.status()
    url = f"{dashboard.url}/api/breakers/payments/reset"
    json_type = {"Content-Type": "application/json"}
    refused = [
        httpx.post(url, content=b"{}", headers=json_type, timeout=5),
        httpx.post(url, content=b"{}", headers={**json_type, TOKEN_HEADER: "x" * 32}, timeout=5),
        httpx.post(
            url,
            content=b"{}",
            headers={**json_type, TOKEN_HEADER: TOKEN, "Origin": "http://evil.example"},
            timeout=5,
        ),
        httpx.get(url, timeout=5),
    ]
    assert [r.status_code for r in refused] == [401, 401, 403, 405]
    after = target.status()
    assert (after.state, after.generation) == (before.state, before.generation)
    accepted = httpx.post(url, content=b"{}", headers={**json_type, TOKEN_HEADER: TOKEN}, timeout=5)
    assert accepted.status_code == 200
    assert target.status().state == "closed"
    wait_until(
        lambda: "reset 'payments' by dashboard@127.0.0.1" in dashboard.output(),
        10,
        "the control in the dashboard's log",
    )
    assert TOKEN not in dashboard.output()


def test_hostile_messages_on_the_channel_are_ignored_or_escaped(
    dashboard: DashboardProcess, redis_url: str, prefix: str
) -> None:
    trip_elsewhere(redis_url, prefix, "payments")
    client = distbreaker.connect(redis_url, timeout=2.0)
    hostile = '<img src=x onerror="alert(1)">'
    now = int(time.time() * 1000)
    event = {"name": "payments", "from": "open", "to": "open", "generation": 7, "at": now}
    client.publish(f"{prefix}:events", json.dumps({**event, "name": "<script>x</script>"}))
    client.publish(f"{prefix}:events", b"\xff not json")
    client.publish(f"{prefix}:events", json.dumps({**event, "reason": hostile}))
    escaped = "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"
    wait_until(
        lambda: escaped in httpx.get(dashboard.url, timeout=5).text,
        20,
        "the escaped reason on the page",
    )
    page = httpx.get(dashboard.url, timeout=5).text
    assert hostile not in page
    assert "<script>x" not in page
    assert "&lt;script&gt;x" not in page  # a bad name is not shown at all
    client.close()


def test_a_public_bind_without_a_token_is_refused_before_listening(
    redis_url: str, prefix: str
) -> None:
    port = free_port()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "distbreaker",
            "dashboard",
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            "--redis-url",
            redis_url,
            "--prefix",
            prefix,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0 without --token-file" in done.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_a_group_readable_token_file_is_refused(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    path = write_token(tmp_path)
    path.chmod(0o640)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "distbreaker",
            "dashboard",
            "--token-file",
            str(path),
            "--port",
            str(free_port()),
            "--redis-url",
            redis_url,
            "--prefix",
            prefix,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "chmod 600" in done.stderr
    assert TOKEN not in done.stderr
