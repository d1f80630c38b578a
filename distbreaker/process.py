"""What one process knows about a breaker: its clock, its copy of the state, its store back-off.

None of this is shared through Redis, and none of it survives a fork: a forked child (gunicorn,
Celery prefork) notices through ``forked_since`` and builds its own ``ProcessState``.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from distbreaker.config import BreakerConfig, reporter_name
from distbreaker.core import BreakerModel, Event, admits_all, parse_batch

T = TypeVar("T")

# Bumped in every forked child, so a breaker notices a fork without a syscall per call.
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


def fork_generation() -> int:
    """How many forks led to this process since distbreaker was imported."""
    return _fork_generation


class Clock:
    """Every time a breaker reads, from one source.

    With ``source=None`` (production) the scripts use the Redis server's ``TIME``, local
    deadlines use a monotonic clock and wall times the system clock. A test passes one
    callable (seconds) and all three follow it.
    """

    def __init__(self, source: Callable[[], float] | None = None) -> None:
        self.source = source
        self.monotonic: Callable[[], float] = time.perf_counter if source is None else source

    def server_ms(self) -> int | None:
        """``now_ms`` for the scripts: ``None`` lets Redis use its own clock."""
        return None if self.source is None else int(self.source() * 1000)

    def wall_ms(self) -> int:
        """Milliseconds since the epoch, for the local shadow breaker."""
        return int((time.time() if self.source is None else self.source()) * 1000)


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


class LocalCache(Generic[T]):
    """This process's copy of a breaker's state, fed by script replies and events.

    ``consistency="cached"`` decides from it: only closed and not-yet-due open are decided
    locally; everything else (probes, half_open, a due open, a stale copy) goes to the
    scripts. While the copy says closed it holds a ready ``closed_ticket`` (built by
    ``ticket_for``), so a healthy call allocates nothing. In both modes ``refusing``
    answers "is it known to refuse?" without a round trip.
    """

    def __init__(self, ttl: float, ticket_for: Callable[[str, int], T]) -> None:
        self.ttl = ttl
        self._ticket_for = ticket_for
        self._lock = threading.Lock()
        self.state = ""
        self.generation = -1
        self.due = 0.0
        self.fetched = float("-inf")
        self.closed_ticket: T | None = None

    def _set(self, state: str, generation: int, due: float, now: float) -> None:
        with self._lock:
            # Out-of-order news is ignored, but a stale copy takes anything: the keys may
            # have expired (generation back to 0) while this process held an old copy.
            if generation < self.generation and self.fresh(now):
                return
            ticket = self._ticket_for(state, generation) if admits_all(state) else None
            self.closed_ticket = ticket
            self.state, self.generation, self.due, self.fetched = state, generation, due, now

    def from_admission(
        self, state: str, generation: int, allowed: bool, retry_after_ms: int | None, now: float
    ) -> None:
        wait = (retry_after_ms or 0) / 1000
        if state == "half_open":
            # A refused non-probe: the probes in flight decide. Refuse locally for a while
            # instead of every caller asking the script (probes still always ask it).
            wait = 0.0 if allowed else min(wait, self.ttl)
        elif state != "open":
            wait = 0.0
        self._set(state, generation, now + wait, now)

    def from_reply(
        self, state: str, generation: int, open_until_ms: int, now_ms: int, now: float
    ) -> None:
        """A record or control reply: the state and, when open, its deadline."""
        self._set(state, generation, now + max(0, open_until_ms - now_ms) / 1000, now)

    def from_event(self, event: Event, now: float, wall_ms: int) -> None:
        """News from the events channel, which anyone who can publish can forge.

        Only refusing news is taken as it is: a forged ``open`` costs at most ``cache_ttl``
        of refusals. Any other transition just sends the next call to the script. The
        deadline of an ``open`` is anchored at the event's own time (and never beyond the
        host's clock), so a late delivery does not lengthen it.
        """
        if event.to_state not in ("open", "forced_open"):
            self.invalidate()
            return
        if event.generation <= self.generation and self.fresh(now):
            return  # nothing newer than what this process already knows
        wait = 0.0
        if event.to_state == "open":
            left = min(event.open_until_ms - event.at_ms, event.open_until_ms - wall_ms)
            wait = max(0, left) / 1000
        self._set(event.to_state, event.generation, now + wait, now)

    def invalidate(self) -> None:
        with self._lock:
            self.fetched = float("-inf")

    def fresh(self, now: float) -> bool:
        return self.fetched <= now < self.fetched + self.ttl

    def refusing(self, now: float) -> tuple[str, float | None] | None:
        """``(state, retry_after)`` while a fresh copy says every call is refused."""
        # Read without the lock: the fields are replaced together under it, and a torn
        # read can only make a decision as stale as cache_ttl allows anyway.
        if not self.fresh(now):
            return None
        state = self.state
        if state in ("open", "half_open") and now < self.due:
            return state, round(self.due - now, 3)
        if state == "forced_open":
            return state, None
        return None


class Counts:
    """This process's calls and retries in one-second buckets, until they are reported.

    ``take`` hands the batch to a report (``"age_ms:calls:retries;..."``); ``give_back``
    returns it when the report failed, so nothing is lost to one store error. Buckets older
    than ``window`` are dropped: they would be pruned by Redis anyway.
    """

    def __init__(self, window: float) -> None:
        self._window = window
        self._lock = threading.Lock()
        self._buckets: dict[int, list[int]] = {}
        self.would_refuse = 0
        self.sequence = 0
        # The hot path counts the current second's calls with list.append, which is atomic
        # under the GIL (a counter += 1 is not): no lock per healthy call.
        self._second = -1
        self._calls: list[None] = []
        self._retired: list[tuple[int, list[None]]] = []

    def add_call(self, now: float) -> None:
        if int(now) == self._second:
            self._calls.append(None)
        else:
            self._roll(int(now))

    def _roll(self, second: int) -> None:
        with self._lock:
            if second != self._second:
                # the old counter is read only when a batch is taken, a report interval
                # later, so a thread that was just incrementing it is not lost
                self._retired.append((self._second, self._calls))
                self._second, self._calls = second, []
            self._calls.append(None)

    def _collect(self) -> None:
        """Fold the retired per-second counters into the buckets (under the lock)."""
        for second, counter in self._retired:
            calls = len(counter)
            if calls:
                self._buckets.setdefault(second, [0, 0])[0] += calls
        self._retired = []

    def add_retry(self, now: float) -> None:
        with self._lock:
            self._buckets.setdefault(int(now), [0, 0])[1] += 1

    def add_would_refuse(self) -> None:
        with self._lock:
            self.would_refuse += 1

    def pending(self) -> bool:
        return bool(self._buckets or self._retired or self._calls) or self.would_refuse > 0

    def take(self, now: float, with_refusals: bool = True) -> tuple[str, int, int]:
        """The batch (counts, sequence number, would-refuse count); empties this copy.

        ``with_refusals=False`` leaves the would-refuse count for the next report (a record
        script, which carries counts along, has no place for it).
        """
        with self._lock:
            self._retired.append((self._second, self._calls))
            self._calls = []
            self._collect()
            buckets, self._buckets = self._buckets, {}
            refused = self.would_refuse if with_refusals else 0
            self.would_refuse -= refused
            self.sequence += 1
            sequence = self.sequence
        items = []
        for second, (calls, retries) in sorted(buckets.items()):
            age = now - second
            if age <= self._window:
                items.append(f"{max(0, round(age * 1000))}:{calls}:{retries}")
        return ";".join(items), sequence, refused

    def give_back(self, batch: str, refused: int, now: float) -> None:
        """A batch that did not reach Redis: merge it back (ages are relative to ``now``)."""
        with self._lock:
            self.would_refuse += refused
            for age, calls, retries in parse_batch(batch):
                bucket = self._buckets.setdefault(int(now - age / 1000), [0, 0])
                bucket[0] += calls
                bucket[1] += retries


class LocalTrip:
    """This process refusing on its own while the fleet stays closed (a lone sick reporter).

    ``open`` for ``reset_timeout``; then one probe at a time decides: success closes it,
    failure opens it again. Thread-safe; checked without the lock on the hot path.
    """

    def __init__(self, config: BreakerConfig) -> None:
        self._config = config
        self._reset = config.reset_timeout
        self._lock = threading.Lock()
        self.active = False
        self.until = 0.0
        self.probing = False
        self._seconds: dict[int, list[int]] = {}  # this process's own calls and failures

    def note(self, now: float, failed: bool) -> None:
        """One call this process made (counted only where a quorum is configured)."""
        with self._lock:
            second = self._seconds.setdefault(int(now), [0, 0])
            second[0] += 1
            second[1] += failed

    def rule_met(self, now: float) -> bool:
        """Would this process's own calls inside the window open the breaker?"""
        config = self._config
        floor = int(now - config.window)
        with self._lock:
            for second in [s for s in self._seconds if s < floor]:
                del self._seconds[second]
            calls = sum(c for c, _ in self._seconds.values())
            failures = sum(f for _, f in self._seconds.values())
        if config.failure_rate_threshold is None:
            return failures >= config.failure_threshold
        return calls >= config.minimum_calls and failures >= config.failure_rate_threshold * calls

    def open(self, now: float) -> bool:
        """Start (or restart) the local open; True when it was not open before."""
        with self._lock:
            started = not self.active
            self.active, self.until, self.probing = True, now + self._reset, False
            return started

    def close(self) -> bool:
        with self._lock:
            ended = self.active
            self.active, self.probing = False, False
            return ended

    def admit(self, now: float) -> tuple[bool, bool, float]:
        """``(allowed, probe, retry_after)`` while locally open."""
        with self._lock:
            if now < self.until:
                return False, False, round(self.until - now, 3)
            if self.probing:
                return False, False, 0.0
            self.probing = True
            return True, True, 0.0


