"""The invariants, as pure functions over a recorded run. Each is built to raise no false alarm.

- **Records**: between two samples of a breaker's ``failures_total``, every failure a
  worker sent through Redis (``CallInfo.shared``) whose whole record step lies inside the
  span is counted, unless that record met a store error or was skipped by the back-off
  (``store_ok`` false at the operation's end or the call's, or a store error in the worker
  meanwhile): those are *excused* losses, counted. The count may not grow by more than
  the calls that could have sent a failure.
- **Events**: each generation between two samples (a transition each) has exactly one event.
  A missing one is lost only if one recorder connection provably listened from before to
  after its publication (it delivered an earlier and a later event, or was subscribed
  before the first sample and answered a PING sent after the second).
- **Probes**: at no instant more than ``half_open_max_calls`` operations run that were
  admitted as shared half-open probes. A lease counts from the operation's start until
  its end, cut at any instant Redis lost its data and at the *lease horizon* after the
  call began: ``min(reset_timeout, probe_timeout)``, since a reopen by another probe's
  failure revokes every lease and the next half-open admits new probes no sooner than
  ``reset_timeout`` later. From the first garbage write on, probes are not counted.
- **Exceptions**: nothing reaches a caller but its own exception or ``CircuitOpenError``;
  ``status()`` raises nothing.
- **Latency**: no call spends longer in distbreaker than the bound.
- **Refusals**: while the upstream is healthy the fleet refuses for no longer than the bound:
  the longest stretch with refused calls and no admitted one, counted from the upstream's
  return or from the last error an operation raised, whichever is later. (A probe lease
  that nobody will release keeps the fleet refusing until ``probe_timeout``.)
- **Resume**: per worker, the time from the fault's end to the first shared decision after
  its last local (or crashed) one; no later than the bound.
- **TTL**: every key under the prefix carries a TTL.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from benchmarks.soak.timeline import (
    Call,
    KeyTTL,
    Phase,
    ReceivedEvent,
    RecorderConnection,
    Sample,
    StatusPoll,
    StoreError,
)


@dataclass(frozen=True, slots=True)
class Bounds:
    """The limits the verdict applies (seconds)."""

    half_open_max_calls: int
    lease_horizon: float  # min(reset_timeout, probe_timeout): see the module doc
    resume: float = 1.0
    added_latency: float = 1.25
    refusal: float = 2.4


@dataclass
class Run:
    """Everything recorded in one soak run."""

    phases: list[Phase]
    calls: list[Call]
    polls: list[StatusPoll]
    store_errors: list[StoreError]
    samples: list[Sample]
    events: list[ReceivedEvent]
    connections: list[RecorderConnection]
    epochs: dict[str, int]
    keys: list[KeyTTL]
    bounds: Bounds


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: str  # the short name shown in the verdict column
    detail: str


@dataclass(frozen=True, slots=True)
class Records:
    """Failure accounting of one breaker over its accountable spans."""

    sent: int = 0  # failures sent through Redis, record step inside an accountable span
    lost_low: int = 0  # of those, missing from failures_total: at least ...
    lost_high: int = 0  # ... and at most (differs only when records straddle a sample)
    excused: int = 0  # sent while a store error or the back-off stood in the way
    unexcused: int = 0  # missing although their record met no store trouble
    excess: int = 0  # counted by Redis beyond what could have been sent
    unaccounted: int = 0  # sent in spans where Redis lost or garbled its counters


@dataclass(frozen=True, slots=True)
class Events:
    transitions: int = 0
    duplicates: int = 0
    lost: int = 0
    excused: int = 0  # missing while the recorder was (possibly) not listening
    backwards: tuple[tuple[int, int], ...] = ()  # generation fell with no wipe: (from, to)


@dataclass
class Row:
    """One phase and consistency mode: the figures and what they violate."""

    phase: int
    round: int
    fault: str
    mode: str
    calls: int = 0
    records: Records = field(default_factory=Records)
    events: Events = field(default_factory=Events)
    max_probes: int = 0
    worst_added: float = 0.0
    longest_refusal: float = 0.0  # while the upstream was healthy
    resume: float | None = 0.0  # None: some worker never resumed shared mode
    resume_window: float = 0.0  # how long after the fault's end the phase ran
    violations: list[Violation] = field(default_factory=list)


# -- records -------------------------------------------------------------------------


def spans(samples: Sequence[Sample]) -> list[tuple[Sample, Sample, bool]]:
    """Consecutive samples of one breaker, and whether the span between proves anything."""
    ordered = sorted(samples, key=lambda s: s.before)
    result = []
    for first, second in itertools.pairwise(ordered):
        numeric = None not in (first.failures_total, second.failures_total)
        numeric = numeric and None not in (first.generation, second.generation)
        accountable = second.accountable and first.epoch == second.epoch and numeric
        result.append((first, second, accountable))
    return result


class StoreTrouble:
    """Store errors per worker, phase and mode, for "did the record step meet one?"."""

    def __init__(self, errors: Iterable[StoreError]) -> None:
        times: dict[tuple[int, int, str], list[float]] = defaultdict(list)
        for error in errors:
            times[(error.worker, error.phase, error.mode)].append(error.at)
        self._times = {key: sorted(values) for key, values in times.items()}

    def between(self, worker: int, phase: int, mode: str, start: float, end: float) -> bool:
        times = self._times.get((worker, phase, mode), [])
        index = bisect.bisect_left(times, start)
        return index < len(times) and times[index] <= end

    def clean_record(self, call: Call) -> bool:
        """The call's record step met no store error and no back-off: it must be counted."""
        if call.op_ended is None or not call.store_ok_after_op or not call.store_ok_at_end:
            return False
        return not self.between(call.worker, call.phase, call.mode, call.op_ended, call.ended)


