"""distbreaker: one circuit breaker per upstream, shared through Redis by every worker."""

from distbreaker.breaker import AsyncBreaker, Breaker, BreakerStatus
from distbreaker.config import BreakerConfig, RetryPolicy
from distbreaker.errors import (
    CircuitOpenError,
    DistbreakerError,
    ImageUnavailableError,
    StoreUnavailableError,
    TokenUnavailableError,
)
from distbreaker.store import connect, connect_async

__version__ = "0.1.0"

__all__ = [
    "AsyncBreaker",
    "Breaker",
    "BreakerConfig",
    "BreakerStatus",
    "CircuitOpenError",
    "DistbreakerError",
    "ImageUnavailableError",
    "RetryPolicy",
    "StoreUnavailableError",
    "TokenUnavailableError",
    "__version__",
    "connect",
    "connect_async",
]
