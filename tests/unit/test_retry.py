"""Backoff sequences, jitter bounds, Retry-After and the deadline: the pure retry decisions."""

from __future__ import annotations

import email.utils
import random

import pytest
import redis
from pydantic import ValidationError

from distbreaker import RetryPolicy, create_network_operation
from distbreaker.classify import FAILURE, IGNORED, Verdict, for_status, parse_retry_after
from distbreaker.retry import GiveUp, Retry, RetryBudget, after_failure

NOW = 1_700_000_000.0
RATE_LIMITED = Verdict(counts=False, retryable=False, rate_limited=True, retry_after=60)


def asks(seconds: float) -> Verdict:
    """A counted, retryable failure whose answer carried ``Retry-After: seconds``."""
    return Verdict(counts=True, retryable=True, retry_after=seconds)


# -- delays ---------------------------------------------------------------------------------


def test_backoff_grows_by_multiplier_and_is_capped() -> None:
    policy = RetryPolicy(base_delay=1, multiplier=2, max_delay=10, jitter=0)
    assert [policy.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_the_seed_defaults_give_one_then_two_seconds() -> None:
    policy = RetryPolicy(jitter=0)
    steps = [after_failure(policy, n, FAILURE, 0) for n in (1, 2, 3)]
    assert steps == [Retry(1.0), Retry(2.0), GiveUp("attempts used", fallback=True)]


def test_multiplier_three_and_a_small_base() -> None:
    policy = RetryPolicy(base_delay=0.2, multiplier=3, max_delay=5, jitter=0)
    assert [policy.delay(n) for n in range(1, 6)] == pytest.approx([0.2, 0.6, 1.8, 5.0, 5.0])


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert RetryPolicy(max_delay=30).backoff(10_000) == 30


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5])
def test_jitter_stays_within_its_fraction(attempt: int) -> None:
    policy = RetryPolicy(base_delay=1, multiplier=2, max_delay=30, jitter=0.1)
    rng = random.Random(7)
    delays = [policy.delay(attempt, rng) for _ in range(500)]
    centre = policy.backoff(attempt)
    assert all(centre * 0.9 <= d <= min(centre * 1.1, 30) for d in delays)
    assert len(set(delays)) > 400  # it really is spread
    assert min(delays) < centre * 0.92
    assert max(delays) > min(centre * 1.08, 29.9)


def test_jitter_never_pushes_past_max_delay() -> None:
    policy = RetryPolicy(base_delay=30, max_delay=30, jitter=0.5)
    rng = random.Random(3)
    assert max(policy.delay(1, rng) for _ in range(200)) <= 30


def test_seeded_jitter_is_reproducible() -> None:
    policy = RetryPolicy(max_attempts=6)
    first = [policy.delay(n, random.Random(42)) for n in range(1, 6)]
    again = [policy.delay(n, random.Random(42)) for n in range(1, 6)]
    assert first == again


def test_full_jitter_spreads_from_zero_to_the_backoff() -> None:
    policy = RetryPolicy(base_delay=4, full_jitter=True)
    rng = random.Random(1)
    delays = [policy.delay(1, rng) for _ in range(500)]
    assert 0 <= min(delays) < 0.5
    assert 3.5 < max(delays) <= 4
    assert sum(delays) / len(delays) == pytest.approx(2, abs=0.25)


def test_attempts_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        RetryPolicy().delay(0)


# -- what to do after a failure -------------------------------------------------------------


def test_stops_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3, jitter=0)
    assert after_failure(policy, 1, FAILURE, 0) == Retry(1)
    assert after_failure(policy, 2, FAILURE, 0) == Retry(2)
    assert after_failure(policy, 3, FAILURE, 0) == GiveUp("attempts used", fallback=True)


def test_a_single_attempt_policy_never_retries() -> None:
    assert after_failure(RetryPolicy(max_attempts=1), 1, FAILURE, 0) == GiveUp(
        "attempts used", fallback=True
    )


