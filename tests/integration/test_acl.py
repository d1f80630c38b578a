"""The README's worker, observer and operator ACL users on a real Redis 7, enforced by Redis.

ACL users are server-wide, so this module starts its own ``redis-server`` (and a read-only
replica of it) and creates the users exactly as the README's ``ACL SETUSER`` lines say, for
the README's prefix ``payments`` and, for "another team", ``search``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import distbreaker
from distbreaker import (
    AsyncBreaker,
    Breaker,
    BreakerConfig,
    CircuitOpenError,
    PermissionDeniedError,
)
from distbreaker.classify import Verdict
from distbreaker.cli import run
from distbreaker.dashboard.app import TOKEN_HEADER, create_app
from distbreaker.fleet import Fleet
from distbreaker.testing import free_port
from tests.conftest import FakeClock
from tests.integration.secure_redis import (
    EXAMPLE_PREFIX,
    PrivateRedis,
    create_role_users,
    readme_acl_commands,
    wait_for,
)

with warnings.catch_warnings():  # Starlette prefers httpx2 for its test client; httpx works
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

pytestmark = pytest.mark.integration

PREFIX = EXAMPLE_PREFIX  # "payments"
OTHER = "search"  # another team's prefix, with users of its own
PASSWORDS = {"worker": "w-secret-1", "observer": "o-secret-2", "operator": "p-secret-3"}
BOUND = 3.0
LUA = Path(__file__).resolve().parents[2] / "lua"


class Server:
    def __init__(self, port: int) -> None:
        self.port = port

    def url(self, role: str | None = None, prefix: str = PREFIX) -> str:
        if role is None:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"redis://{prefix}-{role}:{PASSWORDS[role]}@127.0.0.1:{self.port}/0"

    def client(self, role: str | None = None, prefix: str = PREFIX) -> redis.Redis:
        return distbreaker.connect(self.url(role, prefix), timeout=2.0)


def start(*args: str) -> tuple[PrivateRedis, Server]:
    port = free_port()
    process = PrivateRedis(["--port", str(port), *args], port=port)
    server = Server(port)
    process.wait(server.client)
    for prefix in (PREFIX, OTHER):
        create_role_users(server.client(), PASSWORDS, prefix)
    return process, server


@pytest.fixture(scope="module")
def primary() -> Iterator[Server]:
    process, server = start()
    yield server
    process.stop()


@pytest.fixture(scope="module")
def replica(primary: Server) -> Iterator[Server]:
    process, server = start("--replicaof", "127.0.0.1", str(primary.port))

    def synced() -> bool:
        info = server.client().info("replication")
        return info.get("master_link_status") == "up"

    wait_for(synced, 15, "the replica's sync")
    yield server
    process.stop()


@pytest.fixture(autouse=True)
def clean(primary: Server) -> Iterator[None]:
    yield
    admin = primary.client()
    keys = [k for p in (PREFIX, OTHER) for k in admin.scan_iter(match=f"{p}:*")]
    if keys:
        admin.delete(*keys)
    admin.execute_command("ACL", "LOG", "RESET")


def rate_limited_or_failure(error: BaseException) -> Verdict:
    if isinstance(error, LookupError):  # stands for a 429 with Retry-After: 30
        return Verdict(counts=False, retryable=False, rate_limited=True, retry_after=30)
    return Verdict(counts=True, retryable=True)


def breaker(
    client: Any,
    clock: FakeClock | None = None,
    prefix: str = PREFIX,
    name: str = "github",
    **settings: Any,
) -> Breaker:
    config = BreakerConfig(
        key_prefix=prefix, **{"failure_threshold": 2, "reset_timeout": 10, **settings}
    )
    return Breaker(name, client, config, clock=clock, classifier=rate_limited_or_failure)


def boom() -> None:
    raise ConnectionError("upstream down")


def limited() -> None:
    raise LookupError("429 Too Many Requests")


def fail(target: Breaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionError):
            target.execute(boom)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def state_hash(server: Server, name: str = "github") -> dict[bytes, bytes]:
    return dict(server.client().hgetall(f"{PREFIX}:{{{name}}}:state"))


# -- the worker ---------------------------------------------------------------------------


@pytest.mark.parametrize("consistency", ["cached", "strict"])
def test_the_workers_calls_failures_trips_probes_and_holds_work(
    primary: Server, clock: FakeClock, consistency: str
) -> None:
    worker = breaker(primary.client("worker"), clock, consistency=consistency)
    assert worker.execute(lambda: "ok") == "ok"
    fail(worker, 2)
    with pytest.raises(CircuitOpenError):
        worker.execute(lambda: "never")
    assert worker.status().state == "open"
    clock.advance(11)
    assert worker.execute(lambda: "probe") == "probe"  # the probe closes it
    assert worker.status().state == "closed"
    with pytest.raises(LookupError):
        worker.execute(limited)  # a rate limit: the worker's own hold, through record.lua
    held = worker.status()
    assert (held.state, held.reason) == ("open", "hold_open: rate limited")
    assert held.time_until_reset == pytest.approx(30, abs=0.01)
    worker.hold_open(60)  # a worker hold asked for directly, no actor, under an hour
    assert worker.status().time_until_reset == pytest.approx(60, abs=0.01)
    reasons = [entry.reason for entry in worker.history()]
    assert reasons == [
        "failure_threshold",
        "reset_timeout",
        "probe_succeeded",
        "hold_open: rate limited",
        "hold_open",
    ]
    assert worker.store_ok
    assert primary.client().execute_command("ACL", "LOG") == []  # nothing was refused


def test_the_worker_runs_on_server_time(primary: Server) -> None:
    worker = breaker(primary.client("worker"), consistency="strict")
    fail(worker, 2)
    status = worker.status()
    assert (status.state, status.store_ok) == ("open", True)


async def test_the_async_worker_and_its_subscriber(primary: Server) -> None:
    client = distbreaker.connect_async(primary.url("worker"), timeout=2.0)
    operator = breaker(primary.client("operator"))
    try:
        worker = AsyncBreaker("github", client, BreakerConfig(key_prefix=PREFIX))

        async def works() -> str:
            return "ok"

        assert await worker.execute(works) == "ok"
        await asyncio.to_thread(operator.force_open, actor="ops@host", reason="incident")
        deadline = asyncio.get_running_loop().time() + BOUND
        while worker.known_refusal() is None:  # the event arrives on the worker's channel
            assert asyncio.get_running_loop().time() < deadline, "no event for the worker"
            await asyncio.sleep(0.02)
        assert (await worker.status()).state == "forced_open"
        with pytest.raises(PermissionDeniedError):
            await worker.reset()
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("force_open", {}),
        ("force_closed", {}),
        ("reset", {}),
        ("hold_open", {"seconds": 60, "actor": "me@laptop"}),
        ("hold_open", {"seconds": 7200}),  # longer than a worker hold: an operator command
    ],
)
def test_the_workers_controls_are_refused_by_redis_and_change_nothing(
    primary: Server, clock: FakeClock, command: str, args: dict[str, Any]
) -> None:
    worker = breaker(primary.client("worker"), clock, consistency="strict")
    fail(worker, 2)  # open, with one history entry
    before, history = state_hash(primary), worker.history()
    with pytest.raises(PermissionDeniedError) as refused:
        getattr(worker, command)(**args)
    error = refused.value
    assert isinstance(error, PermissionError)
    assert error.operation == command
    assert f"write access to {PREFIX}:{{github}}:control" in str(error)
    assert "no permissions to access one of the keys" in str(error)
    # Redis itself refused, at the declared control key, before the script ran
    [entry] = primary.client().execute_command("ACL", "LOG")
    assert (entry[b"reason"], entry[b"object"]) == (b"key", f"{PREFIX}:{{github}}:control".encode())
    assert state_hash(primary) == before
    assert worker.history() == history
    assert not primary.client().exists(f"{PREFIX}:{{github}}:control")
    # no outage: the worker keeps asking Redis
    assert worker.store_ok
    assert worker.status().store_ok
    clock.advance(11)
    assert worker.execute(lambda: "probe") == "probe"
    assert state_hash(primary)[b"state"] == b"closed"


def test_the_cli_refuses_a_worker_user_in_one_line(
    primary: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """The worker role is for breakers, not for the command (it may not even PING)."""
    code, out, err = cli(capsys, "open", "github", "--redis-url", primary.url("worker"))
    assert (code, out) == (1, "")
    [line] = err.strip().splitlines()
    assert "refused PING: this user has no permissions to run the 'ping' command" in line
    assert PASSWORDS["worker"] not in err
    assert not primary.client().exists(f"{PREFIX}:{{github}}:state")


def test_a_worker_cannot_touch_another_teams_breakers(
    primary: Server, caplog: pytest.LogCaptureFixture
) -> None:
    client = primary.client("worker")  # the payments worker
    foreign = breaker(client, prefix=OTHER, consistency="strict")
    with caplog.at_level(logging.ERROR, logger="distbreaker"):
        for _ in range(3):
            assert foreign.execute(lambda: "decided here") == "decided here"  # fail_open
        fail(foreign, 2)  # the local shadow still protects this process
        with pytest.raises(CircuitOpenError):
            foreign.execute(lambda: "never")
    refused = [r for r in caplog.records if "Redis refused admit" in r.getMessage()]
    assert len(refused) == 1  # once, not once per call
    assert foreign.store_ok  # Redis answered: no outage, no back-off
    assert primary.client().keys(f"{OTHER}:*") == []
    raising = breaker(client, prefix=OTHER, consistency="strict", on_store_error="raise")
    with pytest.raises(PermissionDeniedError, match="Redis refused admit"):
        raising.execute(lambda: "never")
    with pytest.raises(PermissionDeniedError):
        foreign.force_open()
    with pytest.raises(PermissionDeniedError, match="Redis refused status"):
        foreign.status()


def test_a_refused_subscription_is_warned_once(
    primary: Server, caplog: pytest.LogCaptureFixture
) -> None:
    client = primary.client("worker")

    def messages(part: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if part in r.getMessage()]

    with caplog.at_level(logging.DEBUG, logger="distbreaker"):
        breaker(client, prefix=OTHER).execute(lambda: "ok")  # cached: subscribes
        # the subscriber retries by itself (0.1 s, doubling): wait for a few attempts
        lost = "events subscriber on search:events lost"
        wait_for(lambda: len(messages(lost)) >= 3, 5, "retries")
    assert len(messages("Redis refused SUBSCRIBE search:events")) == 1


def test_the_readme_worker_line_grants_every_command_the_scripts_call() -> None:
    called: set[str] = set()
    for script in ("_lib", "admit", "record", "report", "status"):
        text = (LUA / f"{script}.lua").read_text()
        called |= {c.lower() for c in re.findall(r"redis\.p?call\('([A-Z]+)'", text)}
    roles = readme_acl_commands()
    for role in ("worker", "operator"):
        granted = {w[1:] for w in roles[role] if w.startswith("+")}
        assert called <= granted, (role, called - granted)
    status_calls = {"time", "hmget", "hgetall", "zcount"}  # what status.lua runs
    observer = {w[1:] for w in roles["observer"] if w.startswith("+")}
    assert status_calls <= observer
    assert not any(w.startswith("~") for w in roles["observer"])  # read-only keys only
    assert all(w.startswith("%R~") for w in roles["observer"] if "~" in w)


# -- the observer -------------------------------------------------------------------------


def tripped_by_operator(server: Server) -> Breaker:
    operator = breaker(server.client("operator"), consistency="strict")
    fail(operator, 2)
    return operator


def test_the_observer_reads_status_and_history(primary: Server) -> None:
    operator = tripped_by_operator(primary)
    observer = breaker(primary.client("observer"), consistency="strict")
    seen, truth = observer.status(), operator.status()
    assert (seen.state, seen.generation, seen.failure_count) == ("open", 1, 2)
    assert seen.model_dump(exclude={"since", "time_until_reset"}) == truth.model_dump(
        exclude={"since", "time_until_reset"}
    )
    assert [e.reason for e in observer.history()] == ["failure_threshold"]
    assert observer.store_ok


async def test_the_async_observer_reads_status(primary: Server) -> None:
    tripped_by_operator(primary)
    client = distbreaker.connect_async(primary.url("observer"), timeout=2.0)
    try:
        observer = AsyncBreaker("github", client, BreakerConfig(key_prefix=PREFIX))
        assert (await observer.status()).state == "open"
        assert len(await observer.history()) == 1
    finally:
        await client.aclose()


def test_the_observers_command_line(primary: Server, capsys: pytest.CaptureFixture[str]) -> None:
    tripped_by_operator(primary)
    where = ["--redis-url", primary.url("observer"), "--prefix", PREFIX]
    code, out, err = cli(capsys, "status", *where)
    assert code == 0, err
    assert re.search(r"github\s+open\s+2/2", out)
    code, out, err = cli(capsys, "status", "github", "--json", *where)
    assert code == 0, err
    code, out, err = cli(capsys, "diagnose", "--github-url", "http://127.0.0.1:1", *where)
    assert code == 0, err
    assert re.search(r"scripts\s+skipped\s+SCRIPT LOAD not permitted", out)
    assert re.search(r"breakers\s+degraded\s+1 under prefix", out)
    assert PASSWORDS["observer"] not in out + err


def test_the_observer_watches(primary: Server) -> None:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("DISTBREAKER_REDIS_URL", None)
    args = [sys.executable, "-m", "distbreaker", "watch", "--count", "1", "--timeout", "20"]
    watcher = subprocess.Popen(
        [*args, "--redis-url", primary.url("observer"), "--prefix", PREFIX],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert watcher.stderr is not None
        first = watcher.stderr.readline()
        assert first.startswith("watching payments:events at redis://payments-observer:***@")
        tripped_by_operator(primary)
        out, err = watcher.communicate(timeout=20)
    finally:
        watcher.kill()
        watcher.wait()
    assert watcher.returncode == 0, err
    assert "github  closed -> open" in out


def test_watch_without_the_channel_permission_fails_in_one_line(
    primary: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "watch", "--redis-url", primary.url("observer"), "--prefix", OTHER)
    assert code == 1
    [line] = err.strip().splitlines()
    assert "cannot subscribe to search:events" in line


def test_every_control_of_the_observer_fails(
    primary: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    tripped_by_operator(primary)
    before = state_hash(primary)
    observer = breaker(primary.client("observer"), consistency="strict")
    for control in (observer.force_open, observer.force_closed, observer.reset):
        with pytest.raises(PermissionDeniedError):
            control()
    with pytest.raises(PermissionDeniedError):
        observer.hold_open(30)  # even a worker's hold: the observer writes nothing
    for command in (["open", "github"], ["close", "github"], ["reset", "github"]):
        code, _, err = cli(capsys, *command, "--redis-url", primary.url("observer"))
        assert code == 1
        assert "Redis refused" in err
    assert state_hash(primary) == before
    assert observer.store_ok


def test_the_dashboard_view_with_an_observer_and_its_controls_refused(primary: Server) -> None:
    tripped_by_operator(primary)
    client = primary.client("observer")
    fleet = Fleet(client, PREFIX)
    listing = fleet.read()
    assert listing.error is None
    assert [row.status.state for row in listing.rows] == ["open"]
    token = "t" * 32
    app = create_app(client, PREFIX, token, feed=True)
    with TestClient(app, base_url="http://127.0.0.1:8321") as web:
        assert [b["state"] for b in web.get("/api/breakers").json()] == ["open"]
        answer = web.post(
            "/api/breakers/github/reset",
            content="{}",
            headers={TOKEN_HEADER: token, "Content-Type": "application/json"},
        )
    assert answer.status_code == 403
    assert "Redis refused reset" in answer.json()["error"]
    assert state_hash(primary)[b"state"] == b"open"


# -- the operator -------------------------------------------------------------------------


def test_the_operator_can_do_everything(
    primary: Server, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    operator = breaker(primary.client("operator"), clock, consistency="strict")
    fail(operator, 2)
    operator.force_open(actor="ops@host", reason="incident 42")
    assert operator.status().state == "forced_open"
    operator.force_closed(actor="ops@host")
    operator.reset(actor="ops@host")
    operator.hold_open(7200, "maintenance", actor="ops@host")
    assert operator.status().state == "open"
    assert {e.actor for e in operator.history()} >= {"ops@host"}
    where = ["--redis-url", primary.url("operator"), "--prefix", PREFIX]
    for command in (["open", "github"], ["close", "github"], ["reset", "github"]):
        code, _, err = cli(capsys, *command, *where)
        assert code == 0, err
    code, out, err = cli(capsys, "diagnose", "--github-url", "http://127.0.0.1:1", *where)
    assert code == 0, err
    assert re.search(r"scripts\s+ok", out)


# -- a read-only replica ------------------------------------------------------------------


def test_status_history_and_watch_on_a_read_only_replica(
    primary: Server, replica: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    operator = tripped_by_operator(primary)
    for role in (None, "observer", "operator"):  # the replica's own users, and its default
        reader = breaker(replica.client(role), consistency="strict")

        def replicated(reader: Breaker = reader) -> bool:
            return reader.status().state == "open"

        wait_for(replicated, BOUND, "the replicated state")
        assert reader.status().generation == operator.status().generation
        assert [e.reason for e in reader.history()] == ["failure_threshold"]
    code, out, err = cli(
        capsys, "status", "--redis-url", replica.url("observer"), "--prefix", PREFIX
    )
    assert code == 0, err
    assert "github" in out
    # a control needs the primary: one line, nothing changed
    code, _, err = cli(capsys, "reset", "github", "--redis-url", replica.url(), "--prefix", PREFIX)
    assert code == 1
    assert "read only replica" in err
    assert state_hash(primary)[b"state"] == b"open"
