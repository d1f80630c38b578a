"""``BreakerConfig``: how one breaker trips, waits and recovers (validated, immutable)."""

from __future__ import annotations

import hashlib
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


_HOST_NAME = re.compile(r"[a-z0-9._:-]+", re.ASCII)


def host_breaker_name(base: str, host: str, port: int | None = None) -> str:
    """The breaker name of one upstream host: ``base:host`` or ``base:host:port``.

    Case and a trailing dot do not matter and IPv6 brackets are dropped
    (``docker-registry:::1:5000``). A host that does not fit the name rules (too long, not
    IDNA-encoded) becomes ``base:<first 40 characters>.H<20 hex digits of SHA-256>``: stable,
    distinct, and never equal to a readable name (those have no uppercase letter).
    """
    validate_name(base)
    host = host.lower().removeprefix("[").removesuffix("]").removesuffix(".")
    spelled = host if port is None else f"{host}:{port}"
    readable = f"{base}:{spelled}"
    if _HOST_NAME.fullmatch(spelled) and len(readable) <= 128:
        return readable
    digest = hashlib.sha256(spelled.encode("utf-8", "surrogatepass")).hexdigest()[:20]
    shown = re.sub(r"[^a-z0-9._-]", "-", host, flags=re.ASCII)[:40]
    return validate_name(f"{base[:64]}:{shown}.H{digest}")


MAX_DURATION = 86_400 * 7  # seconds: the longest window, reset timeout or operator hold
_REPORTER = re.compile(r"[A-Za-z0-9._:-]{1,128}", re.ASCII)
# The fields stored in the state hash (``as_json``): the ones that shape the shared decision.
SHARED_FIELDS = (
    "failure_threshold",
    "window",
    "reset_timeout",
    "half_open_max_calls",
    "success_threshold",
    "probe_timeout",
    "failure_rate_threshold",
    "minimum_calls",
    "min_reporters",
    "reset_timeout_multiplier",
    "max_reset_timeout",
    "reset_jitter",
    "enforce",
)


def reporter_name(text: str) -> str:
    """``text`` made a valid reporter id (host names may hold other characters)."""
    cleaned = re.sub(r"[^A-Za-z0-9._:-]", "_", text)[:128]
    return cleaned or "unknown"


class BreakerConfig(BaseModel):
    """How one breaker trips, waits and recovers. Durations are seconds.

    The rule in closed is either the count rule (``failure_threshold`` failures inside
    ``window``) or, with ``failure_rate_threshold`` set, the rate rule (at least
    ``minimum_calls`` calls inside ``window`` and failures / calls >= the rate). Either
    opens the breaker fleet-wide only with failures from ``min_reporters`` distinct
    reporters (hosts by default); with fewer, the failing reporter protects itself alone.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    failure_threshold: int = Field(5, ge=1, le=100_000)
    window: float = Field(120.0, gt=0, le=MAX_DURATION)
    reset_timeout: float = Field(60.0, gt=0, le=MAX_DURATION)
    half_open_max_calls: int = Field(1, ge=1, le=10_000)
    success_threshold: int = Field(1, ge=1, le=10_000)
    probe_timeout: float = Field(30.0, gt=0, le=86_400)
    slow_call_threshold: float | None = Field(None, gt=0, le=MAX_DURATION)
    key_prefix: str = "distbreaker"
    on_store_error: Literal["fail_open", "fail_closed", "raise"] = "fail_open"
    consistency: Literal["cached", "strict"] = "cached"
    cache_ttl: float = Field(1.0, gt=0, le=3600)
    failure_rate_threshold: float | None = Field(None, gt=0, le=1)
    minimum_calls: int = Field(20, ge=1, le=10_000_000)
    report_interval: float = Field(0.5, ge=0.01, le=60)
    min_reporters: int = Field(1, ge=1, le=10_000)
    reporter_id: str | None = None
    reporter_scope: Literal["host", "process"] = "host"
    reset_timeout_multiplier: float = Field(1.0, ge=1, le=100)
    max_reset_timeout: float | None = Field(None, gt=0, le=MAX_DURATION)
    reset_jitter: float = Field(0.0, ge=0, le=0.5)
    enforce: bool = True

    @field_validator(
        "failure_threshold",
        "half_open_max_calls",
        "success_threshold",
        "minimum_calls",
        "min_reporters",
        "window",
        "reset_timeout",
        "probe_timeout",
        "slow_call_threshold",
        "cache_ttl",
        "failure_rate_threshold",
        "report_interval",
        "reset_timeout_multiplier",
        "max_reset_timeout",
        "reset_jitter",
        mode="before",
    )
    @classmethod
    def _no_bools(cls, value: object) -> object:
        # bool is an int to Python: True would pass as 1 and silently mean "one failure"
        if isinstance(value, bool):
            raise ValueError("must be a number, not a bool")
        return value

    @field_validator("key_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _PREFIX.fullmatch(value):
            raise ValueError("key_prefix must be 1-64 characters of A-Z a-z 0-9 . _ - :")
        return value

    @field_validator("reporter_id")
    @classmethod
    def _check_reporter(cls, value: str | None) -> str | None:
        if value is not None and not _REPORTER.fullmatch(value):
            raise ValueError("reporter_id must be 1-128 characters of A-Z a-z 0-9 . _ - :")
        return value

    @model_validator(mode="after")
    def _check_windows(self) -> BreakerConfig:
        for field in ("window", "reset_timeout", "probe_timeout"):
            if getattr(self, field) < 0.001:
                raise ValueError(f"{field} must be at least 0.001 s (keys use milliseconds)")
        if self.max_reset_timeout is not None and self.max_reset_timeout < self.reset_timeout:
            raise ValueError("max_reset_timeout must be >= reset_timeout")
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

    @property
    def max_reset_timeout_ms(self) -> int:
        """The longest open: ``max_reset_timeout``, else 7 days (only reached by backoff)."""
        return round((self.max_reset_timeout or MAX_DURATION) * 1000)

    @property
    def bucket_ms(self) -> int:
        """The width of one counting bucket: a twentieth of the window (at least 50 ms)."""
        return max(50, self.window_ms // 20)

    @property
    def rule(self) -> Literal["count", "rate"]:
        return "count" if self.failure_rate_threshold is None else "rate"

    @property
    def counts_calls(self) -> bool:
        """Whether workers report their calls in batches (the rate rule needs them)."""
        return self.failure_rate_threshold is not None

    def settings_arg(self) -> str:
        """The scripts' settings argument: integers only, so Lua and Python agree exactly."""
        rate = self.failure_rate_threshold
        values = (
            self.failure_threshold,
            self.window_ms,
            self.reset_timeout_ms,
            self.half_open_max_calls,
            self.success_threshold,
            self.probe_timeout_ms,
            0 if rate is None else max(1, round(rate * 1_000_000)),
            self.minimum_calls,
            self.min_reporters,
            round(self.reset_timeout_multiplier * 1000),
            self.max_reset_timeout_ms,
            round(self.reset_jitter * 1_000_000),
            self.bucket_ms,
            1 if self.enforce else 0,
        )
        return ",".join(str(v) for v in values)

    def as_json(self) -> str:
        """The settings that shape the shared decision, as stored in the state hash."""
        return json.dumps(
            {field: getattr(self, field) for field in SHARED_FIELDS}, separators=(",", ":")
        )

    def fingerprint(self) -> str:
        """A short digest of ``as_json``: equal for processes with the same shared settings."""
        return hashlib.sha1(self.as_json().encode(), usedforsecurity=False).hexdigest()[:12]
