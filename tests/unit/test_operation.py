"""NetworkOperation and its async twin on fakeredis: every scenario runs through both.

Time is a ``FakeClock`` shared by the breaker's scripts and the retry deadline; the injected
sleep moves it instead of sleeping.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import fakeredis
import httpx
import pytest
import redis

from distbreaker import (
    AsyncBreaker,
    AsyncNetworkOperation,
    Breaker,
    BreakerConfig,
    BreakerStatus,
    CircuitOpenError,
    NetworkOperation,
    RetryPolicy,
    StoreUnavailableError,
    create_async_network_operation,
    create_network_operation,
)
from distbreaker.classify import Classifier
from distbreaker.retry import RetryBudget
from tests.conftest import FakeClock, unreachable_redis

REQUEST = httpx.Request("GET", "https://upstream.test/items")


class Upstream:
    """Fails with the given errors in turn, then answers ``"value"``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "value"

    async def coroutine(self) -> str:
        return self()


def down() -> ConnectionError:
    return ConnectionError("upstream down")


def http_error(status: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    response = httpx.Response(status, headers=headers, request=REQUEST)
    return httpx.HTTPStatusError(str(status), request=REQUEST, response=response)


class Driver:
    """One operation, sync or async, driven through the same coroutine interface."""

    def __init__(self, operation: NetworkOperation | AsyncNetworkOperation) -> None:
        self.operation = operation

    async def execute(self, upstream: Upstream, fallback: Callable[[], Any] | None = None) -> Any:
        if isinstance(self.operation, AsyncNetworkOperation):
            if fallback is None:
                return await self.operation.execute(upstream.coroutine)
            return await self.operation.execute(upstream.coroutine, _async(fallback))
        return self.operation.execute(upstream, fallback)

    async def status(self) -> BreakerStatus:
        if isinstance(self.operation, AsyncNetworkOperation):
            return await self.operation.status()
        return self.operation.status()


def _async(function: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    """Async fallbacks for the async twin (plain ones are tested separately)."""

    async def call() -> Any:
        return function()

    return call


class Twin:
    """Builds operations of one kind (``sync`` or ``async``) on one Redis, clock and prefix."""

    def __init__(
        self,
        kind: str,
        connect: Callable[[], Any],
        connect_async: Callable[[], Any],
        clock: FakeClock,
        prefix: str,
        consistency: str = "cached",
    ) -> None:
        self.kind = kind
        self.clock = clock
        self.prefix = prefix
        self.consistency = consistency
        self.sleeps: list[float] = []
        self._connect = connect
        self._connect_async = connect_async

    def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(seconds)

    async def _async_sleep(self, seconds: float) -> None:
        self._sleep(seconds)

    def build(self, name: str = "net", **kwargs: Any) -> Driver:
        """A new worker: its own connection and breaker object, same name and prefix."""
        kwargs.setdefault("jitter", 0)
        config = BreakerConfig(key_prefix=self.prefix, consistency=self.consistency)
        kwargs.setdefault("config", config)
        if self.kind == "async":
            operation: NetworkOperation | AsyncNetworkOperation = create_async_network_operation(
                name, self._connect_async(), clock=self.clock, sleep=self._async_sleep, **kwargs
            )
        else:
            operation = create_network_operation(
                name, self._connect(), clock=self.clock, sleep=self._sleep, **kwargs
            )
        return Driver(operation)


@pytest.fixture(params=["sync", "async"])
def twin(request: pytest.FixtureRequest, clock: FakeClock, prefix: str) -> Twin:
    server = fakeredis.FakeServer()
    return Twin(
        str(request.param),
        lambda: fakeredis.FakeRedis(server=server),
        lambda: fakeredis.FakeAsyncRedis(server=server),
        clock,
        prefix,
    )


# -- the seed's behaviour -------------------------------------------------------------------


async def test_transient_then_success_returns_after_the_right_attempts(twin: Twin) -> None:
    operation = twin.build(circuit_threshold=5, max_retries=3)
    upstream = Upstream(down(), down())
    assert await operation.execute(upstream, lambda: "fallback") == "value"
    assert upstream.calls == 3
    assert twin.sleeps == [1.0, 2.0]
    assert (await operation.status()).failure_count == 2


async def test_success_at_once_neither_sleeps_nor_writes_a_failure(twin: Twin) -> None:
    operation = twin.build()
    upstream = Upstream()
    assert await operation.execute(upstream) == "value"
    status = await operation.status()
    assert (upstream.calls, twin.sleeps, status.state, status.failures_total) == (
        1,
        [],
        "closed",
        0,
    )


async def test_exhausted_attempts_give_the_fallback(twin: Twin) -> None:
    operation = twin.build(circuit_threshold=10, max_retries=4, base_delay=0.5)
    upstream = Upstream(*[down() for _ in range(4)])
    assert await operation.execute(upstream, lambda: "cached") == "cached"
    assert (upstream.calls, twin.sleeps) == (4, [0.5, 1.0, 2.0])


async def test_exhausted_attempts_without_fallback_raise_the_last_error(twin: Twin) -> None:
    operation = twin.build(circuit_threshold=10, max_retries=2)
    last = ConnectionResetError("second")
    with pytest.raises(ConnectionResetError) as caught:
        await operation.execute(Upstream(down(), last))
    assert caught.value is last


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 501])
async def test_client_errors_are_not_retried_and_propagate_past_the_fallback(
    twin: Twin, status: int
) -> None:
    operation = twin.build()
    upstream = Upstream(http_error(status))
    with pytest.raises(httpx.HTTPStatusError):
        await operation.execute(upstream, lambda: "fallback")
    assert (upstream.calls, twin.sleeps) == (1, [])
    assert (await operation.status()).failures_total == 0


