"""``Breaker`` and ``AsyncBreaker``: admit → call → record, with fallbacks and a decorator.

The twins share every decision (``_BreakerBase``); they differ only in how they wait for
Redis. No lock is ever held around the user's call.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

from pydantic import BaseModel, ConfigDict

from distbreaker import hooks
from distbreaker.classify import DEFAULT_RATE_LIMIT_WAIT, Classifier, Verdict, as_verdict, classify
from distbreaker.config import BreakerConfig, validate_name
from distbreaker.core import Admission, BreakerModel, Change, Command, Event, Outcome, Snapshot
from distbreaker.errors import CircuitOpenError, StoreUnavailableError
from distbreaker.events import subscribe, subscribe_async
from distbreaker.store import STORE_ERRORS, AsyncStore, SyncStore, events_channel

logger = logging.getLogger("distbreaker")

# Bumped in every forked child, so a breaker notices a fork without a syscall per call.
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)

P = ParamSpec("P")
T = TypeVar("T")
Clock = Callable[[], float]


class BreakerStatus(BaseModel):
    """One breaker as Redis (or, while degraded, the local shadow) sees it. Times in seconds."""

    model_config = ConfigDict(frozen=True)

    name: str
    state: str
    failure_count: int
    generation: int
    opened_at: float | None
    time_until_reset: float
    last_failure_at: float | None
    store_ok: bool
    healthy: bool
    failures_total: int = 0
    opens_total: int = 0
    probes_in_flight: int = 0


def status_from_snapshot(name: str, snap: Snapshot, store_ok: bool) -> BreakerStatus:
    """Turn a script's (or the shadow's) snapshot into the public status."""
    waiting = snap.state == "open"
    return BreakerStatus(
        name=name,
        state=snap.state,
        failure_count=snap.failure_count,
        generation=snap.generation,
        opened_at=snap.opened_at_ms / 1000 if snap.opened_at_ms else None,
        time_until_reset=max(0, snap.open_until_ms - snap.now_ms) / 1000 if waiting else 0.0,
        last_failure_at=snap.last_failure_at_ms / 1000 if snap.last_failure_at_ms else None,
        store_ok=store_ok,
        healthy=snap.state in ("closed", "forced_closed"),
        failures_total=snap.failures_total,
        opens_total=snap.opens_total,
        probes_in_flight=snap.probes_in_flight,
    )


class StoreGuard:
    """Backs off from a failing store: one timeout per back-off period, never one per call.

    While the store is down, one caller at a time is let through after the back-off
    (about a second, doubling up to ``max_delay``) to see whether it is back.
    """

    def __init__(self, base_delay: float = 1.0, max_delay: float = 10.0) -> None:
        self._base = base_delay
        self._max = max_delay
        self._lock = threading.Lock()
        self.ok = True
        self._delay = base_delay
        self._retry_at = 0.0
        self._trial = False

    def allow(self, now: float) -> bool:
        with self._lock:
            if self.ok:
                return True
            if not self._trial and now >= self._retry_at:
                self._trial = True
                return True
            return False

    def failed(self, now: float) -> bool:
        """Note a store error; True when this starts an outage (log it once)."""
        with self._lock:
            started = self.ok
            self._delay = self._base if started else min(self._delay * 2, self._max)
            self.ok = False
            self._trial = False
            self._retry_at = now + self._delay
            return started

    def succeeded(self) -> bool:
        """Note a store answer; True when this ends an outage."""
        with self._lock:
            ended = not self.ok
            self.ok = True
            self._trial = False
            self._delay = self._base
            return ended

    def retry_in(self, now: float) -> float:
        with self._lock:
            return max(0.0, self._retry_at - now)


class LocalCache:
    """This process's copy of a breaker's state, for ``consistency="cached"``.

    Only closed and not-yet-due open are decided locally; everything else (probes,
    half_open, a due open, a stale copy) goes to the scripts.
    """

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self.state = ""
        self.generation = -1
        self.due = 0.0
        self.fetched = float("-inf")
        self.closed_ticket: Ticket | None = None

    def _set(self, state: str, generation: int, due: float, now: float) -> None:
        with self._lock:
            # Out-of-order news is ignored, but a stale copy takes anything: the keys may
            # have expired (generation back to 0) while this process held an old copy.
            fresh = now - self.fetched < self._ttl
            if generation < self.generation and fresh:
                return
            closed = state in ("closed", "forced_closed")
            self.closed_ticket = Ticket(None, generation, False, True, state) if closed else None
            self.state, self.generation, self.due, self.fetched = state, generation, due, now

    def from_admission(self, admission: Admission, now: float) -> None:
        wait = (admission.retry_after_ms or 0) / 1000
        if admission.state == "half_open":
            # A refused non-probe: the probes in flight decide. Refuse locally for a while
            # instead of every caller asking the script (probes still always ask it).
            wait = 0.0 if admission.allowed else min(wait, self._ttl)
        elif admission.state != "open":
            wait = 0.0
        self._set(admission.state, admission.generation, now + wait, now)

    def from_change(self, change: Change, now: float) -> None:
        wait = max(0, change.open_until_ms - change.now_ms) / 1000
        self._set(change.state, change.generation, now + wait, now)

    def from_event(
        self, to_state: str, generation: int, at_ms: int, open_until_ms: int, now: float
    ) -> None:
        wait = max(0, open_until_ms - at_ms) / 1000 if to_state == "open" else 0.0
        self._set(to_state, generation, now + wait, now)

    def invalidate(self) -> None:
        with self._lock:
            self.fetched = float("-inf")

    def decide(self, now: float, name: str) -> Ticket | CircuitOpenError | None:
        """A local decision, or ``None`` when only the script may decide."""
        # Read without the lock: the four fields are replaced together under it, and a
        # torn read can only make a decision as stale as cache_ttl allows anyway.
        ticket = self.closed_ticket
        if now - self.fetched >= self._ttl or now < self.fetched:
            return None
        if ticket is not None:
            return ticket
        state = self.state
        if state in ("open", "half_open") and now < self.due:
            return CircuitOpenError(name, state, round(self.due - now, 3))
        if state == "forced_open":
            return CircuitOpenError(name, "forced_open", None)
        return None


@dataclass(frozen=True, slots=True)
class Ticket:
    """An admitted call: where it was admitted and in which generation."""

    call_id: str | None  # None until an outcome must be recorded (cached closed admissions)
    generation: int
    probe: bool
    shared: bool
    state: str


class _BreakerBase:
    def __init__(
        self,
        name: str,
        config: BreakerConfig | None,
        clock: Clock | None,
        classifier: Classifier | None,
    ) -> None:
        self.name = validate_name(name)
        if config is not None and not isinstance(config, BreakerConfig):
            raise TypeError("config must be a BreakerConfig")
        self.config = config or BreakerConfig()
        self._clock = clock
        self._classifier: Classifier = classifier or classify
        self._channel = events_channel(self.config.key_prefix)
        self._init_process_state()

    def _init_process_state(self) -> None:
        """Everything that must not be shared with a forked parent."""
        self._fork_generation = _fork_generation
        self._pid = os.getpid()
        self._worker_id = f"{socket.gethostname()}:{self._pid}:{secrets.token_hex(4)}"
        self._counter = itertools.count(1)
        self._guard = StoreGuard()
        self._cache = LocalCache(self.config.cache_ttl)
        self._shadow = BreakerModel(self.name, self.config, on_event=self._shadow_event)
        self._subscribed = False

    def _forked(self) -> bool:
        if self._fork_generation == _fork_generation:
            return False
        self._init_process_state()
        return True

    def _on_event(self, event: Event) -> None:
        """A transition published by any worker: refresh the local cache at once."""
        self._cache.from_event(
            event.to_state, event.generation, event.at_ms, event.open_until_ms, self._local_now()
        )
        hooks.emit("on_transition", event)

    def _invalidate_cache(self) -> None:
        self._cache.invalidate()

    def _shadow_event(self, event: Event) -> None:
        logger.warning(
            "breaker %r (local, Redis unreachable): %s -> %s (%s)",
            self.name,
            event.from_state,
            event.to_state,
            event.reason,
        )
        hooks.emit("on_transition", event)

    # -- time ---------------------------------------------------------------------

    def _script_now(self) -> int | None:
        return None if self._clock is None else int(self._clock() * 1000)

    def _local_now(self) -> float:
        return time.monotonic() if self._clock is None else self._clock()

    def _wall_ms(self) -> int:
        return int((time.time() if self._clock is None else self._clock()) * 1000)

    def _timer(self) -> float:
        return time.perf_counter() if self._clock is None else self._clock()

    # -- decisions (no I/O) -------------------------------------------------------

    def _next_call_id(self) -> str:
        return f"{self._worker_id}:{next(self._counter)}"

    def _ticket_or_refusal(
        self, admission: Admission, call_id: str, shared: bool
    ) -> Ticket | CircuitOpenError:
        if admission.allowed:
            return Ticket(call_id, admission.generation, admission.probe, shared, admission.state)
        retry_after = None if admission.retry_after_ms is None else admission.retry_after_ms / 1000
        return CircuitOpenError(self.name, admission.state, retry_after)

    def _cached_decision(self) -> Ticket | CircuitOpenError | None:
        if self.config.consistency != "cached" or not self._guard.ok:
            return None
        return self._cache.decide(self._local_now(), self.name)

    def _store_down(self, error: BaseException) -> None:
        hooks.emit("on_store_error", self.name, error)
        if self._guard.failed(self._local_now()):
            logger.warning(
                "breaker %r: Redis unreachable (%s: %s); on_store_error=%s until it answers",
                self.name,
                type(error).__name__,
                error,
                self.config.on_store_error,
            )

    def _store_up(self) -> None:
        if self._guard.succeeded():
            logger.warning("breaker %r: Redis answers again; shared mode resumed", self.name)

    def _degraded_admission(self, cause: str) -> Ticket | CircuitOpenError:
        mode = self.config.on_store_error
        if mode == "raise":
            raise StoreUnavailableError(self.name, cause)
        if mode == "fail_closed":
            return CircuitOpenError(self.name, "open", self._guard.retry_in(self._local_now()))
        call_id = self._next_call_id()
        return self._ticket_or_refusal(self._shadow.admit(self._wall_ms(), call_id), call_id, False)

    @property
    def store_ok(self) -> bool:
        """False while Redis is unreachable and this worker relies on its local shadow."""
        return self._guard.ok

    def _verdict(self, error: Exception) -> Verdict:
        try:
            return as_verdict(self._classifier(error))
        except Exception:
            logger.exception("breaker %r: classifier failed; counting the error", self.name)
            return Verdict(counts=True, retryable=False)

    def _outcome_after_error(self, ticket: Ticket, verdict: Verdict) -> Outcome | None:
        if verdict.rate_limited:
            return None  # hold_open replaces any record
        if verdict.counts:
            return "failure"
        return "release" if ticket.probe else None

    def _outcome_after_success(self, ticket: Ticket, duration: float) -> Outcome | None:
        slow = self.config.slow_call_threshold
        if slow is not None and duration > slow:
            return "failure"
        return "success" if ticket.probe else None

    def _report(self, ticket: Ticket | None, outcome: str, duration: float | None) -> None:
        if not hooks.active():
            return
        state = ticket.state if ticket else "open"
        shared = ticket.shared if ticket else self._guard.ok
        info = hooks.CallInfo(self.name, outcome, state, duration, shared)  # type: ignore[arg-type]
        hooks.emit("on_call", info)

    def _record_in_shadow(self, ticket: Ticket, call_id: str, outcome: Outcome) -> None:
        """The outcome Redis could not take: the local shadow keeps protecting."""
        if not ticket.shared:
            self._shadow.record(self._wall_ms(), call_id, ticket.generation, outcome)
        elif outcome == "failure" and self.config.on_store_error == "fail_open":
            now = self._wall_ms()
            generation = self._shadow.snapshot(now).generation
            self._shadow.record(now, call_id, generation, outcome)

    def _degraded_status(self, error: BaseException) -> BreakerStatus:
        self._store_down(error)
        if self.config.on_store_error == "raise":
            raise StoreUnavailableError(self.name, f"{type(error).__name__}: {error}") from error
        return status_from_snapshot(self.name, self._shadow.snapshot(self._wall_ms()), False)

    def _control_failed(
        self, error: BaseException, command: Command, hold_ms: int, reason: str
    ) -> StoreUnavailableError:
        """Apply a command Redis could not take locally; the caller still learns of it."""
        self._store_down(error)
        self._shadow.control(self._wall_ms(), command, hold_ms, reason)
        return StoreUnavailableError(self.name, f"{type(error).__name__}: {error}")

    def _apply_change(self, change: Change) -> None:
        self._cache.from_change(change, self._local_now())

    @staticmethod
    def _hold_ms(seconds: float) -> int:
        if seconds != seconds or seconds < 0:  # NaN or negative
            raise ValueError("hold_open seconds must be a non-negative number")
        return round(seconds * 1000)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.config.consistency}>"


class Breaker(_BreakerBase):
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
        clock: Clock | None = None,
        *,
        classifier: Classifier | None = None,
    ) -> None:
        super().__init__(name, config, clock, classifier)
        self.redis = redis
        self._store = SyncStore(redis, self.name, self.config)

    # -- the call path --------------------------------------------------------------

    def execute(self, operation: Callable[[], T], fallback: Callable[[], T] | None = None) -> T:
        """Run ``operation`` through the breaker; ``fallback()`` when refused or failed."""
        if self._forked():
            self._store = SyncStore(self.redis, self.name, self.config)
        if not self._subscribed and self.config.consistency == "cached":
            self._subscribed = True
            subscribe(self.redis, self._channel, self.name, self._on_event)
        ticket = self._admit()
        if isinstance(ticket, CircuitOpenError):
            self._report(None, "refused", None)
            if fallback is None:
                raise ticket
            return fallback()
        started = self._timer()
        try:
            result = operation()
        except Exception as error:
            verdict = self._verdict(error)
            self._after_error(ticket, verdict, self._timer() - started)
            if verdict.counts and fallback is not None:
                return fallback()
            raise
        except BaseException:
            if ticket.probe:
                self._record(ticket, "release")
            raise
        duration = self._timer() - started
        outcome = self._outcome_after_success(ticket, duration)
        if outcome is not None:
            self._record(ticket, outcome)
        self._report(ticket, "slow" if outcome == "failure" else "success", duration)
        return result

    def __call__(self, function: Callable[P, T]) -> Callable[P, T]:
        """Use the breaker as a decorator: ``@breaker``."""
        if inspect.iscoroutinefunction(function):
            raise TypeError("decorate coroutine functions with an AsyncBreaker")

        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return self.execute(lambda: function(*args, **kwargs))

        return wrapper

    def _admit(self) -> Ticket | CircuitOpenError:
        decided = self._cached_decision()
        if decided is not None:
            return decided
        if not self._guard.allow(self._local_now()):
            return self._degraded_admission("backing off after a store error")
        call_id = self._next_call_id()
        try:
            admission = self._store.admit(self._script_now(), call_id)
        except STORE_ERRORS as error:
            self._store_down(error)
            return self._degraded_admission(f"{type(error).__name__}: {error}")
        self._store_up()
        self._cache.from_admission(admission, self._local_now())
        return self._ticket_or_refusal(admission, call_id, shared=True)

    def _after_error(self, ticket: Ticket, verdict: Verdict, duration: float) -> None:
        if verdict.rate_limited:
            self._hold(verdict.retry_after or DEFAULT_RATE_LIMIT_WAIT, "rate limited")
            self._report(ticket, "rate_limited", duration)
            return
        outcome = self._outcome_after_error(ticket, verdict)
        if outcome is not None:
            self._record(ticket, outcome)
        self._report(ticket, "failure" if verdict.counts else "ignored", duration)

    def _record(self, ticket: Ticket, outcome: Outcome) -> None:
        call_id = ticket.call_id or self._next_call_id()
        if ticket.shared and self._guard.allow(self._local_now()):
            try:
                change = self._store.record(self._script_now(), call_id, ticket.generation, outcome)
            except STORE_ERRORS as error:
                self._store_down(error)
            else:
                self._store_up()
                self._apply_change(change)
                return
        self._record_in_shadow(ticket, call_id, outcome)

    # -- status and controls --------------------------------------------------------

    def status(self) -> BreakerStatus:
        """The breaker's state as Redis has it (the local shadow's while degraded)."""
        self._forked()
        try:
            snapshot = self._store.snapshot(self._script_now())
        except STORE_ERRORS as error:
            return self._degraded_status(error)
        self._store_up()
        return status_from_snapshot(self.name, snapshot, True)

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
        self._control("hold_open", self._hold_ms(seconds), reason)

    def _hold(self, seconds: float, reason: str) -> None:
        with contextlib.suppress(StoreUnavailableError):  # the local shadow has it already
            self.hold_open(seconds, reason)

    def _control(self, command: Command, hold_ms: int = 0, reason: str = "") -> None:
        self._forked()
        try:
            change = self._store.control(self._script_now(), command, hold_ms, reason)
        except STORE_ERRORS as error:
            raise self._control_failed(error, command, hold_ms, reason) from error
        self._store_up()
        self._apply_change(change)


class AsyncBreaker(_BreakerBase):
    """The ``asyncio`` twin of :class:`Breaker`, over a ``redis.asyncio`` client."""

    def __init__(
        self,
        name: str,
        redis: Any,
        config: BreakerConfig | None = None,
        clock: Clock | None = None,
        *,
        classifier: Classifier | None = None,
    ) -> None:
        super().__init__(name, config, clock, classifier)
        self.redis = redis
        self._store = AsyncStore(redis, self.name, self.config)

    async def execute(
        self,
        operation: Callable[[], Awaitable[T]],
        fallback: Callable[[], T | Awaitable[T]] | None = None,
    ) -> T:
        """Await ``operation()`` through the breaker; ``fallback()`` when refused or failed."""
        if self._forked():
            self._store = AsyncStore(self.redis, self.name, self.config)
        if not self._subscribed and self.config.consistency == "cached":
            self._subscribed = True
            subscribe_async(self.redis, self._channel, self.name, self._on_event)
        ticket = await self._admit()
        if isinstance(ticket, CircuitOpenError):
            self._report(None, "refused", None)
            if fallback is None:
                raise ticket
            return await resolve(fallback())
        started = self._timer()
        try:
            result = await operation()
        except Exception as error:
            verdict = self._verdict(error)
            await self._after_error(ticket, verdict, self._timer() - started)
            if verdict.counts and fallback is not None:
                return await resolve(fallback())
            raise
        except BaseException:
            if ticket.probe:
                await self._record(ticket, "release")
            raise
        duration = self._timer() - started
        outcome = self._outcome_after_success(ticket, duration)
        if outcome is not None:
            await self._record(ticket, outcome)
        self._report(ticket, "slow" if outcome == "failure" else "success", duration)
        return result

    def __call__(self, function: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Use the breaker as a decorator on a coroutine function."""
        if not inspect.iscoroutinefunction(function):
            raise TypeError("AsyncBreaker decorates coroutine functions; use Breaker otherwise")

        @functools.wraps(function)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.execute(lambda: function(*args, **kwargs))

        return wrapper

    async def _admit(self) -> Ticket | CircuitOpenError:
        decided = self._cached_decision()
        if decided is not None:
            return decided
        if not self._guard.allow(self._local_now()):
            return self._degraded_admission("backing off after a store error")
        call_id = self._next_call_id()
        try:
            admission = await self._store.admit(self._script_now(), call_id)
        except STORE_ERRORS as error:
            self._store_down(error)
            return self._degraded_admission(f"{type(error).__name__}: {error}")
        self._store_up()
        self._cache.from_admission(admission, self._local_now())
        return self._ticket_or_refusal(admission, call_id, shared=True)

    async def _after_error(self, ticket: Ticket, verdict: Verdict, duration: float) -> None:
        if verdict.rate_limited:
            await self._hold(verdict.retry_after or DEFAULT_RATE_LIMIT_WAIT, "rate limited")
            self._report(ticket, "rate_limited", duration)
            return
        outcome = self._outcome_after_error(ticket, verdict)
        if outcome is not None:
            await self._record(ticket, outcome)
        self._report(ticket, "failure" if verdict.counts else "ignored", duration)

    async def _record(self, ticket: Ticket, outcome: Outcome) -> None:
        call_id = ticket.call_id or self._next_call_id()
        if ticket.shared and self._guard.allow(self._local_now()):
            try:
                change = await self._store.record(
                    self._script_now(), call_id, ticket.generation, outcome
                )
            except STORE_ERRORS as error:
                self._store_down(error)
            else:
                self._store_up()
                self._apply_change(change)
                return
        self._record_in_shadow(ticket, call_id, outcome)

    async def status(self) -> BreakerStatus:
        """The breaker's state as Redis has it (the local shadow's while degraded)."""
        self._forked()
        try:
            snapshot = await self._store.snapshot(self._script_now())
        except STORE_ERRORS as error:
            return self._degraded_status(error)
        self._store_up()
        return status_from_snapshot(self.name, snapshot, True)

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
        await self._control("hold_open", self._hold_ms(seconds), reason)

    async def _hold(self, seconds: float, reason: str) -> None:
        with contextlib.suppress(StoreUnavailableError):  # the local shadow has it already
            await self.hold_open(seconds, reason)

    async def _control(self, command: Command, hold_ms: int = 0, reason: str = "") -> None:
        self._forked()
        try:
            change = await self._store.control(self._script_now(), command, hold_ms, reason)
        except STORE_ERRORS as error:
            raise self._control_failed(error, command, hold_ms, reason) from error
        self._store_up()
        self._apply_change(change)


async def resolve(value: T | Awaitable[T]) -> T:
    """Await ``value`` if it is awaitable (fallbacks may be sync or async)."""
    if inspect.isawaitable(value):
        return await cast(Awaitable[T], value)
    return value
