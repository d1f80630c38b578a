"""The classification table, row by row: counts? retried? rate limit?"""

from __future__ import annotations

import errno
import json
from typing import Any

import docker.errors
import httpx
import pytest
import requests

from distbreaker.classify import Verdict, classify, for_status

NOW = 1_700_000_000.0
REQUEST = httpx.Request("GET", "https://api.github.com/repos/o/r")


def http_error(status: int, headers: dict[str, str] | None = None, body: str = "") -> Exception:
    response = httpx.Response(status, headers=headers, text=body, request=REQUEST)
    return httpx.HTTPStatusError(f"{status}", request=REQUEST, response=response)


def requests_http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status}", response=response)


def docker_api_error(status: int, explanation: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps({"message": explanation}).encode()
    return docker.errors.APIError(explanation, response=response, explanation=explanation)


COUNTED = (True, True, False)  # counts, retryable, rate_limited
NOT_COUNTED = (False, False, False)
RATE_LIMITED = (False, False, True)

TABLE: list[tuple[str, Any, tuple[bool, bool, bool]]] = [
    ("httpx connect error", httpx.ConnectError("refused", request=REQUEST), COUNTED),
    ("httpx read timeout", httpx.ReadTimeout("slow", request=REQUEST), COUNTED),
    ("httpx remote protocol", httpx.RemoteProtocolError("reset", request=REQUEST), COUNTED),
    ("httpx pool timeout (ours)", httpx.PoolTimeout("full", request=REQUEST), NOT_COUNTED),
    ("httpx bad scheme", httpx.UnsupportedProtocol("ftp://"), NOT_COUNTED),
    ("http 500", http_error(500), COUNTED),
    ("http 502", http_error(502), COUNTED),
    ("http 503", http_error(503), COUNTED),
    ("http 504", http_error(504), COUNTED),
    ("http 501", http_error(501), NOT_COUNTED),
    ("http 505", http_error(505), NOT_COUNTED),
    ("http 400", http_error(400), NOT_COUNTED),
    ("http 401", http_error(401), NOT_COUNTED),
    ("http 403 forbidden", http_error(403, body="Resource not accessible"), NOT_COUNTED),
    ("http 404", http_error(404), NOT_COUNTED),
    ("http 409", http_error(409), NOT_COUNTED),
    ("http 422", http_error(422), NOT_COUNTED),
    ("http 429", http_error(429, {"retry-after": "30"}), RATE_LIMITED),
    (
        "http 403 primary limit",
        http_error(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 600)}),
        RATE_LIMITED,
    ),
    ("http 403 secondary limit", http_error(403, {"retry-after": "60"}), RATE_LIMITED),
    ("requests connection error", requests.ConnectionError("refused"), COUNTED),
    ("requests timeout", requests.Timeout("slow"), COUNTED),
    ("requests 503", requests_http_error(503), COUNTED),
    ("requests 404", requests_http_error(404), NOT_COUNTED),
    ("requests invalid url", requests.exceptions.InvalidURL("x"), NOT_COUNTED),
    (
        "docker 500 registry down",
        docker_api_error(500, 'Get "https://registry-1.docker.io/v2/": dial tcp: i/o timeout'),
        COUNTED,
    ),
    ("docker 404", docker_api_error(404, "manifest unknown"), NOT_COUNTED),
    (
        "docker toomanyrequests",
        docker_api_error(500, "toomanyrequests: You have reached your pull rate limit"),
        RATE_LIMITED,
    ),
    ("docker daemon unreachable", docker.errors.DockerException("Error while fetching"), COUNTED),
    ("OSError network", OSError(errno.ENETUNREACH, "unreachable"), COUNTED),
    ("ConnectionRefusedError", ConnectionRefusedError("refused"), COUNTED),
    ("TimeoutError", TimeoutError("slow"), COUNTED),
    ("FileNotFoundError", FileNotFoundError("x"), NOT_COUNTED),
    ("PermissionError", PermissionError("x"), NOT_COUNTED),
    ("ValueError", ValueError("bad input"), NOT_COUNTED),
    ("KeyError", KeyError("bug"), NOT_COUNTED),
]


@pytest.mark.parametrize(
    ("error", "expected"), [(e, x) for _, e, x in TABLE], ids=[row[0] for row in TABLE]
)
def test_classification_table(error: Exception, expected: tuple[bool, bool, bool]) -> None:
    verdict = classify(error)
    assert (verdict.counts, verdict.retryable, verdict.rate_limited) == expected


def test_primary_rate_limit_waits_until_reset() -> None:
    headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 600)}
    assert for_status(403, headers, now=NOW).retry_after == pytest.approx(600)


def test_secondary_rate_limit_without_header_waits_a_minute() -> None:
    verdict = for_status(403, {}, body="You have exceeded a secondary rate limit", now=NOW)
    assert verdict == Verdict(False, False, rate_limited=True, retry_after=60)


def test_rate_limit_waits_are_capped() -> None:
    assert for_status(429, {"retry-after": "999999"}, now=NOW).retry_after == 3600


def test_5xx_carries_retry_after_when_given() -> None:
    assert for_status(503, {"retry-after": "7"}, now=NOW).retry_after == 7
