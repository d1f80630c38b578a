"""``Breaker`` and ``AsyncBreaker``: admit → call → record, with fallbacks and a decorator.

Both twins run ``distbreaker.protocol.CallProtocol``, which makes every decision; they do
only the Redis I/O it asks for, so they differ only in ``await``. No lock is ever held
around the user's call.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

from distbreaker.classify import Classifier, Verdict, classify
from distbreaker.config import BreakerConfig, validate_name
from distbreaker.core import Command, Outcome
from distbreaker.errors import CircuitOpenError, StoreUnavailableError
from distbreaker.events import subscribe, subscribe_async
from distbreaker.process import Clock
from distbreaker.protocol import Ask, CallProtocol, Ticket
from distbreaker.status import BreakerStatus
from distbreaker.store import STORE_ERRORS, AsyncStore, SyncStore, events_channel

P = ParamSpec("P")
T = TypeVar("T")
ClockSource = Callable[[], float]


class _Shell:
    """What both twins hold: the name, the settings and the protocol that decides."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None,
        clock: ClockSource | None,
        classifier: Classifier | None,
    ) -> None:
        self.name = validate_name(name)
        if config is not None and not isinstance(config, BreakerConfig):
            raise TypeError("config must be a BreakerConfig")
        self.config = config or BreakerConfig()
        self._channel = events_channel(self.config.key_prefix)
        self._protocol = CallProtocol(self.name, self.config, Clock(clock), classifier or classify)

    @property
    def store_ok(self) -> bool:
        """False while Redis is unreachable and this worker relies on its local shadow."""
        return self._protocol.store_ok

    @property
    def worker_id(self) -> str:
        """This process's part of every call id (``host:pid:random``), as seen in Redis."""
        return self._protocol.local.worker_id

    def classify(self, error: Exception) -> Verdict:
        """How this breaker judges ``error``: counted, retryable, rate limited."""
        return self._protocol.classify(error)

    def known_refusal(self) -> CircuitOpenError | None:
        """The refusal the next call would meet, from what this process already knows
        (the last script reply or event, or the local shadow): no Redis round trip."""
        return self._protocol.known_refusal()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.config.consistency}>"


