"""``with breaker.guard():`` and ``async with breaker.guard():`` for code that is not a callable."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from distbreaker import AsyncBreaker, Breaker, CircuitOpenError
from tests.conftest import FakeClock


class Interrupted(BaseException):
    """Like KeyboardInterrupt or a cancellation: not the upstream's fault."""


def test_a_refused_guard_raises_on_entry_and_runs_nothing(
    make_breaker: Callable[..., Breaker],
) -> None:
    breaker = make_breaker()
    breaker.force_open()
    ran = []
    with pytest.raises(CircuitOpenError), breaker.guard():
        ran.append(True)
    assert ran == []


def test_counted_errors_inside_are_recorded_and_propagate(
    make_breaker: Callable[..., Breaker],
) -> None:
    breaker = make_breaker(failure_threshold=2)
    for _ in range(2):
        with pytest.raises(ConnectionError), breaker.guard():
            raise ConnectionError("down")
    assert breaker.status().state == "open"
    with pytest.raises(CircuitOpenError), breaker.guard():
        pass


def test_errors_that_do_not_count_leave_the_breaker_alone(
    make_breaker: Callable[..., Breaker],
) -> None:
    breaker = make_breaker(failure_threshold=1)
    with pytest.raises(KeyError), breaker.guard():
        raise KeyError("a bug, not an outage")
    status = breaker.status()
    assert (status.state, status.failure_count) == ("closed", 0)


def test_a_successful_probe_inside_a_guard_closes_the_breaker(
    make_breaker: Callable[..., Breaker], clock: FakeClock
) -> None:
    breaker = make_breaker(failure_threshold=1, reset_timeout=5)
    breaker.execute(lambda: (_ for _ in ()).throw(ConnectionError()), fallback=lambda: None)
    clock.advance(5)
    with breaker.guard():
        pass
    assert breaker.status().state == "closed"


def test_an_interrupted_probe_releases_its_lease(
    make_breaker: Callable[..., Breaker], clock: FakeClock
) -> None:
    breaker = make_breaker(failure_threshold=1, reset_timeout=5, probe_timeout=60)
    breaker.execute(lambda: (_ for _ in ()).throw(ConnectionError()), fallback=lambda: None)
    clock.advance(5)
    with pytest.raises(Interrupted), breaker.guard():
        raise Interrupted
    status = breaker.status()
    assert (status.state, status.probes_in_flight) == ("half_open", 0)
    with breaker.guard():  # the next probe is admitted at once, not after probe_timeout
        pass
    assert breaker.status().state == "closed"


async def test_async_guard_records_and_releases_on_cancellation(
    make_async_breaker: Callable[..., AsyncBreaker], clock: FakeClock
) -> None:
    breaker = make_async_breaker(failure_threshold=1, reset_timeout=5, probe_timeout=60)
    with pytest.raises(ConnectionError):
        async with breaker.guard():
            raise ConnectionError("down")
    assert (await breaker.status()).state == "open"
    clock.advance(5)
    entered = asyncio.Event()

    async def probe() -> None:
        async with breaker.guard():
            entered.set()
            await asyncio.sleep(3600)  # cancelled below, long before

    task = asyncio.create_task(probe())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await breaker.status()).probes_in_flight == 0
    async with breaker.guard():
        pass
    assert (await breaker.status()).state == "closed"
