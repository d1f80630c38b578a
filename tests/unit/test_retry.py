"""Backoff sequences, jitter bounds, Retry-After and the deadline."""

from __future__ import annotations

import random

import pytest

from distbreaker import RetryPolicy
from distbreaker.classify import FAILURE, IGNORED, Verdict, parse_retry_after
from distbreaker.retry import next_delay


def test_backoff_grows_by_multiplier_and_is_capped() -> None:
    policy = RetryPolicy(base_delay=1, multiplier=2, max_delay=10, jitter=0)
    assert [policy.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert RetryPolicy(max_delay=30).backoff(10_000) == 30


@pytest.mark.parametrize("attempt", [1, 2, 3, 4])
def test_jitter_stays_within_its_fraction(attempt: int) -> None:
    policy = RetryPolicy(base_delay=1, multiplier=2, max_delay=30, jitter=0.1)
    rng = random.Random(7)
    delays = [policy.delay(attempt, rng) for _ in range(500)]
    centre = policy.backoff(attempt)
    assert all(centre * 0.9 <= d <= centre * 1.1 for d in delays)
    assert len(set(delays)) > 400  # it really is spread


def test_full_jitter_spreads_from_zero() -> None:
    policy = RetryPolicy(base_delay=4, full_jitter=True)
    rng = random.Random(1)
    delays = [policy.delay(1, rng) for _ in range(500)]
    assert min(delays) < 0.5
    assert max(delays) <= 4


def test_attempts_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        RetryPolicy().delay(0)


def test_stops_after_max_attempts_and_on_errors_not_worth_retrying() -> None:
    policy = RetryPolicy(max_attempts=3, jitter=0)
    assert next_delay(policy, 1, FAILURE, 0) == 1
    assert next_delay(policy, 2, FAILURE, 0) == 2
    assert next_delay(policy, 3, FAILURE, 0) is None
    assert next_delay(policy, 1, IGNORED, 0) is None


def test_retry_after_lengthens_the_wait_capped_by_max_delay() -> None:
    policy = RetryPolicy(max_attempts=5, base_delay=1, max_delay=20, jitter=0)
    asked = Verdict(counts=True, retryable=True, retry_after=12)
    assert next_delay(policy, 1, asked, 0) == 12
    greedy = Verdict(counts=True, retryable=True, retry_after=3600)
    assert next_delay(policy, 1, greedy, 0) == 20
    ignoring = RetryPolicy(max_attempts=5, jitter=0, honor_retry_after=False)
    assert next_delay(ignoring, 1, asked, 0) == 1


def test_never_sleeps_past_the_deadline() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=1, jitter=0, deadline=5)
    assert next_delay(policy, 1, FAILURE, elapsed=3.0) == 1
    assert next_delay(policy, 2, FAILURE, elapsed=3.5) is None  # 3.5 + 2 > 5


def test_retry_after_forms() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after("Tue, 14 Nov 2023 22:15:20 GMT", now) == pytest.approx(120)
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now) == 0  # in the past
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("", now) is None
    assert parse_retry_after(None, now) is None
