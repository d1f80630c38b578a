"""The soak's invariant checker on synthetic timelines: each rule catches what it should, and
only that (no Redis, no processes, no sleeps)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.soak import schedule
from benchmarks.soak.checker import (
    Bounds,
    Run,
    StoreTrouble,
    account_events,
    account_records,
    check,
    foreign_errors,
    healthy_spans,
    longest_refusal,
    max_probes,
    resume_times,
)
from benchmarks.soak.report import render
from benchmarks.soak.timeline import (
    Call,
    KeyTTL,
    Phase,
    ReceivedEvent,
    RecorderConnection,
    Sample,
    StatusPoll,
    StoreError,
    read_records,
    write_records,
)

BOUNDS = Bounds(half_open_max_calls=2, lease_horizon=0.4, resume=1.0, added_latency=1.25)
RUN_ID = "server-a"
EPOCHS = {RUN_ID: 0}


def call(started: float, **fields: Any) -> Call:
    """A shared, successful 10 ms call unless told otherwise; ``op`` = (start, end)."""
    op = fields.pop("op", (started + 0.001, started + 0.011))
    settings: dict[str, Any] = {
        "worker": 0,
        "thread": 0,
        "phase": 0,
        "mode": "strict",
        "started": started,
        "ended": (op[1] if op else started) + 0.001,
        "op_started": op[0] if op else None,
        "op_ended": op[1] if op else None,
        "store_ok_after_op": True if op else None,
        "outcome": "success" if op else "refused",
        "state": "closed",
        "shared": True,
    }
    settings.update(fields)
    return Call(**settings)


def failure(started: float, **fields: Any) -> Call:
    return call(started, outcome="failure", error="HTTPStatusError", own_error=True, **fields)


def refused(started: float, **fields: Any) -> Call:
    fields.setdefault("state", "open")
    return call(started, op=None, error="CircuitOpenError", **fields)


def sample(at: float, failures: int | None, generation: int | None = 0, **fields: Any) -> Sample:
    settings: dict[str, Any] = {"phase": 0, "mode": "strict", "epoch": 0, "accountable": True}
    settings.update(fields)
    return Sample(
        before=at, after=at + 0.001, failures_total=failures, generation=generation, **settings
    )


def phase(**fields: Any) -> Phase:
    settings: dict[str, Any] = {
        "index": 0,
        "round": 0,
        "fault": "none",
        "started": 0.0,
        "fault_started": 10.0,
        "fault_ended": 20.0,
        "ended": 40.0,
        "names": {"strict": "p00-none-strict"},
    }
    settings.update(fields)
    return Phase(**settings)


def event(generation: int, connection: int = 0, received: float = 0.0) -> ReceivedEvent:
    return ReceivedEvent(received, connection, "p00-none-strict", "closed", "open", generation)


def connection(
    index: int, opened: float, covered_until: float, run_id: str | None = RUN_ID
) -> RecorderConnection:
    return RecorderConnection(index, opened, covered_until, run_id)


def no_trouble() -> StoreTrouble:
    return StoreTrouble([])


# -- failures recorded vs failures sent -------------------------------------------------


def test_every_clean_failure_counted_leaves_nothing_lost() -> None:
    calls = [failure(1.0), failure(2.0), failure(3.0)]
    records = account_records(calls, [sample(0.0, 0), sample(5.0, 3)], no_trouble())
    assert (records.sent, records.lost_low, records.lost_high, records.unexcused) == (3, 0, 0, 0)


def test_a_clean_failure_missing_from_failures_total_is_unexcused() -> None:
    calls = [failure(1.0), failure(2.0), failure(3.0)]
    records = account_records(calls, [sample(0.0, 0), sample(5.0, 2)], no_trouble())
    assert (records.lost_low, records.unexcused) == (1, 1)


def test_a_failure_whose_record_met_a_store_error_may_be_lost() -> None:
    calls = [failure(1.0), failure(2.0), failure(3.0)]
    error = StoreError(worker=0, phase=0, mode="strict", at=2.0115, error="TimeoutError")
    records = account_records(calls, [sample(0.0, 0), sample(5.0, 2)], StoreTrouble([error]))
    assert (records.lost_low, records.excused, records.unexcused) == (1, 1, 0)


def test_a_store_error_of_another_worker_excuses_nothing() -> None:
    calls = [failure(1.0), failure(2.0)]
    error = StoreError(worker=1, phase=0, mode="strict", at=2.0115, error="TimeoutError")
    records = account_records(calls, [sample(0.0, 0), sample(5.0, 1)], StoreTrouble([error]))
    assert records.unexcused == 1


def test_a_failure_sent_while_the_worker_backed_off_may_be_lost() -> None:
    calls = [failure(1.0), failure(2.0, store_ok_after_op=False)]
    records = account_records(calls, [sample(0.0, 0), sample(5.0, 1)], no_trouble())
    assert (records.excused, records.unexcused) == (1, 0)


def test_failures_decided_by_the_local_shadow_are_not_expected_in_redis() -> None:
    calls = [failure(1.0), failure(2.0, shared=False)]
    records = account_records(calls, [sample(0.0, 0), sample(5.0, 1)], no_trouble())
    assert (records.sent, records.unexcused) == (1, 0)


def test_counting_more_failures_than_could_have_been_sent_is_excess() -> None:
    calls = [failure(1.0), failure(2.0)]
    records = account_records(calls, [sample(0.0, 0), sample(5.0, 4)], no_trouble())
    assert records.excess == 2


def test_a_crash_after_the_operation_ran_may_have_recorded_a_failure() -> None:
    calls = [failure(1.0), call(2.0, outcome=None, shared=None, error="IndexError")]
    records = account_records(calls, [sample(0.0, 0), sample(5.0, 2)], no_trouble())
    assert (records.excess, records.unexcused) == (0, 0)


def test_a_record_straddling_a_sample_widens_the_range_without_an_alarm() -> None:
    straddling = failure(4.99, op=(4.99, 4.995), ended=5.0005)
    calls = [failure(1.0), failure(2.0), straddling]
    records = account_records(calls, [sample(0.0, 0), sample(5.0, 2)], no_trouble())
    assert (records.sent, records.lost_low, records.lost_high) == (2, 0, 1)
    assert (records.unexcused, records.excess) == (0, 0)


def test_a_span_in_which_redis_lost_its_data_is_not_accounted() -> None:
    calls = [failure(1.0), failure(6.0)]
    samples = [sample(0.0, 0), sample(5.0, 0, accountable=False), sample(9.0, 1)]
    records = account_records(calls, samples, no_trouble())
    assert (records.unaccounted, records.sent, records.unexcused) == (1, 1, 0)


def test_garbage_in_the_counter_makes_a_span_unaccountable() -> None:
    records = account_records([failure(1.0)], [sample(0.0, 0), sample(5.0, None)], no_trouble())
    assert (records.unaccounted, records.unexcused) == (1, 0)


# -- one event per transition -------------------------------------------------------------


def test_one_event_per_generation_is_clean() -> None:
    samples = [sample(0.0, 0, 0), sample(5.0, 0, 3)]
    events = [event(1), event(2), event(3)]
    result = account_events(samples, events, [connection(0, -1.0, 6.0)], EPOCHS)
    assert (result.transitions, result.duplicates, result.lost, result.excused) == (3, 0, 0, 0)


def test_an_event_published_twice_is_a_duplicate() -> None:
    samples = [sample(0.0, 0, 0), sample(5.0, 0, 2)]
    events = [event(1), event(1), event(2)]
    assert account_events(samples, events, [connection(0, -1.0, 6.0)], EPOCHS).duplicates == 1


def test_a_gap_between_two_events_of_one_connection_is_a_lost_event() -> None:
    samples = [sample(0.0, 0, 0), sample(5.0, 0, 3)]
    events = [event(1), event(3)]
    result = account_events(samples, events, [connection(0, -1.0, 6.0)], EPOCHS)
    assert (result.lost, result.excused) == (1, 0)


def test_a_gap_across_a_reconnection_is_excused() -> None:
    samples = [sample(0.0, 0, 0), sample(5.0, 0, 3)]
    events = [event(1, connection=0), event(3, connection=1)]
    connections = [connection(0, -1.0, 2.0), connection(1, 2.5, 6.0)]
    result = account_events(samples, events, connections, EPOCHS)
    assert (result.lost, result.excused) == (0, 1)


def test_a_missing_last_event_is_lost_only_if_a_later_ping_was_answered() -> None:
    samples = [sample(0.0, 0, 0), sample(5.0, 0, 2)]
    answered = account_events(samples, [event(1)], [connection(0, -1.0, 6.0)], EPOCHS)
    unanswered = account_events(samples, [event(1)], [connection(0, -1.0, 4.0)], EPOCHS)
    assert (answered.lost, unanswered.lost, unanswered.excused) == (1, 0, 1)


def test_a_missing_first_event_is_lost_only_if_subscribed_before_the_sample() -> None:
    samples = [sample(0.0, 0, 0), sample(5.0, 0, 2)]
    early = account_events(samples, [event(2)], [connection(0, -1.0, 6.0)], EPOCHS)
    late = account_events(samples, [event(2)], [connection(0, 0.5, 6.0)], EPOCHS)
    assert (early.lost, late.lost, late.excused) == (1, 0, 1)


def test_events_from_a_connection_that_straddled_a_restart_are_not_attributed() -> None:
    samples = [sample(0.0, 0, 0), sample(5.0, 0, 1)]
    result = account_events(samples, [event(1)], [connection(0, -1.0, 6.0, run_id=None)], EPOCHS)
    assert (result.lost, result.excused) == (0, 1)


def test_events_after_a_wipe_belong_to_the_new_epoch() -> None:
    epochs = {"old": 0, "new": 1}
    samples = [
        sample(0.0, 0, 0),
        sample(5.0, 0, 2),
        sample(6.0, 0, 0, epoch=1),
        sample(9.0, 0, 2, epoch=1),
    ]
    events = [event(1, 0), event(2, 0), event(1, 1), event(2, 1)]
    connections = [connection(0, -1.0, 5.5, "old"), connection(1, 5.8, 10.0, "new")]
    result = account_events(samples, events, connections, epochs)
    assert (result.transitions, result.duplicates, result.lost) == (4, 0, 0)


def test_a_generation_that_falls_without_a_wipe_is_reported() -> None:
    samples = [sample(0.0, 0, 5), sample(5.0, 0, 1)]
    result = account_events(samples, [], [connection(0, -1.0, 6.0)], EPOCHS)
    assert result.backwards == ((5, 1),)


def test_after_an_overwrite_a_reused_generation_is_no_duplicate() -> None:
    samples = [sample(0.0, 0, 0), sample(5.0, 0, 1)]
    events = [event(1, received=1.0), event(1, received=7.0)]
    result = account_events(samples, events, [connection(0, -1.0, 9.0)], EPOCHS, blind_from=6.0)
    assert result.duplicates == 0


# -- probes in flight ------------------------------------------------------------------


def probe(start: float, end: float, **fields: Any) -> Call:
    return call(start - 0.001, op=(start, end), state="half_open", **fields)


def test_concurrent_probes_are_counted_fleet_wide() -> None:
    calls = [probe(1.0, 1.5, worker=0), probe(1.1, 1.6, worker=1), probe(1.2, 1.3, worker=2)]
    assert max_probes(calls, phase(), lease_horizon=0.4) == 3


def test_a_probe_starting_as_another_ends_does_not_overlap() -> None:
    calls = [probe(1.0, 1.5), probe(1.5, 2.0, worker=1)]
    assert max_probes(calls, phase(), lease_horizon=0.4) == 1


def test_local_probes_and_refusals_are_not_fleet_probes() -> None:
    calls = [probe(1.0, 1.5), probe(1.1, 1.6, shared=False), refused(1.2, state="half_open")]
    assert max_probes(calls, phase(), lease_horizon=0.4) == 1


def test_a_lease_lost_with_the_data_stops_counting_its_probe() -> None:
    calls = [probe(1.0, 3.0), probe(2.5, 2.6, worker=1)]
    assert max_probes(calls, phase(lease_losses=(2.0,)), lease_horizon=10.0) == 1
    assert max_probes(calls, phase(), lease_horizon=10.0) == 2


def test_a_probe_outliving_the_lease_horizon_stops_counting() -> None:
    calls = [probe(1.0, 2.0), probe(1.5, 1.6, worker=1), probe(1.6, 1.7, worker=2)]
    assert max_probes(calls, phase(), lease_horizon=0.4) == 1


def test_probes_after_the_hash_was_overwritten_are_not_counted() -> None:
    calls = [probe(1.0, 1.5), probe(6.0, 6.5), probe(6.1, 6.6, worker=1), probe(6.2, 6.7, worker=2)]
    assert max_probes(calls, phase(blind_from=5.0), lease_horizon=0.4) == 1


# -- exceptions, resume, refusals ------------------------------------------------------------


def test_only_exceptions_that_are_not_the_callers_own_or_documented_are_foreign() -> None:
    calls = [
        failure(1.0),
        refused(2.0),
        call(3.0, op=None, outcome=None, shared=None, error="IndexError", message="list index"),
    ]
    polls = [StatusPoll(0, 0, "strict", 4.0, 4.1, error="TypeError", message="missing args")]
    found = foreign_errors(calls, polls)
    assert found == {"IndexError (list index)": 1, "status() raised TypeError (missing args)": 1}


def test_resume_is_the_first_shared_decision_after_the_last_local_one() -> None:
    calls = [call(19.0, shared=False), call(20.2, shared=False), call(20.7), call(21.0)]
    assert resume_times(calls, fault_ended=20.0) == {0: pytest.approx(0.7)}


def test_a_worker_still_local_at_the_end_never_resumed() -> None:
    calls = [call(20.5), call(21.0, shared=False)]
    assert resume_times(calls, fault_ended=20.0) == {0: None}


def test_a_crashed_call_is_no_shared_decision() -> None:
    crashed = call(20.5, op=None, outcome=None, shared=None, error="IndexError")
    assert resume_times([crashed, call(21.5)], fault_ended=20.0) == {0: pytest.approx(1.5)}


def test_a_worker_never_degraded_after_the_fault_resumes_at_once() -> None:
    calls = [call(19.0, shared=False), call(20.1), call(20.2, worker=1)]
    assert resume_times(calls, fault_ended=20.0) == {0: 0.0, 1: 0.0}


def test_refusing_a_healthy_upstream_is_measured_between_admissions() -> None:
    calls = [call(1.0), refused(1.5), refused(4.0), call(5.0), refused(5.2), call(5.3)]
    assert longest_refusal(calls, phase()) == pytest.approx(4.0, abs=0.01)


def test_refusals_during_an_upstream_outage_do_not_count() -> None:
    calls = [call(1.0), refused(2.0), refused(8.0), refused(8.7), call(9.0)]
    assert longest_refusal(calls, phase(outages=((1.5, 8.5),))) == pytest.approx(0.5, abs=0.01)


def test_a_refusal_stretch_counts_from_the_last_failure() -> None:
    calls = [call(1.0), failure(3.0), refused(3.5), call(4.0)]
    assert longest_refusal(calls, phase()) == pytest.approx(0.99, abs=0.01)


def test_healthy_spans_are_the_phase_minus_the_outages() -> None:
    spans = healthy_spans(phase(outages=((5.0, 6.0), (30.0, 45.0))))
    assert spans == [(0.0, 5.0), (6.0, 30.0)]


# -- the whole verdict ---------------------------------------------------------------------


def run_with(calls: list[Call], **fields: Any) -> Run:
    settings: dict[str, Any] = {
        "phases": [phase()],
        "calls": calls,
        "polls": [],
        "store_errors": [],
        "samples": [sample(0.0, 0, 0), sample(40.5, 0, 0)],
        "events": [],
        "connections": [connection(0, -1.0, 41.0)],
        "epochs": EPOCHS,
        "keys": [],
        "bounds": BOUNDS,
    }
    settings.update(fields)
    return Run(**settings)


def invariants(run: Run) -> list[str]:
    (row,) = check(run)
    return [v.invariant for v in row.violations]


def test_a_quiet_phase_violates_nothing() -> None:
    assert invariants(run_with([call(1.0), call(25.0)])) == []


def test_each_broken_invariant_is_named_in_the_verdict() -> None:
    slow = call(21.0, op=(21.0, 21.01), ended=22.5)
    crash = call(15.0, op=None, outcome=None, shared=None, error="IndexError")
    probes = [probe(2.0, 2.5), probe(2.1, 2.6, thread=1), probe(2.2, 2.7, thread=2)]
    stuck = [refused(26.0), refused(29.0), call(30.0)]
    keys = [KeyTTL(0, "soak:{p00-none-strict}:state", -1, 41.0)]
    run = run_with([call(1.0), *probes, slow, crash, call(25.0), *stuck], keys=keys)
    assert invariants(run) == [
        "probes",
        "exceptions",
        "latency",
        "refused healthy upstream",
        "ttl",
    ]


def test_a_late_resume_names_the_worker_and_the_bound() -> None:
    calls = [call(20.5, shared=False), call(22.0), call(23.0, worker=1)]
    (row,) = check(run_with(calls))
    assert [v.invariant for v in row.violations] == ["resume"]
    assert "2.00 s" in row.violations[0].detail
    assert "worker 0" in row.violations[0].detail


def test_the_report_has_the_table_the_bounds_and_every_violation() -> None:
    crash = call(15.0, op=None, outcome=None, shared=None, error="IndexError", message="boom")
    rows = check(run_with([call(1.0), crash, call(25.0)]))
    text = render(rows, BOUNDS, notes=["redis-server 7.0.15"])
    assert "| fault | mode | calls |" in text
    assert "| none | strict | 3 |" in text
    assert "**FAIL**: exceptions" in text
    assert "- none/strict: exceptions: 1 reached callers: 1 x IndexError (boom)" in text
    assert "Bounds:" in text
    assert "- redis-server 7.0.15" in text


def test_rounds_of_one_fault_merge_into_one_line() -> None:
    phases = [phase(), phase(index=1, round=1, started=40.0, fault_ended=60.0, ended=80.0)]
    for p in phases:
        p.names["strict"] = f"p{p.index:02d}-none-strict"
    calls = [call(1.0), call(41.0, phase=1), call(45.0, phase=1)]
    rows = check(run_with(calls, phases=phases))
    text = render(rows, BOUNDS)
    assert len(rows) == 2
    assert "| none | strict | 3 |" in text


# -- schedule and records on disk ------------------------------------------------------------


def test_the_plan_runs_every_fault_in_rounds_of_short_phases() -> None:
    plans = schedule.plan(schedule.FAULTS, 300.0)
    assert len(plans) == 2 * len(schedule.FAULTS)
    assert plans[-1].end == pytest.approx(300.0)
    assert all(p.end - p.start <= schedule.LONGEST_PHASE for p in plans)
    for p in plans:
        assert p.start < p.fault_start < p.fault_end < p.end < p.final_sample
        assert all(p.start < b.start < b.end < p.end for b in p.bursts)
        assert p.final_sample < p.end + (p.fault_start - p.start)  # before the next fault
        assert p.strikes[0] == p.fault_start
        assert p.strikes[-1] == pytest.approx(p.fault_end)


def test_no_failing_outage_is_on_at_a_sample_instant() -> None:
    for p in schedule.plan(schedule.FAULTS, 110.0):
        failing = [b for b in p.bursts if b.mode != "hang"]
        for instant in (p.start, p.fault_start, p.fault_end, p.final_sample):
            assert not any(b.start <= instant <= b.end for b in failing)


def test_the_fault_starts_while_the_upstream_holds_requests() -> None:
    for p in schedule.plan(schedule.FAULTS, 110.0):
        (hang,) = [b for b in p.bursts if b.mode == "hang"]
        assert hang.start < p.fault_start < hang.end


def test_an_unknown_fault_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown faults: tornado"):
        schedule.plan(("none", "tornado"), 10.0)


def test_records_survive_the_json_lines_file(tmp_path: Path) -> None:
    records = [
        failure(1.0),
        StatusPoll(0, 0, "cached", 1.0, 1.1, True, "closed"),
        StoreError(0, 0, "cached", 1.2, "TimeoutError"),
    ]
    path = tmp_path / "worker-0.jsonl"
    write_records(path, records)
    assert list(read_records(path)) == records
