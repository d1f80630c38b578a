"""When to try again: ``RetryPolicy`` (backoff with jitter, ``Retry-After``, a total deadline).

Pure decisions shared by ``NetworkOperation`` and its async twin; they differ only in how
they sleep and talk to Redis. ``after_failure`` looks at one failed attempt and answers
either ``Retry(wait)`` or ``GiveUp(...)``.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from distbreaker.classify import MAX_RATE_LIMIT_WAIT, Verdict

if TYPE_CHECKING:
    from distbreaker.breaker import AsyncBreaker, Breaker

# The longest wait between two attempts (a day), and the longest total deadline (a week):
# anything longer is a mistake, and an infinite one would make time.sleep raise.
MAX_RETRY_DELAY = 86_400.0
MAX_DEADLINE = 7 * 86_400.0


class RetryPolicy(BaseModel):
    """Exponential backoff with jitter, a total deadline and ``Retry-After`` support.

    ``delay(n)`` is the wait after attempt ``n`` (1-based):
    ``min(base_delay * multiplier**(n-1), max_delay)`` spread by ``± jitter`` of itself.
    With ``full_jitter=True`` the wait is uniform in ``[0, that]`` instead (least total work).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    max_attempts: int = Field(3, ge=1, le=100)
    base_delay: float = Field(1.0, ge=0, le=MAX_RETRY_DELAY)
    max_delay: float = Field(30.0, ge=0, le=MAX_RETRY_DELAY)
    multiplier: float = Field(2.0, ge=1.0, le=100)
    jitter: float = Field(0.1, ge=0, le=1)
    deadline: float | None = Field(None, gt=0, le=MAX_DEADLINE)
    full_jitter: bool = Field(False, strict=True)
    honor_retry_after: bool = Field(True, strict=True)

    @field_validator(
        "max_attempts", "base_delay", "max_delay", "multiplier", "jitter", "deadline", mode="before"
    )
    @classmethod
    def _no_bools(cls, value: object) -> object:
        # bool is an int to Python: True would pass as one attempt or a one-second delay
        if isinstance(value, bool):
            raise ValueError("must be a number, not a bool")
        return value

    @model_validator(mode="after")
    def _check_delays(self) -> RetryPolicy:
        if self.max_delay < self.base_delay:
            raise ValueError("max_delay must be >= base_delay")
        return self

    def backoff(self, attempt: int) -> float:
        """The wait after ``attempt`` before jitter: ``min(base·multiplier^(n-1), max_delay)``."""
        if attempt < 1:
            raise ValueError("attempt numbers start at 1")
        exponent = min(attempt - 1, 1024)
        try:
            raw = self.base_delay * self.multiplier**exponent
        except OverflowError:
            raw = self.max_delay
        return min(raw, self.max_delay)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The jittered wait after ``attempt``; never negative, never above ``max_delay``."""
        backoff = self.backoff(attempt)
        uniform = (rng or random).uniform
        if self.full_jitter:
            return uniform(0.0, backoff)
        spread = self.jitter * backoff
        return max(0.0, min(self.max_delay, backoff + uniform(-spread, spread)))


GiveUpReason = Literal[
    "not retryable", "attempts used", "deadline", "retry-after too long", "retry budget"
]


@dataclass(frozen=True, slots=True)
class Retry:
    """Wait ``wait`` seconds, then make the next attempt."""

    wait: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """No more attempts.

    ``fallback``: the fallback may answer (the error was a counted failure or a rate limit;
    anything else propagates). ``hold_open``: first hold the shared breaker open this many
    seconds, because the upstream asked for a longer pause than ``max_delay`` allows.
    """

    reason: GiveUpReason
    fallback: bool
    hold_open: float | None = None


def after_failure(
    policy: RetryPolicy,
    attempt: int,
    verdict: Verdict,
    elapsed: float,
    rng: random.Random | None = None,
    *,
    budget_left: bool = True,
) -> Retry | GiveUp:
    """What to do after attempt ``attempt`` (1-based) failed with an error judged ``verdict``.

    ``elapsed`` is the time since the first attempt started; ``budget_left`` is False when
    a ``RetryBudget`` forbids retries. Retry-After lengthens the wait up to ``max_delay``;
    a longer one stops the retries and holds the breaker open instead, so the whole fleet
    waits as the upstream asked.
    """
    fallback = verdict.counts or verdict.rate_limited
    asked = verdict.retry_after if policy.honor_retry_after else None
    if verdict.counts and asked is not None and asked > policy.max_delay:
        return GiveUp("retry-after too long", fallback, min(asked, MAX_RATE_LIMIT_WAIT))
    if not verdict.retryable:
        return GiveUp("not retryable", fallback)
    if attempt >= policy.max_attempts:
        return GiveUp("attempts used", fallback)
    if not budget_left:
        return GiveUp("retry budget", fallback)
    wait = policy.delay(attempt, rng)
    if asked is not None:
        wait = max(wait, asked)
    if policy.deadline is not None and elapsed + wait > policy.deadline:
        return GiveUp("deadline", fallback)
    return Retry(wait)


class RetryBudget:
    """Retry throttling for one process, as gRPC does it: retries stop when most calls fail.

    Every failed attempt takes a token, every success gives back ``token_ratio``; retries
    are allowed only while more than half of ``max_tokens`` are left. Under a partial
    outage too mild to open the breaker this caps the extra load retries add. Share one
    budget between the operations that call the same upstream. Thread-safe.
    """

    def __init__(self, max_tokens: float = 10.0, token_ratio: float = 0.1) -> None:
        for value in (max_tokens, token_ratio):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError("max_tokens and token_ratio must be numbers")
        if not 1 <= max_tokens <= 1000:
            raise ValueError("max_tokens must be between 1 and 1000")
        if not 0 < token_ratio <= 1:
            raise ValueError("token_ratio must be in (0, 1]")
        self.max_tokens = float(max_tokens)
        self.token_ratio = float(token_ratio)
        self._tokens = self.max_tokens
        self._lock = threading.Lock()

    @property
    def tokens(self) -> float:
        return self._tokens

    def record_success(self) -> None:
        with self._lock:
            self._tokens = min(self.max_tokens, self._tokens + self.token_ratio)

    def record_failure(self) -> None:
        with self._lock:
            self._tokens = max(0.0, self._tokens - 1)

    def can_retry(self) -> bool:
        return self._tokens > self.max_tokens / 2

    def record_retry(self) -> None:
        """A retry is about to be made (the fleet budget counts them; tokens do not)."""

    def __repr__(self) -> str:
        return f"<RetryBudget {self._tokens:.1f}/{self.max_tokens:g} tokens>"


class FleetRetryBudget(RetryBudget):
    """A retry budget for the whole fleet, the way Envoy and Finagle define one.

    Retries inside the breaker's ``window`` stay below ``ratio`` of the calls made through
    it fleet-wide, plus a floor of ``min_retries_per_second`` (so a quiet fleet may still
    retry). The fleet's calls and retries arrive with the batched reports the breaker sends
    anyway (at most once per ``report_interval``), so a retry costs no extra round trip;
    retries this process made since the last report count at once. While Redis is
    unreachable the floor alone applies. Use one per breaker; thread-safe.
    """

    def __init__(
        self,
        breaker: Breaker | AsyncBreaker,
        ratio: float = 0.2,
        min_retries_per_second: float = 1.0,
    ) -> None:
        if isinstance(ratio, bool) or not 0 < ratio <= 10:
            raise ValueError("ratio must be in (0, 10]")
        if isinstance(min_retries_per_second, bool) or not 0 <= min_retries_per_second <= 10_000:
            raise ValueError("min_retries_per_second must be between 0 and 10000")
        self.ratio = float(ratio)
        self.min_retries_per_second = float(min_retries_per_second)
        self._breaker = breaker
        self._lock = threading.Lock()
        self._seen: object = None
        self._unreported = 0
        breaker._protocol.reports = True  # its calls and retries must reach the fleet totals

    def record_success(self) -> None:
        """Calls are counted by the breaker itself."""

    def record_failure(self) -> None:
        """Failures are counted by the breaker itself."""

    def record_retry(self) -> None:
        protocol = self._breaker._protocol
        protocol.local.counts.add_retry(protocol.clock.monotonic())
        with self._lock:
            self._sync(protocol.fleet)
            self._unreported += 1

    def _sync(self, fleet: object) -> None:
        if fleet is not self._seen:  # a new total arrived: it holds what we reported
            self._seen, self._unreported = fleet, 0

    def allowance(self) -> float:
        """Retries the fleet may make inside the window now."""
        protocol = self._breaker._protocol
        floor = self.min_retries_per_second * protocol.config.window
        if not protocol.store_ok:
            return floor
        return self.ratio * protocol.fleet.calls + floor

    def used(self) -> int:
        """Retries the fleet made inside the window, as far as this process knows."""
        protocol = self._breaker._protocol
        with self._lock:
            self._sync(protocol.fleet)
            return (protocol.fleet.retries if protocol.store_ok else 0) + self._unreported

    def can_retry(self) -> bool:
        return self.used() < self.allowance()

    def __repr__(self) -> str:
        return f"<FleetRetryBudget {self.used()}/{self.allowance():.0f} retries in window>"
