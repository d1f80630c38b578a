"""``BreakerStatus``: one breaker as Redis (or, while degraded, the local shadow) sees it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from distbreaker.core import Snapshot, admits_all


class BreakerStatus(BaseModel):
    """One breaker's state and counters. Times are seconds (epoch for moments)."""

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
        healthy=admits_all(snap.state),
        failures_total=snap.failures_total,
        opens_total=snap.opens_total,
        probes_in_flight=snap.probes_in_flight,
    )
