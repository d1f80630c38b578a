"""One breaker per GitHub API host: an outage of github.com never refuses a GHES server."""

from __future__ import annotations

import uuid

import fakeredis
import httpx
import pytest

from distbreaker import BreakerConfig
from distbreaker.github import (
    UNAVAILABLE,
    GitHubClient,
    create_async_github_operation,
    create_github_operation,
    github_breaker_name,
)


@pytest.mark.parametrize(
    ("base_url", "name"),
    [
        ("https://api.github.com", "github"),
        ("https://API.GitHub.com:443/", "github"),
        ("https://ghe.example.com/api/v3", "github:ghe.example.com"),
        ("https://ghe.example.com:8443/api/v3", "github:ghe.example.com:8443"),
        ("http://127.0.0.1:8080", "github:127.0.0.1:8080"),
        ("http://[::1]:9000", "github:::1:9000"),
        ("https://bücher.example/api", "github:xn--bcher-kva.example"),
    ],
)
def test_the_default_breaker_name_identifies_the_api_host(base_url: str, name: str) -> None:
    assert github_breaker_name(base_url) == name


def test_a_bad_base_url_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="base_url"):
        github_breaker_name("ftp://ghe.example.com")


def test_the_operations_take_the_base_urls_breaker() -> None:
    sync = create_github_operation(fakeredis.FakeRedis(), base_url="https://ghe.example.com")
    assert sync.breaker.name == "github:ghe.example.com"
    run = create_async_github_operation(
        fakeredis.FakeAsyncRedis(), base_url="https://ghe.example.com"
    )
    assert run.breaker.name == "github:ghe.example.com"
    assert create_github_operation(fakeredis.FakeRedis()).breaker.name == "github"


def test_an_outage_of_github_com_does_not_refuse_calls_to_an_enterprise_server() -> None:
    server = fakeredis.FakeServer()
    prefix = f"t-{uuid.uuid4().hex[:10]}"
    requests: dict[str, int] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        requests[host] = requests.get(host, 0) + 1
        if host == "api.github.com":
            return httpx.Response(503, json={"message": "down"})
        return httpx.Response(200, json={"full_name": "octo/widgets", "permissions": {}})

    def client(base_url: str) -> GitHubClient:
        config = BreakerConfig(key_prefix=prefix, consistency="strict")
        operation = create_github_operation(
            fakeredis.FakeRedis(server=server),
            base_url=base_url,
            config=config,
            sleep=lambda seconds: None,
        )
        transport = httpx.MockTransport(handler)
        return GitHubClient(
            "ghp_" + "x" * 36,
            operation=operation,
            base_url=base_url,
            http=httpx.Client(transport=transport),
            token_cache_path=None,
        )

    public, enterprise = client("https://api.github.com"), client("https://ghe.example.com/api/v3")
    for _ in range(3):
        assert public.test_repository_access("octo/widgets").reason == UNAVAILABLE
    assert public.operation is not None
    assert public.operation.status().state == "open"
    for _ in range(3):
        assert enterprise.test_repository_access("octo/widgets").accessible
    assert requests == {"api.github.com": 5, "ghe.example.com": 3}