class Breaker(_Shell):
    """A circuit breaker shared through Redis by every worker that uses the same name.

    ``redis`` is a ``redis.Redis``, ``redis.cluster.RedisCluster`` or Sentinel-managed
    client (``distbreaker.connect`` builds one with breaker-grade timeouts). ``clock``
    (seconds) replaces the Redis server's clock, for tests.
    """

    def __init__(
        self,
        name: str,
        redis: Any,
        config: BreakerConfig | None = None,
        clock: ClockSource | None = None,
        *,
        classifier: Classifier | None = None,
    ) -> None:
        super().__init__(name, config, clock, classifier)
        self.redis = redis
        self._store = SyncStore(redis, self.name, self.config)

    def _process(self) -> CallProtocol:
        """The protocol, renewed (with a new store) in a forked child."""
        protocol = self._protocol
        if protocol.renew():
            self._store = SyncStore(self.redis, self.name, self.config)
        if protocol.wants_subscription():
            subscribe(self.redis, self._channel, self.name, protocol.feed)
        return protocol

    # -- the call path --------------------------------------------------------------

    def execute(self, operation: Callable[[], T], fallback: Callable[[], T] | None = None) -> T:
        """Run ``operation`` through the breaker; ``fallback()`` when refused or failed."""
        protocol = self._process()
        ticket = self._admit(protocol)
        if isinstance(ticket, CircuitOpenError):
            protocol.report(None, "refused", None)
            if fallback is None:
                raise ticket
            return fallback()
        timer = protocol.clock.monotonic
        started = timer()
        try:
            result = operation()
        except Exception as error:
            after = protocol.after_error(ticket, error)
            duration = timer() - started
            if after.hold_open is not None:
                self._hold(after.hold_open, "rate limited")
                protocol.report(ticket, "rate_limited", duration)
            else:
                if after.outcome is not None:
                    self._record(protocol, ticket, after.outcome)
                protocol.report(ticket, "failure" if after.verdict.counts else "ignored", duration)
            if after.verdict.counts and fallback is not None:
                return fallback()
            raise
        except BaseException:
            if ticket.probe:
                self._record(protocol, ticket, "release")
            raise
        duration = timer() - started
        outcome = protocol.after_success(ticket, duration)
        if outcome is not None:
            self._record(protocol, ticket, outcome)
        protocol.report(ticket, "slow" if outcome == "failure" else "success", duration)
        return result

    def __call__(self, function: Callable[P, T]) -> Callable[P, T]:
        """Use the breaker as a decorator: ``@breaker``."""
        if inspect.iscoroutinefunction(function):
            raise TypeError("decorate coroutine functions with an AsyncBreaker")

        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return self.execute(lambda: function(*args, **kwargs))

        return wrapper

    def _admit(self, protocol: CallProtocol) -> Ticket | CircuitOpenError:
        decided = protocol.decide_locally()
        if not isinstance(decided, Ask):
            return decided
        try:
            admission = self._store.admit(protocol.clock.server_ms(), decided.call_id)
        except STORE_ERRORS as error:
            return protocol.admit_failed(error)
        return protocol.admitted(admission, decided.call_id)

    def _record(self, protocol: CallProtocol, ticket: Ticket, outcome: Outcome) -> None:
        call_id = protocol.call_id_for(ticket)
        if not protocol.shares(ticket):
            protocol.record_locally(ticket, call_id, outcome)
            return
        try:
            change = self._store.record(
                protocol.clock.server_ms(), call_id, ticket.generation, outcome
            )
        except STORE_ERRORS as error:
            protocol.record_failed(error, ticket, call_id, outcome)
            return
        protocol.recorded(change)

    # -- status and controls --------------------------------------------------------

    def status(self) -> BreakerStatus:
        """The breaker's state as Redis has it (the local shadow's while degraded)."""
        protocol = self._process()
        try:
            snapshot = self._store.snapshot(protocol.clock.server_ms())
        except STORE_ERRORS as error:
            return protocol.status_failed(error)
        return protocol.status(snapshot)

    def force_open(self) -> None:
        """Isolate the upstream for the whole fleet until ``reset()`` or ``force_closed()``."""
        self._control("force_open")

    def force_closed(self) -> None:
        """Disable the breaker for the whole fleet: always admit, still count failures."""
        self._control("force_closed")

    def reset(self) -> None:
        """Back to closed with an empty window, releasing any forced state."""
        self._control("reset")

    def hold_open(self, seconds: float, reason: str = "") -> None:
        """Open for the whole fleet until now + ``seconds`` (never shortens an open)."""
        self._control("hold_open", CallProtocol.hold_ms(seconds), reason)

    def _hold(self, seconds: float, reason: str) -> None:
        with contextlib.suppress(StoreUnavailableError):  # the local shadow has it already
            self.hold_open(seconds, reason)

    def _control(self, command: Command, hold_ms: int = 0, reason: str = "") -> None:
        protocol = self._process()
        try:
            change = self._store.control(protocol.clock.server_ms(), command, hold_ms, reason)
        except STORE_ERRORS as error:
            raise protocol.control_failed(error, command, hold_ms, reason) from error
        protocol.recorded(change)


