"""``BreakerConfig``: how one breaker trips, waits and recovers (validated, immutable)."""

from __future__ import annotations

import json
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

    @property
    def window_ms(self) -> int:
        return round(self.window * 1000)

    @property
    def reset_timeout_ms(self) -> int:
        return round(self.reset_timeout * 1000)

    @property
    def probe_timeout_ms(self) -> int:
        return round(self.probe_timeout * 1000)

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
