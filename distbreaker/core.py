"""The breaker's state machine in pure Python: no I/O, time passed in as milliseconds.

It mirrors ``lua/*.lua`` step for step. Two jobs: the local shadow breaker a worker uses
while Redis is unreachable, and the oracle the Lua scripts are property-tested against.
(The scripts' repair of a hash written by hand has no twin here: the model's own state is
never malformed.)
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from distbreaker.config import BreakerConfig

State = Literal["closed", "open", "half_open", "forced_open", "forced_closed"]
Outcome = Literal["success", "failure", "release"]
Command = Literal["force_open", "force_closed", "reset", "hold_open"]

STATES: tuple[State, ...] = ("closed", "open", "half_open", "forced_open", "forced_closed")
# A worker's own rate-limit hold lasts at most this long; an operator's at most HOLD_MAX_MS.
WORKER_HOLD_MAX_MS = 3_600_000
HOLD_MAX_MS = 7 * 86_400_000
MAX_STREAK_STEPS = 64


def admits_all(state: str) -> bool:
    """Closed or forced closed: every call passes."""
    return state == "closed" or state == "forced_closed"


def is_forced(state: str) -> bool:
    """A manual override (``forced_open``/``forced_closed``): only an operator ends it."""
    return state == "forced_open" or state == "forced_closed"


def failures_cap(config: BreakerConfig) -> int:
    """How many failures the window keeps at most (oldest dropped first)."""
    return max(config.failure_threshold, 1000)


def open_duration_ms(config: BreakerConfig, streak: int, now_ms: int) -> int:
    """How long the ``streak``-th consecutive open lasts (``_lib.lua``'s open_duration).

    ``min(reset · multiplier^(n-1), max_reset)`` spread by ``± reset_jitter`` of itself; the
    spread is a hash of (now, streak), so every script run and this model agree on it.
    """
    duration = config.reset_timeout_ms
    multiplier = round(config.reset_timeout_multiplier * 1000)
    longest = config.max_reset_timeout_ms
    for _ in range(2, min(streak, MAX_STREAK_STEPS) + 1):
        duration = duration * multiplier // 1000
        if duration >= longest:
            break
    duration = min(duration, longest)
    jitter = round(config.reset_jitter * 1_000_000)
    if jitter > 0:
        unit = ((now_ms % 1_000_003) * 7919 + streak * 104_729) % 1_000_003
        spread = duration * jitter // 1_000_000
        duration = duration - spread + (2 * spread * unit) // 1_000_002
    return max(1, duration)


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether a call may go; ``generation`` fences its later outcome."""

    allowed: bool
    state: State
    generation: int
    retry_after_ms: int | None
    probe: bool
    open_until_ms: int


@dataclass(frozen=True, slots=True)
class Window:
    """The fleet's evidence inside the window, as a script saw it."""

    calls: int
    failures: int
    retries: int
    reporters: int


@dataclass(frozen=True, slots=True)
class Change:
    """The result of recording an outcome or applying a command.

    Record replies also carry ``local_trip`` (the rule was met by fewer than
    ``min_reporters`` reporters: this one should protect itself), the ``window`` counts,
    and ``other_config`` (another writer's settings JSON when they differ from ours).
    """

    applied: bool
    state: State
    generation: int
    open_until_ms: int
    now_ms: int
    local_trip: bool = False
    window: Window | None = None
    other_config: str = ""


@dataclass(frozen=True, slots=True)
class Report:
    """The reply to a batch of counts: the state and the fleet's window totals."""

    state: State
    generation: int
    open_until_ms: int
    now_ms: int
    window: Window


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything ``status`` reads, times in milliseconds since the epoch (0 = never)."""

    state: State
    generation: int
    opened_at_ms: int
    open_until_ms: int
    failure_count: int
    failures_total: int
    opens_total: int
    last_failure_at_ms: int
    last_transition_at_ms: int
    probe_successes: int
    probes_in_flight: int
    now_ms: int
    calls_in_window: int = 0
    rate_failures_in_window: int = 0
    retries_in_window: int = 0
    reporters_in_window: int = 0
    open_streak: int = 0
    would_refuse_total: int = 0
    reason: str = ""
    actor: str = ""
    note: str = ""
    malformed: str = ""
    config_conflict: str = ""
    config_json: str = ""
    locally_open: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    """One transition, as published on the events channel; ``actor`` and ``note`` say who
    commanded a manual one and why."""

    name: str
    from_state: State
    to_state: State
    generation: int
    at_ms: int
    reason: str
    open_until_ms: int
    actor: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One entry of a breaker's history: a transition, a manual command, a hold, a repair.

    ``failures``/``reporters`` (and with the rate rule ``calls``/``rate_failures``) are the
    evidence inside the window at that moment; ``actor`` and ``note`` come with commands.
    """

    at_ms: int
    event: str
    from_state: str
    to_state: str
    generation: int
    reason: str
    open_until_ms: int
    failures: int
    reporters: int
    calls: int | None = None
    rate_failures: int | None = None
    actor: str = ""
    note: str = ""
    id: str = ""


@dataclass
class _Data:
    state: State = "closed"
    generation: int = 0
    opened_at: int = 0
    open_until: int = 0
    probe_successes: int = 0
    streak: int = 0
    failures_total: int = 0
    opens_total: int = 0
    last_failure_at: int = 0
    last_transition_at: int = 0
    would_refuse_total: int = 0
    reason: str = ""
    actor: str = ""
    note: str = ""
    config_stored: bool = False
    failures: dict[str, int] = field(default_factory=dict)
    probes: dict[str, int] = field(default_factory=dict)
    counts: dict[tuple[str, int], int] = field(default_factory=dict)  # (c|f|r, bucket) -> n
    reporters: dict[str, int] = field(default_factory=dict)
    batches: dict[str, int] = field(default_factory=dict)  # worker -> last sequence number
    local_opens: dict[str, int] = field(default_factory=dict)  # reporter -> until (ms)


class BreakerModel:
    """One breaker's state machine, identical in behaviour to the Lua scripts.

    Every method takes ``now_ms``. A lock makes each method atomic, like a script run;
    no user code ever runs under it.
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._data = _Data()
        self._lock = threading.Lock()
        self._on_event = on_event
        self.events: deque[Event] = deque(maxlen=1000)
        self.history: deque[HistoryEntry] = deque(maxlen=1000)
        self._window = config.window_ms
        self._bucket = config.bucket_ms
        self._rate = 0
        if config.failure_rate_threshold is not None:
            self._rate = max(1, round(config.failure_rate_threshold * 1_000_000))

    # -- script twins ---------------------------------------------------------------

    def admit(self, now_ms: int, call_id: str) -> Admission:
        """Twin of ``admit.lua``."""
        with self._lock:
            d = self._data
            if d.state == "forced_open":
                return Admission(False, d.state, d.generation, None, False, 0)
            if admits_all(d.state):
                return Admission(True, d.state, d.generation, 0, False, 0)
            if d.state == "open":
                if now_ms < d.open_until:
                    return Admission(
                        False, "open", d.generation, d.open_until - now_ms, False, d.open_until
                    )
                d.probe_successes = 0
                d.probes.clear()
                self._transition(now_ms, "half_open", "reset_timeout")
            d.probes = {k: v for k, v in d.probes.items() if v > now_ms}
            if call_id in d.probes:
                return Admission(True, "half_open", d.generation, 0, True, 0)
            if len(d.probes) >= self.config.half_open_max_calls:
                first = min(d.probes.values())
                return Admission(False, "half_open", d.generation, max(0, first - now_ms), False, 0)
            d.probes[call_id] = now_ms + self.config.probe_timeout_ms
            return Admission(True, "half_open", d.generation, 0, True, 0)

    def record(
        self,
        now_ms: int,
        call_id: str,
        generation: int,
        outcome: Outcome,
        *,
        reporter: str = "",
        batch: str = "",
        worker: str = "",
        seq: int = 0,
    ) -> Change:
        """Twin of ``record.lua`` for an outcome (``hold`` is :meth:`hold`)."""
        with self._lock:
            d = self._data
            current = generation == d.generation
            d.config_stored = True
            if batch and self._claim_batch(worker, seq):
                self._apply_counts(now_ms, batch)
            if outcome == "failure":
                return self._record_failure(now_ms, call_id, current, reporter)
            if outcome == "release":  # frees the call's lease whatever the generation
                freed = d.state == "half_open" and d.probes.pop(call_id, None) is not None
                return self._reply(now_ms, freed)
            if not current or d.state != "half_open" or d.probes.pop(call_id, None) is None:
                return self._reply(now_ms, False)
            if outcome == "success":
                d.probe_successes += 1
                if d.probe_successes >= self.config.success_threshold:
                    d.probe_successes = 0
                    d.streak = 0
                    self._clear_window()
                    self._transition(now_ms, "closed", "probe_succeeded")
            return self._reply(now_ms, True)

    def hold(self, now_ms: int, hold_ms: int, reason: str = "") -> Change:
        """Twin of ``record.lua``'s ``hold``: a worker's rate-limit pause (at most an hour)."""
        with self._lock:
            d = self._data
            d.config_stored = True
            hold_until = now_ms + min(max(0, hold_ms), WORKER_HOLD_MAX_MS)
            text = f"hold_open: {reason}" if reason else "hold_open"
            changed = False
            if d.state == "open":
                if hold_until > d.open_until:
                    d.open_until = hold_until
                    d.reason = text
                    self._remember(now_ms, "hold", "open", text)
                    changed = True
            elif not is_forced(d.state):
                self._open(now_ms, hold_until, text)
                changed = True
            return self._reply(now_ms, changed)

    def report(
        self,
        now_ms: int,
        batch: str,
        worker: str,
        seq: int,
        would_refuse: int = 0,
        *,
        reporter: str = "",
        local_until_ms: int = 0,
    ) -> Report:
        """Twin of ``report.lua``: a worker's batch of counts."""
        with self._lock:
            d = self._data
            if self._claim_batch(worker, seq):
                self._apply_counts(now_ms, batch)
                d.would_refuse_total += max(0, would_refuse)
                if local_until_ms > now_ms:
                    d.local_opens[reporter] = local_until_ms
                else:
                    d.local_opens.pop(reporter, None)
            return Report(d.state, d.generation, d.open_until, now_ms, self._counts(now_ms))

    def control(
        self,
        now_ms: int,
        command: Command,
        hold_ms: int = 0,
        reason: str = "",
        actor: str = "",
    ) -> Change:
        """Twin of ``control.lua``."""
        with self._lock:
            d = self._data
            if command == "reset":
                old = d.state
                d.opened_at = d.open_until = d.probe_successes = d.streak = 0
                self._clear_window()
                if old != "closed":
                    self._transition(now_ms, "closed", "reset", actor, reason)
                else:
                    self._remember(now_ms, "command", "closed", "reset", actor, reason)
                return Change(True, d.state, d.generation, d.open_until, now_ms)
            changed = False
            if command in ("force_open", "force_closed"):
                target: State = "forced_open" if command == "force_open" else "forced_closed"
                if d.state != target:
                    d.probe_successes = 0
                    d.probes.clear()
                    self._transition(now_ms, target, command, actor, reason)
                    changed = True
                else:
                    self._remember(now_ms, "command", d.state, command, actor, reason)
            elif command == "hold_open":
                hold_until = now_ms + min(max(0, hold_ms), HOLD_MAX_MS)
                text = f"hold_open: {reason}" if reason else "hold_open"
                if is_forced(d.state):
                    why = "hold_open (a forced state wins)"
                    self._remember(now_ms, "command", d.state, why, actor, reason)
                elif d.state == "open":
                    if hold_until > d.open_until:
                        d.open_until = hold_until
                        d.reason, d.actor, d.note = text, actor, reason
                        changed = True
                    self._remember(now_ms, "command", "open", text, actor, reason)
                else:
                    self._open(now_ms, hold_until, text, actor, reason)
                    changed = True
            else:
                raise ValueError(f"unknown control command {command!r}")
            return Change(changed, d.state, d.generation, d.open_until, now_ms)

    def snapshot(self, now_ms: int) -> Snapshot:
        """Twin of ``status.lua``."""
        with self._lock:
            d = self._data
            window = self._counts(now_ms, prune=False)
            return Snapshot(
                state=d.state,
                generation=d.generation,
                opened_at_ms=min(d.opened_at, now_ms),
                open_until_ms=d.open_until,
                failure_count=self._failures_in_window(now_ms),
                failures_total=d.failures_total,
                opens_total=d.opens_total,
                last_failure_at_ms=min(d.last_failure_at, now_ms),
                last_transition_at_ms=min(d.last_transition_at, now_ms),
                probe_successes=d.probe_successes,
                probes_in_flight=sum(1 for v in d.probes.values() if v > now_ms),
                now_ms=now_ms,
                calls_in_window=window.calls,
                rate_failures_in_window=window.failures,
                retries_in_window=window.retries,
                reporters_in_window=window.reporters,
                open_streak=d.streak,
                would_refuse_total=d.would_refuse_total,
                reason=d.reason,
                actor=d.actor,
                note=d.note,
                config_json=self.config.as_json() if d.config_stored else "",
                locally_open=",".join(sorted(r for r, t in d.local_opens.items() if t > now_ms)),
            )

    # -- internals ------------------------------------------------------------------

    def _record_failure(self, now_ms: int, call_id: str, current: bool, reporter: str) -> Change:
        d = self._data
        if call_id in d.failures:
            return self._reply(now_ms, False)
        d.failures[call_id] = now_ms
        floor = now_ms - self._window
        d.failures = {k: v for k, v in d.failures.items() if v > floor}
        cap = failures_cap(self.config)
        if len(d.failures) > cap:
            # ZREMRANGEBYRANK order: score, then member bytes
            ordered = sorted(d.failures.items(), key=lambda item: (item[1], item[0].encode()))
            d.failures = dict(ordered[len(ordered) - cap :])
        bucket = now_ms - now_ms % self._bucket
        for kind in ("c", "f"):
            d.counts[(kind, bucket)] = d.counts.get((kind, bucket), 0) + 1
        d.reporters[reporter] = now_ms
        d.reporters = {k: v for k, v in d.reporters.items() if v > floor}
        d.failures_total += 1
        d.last_failure_at = now_ms
        local_trip = False
        if current and d.state == "closed":
            if self._rate:
                window = self._counts(now_ms)
                met = (
                    window.calls >= self.config.minimum_calls
                    and window.failures * 1_000_000 >= self._rate * window.calls
                )
            else:
                met = len(d.failures) >= self.config.failure_threshold
            if met and self._reporters_in_window(now_ms) >= self.config.min_reporters:
                self._open_by_evidence(
                    now_ms, "failure_rate" if self._rate else "failure_threshold"
                )
            elif met:
                local_trip = True
        elif current and d.state == "half_open":
            self._open_by_evidence(now_ms, "probe_failed")
        return self._reply(now_ms, True, local_trip)

    def _open_by_evidence(self, now_ms: int, reason: str) -> None:
        d = self._data
        d.streak += 1
        self._open(now_ms, now_ms + open_duration_ms(self.config, d.streak, now_ms), reason)

    def _open(
        self, now_ms: int, open_until: int, reason: str, actor: str = "", note: str = ""
    ) -> None:
        d = self._data
        d.opened_at = now_ms
        d.open_until = open_until
        d.probe_successes = 0
        d.probes.clear()
        d.opens_total += 1
        self._transition(now_ms, "open", reason, actor, note)

    def _transition(
        self, now_ms: int, to: State, reason: str, actor: str = "", note: str = ""
    ) -> None:
        d = self._data
        from_state = d.state
        event = Event(
            self.name, from_state, to, d.generation + 1, now_ms, reason, d.open_until, actor, note
        )
        d.state = to
        d.generation += 1
        d.last_transition_at = now_ms
        d.reason, d.actor, d.note = reason, actor, note
        d.config_stored = True
        self.events.append(event)
        self._remember(now_ms, "transition", from_state, reason, actor, note)
        if self._on_event is not None:
            self._on_event(event)

    def _remember(
        self, now_ms: int, kind: str, from_state: str, reason: str, actor: str = "", note: str = ""
    ) -> None:
        d = self._data
        calls = rate_failures = None
        if self._rate:
            window = self._counts(now_ms, prune=False)
            calls, rate_failures = window.calls, window.failures
        self.history.append(
            HistoryEntry(
                at_ms=now_ms,
                event=kind,
                from_state=from_state,
                to_state=d.state,
                generation=d.generation,
                reason=reason,
                open_until_ms=d.open_until,
                failures=self._failures_in_window(now_ms),
                reporters=self._reporters_in_window(now_ms),
                calls=calls,
                rate_failures=rate_failures,
                actor=actor,
                note=note,
            )
        )

    def _claim_batch(self, worker: str, seq: int) -> bool:
        d = self._data
        if not worker or seq <= d.batches.get(worker, 0):
            return False
        d.batches[worker] = seq
        return True

    def _apply_counts(self, now_ms: int, batch: str) -> None:
        d = self._data
        for age, calls, retries in parse_batch(batch):
            at = now_ms - min(age, self._window)
            bucket = at - at % self._bucket
            for kind, n in (("c", calls), ("r", retries)):
                if n > 0:
                    d.counts[(kind, bucket)] = d.counts.get((kind, bucket), 0) + n

    def _clear_window(self) -> None:
        d = self._data
        d.failures.clear()
        d.probes.clear()
        d.reporters.clear()
        d.counts.clear()

    def _counts(self, now_ms: int, prune: bool = True) -> Window:
        d = self._data
        floor = now_ms - self._window
        totals = {"c": 0, "f": 0, "r": 0}
        stale = []
        for (kind, start), n in d.counts.items():
            if start + self._bucket <= floor:
                stale.append((kind, start))
            else:
                totals[kind] += n
        if prune:
            for key in stale:
                del d.counts[key]
        return Window(totals["c"], totals["f"], totals["r"], self._reporters_in_window(now_ms))

    def _failures_in_window(self, now_ms: int) -> int:
        floor = now_ms - self._window
        return sum(1 for v in self._data.failures.values() if v > floor)

    def _reporters_in_window(self, now_ms: int) -> int:
        floor = now_ms - self._window
        return sum(1 for v in self._data.reporters.values() if v > floor)

    def _reply(self, now_ms: int, applied: bool, local_trip: bool = False) -> Change:
        d = self._data
        window = self._counts(now_ms)
        return Change(applied, d.state, d.generation, d.open_until, now_ms, local_trip, window, "")


def parse_batch(batch: str) -> list[tuple[int, int, int]]:
    """``"age:calls:retries;..."`` as integers (``apply_counts`` in ``_lib.lua``)."""
    parts = []
    for item in batch.split(";"):
        fields = item.split(":")
        if len(fields) == 3 and all(f.isdigit() for f in fields):
            parts.append((int(fields[0]), int(fields[1]), int(fields[2])))
    return parts
