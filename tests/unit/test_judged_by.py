"""``judged_by``: the same shared breaker and retries, another opinion of errors."""

from __future__ import annotations

import uuid

import fakeredis
import pytest

from distbreaker import BreakerConfig, create_network_operation
from distbreaker.classify import FAILURE, IGNORED, Verdict
from distbreaker.operation import create_async_network_operation
from tests.conftest import FakeClock


class Odd(Exception):
    """An error the default classifier ignores."""


def counts_odd(error: BaseException) -> Verdict:
    return FAILURE if isinstance(error, Odd) else IGNORED


def raise_odd() -> None:
    raise Odd("odd")


def config() -> BreakerConfig:
    return BreakerConfig(
        failure_threshold=2, key_prefix=f"t-{uuid.uuid4().hex[:10]}", consistency="strict"
    )


def test_a_judged_operation_shares_the_breaker_and_the_retries(clock: FakeClock) -> None:
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    sleeps: list[float] = []
    operation = create_network_operation(
        "up", redis, 2, 30, 3, config=config(), clock=clock, sleep=sleeps.append
    )
    judged = operation.judged_by(counts_odd)
    assert judged.breaker is not operation.breaker
    assert (judged.breaker.name, judged.breaker.config) == ("up", operation.breaker.config)
    assert judged.retry == operation.retry
    with pytest.raises(Odd):
        operation.execute(raise_odd)  # the default classifier: not counted, not retried
    assert operation.status().failure_count == 0
    assert sleeps == []
    with pytest.raises(Exception, match="open"):
        judged.execute(raise_odd)  # counted and retried until the shared breaker opens
    assert len(sleeps) == 1
    assert operation.status().state == "open"  # the original sees the fleet's state
    assert operation.status().opened_at == pytest.approx(clock.now, abs=1)


async def test_the_async_twin_judges_the_same_way(clock: FakeClock) -> None:
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    operation = create_async_network_operation(
        "up", redis, 2, 30, 3, config=config(), clock=clock, sleep=sleep
    )
    judged = operation.judged_by(counts_odd)

    async def odd() -> None:
        raise Odd("odd")

    with pytest.raises(Odd):
        await operation.execute(odd)
    assert (await operation.status()).failure_count == 0
    with pytest.raises(Exception, match="open"):
        await judged.execute(odd)
    assert (await operation.status()).state == "open"
    assert len(sleeps) == 1