def account_records(
    calls: Sequence[Call], samples: Sequence[Sample], trouble: StoreTrouble
) -> Records:
    """Failures sent versus failures Redis counted, span by span (see the module doc)."""
    sent_total = lost_low = lost_high = excused = unexcused = excess = unaccounted = 0
    candidates = [c for c in calls if c.may_have_sent_failure and c.op_ended is not None]
    for first, second, accountable in spans(samples):
        inside = [c for c in candidates if c.sent_failure and _inside(c, first, second)]
        if not accountable:
            unaccounted += len(inside)
            continue
        possible = [c for c in candidates if _touches(c, first, second)]
        delta = int(second.failures_total or 0) - int(first.failures_total or 0)
        clean = sum(1 for c in inside if trouble.clean_record(c))
        others = len(possible) - len(inside)
        sent_total += len(inside)
        lost_low += len(inside) - min(len(inside), max(0, delta))
        lost_high += len(inside) - min(len(inside), max(0, delta - others))
        excused += len(inside) - clean
        unexcused += max(0, clean - delta)
        excess += max(0, delta - len(possible))
    return Records(sent_total, lost_low, lost_high, excused, unexcused, excess, unaccounted)


def _inside(call: Call, first: Sample, second: Sample) -> bool:
    """The record step ran wholly after the first sample was read and before the second."""
    assert call.op_ended is not None
    return first.after < call.op_ended and call.ended < second.before


def _touches(call: Call, first: Sample, second: Sample) -> bool:
    """The record step may have run between the two reads."""
    assert call.op_ended is not None
    return call.ended > first.before and call.op_ended < second.after


# -- events --------------------------------------------------------------------------


def account_events(
    samples: Sequence[Sample],
    events: Sequence[ReceivedEvent],
    connections: Sequence[RecorderConnection],
    epochs: dict[str, int],
    blind_from: float | None = None,
) -> Events:
    """One event per generation in every accountable span of one breaker.

    After ``blind_from`` (the hash overwritten) a repair may reuse generation numbers, so
    events received from then on prove a transition happened but are never duplicates.
    """
    by_index = {c.index: c for c in connections}
    received: dict[tuple[int, int], list[ReceivedEvent]] = defaultdict(list)
    for event in events:
        connection = by_index.get(event.connection)
        if connection is None or connection.run_id not in epochs:
            continue
        received[(epochs[connection.run_id], event.generation)].append(event)
    duplicates = 0
    for group in received.values():
        before = [e for e in group if blind_from is None or e.received < blind_from]
        duplicates += max(0, len(before) - 1)
    transitions = lost = excused = 0
    backwards: list[tuple[int, int]] = []
    for first, second, accountable in spans(samples):
        if not accountable:
            continue
        low, high = int(first.generation or 0), int(second.generation or 0)
        if high < low:
            backwards.append((low, high))
            continue
        transitions += high - low
        for generation in range(low + 1, high + 1):
            if (second.epoch, generation) in received:
                continue
            proof = _must_have_received(
                second.epoch, generation, first, second, received, connections, epochs
            )
            if proof:
                lost += 1
            else:
                excused += 1
    return Events(transitions, duplicates, lost, excused, tuple(backwards))