class AsyncBreaker(_Shell):
    """The ``asyncio`` twin of :class:`Breaker`, over a ``redis.asyncio`` client."""

    def __init__(
        self,
        name: str,
        redis: Any,
        config: BreakerConfig | None = None,
        clock: ClockSource | None = None,
        *,
        classifier: Classifier | None = None,
    ) -> None:
        super().__init__(name, config, clock, classifier)
        self.redis = redis
        self._store = AsyncStore(redis, self.name, self.config)

    def _process(self) -> CallProtocol:
        """The protocol, renewed (with a new store) in a forked child."""
        protocol = self._protocol
        if protocol.renew():
            self._store = AsyncStore(self.redis, self.name, self.config)
        if protocol.wants_subscription():
            subscribe_async(self.redis, self._channel, self.name, protocol.feed)
        return protocol

    async def execute(
        self,
        operation: Callable[[], Awaitable[T]],
        fallback: Callable[[], T | Awaitable[T]] | None = None,
    ) -> T:
        """Await ``operation()`` through the breaker; ``fallback()`` when refused or failed."""
        protocol = self._process()
        ticket = await self._admit(protocol)
        if isinstance(ticket, CircuitOpenError):
            protocol.report(None, "refused", None)
            if fallback is None:
                raise ticket
            return await resolve(fallback())
        timer = protocol.clock.monotonic
        started = timer()
        try:
            result = await operation()
        except Exception as error:
            after = protocol.after_error(ticket, error)
            duration = timer() - started
            if after.hold_open is not None:
                await self._hold(after.hold_open, "rate limited")
                protocol.report(ticket, "rate_limited", duration)
            else:
                if after.outcome is not None:
                    await self._record(protocol, ticket, after.outcome)
                protocol.report(ticket, "failure" if after.verdict.counts else "ignored", duration)
            if after.verdict.counts and fallback is not None:
                return await resolve(fallback())
            raise
        except BaseException:
            if ticket.probe:
                await self._record(protocol, ticket, "release")
            raise
        duration = timer() - started
        outcome = protocol.after_success(ticket, duration)
        if outcome is not None:
            await self._record(protocol, ticket, outcome)
        protocol.report(ticket, "slow" if outcome == "failure" else "success", duration)
        return result

    def __call__(self, function: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Use the breaker as a decorator on a coroutine function."""
        if not inspect.iscoroutinefunction(function):
            raise TypeError("AsyncBreaker decorates coroutine functions; use Breaker otherwise")

        @functools.wraps(function)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.execute(lambda: function(*args, **kwargs))

        return wrapper

    async def _admit(self, protocol: CallProtocol) -> Ticket | CircuitOpenError:
        decided = protocol.decide_locally()
        if not isinstance(decided, Ask):
            return decided
        try:
            admission = await self._store.admit(protocol.clock.server_ms(), decided.call_id)
        except STORE_ERRORS as error:
            return protocol.admit_failed(error)
        return protocol.admitted(admission, decided.call_id)

    async def _record(self, protocol: CallProtocol, ticket: Ticket, outcome: Outcome) -> None:
        call_id = protocol.call_id_for(ticket)
        if not protocol.shares(ticket):
            protocol.record_locally(ticket, call_id, outcome)
            return
        try:
            change = await self._store.record(
                protocol.clock.server_ms(), call_id, ticket.generation, outcome
            )
        except STORE_ERRORS as error:
            protocol.record_failed(error, ticket, call_id, outcome)
            return
        protocol.recorded(change)

    async def status(self) -> BreakerStatus:
        """The breaker's state as Redis has it (the local shadow's while degraded)."""
        protocol = self._process()
        try:
            snapshot = await self._store.snapshot(protocol.clock.server_ms())
        except STORE_ERRORS as error:
            return protocol.status_failed(error)
        return protocol.status(snapshot)

    async def force_open(self) -> None:
        """Isolate the upstream for the whole fleet until ``reset()`` or ``force_closed()``."""
        await self._control("force_open")

    async def force_closed(self) -> None:
        """Disable the breaker for the whole fleet: always admit, still count failures."""
        await self._control("force_closed")

    async def reset(self) -> None:
        """Back to closed with an empty window, releasing any forced state."""
        await self._control("reset")

    async def hold_open(self, seconds: float, reason: str = "") -> None:
        """Open for the whole fleet until now + ``seconds`` (never shortens an open)."""
        await self._control("hold_open", CallProtocol.hold_ms(seconds), reason)

    async def _hold(self, seconds: float, reason: str) -> None:
        with contextlib.suppress(StoreUnavailableError):  # the local shadow has it already
            await self.hold_open(seconds, reason)

    async def _control(self, command: Command, hold_ms: int = 0, reason: str = "") -> None:
        protocol = self._process()
        try:
            change = await self._store.control(protocol.clock.server_ms(), command, hold_ms, reason)
        except STORE_ERRORS as error:
            raise protocol.control_failed(error, command, hold_ms, reason) from error
        protocol.recorded(change)


async def resolve(value: T | Awaitable[T]) -> T:
    """Await ``value`` if it is awaitable (fallbacks may be sync or async)."""
    if inspect.isawaitable(value):
        return await cast(Awaitable[T], value)
    return value
