"""``NetworkOperation``: fallback ← retry ← breaker ← call, and its async twin.

Each attempt is one breaker call (the order resilience4j and Polly use), so once the
breaker opens mid-retry the remaining attempts stop at once and the fallback runs.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import redis.asyncio

from distbreaker.breaker import AsyncBreaker, Breaker, BreakerStatus, Clock, resolve
from distbreaker.classify import Classifier, Verdict
from distbreaker.config import BreakerConfig, RetryPolicy
from distbreaker.errors import CircuitOpenError
from distbreaker.retry import next_delay

T = TypeVar("T")


class _OperationBase:
    def __init__(
        self,
        breaker: Breaker | AsyncBreaker,
        retry: RetryPolicy | None,
        clock: Clock | None,
        rng: random.Random | None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._clock: Clock = clock or time.monotonic
        self._rng = rng
        self._breaker_base = breaker

    def _plan(self, attempt: int, error: Exception, started: float) -> tuple[Verdict, float | None]:
        """The error's verdict and the wait before the next attempt (``None``: stop)."""
        verdict = self._breaker_base._verdict(error)
        elapsed = self._clock() - started
        return verdict, next_delay(self.retry, attempt, verdict, elapsed, self._rng)

    @staticmethod
    def _fallback_allowed(verdict: Verdict) -> bool:
        # rate limits too: the breaker already holds itself open, the fallback is the answer
        return verdict.counts or verdict.rate_limited


class NetworkOperation(_OperationBase):
    """Retries a call through a shared ``Breaker``; falls back when it cannot succeed."""

    def __init__(
        self,
        breaker: Breaker,
        retry: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(breaker, retry, clock, rng)
        self.breaker = breaker
        self._sleep = sleep

    def execute(self, operation: Callable[[], T], fallback: Callable[[], T] | None = None) -> T:
        """Run ``operation`` with retries; ``fallback()`` on refusal or final counted failure."""
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                return self.breaker.execute(operation)
            except CircuitOpenError:
                if fallback is None:
                    raise
                return fallback()
            except Exception as error:
                verdict, delay = self._plan(attempt, error, started)
                if delay is not None:
                    self._sleep(delay)
                    continue
                if fallback is not None and self._fallback_allowed(verdict):
                    return fallback()
                raise

    def status(self) -> BreakerStatus:
        return self.breaker.status()


class AsyncNetworkOperation(_OperationBase):
    """The asyncio twin of :class:`NetworkOperation`, over an ``AsyncBreaker``."""

    def __init__(
        self,
        breaker: AsyncBreaker,
        retry: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(breaker, retry, clock, rng)
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
                return await self.breaker.execute(operation)
            except CircuitOpenError:
                if fallback is None:
                    raise
                return await resolve(fallback())
            except Exception as error:
                verdict, delay = self._plan(attempt, error, started)
                if delay is not None:
                    await self._sleep(delay)
                    continue
                if fallback is not None and self._fallback_allowed(verdict):
                    return await resolve(fallback())
                raise

    async def status(self) -> BreakerStatus:
        return await self.breaker.status()


def _is_async_client(client: Any) -> bool:
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

    return isinstance(client, redis.asyncio.Redis | AsyncRedisCluster)


def _settings(
    config: BreakerConfig | None, circuit_threshold: int, circuit_reset_timeout: float
) -> BreakerConfig:
    base = (config or BreakerConfig()).model_dump()
    base.update(failure_threshold=circuit_threshold, reset_timeout=circuit_reset_timeout)
    return BreakerConfig(**base)


def _policy(
    max_retries: int,
    base_delay: float,
    max_delay: float,
    multiplier: float,
    jitter: float,
    deadline: float | None,
    full_jitter: bool,
) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=max_retries,
        base_delay=base_delay,
        max_delay=max(max_delay, base_delay),
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
    clock: Clock | None = None,
    sleep: Callable[[float], Any] | None = None,
    classifier: Classifier | None = None,
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
            breaker_async, policy, sleep=sleep or asyncio.sleep, clock=clock
        )
        return cast(NetworkOperation, operation)
    breaker = Breaker(name, redis, settings, clock, classifier=classifier)
    return NetworkOperation(breaker, policy, sleep=sleep or time.sleep, clock=clock)


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
    clock: Clock | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    classifier: Classifier | None = None,
) -> AsyncNetworkOperation:
    """The asyncio twin of :func:`create_network_operation`, over a ``redis.asyncio`` client."""
    settings = _settings(config, circuit_threshold, circuit_reset_timeout)
    policy = _policy(max_retries, base_delay, max_delay, multiplier, jitter, deadline, full_jitter)
    breaker = AsyncBreaker(name, redis, settings, clock, classifier=classifier)
    return AsyncNetworkOperation(breaker, policy, sleep=sleep or asyncio.sleep, clock=clock)