def _must_have_received(
    epoch: int,
    generation: int,
    first: Sample,
    second: Sample,
    received: dict[tuple[int, int], list[ReceivedEvent]],
    connections: Sequence[RecorderConnection],
    epochs: dict[str, int],
) -> bool:
    """Whether one connection provably listened over the whole span the event was sent in."""
    mine = sorted(g for e, g in received if e == epoch)
    position = bisect.bisect_left(mine, generation)
    earlier = received[(epoch, mine[position - 1])][0] if position > 0 else None
    later = received[(epoch, mine[position])][0] if position < len(mine) else None
    for connection in connections:
        if connection.run_id is None or epochs.get(connection.run_id) != epoch:
            continue
        if earlier is not None:
            listened_before = earlier.connection == connection.index
        else:
            listened_before = connection.opened <= first.before
        if later is not None:
            listened_after = later.connection == connection.index
        else:
            listened_after = connection.covered_until >= second.after
        if listened_before and listened_after:
            return True
    return False


# -- probes, exceptions, latency, resume, keys -----------------------------------------


def max_probes(calls: Iterable[Call], phase: Phase, lease_horizon: float) -> int:
    """The most operations that ran at once as shared half-open probes (see the module doc)."""
    edges: list[tuple[float, int]] = []
    for call in calls:
        if not (call.shared and call.state == "half_open" and call.outcome != "refused"):
            continue
        if call.op_started is None or call.op_ended is None:
            continue
        start, end = call.op_started, min(call.op_ended, call.started + lease_horizon)
        if phase.blind_from is not None:
            if start >= phase.blind_from:
                continue
            end = min(end, phase.blind_from)
        for lost in phase.lease_losses:
            if start < lost:
                end = min(end, lost)
        if end > start:
            edges += [(start, 1), (end, -1)]
    edges.sort()  # at equal times an end (-1) comes first: touching is not overlapping
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def healthy_spans(phase: Phase) -> list[tuple[float, float]]:
    """The parts of the phase in which the upstream answered every request."""
    spans_, start = [], phase.started
    for down, up in sorted(phase.outages):
        if down > start:
            spans_.append((start, min(down, phase.ended)))
        start = max(start, up)
    if start < phase.ended:
        spans_.append((start, phase.ended))
    return spans_


def longest_refusal(calls: Sequence[Call], phase: Phase) -> float:
    """The longest refusal of a healthy upstream (see the module doc)."""
    admitted = [c.op_started for c in calls if c.op_started is not None]
    failed = [c.op_ended for c in calls if c.own_error and c.op_ended is not None]
    refused = sorted(c.started for c in calls if c.outcome == "refused")
    longest = 0.0
    for start, end in healthy_spans(phase):
        marks = sorted({start, *(t for t in [*admitted, *failed] if start < t <= end), end})
        for since, until in itertools.pairwise(marks):
            first = bisect.bisect_right(refused, since)
            if first < len(refused) and refused[first] < until:
                longest = max(longest, until - since)
    return longest


def foreign_errors(calls: Iterable[Call], polls: Iterable[StatusPoll]) -> Counter[str]:
    """Exceptions that reached callers and are neither theirs nor documented, by kind."""
    found: Counter[str] = Counter()
    for call in calls:
        if call.foreign_error:
            found[f"{call.error} ({call.message})" if call.message else str(call.error)] += 1
    for poll in polls:
        if poll.error is not None:
            found[f"status() raised {poll.error} ({poll.message})"] += 1
    return found


def slowest(calls: Iterable[Call]) -> Call | None:
    return max(calls, key=lambda c: c.added_latency, default=None)


def resume_times(calls: Iterable[Call], fault_ended: float) -> dict[int, float | None]:
    """Per worker: seconds from the fault's end to shared decisions for good (None: never)."""
    by_worker: dict[int, list[Call]] = defaultdict(list)
    for call in calls:
        by_worker[call.worker].append(call)
    result: dict[int, float | None] = {}
    for worker, own in sorted(by_worker.items()):
        after = sorted((c for c in own if c.started >= fault_ended), key=lambda c: c.started)
        local = [n for n, c in enumerate(after) if not c.shared_decision]
        if not after:
            result[worker] = None
        elif not local:
            result[worker] = 0.0
        elif local[-1] + 1 < len(after):
            result[worker] = after[local[-1] + 1].started - fault_ended
        else:
            result[worker] = None
    return result


def keys_without_ttl(keys: Iterable[KeyTTL]) -> list[str]:
    return sorted({k.key for k in keys if k.pttl == -1})


# -- the verdict -----------------------------------------------------------------------