@pytest.mark.parametrize("error", [ValueError("bad input"), KeyError("bug"), FileNotFoundError()])
async def test_bad_input_and_bugs_propagate_unchanged(twin: Twin, error: Exception) -> None:
    operation = twin.build()
    with pytest.raises(type(error)) as caught:
        await operation.execute(Upstream(error), lambda: "fallback")
    assert caught.value is error
    assert twin.sleeps == []


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retried(twin: Twin, status: int) -> None:
    operation = twin.build(circuit_threshold=5)
    upstream = Upstream(http_error(status))
    assert await operation.execute(upstream) == "value"
    assert (upstream.calls, twin.sleeps) == (2, [1.0])


# -- the breaker opening mid-retry ------------------------------------------------------------


async def test_breaker_opening_mid_retry_stops_at_once_and_falls_back(twin: Twin) -> None:
    operation = twin.build(circuit_threshold=2, max_retries=5)
    upstream = Upstream(*[down() for _ in range(5)])
    assert await operation.execute(upstream, lambda: "fallback") == "fallback"
    assert upstream.calls == 2
    assert twin.sleeps == [1.0]  # no backoff after the failure that opened it
    assert (await operation.status()).state == "open"


async def test_breaker_opening_mid_retry_without_fallback_raises_circuit_open(twin: Twin) -> None:
    operation = twin.build(circuit_threshold=1, circuit_reset_timeout=45)
    failure = down()
    with pytest.raises(CircuitOpenError) as caught:
        await operation.execute(Upstream(failure))
    assert (caught.value.name, caught.value.state, caught.value.retry_after) == ("net", "open", 45)
    assert caught.value.__cause__ is failure
    assert twin.sleeps == []


async def test_tripping_on_the_last_attempt_gives_the_last_error(twin: Twin) -> None:
    operation = twin.build(circuit_threshold=2, max_retries=2)
    with pytest.raises(ConnectionError, match="upstream down"):
        await operation.execute(Upstream(down(), down()))
    assert (await operation.status()).state == "open"


async def test_open_breaker_refuses_without_calling_upstream(twin: Twin) -> None:
    operation = twin.build(circuit_threshold=1, max_retries=1)
    await operation.execute(Upstream(down()), lambda: None)
    upstream = Upstream()
    assert await operation.execute(upstream, lambda: "fallback") == "fallback"
    with pytest.raises(CircuitOpenError):
        await operation.execute(upstream)
    assert upstream.calls == 0


async def test_second_worker_is_refused_without_calling_upstream(twin: Twin) -> None:
    first = twin.build(circuit_threshold=2, max_retries=3)
    second = twin.build(circuit_threshold=2, max_retries=3)
    assert await first.execute(Upstream(down(), down(), down()), lambda: "first") == "first"
    upstream = Upstream()
    assert await second.execute(upstream, lambda: "second") == "second"
    assert upstream.calls == 0


