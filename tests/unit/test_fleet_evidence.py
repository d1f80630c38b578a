"""Fleet-wide evidence: the rate rule, minimum calls, a quorum of reporters, batched reports,
the fleet retry budget, dry runs and settings conflicts. fakeredis and real Redis alike;
the clock is injected and the background upkeep runs only when a test calls it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from distbreaker import Breaker, CircuitOpenError, FleetRetryBudget, upkeep
from distbreaker.store import breaker_keys
from tests.conftest import FakeClock, raise_connection_error


@pytest.fixture(autouse=True)
def manual_upkeep() -> Iterator[None]:
    upkeep.run_in_background(False)
    yield
    upkeep.run_in_background(True)


def ok() -> str:
    return "ok"


def calls(breaker: Breaker, successes: int = 0, failures: int = 0) -> None:
    for _ in range(successes):
        breaker.execute(ok, fallback=lambda: "refused")
    for _ in range(failures):
        breaker.execute(raise_connection_error, fallback=lambda: "fallback")


RATE = {"failure_rate_threshold": 0.5, "minimum_calls": 10, "failure_threshold": 1000}


def test_the_rate_rule_opens_at_the_rate_once_minimum_calls_were_made(
    make_breaker: Callable[..., Breaker],
) -> None:
    breaker = make_breaker(**RATE)
    calls(breaker, successes=5)
    breaker.upkeep(final=True)  # the batch of 5 successes
    calls(breaker, failures=4)  # 4 of 9 calls: under the minimum and under the rate
    assert breaker.status().state == "closed"
    calls(breaker, failures=1)  # 5 of 10: equal to the rate opens, as in resilience4j
    status = breaker.status()
    assert (status.state, status.reason) == ("open", "failure_rate")
    assert (status.rule, status.calls_in_window, status.failure_rate) == ("rate", 10, 0.5)


def test_below_minimum_calls_nothing_opens_however_many_fail(
    make_breaker: Callable[..., Breaker],
) -> None:
    breaker = make_breaker(**{**RATE, "minimum_calls": 50})
    calls(breaker, failures=49)
    assert breaker.status().state == "closed"
    assert breaker.status().failure_rate == 1.0


def test_a_low_rate_never_opens_however_many_fail(
    make_breaker: Callable[..., Breaker], clock: FakeClock
) -> None:
    breaker = make_breaker(**RATE)
    for _ in range(20):
        calls(breaker, successes=8)
        breaker.upkeep(final=True)
        calls(breaker, failures=2)  # 20 % each round
        clock.advance(1)
    status = breaker.status()
    assert status.state == "closed"
    assert status.calls_in_window == 200
    assert status.failure_rate == 0.2


def test_successes_cost_no_round_trip_and_arrive_in_one_batch(
    client: Any, clock: FakeClock, prefix: str
) -> None:
    from tests.unit.test_cache import CountingClient, worker  # cached mode, no subscriber

    counting = CountingClient(client)
    breaker = worker(counting, clock, prefix, **RATE)
    breaker.execute(ok)  # fills the cache
    before = counting.scripts
    calls(breaker, successes=500)
    assert counting.scripts == before
    breaker.upkeep(final=True)
    assert counting.scripts == before + 1
    assert breaker.status().calls_in_window == 501


def test_count_mode_sends_no_reports(
    make_breaker: Callable[..., Breaker], client: Any, prefix: str
) -> None:
    breaker = make_breaker()
    calls(breaker, successes=50)
    breaker.upkeep(final=True)
    assert not client.exists(breaker_keys(prefix, "upstream").calls)


def test_a_failure_carries_the_pending_batch_along(make_breaker: Callable[..., Breaker]) -> None:
    breaker = make_breaker(**RATE)
    calls(breaker, successes=9)
    calls(breaker, failures=1)  # no upkeep ran: the record brought the 9 successes along
    assert breaker.status().calls_in_window == 10


def test_a_replayed_batch_adds_nothing(
    make_breaker: Callable[..., Breaker], client: Any, prefix: str
) -> None:
    from distbreaker.store import SyncStore

    breaker = make_breaker(**RATE)
    store = SyncStore(client, "upstream", breaker.config, "r")
    batch = ("0:7:0", "worker-1", 1)
    store.report(None, batch)
    store.report(None, batch)  # a reply lost, the script sent again
    assert breaker.status().calls_in_window == 7


QUORUM = {"failure_threshold": 3, "min_reporters": 2, "reset_timeout": 10}


def test_one_sick_reporter_opens_only_for_itself(
    make_breaker: Callable[..., Breaker], clock: FakeClock
) -> None:
    sick = make_breaker(reporter_id="host-a", **QUORUM)
    healthy = make_breaker(reporter_id="host-b", **QUORUM)
    calls(sick, failures=3)
    assert sick.status().state == "closed"  # the fleet
    assert sick.locally_open
    assert sick.execute(ok, fallback=lambda: "refused") == "refused"
    with pytest.raises(CircuitOpenError) as refused:
        sick.execute(ok)
    assert refused.value.locally
    assert healthy.execute(ok) == "ok"
    sick.upkeep(final=True)
    assert healthy.status().locally_open_reporters == ["host-a"]
    # after reset_timeout one local probe decides; it succeeds: back to normal
    clock.advance(10)
    assert sick.execute(ok) == "ok"
    assert not sick.locally_open


def test_a_second_failing_reporter_opens_the_fleet_once(
    make_breaker: Callable[..., Breaker], client: Any, prefix: str
) -> None:
    first = make_breaker(reporter_id="host-a", **QUORUM)
    second = make_breaker(reporter_id="host-b", **QUORUM)
    calls(first, failures=3)
    assert first.locally_open
    calls(second, failures=1)
    status = second.status()
    assert (status.state, status.opens_total, status.reporters) == ("open", 1, 2)
    # the first reporter's local state ends once it learns of the fleet's open (at once
    # from a script reply; in cached mode from the event, within cache_ttl at worst)
    deadline = time.monotonic() + 5
    while first.locally_open and time.monotonic() < deadline:
        assert first.execute(ok, fallback=lambda: "refused") == "refused"
        time.sleep(0.005)
    assert not first.locally_open
    assert first.execute(ok, fallback=lambda: "refused") == "refused"


def test_the_lone_reporter_protects_itself_under_the_rate_rule_too(
    make_breaker: Callable[..., Breaker],
) -> None:
    settings = {**RATE, "min_reporters": 2, "minimum_calls": 4}
    sick = make_breaker(reporter_id="host-a", **settings)
    healthy = make_breaker(reporter_id="host-b", **settings)
    calls(healthy, successes=100)
    healthy.upkeep(final=True)  # the fleet's rate is diluted far below 50 %
    calls(sick, failures=4)
    assert sick.status().state == "closed"
    assert sick.locally_open


def test_the_fleet_retry_budget_follows_the_fleet_totals(
    make_breaker: Callable[..., Breaker],
) -> None:
    breaker = make_breaker(window=10)
    budget = FleetRetryBudget(breaker, ratio=0.1, min_retries_per_second=0.5)
    assert budget.allowance() == 5  # the floor: 0.5/s over a 10 s window
    calls(breaker, successes=100)
    breaker.upkeep(final=True)
    assert budget.allowance() == 15
    for _ in range(15):
        assert budget.can_retry()
        budget.record_retry()
    assert not budget.can_retry()
    breaker.upkeep(final=True)  # the retries reach Redis: still counted, once
    assert budget.used() == 15
    assert not budget.can_retry()


def test_a_dry_run_refuses_nothing_and_counts_what_it_would_have_refused(
    make_breaker: Callable[..., Breaker], clock: FakeClock
) -> None:
    enforcing = make_breaker("enforcing", failure_threshold=2, reset_timeout=30)
    dry = make_breaker("dry", failure_threshold=2, reset_timeout=30, enforce=False)
    reached = {"enforcing": 0, "dry": 0}
    refused = 0

    def down(name: str) -> Callable[[], str]:
        def call() -> str:
            reached[name] += 1
            raise ConnectionError("down")

        return call

    for _ in range(10):
        try:
            enforcing.execute(down("enforcing"))
        except CircuitOpenError:
            refused += 1
        except ConnectionError:
            pass
        with pytest.raises(ConnectionError):  # a dry run never refuses
            dry.execute(down("dry"))
    assert reached["dry"] == 10
    assert (reached["enforcing"], refused) == (2, 8)
    dry.upkeep(final=True)
    status = dry.status()
    assert (status.state, status.dry_run, status.would_refuse_total) == ("open", True, refused)
    assert dry.known_refusal() is None


def test_conflicting_settings_warn_once_and_show_in_status(
    make_breaker: Callable[..., Breaker], caplog: pytest.LogCaptureFixture
) -> None:
    strict_one = make_breaker(failure_threshold=2)
    lenient = make_breaker(failure_threshold=5)
    calls(strict_one, failures=1)
    with caplog.at_level(logging.WARNING, logger="distbreaker"):
        calls(lenient, failures=3)
    warnings = [r for r in caplog.records if "other settings" in r.getMessage()]
    assert len(warnings) == 1
    assert '"failure_threshold":2' in warnings[0].getMessage()
    assert '"failure_threshold":5' in warnings[0].getMessage()
    assert lenient.status().config_conflict
