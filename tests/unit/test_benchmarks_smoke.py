"""The benchmark's pure parts run and compute their ratios right (no Redis, tiny counts)."""

from __future__ import annotations

import pytest

from benchmarks import report
from benchmarks.latency import Budget, RoundTripCheck, measure
from benchmarks.load import scenarios
from benchmarks.propagation import Propagation
from benchmarks.subjects import (
    BARE,
    CACHED,
    CASES,
    EVALSHA,
    PYBREAKER_MEMORY,
    PYBREAKER_REDIS,
    STRICT,
    Subject,
    bare,
    check,
    interlock_subject,
    pybreaker_memory,
    succeed,
)
from benchmarks.timing import Samples, commands_between, time_calls


def test_time_calls_takes_one_sample_per_call_and_swallows_errors() -> None:
    def boom() -> None:
        raise ConnectionError("down")

    samples = time_calls(boom, 7)
    assert len(samples) == 7
    assert all(s >= 0 for s in samples)


def test_samples_report_microseconds_and_commands_per_call() -> None:
    samples = Samples()
    samples.add([1000 * n for n in range(1, 101)], commands=50)
    assert samples.median == 51.0
    assert samples.p99 == 100.0
    assert samples.commands_per_call == 0.5


def test_commands_between_leaves_out_info_and_unchanged_counts() -> None:
    before = {"info": 3, "evalsha": 10, "ping": 1}
    after = {"info": 9, "evalsha": 12, "ping": 1, "hmget": 2}
    assert commands_between(before, after) == {"evalsha": 2, "hmget": 2}


def test_in_process_subjects_do_what_their_case_says() -> None:
    subjects = [bare(), pybreaker_memory()]
    interlock = interlock_subject(None, "smoke")
    if not interlock.skipped:
        subjects.append(interlock)
    for subject in subjects:
        check(subject)
        subject.close()


def test_check_rejects_a_refused_case_that_admits() -> None:
    wrong = Subject("wrong", {"refused": succeed})
    with pytest.raises(RuntimeError, match="admitted"):
        check(wrong)


def test_measure_fills_every_case_and_the_table_renders() -> None:
    subjects = [bare(), pybreaker_memory()]
    results = measure(subjects, CASES, Budget(local_calls=40, remote_calls=4, rounds=2))
    assert {key for key in results} == {(s.label, c) for s in subjects for c in CASES}
    assert all(len(samples.values) == 40 for samples in results.values())
    text = report.latency_table(subjects, report.Numbers(results))
    assert PYBREAKER_MEMORY in text
    assert text.count("\n") == 1 + len(results)


def _fixed(median_us: float) -> Samples:
    return Samples(values=[round(median_us * 1000)] * 3)


def test_goals_use_overheads_measured_in_the_same_run() -> None:
    medians = {
        BARE: 1.0,
        PYBREAKER_MEMORY: 3.0,
        CACHED: 4.0,
        PYBREAKER_REDIS: 101.0,
        STRICT: 141.0,
        EVALSHA: 100.0,
    }
    results = {(label, "healthy"): _fixed(value) for label, value in medians.items()}
    numbers = report.Numbers(results)  # type: ignore[arg-type]
    refused = RoundTripCheck("refused", 1000, 0.5, {}, 1.0)
    trips = Propagation("listener", 4, 3, each=[1.0] * 12, all_refuse=[2.0, 3.0, 11.0])
    goals = report.goals(numbers, [refused], [trips])
    assert [goal.met for goal in goals] == [True, True, True, False, False]
    assert "1.50x" in goals[0].measured  # (4 - 1) / (3 - 1)
    assert "33x" in goals[1].measured  # (101 - 1) / (4 - 1)
    assert "p99 11.00 ms" in goals[3].measured
    assert "1.40x" in goals[4].measured  # (141 - 1) / 100


def test_a_refused_loop_may_refresh_once_per_cache_ttl_but_never_per_call() -> None:
    assert RoundTripCheck("refused", 10_000, 2.5, {"evalsha": 2}, 1.0).met
    assert not RoundTripCheck("refused", 10_000, 0.5, {"evalsha": 1}, 1.0).met


def test_store_load_scenarios_cover_one_to_eight_processes() -> None:
    for quick in (True, False):
        healthy = [s for s in scenarios(quick) if s.label == "healthy" and s.rate == 500]
        assert [s.processes for s in healthy] == [1, 2, 4, 8]
