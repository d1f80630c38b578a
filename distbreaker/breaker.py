"""``Breaker`` and ``AsyncBreaker``: admit → call → record, with fallbacks and a decorator.

Both twins run ``distbreaker.protocol.CallProtocol``, which makes every decision; they do
only the Redis I/O it asks for, so they differ only in ``await``. No lock is ever held
around the user's call.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, ParamSpec, Self, TypeVar, cast

from distbreaker import upkeep
from distbreaker.classify import Classifier, Verdict, classify
from distbreaker.config import BreakerConfig, validate_name
from distbreaker.core import Command, HistoryEntry, Outcome
from distbreaker.errors import CircuitOpenError, PermissionDeniedError, StoreUnavailableError
from distbreaker.events import subscribe, subscribe_async
from distbreaker.process import Clock
from distbreaker.protocol import Ask, CallProtocol, Ticket, Upkeep
from distbreaker.status import BreakerStatus
from distbreaker.store import STORE_ERRORS, AsyncStore, SyncStore, events_channel, printable

P = ParamSpec("P")
T = TypeVar("T")
ClockSource = Callable[[], float]
HISTORY_LIMIT = 1000


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

    @property
    def reporter(self) -> str:
        """The reporter this process counts as for ``min_reporters`` (its host by default)."""
        return self._protocol.reporter

    @property
    def locally_open(self) -> bool:
        """This process refuses on its own evidence while the fleet's breaker is closed."""
        return self._protocol.locally_open

    def classify(self, error: Exception) -> Verdict:
        """How this breaker judges ``error``: counted, retryable, rate limited."""
        return self._protocol.classify(error)

    def known_refusal(self) -> CircuitOpenError | None:
        """The refusal the next call would meet, from what this process already knows
        (the last script reply or event, or the local shadow): no Redis round trip."""
        return self._protocol.known_refusal()

    @staticmethod
    def _history_args(limit: int, since: float | None) -> tuple[int, int | None]:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= HISTORY_LIMIT:
            raise ValueError(f"limit must be an integer between 1 and {HISTORY_LIMIT}")
        if since is None:
            return limit, None
        if isinstance(since, bool) or not isinstance(since, int | float) or not since >= 0:
            raise ValueError("since must be a time in epoch seconds")
        return limit, int(since * 1000)

    @staticmethod
    def _control_args(actor: str | None, reason: str) -> tuple[str, str]:
        if not isinstance(reason, str) or (actor is not None and not isinstance(actor, str)):
            raise TypeError("actor and reason must be strings")
        return printable(actor or "", 128), printable(reason, 200)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.config.consistency}>"


