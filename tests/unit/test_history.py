"""The history stream through ``Breaker.history``: one entry per transition and per command,
in order, with the actor; capped, with a TTL; a broken stream key never stops the breaker.
On fakeredis and on a real redis-server (injected clock), plus the dashboard's use of it."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

import pytest

with warnings.catch_warnings():  # Starlette prefers httpx2 for its test client; httpx works
    warnings.simplefilter("ignore", UserWarning)  # StarletteDeprecationWarning
    from starlette.testclient import TestClient

from distbreaker import AsyncBreaker, Breaker, BreakerConfig
from distbreaker.core import HistoryEntry
from distbreaker.dashboard.app import TOKEN_HEADER, create_app
from distbreaker.dashboard.timeline import history_of
from distbreaker.store import breaker_keys
from tests.conftest import FakeClock, raise_connection_error, unreachable_redis

DAY_MS = 86_400_000


def fail(breaker: Breaker, times: int = 1) -> None:
    for _ in range(times):
        breaker.execute(raise_connection_error, fallback=lambda: None)


def summary(entries: list[HistoryEntry]) -> list[tuple[str, str, str, str, str, str]]:
    return [(e.event, e.from_state, e.to_state, e.reason, e.actor, e.note) for e in entries]


def history_key(breaker: Breaker) -> str:
    return breaker_keys(breaker.config.key_prefix, breaker.name).history


def test_one_entry_per_transition_and_per_command_in_order_with_the_actor(
    make_breaker: Callable[..., Breaker], clock: FakeClock
) -> None:
    breaker = make_breaker(failure_threshold=2, reset_timeout=10.0)
    start_ms = round(clock.now * 1000)
    fail(breaker, 2)  # closed -> open
    clock.advance(10)
    fail(breaker)  # open -> half_open -> open
    breaker.force_open(actor="alice@ops-1", reason="maintenance")
    breaker.force_open(actor="bob@ops-2")  # already forced open: a command, no transition
    breaker.hold_open(60, "deploy", actor="alice@ops-1")  # a forced state wins
    breaker.reset(actor="alice@ops-1", reason="fixed")
    breaker.reset(actor="bob@ops-2")  # already closed: a command
    breaker.hold_open(30, "rate limited")  # a worker's own hold
    entries = breaker.history()
    assert summary(entries) == [
        ("transition", "closed", "open", "failure_threshold", "", ""),
        ("transition", "open", "half_open", "reset_timeout", "", ""),
        ("transition", "half_open", "open", "probe_failed", "", ""),
        ("transition", "open", "forced_open", "force_open", "alice@ops-1", "maintenance"),
        ("command", "forced_open", "forced_open", "force_open", "bob@ops-2", ""),
        (
            "command",
            "forced_open",
            "forced_open",
            "hold_open (a forced state wins)",
            "alice@ops-1",
            "deploy",
        ),
        ("transition", "forced_open", "closed", "reset", "alice@ops-1", "fixed"),
        ("command", "closed", "closed", "reset", "bob@ops-2", ""),
        ("transition", "closed", "open", "hold_open: rate limited", "", ""),
    ]
    transitions = [e for e in entries if e.event == "transition"]
    assert [e.generation for e in transitions] == list(range(1, 7))  # exactly one per transition
    assert breaker.status().generation == 6
    assert [e.at_ms for e in entries] == sorted(e.at_ms for e in entries)
    assert entries[0].at_ms == start_ms
    assert entries[2].at_ms == start_ms + 10_000
    assert (entries[0].failures, entries[0].reporters) == (2, 1)  # the evidence at that moment
    assert entries[0].open_until_ms == start_ms + 10_000
    assert entries[-1].open_until_ms == start_ms + 40_000
    assert len({e.id for e in entries}) == len(entries)


def test_the_rate_rule_records_calls_and_failed_calls(
    make_breaker: Callable[..., Breaker],
) -> None:
    breaker = make_breaker(failure_rate_threshold=0.5, minimum_calls=2)
    fail(breaker, 2)
    [opened] = breaker.history()
    assert (opened.reason, opened.calls, opened.rate_failures) == ("failure_rate", 2, 2)


def test_limit_and_since_select_the_newest_entries(
    make_breaker: Callable[..., Breaker], clock: FakeClock
) -> None:
    breaker = make_breaker()
    for i in range(5):
        breaker.reset(actor=f"op{i}")
        clock.advance(10)
    assert [e.actor for e in breaker.history(limit=2)] == ["op3", "op4"]
    since = clock.now - 25  # op3 at now - 20, op4 at now - 10
    assert [e.actor for e in breaker.history(since=since)] == ["op3", "op4"]
    assert breaker.history(since=clock.now) == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"limit": 0}, "limit must be"),
        ({"limit": 1001}, "limit must be"),
        ({"limit": True}, "limit must be"),
        ({"since": -1}, "since must be"),
        ({"since": "yesterday"}, "since must be"),
    ],
)
def test_bad_arguments_are_refused_before_any_io(arguments: dict[str, Any], message: str) -> None:
    breaker = Breaker("x", unreachable_redis(), BreakerConfig(on_store_error="raise"))
    with pytest.raises(ValueError, match=message):
        breaker.history(**arguments)


def test_the_stream_stays_capped_near_1000_entries(
    make_breaker: Callable[..., Breaker], client: Any
) -> None:
    breaker = make_breaker()
    for i in range(1500):
        breaker.reset(actor=f"op{i}")
    length = client.xlen(history_key(breaker))
    assert 1000 <= length <= 1100  # MAXLEN ~ trims whole nodes of the stream
    newest = breaker.history(limit=1000)
    assert len(newest) == 1000
    assert [e.actor for e in newest[-3:]] == ["op1497", "op1498", "op1499"]


def test_the_stream_has_a_ttl_of_a_day(make_breaker: Callable[..., Breaker], client: Any) -> None:
    breaker = make_breaker(failure_threshold=1)
    fail(breaker)
    ttl = client.pttl(history_key(breaker))
    assert DAY_MS - 60_000 < ttl <= DAY_MS


def test_a_deleted_stream_is_written_again_and_the_breaker_works(
    make_breaker: Callable[..., Breaker], client: Any, clock: FakeClock
) -> None:
    breaker = make_breaker(failure_threshold=1, reset_timeout=5.0)
    fail(breaker)
    client.delete(history_key(breaker))
    assert breaker.history() == []
    clock.advance(5)
    assert breaker.execute(lambda: "fresh") == "fresh"  # probe, close
    assert summary(breaker.history()) == [
        ("transition", "open", "half_open", "reset_timeout", "", ""),
        ("transition", "half_open", "closed", "probe_succeeded", "", ""),
    ]


@pytest.mark.parametrize("kind", ["string", "hash", "list"])
def test_a_stream_key_of_the_wrong_type_never_stops_the_breaker(
    make_breaker: Callable[..., Breaker], client: Any, clock: FakeClock, kind: str
) -> None:
    breaker = make_breaker(failure_threshold=2, reset_timeout=5.0)
    key = history_key(breaker)
    if kind == "string":
        client.set(key, "not a stream")
    elif kind == "hash":
        client.hset(key, "field", "value")
    else:
        client.rpush(key, "item")
    assert breaker.execute(lambda: "fresh") == "fresh"
    fail(breaker, 2)
    assert breaker.execute(lambda: "never", fallback=lambda: "refused") == "refused"
    breaker.force_open(actor="ops@desk")
    breaker.reset(actor="ops@desk")
    status = breaker.status()
    assert (status.state, status.actor) == ("closed", "ops@desk")
    # the first script run dropped the foreign value (one repair), the history goes on
    entries = breaker.history()
    assert (entries[0].event, entries[0].note) == ("repaired", "history key")
    assert [e.reason for e in entries[1:]] == ["failure_threshold", "force_open", "reset"]
    assert client.type(key) in ("stream", b"stream")


def test_foreign_entries_in_the_stream_are_skipped(
    make_breaker: Callable[..., Breaker], client: Any
) -> None:
    breaker = make_breaker(failure_threshold=1)
    key = history_key(breaker)
    client.xadd(key, {"hello": "world"})
    client.xadd(key, {"at": "1", "event": "transition", "from": "closed", "to": "exploded",
                      "generation": "1"})  # fmt: skip
    client.xadd(key, {"at": "x", "event": "transition", "from": "closed", "to": "open",
                      "generation": "1"})  # fmt: skip
    fail(breaker)
    assert summary(breaker.history()) == [
        ("transition", "closed", "open", "failure_threshold", "", "")
    ]


async def test_the_async_twin_reads_the_same_entries(
    make_async_breaker: Callable[..., AsyncBreaker], clock: FakeClock
) -> None:
    breaker = make_async_breaker(failure_threshold=1)
    await breaker.execute(raise_connection_error, fallback=lambda: None)
    clock.advance(10)
    await breaker.force_open(actor="ops@desk", reason="why not")
    entries = await breaker.history()
    assert summary(entries) == [
        ("transition", "closed", "open", "failure_threshold", "", ""),
        ("transition", "open", "forced_open", "force_open", "ops@desk", "why not"),
    ]
    assert [e.actor for e in await breaker.history(since=clock.now)] == ["ops@desk"]
    assert len(await breaker.history(limit=1)) == 1


# -- the dashboard reads and writes it ------------------------------------------------------


def test_the_dashboard_timeline_reads_the_history_since_a_time(
    make_breaker: Callable[..., Breaker], clock: FakeClock
) -> None:
    breaker = make_breaker(failure_threshold=1, reset_timeout=10.0)
    fail(breaker)
    clock.advance(10)
    assert breaker.execute(lambda: "fresh") == "fresh"
    clock.advance(100)
    breaker.force_open(actor="ops@desk")
    changes = history_of(breaker, since_s=clock.now - 200)
    assert changes is not None
    assert [(c.state, c.generation, c.reason) for c in changes] == [
        ("open", 1, "failure_threshold"),
        ("half_open", 2, "reset_timeout"),
        ("closed", 3, "probe_succeeded"),
        ("forced_open", 4, "force_open"),
    ]
    assert changes[-1].at_ms == round(clock.now * 1000)
    later = history_of(breaker, since_s=clock.now - 50)
    assert later is not None
    assert [c.state for c in later] == ["forced_open"]


def test_dashboard_controls_record_their_actor_and_reason(client: Any, prefix: str) -> None:
    token = "s3cret-token-for-tests-0123456789"
    breaker = Breaker("payments", client, BreakerConfig(key_prefix=prefix, failure_threshold=1))
    fail(breaker)
    app = create_app(client, prefix, token, feed=False)
    headers = {"Content-Type": "application/json", TOKEN_HEADER: token}
    with TestClient(app, base_url="http://127.0.0.1:8321") as web:
        for action, body in (
            ("force_open", {"reason": "incident 42"}),
            ("reset", {"reason": "fixed"}),
            ("hold_open", {"seconds": 30, "reason": "deploy"}),
        ):
            answer = web.post(
                f"/api/breakers/payments/{action}", content=json.dumps(body), headers=headers
            )
            assert answer.status_code == 200, answer.text
    assert summary(breaker.history())[1:] == [
        ("transition", "open", "forced_open", "force_open", "dashboard@testclient", "incident 42"),
        ("transition", "forced_open", "closed", "reset", "dashboard@testclient", "fixed"),
        ("transition", "closed", "open", "hold_open: deploy", "dashboard@testclient", "deploy"),
    ]


def test_a_history_entry_from_beyond_year_9999_is_skipped() -> None:
    from distbreaker.store import parse_history_entry

    fields = {
        "at": str(10**17),
        "event": "transition",
        "from": "closed",
        "to": "open",
        "generation": "1",
    }
    assert parse_history_entry("1-0", fields) is None
    assert parse_history_entry("1-0", {**fields, "at": "1790000000000"}) is not None
