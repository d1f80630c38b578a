"""distbreaker: one circuit breaker per upstream, shared through Redis by every worker."""

from importlib.metadata import PackageNotFoundError, version

from distbreaker.breaker import AsyncBreaker, Breaker
from distbreaker.classify import Verdict
from distbreaker.config import BreakerConfig
from distbreaker.errors import (
    CircuitOpenError,
    DistbreakerError,
    ImageUnavailableError,
    PermissionDeniedError,
    StoreUnavailableError,
    TokenUnavailableError,
)
from distbreaker.operation import (
    AsyncNetworkOperation,
    NetworkOperation,
    create_async_network_operation,
    create_network_operation,
)
from distbreaker.retry import FleetRetryBudget, RetryBudget, RetryPolicy
from distbreaker.status import BreakerStatus
from distbreaker.store import connect, connect_async, connect_cluster, connect_cluster_async

try:
    __version__ = version("distbreaker")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AsyncBreaker",
    "AsyncNetworkOperation",
    "Breaker",
    "BreakerConfig",
    "BreakerStatus",
    "CircuitOpenError",
    "DistbreakerError",
    "FleetRetryBudget",
    "ImageUnavailableError",
    "NetworkOperation",
    "PermissionDeniedError",
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