async def test_another_worker_opening_the_breaker_stops_this_retry(twin: Twin) -> None:
    mine = twin.build(circuit_threshold=2, max_retries=5)
    other = twin.build(circuit_threshold=2, max_retries=1)

    class MeanwhileTheFleetTrips(Upstream):
        """While this call runs, another worker records the two failures that open it."""

        async def coroutine(self) -> str:
            if self.calls == 0:
                for _ in range(2):
                    await other.execute(Upstream(down()), lambda: None)
            return super().__call__()

        def __call__(self) -> str:
            if self.calls == 0:
                assert isinstance(other.operation, NetworkOperation)
                for _ in range(2):
                    other.operation.execute(Upstream(down()), lambda: None)
            return super().__call__()

    upstream = MeanwhileTheFleetTrips(down(), down(), down())
    assert await mine.execute(upstream, lambda: "fallback") == "fallback"
    assert upstream.calls == 1
    assert twin.sleeps == []  # the shared state said "open": no backoff, no second attempt


async def test_recovery_after_reset_timeout(twin: Twin) -> None:
    operation = twin.build(circuit_threshold=1, circuit_reset_timeout=30, max_retries=1)
    await operation.execute(Upstream(down()), lambda: None)
    twin.clock.advance(31)
    assert await operation.execute(Upstream()) == "value"  # the probe closes it
    assert (await operation.status()).state == "closed"


# -- deadline ---------------------------------------------------------------------------------


async def test_deadline_stops_retries_before_a_wait_that_would_cross_it(twin: Twin) -> None:
    operation = twin.build(circuit_threshold=10, max_retries=10, deadline=4.0)
    upstream = Upstream(*[down() for _ in range(10)])
    assert await operation.execute(upstream, lambda: "late") == "late"
    assert twin.sleeps == [1.0, 2.0]  # 3 s spent; the next wait (4 s) would end at 7 s
    assert upstream.calls == 3


async def test_deadline_counts_the_time_the_attempts_take(twin: Twin) -> None:
    operation = twin.build(circuit_threshold=10, max_retries=10, deadline=5.0)

    class Slow(Upstream):
        def __call__(self) -> str:
            twin.clock.advance(2.5)  # each attempt takes 2.5 s
            return super().__call__()

    upstream = Slow(down(), down(), down())
    with pytest.raises(ConnectionError):
        await operation.execute(upstream)
    assert (upstream.calls, twin.sleeps) == (2, [1.0])  # 2.5 + 1 + 2.5 = 6 s, no more


# -- Retry-After and rate limits --------------------------------------------------------------


async def test_retry_after_seconds_lengthen_the_wait(twin: Twin) -> None:
    operation = twin.build(circuit_threshold=5, max_delay=30)
    upstream = Upstream(http_error(503, {"retry-after": "12"}))
    assert await operation.execute(upstream) == "value"
    assert twin.sleeps == [12.0]


async def test_retry_after_as_an_http_date(twin: Twin) -> None:
    operation = twin.build(circuit_threshold=5, max_delay=30)
    when = email.utils.formatdate(time.time() + 20, usegmt=True)  # the classifier reads wall time
    upstream = Upstream(http_error(503, {"retry-after": when}))
    assert await operation.execute(upstream) == "value"
    assert len(twin.sleeps) == 1
    assert 18 <= twin.sleeps[0] <= 20


@pytest.mark.parametrize("form", ["seconds", "date"])
async def test_a_long_retry_after_holds_the_fleet_instead_of_retrying(
    twin: Twin, form: str, caplog: pytest.LogCaptureFixture
) -> None:
    operation = twin.build(circuit_threshold=5, max_delay=30)
    value = "300" if form == "seconds" else email.utils.formatdate(time.time() + 300, usegmt=True)
    upstream = Upstream(http_error(503, {"retry-after": value}))
    with caplog.at_level(logging.WARNING, logger="distbreaker"):
        assert await operation.execute(upstream, lambda: "cached") == "cached"
    assert (upstream.calls, twin.sleeps) == (1, [])
    status = await operation.status()
    assert status.state == "open"
    assert 298 <= status.time_until_reset <= 300
    assert "holding it open" in caplog.text
    other = Upstream()
    assert await twin.build().execute(other, lambda: "held") == "held"
    assert other.calls == 0


async def test_a_long_retry_after_without_fallback_raises_the_error(twin: Twin) -> None:
    operation = twin.build(max_delay=30)
    with pytest.raises(httpx.HTTPStatusError):
        await operation.execute(Upstream(http_error(503, {"retry-after": "120"})))
    assert (await operation.status()).state == "open"


