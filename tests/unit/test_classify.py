"""The classification table, row by row: counts? retried? rate limit?"""

from __future__ import annotations

import email.message
import email.utils
import errno
import io
import json
import socket
import ssl
import urllib.error
from typing import Any

import docker.errors
import httpx
import pytest
import requests

from distbreaker.classify import (
    DEFAULT_RATE_LIMIT_WAIT,
    FAILURE,
    IGNORED,
    Verdict,
    as_verdict,
    classify,
    for_status,
    is_failure,
    parse_retry_after,
    rate_limit_wait,
)

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


def urllib_error(status: int, headers: dict[str, str] | None = None) -> urllib.error.HTTPError:
    message = email.message.Message()
    for key, value in (headers or {}).items():
        message[key] = value
    return urllib.error.HTTPError("http://upstream.test/", status, "status", message, None)


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
    ("urllib 503", urllib_error(503), COUNTED),
    ("urllib 404", urllib_error(404), NOT_COUNTED),
    ("urllib 429", urllib_error(429, {"Retry-After": "5"}), RATE_LIMITED),
    ("urllib unreachable", urllib.error.URLError(ConnectionRefusedError()), COUNTED),
    ("httpx connect timeout", httpx.ConnectTimeout("slow", request=REQUEST), COUNTED),
    ("httpx write timeout", httpx.WriteTimeout("slow", request=REQUEST), COUNTED),
    ("httpx read error", httpx.ReadError("reset", request=REQUEST), COUNTED),
    ("httpx proxy error", httpx.ProxyError("proxy down", request=REQUEST), COUNTED),
    ("httpx too many redirects", httpx.TooManyRedirects("loop", request=REQUEST), NOT_COUNTED),
    ("httpx decoding error", httpx.DecodingError("gzip", request=REQUEST), NOT_COUNTED),
    ("httpx invalid url", httpx.InvalidURL("http://[::1"), NOT_COUNTED),
    (
        "http 403 rate limit text",
        http_error(403, body="API rate limit exceeded for x"),
        RATE_LIMITED,
    ),
    ("requests 500", requests_http_error(500), COUNTED),
    ("requests 501", requests_http_error(501), NOT_COUNTED),
    ("requests 429", requests_http_error(429), RATE_LIMITED),
    ("requests 401", requests_http_error(401), NOT_COUNTED),
    ("requests connect timeout", requests.ConnectTimeout("slow"), COUNTED),
    ("requests read timeout", requests.ReadTimeout("slow"), COUNTED),
    ("requests broken body", requests.exceptions.ChunkedEncodingError("cut"), COUNTED),
    ("requests gave up on 5xx", requests.exceptions.RetryError("max retries"), COUNTED),
    ("requests missing schema", requests.exceptions.MissingSchema("x"), NOT_COUNTED),
    ("requests too many redirects", requests.TooManyRedirects("loop"), NOT_COUNTED),
    ("docker 503", docker_api_error(503, "service unavailable"), COUNTED),
    ("docker 401", docker_api_error(401, "unauthorized: authentication required"), NOT_COUNTED),
    ("docker 429", docker_api_error(429, "slow down"), RATE_LIMITED),
    ("docker image not found", docker.errors.ImageNotFound("no such image"), NOT_COUNTED),
    ("OSError network", OSError(errno.ENETUNREACH, "unreachable"), COUNTED),
    ("OSError without errno", OSError("socket closed"), COUNTED),
    ("OSError disk full", OSError(errno.ENOSPC, "no space"), NOT_COUNTED),
    ("OSError too many files", OSError(errno.EMFILE, "too many open files"), NOT_COUNTED),
    ("io unsupported operation", io.UnsupportedOperation("not writable"), NOT_COUNTED),
    ("ssl certificate", ssl.SSLCertVerificationError(1, "CERTIFICATE_VERIFY_FAILED"), COUNTED),
    ("dns failure", socket.gaierror(socket.EAI_NONAME, "Name or service not known"), COUNTED),
    ("ConnectionResetError", ConnectionResetError("reset"), COUNTED),
    ("BrokenPipeError", BrokenPipeError("pipe"), COUNTED),
    ("ConnectionRefusedError", ConnectionRefusedError("refused"), COUNTED),
    ("TimeoutError", TimeoutError("slow"), COUNTED),
    ("FileNotFoundError", FileNotFoundError("x"), NOT_COUNTED),
    ("PermissionError", PermissionError("x"), NOT_COUNTED),
    ("ValueError", ValueError("bad input"), NOT_COUNTED),
    ("KeyError", KeyError("bug"), NOT_COUNTED),
    ("JSONDecodeError", json.JSONDecodeError("bad", "x", 0), NOT_COUNTED),
    ("TypeError", TypeError("bug"), NOT_COUNTED),
    ("RuntimeError", RuntimeError("bug"), NOT_COUNTED),
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


