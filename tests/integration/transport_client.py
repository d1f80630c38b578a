"""Another process's client: one request through its own breaker transport, reported as JSON.

    python -m tests.integration.transport_client KIND REDIS_URL KEY_PREFIX URL

KIND is ``httpx``, ``httpx-async`` or ``requests``. Prints one line: ``{"status": 200}`` for
an answer, ``{"refused": ..., "name": ..., "state": ..., "library_error": ...}`` for a
refusal (``library_error``: also the HTTP library's own error type), or ``{"error": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import distbreaker
from distbreaker import BreakerConfig, CircuitOpenError

# The settings every process of the tests uses for the shared breakers, besides the prefix.
SETTINGS: dict[str, Any] = {"failure_threshold": 3, "reset_timeout": 60.0}


def refusal(error: CircuitOpenError, library_error: type[BaseException]) -> dict[str, Any]:
    return {
        "refused": type(error).__name__,
        "name": error.name,
        "state": error.state,
        "library_error": isinstance(error, library_error),
    }


def with_httpx(redis_url: str, config: BreakerConfig, url: str) -> dict[str, Any]:
    import httpx

    from distbreaker.httpx import BreakerTransport

    redis = distbreaker.connect(redis_url, timeout=2.0)
    with httpx.Client(transport=BreakerTransport(redis, config=config), timeout=5) as client:
        try:
            return {"status": client.get(url).status_code}
        except CircuitOpenError as error:
            return refusal(error, httpx.TransportError)
        except httpx.HTTPError as error:
            return {"error": type(error).__name__}


async def with_async_httpx(redis_url: str, config: BreakerConfig, url: str) -> dict[str, Any]:
    import httpx

    from distbreaker.httpx import AsyncBreakerTransport

    redis = distbreaker.connect_async(redis_url, timeout=2.0)
    transport = AsyncBreakerTransport(redis, config=config)
    try:
        async with httpx.AsyncClient(transport=transport, timeout=5) as client:
            try:
                return {"status": (await client.get(url)).status_code}
            except CircuitOpenError as error:
                return refusal(error, httpx.TransportError)
            except httpx.HTTPError as error:
                return {"error": type(error).__name__}
    finally:
        await redis.aclose()


def with_requests(redis_url: str, config: BreakerConfig, url: str) -> dict[str, Any]:
    import requests

    from distbreaker.requests import BreakerAdapter

    redis = distbreaker.connect(redis_url, timeout=2.0)
    with requests.Session() as session:
        session.mount("http://", BreakerAdapter(redis, config=config))
        try:
            return {"status": session.get(url, timeout=5).status_code}
        except CircuitOpenError as error:
            return refusal(error, requests.ConnectionError)
        except requests.RequestException as error:
            return {"error": type(error).__name__}


def main(argv: list[str]) -> int:
    kind, redis_url, prefix, url = argv
    config = BreakerConfig(key_prefix=prefix, **SETTINGS)
    if kind == "httpx":
        result = with_httpx(redis_url, config, url)
    elif kind == "httpx-async":
        result = asyncio.run(with_async_httpx(redis_url, config, url))
    elif kind == "requests":
        result = with_requests(redis_url, config, url)
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