class PendingRecords:
    """Probe outcomes Redis did not take: retried by the background upkeep once it answers,
    so one store error never keeps a probe lease (and the fleet) waiting ``probe_timeout``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[str, int, str, float]] = []

    def add(self, call_id: str, generation: int, outcome: str, expires: float) -> None:
        with self._lock:
            self._items.append((call_id, generation, outcome, expires))

    def take(self, now: float) -> list[tuple[str, int, str]]:
        """The outcomes still worth sending (leases past their expiry free themselves)."""
        with self._lock:
            items, self._items = self._items, []
        return [(c, g, o) for c, g, o, expires in items if now < expires]

    def __bool__(self) -> bool:
        return bool(self._items)


class ProcessState(Generic[T]):
    """Everything about one breaker that belongs to this process alone."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        ticket_for: Callable[[str, int], T],
        on_shadow_event: Callable[[Event], None],
    ) -> None:
        self.fork_generation = _fork_generation
        host = socket.gethostname()
        self.worker_id = f"{host}:{os.getpid()}:{secrets.token_hex(4)}"
        self.reporter = reporter_name(
            config.reporter_id
            or (f"{host}:{os.getpid()}" if config.reporter_scope == "process" else host)
        )
        self._counter = itertools.count(1)
        self.guard = StoreGuard()
        self.cache = LocalCache(config.cache_ttl, ticket_for)
        # Alone, this process is its only reporter: a quorum would never let it open.
        shadow_config = config.model_copy(update={"min_reporters": 1})
        self.shadow = BreakerModel(name, shadow_config, on_event=on_shadow_event)
        self.counts = Counts(config.window)
        self.local_trip = LocalTrip(config)
        self.pending = PendingRecords()
        self.set_up = False  # subscribed and registered with the upkeep, once per process
        self.conflict_warned = False

    def forked(self) -> bool:
        """True in a child forked after this state was built: it must be rebuilt."""
        return self.fork_generation != _fork_generation

    def next_call_id(self) -> str:
        """Unique per call fleet-wide (host, pid, random, counter): a replay adds nothing."""
        return f"{self.worker_id}:{next(self._counter)}"