async def test_rate_limit_is_not_retried_and_holds_the_fleet(twin: Twin) -> None:
    operation = twin.build()
    upstream = Upstream(http_error(429, {"retry-after": "90"}))
    assert await operation.execute(upstream, lambda: "cached") == "cached"
    assert (upstream.calls, twin.sleeps) == (1, [])
    status = await operation.status()
    assert (status.state, status.failures_total, status.time_until_reset) == ("open", 0, 90.0)


async def test_rate_limit_without_fallback_reraises(twin: Twin) -> None:
    operation = twin.build()
    headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(time.time()) + 600)}
    with pytest.raises(httpx.HTTPStatusError):
        await operation.execute(Upstream(http_error(403, headers)))
    assert twin.sleeps == []
    status = await operation.status()
    assert status.state == "open"
    assert 590 <= status.time_until_reset <= 600


# -- classifiers ------------------------------------------------------------------------------


async def test_a_predicate_decides_what_counts_and_is_retried(twin: Twin) -> None:
    def only_lookup_errors(error: BaseException) -> bool:
        return isinstance(error, LookupError)

    classifier: Classifier = only_lookup_errors
    operation = twin.build(classifier=classifier, circuit_threshold=5)
    upstream = Upstream(KeyError("flaky"), IndexError("flaky"))
    assert await operation.execute(upstream) == "value"
    assert (upstream.calls, twin.sleeps) == (3, [1.0, 2.0])
    with pytest.raises(ConnectionError):  # the predicate says it does not count
        await operation.execute(Upstream(down()), lambda: "fallback")


async def test_a_failing_classifier_counts_the_error_once_without_retrying(twin: Twin) -> None:
    def broken(error: BaseException) -> bool:
        raise RuntimeError("classifier bug")

    operation = twin.build(classifier=broken)
    upstream = Upstream(down())
    assert await operation.execute(upstream, lambda: "fallback") == "fallback"
    assert (upstream.calls, twin.sleeps) == (1, [])


# -- retry budget -----------------------------------------------------------------------------


async def test_a_spent_retry_budget_stops_retries_until_successes_refill_it(twin: Twin) -> None:
    budget = RetryBudget(max_tokens=4, token_ratio=0.5)
    operation = twin.build(circuit_threshold=100, max_retries=3, retry_budget=budget)
    first = Upstream(*[down() for _ in range(3)])
    assert await operation.execute(first, lambda: "fallback") == "fallback"
    assert (first.calls, twin.sleeps) == (2, [1.0])  # 4 -> 3 tokens: retry; 3 -> 2: stop
    second = Upstream(down(), down())
    with pytest.raises(ConnectionError):
        await operation.execute(second)
    assert (second.calls, budget.tokens) == (1, 1)
    for _ in range(6):
        await operation.execute(Upstream())
    assert budget.tokens == 4
    third = Upstream(down())
    assert await operation.execute(third) == "value"  # retried again
    assert third.calls == 2


async def test_errors_that_do_not_count_leave_the_budget_alone(twin: Twin) -> None:
    budget = RetryBudget(max_tokens=4)
    operation = twin.build(retry_budget=budget)
    for _ in range(5):
        with pytest.raises(httpx.HTTPStatusError):
            await operation.execute(Upstream(http_error(404)))
    assert budget.tokens == 4


# -- Redis trouble ----------------------------------------------------------------------------


def test_store_unavailable_propagates_without_retries() -> None:
    sleeps: list[float] = []
    config = BreakerConfig(on_store_error="raise")
    operation = create_network_operation(
        "net", unreachable_redis(), config=config, sleep=sleeps.append
    )
    upstream = Upstream()
    with pytest.raises(StoreUnavailableError):
        operation.execute(upstream, lambda: "fallback")
    assert (upstream.calls, sleeps) == (0, [])


def test_fail_open_keeps_retrying_through_the_local_breaker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sleeps: list[float] = []
    operation = create_network_operation(
        "net", unreachable_redis(), circuit_threshold=5, jitter=0, sleep=sleeps.append
    )
    upstream = Upstream(down())
    asked: list[BreakerStatus] = []
    status = operation.breaker.status

    def counting_status() -> BreakerStatus:
        asked.append(status())
        return asked[-1]

    operation.breaker.status = counting_status  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="distbreaker"):
        assert operation.execute(upstream) == "value"
    assert (upstream.calls, sleeps) == (2, [1.0])
    assert asked == []  # no status() round trip (a timeout each) while Redis is down
    assert operation.status().store_ok is False