def _since(entries: list[HistoryEntry], since_ms: int | None) -> list[HistoryEntry]:
    return entries if since_ms is None else [e for e in entries if e.at_ms >= since_ms]


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
        self._store = SyncStore(redis, self.name, self.config, self._protocol.reporter)

    def judged_by(self, classifier: Classifier) -> Self:
        """A breaker of the same name, Redis, settings and clock that judges errors by
        ``classifier`` (it shares the fleet's state; only this process's verdicts differ)."""
        clock = self._protocol.clock.source
        return type(self)(self.name, self.redis, self.config, clock, classifier=classifier)

    def _process(self) -> CallProtocol:
        """The protocol, set up once per process (renewed, with a new store, after a fork)."""
        protocol = self._protocol
        local = protocol.local
        if local.set_up and not local.forked():
            return protocol
        if protocol.renew():
            self._store = SyncStore(self.redis, self.name, self.config, protocol.reporter)
        protocol.local.set_up = True
        if protocol.subscribes:
            subscribe(self.redis, self._channel, self.name, protocol.feed)
        upkeep.register(self)
        return protocol

    # -- the call path --------------------------------------------------------------

    def execute(self, operation: Callable[[], T], fallback: Callable[[], T] | None = None) -> T:
        """Run ``operation`` through the breaker; ``fallback()`` when refused or failed."""
        protocol = self._process()
        ticket = self._admit(protocol)
        if isinstance(ticket, CircuitOpenError):
            protocol.report(None, "refused", None, ticket.state)
            if fallback is None:
                raise ticket
            return fallback()
        started = protocol.clock.monotonic()
        try:
            result = operation()
        except Exception as error:
            if self._failed(protocol, ticket, error, started) and fallback is not None:
                return fallback()
            raise
        except BaseException:
            self._aborted(protocol, ticket)
            raise
        self._succeeded(protocol, ticket, started)
        return result

    def __call__(self, function: Callable[P, T]) -> Callable[P, T]:
        """Use the breaker as a decorator: ``@breaker``."""
        if inspect.iscoroutinefunction(function):
            raise TypeError("decorate coroutine functions with an AsyncBreaker")

        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return self.execute(lambda: function(*args, **kwargs))

        return wrapper

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """``with breaker.guard(): ...`` for code that is not a callable.

        Refused on entry with ``CircuitOpenError``; an exception inside is classified and
        recorded as in ``execute`` and propagates; a probe's lease is always settled.
        """
        protocol = self._process()
        ticket = self._admit(protocol)
        if isinstance(ticket, CircuitOpenError):
            protocol.report(None, "refused", None, ticket.state)
            raise ticket
        started = protocol.clock.monotonic()
        try:
            yield
        except Exception as error:
            self._failed(protocol, ticket, error, started)
            raise
        except BaseException:
            self._aborted(protocol, ticket)
            raise
        self._succeeded(protocol, ticket, started)

    def _admit(self, protocol: CallProtocol) -> Ticket | CircuitOpenError:
        decided = protocol.decide_locally()
        if not isinstance(decided, Ask):
            return decided
        try:
            admission = self._store.admit(protocol.clock.server_ms(), decided.call_id)
        except PermissionDeniedError as error:  # also an OSError: before STORE_ERRORS
            return protocol.admit_denied(error)
        except STORE_ERRORS as error:
            upkeep.wake()
            return protocol.admit_failed(error, decided)
        return protocol.admitted(admission, decided)

    def _succeeded(self, protocol: CallProtocol, ticket: Ticket, started: float) -> None:
        ended = protocol.clock.monotonic()
        outcome = protocol.after_success(ticket, ended - started, ended)
        if outcome is not None:
            self._record(protocol, ticket, outcome)
        protocol.report(ticket, "slow" if outcome == "failure" else "success", ended - started)

    def _failed(
        self, protocol: CallProtocol, ticket: Ticket, error: Exception, started: float
    ) -> bool:
        """Record a failed call; True when the error counts (the fallback may answer)."""
        ended = protocol.clock.monotonic()
        after = protocol.after_error(ticket, error, ended)
        if after.hold_open is not None:
            self._hold(after.hold_open, "rate limited")
            protocol.report(ticket, "rate_limited", ended - started)
            return False
        if after.outcome is not None:
            self._record(protocol, ticket, after.outcome)
        protocol.report(ticket, "failure" if after.verdict.counts else "ignored", ended - started)
        return after.verdict.counts

    def _aborted(self, protocol: CallProtocol, ticket: Ticket) -> None:
        if ticket.probe:
            self._record(protocol, ticket, "release")

    def _record(self, protocol: CallProtocol, ticket: Ticket, outcome: Outcome) -> None:
        call_id = protocol.call_id_for(ticket)
        if not protocol.shares(ticket):
            protocol.record_locally(ticket, call_id, outcome)
            return
        batch = protocol.batch_for_record(outcome)
        asked = protocol.clock.monotonic()
        try:
            change = self._store.record(
                protocol.clock.server_ms(), call_id, ticket.generation, outcome, batch
            )
        except PermissionDeniedError as error:
            protocol.record_denied(error, ticket, call_id, outcome, batch)
            return
        except STORE_ERRORS as error:
            protocol.record_failed(error, ticket, call_id, outcome, batch)
            upkeep.wake()
            return
        protocol.recorded(change, asked)

    # -- status, history and controls --------------------------------------------------

    def status(self) -> BreakerStatus:
        """The breaker's state as Redis has it (the local shadow's while degraded)."""
        protocol = self._process()
        if not protocol.may_ask_status():
            return protocol.status_failed(None)
        try:
            snapshot = self._store.snapshot(protocol.clock.server_ms())
        except PermissionDeniedError:
            raise
        except STORE_ERRORS as error:
            upkeep.wake()
            return protocol.status_failed(error)
        return protocol.status(snapshot)

    def history(self, limit: int = 100, since: float | None = None) -> list[HistoryEntry]:
        """The last ``limit`` transitions and commands (oldest first), at or after ``since``
        (epoch seconds) when given. Raises ``StoreUnavailableError`` while Redis is away."""
        limit, since_ms = self._history_args(limit, since)
        self._process()
        try:
            entries = self._store.history(limit)
        except PermissionDeniedError:
            raise
        except STORE_ERRORS as error:
            raise StoreUnavailableError(self.name, f"{type(error).__name__}: {error}") from error
        return _since(entries, since_ms)

    def force_open(self, *, actor: str | None = None, reason: str = "") -> None:
        """Isolate the upstream for the whole fleet until ``reset()`` or ``force_closed()``."""
        self._control("force_open", 0, reason, actor)

    def force_closed(self, *, actor: str | None = None, reason: str = "") -> None:
        """Disable the breaker for the whole fleet: always admit, still count failures."""
        self._control("force_closed", 0, reason, actor)

    def reset(self, *, actor: str | None = None, reason: str = "") -> None:
        """Back to closed with an empty window, releasing any forced state (and repairing
        whatever the state hash held)."""
        self._control("reset", 0, reason, actor)

    def hold_open(self, seconds: float, reason: str = "", *, actor: str | None = None) -> None:
        """Open for the whole fleet until now + ``seconds`` (never shortens an open).

        Without ``actor`` and for at most an hour this is a worker's own pause (an upstream
        said when to come back), which a worker's Redis user may ask for; otherwise it is
        an operator command (``control.lua``), recorded with its actor. A hold Redis refuses
        raises ``PermissionDeniedError``; the local shadow keeps it.
        """
        hold_ms = CallProtocol.hold_ms(seconds)
        if CallProtocol.is_worker_hold(hold_ms, actor):
            self._worker_hold(hold_ms, reason)
        else:
            self._control("hold_open", hold_ms, reason, actor)

    def _hold(self, seconds: float, reason: str) -> None:
        """A rate limit's hold on the call path: a refusal is logged once, never raised."""
        with contextlib.suppress(PermissionDeniedError):
            self._worker_hold(CallProtocol.worker_hold_ms(seconds), reason)

    def _worker_hold(self, hold_ms: int, reason: str) -> None:
        protocol = self._process()
        reason = printable(reason, 200)
        asked = protocol.clock.monotonic()
        try:
            change = self._store.hold(protocol.clock.server_ms(), hold_ms, reason)
        except PermissionDeniedError as error:
            protocol.hold_denied(error, hold_ms, reason)  # kept by the local shadow
            raise
        except STORE_ERRORS as error:
            protocol.hold_failed(error, hold_ms, reason)  # the local shadow holds instead
            upkeep.wake()
            return
        protocol.recorded(change, asked)

    def _control(self, command: Command, hold_ms: int, reason: str, actor: str | None) -> None:
        actor_text, reason = self._control_args(actor, reason)
        protocol = self._process()
        asked = protocol.clock.monotonic()
        try:
            change = self._store.control(
                protocol.clock.server_ms(), command, hold_ms, reason, actor_text
            )
        except PermissionDeniedError:
            raise  # Redis answered: nothing to apply locally
        except STORE_ERRORS as error:
            raise protocol.control_failed(error, command, hold_ms, reason, actor_text) from error
        protocol.recorded(change, asked)

    # -- background upkeep (the upkeep thread calls this) ------------------------------

    def upkeep(self, final: bool = False) -> float:
        """Send what is due off the call path; seconds until it wants to run again."""
        protocol = self._protocol
        plan = protocol.plan_upkeep(final)
        try:
            if plan.ping:
                self._store.snapshot(protocol.clock.server_ms())
                protocol.pinged()
                return 0.0  # Redis is back: what waited for it goes out at once
            self._send(protocol, plan)
        except PermissionDeniedError as error:
            protocol.upkeep_denied(error, plan)
        except STORE_ERRORS as error:
            protocol.upkeep_failed(error, plan)
        return plan.wake_in

    def _send(self, protocol: CallProtocol, plan: Upkeep) -> None:
        while plan.records:
            call_id, generation, outcome = plan.records[0]
            asked = protocol.clock.monotonic()
            change = self._store.record(
                protocol.clock.server_ms(), call_id, generation, cast(Outcome, outcome)
            )
            plan.records.pop(0)
            protocol.recorded(change, asked)
        if plan.batch is not None:
            asked = protocol.clock.monotonic()
            report = self._store.report(
                protocol.clock.server_ms(), plan.batch, plan.would_refuse, plan.local_until_ms
            )
            plan.batch = None
            protocol.reported(report, asked)


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
        self._store = AsyncStore(redis, self.name, self.config, self._protocol.reporter)

    def judged_by(self, classifier: Classifier) -> Self:
        """The twin of :meth:`Breaker.judged_by`."""
        clock = self._protocol.clock.source
        return type(self)(self.name, self.redis, self.config, clock, classifier=classifier)

    def _process(self) -> CallProtocol:
        """The protocol, set up once per process (renewed, with a new store, after a fork)."""
        protocol = self._protocol
        local = protocol.local
        if local.set_up and not local.forked():
            return protocol
        if protocol.renew():
            self._store = AsyncStore(self.redis, self.name, self.config, protocol.reporter)
        protocol.local.set_up = True
        if protocol.subscribes:
            subscribe_async(self.redis, self._channel, self.name, protocol.feed)
        upkeep.register_async(self)
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
            protocol.report(None, "refused", None, ticket.state)
            if fallback is None:
                raise ticket
            return await resolve(fallback())
        started = protocol.clock.monotonic()
        try:
            result = await operation()
        except Exception as error:
            if await self._failed(protocol, ticket, error, started) and fallback is not None:
                return await resolve(fallback())
            raise
        except BaseException:
            await self._aborted(protocol, ticket)
            raise
        await self._succeeded(protocol, ticket, started)
        return result

    def __call__(self, function: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Use the breaker as a decorator on a coroutine function."""
        if not inspect.iscoroutinefunction(function):
            raise TypeError("AsyncBreaker decorates coroutine functions; use Breaker otherwise")

        @functools.wraps(function)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.execute(lambda: function(*args, **kwargs))

        return wrapper

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """``async with breaker.guard(): ...``; see :meth:`Breaker.guard`."""
        protocol = self._process()
        ticket = await self._admit(protocol)
        if isinstance(ticket, CircuitOpenError):
            protocol.report(None, "refused", None, ticket.state)
            raise ticket
        started = protocol.clock.monotonic()
        try:
            yield
        except Exception as error:
            await self._failed(protocol, ticket, error, started)
            raise
        except BaseException:
            await self._aborted(protocol, ticket)
            raise
        await self._succeeded(protocol, ticket, started)

    async def _admit(self, protocol: CallProtocol) -> Ticket | CircuitOpenError:
        decided = protocol.decide_locally()
        if not isinstance(decided, Ask):
            return decided
        try:
            admission = await self._store.admit(protocol.clock.server_ms(), decided.call_id)
        except PermissionDeniedError as error:  # also an OSError: before STORE_ERRORS
            return protocol.admit_denied(error)
        except STORE_ERRORS as error:
            upkeep.wake_async()
            return protocol.admit_failed(error, decided)
        return protocol.admitted(admission, decided)

    async def _succeeded(self, protocol: CallProtocol, ticket: Ticket, started: float) -> None:
        ended = protocol.clock.monotonic()
        outcome = protocol.after_success(ticket, ended - started, ended)
        if outcome is not None:
            await self._record(protocol, ticket, outcome)
        protocol.report(ticket, "slow" if outcome == "failure" else "success", ended - started)

    async def _failed(
        self, protocol: CallProtocol, ticket: Ticket, error: Exception, started: float
    ) -> bool:
        ended = protocol.clock.monotonic()
        after = protocol.after_error(ticket, error, ended)
        if after.hold_open is not None:
            await self._hold(after.hold_open, "rate limited")
            protocol.report(ticket, "rate_limited", ended - started)
            return False
        if after.outcome is not None:
            await self._record(protocol, ticket, after.outcome)
        protocol.report(ticket, "failure" if after.verdict.counts else "ignored", ended - started)
        return after.verdict.counts

    async def _aborted(self, protocol: CallProtocol, ticket: Ticket) -> None:
        if ticket.probe:
            await self._record(protocol, ticket, "release")

    async def _record(self, protocol: CallProtocol, ticket: Ticket, outcome: Outcome) -> None:
        call_id = protocol.call_id_for(ticket)
        if not protocol.shares(ticket):
            protocol.record_locally(ticket, call_id, outcome)
            return
        batch = protocol.batch_for_record(outcome)
        asked = protocol.clock.monotonic()
        try:
            change = await self._store.record(
                protocol.clock.server_ms(), call_id, ticket.generation, outcome, batch
            )
        except PermissionDeniedError as error:
            protocol.record_denied(error, ticket, call_id, outcome, batch)
            return
        except STORE_ERRORS as error:
            protocol.record_failed(error, ticket, call_id, outcome, batch)
            upkeep.wake_async()
            return
        protocol.recorded(change, asked)

    async def status(self) -> BreakerStatus:
        """The breaker's state as Redis has it (the local shadow's while degraded)."""
        protocol = self._process()
        if not protocol.may_ask_status():
            return protocol.status_failed(None)
        try:
            snapshot = await self._store.snapshot(protocol.clock.server_ms())
        except PermissionDeniedError:
            raise
        except STORE_ERRORS as error:
            upkeep.wake_async()
            return protocol.status_failed(error)
        return protocol.status(snapshot)

    async def history(self, limit: int = 100, since: float | None = None) -> list[HistoryEntry]:
        """See :meth:`Breaker.history`."""
        limit, since_ms = self._history_args(limit, since)
        self._process()
        try:
            entries = await self._store.history(limit)
        except PermissionDeniedError:
            raise
        except STORE_ERRORS as error:
            raise StoreUnavailableError(self.name, f"{type(error).__name__}: {error}") from error
        return _since(entries, since_ms)

    async def force_open(self, *, actor: str | None = None, reason: str = "") -> None:
        """Isolate the upstream for the whole fleet until ``reset()`` or ``force_closed()``."""
        await self._control("force_open", 0, reason, actor)

    async def force_closed(self, *, actor: str | None = None, reason: str = "") -> None:
        """Disable the breaker for the whole fleet: always admit, still count failures."""
        await self._control("force_closed", 0, reason, actor)

    async def reset(self, *, actor: str | None = None, reason: str = "") -> None:
        """Back to closed with an empty window, releasing any forced state."""
        await self._control("reset", 0, reason, actor)

    async def hold_open(
        self, seconds: float, reason: str = "", *, actor: str | None = None
    ) -> None:
        """Open for the whole fleet until now + ``seconds``; see :meth:`Breaker.hold_open`."""
        hold_ms = CallProtocol.hold_ms(seconds)
        if CallProtocol.is_worker_hold(hold_ms, actor):
            await self._worker_hold(hold_ms, reason)
        else:
            await self._control("hold_open", hold_ms, reason, actor)

    async def _hold(self, seconds: float, reason: str) -> None:
        with contextlib.suppress(PermissionDeniedError):
            await self._worker_hold(CallProtocol.worker_hold_ms(seconds), reason)

    async def _worker_hold(self, hold_ms: int, reason: str) -> None:
        protocol = self._process()
        reason = printable(reason, 200)
        asked = protocol.clock.monotonic()
        try:
            change = await self._store.hold(protocol.clock.server_ms(), hold_ms, reason)
        except PermissionDeniedError as error:
            protocol.hold_denied(error, hold_ms, reason)  # kept by the local shadow
            raise
        except STORE_ERRORS as error:
            protocol.hold_failed(error, hold_ms, reason)
            upkeep.wake_async()
            return
        protocol.recorded(change, asked)

    async def _control(
        self, command: Command, hold_ms: int, reason: str, actor: str | None
    ) -> None:
        actor_text, reason = self._control_args(actor, reason)
        protocol = self._process()
        asked = protocol.clock.monotonic()
        try:
            change = await self._store.control(
                protocol.clock.server_ms(), command, hold_ms, reason, actor_text
            )
        except PermissionDeniedError:
            raise  # Redis answered: nothing to apply locally
        except STORE_ERRORS as error:
            raise protocol.control_failed(error, command, hold_ms, reason, actor_text) from error
        protocol.recorded(change, asked)

    async def upkeep(self, final: bool = False) -> float:
        """Send what is due off the call path; seconds until it wants to run again."""
        protocol = self._protocol
        plan = protocol.plan_upkeep(final)
        try:
            if plan.ping:
                await self._store.snapshot(protocol.clock.server_ms())
                protocol.pinged()
                return 0.0  # Redis is back: what waited for it goes out at once
            await self._send(protocol, plan)
        except PermissionDeniedError as error:
            protocol.upkeep_denied(error, plan)
        except STORE_ERRORS as error:
            protocol.upkeep_failed(error, plan)
        return plan.wake_in

    async def _send(self, protocol: CallProtocol, plan: Upkeep) -> None:
        while plan.records:
            call_id, generation, outcome = plan.records[0]
            asked = protocol.clock.monotonic()
            change = await self._store.record(
                protocol.clock.server_ms(), call_id, generation, cast(Outcome, outcome)
            )
            plan.records.pop(0)
            protocol.recorded(change, asked)
        if plan.batch is not None:
            asked = protocol.clock.monotonic()
            report = await self._store.report(
                protocol.clock.server_ms(), plan.batch, plan.would_refuse, plan.local_until_ms
            )
            plan.batch = None
            protocol.reported(report, asked)


async def resolve(value: T | Awaitable[T]) -> T:
    """Await ``value`` if it is awaitable (fallbacks may be sync or async)."""
    if inspect.isawaitable(value):
        return await cast(Awaitable[T], value)
    return value