def test_429_with_an_http_date_waits_until_then() -> None:
    date = email.utils.formatdate(NOW + 45, usegmt=True)
    assert for_status(429, {"Retry-After": date}, now=NOW).retry_after == pytest.approx(45)


def test_429_without_a_time_waits_the_default() -> None:
    assert for_status(429, {}, now=NOW).retry_after == DEFAULT_RATE_LIMIT_WAIT


def test_primary_limit_without_reset_waits_the_default() -> None:
    assert rate_limit_wait(403, {"X-RateLimit-Remaining": "0"}, now=NOW) == DEFAULT_RATE_LIMIT_WAIT


def test_a_plain_403_is_not_a_rate_limit() -> None:
    assert rate_limit_wait(403, {"x-ratelimit-remaining": "4999"}, "Forbidden", NOW) is None
    assert rate_limit_wait(500, {"retry-after": "5"}, now=NOW) is None


def test_headers_are_case_insensitive_for_live_responses() -> None:
    error = http_error(503, {"Retry-After": "9"})
    assert classify(error).retry_after == 9


def test_a_rate_limit_carries_its_wait() -> None:
    verdict = classify(http_error(429, {"retry-after": "30"}))
    assert verdict == Verdict(counts=False, retryable=False, rate_limited=True, retry_after=30)


def test_docker_rate_limit_carries_the_default_wait() -> None:
    error = docker_api_error(500, "toomanyrequests: You have reached your pull rate limit")
    assert classify(error).retry_after == DEFAULT_RATE_LIMIT_WAIT


def test_predicates_may_return_a_bool() -> None:
    assert as_verdict(True) == FAILURE
    assert as_verdict(False) == IGNORED
    assert as_verdict(FAILURE) is FAILURE
    assert is_failure(ConnectionError()) is True
    assert is_failure(ValueError()) is False


# -- headers that are not what they claim (issue 12, defect 7) ------------------------


@pytest.mark.parametrize(
    "value",
    [
        "\u00b2",  # superscript two
        "\u0661\u0662",  # Arabic-Indic twelve
        "\uff13",  # fullwidth three
        "1e3",
        "inf",
        "-0",
        "+5",
        "9" * 21,
        "Fri, 31 Dec 99999 23:59:59 GMT",
    ],
)
def test_odd_retry_after_values_read_as_no_header(value: str) -> None:
    """``"\u00b2".isdigit()`` is True and ``float()`` of it raises: a ValueError before."""
    assert parse_retry_after(value, 0.0) is None
    verdict = for_status(503, {"retry-after": value}, now=0.0)
    assert verdict == Verdict(counts=True, retryable=True, retry_after=None)
    limited = for_status(429, {"retry-after": value}, now=0.0)
    assert (limited.rate_limited, limited.retry_after) == (True, DEFAULT_RATE_LIMIT_WAIT)


@pytest.mark.parametrize("reset", ["\u00b2", "\u0661\u0667" + "\u0660" * 8, "1.7e9", "soon", ""])
def test_an_odd_rate_limit_reset_waits_the_default(reset: str) -> None:
    headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}
    assert rate_limit_wait(403, headers, now=0.0) == DEFAULT_RATE_LIMIT_WAIT


def test_a_503_with_an_odd_retry_after_still_counts() -> None:
    request = httpx.Request("GET", "https://api.example.test/")
    # a server's header bytes as httpx decodes them (latin-1): "\u00b2"
    response = httpx.Response(503, headers={"Retry-After": b"\xb2"}, request=request)
    assert response.headers["retry-after"] == "\u00b2"
    error = httpx.HTTPStatusError("503", request=request, response=response)
    assert classify(error) == Verdict(counts=True, retryable=True, retry_after=None)
