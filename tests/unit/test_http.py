"""What the httpx transports and the requests adapter share: names, breakers, verdicts."""

from __future__ import annotations

import logging
import threading

import pytest

from distbreaker._http import (
    Breakers,
    CountedResponse,
    check_name_rule,
    error_classifier,
    response_verdict,
    upstream_name,
)
from distbreaker.classify import FAILURE, IGNORED, Verdict, for_status
from distbreaker.config import validate_name


@pytest.mark.parametrize(
    ("scheme", "host", "port", "expected"),
    [
        ("http", "127.0.0.1", 8080, "http:127.0.0.1:8080"),
        ("https", "api.github.com", None, "https:api.github.com:443"),
        ("http", "example.com", None, "http:example.com:80"),
        ("HTTPS", "API.Example.COM", 443, "https:api.example.com:443"),
        ("https", "example.com.", None, "https:example.com:443"),
        ("http", "[::1]", 8080, "http:::1:8080"),
        ("http", "::1", 8080, "http:::1:8080"),
        ("https", "xn--bcher-kva.example", None, "https:xn--bcher-kva.example:443"),
        ("http", "under_score.test", 81, "http:under_score.test:81"),
    ],
)
def test_readable_names_are_scheme_host_port(
    scheme: str, host: str, port: int | None, expected: str
) -> None:
    assert upstream_name(scheme, host, port) == expected


@pytest.mark.parametrize(
    "host",
    ["a" * 200, "fe80::1%25eth0", "bücher.example", "bad host", "x" * 123],
)
def test_hosts_that_cannot_be_spelled_get_a_valid_digested_name(host: str) -> None:
    name = upstream_name("https", host, 8443)
    assert validate_name(name) == name
    assert name.startswith("https:")
    assert name.endswith(":8443")
    assert ".H" in name  # the digest marker: uppercase never appears in a readable name
    assert upstream_name("https", host, 8443) == name  # stable
    assert upstream_name("https", host + "b", 8443) != name  # distinct
    assert upstream_name("https", host, 8444) != name


def test_names_that_differ_only_in_scheme_port_or_ipv6_form_stay_distinct() -> None:
    names = {
        upstream_name("http", "::1", 80),
        upstream_name("http", "::1:80", None),
        upstream_name("https", "::1", 80),
        upstream_name("http", "::1", 443),
        upstream_name("http", "::", 180),
        upstream_name("ftp", "::1", None),
    }
    assert len(names) == 6
    assert all(validate_name(name) for name in names)


def test_very_long_hosts_sharing_a_prefix_get_different_names() -> None:
    prefix = "a" * 100
    first = upstream_name("https", prefix + ".one.example", None)
    second = upstream_name("https", prefix + ".two.example", None)
    assert first != second
    assert len(first) <= 128
    assert len(second) <= 128


def test_breakers_are_built_once_per_name_even_when_threads_race() -> None:
    built: list[str] = []
    barrier = threading.Barrier(8)

    def build(name: str) -> object:
        built.append(name)
        return object()

    breakers: Breakers[object] = Breakers(build)
    seen: list[object] = []

    def worker() -> None:
        barrier.wait(timeout=10)
        seen.append(breakers.get("shared"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert built == ["shared"]
    assert len(seen) == 8
    assert all(item is seen[0] for item in seen)
    assert breakers.get("other") is not seen[0]
    assert sorted(breakers.snapshot()) == ["other", "shared"]


def test_response_verdicts_follow_the_shared_classification() -> None:
    assert response_verdict(for_status, 503, {}, "n").counts
    assert response_verdict(for_status, 200, {}, "n") == IGNORED
    assert response_verdict(for_status, 404, {}, "n") == IGNORED
    held = response_verdict(for_status, 429, {"Retry-After": "30"}, "n")
    assert (held.rate_limited, held.retry_after, held.counts) == (True, 30.0, False)


def test_a_rate_limit_that_asks_for_no_wait_holds_nothing() -> None:
    assert response_verdict(for_status, 429, {"Retry-After": "0"}, "n") == IGNORED


def test_a_bool_from_a_response_classifier_is_a_verdict() -> None:
    assert response_verdict(lambda status, headers: status == 404, 404, {}, "n") == FAILURE
    assert response_verdict(lambda status, headers: False, 503, {}, "n") == IGNORED


def test_a_failing_response_classifier_counts_nothing_and_logs_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(status: int, headers: object) -> bool:
        raise KeyError("oops")

    with caplog.at_level(logging.WARNING, logger="distbreaker"):
        assert response_verdict(broken, 503, {}, "svc") == IGNORED
    assert len(caplog.records) == 1
    assert "'svc'" in caplog.records[0].getMessage()
    assert "KeyError" in caplog.records[0].getMessage()


def test_counted_responses_keep_their_verdict_and_errors_go_to_the_classifier() -> None:
    held = Verdict(counts=False, retryable=False, rate_limited=True, retry_after=5.0)
    judge = error_classifier(lambda error: isinstance(error, KeyError))
    assert judge(CountedResponse(object(), held)) is held
    assert judge(KeyError("x")) is True
    assert judge(ValueError("x")) is False
    default = error_classifier(None)
    assert default(ConnectionError("down")) == FAILURE


def test_name_rules_are_checked_before_use() -> None:
    check_name_rule(None)
    check_name_rule("svc:payments")
    check_name_rule(lambda request: "x")
    with pytest.raises(ValueError, match="invalid breaker name"):
        check_name_rule("no spaces please")
    with pytest.raises(TypeError, match="name must be"):
        check_name_rule(42)
