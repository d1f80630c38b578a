"""The fault schedule: which fault runs when, and when the upstream has outages (pure).

Each phase gets fresh breakers (one per consistency mode), so no fault leaks into the next
one's figures. A phase is a lead-in (25 %), the fault (25 %) and a recovery (50 %); the
upstream has short outages in each part so that the breakers open, probe and close while
the fault is on and after it. The lead-in's outage ends in a ``hang``: the next probes are
held, so the fault begins while they are in flight and their outcome must be recorded
into it. Counters are sampled at the part boundaries, where no failing outage is on, so
few recorded failures straddle a sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FAULTS: tuple[str, ...] = (
    "none",
    "sigkill_restart",
    "sigstop",
    "restart_empty",
    "client_kill_normal",
    "client_kill_pubsub",
    "script_flush",
    "maxmemory",
    "latency",
    "garbage",
)
# Faults that act in strikes (instants) spread over their window instead of start/stop.
STRIKES = 4
LONGEST_PHASE = 15.0  # seconds; longer runs repeat the schedule in rounds instead
LEAD_IN, FAULT = 0.25, 0.25


@dataclass(frozen=True, slots=True)
class Burst:
    """An upstream outage: ``mode`` (a FlakyUpstream mode) from ``start`` to ``end``."""

    start: float
    end: float
    mode: str


@dataclass(frozen=True, slots=True)
class PhasePlan:
    """One phase, in seconds after the run's start."""

    index: int
    round: int
    fault: str
    start: float
    fault_start: float
    fault_end: float
    end: float
    bursts: tuple[Burst, ...]

    @property
    def strikes(self) -> tuple[float, ...]:
        """Instants of the strikes, the first at the fault's start, the last at its end."""
        step = (self.fault_end - self.fault_start) / (STRIKES - 1)
        return tuple(self.fault_start + k * step for k in range(STRIKES))

    @property
    def final_sample(self) -> float:
        """When the phase's counters are read for the last time (in-flight calls done)."""
        return self.end + min(0.5, 0.4 * (self.fault_start - self.start))


def plan(faults: tuple[str, ...], duration: float) -> list[PhasePlan]:
    """Phases for ``duration`` seconds: every fault once per round, rounds of <= 15 s phases."""
    if not faults:
        raise ValueError("no faults to run")
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise ValueError(f"unknown faults: {', '.join(unknown)}")
    rounds = max(1, math.ceil(duration / (len(faults) * LONGEST_PHASE)))
    length = duration / (rounds * len(faults))
    phases: list[PhasePlan] = []
    for number in range(rounds):
        for fault in faults:
            start = len(phases) * length
            phases.append(_phase(len(phases), number, fault, start, length))
    return phases


def hang_seconds(phases: list[PhasePlan]) -> float:
    """How long the upstream holds a request in a ``hang`` burst: half the shortest fault."""
    return min(1.5, 0.5 * min(p.fault_end - p.fault_start for p in phases))


def _phase(index: int, number: int, fault: str, start: float, length: float) -> PhasePlan:
    lead_in, window = LEAD_IN * length, FAULT * length
    fault_start = start + lead_in
    fault_end = fault_start + window
    recovery = start + length - fault_end
    burst = min(0.5, 0.3 * window)
    in_fault = fault_start + 0.4 * window
    in_recovery = fault_end + 0.3 * recovery
    bursts = (
        Burst(start + 0.35 * lead_in, start + 0.6 * lead_in, "error"),
        # the probes of the next half-open hang, so the fault starts with probes in flight
        Burst(start + 0.6 * lead_in, fault_start + 0.15 * window, "hang"),
        Burst(in_fault, in_fault + burst, "error"),
        Burst(in_recovery, in_recovery + burst, "reset"),
    )
    return PhasePlan(index, number, fault, start, fault_start, fault_end, start + length, bursts)
