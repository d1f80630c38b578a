"""Validated, immutable configuration: ``BreakerConfig`` and ``RetryPolicy``."""

from __future__ import annotations

import json
import random
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_PREFIX = re.compile(r"[A-Za-z0-9._:-]{1,64}", re.ASCII)
_NAME = re.compile(r"[A-Za-z0-9._:-]{1,128}", re.ASCII)


def validate_name(name: object) -> str:
    """Return ``name`` if it is a valid breaker name, else raise ``ValueError``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid breaker name {name!r}: use 1-128 characters of A-Z a-z 0-9 . _ - :"
        )
    return name


class BreakerConfig(BaseModel):
    """How one breaker trips, waits and recovers. Durations are seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    failure_threshold: int = Field(5, ge=1, le=100_000)
    window: float = Field(120.0, gt=0, le=86_400 * 7)
    reset_timeout: float = Field(60.0, gt=0, le=86_400 * 7)
    half_open_max_calls: int = Field(1, ge=1, le=10_000)
    success_threshold: int = Field(1, ge=1, le=10_000)
    probe_timeout: float = Field(30.0, gt=0, le=86_400)
    slow_call_threshold: float | None = Field(None, gt=0)
    key_prefix: str = "distbreaker"
    on_store_error: Literal["fail_open", "fail_closed", "raise"] = "fail_open"
    consistency: Literal["cached", "strict"] = "cached"
    cache_ttl: float = Field(1.0, gt=0, le=3600)

    @field_validator("key_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _PREFIX.fullmatch(value):
            raise ValueError("key_prefix must be 1-64 characters of A-Z a-z 0-9 . _ - :")
        return value

    @model_validator(mode="after")
    def _check_windows(self) -> BreakerConfig:
        for field in ("window", "reset_timeout", "probe_timeout"):
            if getattr(self, field) < 0.001:
                raise ValueError(f"{field} must be at least 0.001 s (keys use milliseconds)")
        return self

    def as_json(self) -> str:
        """The settings that shape the state machine, as stored in the state hash."""
        return json.dumps(
            {
                "failure_threshold": self.failure_threshold,
                "window": self.window,
                "reset_timeout": self.reset_timeout,
                "half_open_max_calls": self.half_open_max_calls,
                "success_threshold": self.success_threshold,
                "probe_timeout": self.probe_timeout,
            },
            separators=(",", ":"),
        )


class RetryPolicy(BaseModel):
    """Exponential backoff with jitter, a total deadline and ``Retry-After`` support.

    ``delay(n)`` is the wait after attempt ``n`` (1-based):
    ``min(base_delay * multiplier**(n-1), max_delay)`` spread by ``± jitter`` of itself.
    With ``full_jitter=True`` the wait is uniform in ``[0, that]`` instead (least total work).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(3, ge=1, le=100)
    base_delay: float = Field(1.0, ge=0)
    max_delay: float = Field(30.0, ge=0)
    multiplier: float = Field(2.0, ge=1.0)
    jitter: float = Field(0.1, ge=0, le=1)
    deadline: float | None = Field(None, gt=0)
    full_jitter: bool = False
    honor_retry_after: bool = True

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
