"""The pure state machine, driven with explicit milliseconds."""

from __future__ import annotations

import pytest

from distbreaker import BreakerConfig
from distbreaker.core import BreakerModel, failures_cap

T0 = 1_000_000


def model(**settings: object) -> BreakerModel:
    return BreakerModel("svc", BreakerConfig(**settings))  # type: ignore[arg-type]


def trip(m: BreakerModel, now: int = T0, count: int | None = None) -> None:
    for i in range(count or m.config.failure_threshold):
        a = m.admit(now, f"trip-{now}-{i}")
        m.record(now, f"trip-{now}-{i}", a.generation, "failure")


def test_closed_admits_without_probe_and_counts_failures() -> None:
    m = model(failure_threshold=3)
    a = m.admit(T0, "c1")
    assert (a.allowed, a.state, a.probe, a.generation) == (True, "closed", False, 0)
    m.record(T0, "c1", 0, "failure")
    assert m.snapshot(T0).failure_count == 1
    assert m.snapshot(T0).state == "closed"


def test_threshold_inside_window_opens_once_with_event() -> None:
    m = model(failure_threshold=3, reset_timeout=10)
    trip(m)
    snap = m.snapshot(T0)
    assert (snap.state, snap.generation, snap.opened_at_ms, snap.open_until_ms) == (
        "open",
        1,
        T0,
        T0 + 10_000,
    )
    assert [(e.from_state, e.to_state, e.reason) for e in m.events] == [
        ("closed", "open", "failure_threshold")
    ]


def test_failures_outside_window_are_pruned() -> None:
    m = model(failure_threshold=2, window=5)
    m.record(T0, "a", 0, "failure")
    m.record(T0 + 5_000, "b", 0, "failure")  # the first is exactly window old: out
    assert m.snapshot(T0 + 5_000).state == "closed"
    assert m.snapshot(T0 + 5_000).failure_count == 1
    m.record(T0 + 5_001, "c", 0, "failure")
    assert m.snapshot(T0 + 5_001).state == "open"


def test_open_refuses_with_retry_after_until_reset_timeout() -> None:
    m = model(failure_threshold=1, reset_timeout=10)
    trip(m)
    a = m.admit(T0 + 4_000, "x")
    assert (a.allowed, a.state, a.retry_after_ms) == (False, "open", 6_000)


def test_first_caller_after_reset_timeout_becomes_the_probe() -> None:
    m = model(failure_threshold=1, reset_timeout=10)
    trip(m)
    probe = m.admit(T0 + 10_000, "p1")
    assert (probe.allowed, probe.state, probe.probe, probe.generation) == (
        True,
        "half_open",
        True,
        2,
    )
    other = m.admit(T0 + 10_001, "p2")
    assert (other.allowed, other.state) == (False, "half_open")
    assert other.retry_after_ms == 30_000 - 1


def test_half_open_max_calls_leases() -> None:
    m = model(failure_threshold=1, reset_timeout=1, half_open_max_calls=3)
    trip(m)
    decisions = [m.admit(T0 + 1_000, f"p{i}").allowed for i in range(5)]
    assert decisions == [True, True, True, False, False]
    assert m.snapshot(T0 + 1_000).probes_in_flight == 3


def test_probe_lease_expires_so_crashed_prober_frees_its_slot() -> None:
    m = model(failure_threshold=1, reset_timeout=1, probe_timeout=5)
    trip(m)
    assert m.admit(T0 + 1_000, "crashed").allowed
    assert not m.admit(T0 + 5_999, "waiting").allowed
    assert m.admit(T0 + 6_000, "next").allowed


def test_probe_success_closes_and_clears_window() -> None:
    m = model(failure_threshold=2, reset_timeout=1)
    trip(m)
    probe = m.admit(T0 + 1_000, "p")
    change = m.record(T0 + 1_001, "p", probe.generation, "success")
    assert (change.applied, change.state, change.generation) == (True, "closed", 3)
    assert m.snapshot(T0 + 1_001).failure_count == 0
    assert [e.to_state for e in m.events] == ["open", "half_open", "closed"]


def test_success_threshold_needs_several_probes() -> None:
    m = model(failure_threshold=1, reset_timeout=1, success_threshold=3)
    trip(m)
    for i in range(3):
        probe = m.admit(T0 + 1_000 + i, f"p{i}")
        assert probe.allowed
        m.record(T0 + 1_000 + i, f"p{i}", probe.generation, "success")
    assert m.snapshot(T0 + 1_003).state == "closed"