def check(run: Run) -> list[Row]:
    """One row per phase and mode, with its violations."""
    trouble = StoreTrouble(run.store_errors)
    calls: dict[tuple[int, str], list[Call]] = defaultdict(list)
    for call in run.calls:
        calls[(call.phase, call.mode)].append(call)
    polls: dict[tuple[int, str], list[StatusPoll]] = defaultdict(list)
    for poll in run.polls:
        polls[(poll.phase, poll.mode)].append(poll)
    rows = []
    for phase in run.phases:
        for mode, name in sorted(phase.names.items()):
            mine = calls[(phase.index, mode)]
            row = Row(phase.index, phase.round, phase.fault, mode, calls=len(mine))
            samples = [s for s in run.samples if s.phase == phase.index and s.mode == mode]
            events = [e for e in run.events if e.name == name]
            row.records = account_records(mine, samples, trouble)
            row.events = account_events(
                samples, events, run.connections, run.epochs, phase.blind_from
            )
            row.max_probes = max_probes(mine, phase, run.bounds.lease_horizon)
            row.longest_refusal = longest_refusal(mine, phase)
            worst = slowest(mine)
            row.worst_added = 0.0 if worst is None else worst.added_latency
            resumes = resume_times(mine, phase.fault_ended)
            row.resume_window = phase.ended - phase.fault_ended
            row.resume = None if None in resumes.values() else max(resumes.values(), default=0.0)
            keys = [k for k in run.keys if k.phase == phase.index and f"{{{name}}}" in k.key]
            row.violations = judge(
                row,
                run.bounds,
                worst,
                resumes,
                foreign_errors(mine, polls[(phase.index, mode)]),
                keys_without_ttl(keys),
            )
            rows.append(row)
    return rows


def judge(
    row: Row,
    bounds: Bounds,
    worst: Call | None,
    resumes: dict[int, float | None],
    errors: Counter[str],
    untimed_keys: list[str],
) -> list[Violation]:
    """The invariants a row's figures break, each with its numbers."""
    found: list[Violation] = []
    records, events = row.records, row.events
    if records.unexcused:
        found.append(
            Violation(
                "lost records",
                f"{records.unexcused} of {records.sent} failures "
                "sent without any store error are missing from failures_total",
            )
        )
    if records.excess:
        found.append(
            Violation(
                "extra records",
                f"failures_total grew by {records.excess} "
                "more than the failures that could have been sent",
            )
        )
    if events.duplicates:
        found.append(
            Violation("duplicate events", f"{events.duplicates} transitions published twice")
        )
    if events.lost:
        found.append(
            Violation(
                "lost events",
                f"{events.lost} of {events.transitions} "
                "transitions had no event although the recorder was listening",
            )
        )
    for low, high in events.backwards:
        found.append(
            Violation("generation", f"generation fell from {low} to {high} without a wipe")
        )
    if row.max_probes > bounds.half_open_max_calls:
        found.append(
            Violation(
                "probes",
                f"{row.max_probes} probes ran at once "
                f"(half_open_max_calls={bounds.half_open_max_calls})",
            )
        )
    if errors:
        listed = "; ".join(f"{n} x {kind}" for kind, n in errors.most_common(4))
        found.append(Violation("exceptions", f"{sum(errors.values())} reached callers: {listed}"))
    if worst is not None and worst.added_latency > bounds.added_latency:
        found.append(
            Violation(
                "latency",
                f"a call spent {worst.added_latency:.2f} s in "
                f"distbreaker (bound {bounds.added_latency:.2f} s; worker {worst.worker}, "
                f"{worst.outcome or worst.error})",
            )
        )
    if row.longest_refusal > bounds.refusal:
        found.append(
            Violation(
                "refused healthy upstream",
                f"the fleet refused for "
                f"{row.longest_refusal:.2f} s while the upstream answered (bound "
                f"{bounds.refusal:.2f} s)",
            )
        )
    never = sorted(w for w, t in resumes.items() if t is None)
    late = {w: t for w, t in resumes.items() if t is not None and t > bounds.resume}
    if never:
        found.append(
            Violation(
                "resume",
                f"workers {never} not back in shared mode "
                f"{row.resume_window:.1f} s after the fault ended",
            )
        )
    elif late:
        worker = max(late, key=lambda w: late[w] or 0.0)
        found.append(
            Violation(
                "resume",
                f"shared mode resumed {late[worker]:.2f} s after "
                f"the fault ended (bound {bounds.resume:.2f} s; worker {worker}; "
                f"{len(late)} of {len(resumes)} workers late)",
            )
        )
    if untimed_keys:
        found.append(Violation("ttl", f"keys without a TTL: {', '.join(untimed_keys)}"))
    return found
