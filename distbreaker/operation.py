"""``NetworkOperation``: fallback ← retry ← breaker ← call, and its async twin.

Each attempt is one breaker call (the order resilience4j and Polly use), so once the
breaker opens mid-retry the remaining attempts stop at once and the fallback runs. The
twins share every decision (``distbreaker.retry.after_failure``); they differ only in how
they sleep and wait for Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import redis.asyncio

from distbreaker.breaker import AsyncBreaker, Breaker, ClockSource, resolve
from distbreaker.classify import Classifier
from distbreaker.config import BreakerConfig
from distbreaker.errors import CircuitOpenError, PermissionDeniedError, StoreUnavailableError
from distbreaker.retry import GiveUp, Retry, RetryBudget, RetryPolicy, after_failure
from distbreaker.status import BreakerStatus

logger = logging.getLogger("distbreaker")

T = TypeVar("T")


class _OperationBase:
    """The decisions both twins share: no I/O here."""

    def __init__(
        self,
        breaker: Breaker | AsyncBreaker,
        retry: RetryPolicy | None,
        clock: ClockSource | None,
        rng: random.Random | None,
        budget: RetryBudget | None,
    ) -> None:
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError("retry must be a RetryPolicy")
        self.retry = retry or RetryPolicy()
        self.budget = budget
        self._clock: ClockSource = clock or time.monotonic
        self._rng = rng
        self._judge = breaker.classify  # the breaker's classifier: one opinion per error

    def _step(self, attempt: int, error: Exception, started: float) -> Retry | GiveUp:
        verdict = self._judge(error)
        budget_left = True
        if self.budget is not None:
            if verdict.counts:
                self.budget.record_failure()
            budget_left = self.budget.can_retry()
        elapsed = self._clock() - started
        step = after_failure(
            self.retry, attempt, verdict, elapsed, self._rng, budget_left=budget_left
        )
        if isinstance(step, Retry) and self.budget is not None:
            self.budget.record_retry()
        return step

    def _succeeded(self) -> None:
        if self.budget is not None:
            self.budget.record_success()

    @staticmethod
    def _log_hold(name: str, seconds: float) -> None:
        logger.warning(
            "breaker %r: upstream asked for %.0f s (Retry-After); holding it open for the fleet",
            name,
            seconds,
        )


class NetworkOperation(_OperationBase):
    """Retries a call through a shared ``Breaker``; falls back when it cannot succeed.

    ``sleep`` and ``clock`` (seconds, for the ``deadline``) are injectable for tests;
    ``rng`` makes the jitter reproducible; ``budget`` (a ``RetryBudget``, shareable between
    operations) stops retries while most calls fail.
    """

    def __init__(
        self,
        breaker: Breaker,
        retry: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: ClockSource | None = None,
        rng: random.Random | None = None,
        budget: RetryBudget | None = None,
    ) -> None:
        super().__init__(breaker, retry, clock, rng, budget)
        self.breaker = breaker
        self._sleep = sleep

    def execute(self, operation: Callable[[], T], fallback: Callable[[], T] | None = None) -> T:
        """Run ``operation`` with retries; ``fallback()`` on refusal or a final counted failure.

        Errors that do not count (client errors, bugs) propagate unchanged at once; a rate
        limit is not retried (the breaker holds itself open) and gives the fallback.
        """
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                result = self.breaker.execute(operation)
            except CircuitOpenError:
                if fallback is None:
                    raise
                return fallback()
            except StoreUnavailableError:
                raise  # Redis is down and the breaker is told to say so: not a retry matter
            except Exception as error:
                step = self._step(attempt, error, started)
                if isinstance(step, Retry):
                    # the record reply (or an event) already said whether the breaker opened
                    refusal = self.breaker.known_refusal()
                    if refusal is None:
                        self._sleep(step.wait)
                        continue
                    if fallback is None:
                        raise refusal from error
                    return fallback()
                if step.hold_open is not None:
                    self._hold(step.hold_open)
                if fallback is not None and step.fallback:
                    return fallback()
                raise
            self._succeeded()
            return result

    def status(self) -> BreakerStatus:
        """The breaker's status, as Redis has it."""
        return self.breaker.status()

    def judged_by(self, classifier: Classifier) -> NetworkOperation:
        """The same operation (breaker name, Redis, settings, retries, clock, budget) judging
        errors by ``classifier``: what counts, what is retried, what holds the breaker open."""
        return NetworkOperation(
            self.breaker.judged_by(classifier),
            self.retry,
            sleep=self._sleep,
            clock=self._clock,
            rng=self._rng,
            budget=self.budget,
        )

    def _hold(self, seconds: float) -> None:
        self._log_hold(self.breaker.name, seconds)
        with contextlib.suppress(StoreUnavailableError, PermissionDeniedError):
            self.breaker.hold_open(seconds, "retry-after")

    def __repr__(self) -> str:
        return f"<NetworkOperation {self.breaker.name!r} attempts={self.retry.max_attempts}>"