def test_probe_failure_reopens_with_new_generation() -> None:
    m = model(failure_threshold=1, reset_timeout=10)
    trip(m)
    probe = m.admit(T0 + 10_000, "p")
    change = m.record(T0 + 10_500, "p", probe.generation, "failure")
    assert (change.state, change.generation, change.open_until_ms) == ("open", 3, T0 + 20_500)
    assert m.events[-1].reason == "probe_failed"


def test_release_frees_the_probe_without_counting() -> None:
    m = model(failure_threshold=1, reset_timeout=1)
    trip(m)
    probe = m.admit(T0 + 1_000, "p")
    m.record(T0 + 1_000, "p", probe.generation, "release")
    snap = m.snapshot(T0 + 1_000)
    assert (snap.state, snap.probes_in_flight, snap.probe_successes) == ("half_open", 0, 0)
    assert m.admit(T0 + 1_001, "q").allowed


def test_late_outcomes_from_old_generation_change_no_state() -> None:
    m = model(failure_threshold=2, reset_timeout=1)
    slow = m.admit(T0, "slow")  # admitted in generation 0
    trip(m)
    probe = m.admit(T0 + 1_000, "p")
    m.record(T0 + 1_000, "p", probe.generation, "success")  # closed, generation 3
    late = m.record(T0 + 1_001, "slow", slow.generation, "failure")
    assert (late.state, late.generation) == ("closed", 3)
    assert m.snapshot(T0 + 1_001).failure_count == 1  # still recorded in the window
    # and a late success cannot close a reopened breaker
    trip(m, T0 + 2_000)
    stale = m.record(T0 + 2_001, "p", probe.generation, "success")
    assert (stale.applied, stale.state) == (False, "open")


def test_replayed_failure_adds_nothing() -> None:
    m = model(failure_threshold=5)
    assert m.record(T0, "same", 0, "failure").applied
    assert not m.record(T0, "same", 0, "failure").applied
    snap = m.snapshot(T0)
    assert (snap.failure_count, snap.failures_total) == (1, 1)


def test_forced_open_refuses_and_forced_closed_counts_without_opening() -> None:
    m = model(failure_threshold=1)
    m.control(T0, "force_open")
    a = m.admit(T0, "x")
    assert (a.allowed, a.state, a.retry_after_ms) == (False, "forced_open", None)
    m.control(T0, "force_closed")
    trip(m, count=3)
    snap = m.snapshot(T0)
    assert (snap.state, snap.failure_count) == ("forced_closed", 3)
    m.control(T0, "reset")
    snap = m.snapshot(T0)
    assert (snap.state, snap.failure_count, snap.generation) == ("closed", 0, 3)


def test_reset_in_closed_clears_window_without_event() -> None:
    m = model(failure_threshold=3)
    trip(m, count=2)
    m.control(T0, "reset")
    assert m.snapshot(T0).failure_count == 0
    assert m.events == type(m.events)()


def test_hold_open_opens_extends_but_never_shortens() -> None:
    m = model(reset_timeout=10)
    change = m.control(T0, "hold_open", 60_000, "rate limit")
    assert (change.state, change.open_until_ms) == ("open", T0 + 60_000)
    assert m.events[-1].reason == "hold_open: rate limit"
    assert not m.control(T0, "hold_open", 5_000).applied
    assert m.control(T0, "hold_open", 90_000).open_until_ms == T0 + 90_000
    assert m.snapshot(T0).generation == 1  # an extension is not a transition


def test_hold_open_yields_to_forced_states() -> None:
    m = model()
    m.control(T0, "force_closed")
    assert not m.control(T0, "hold_open", 1_000).applied
    assert m.snapshot(T0).state == "forced_closed"


def test_failures_window_is_capped() -> None:
    m = model(failure_threshold=1, window=3600)
    m.control(T0, "force_closed")
    cap = failures_cap(m.config)
    for i in range(cap + 10):
        m.record(T0 + i, f"f{i:05d}", m.snapshot(T0).generation, "failure")
    snap = m.snapshot(T0 + cap + 10)
    assert snap.failure_count == cap
    assert snap.failures_total == cap + 10


def test_unknown_command_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown control command"):
        model().control(T0, "explode")  # type: ignore[arg-type]
