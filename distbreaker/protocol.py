"""The per-call protocol both breaker twins run: every decision, no I/O.

``Breaker`` and ``AsyncBreaker`` ask ``CallProtocol`` what to do at each step and do only
the Redis I/O it asks for (httpx's ``BaseClient`` idea), so the twins differ only in
``await``:

    admit    decide_locally() → a Ticket, a refusal, or Ask(call_id): run admit.lua, then
             admitted(reply) — or admit_failed(error) when Redis did not answer
    call     the user's operation, timed with clock.monotonic()
    record   after_success / after_error say which outcome to record (and whether to hold
             the breaker open); shares(ticket) says whether Redis takes it, then
             recorded(reply), record_failed(error) or record_locally(...)
    upkeep   plan_upkeep() says what the background thread/task should send (a batch of
             counts, probe outcomes Redis missed, a ping while Redis is away)

While Redis is unreachable the decisions come from ``ProcessState.shadow`` (the same state
machine in pure Python) according to ``on_store_error``. With ``enforce=False`` (dry run)
every refusal becomes an admission that is counted as "would refuse".

A command Redis refuses for lack of an ACL permission (``PermissionDeniedError``) is no
outage: Redis answered. On the call path that one call is decided as ``on_store_error``
says (``"raise"`` raises the ``PermissionDeniedError``), logged once per operation, and the
next call asks Redis again: no local mode, no back-off. Controls, status and history raise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from distbreaker import hooks
from distbreaker.classify import DEFAULT_RATE_LIMIT_WAIT, Classifier, Verdict, as_verdict
from distbreaker.config import BreakerConfig
from distbreaker.core import (
    WORKER_HOLD_MAX_MS,
    Admission,
    Change,
    Command,
    Event,
    Outcome,
    Report,
    Snapshot,
    Window,
)
from distbreaker.errors import CircuitOpenError, PermissionDeniedError, StoreUnavailableError
from distbreaker.process import Clock, LocalCache, ProcessState
from distbreaker.status import BreakerStatus, status_from_snapshot
from distbreaker.store import Batch

logger = logging.getLogger("distbreaker")

HOLD_MAX = 7 * 86_400.0  # seconds: the longest hold_open an operator may ask for
PING_INTERVAL = 0.2  # seconds between background checks while Redis is away
IDLE_WAKE = 1.0  # the background upkeep looks at an idle breaker this often


@dataclass(frozen=True, slots=True)
class Ticket:
    """An admitted call: where it was admitted and in which generation.

    ``local_probe``: the one call a locally open process lets through to learn whether it
    has recovered.
    """

    call_id: str | None  # None until an outcome must be recorded (cached closed admissions)
    generation: int
    probe: bool
    shared: bool
    state: str
    local_probe: bool = False


@dataclass(frozen=True, slots=True)
class Ask:
    """Only the admit script may decide; ``call_id`` names the call (and a probe lease).

    ``asked_at`` (monotonic) anchors the reply's deadlines: a reply's "open for 30 s more"
    is counted from before the question, so the local copy never refuses past the
    server's deadline.
    """

    call_id: str
    asked_at: float


@dataclass(frozen=True, slots=True)
class AfterError:
    """What follows a failed call: hold the breaker open, record an outcome, or nothing."""

    verdict: Verdict
    outcome: Outcome | None
    hold_open: float | None


@dataclass(slots=True)
class Upkeep:
    """What the background upkeep should send now, and when to look again."""

    ping: bool = False
    records: list[tuple[str, int, str]] = field(default_factory=list)
    batch: Batch | None = None
    would_refuse: int = 0
    local_until_ms: int = 0
    wake_in: float = IDLE_WAKE


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
        self._enforce = config.enforce
        self._slow = config.slow_call_threshold
        self._quorum = config.min_reporters > 1
        # Batched reports: the rate rule needs the fleet's calls, a dry run its refusals, a
        # quorum the word of reporters open on their own.
        self.reports = config.counts_calls or not config.enforce or self._quorum
        self.fleet = Window(0, 0, 0, 0)  # the last window totals a script returned
        self._start_process()

    def _start_process(self) -> None:
        self.local = ProcessState(self.name, self.config, _closed_ticket, self._shadow_event)
        # the subscriber holds listeners weakly: this reference keeps the feed alive
        self.feed = _CacheFeed(self.clock, self.local.cache)
        self._next_report = 0.0
        self._reported_local_open = False
        self._denials_logged: set[str] = set()

    def renew(self) -> bool:
        """After a fork: a new process state; True when the twin must rebuild its store."""
        if not self.local.forked():
            return False
        self._start_process()
        return True

    @property
    def reporter(self) -> str:
        return self.local.reporter

    # -- admission -------------------------------------------------------------------

    def decide_locally(self) -> Ticket | CircuitOpenError | Ask:
        """A decision without I/O, or ``Ask``: only the script may decide."""
        local = self.local
        guard = local.guard
        if self._cached and guard.ok and not local.local_trip.active:
            now = self.clock.monotonic()
            cache = local.cache
            ticket = cache.closed_ticket
            if ticket is not None and cache.fetched <= now < cache.fetched + cache.ttl:
                return ticket
            refusing = cache.refusing(now)
            if refusing is not None:
                return self._refuse(CircuitOpenError(self.name, *refusing), cache.generation)
        if local.local_trip.active:
            decided = self._while_locally_open()
            if decided is not None:
                return decided
        if not guard.allow(self.clock.monotonic()):
            return self._degraded_admission("backing off after a store error")
        return Ask(local.next_call_id(), self.clock.monotonic())

    def _while_locally_open(self) -> Ticket | CircuitOpenError | None:
        """Locally open: the local open decides, unless only the script knows whether the
        fleet opened meanwhile (strict mode, a stale copy): then ``None``, and
        ``admitted`` decides with the script's answer."""
        local = self.local
        if not local.guard.ok:
            return self._local_admission()
        now = self.clock.monotonic()
        if not (self._cached and local.cache.fresh(now)):
            return None
        refusing = local.cache.refusing(now)
        if refusing is None:
            return self._local_admission()
        self._fleet_governs()
        return self._refuse(CircuitOpenError(self.name, *refusing), local.cache.generation)

    def admitted(self, admission: Admission, asked: Ask) -> Ticket | CircuitOpenError:
        """The admit script's answer."""
        self.store_answered()
        self.local.cache.from_admission(
            admission.state,
            admission.generation,
            admission.allowed,
            admission.retry_after_ms,
            asked.asked_at,
        )
        if self.local.local_trip.active:
            if admission.allowed and admission.state == "closed":
                return self._local_admission()  # the fleet is closed: the local open stands
            self._fleet_governs()
        return self._ticket_or_refusal(admission, asked.call_id, shared=True)

    def _fleet_governs(self) -> None:
        """The fleet's breaker left closed: a local open ends, the fleet's state decides."""
        if self.local.local_trip.close():
            self._local_event(False, "the fleet opened")

    def admit_failed(self, error: BaseException, asked: Ask) -> Ticket | CircuitOpenError:
        """Redis did not answer the admission: decide as ``on_store_error`` says.

        The script may still have run (a reply lost to a timeout) and given this call a
        probe lease nobody would return: the upkeep releases it once Redis answers.
        """
        self.store_failed(error)
        expires = self.clock.monotonic() + self.config.probe_timeout
        self.local.pending.add(asked.call_id, -1, "release", expires)
        return self._degraded_admission(f"{type(error).__name__}: {error}")

    def _ticket_or_refusal(
        self, admission: Admission, call_id: str, shared: bool
    ) -> Ticket | CircuitOpenError:
        if admission.allowed:
            return Ticket(call_id, admission.generation, admission.probe, shared, admission.state)
        retry_after = None if admission.retry_after_ms is None else admission.retry_after_ms / 1000
        refusal = CircuitOpenError(self.name, admission.state, retry_after)
        return self._refuse(refusal, admission.generation, call_id, shared)

    def _refuse(
        self,
        refusal: CircuitOpenError,
        generation: int,
        call_id: str | None = None,
        shared: bool = True,
    ) -> Ticket | CircuitOpenError:
        """A refusal, or in a dry run the admission that replaces it (counted)."""
        if self._enforce:
            return refusal
        self.local.counts.add_would_refuse()
        self.report(None, "would_refuse", None, refusal.state)
        return Ticket(call_id, generation, False, shared, refusal.state)

    def _degraded_admission(self, cause: str) -> Ticket | CircuitOpenError:
        mode = self.config.on_store_error
        if mode == "raise":
            raise StoreUnavailableError(self.name, cause)
        if mode == "fail_closed":
            retry_in = self.local.guard.retry_in(self.clock.monotonic())
            return self._refuse(CircuitOpenError(self.name, "open", retry_in), -1, shared=False)
        call_id = self.local.next_call_id()
        admission = self.local.shadow.admit(self.clock.wall_ms(), call_id)
        return self._ticket_or_refusal(admission, call_id, shared=False)

    def _local_admission(self) -> Ticket | CircuitOpenError:
        """Locally open: refuse, or let one local probe through."""
        allowed, probe, wait = self.local.local_trip.admit(self.clock.monotonic())
        generation = self.local.cache.generation
        if not allowed:
            refusal = CircuitOpenError(self.name, "open", wait, locally=True)
            return self._refuse(refusal, generation)
        call_id = self.local.next_call_id()
        return Ticket(call_id, max(0, generation), False, True, "closed", local_probe=probe)

    # -- outcomes --------------------------------------------------------------------

    def classify(self, error: Exception) -> Verdict:
        """The breaker's classifier's verdict; a classifier that fails counts the error."""
        try:
            return as_verdict(self._classifier(error))
        except Exception:
            logger.exception("breaker %r: classifier failed; counting the error", self.name)
            return Verdict(counts=True, retryable=False)

    def after_success(self, ticket: Ticket, duration: float, ended: float) -> Outcome | None:
        """The outcome to record for a call that returned (``None``: nothing to record)."""
        slow = self._slow
        failed = slow is not None and duration > slow
        if ticket.local_probe:
            self._local_probe_done(not failed, ended)
        if self._quorum:
            self.local.local_trip.note(ended, failed)
        if failed:
            return "failure"
        if self.reports:
            self.local.counts.add_call(ended)
        return "success" if ticket.probe else None

    def after_error(self, ticket: Ticket, error: Exception, ended: float) -> AfterError:
        """What a call that raised leads to; a rate limit holds instead of recording."""
        verdict = self.classify(error)
        if ticket.local_probe:
            self._local_probe_done(not verdict.counts, ended)
        if self._quorum and not verdict.rate_limited:
            self.local.local_trip.note(ended, verdict.counts)
        if verdict.rate_limited:
            wait = DEFAULT_RATE_LIMIT_WAIT if verdict.retry_after is None else verdict.retry_after
            return AfterError(verdict, None, wait)
        if verdict.counts:
            return AfterError(verdict, "failure", None)
        if self.reports:
            self.local.counts.add_call(ended)  # an answer, though not the one hoped for
        return AfterError(verdict, "release" if ticket.probe else None, None)

    def call_id_for(self, ticket: Ticket) -> str:
        return ticket.call_id or self.local.next_call_id()

    def shares(self, ticket: Ticket) -> bool:
        """Should the outcome go to Redis (not just to the local shadow)?"""
        return ticket.shared and self.local.guard.allow(self.clock.monotonic())

    def batch_for_record(self, outcome: Outcome) -> Batch | None:
        """A failure carries this process's counts along, so its view is current."""
        if outcome != "failure" or not self.reports or not self.local.counts.pending():
            return None
        counts, sequence, _ = self.local.counts.take(self.clock.monotonic(), with_refusals=False)
        return counts, self.local.worker_id, sequence

    def recorded(self, change: Change, asked_at: float) -> None:
        """Redis took an outcome or a command (asked at ``asked_at``, monotonic): learn the
        state it answered with."""
        self.store_answered()
        self._learn(change, asked_at)
        if change.window is not None:
            self.fleet = change.window
        if change.other_config:
            self._warn_conflict(change.other_config)
        if self._quorum and change.window is not None:
            self._judge_locally(change)

    def record_failed(
        self,
        error: BaseException,
        ticket: Ticket,
        call_id: str,
        outcome: Outcome,
        batch: Batch | None = None,
    ) -> None:
        self.store_failed(error)
        if batch is not None:
            self.local.counts.give_back(batch[0], 0, self.clock.monotonic())
        self.record_locally(ticket, call_id, outcome)

    def record_locally(self, ticket: Ticket, call_id: str, outcome: Outcome) -> None:
        """The outcome Redis could not take (it failed, or is being backed off from): the
        local shadow keeps protecting, and a shared probe's outcome waits for the upkeep,
        since its lease would otherwise block the fleet until probe_timeout."""
        if ticket.probe and ticket.shared:
            expires = self.clock.monotonic() + self.config.probe_timeout
            self.local.pending.add(call_id, ticket.generation, outcome, expires)
        shadow = self.local.shadow
        reporter = self.local.reporter
        if not ticket.shared:
            shadow.record(
                self.clock.wall_ms(), call_id, ticket.generation, outcome, reporter=reporter
            )
        elif outcome == "failure" and self.config.on_store_error == "fail_open":
            now = self.clock.wall_ms()
            generation = shadow.snapshot(now).generation
            shadow.record(now, call_id, generation, outcome, reporter=reporter)

    def report(
        self,
        ticket: Ticket | None,
        outcome: hooks.CallOutcome,
        duration: float | None,
        state: str | None = None,
    ) -> None:
        """Tell the hooks about one call (free when no hook is registered)."""
        if not hooks.active():
            return
        shown = state or (ticket.state if ticket else "open")
        shared = ticket.shared if ticket else self.local.guard.ok
        probe, generation = (ticket.probe, ticket.generation) if ticket else (False, -1)
        info = hooks.CallInfo(self.name, outcome, shown, duration, shared, probe, generation)
        hooks.emit("on_call", info)

    # -- the lone sick reporter --------------------------------------------------------

    def _judge_locally(self, change: Change) -> None:
        """Open locally when this process's evidence would open the breaker but the fleet,
        short of a quorum of reporters, stays closed; end it when the fleet opens."""
        trip = self.local.local_trip
        now = self.clock.monotonic()
        if change.state != "closed":
            self._fleet_governs()
            return
        # this process's own calls would open the breaker, but too few reporters fail
        # for the fleet to open: the sick reporter protects itself alone
        window = change.window
        short = window is not None and window.reporters < self.config.min_reporters
        if short and trip.rule_met(now) and trip.open(now):
            self._local_event(True, "too few reporters for the fleet")

    def _local_probe_done(self, succeeded: bool, now: float) -> None:
        trip = self.local.local_trip
        if succeeded:
            if trip.close():
                self._local_event(False, "probe succeeded")
        else:
            trip.open(now)

    def _local_event(self, opened: bool, reason: str) -> None:
        kind = "local_open" if opened else "local_closed"
        logger.warning(
            "breaker %r: %s on reporter %r (%s)", self.name, kind, self.local.reporter, reason
        )
        event = Event(
            self.name,
            "closed" if opened else "open",
            "open" if opened else "closed",
            max(0, self.local.cache.generation),
            self.clock.wall_ms(),
            kind,
            0,
        )
        hooks.emit("on_transition", event)

    @property
    def locally_open(self) -> bool:
        return self.local.local_trip.active

    # -- status and controls ---------------------------------------------------------

    def known_refusal(self) -> CircuitOpenError | None:
        """The refusal the next call would meet, from what this process already knows.

        No round trip: the last script reply or event (fresh within ``cache_ttl``), a local
        open, or the local shadow while Redis is unreachable. Always ``None`` in a dry run.
        """
        if not self._enforce:
            return None
        local = self.local
        now = self.clock.monotonic()
        if local.local_trip.active and now < local.local_trip.until:
            return CircuitOpenError(self.name, "open", round(local.local_trip.until - now, 3))
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
        refusing = local.cache.refusing(now)
        return None if refusing is None else CircuitOpenError(self.name, *refusing)

    def may_ask_status(self) -> bool:
        """Ask Redis for the status? Not while backing off: a health check that polls
        ``status()`` must neither wait for a dead Redis nor stretch the back-off."""
        return self.local.guard.allow(self.clock.monotonic())

    def status(self, snapshot: Snapshot) -> BreakerStatus:
        self.store_answered()
        return status_from_snapshot(self.name, snapshot, True, self.config, self.locally_open)

    def status_failed(self, error: BaseException | None) -> BreakerStatus:
        """The shadow's status (Redis failed just now, or is being backed off from)."""
        if error is not None:
            self.store_failed(error)
        if self.config.on_store_error == "raise":
            cause = "backing off after a store error" if error is None else str(error)
            raise StoreUnavailableError(self.name, cause) from error
        snapshot = self.local.shadow.snapshot(self.clock.wall_ms())
        return status_from_snapshot(self.name, snapshot, False, self.config, self.locally_open)

    def control_failed(
        self, error: BaseException, command: Command, hold_ms: int, reason: str, actor: str
    ) -> StoreUnavailableError:
        """Apply a command Redis could not take locally; the caller still learns of it."""
        self.store_failed(error)
        self.local.shadow.control(self.clock.wall_ms(), command, hold_ms, reason, actor)
        return StoreUnavailableError(self.name, f"{type(error).__name__}: {error}")

    def hold_failed(self, error: BaseException, hold_ms: int, reason: str) -> None:
        """A worker's hold Redis could not take: the local shadow holds instead."""
        self.store_failed(error)
        self.local.shadow.hold(self.clock.wall_ms(), hold_ms, reason)

    @staticmethod
    def hold_ms(seconds: float) -> int:
        """``seconds`` checked (a finite number in [0, 7 days]) and in milliseconds."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError("hold_open seconds must be a number")
        if not 0 <= seconds <= HOLD_MAX:  # also refuses NaN and infinities
            raise ValueError(f"hold_open seconds must be between 0 and {HOLD_MAX:g} (7 days)")
        return round(seconds * 1000)

    @staticmethod
    def worker_hold_ms(seconds: float) -> int:
        """A rate-limit pause in milliseconds; never raises (a bad value means the default)."""
        if not 0 <= seconds <= WORKER_HOLD_MAX_MS / 1000:  # NaN, negative or too long
            seconds = WORKER_HOLD_MAX_MS / 1000 if seconds > 0 else DEFAULT_RATE_LIMIT_WAIT
        return round(seconds * 1000)

    @staticmethod
    def is_worker_hold(hold_ms: int, actor: str | None) -> bool:
        """A worker's own pause (no actor, at most an hour) goes through ``record.lua``,
        which a worker's Redis user may run; anything else is an operator command."""
        return actor is None and hold_ms <= WORKER_HOLD_MAX_MS

    # -- background upkeep -----------------------------------------------------------

    def plan_upkeep(self, final: bool = False) -> Upkeep:
        """What the background thread/task should do for this breaker now."""
        local = self.local
        now = self.clock.monotonic()
        plan = Upkeep()
        if not local.guard.ok:
            plan.ping = True
            plan.wake_in = PING_INTERVAL
            return plan
        if local.pending:
            plan.records = local.pending.take(now)
        trip = local.local_trip
        local_open = trip.active
        due = final or now >= self._next_report
        changed = local_open != self._reported_local_open
        if self.reports and (changed or (due and (local.counts.pending() or local_open))):
            plan.batch, plan.would_refuse = self._take_batch()
            if local_open:
                # shown for a few reports past its deadline: refreshed while it lasts
                ahead = max(trip.until - now, 0.0) + 4 * self.config.report_interval
                plan.local_until_ms = self.clock.wall_ms() + round(ahead * 1000)
            self._reported_local_open = local_open
            self._next_report = now + self.config.report_interval
        if self.reports:
            plan.wake_in = max(0.001, min(IDLE_WAKE, self._next_report - now))
        return plan

    def _take_batch(self) -> tuple[Batch, int]:
        counts, sequence, refused = self.local.counts.take(self.clock.monotonic())
        return (counts, self.local.worker_id, sequence), refused

    def pinged(self) -> None:
        """Redis answered the background check: shared mode resumes at once."""
        self.store_answered()

    def upkeep_failed(self, error: BaseException, plan: Upkeep) -> None:
        """Nothing of ``plan`` is lost: counts go back, probe outcomes wait again. A failed
        ping changes nothing: the call path's back-off already runs."""
        if plan.ping:
            return
        self.store_failed(error)
        now = self.clock.monotonic()
        if plan.batch is not None:
            self.local.counts.give_back(plan.batch[0], plan.would_refuse, now)
            self._reported_local_open = not self.local.local_trip.active  # send it again
        for call_id, generation, outcome in plan.records:
            self.local.pending.add(call_id, generation, outcome, now + self.config.probe_timeout)

    def reported(self, report: Report, asked_at: float) -> None:
        self.store_answered()
        self.fleet = report.window
        self.local.cache.from_reply(
            report.state,
            report.generation,
            report.open_until_ms,
            report.now_ms,
            asked_at,
        )

    # -- refused by Redis's ACL ---------------------------------------------------------

    def denied(self, error: PermissionDeniedError, consequence: str) -> None:
        """Redis answered but refused (an ACL): no outage, so neither local mode nor a
        back-off; one error line per refused operation and process."""
        self.store_answered()
        if error.operation in self._denials_logged:
            return
        self._denials_logged.add(error.operation)
        logger.error("breaker %r: %s; %s", self.name, error, consequence)

    def admit_denied(self, error: PermissionDeniedError) -> Ticket | CircuitOpenError:
        """The admission Redis refused: this call as ``on_store_error`` says."""
        mode = self.config.on_store_error
        self.denied(error, f"each such call is decided by this process alone ({mode})")
        if mode == "raise":
            raise error
        return self._degraded_admission(str(error))

    def record_denied(
        self,
        error: PermissionDeniedError,
        ticket: Ticket,
        call_id: str,
        outcome: Outcome,
        batch: Batch | None = None,
    ) -> None:
        """The outcome Redis refused stays with the local shadow (and the counts here)."""
        self.denied(error, "outcomes stay in this process")
        if batch is not None:
            self.local.counts.give_back(batch[0], 0, self.clock.monotonic())
        self.record_locally(ticket, call_id, outcome)

    def hold_denied(self, error: PermissionDeniedError, hold_ms: int, reason: str) -> None:
        """A worker's hold Redis refused: the local shadow keeps it (it decides the calls
        whose admission Redis refuses too)."""
        self.denied(error, "rate-limit holds stay with this process's local shadow")
        self.local.shadow.hold(self.clock.wall_ms(), hold_ms, reason)

    def upkeep_denied(self, error: PermissionDeniedError, plan: Upkeep) -> None:
        """Like ``upkeep_failed``, but Redis answered: nothing is backed off. Counts wait
        for the next report (only a window's worth is kept); probe outcomes are tried again
        at the next upkeep until their leases would have expired (a refusal may be lifted:
        an operator loads the scripts, fixes the ACL)."""
        self.denied(error, "call counts stay in this process")
        now = self.clock.monotonic()
        if plan.batch is not None:
            self.local.counts.give_back(plan.batch[0], plan.would_refuse, now)
        for call_id, generation, outcome in plan.records:
            self.local.pending.add(call_id, generation, outcome, now + self.config.probe_timeout)

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
            hooks.emit("on_store_recovered", self.name)

    # -- events ----------------------------------------------------------------------

    def _learn(self, change: Change, asked_at: float) -> None:
        self.local.cache.from_reply(
            change.state, change.generation, change.open_until_ms, change.now_ms, asked_at
        )

    def _warn_conflict(self, other: str) -> None:
        if self.local.conflict_warned:
            return
        self.local.conflict_warned = True
        logger.warning(
            "breaker %r: another process uses other settings for this breaker: %s; "
            "this process uses %s. Each process's own settings judge its own calls, so the "
            "strictest one trips the breaker for all; give every process the same settings",
            self.name,
            other[:500],
            self.config.as_json(),
        )

    @property
    def subscribes(self) -> bool:
        """Whether this breaker listens to the events channel (cached mode, or a quorum)."""
        return self._cached or self._quorum

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
    """The events subscriber's listener for one breaker (held by its process state)."""

    def __init__(self, clock: Clock, cache: LocalCache[Ticket]) -> None:
        self._clock = clock
        self._cache = cache

    def on_event(self, event: Event) -> None:
        self._cache.from_event(event, self._clock.monotonic(), self._clock.wall_ms())
        hooks.emit("on_transition", event)

    def on_reconnect(self) -> None:
        self._cache.invalidate()

    def on_disconnect(self, error: BaseException) -> None:
        """Nothing to do: ``cache_ttl`` bounds staleness until the subscriber is back."""