def test_errors_that_do_not_count_stop_without_fallback() -> None:
    assert after_failure(RetryPolicy(), 1, IGNORED, 0) == GiveUp("not retryable", fallback=False)


def test_counted_but_not_retryable_stops_with_fallback() -> None:
    verdict = Verdict(counts=True, retryable=False)
    assert after_failure(RetryPolicy(), 1, verdict, 0) == GiveUp("not retryable", fallback=True)


def test_rate_limits_are_not_retried_but_may_fall_back() -> None:
    step = after_failure(RetryPolicy(), 1, RATE_LIMITED, 0)
    assert step == GiveUp("not retryable", fallback=True, hold_open=None)  # the breaker holds


def test_retry_after_lengthens_the_wait() -> None:
    policy = RetryPolicy(max_attempts=5, base_delay=1, max_delay=20, jitter=0)
    assert after_failure(policy, 1, asks(12), 0) == Retry(12)
    assert after_failure(policy, 1, asks(20), 0) == Retry(20)  # exactly max_delay: still waits
    assert after_failure(policy, 4, asks(3), 0) == Retry(8)  # backoff already longer


def test_retry_after_beyond_max_delay_holds_the_breaker_instead_of_sleeping() -> None:
    policy = RetryPolicy(max_attempts=5, base_delay=1, max_delay=20, jitter=0)
    assert after_failure(policy, 1, asks(90), 0) == GiveUp("retry-after too long", True, 90)
    greedy = after_failure(policy, 1, asks(10**9), 0)
    assert greedy == GiveUp("retry-after too long", True, 3600)  # an upstream's word is capped


def test_honor_retry_after_false_ignores_it_entirely() -> None:
    ignoring = RetryPolicy(max_attempts=5, jitter=0, honor_retry_after=False)
    assert after_failure(ignoring, 1, asks(12), 0) == Retry(1)
    assert after_failure(ignoring, 1, asks(3600), 0) == Retry(1)


def test_retry_after_from_a_503_in_seconds_and_as_a_date() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=1, max_delay=30, jitter=0)
    in_seconds = for_status(503, {"retry-after": "7"}, now=NOW)
    assert after_failure(policy, 1, in_seconds, 0) == Retry(7)
    date = email.utils.formatdate(NOW + 25, usegmt=True)
    as_date = for_status(503, {"retry-after": date}, now=NOW)
    assert after_failure(policy, 1, as_date, 0) == Retry(25)
    far = email.utils.formatdate(NOW + 600, usegmt=True)
    assert after_failure(policy, 1, for_status(503, {"retry-after": far}, now=NOW), 0) == GiveUp(
        "retry-after too long", True, 600
    )


def test_never_sleeps_past_the_deadline() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=1, jitter=0, deadline=5)
    assert after_failure(policy, 1, FAILURE, elapsed=3.0) == Retry(1)
    assert after_failure(policy, 2, FAILURE, elapsed=3.0) == Retry(2)  # ends at the deadline
    assert after_failure(policy, 2, FAILURE, elapsed=3.5) == GiveUp("deadline", fallback=True)


def test_deadline_also_bounds_a_retry_after_wait() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=1, max_delay=30, jitter=0, deadline=10)
    assert after_failure(policy, 1, asks(12), elapsed=0) == GiveUp("deadline", fallback=True)


def test_deadline_holds_for_every_jittered_wait() -> None:
    policy = RetryPolicy(max_attempts=50, base_delay=0.5, max_delay=4, jitter=0.5, deadline=20)
    rng = random.Random(11)
    for _ in range(200):
        elapsed, attempt = 0.0, 1
        while isinstance(step := after_failure(policy, attempt, FAILURE, elapsed, rng), Retry):
            elapsed += step.wait + 0.01  # each attempt takes 10 ms
            attempt += 1
        assert elapsed <= 20 + 0.01
        assert step.reason == "deadline"


