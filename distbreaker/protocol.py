"""The per-call protocol both breaker twins run: every decision, no I/O.

``Breaker`` and ``AsyncBreaker`` ask ``CallProtocol`` what to do at each step and do only
the Redis I/O it asks for (httpx's ``BaseClient`` idea), so the twins differ only in
``await``:

    admit   decide_locally() → a Ticket, a refusal, or Ask(call_id): run admit.lua, then
            admitted(reply) — or admit_failed(error) when Redis did not answer
    call    the user's operation, timed with clock.monotonic()
    record  after_success / after_error say which outcome to record (and whether to hold
            the breaker open); shares(ticket) says whether Redis takes it, then recorded(reply),
            record_failed(error) or record_locally(...)

While Redis is unreachable the decisions come from ``ProcessState.shadow`` (the same state
machine in pure Python) according to ``on_store_error``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from distbreaker import hooks
from distbreaker.classify import DEFAULT_RATE_LIMIT_WAIT, Classifier, Verdict, as_verdict
from distbreaker.config import BreakerConfig
from distbreaker.core import Admission, Change, Command, Event, Outcome, Snapshot
from distbreaker.errors import CircuitOpenError, StoreUnavailableError
from distbreaker.process import Clock, LocalCache, ProcessState
from distbreaker.status import BreakerStatus, status_from_snapshot

logger = logging.getLogger("distbreaker")


@dataclass(frozen=True, slots=True)
class Ticket:
    """An admitted call: where it was admitted and in which generation."""

    call_id: str | None  # None until an outcome must be recorded (cached closed admissions)
    generation: int
    probe: bool
    shared: bool
    state: str


@dataclass(frozen=True, slots=True)
class Ask:
    """Only the admit script may decide; ``call_id`` names the call (and a probe lease)."""

    call_id: str


@dataclass(frozen=True, slots=True)
class AfterError:
    """What follows a failed call: hold the breaker open, record an outcome, or nothing."""

    verdict: Verdict
    outcome: Outcome | None
    hold_open: float | None


def _closed_ticket(state: str, generation: int) -> Ticket:
    return Ticket(None, generation, False, True, state)


class CallProtocol:
    """One breaker's decisions in one process (rebuilt after a fork by ``renew``)."""

    def __init__(
        self, name: str, config: BreakerConfig, clock: Clock, classifier: Classifier
    ) -> None:
        self.name = name
        self.config = config
        self.clock = clock
        self._classifier = classifier
        self._cached = config.consistency == "cached"
        self._start_process()

    def _start_process(self) -> None:
        self.local = ProcessState(self.name, self.config, _closed_ticket, self._shadow_event)
        # the subscriber holds listeners weakly: this reference keeps the feed alive
        self.feed = _CacheFeed(self.clock, self.local.cache)

    def renew(self) -> bool:
        """After a fork: a new process state; True when the twin must rebuild its store."""
        if not self.local.forked():
            return False
        self._start_process()
        return True

    # -- admission -------------------------------------------------------------------

    def decide_locally(self) -> Ticket | CircuitOpenError | Ask:
        """A decision without I/O, or ``Ask``: only the script may decide."""
        local = self.local
        guard = local.guard
        if self._cached and guard.ok:
            now = self.clock.monotonic()
            cache = local.cache
            ticket = cache.closed_ticket
            if ticket is not None and cache.fetched <= now < cache.fetched + cache.ttl:
                return ticket
            refusing = cache.refusing(now)
            if refusing is not None:
                return CircuitOpenError(self.name, *refusing)
        if not guard.allow(self.clock.monotonic()):
            return self._degraded_admission("backing off after a store error")
        return Ask(local.next_call_id())

    def admitted(self, admission: Admission, call_id: str) -> Ticket | CircuitOpenError:
        """The admit script's answer."""
        self.store_answered()
        self.local.cache.from_admission(
            admission.state,
            admission.generation,
            admission.allowed,
            admission.retry_after_ms,
            self.clock.monotonic(),
        )
        return self._ticket_or_refusal(admission, call_id, shared=True)

    def admit_failed(self, error: BaseException) -> Ticket | CircuitOpenError:
        """Redis did not answer the admission: decide as ``on_store_error`` says."""
        self.store_failed(error)
        return self._degraded_admission(f"{type(error).__name__}: {error}")

    def _ticket_or_refusal(
        self, admission: Admission, call_id: str, shared: bool
    ) -> Ticket | CircuitOpenError:
        if admission.allowed:
            return Ticket(call_id, admission.generation, admission.probe, shared, admission.state)
        retry_after = None if admission.retry_after_ms is None else admission.retry_after_ms / 1000
        return CircuitOpenError(self.name, admission.state, retry_after)

    def _degraded_admission(self, cause: str) -> Ticket | CircuitOpenError:
        mode = self.config.on_store_error
        if mode == "raise":
            raise StoreUnavailableError(self.name, cause)
        if mode == "fail_closed":
            retry_in = self.local.guard.retry_in(self.clock.monotonic())
            return CircuitOpenError(self.name, "open", retry_in)
        call_id = self.local.next_call_id()
        admission = self.local.shadow.admit(self.clock.wall_ms(), call_id)
        return self._ticket_or_refusal(admission, call_id, shared=False)

    # -- outcomes --------------------------------------------------------------------

    def classify(self, error: Exception) -> Verdict:
        """The breaker's classifier's verdict; a classifier that fails counts the error."""
        try:
            return as_verdict(self._classifier(error))
        except Exception:
            logger.exception("breaker %r: classifier failed; counting the error", self.name)
            return Verdict(counts=True, retryable=False)

    def after_success(self, ticket: Ticket, duration: float) -> Outcome | None:
        """The outcome to record for a call that returned (``None``: nothing to record)."""
        slow = self.config.slow_call_threshold
        if slow is not None and duration > slow:
            return "failure"
        return "success" if ticket.probe else None

    def after_error(self, ticket: Ticket, error: Exception) -> AfterError:
        """What a call that raised leads to; a rate limit holds instead of recording."""
        verdict = self.classify(error)
        if verdict.rate_limited:
            return AfterError(verdict, None, verdict.retry_after or DEFAULT_RATE_LIMIT_WAIT)
        if verdict.counts:
            return AfterError(verdict, "failure", None)
        return AfterError(verdict, "release" if ticket.probe else None, None)

    def call_id_for(self, ticket: Ticket) -> str:
        return ticket.call_id or self.local.next_call_id()

    def shares(self, ticket: Ticket) -> bool:
        """Should the outcome go to Redis (not just to the local shadow)?"""
        return ticket.shared and self.local.guard.allow(self.clock.monotonic())

    def recorded(self, change: Change) -> None:
        """Redis took an outcome or a command: learn the state it answered with."""
        self.store_answered()
        self._learn(change)

    def record_failed(
        self, error: BaseException, ticket: Ticket, call_id: str, outcome: Outcome
    ) -> None:
        self.store_failed(error)
        self.record_locally(ticket, call_id, outcome)

    def record_locally(self, ticket: Ticket, call_id: str, outcome: Outcome) -> None:
        """The outcome Redis could not take: the local shadow keeps protecting."""
        shadow = self.local.shadow
        if not ticket.shared:
            shadow.record(self.clock.wall_ms(), call_id, ticket.generation, outcome)
        elif outcome == "failure" and self.config.on_store_error == "fail_open":
            now = self.clock.wall_ms()
            shadow.record(now, call_id, shadow.snapshot(now).generation, outcome)

    def report(
        self, ticket: Ticket | None, outcome: hooks.CallOutcome, duration: float | None
    ) -> None:
        """Tell the hooks about one call (free when no hook is registered)."""
        if not hooks.active():
            return
        state = ticket.state if ticket else "open"
        shared = ticket.shared if ticket else self.local.guard.ok
        hooks.emit("on_call", hooks.CallInfo(self.name, outcome, state, duration, shared))

    # -- status and controls ---------------------------------------------------------

    def known_refusal(self) -> CircuitOpenError | None:
        """The refusal the next call would meet, from what this process already knows.

        No round trip: the last script reply or event (fresh within ``cache_ttl``), or the
        local shadow while Redis is unreachable.
        """
        local = self.local
        if not local.guard.ok:
            if self.config.on_store_error == "fail_closed":
                return CircuitOpenError(self.name, "open", None)
            snapshot = local.shadow.snapshot(self.clock.wall_ms())
            if snapshot.state == "open":
                wait = max(0, snapshot.open_until_ms - snapshot.now_ms) / 1000
                return CircuitOpenError(self.name, "open", wait)
            if snapshot.state == "forced_open":
                return CircuitOpenError(self.name, "forced_open")
            return None
        refusing = local.cache.refusing(self.clock.monotonic())
        return None if refusing is None else CircuitOpenError(self.name, *refusing)

    def status(self, snapshot: Snapshot) -> BreakerStatus:
        self.store_answered()
        return status_from_snapshot(self.name, snapshot, True)

    def status_failed(self, error: BaseException) -> BreakerStatus:
        self.store_failed(error)
        if self.config.on_store_error == "raise":
            raise StoreUnavailableError(self.name, f"{type(error).__name__}: {error}") from error
        snapshot = self.local.shadow.snapshot(self.clock.wall_ms())
        return status_from_snapshot(self.name, snapshot, False)

    def control_failed(
        self, error: BaseException, command: Command, hold_ms: int, reason: str
    ) -> StoreUnavailableError:
        """Apply a command Redis could not take locally; the caller still learns of it."""
        self.store_failed(error)
        self.local.shadow.control(self.clock.wall_ms(), command, hold_ms, reason)
        return StoreUnavailableError(self.name, f"{type(error).__name__}: {error}")

    @staticmethod
    def hold_ms(seconds: float) -> int:
        if seconds != seconds or seconds < 0:  # NaN or negative
            raise ValueError("hold_open seconds must be a non-negative number")
        return round(seconds * 1000)

    # -- the store's health ----------------------------------------------------------

    @property
    def store_ok(self) -> bool:
        return self.local.guard.ok

    def store_failed(self, error: BaseException) -> None:
        hooks.emit("on_store_error", self.name, error)
        if self.local.guard.failed(self.clock.monotonic()):
            logger.warning(
                "breaker %r: Redis unreachable (%s: %s); on_store_error=%s until it answers",
                self.name,
                type(error).__name__,
                error,
                self.config.on_store_error,
            )

    def store_answered(self) -> None:
        if self.local.guard.succeeded():
            logger.warning("breaker %r: Redis answers again; shared mode resumed", self.name)

    # -- events ----------------------------------------------------------------------

    def _learn(self, change: Change) -> None:
        self.local.cache.from_reply(
            change.state,
            change.generation,
            change.open_until_ms,
            change.now_ms,
            self.clock.monotonic(),
        )

    def wants_subscription(self) -> bool:
        """True once per process state in cached mode: the twin subscribes then."""
        if not self._cached or self.local.subscribed:
            return False
        self.local.subscribed = True
        return True

    def _shadow_event(self, event: Event) -> None:
        logger.warning(
            "breaker %r (local, Redis unreachable): %s -> %s (%s)",
            self.name,
            event.from_state,
            event.to_state,
            event.reason,
        )
        hooks.emit("on_transition", event)


class _CacheFeed:
    """The events subscriber's listener for one breaker's cache (held by its state)."""

    def __init__(self, clock: Clock, cache: LocalCache[Ticket]) -> None:
        self._clock = clock
        self._cache = cache

    def on_event(self, event: Event) -> None:
        self._cache.from_event(event, self._clock.monotonic())
        hooks.emit("on_transition", event)

    def on_reconnect(self) -> None:
        self._cache.invalidate()

    def on_disconnect(self, error: BaseException) -> None:
        """Nothing to do: ``cache_ttl`` bounds staleness until the subscriber is back."""
