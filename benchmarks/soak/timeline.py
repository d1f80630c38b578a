"""What a soak run records: plain records, written as JSON lines and read back by the checker.

Every time is ``time.monotonic()`` seconds. On Linux that is ``CLOCK_MONOTONIC``, one clock
for every process on the machine, so the parent's fault times and the workers' call times
can be compared directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

# CallInfo outcomes that the breaker records as a failure in Redis.
FAILURE_OUTCOMES = frozenset({"failure", "slow"})
# The one distbreaker exception a caller may see with on_store_error="fail_open".
DOCUMENTED_ERRORS = frozenset({"CircuitOpenError"})


@dataclass(frozen=True, slots=True)
class Call:
    """One ``breaker.execute`` in a worker, with what the hooks said about it.

    ``op_started``/``op_ended`` bracket the user's operation (``None``: it never ran).
    ``outcome``/``state``/``shared`` come from the ``on_call`` hook (``None``: no hook call,
    the call crashed inside distbreaker). ``error`` is the type of the exception that
    reached the caller, ``own_error`` whether it is the very object the operation raised.
    ``store_ok_after_op``/``store_ok_at_end`` are ``breaker.store_ok`` read when the
    operation returned and when ``execute`` did.
    """

    worker: int
    thread: int
    phase: int
    mode: str
    started: float
    ended: float
    op_started: float | None = None
    op_ended: float | None = None
    store_ok_after_op: bool | None = None
    store_ok_at_end: bool = True
    outcome: str | None = None
    state: str | None = None
    shared: bool | None = None
    error: str | None = None
    own_error: bool = False
    message: str = ""

    @property
    def admitted(self) -> bool:
        return self.op_started is not None

    @property
    def sent_failure(self) -> bool:
        """A failure the breaker reported as recorded through Redis (a shared ticket)."""
        return bool(self.shared) and self.outcome in FAILURE_OUTCOMES

    @property
    def may_have_sent_failure(self) -> bool:
        """Redis may hold a failure for it: a shared failure, or a crash after the op ran."""
        if self.op_started is None:
            return False
        return self.sent_failure or self.outcome is None

    @property
    def shared_decision(self) -> bool:
        """Decided from Redis (or the cached copy of it), not by the local shadow or a crash."""
        return self.outcome is not None and bool(self.shared)

    @property
    def foreign_error(self) -> bool:
        """An exception reached the caller that is neither the user's own nor documented."""
        return self.error is not None and not self.own_error and self.error not in DOCUMENTED_ERRORS

    @property
    def added_latency(self) -> float:
        """Time spent in distbreaker: the whole call minus the user's operation."""
        inside = 0.0
        if self.op_started is not None and self.op_ended is not None:
            inside = self.op_ended - self.op_started
        return max(0.0, self.ended - self.started - inside)


@dataclass(frozen=True, slots=True)
class StatusPoll:
    """One ``breaker.status()`` from a worker's health thread."""

    worker: int
    phase: int
    mode: str
    started: float
    ended: float
    store_ok: bool | None = None
    state: str | None = None
    error: str | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class StoreError:
    """One ``on_store_error`` hook call (any thread of the worker, calls and status alike)."""

    worker: int
    phase: int
    mode: str
    at: float
    error: str


@dataclass(frozen=True, slots=True)
class Sample:
    """The parent's read of a breaker's counters (``None``: missing from the run or garbage).

    ``accountable`` is False when, since the previous sample of the same breaker, Redis lost
    its data or the hash was overwritten: the counts of that span prove nothing.
    """

    phase: int
    mode: str
    before: float
    after: float
    epoch: int
    failures_total: int | None
    generation: int | None
    accountable: bool = True


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """One message on the events channel, as the parent's recorder received it."""

    received: float
    connection: int
    name: str
    from_state: str
    to_state: str
    generation: int


@dataclass(frozen=True, slots=True)
class RecorderConnection:
    """One subscription of the recorder.

    Every message published after ``opened`` and before the server answered the PING sent
    at ``covered_until`` was delivered on it. ``run_id`` names the server process (``None``:
    a restart happened while it subscribed, so its messages are not attributed).
    """

    index: int
    opened: float
    covered_until: float
    run_id: str | None


@dataclass(frozen=True, slots=True)
class KeyTTL:
    """One key under the run's prefix and its ``PTTL`` (-1: no TTL)."""

    phase: int
    key: str
    pttl: int
    at: float


@dataclass(frozen=True, slots=True)
class Phase:
    """One fault's stretch of the run, with the times things really happened.

    ``fault_started``/``fault_ended``: the fault's first action and the moment the store was
    healthy again. ``lease_losses``: instants at which Redis lost probe leases (data wiped);
    ``blind_from``: from then on the hash was overwritten, so probe leases are unknowable.
    ``outages``: spans in which the upstream was (possibly) failing.
    """

    index: int
    round: int
    fault: str
    started: float
    fault_started: float
    fault_ended: float
    ended: float
    names: dict[str, str] = field(default_factory=dict)
    lease_losses: tuple[float, ...] = ()
    blind_from: float | None = None
    outages: tuple[tuple[float, float], ...] = ()
    notes: tuple[str, ...] = ()


RECORDS: dict[str, type[Any]] = {
    "call": Call,
    "status": StatusPoll,
    "store_error": StoreError,
}


def to_line(record: Any) -> str:
    kind = next(name for name, cls in RECORDS.items() if isinstance(record, cls))
    return json.dumps({"kind": kind, **asdict(record)}, separators=(",", ":"))


def write_records(path: Path, records: Iterable[Any]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(to_line(record))
            out.write("\n")


def read_records(path: Path) -> Iterator[Any]:
    """Records back from a worker's file, as their dataclasses."""
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            raw = json.loads(line)
            cls = RECORDS[raw.pop("kind")]
            names = {f.name for f in fields(cls)}
            yield cls(**{k: v for k, v in raw.items() if k in names})
