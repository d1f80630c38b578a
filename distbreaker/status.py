"""``BreakerStatus``: one breaker as Redis (or, while degraded, the local shadow) sees it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from distbreaker.config import BreakerConfig
from distbreaker.core import Snapshot, admits_all


class BreakerStatus(BaseModel):
    """One breaker's state, its evidence and why it is in that state.

    Times are seconds (epoch seconds for moments). ``rule`` is ``"count"`` or ``"rate"``;
    ``calls_in_window`` and ``failure_rate`` exist under the rate rule. ``reporters`` is the
    number of distinct reporters with failures in the window. ``reason`` says why the last
    transition happened (``failure_threshold``, ``failure_rate``, ``probe_failed``,
    ``hold_open: rate limited``, ``force_open``, ``repaired`` ...), ``actor`` and ``note``
    who did it and why when it was an operator. ``since`` is how long the breaker has been
    in its state. ``locally_open``: this process refuses on its own (a lone sick reporter)
    while the fleet is closed; ``locally_open_reporters``: every reporter that says it
    does. ``dry_run``: ``enforce=False``, nothing is refused;
    ``would_refuse_total`` counts the calls that would have been.
    """

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
    rule: Literal["count", "rate"] = "count"
    calls_in_window: int | None = None
    failure_rate: float | None = None
    reporters: int = 0
    locally_open: bool = False
    locally_open_reporters: list[str] = []
    reason: str = ""
    actor: str = ""
    note: str = ""
    since: float | None = None
    open_streak: int = 0
    dry_run: bool = False
    would_refuse_total: int = 0
    config_conflict: str = ""
    malformed: str = ""


def status_from_snapshot(
    name: str,
    snap: Snapshot,
    store_ok: bool,
    config: BreakerConfig | None = None,
    locally_open: bool = False,
) -> BreakerStatus:
    """Turn a script's (or the shadow's) snapshot into the public status."""
    config = config or BreakerConfig()
    waiting = snap.state == "open"
    calls = rate = None
    if config.rule == "rate":
        calls = snap.calls_in_window
        rate = round(snap.rate_failures_in_window / calls, 4) if calls else 0.0
    since = None
    if snap.last_transition_at_ms:
        since = max(0, snap.now_ms - snap.last_transition_at_ms) / 1000
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
        rule=config.rule,
        calls_in_window=calls,
        failure_rate=rate,
        reporters=snap.reporters_in_window,
        locally_open=locally_open,
        locally_open_reporters=[r for r in snap.locally_open.split(",") if r],
        reason=snap.reason,
        actor=snap.actor,
        note=snap.note,
        since=since,
        open_streak=snap.open_streak,
        dry_run=not config.enforce,
        would_refuse_total=snap.would_refuse_total,
        config_conflict=snap.config_conflict,
        malformed=snap.malformed,
    )