# -- Retry-After values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120),
        (" 5 ", 5),
        ("0", 0),
        ("1.5", 1.5),  # not RFC 9110, but servers send it
        ("Tue, 14 Nov 2023 22:15:20 GMT", 120),  # IMF-fixdate
        ("Tue, 14 Nov 2023 22:15:20 -0000", 120),  # no zone named: UTC
        ("Tuesday, 14-Nov-23 22:15:20 GMT", 120),  # obsolete RFC 850 form
        ("Tue, 14 Nov 2023 22:00:00 GMT", 0),  # already past
        ("soon", None),
        ("-5", None),
        ("nan", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_forms(value: str | None, seconds: float | None) -> None:
    parsed = parse_retry_after(value, NOW)
    if seconds is None:
        assert parsed is None
    else:
        assert parsed == pytest.approx(seconds)


# -- retry budget ---------------------------------------------------------------------------


def test_budget_allows_retries_while_more_than_half_the_tokens_are_left() -> None:
    budget = RetryBudget(max_tokens=4, token_ratio=0.5)
    assert budget.can_retry()
    budget.record_failure()
    assert (budget.tokens, budget.can_retry()) == (3, True)
    budget.record_failure()
    assert (budget.tokens, budget.can_retry()) == (2, False)  # exactly half: no more retries
    for _ in range(10):
        budget.record_failure()
    assert budget.tokens == 0  # never below zero
    for _ in range(5):
        budget.record_success()
    assert (budget.tokens, budget.can_retry()) == (2.5, True)
    for _ in range(100):
        budget.record_success()
    assert budget.tokens == 4  # never above the maximum
    assert repr(budget) == "<RetryBudget 4.0/4 tokens>"


def test_a_spent_budget_stops_retries_with_fallback() -> None:
    step = after_failure(RetryPolicy(), 1, FAILURE, 0, budget_left=False)
    assert step == GiveUp("retry budget", fallback=True)
    last = after_failure(RetryPolicy(max_attempts=1), 1, FAILURE, 0, budget_left=False)
    assert last == GiveUp(
        "attempts used", fallback=True
    )  # the budget only matters when a retry was next


@pytest.mark.parametrize(("tokens", "ratio"), [(0.5, 0.1), (2000, 0.1), (10, 0), (10, 1.5)])
def test_budget_settings_are_checked(tokens: float, ratio: float) -> None:
    with pytest.raises(ValueError, match=r"max_tokens|token_ratio"):
        RetryBudget(tokens, ratio)


# -- bad settings are refused before anything runs (issue 12, defect 7) -----------------


@pytest.mark.parametrize(
    "settings",
    [
        {"base_delay": float("inf")},
        {"max_delay": float("inf")},
        {"base_delay": 1e300, "max_delay": 1e300},
        {"deadline": float("inf")},
        {"deadline": float("nan")},
        {"multiplier": float("inf")},
        {"multiplier": 1e300},
        {"jitter": float("nan")},
        {"max_attempts": True},
        {"base_delay": True},
        {"full_jitter": 1},
        {"honor_retry_after": "yes"},
    ],
)
def test_policy_refuses_what_no_retry_could_mean(settings: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RetryPolicy(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "arguments",
    [
        {"base_delay": float("inf")},
        {"base_delay": float("nan")},
        {"base_delay": 1e300},
        {"max_delay": float("inf")},
        {"deadline": float("inf")},
        {"max_retries": True},
        {"circuit_threshold": True},
        {"circuit_reset_timeout": float("inf")},
        {"base_delay": "soon"},
    ],
)
def test_create_network_operation_refuses_bad_input_before_any_io(
    arguments: dict[str, object],
) -> None:
    """An unreachable Redis: a clear error before anything is asked of it."""
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.01)
    with pytest.raises(ValidationError):
        create_network_operation("svc", client, **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(("tokens", "ratio"), [(True, 0.1), (10, True), ("10", 0.1)])
def test_budget_refuses_what_is_not_a_number(tokens: object, ratio: object) -> None:
    with pytest.raises(TypeError):
        RetryBudget(tokens, ratio)  # type: ignore[arg-type]
