"""The breaker's state machine in pure Python: no I/O, time passed in as milliseconds.

It mirrors ``lua/*.lua`` step for step. Two jobs: the local shadow breaker a worker uses
while Redis is unreachable, and the oracle the Lua scripts are property-tested against.
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


def admits_all(state: str) -> bool:
    """Closed or forced closed: every call passes."""
    return state == "closed" or state == "forced_closed"


def is_forced(state: str) -> bool:
    """A manual override (``forced_open``/``forced_closed``): only an operator ends it."""
    return state == "forced_open" or state == "forced_closed"


def refuses_all(state: str) -> bool:
    """Open or forced open: every call is refused until something changes."""
    return state == "open" or state == "forced_open"


def failures_cap(config: BreakerConfig) -> int:
    """How many failures the window keeps at most (oldest dropped first)."""
    return max(config.failure_threshold, 1000)


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
class Change:
    """The result of recording an outcome or applying a command."""

    applied: bool
    state: State
    generation: int
    open_until_ms: int
    now_ms: int


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


@dataclass(frozen=True, slots=True)
class Event:
    """One transition, as published on the events channel."""

    name: str
    from_state: State
    to_state: State
    generation: int
    at_ms: int
    reason: str
    open_until_ms: int


@dataclass
class _Data:
    state: State = "closed"
    generation: int = 0
    opened_at: int = 0
    open_until: int = 0
    probe_successes: int = 0
    failures_total: int = 0
    opens_total: int = 0
    last_failure_at: int = 0
    last_transition_at: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    probes: dict[str, int] = field(default_factory=dict)


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
        self._window = config.window_ms
        self._reset = config.reset_timeout_ms
        self._probe_timeout = config.probe_timeout_ms

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
            d.probes[call_id] = now_ms + self._probe_timeout
            return Admission(True, "half_open", d.generation, 0, True, 0)

    def record(self, now_ms: int, call_id: str, generation: int, outcome: Outcome) -> Change:
        """Twin of ``record.lua``."""
        with self._lock:
            d = self._data
            current = generation == d.generation
            if outcome == "failure":
                return self._record_failure(now_ms, call_id, current)
            if not current or d.state != "half_open" or d.probes.pop(call_id, None) is None:
                return self._change(now_ms, False)
            if outcome == "success":
                d.probe_successes += 1
                if d.probe_successes >= self.config.success_threshold:
                    d.probe_successes = 0
                    d.failures.clear()
                    d.probes.clear()
                    self._transition(now_ms, "closed", "probe_succeeded")
            return self._change(now_ms, True)

    def control(self, now_ms: int, command: Command, hold_ms: int = 0, reason: str = "") -> Change:
        """Twin of ``control.lua``."""
        with self._lock:
            d = self._data
            changed = False
            if command in ("force_open", "force_closed"):
                target: State = "forced_open" if command == "force_open" else "forced_closed"
                if d.state != target:
                    d.probe_successes = 0
                    d.probes.clear()
                    self._transition(now_ms, target, command)
                    changed = True
            elif command == "reset":
                d.failures.clear()
                d.probes.clear()
                d.probe_successes = 0
                d.open_until = 0
                if d.state != "closed":
                    self._transition(now_ms, "closed", "reset")
                changed = True
            elif command == "hold_open":
                hold_until = now_ms + max(0, hold_ms)
                text = f"hold_open: {reason}" if reason else "hold_open"
                if d.state == "open":
                    if hold_until > d.open_until:
                        d.open_until = hold_until
                        changed = True
                elif not is_forced(d.state):
                    self._open(now_ms, hold_until, text)
                    changed = True
            else:
                raise ValueError(f"unknown control command {command!r}")
            return self._change(now_ms, changed)

    def snapshot(self, now_ms: int) -> Snapshot:
        """Twin of ``status.lua``."""
        with self._lock:
            d = self._data
            return Snapshot(
                state=d.state,
                generation=d.generation,
                opened_at_ms=d.opened_at,
                open_until_ms=d.open_until,
                failure_count=self._failures_in_window(now_ms),
                failures_total=d.failures_total,
                opens_total=d.opens_total,
                last_failure_at_ms=d.last_failure_at,
                last_transition_at_ms=d.last_transition_at,
                probe_successes=d.probe_successes,
                probes_in_flight=sum(1 for v in d.probes.values() if v > now_ms),
                now_ms=now_ms,
            )

    # -- internals ------------------------------------------------------------------

    def _record_failure(self, now_ms: int, call_id: str, current: bool) -> Change:
        d = self._data
        if call_id in d.failures:
            return self._change(now_ms, False)
        d.failures[call_id] = now_ms
        floor = now_ms - self._window
        d.failures = {k: v for k, v in d.failures.items() if v > floor}
        cap = failures_cap(self.config)
        if len(d.failures) > cap:
            # ZREMRANGEBYRANK order: score, then member bytes
            ordered = sorted(d.failures.items(), key=lambda item: (item[1], item[0].encode()))
            d.failures = dict(ordered[len(ordered) - cap :])
        d.failures_total += 1
        d.last_failure_at = now_ms
        if current and d.state == "closed" and len(d.failures) >= self.config.failure_threshold:
            self._open(now_ms, now_ms + self._reset, "failure_threshold")
        elif current and d.state == "half_open":
            self._open(now_ms, now_ms + self._reset, "probe_failed")
        return self._change(now_ms, True)

    def _open(self, now_ms: int, open_until: int, reason: str) -> None:
        d = self._data
        d.opened_at = now_ms
        d.open_until = open_until
        d.probe_successes = 0
        d.probes.clear()
        d.opens_total += 1
        self._transition(now_ms, "open", reason)

    def _transition(self, now_ms: int, to: State, reason: str) -> None:
        d = self._data
        event = Event(self.name, d.state, to, d.generation + 1, now_ms, reason, d.open_until)
        d.state = to
        d.generation += 1
        d.last_transition_at = now_ms
        self.events.append(event)
        if self._on_event is not None:
            self._on_event(event)

    def _failures_in_window(self, now_ms: int) -> int:
        floor = now_ms - self._window
        return sum(1 for v in self._data.failures.values() if v > floor)

    def _change(self, now_ms: int, applied: bool) -> Change:
        d = self._data
        return Change(applied, d.state, d.generation, d.open_until, now_ms)
