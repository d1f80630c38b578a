"""Open-duration backoff: ``core.open_duration_ms`` on its own, then the fleet-wide streak
through the public API on fakeredis and on a real redis-server (injected clock)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from distbreaker import Breaker, BreakerConfig, CircuitOpenError
from distbreaker.core import BreakerModel, open_duration_ms
from tests.conftest import FakeClock, raise_connection_error

NOW_MS = 1_700_000_000_000


def backoff(**settings: float) -> BreakerConfig:
    return BreakerConfig(reset_timeout=1.0, **settings)  # type: ignore[arg-type]


# -- the duration on its own ----------------------------------------------------------------


def test_without_a_multiplier_every_open_lasts_the_reset_timeout() -> None:
    config = BreakerConfig(reset_timeout=30.0)
    assert {open_duration_ms(config, n, NOW_MS) for n in range(1, 50)} == {30_000}


def test_the_nth_open_lasts_reset_times_multiplier_to_the_n_minus_1_capped() -> None:
    config = backoff(reset_timeout_multiplier=2.0, max_reset_timeout=5.0)
    durations = [open_duration_ms(config, n, NOW_MS) for n in range(1, 7)]
    assert durations == [1_000, 2_000, 4_000, 5_000, 5_000, 5_000]


def test_a_fractional_multiplier_grows_in_whole_milliseconds() -> None:
    config = backoff(reset_timeout_multiplier=1.5, max_reset_timeout=100.0)
    assert [open_duration_ms(config, n, NOW_MS) for n in range(1, 5)] == [
        1_000,
        1_500,
        2_250,
        3_375,
    ]


def test_a_huge_streak_stops_at_the_cap_and_never_overflows() -> None:
    capped = backoff(reset_timeout_multiplier=100.0, max_reset_timeout=60.0)
    assert open_duration_ms(capped, 10**9, NOW_MS) == 60_000
    uncapped = backoff(reset_timeout_multiplier=100.0)  # the cap is then 7 days
    assert open_duration_ms(uncapped, 10**9, NOW_MS) == 7 * 86_400_000


@pytest.mark.parametrize("jitter", [0.1, 0.25, 0.5])
def test_jitter_stays_within_its_fraction_of_the_duration(jitter: float) -> None:
    config = backoff(reset_timeout_multiplier=2.0, max_reset_timeout=8.0, reset_jitter=jitter)
    plain = backoff(reset_timeout_multiplier=2.0, max_reset_timeout=8.0)
    seen = set()
    for streak in range(1, 7):
        middle = open_duration_ms(plain, streak, NOW_MS)
        spread = int(middle * jitter)
        for now in range(NOW_MS, NOW_MS + 500_000, 997):
            duration = open_duration_ms(config, streak, now)
            assert middle - spread <= duration <= middle + spread
            seen.add(duration)
    # it really spreads: many distinct values, both sides of the middle
    assert len(seen) > 300
    assert min(seen) < 1_000 < max(seen)


def test_jitter_is_a_function_of_now_and_streak_only() -> None:
    config = backoff(reset_timeout_multiplier=2.0, reset_jitter=0.5)
    assert open_duration_ms(config, 3, NOW_MS) == open_duration_ms(config, 3, NOW_MS)
    spread = {open_duration_ms(config, 3, NOW_MS + i) for i in range(20)}
    assert len(spread) > 1  # breakers opening at other moments probe at other times


def test_a_duration_is_never_shorter_than_one_millisecond() -> None:
    config = BreakerConfig(reset_timeout=0.001, reset_jitter=0.5)
    assert min(open_duration_ms(config, 1, NOW_MS + i) for i in range(1000)) >= 1


# -- the model: the streak ---------------------------------------------------------------------


def trip_model(model: BreakerModel, now: int, call: str) -> None:
    model.record(now, call, model.snapshot(now).generation, "failure", reporter="a")


def test_model_streak_grows_with_failed_probes_and_resets_on_a_close() -> None:
    model = BreakerModel("m", backoff(failure_threshold=1, reset_timeout_multiplier=3.0))
    now = NOW_MS
    trip_model(model, now, "c0")
    lengths = []
    for i in range(3):
        snap = model.snapshot(now)
        lengths.append(snap.open_until_ms - now)
        now = snap.open_until_ms
        admission = model.admit(now, f"p{i}")
        assert admission.probe
        model.record(now, f"p{i}", admission.generation, "failure", reporter="a")
    assert lengths == [1_000, 3_000, 9_000]
    assert model.snapshot(now).open_streak == 4
    now = model.snapshot(now).open_until_ms
    admission = model.admit(now, "ok")
    model.record(now, "ok", admission.generation, "success", reporter="a")
    assert (model.snapshot(now).state, model.snapshot(now).open_streak) == ("closed", 0)


# -- through the public API, on fakeredis and a real redis-server ------------------------------


def fail(breaker: Breaker) -> None:
    breaker.execute(raise_connection_error, fallback=lambda: None)


def open_for(breaker: Breaker) -> float:
    status = breaker.status()
    assert status.state == "open"
    return status.time_until_reset


def test_three_failed_probes_in_a_row_open_for_r_rm_rm2_capped(
    make_breaker: Callable[..., Breaker], clock: FakeClock
) -> None:
    breaker = make_breaker(
        failure_threshold=1, reset_timeout=1.0, reset_timeout_multiplier=2.0, max_reset_timeout=3.0
    )
    fail(breaker)
    lengths = [open_for(breaker)]
    for _ in range(3):
        clock.advance(lengths[-1])
        fail(breaker)  # the probe fails
        lengths.append(open_for(breaker))
    assert lengths == [1.0, 2.0, 3.0, 3.0]  # r, r·m, r·m² capped at 3 s, still capped
    assert breaker.status().open_streak == 4


def test_a_probe_success_resets_the_streak(
    make_breaker: Callable[..., Breaker], clock: FakeClock
) -> None:
    breaker = make_breaker(failure_threshold=1, reset_timeout=1.0, reset_timeout_multiplier=2.0)
    fail(breaker)
    clock.advance(1.0)
    fail(breaker)
    assert (open_for(breaker), breaker.status().open_streak) == (2.0, 2)
    clock.advance(2.0)
    assert breaker.execute(lambda: "fresh") == "fresh"  # the probe succeeds
    status = breaker.status()
    assert (status.state, status.open_streak, status.reason) == ("closed", 0, "probe_succeeded")
    fail(breaker)
    assert open_for(breaker) == 1.0  # the next outage starts over at r


def test_a_reset_also_ends_the_streak(
    make_breaker: Callable[..., Breaker], clock: FakeClock
) -> None:
    breaker = make_breaker(failure_threshold=1, reset_timeout=1.0, reset_timeout_multiplier=4.0)
    fail(breaker)
    clock.advance(1.0)
    fail(breaker)
    assert open_for(breaker) == 4.0
    breaker.reset(actor="ops@desk")
    assert breaker.status().open_streak == 0
    fail(breaker)
    assert open_for(breaker) == 1.0


def test_two_workers_see_the_same_open_until_even_with_jitter(
    make_breaker: Callable[..., Breaker], clock: FakeClock
) -> None:
    settings = {
        "failure_threshold": 1,
        "reset_timeout": 10.0,
        "reset_timeout_multiplier": 2.0,
        "reset_jitter": 0.5,
        "consistency": "strict",
    }
    first, second = make_breaker(**settings), make_breaker(**settings)
    for step in range(3):
        worker = (first, second)[step % 2]
        fail(worker)  # a trip, then probes failing on alternate workers
        waits = []
        for other in (first, second):
            with pytest.raises(CircuitOpenError) as refused:
                other.execute(lambda: "never")
            waits.append(refused.value.retry_after)
        assert waits[0] == waits[1] == first.status().time_until_reset
        middle = 10.0 * 2**step
        assert middle * 0.5 <= waits[0] <= middle * 1.5
        clock.advance(waits[0])


def test_a_hold_is_not_part_of_the_streak(
    make_breaker: Callable[..., Breaker], clock: FakeClock
) -> None:
    breaker = make_breaker(failure_threshold=1, reset_timeout=1.0, reset_timeout_multiplier=2.0)
    breaker.hold_open(5.0, "rate limited")  # from closed: open, but no evidence of an outage
    status = breaker.status()
    assert (status.state, status.open_streak, status.time_until_reset) == ("open", 0, 5.0)
    clock.advance(5.0)
    fail(breaker)  # the probe fails: the first open by evidence lasts r
    assert (open_for(breaker), breaker.status().open_streak) == (1.0, 1)
    breaker.hold_open(30.0, "rate limited")  # extends this open, streak unchanged
    assert (open_for(breaker), breaker.status().open_streak) == (30.0, 1)
    clock.advance(30.0)
    fail(breaker)
    assert (open_for(breaker), breaker.status().open_streak) == (2.0, 2)  # r·m, not r·m²