# -- construction -----------------------------------------------------------------------------


def test_create_network_operation_maps_the_seed_parameters() -> None:
    client = fakeredis.FakeRedis()
    config = BreakerConfig(key_prefix="p", failure_threshold=9, window=30)
    operation = create_network_operation(
        "api",
        client,
        circuit_threshold=4,
        circuit_reset_timeout=15,
        max_retries=6,
        base_delay=0.5,
        max_delay=8,
        multiplier=3,
        jitter=0.2,
        deadline=20,
        full_jitter=True,
        config=config,
    )
    assert isinstance(operation, NetworkOperation)
    settings = operation.breaker.config
    assert (settings.failure_threshold, settings.reset_timeout) == (4, 15)  # the names win
    assert (settings.key_prefix, settings.window) == ("p", 30)  # the rest from config
    assert operation.retry == RetryPolicy(
        max_attempts=6,
        base_delay=0.5,
        max_delay=8,
        multiplier=3,
        jitter=0.2,
        deadline=20,
        full_jitter=True,
    )
    assert repr(operation) == "<NetworkOperation 'api' attempts=6>"


def test_a_base_delay_above_max_delay_raises_the_cap() -> None:
    operation = create_network_operation("api", fakeredis.FakeRedis(), base_delay=60)
    assert (operation.retry.base_delay, operation.retry.max_delay) == (60, 60)


def test_an_async_client_gives_the_async_twin() -> None:
    operation = create_network_operation("api", fakeredis.FakeAsyncRedis())
    assert isinstance(operation, AsyncNetworkOperation)
    assert isinstance(operation.breaker, AsyncBreaker)


def test_the_async_factory_refuses_a_sync_client() -> None:
    with pytest.raises(TypeError, match=r"redis\.asyncio"):
        create_async_network_operation("api", fakeredis.FakeRedis())


def test_bad_settings_fail_before_any_io() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        create_network_operation("api", fakeredis.FakeRedis(), max_retries=0)
    with pytest.raises(ValueError, match="invalid breaker name"):
        create_network_operation("bad name", fakeredis.FakeRedis())
    with pytest.raises(TypeError, match="RetryPolicy"):
        NetworkOperation(Breaker("api", fakeredis.FakeRedis()), retry={"max_attempts": 2})  # type: ignore[arg-type]


def test_direct_construction_with_seeded_jitter(clock: FakeClock) -> None:
    sleeps: list[float] = []
    breaker = Breaker("api", fakeredis.FakeRedis(), BreakerConfig(failure_threshold=9), clock)
    policy = RetryPolicy(max_attempts=4, base_delay=1, jitter=0.5)
    runs = []
    for _ in range(2):
        operation = NetworkOperation(
            breaker, policy, sleep=sleeps.append, clock=clock, rng=random.Random(5)
        )
        operation.execute(Upstream(down(), down(), down()))
        runs.append(sleeps[-3:])
    assert runs[0] == runs[1]
    assert all(0.5 * b <= s <= 1.5 * b for s, b in zip(runs[0], [1, 2, 4], strict=True))


async def test_async_fallback_may_be_a_plain_function(clock: FakeClock) -> None:
    async def no_sleep(seconds: float) -> None:
        clock.advance(seconds)

    breaker = AsyncBreaker("api", fakeredis.FakeAsyncRedis(), BreakerConfig(), clock)
    operation = AsyncNetworkOperation(breaker, RetryPolicy(max_attempts=2), sleep=no_sleep)
    assert await operation.execute(Upstream(down(), down()).coroutine, lambda: "plain") == "plain"
    assert repr(operation) == "<AsyncNetworkOperation 'api' attempts=2>"


def test_status_is_the_breakers(clock: FakeClock) -> None:
    client: redis.Redis = fakeredis.FakeRedis()
    operation = create_network_operation("api", client, clock=clock)
    operation.breaker.force_open()
    assert operation.status() == operation.breaker.status()
    assert operation.status().state == "forced_open"
    upstream = Upstream()
    with pytest.raises(CircuitOpenError) as caught:
        operation.execute(upstream)
    assert (caught.value.state, upstream.calls) == ("forced_open", 0)
