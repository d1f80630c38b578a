"""distbreaker: one circuit breaker per upstream, shared through Redis by every worker."""

from distbreaker.breaker import AsyncBreaker, Breaker, BreakerStatus
from distbreaker.classify import Verdict
from distbreaker.config import BreakerConfig, RetryPolicy
from distbreaker.errors import (
    CircuitOpenError,
    DistbreakerError,
    ImageUnavailableError,
    StoreUnavailableError,
    TokenUnavailableError,
)
from distbreaker.operation import (
    AsyncNetworkOperation,
    NetworkOperation,
    create_async_network_operation,
    create_network_operation,
)
from distbreaker.retry import RetryBudget
from distbreaker.store import connect, connect_async, connect_cluster, connect_cluster_async

__version__ = "0.1.0"

__all__ = [
    "AsyncBreaker",
    "AsyncNetworkOperation",
    "Breaker",
    "BreakerConfig",
    "BreakerStatus",
    "CircuitOpenError",
    "DistbreakerError",
    "ImageUnavailableError",
    "NetworkOperation",
    "RetryBudget",
    "RetryPolicy",
    "StoreUnavailableError",
    "TokenUnavailableError",
    "Verdict",
    "__version__",
    "connect",
    "connect_async",
    "connect_cluster",
    "connect_cluster_async",
    "create_async_network_operation",
    "create_network_operation",
]
