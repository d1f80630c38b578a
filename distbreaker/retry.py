"""When to try again: backoff with jitter, ``Retry-After``, and a total deadline.

Pure decisions shared by ``NetworkOperation`` and its async twin; they differ only in how
they sleep.
"""

from __future__ import annotations

import random

from distbreaker.classify import Verdict
from distbreaker.config import RetryPolicy


def next_delay(
    policy: RetryPolicy,
    attempt: int,
    verdict: Verdict,
    elapsed: float,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or ``None`` to stop now.

    Stops when the attempts are used up, when the error is not worth retrying, and when
    the wait would end past ``policy.deadline`` (measured from the first attempt). An
    upstream's ``Retry-After`` lengthens the wait, capped by ``max_delay``.
    """
    if attempt >= policy.max_attempts or not verdict.retryable:
        return None
    delay = policy.delay(attempt, rng)
    if policy.honor_retry_after and verdict.retry_after is not None:
        delay = max(delay, min(verdict.retry_after, policy.max_delay))
    if policy.deadline is not None and elapsed + delay > policy.deadline:
        return None
    return delay
