"""A compose worker: calls the flaky upstream through the shared breaker, prints what it sees.

Settings from the environment: ``REDIS_URL``, ``UPSTREAM_URL``, ``BREAKER_NAME``,
``DISTBREAKER_PREFIX``, ``FAILURE_THRESHOLD``, ``RESET_TIMEOUT``, ``CALL_INTERVAL``.
Standard library plus distbreaker only, so the image stays small.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.error
import urllib.request
from types import FrameType

import distbreaker
from distbreaker import Breaker, BreakerConfig, CircuitOpenError
from distbreaker.classify import Verdict, classify, for_status

running = True


def stop(signum: int, frame: FrameType | None) -> None:
    global running
    running = False


def classify_http(error: BaseException) -> Verdict:
    """urllib's HTTPError by status and headers: 5xx counts, 429 holds the breaker open."""
    if isinstance(error, urllib.error.HTTPError):
        return for_status(error.code, dict(error.headers.items()))
    return classify(error)


def call_upstream(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2.0) as response:  # noqa: S310 - http only
        return str(response.status)


def main() -> None:
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    url = os.environ.get("UPSTREAM_URL", "http://upstream:8080/")
    config = BreakerConfig(
        key_prefix=os.environ.get("DISTBREAKER_PREFIX", "compose"),
        failure_threshold=int(os.environ.get("FAILURE_THRESHOLD", "6")),
        reset_timeout=float(os.environ.get("RESET_TIMEOUT", "10")),
    )
    redis = distbreaker.connect(os.environ.get("REDIS_URL", "redis://redis:6379/0"))
    name = os.environ.get("BREAKER_NAME", "upstream")
    breaker = Breaker(name, redis, config, classifier=classify_http)
    interval = float(os.environ.get("CALL_INTERVAL", "0.3"))
    host = socket.gethostname()
    print(f"worker {host}: calling {url} through breaker {breaker.name!r}", flush=True)
    while running:
        try:
            outcome = "ok " + breaker.execute(lambda: call_upstream(url))
        except CircuitOpenError as refused:
            outcome = f"refused ({refused.state}, retry in {refused.retry_after or 0:.0f}s)"
        except Exception as error:
            outcome = f"failed ({type(error).__name__}: {error})"
        status = breaker.status()
        print(
            f"worker {host}: {outcome:<40} breaker={status.state} "
            f"failures={status.failure_count} opens={status.opens_total} shared={status.store_ok}",
            flush=True,
        )
        time.sleep(interval)


if __name__ == "__main__":
    main()