class AsyncNetworkOperation(_OperationBase):
    """The asyncio twin of :class:`NetworkOperation`, over an ``AsyncBreaker``.

    The fallback may be a plain function or a coroutine function.
    """

    def __init__(
        self,
        breaker: AsyncBreaker,
        retry: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: ClockSource | None = None,
        rng: random.Random | None = None,
        budget: RetryBudget | None = None,
    ) -> None:
        super().__init__(breaker, retry, clock, rng, budget)
        self.breaker = breaker
        self._sleep = sleep

    async def execute(
        self,
        operation: Callable[[], Awaitable[T]],
        fallback: Callable[[], T | Awaitable[T]] | None = None,
    ) -> T:
        """Await ``operation()`` with retries; ``fallback()`` on refusal or final failure."""
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await self.breaker.execute(operation)
            except CircuitOpenError:
                if fallback is None:
                    raise
                return await resolve(fallback())
            except StoreUnavailableError:
                raise
            except Exception as error:
                step = self._step(attempt, error, started)
                if isinstance(step, Retry):
                    refusal = self.breaker.known_refusal()
                    if refusal is None:
                        await self._sleep(step.wait)
                        continue
                    if fallback is None:
                        raise refusal from error
                    return await resolve(fallback())
                if step.hold_open is not None:
                    await self._hold(step.hold_open)
                if fallback is not None and step.fallback:
                    return await resolve(fallback())
                raise
            self._succeeded()
            return result

    async def status(self) -> BreakerStatus:
        """The breaker's status, as Redis has it."""
        return await self.breaker.status()

    def judged_by(self, classifier: Classifier) -> AsyncNetworkOperation:
        """The twin of :meth:`NetworkOperation.judged_by`."""
        return AsyncNetworkOperation(
            self.breaker.judged_by(classifier),
            self.retry,
            sleep=self._sleep,
            clock=self._clock,
            rng=self._rng,
            budget=self.budget,
        )

    async def _hold(self, seconds: float) -> None:
        self._log_hold(self.breaker.name, seconds)
        with contextlib.suppress(StoreUnavailableError, PermissionDeniedError):
            await self.breaker.hold_open(seconds, "retry-after")

    def __repr__(self) -> str:
        return f"<AsyncNetworkOperation {self.breaker.name!r} attempts={self.retry.max_attempts}>"


def _is_async_client(client: Any) -> bool:
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

    return isinstance(client, redis.asyncio.Redis | AsyncRedisCluster)


def _settings(
    config: BreakerConfig | None, circuit_threshold: int, circuit_reset_timeout: float
) -> BreakerConfig:
    base = (config or BreakerConfig()).model_dump()
    base.update(failure_threshold=circuit_threshold, reset_timeout=circuit_reset_timeout)
    return BreakerConfig(**base)


def _number(value: object) -> bool:
    """A real number (not a bool, not NaN): anything else is left to RetryPolicy to refuse."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _policy(
    max_retries: int,
    base_delay: float,
    max_delay: float,
    multiplier: float,
    jitter: float,
    deadline: float | None,
    full_jitter: bool,
) -> RetryPolicy:
    if _number(max_delay) and _number(base_delay):
        max_delay = max(max_delay, base_delay)  # the seed had no max_delay: a big base wins
    return RetryPolicy(
        max_attempts=max_retries,
        base_delay=base_delay,
        max_delay=max_delay,
        multiplier=multiplier,
        jitter=jitter,
        deadline=deadline,
        full_jitter=full_jitter,
    )


def create_network_operation(
    name: str,
    redis: Any,
    circuit_threshold: int = 3,
    circuit_reset_timeout: float = 60,
    max_retries: int = 3,
    base_delay: float = 1.0,
    *,
    max_delay: float = 30.0,
    multiplier: float = 2.0,
    jitter: float = 0.1,
    deadline: float | None = None,
    full_jitter: bool = False,
    config: BreakerConfig | None = None,
    clock: ClockSource | None = None,
    sleep: Callable[[float], Any] | None = None,
    classifier: Classifier | None = None,
    retry_budget: RetryBudget | None = None,
) -> NetworkOperation:
    """The seed's ``createNetworkOperation``: a shared breaker plus retries, by name.

    ``max_retries`` is the total number of attempts. ``config`` supplies the other breaker
    settings (``circuit_threshold`` and ``circuit_reset_timeout`` win over it). Given a
    ``redis.asyncio`` client this returns an :class:`AsyncNetworkOperation` (typed here as
    the sync one; use :func:`create_async_network_operation` for a precise type).
    """
    settings = _settings(config, circuit_threshold, circuit_reset_timeout)
    policy = _policy(max_retries, base_delay, max_delay, multiplier, jitter, deadline, full_jitter)
    if _is_async_client(redis):
        breaker_async = AsyncBreaker(name, redis, settings, clock, classifier=classifier)
        operation = AsyncNetworkOperation(
            breaker_async, policy, sleep=sleep or asyncio.sleep, clock=clock, budget=retry_budget
        )
        return cast(NetworkOperation, operation)
    breaker = Breaker(name, redis, settings, clock, classifier=classifier)
    return NetworkOperation(
        breaker, policy, sleep=sleep or time.sleep, clock=clock, budget=retry_budget
    )


def create_async_network_operation(
    name: str,
    redis: Any,
    circuit_threshold: int = 3,
    circuit_reset_timeout: float = 60,
    max_retries: int = 3,
    base_delay: float = 1.0,
    *,
    max_delay: float = 30.0,
    multiplier: float = 2.0,
    jitter: float = 0.1,
    deadline: float | None = None,
    full_jitter: bool = False,
    config: BreakerConfig | None = None,
    clock: ClockSource | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    classifier: Classifier | None = None,
    retry_budget: RetryBudget | None = None,
) -> AsyncNetworkOperation:
    """The asyncio twin of :func:`create_network_operation`, over a ``redis.asyncio`` client."""
    if not _is_async_client(redis):
        raise TypeError("create_async_network_operation needs a redis.asyncio client")
    settings = _settings(config, circuit_threshold, circuit_reset_timeout)
    policy = _policy(max_retries, base_delay, max_delay, multiplier, jitter, deadline, full_jitter)
    breaker = AsyncBreaker(name, redis, settings, clock, classifier=classifier)
    return AsyncNetworkOperation(
        breaker, policy, sleep=sleep or asyncio.sleep, clock=clock, budget=retry_budget
    )
