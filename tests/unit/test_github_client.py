"""GitHubClient and AsyncGitHubClient over httpx.MockTransport: every branch, both twins.

The ``twin`` fixture runs each test once with the sync client and once with the async one,
through the same small interface, so both are held to the same answers.
"""

from __future__ import annotations

import asyncio
import logging
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from distbreaker import BreakerConfig, TokenUnavailableError
from distbreaker.github import (
    UNAVAILABLE,
    AppToken,
    AsyncGitHubClient,
    GitHubAPIError,
    GitHubClient,
    create_async_github_operation,
    create_github_operation,
)

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
APP_ID = 4242
INSTALLATION = 77
USER_TOKEN = "ghp_" + "U5er" * 9
API = "https://api.example.test"

Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class FakeAPI:
    """A MockTransport handler: queued answers per route (the last one repeats)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Answer]] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, *answers: Answer) -> FakeAPI:
        self.routes[(method, path)] = list(answers)
        return self

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if (r.method, r.url.path) == (method, path))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answers = self.routes.get((request.method, request.url.path))
        if not answers:
            return httpx.Response(404, json={"message": "Not Found"})
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer) and not isinstance(answer, httpx.Response):
            return answer(request)
        return answer


def repo_answer(push: bool = False, pull: bool = True) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "full_name": "octo/widgets",
            "permissions": {"admin": False, "push": push, "pull": pull},
        },
    )


def token_answer(expires_in: float = 3600, permissions: dict[str, str] | None = None) -> Any:
    def answer(request: httpx.Request) -> httpx.Response:
        expires = datetime.fromtimestamp(time.time() + expires_in, UTC)
        return httpx.Response(
            201,
            json={
                "token": "ghs_" + uuid.uuid4().hex + uuid.uuid4().hex,
                "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "permissions": permissions or {"contents": "write", "metadata": "read"},
                "repository_selection": "selected",
            },
        )

    return answer


def rate_limited(status: int = 403, **headers: Any) -> httpx.Response:
    message = (
        "API rate limit exceeded" if "x_ratelimit_remaining" in headers else "secondary rate limit"
    )
    return httpx.Response(
        status,
        json={"message": f"You have exceeded a {message}"},
        headers={k.replace("_", "-"): v for k, v in headers.items()},
    )


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Twin:
    """One client, sync or async, driven through the same synchronous calls."""

    def __init__(self, flavor: str, api: FakeAPI, tmp_path: Path) -> None:
        self.flavor = flavor
        self.api = api
        self.sleeps: list[float] = []
        self.clock = Clock()
        self.cache_path = tmp_path / "token-cache"
        self.prefix = f"t-{uuid.uuid4().hex[:10]}"
        self.server = fakeredis.FakeServer()
        self.loop = asyncio.new_event_loop() if flavor == "async" else None
        self.client: Any = None

    def config(self) -> BreakerConfig:
        # strict: every admission asks Redis (no subscriber thread or task in unit tests)
        return BreakerConfig(
            failure_threshold=5, reset_timeout=120, key_prefix=self.prefix, consistency="strict"
        )

    def operation(self) -> Any:
        if self.flavor == "sync":
            return create_github_operation(
                fakeredis.FakeRedis(server=self.server),
                config=self.config(),
                sleep=self.sleeps.append,
            )

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        return create_async_github_operation(
            fakeredis.FakeAsyncRedis(server=self.server), config=self.config(), sleep=sleep
        )

    def build(self, *, shared: bool = True, **kwargs: Any) -> Twin:
        kwargs.setdefault("base_url", API)
        kwargs.setdefault("token_cache_path", self.cache_path)
        kwargs.setdefault("clock", self.clock)
        if shared:
            kwargs.setdefault("operation", self.operation())
        transport = httpx.MockTransport(self.api)
        if self.flavor == "sync":
            self.client = GitHubClient(http=httpx.Client(transport=transport), **kwargs)
        else:
            self.client = AsyncGitHubClient(http=httpx.AsyncClient(transport=transport), **kwargs)
        return self

    def run(self, value: Any) -> Any:
        if self.loop is None:
            return value
        return self.loop.run_until_complete(value)

    def access(self, url: str = "octo/widgets", mode: str = "read") -> Any:
        return self.run(self.client.test_repository_access(url, mode))

    def token(self, installation_id: int | None = None, **kwargs: Any) -> AppToken:
        result: AppToken = self.run(self.client.generate_app_token(installation_id, **kwargs))
        return result

    def status(self) -> Any:
        return self.run(self.client.operation.status())

    def close(self) -> None:
        if self.client is not None:
            if self.flavor == "sync":
                self.client.close()
                self.client._http.close()
            else:
                self.run(self.client.aclose())
                self.run(self.client._http.aclose())
        if self.loop is not None:
            self.loop.close()


@pytest.fixture
def api() -> FakeAPI:
    return FakeAPI()


@pytest.fixture(params=["sync", "async"])
def twin(request: pytest.FixtureRequest, api: FakeAPI, tmp_path: Path) -> Iterator[Twin]:
    made = Twin(request.param, api, tmp_path)
    yield made
    made.close()


def app_twin(twin: Twin) -> Twin:
    return twin.build(app_id=APP_ID, private_key=KEY)


def assert_valid_jwt(request: httpx.Request) -> None:
    bearer = request.headers["Authorization"].removeprefix("Bearer ")
    # the signature and claims; not the times, which follow the test's clock
    claims = jwt.decode(
        bearer,
        KEY.public_key(),
        algorithms=["RS256"],
        issuer=str(APP_ID),
        options={"verify_exp": False, "verify_iat": False, "require": ["iat", "exp", "iss"]},
    )
    assert claims["exp"] - claims["iat"] <= 660


# -- answers with a user token ---------------------------------------------------------


def test_read_access_granted(twin: Twin, api: FakeAPI) -> None:
    api.on("GET", "/repos/octo/widgets", repo_answer())
    result = twin.build(token=USER_TOKEN).access("https://github.com/octo/widgets.git")
    assert (result.accessible, result.degraded) == (True, False)
    assert result.repository == "octo/widgets"
    assert result.reason == "read access granted"
    assert result.permissions == {"admin": False, "push": False, "pull": True}


def test_write_needs_push(twin: Twin, api: FakeAPI) -> None:
    api.on("GET", "/repos/octo/widgets", repo_answer(push=False))
    result = twin.build(token=USER_TOKEN).access("octo/widgets", "write")
    assert (result.accessible, result.degraded) == (False, False)
    assert "push" in result.reason


def test_write_granted(twin: Twin, api: FakeAPI) -> None:
    api.on("GET", "/repos/octo/widgets", repo_answer(push=True))
    result = twin.build(token=USER_TOKEN).access("git@github.com:octo/widgets.git", "write")
    assert result.accessible
    assert result.reason == "write access granted"


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (404, "repository not found or no access"),
        (401, "bad credentials"),
        (403, "access forbidden: Resource protected by organization SAML enforcement"),
        (410, "unexpected answer from GitHub: HTTP 410"),
    ],
)
def test_refusals_are_answers_not_outages(
    twin: Twin, api: FakeAPI, status: int, reason: str
) -> None:
    message = "Resource protected by organization SAML enforcement" if status == 403 else "x"
    api.on("GET", "/repos/octo/widgets", httpx.Response(status, json={"message": message}))
    twin.build(token=USER_TOKEN)
    for _ in range(6):
        result = twin.access()
        assert (result.accessible, result.degraded, result.reason) == (False, False, reason)
    assert twin.status().state == "closed"  # six refusals opened nothing
    assert api.count("GET", "/repos/octo/widgets") == 6
    assert twin.sleeps == []


def test_anonymous_reads_public_repositories(twin: Twin, api: FakeAPI) -> None:
    api.on("GET", "/repos/octo/widgets", httpx.Response(200, json={"full_name": "octo/widgets"}))
    twin.build()
    assert twin.access().accessible
    assert not twin.access(mode="write").accessible
    assert "Authorization" not in api.requests[0].headers


def test_requests_carry_the_api_headers(twin: Twin, api: FakeAPI) -> None:
    api.on("GET", "/repos/octo/widgets", repo_answer())
    twin.build(token=USER_TOKEN).access()
    headers = api.requests[0].headers
    assert headers["Accept"] == "application/vnd.github+json"
    assert headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert headers["User-Agent"].startswith("distbreaker")
    assert headers["Authorization"] == f"Bearer {USER_TOKEN}"
    assert str(api.requests[0].url) == f"{API}/repos/octo/widgets"


# -- outages ----------------------------------------------------------------------------


def test_retries_then_degraded(twin: Twin, api: FakeAPI) -> None:
    api.on("GET", "/repos/octo/widgets", httpx.Response(503, json={"message": "down"}))
    result = twin.build(token=USER_TOKEN).access()
    assert (result.accessible, result.degraded, result.reason) == (False, True, UNAVAILABLE)
    assert api.count("GET", "/repos/octo/widgets") == 3
    assert len(twin.sleeps) == 2
    assert twin.sleeps[0] == pytest.approx(2.0, rel=0.11)  # base delay 2 s, ±10 % jitter
    assert twin.sleeps[1] == pytest.approx(4.0, rel=0.11)


def test_a_retry_that_succeeds_is_not_degraded(twin: Twin, api: FakeAPI) -> None:
    api.on("GET", "/repos/octo/widgets", httpx.Response(502), repo_answer())
    result = twin.build(token=USER_TOKEN).access()
    assert (result.accessible, result.degraded) == (True, False)
    assert len(twin.sleeps) == 1


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("peer closed connection"),
    ],
)
def test_transport_errors_are_outages(twin: Twin, api: FakeAPI, error: Exception) -> None:
    api.on("GET", "/repos/octo/widgets", error)
    result = twin.build(token=USER_TOKEN).access()
    assert (result.degraded, result.reason) == (True, UNAVAILABLE)
    assert api.count("GET", "/repos/octo/widgets") == 3


def test_errors_that_say_nothing_about_github_propagate(twin: Twin, api: FakeAPI) -> None:
    api.on("GET", "/repos/octo/widgets", httpx.UnsupportedProtocol("bad scheme"))
    twin.build(token=USER_TOKEN)
    with pytest.raises(httpx.UnsupportedProtocol):
        twin.access()
    assert len(api.requests) == 1  # not retried, not counted
    assert twin.status().failure_count == 0


def test_501_is_not_an_outage(twin: Twin, api: FakeAPI) -> None:
    api.on("GET", "/repos/octo/widgets", httpx.Response(501))
    result = twin.build(token=USER_TOKEN).access()
    assert (result.degraded, result.reason) == (False, "unexpected answer from GitHub: HTTP 501")


def test_breaker_opens_and_later_calls_never_reach_github(twin: Twin, api: FakeAPI) -> None:
    api.on("GET", "/repos/octo/widgets", httpx.Response(500))
    twin.build(token=USER_TOKEN)
    twin.access()  # 3 failures
    twin.access()  # 2 more: the 5th opens the breaker, the last attempt is refused
    assert api.count("GET", "/repos/octo/widgets") == 5
    assert twin.status().state == "open"
    for _ in range(10):
        assert twin.access().reason == UNAVAILABLE
    assert api.count("GET", "/repos/octo/widgets") == 5


def test_degraded_is_logged_once_per_outage(
    twin: Twin, api: FakeAPI, caplog: pytest.LogCaptureFixture
) -> None:
    api.on("GET", "/repos/octo/widgets", httpx.Response(503))
    twin.build(token=USER_TOKEN)
    with caplog.at_level(logging.WARNING, logger="distbreaker.github"):
        for _ in range(4):
            twin.access()
    assert caplog.text.count("GitHub API unavailable") == 1
    assert USER_TOKEN not in caplog.text


# -- rate limits ------------------------------------------------------------------------


def test_primary_rate_limit_holds_the_breaker_until_reset_without_retry(
    twin: Twin, api: FakeAPI
) -> None:
    reset = str(int(time.time()) + 900)
    api.on(
        "GET",
        "/repos/octo/widgets",
        rate_limited(403, x_ratelimit_remaining="0", x_ratelimit_reset=reset),
    )
    twin.build(token=USER_TOKEN)
    result = twin.access()
    assert (result.accessible, result.degraded) == (False, True)
    assert result.reason.startswith("GitHub API rate limit exceeded; retry in")
    assert api.count("GET", "/repos/octo/widgets") == 1
    assert twin.sleeps == []
    status = twin.status()
    assert status.state == "open"
    assert status.time_until_reset == pytest.approx(900, abs=5)
    assert status.failure_count == 0  # a rate limit is not an outage
    assert twin.access().reason == UNAVAILABLE
    assert api.count("GET", "/repos/octo/widgets") == 1


@pytest.mark.parametrize(
    ("answer", "wait"),
    [
        ({"status": 429, "retry_after": "30"}, 30),
        ({"status": 403, "retry_after": "120"}, 120),
        ({"status": 403}, 60),  # "secondary rate limit" with no header: at least a minute
    ],
)
def test_secondary_rate_limits_honour_retry_after(
    twin: Twin, api: FakeAPI, answer: dict[str, Any], wait: float
) -> None:
    api.on("GET", "/repos/octo/widgets", rate_limited(**answer))
    twin.build(token=USER_TOKEN)
    assert twin.access().degraded
    assert api.count("GET", "/repos/octo/widgets") == 1
    assert twin.status().time_until_reset == pytest.approx(wait, abs=2)


# -- without a shared breaker -----------------------------------------------------------


def test_without_redis_or_operation_one_attempt_then_degraded(twin: Twin, api: FakeAPI) -> None:
    api.on("GET", "/repos/octo/widgets", httpx.Response(503))
    twin.build(shared=False, token=USER_TOKEN)
    assert twin.client.operation is None
    assert twin.access().reason == UNAVAILABLE
    assert api.count("GET", "/repos/octo/widgets") == 1


def test_without_redis_or_operation_answers_pass_through(twin: Twin, api: FakeAPI) -> None:
    api.on("GET", "/repos/octo/widgets", httpx.Response(404), repo_answer(push=True))
    twin.build(shared=False, token=USER_TOKEN)
    assert twin.access().reason == "repository not found or no access"
    assert twin.access(mode="write").accessible


def test_without_redis_or_operation_rate_limits_are_degraded(twin: Twin, api: FakeAPI) -> None:
    api.on("GET", "/repos/octo/widgets", rate_limited(429, retry_after="5"))
    twin.build(shared=False, token=USER_TOKEN)
    assert twin.access().reason == "GitHub API rate limit exceeded; retry in 5s"


@pytest.mark.parametrize(
    ("base_url", "name"),
    [("https://api.github.com", "github"), (API, "github:api.example.test")],
)
def test_with_redis_the_client_builds_the_breaker_of_its_api_host(
    twin: Twin, base_url: str, name: str
) -> None:
    if twin.flavor == "sync":
        redis: Any = fakeredis.FakeRedis(server=twin.server)
    else:
        redis = fakeredis.FakeAsyncRedis(server=twin.server)
    twin.build(shared=False, token=USER_TOKEN, redis=redis, base_url=base_url)
    operation = twin.client.operation
    assert operation.breaker.name == name
    assert operation.breaker.config.failure_threshold == 5
    assert operation.breaker.config.reset_timeout == 120
    assert operation.retry.max_attempts == 3
    assert operation.retry.base_delay == 2.0


# -- GitHub App tokens ------------------------------------------------------------------


def app_routes(api: FakeAPI, **token_kwargs: Any) -> FakeAPI:
    def installation(request: httpx.Request) -> httpx.Response:
        assert_valid_jwt(request)
        return httpx.Response(200, json={"id": INSTALLATION, "app_id": APP_ID})

    def exchange(request: httpx.Request) -> httpx.Response:
        assert_valid_jwt(request)
        response: httpx.Response = token_answer(**token_kwargs)(request)
        return response

    api.on("GET", "/repos/octo/widgets/installation", installation)
    api.on("POST", f"/app/installations/{INSTALLATION}/access_tokens", exchange)
    return api


def test_app_access_uses_the_token_permission_map(twin: Twin, api: FakeAPI) -> None:
    app_routes(api, permissions={"contents": "write", "metadata": "read"})
    api.on("GET", "/repos/octo/widgets", repo_answer(push=False))  # GitHub's unreliable push
    app_twin(twin)
    result = twin.access("https://github.com/octo/widgets", "write")
    assert result.accessible
    assert result.permissions == {"contents": "write", "metadata": "read"}
    bearer = api.requests[-1].headers["Authorization"]
    assert bearer.startswith("Bearer ghs_")


def test_app_read_only_token_cannot_write(twin: Twin, api: FakeAPI) -> None:
    app_routes(api, permissions={"contents": "read"})
    api.on("GET", "/repos/octo/widgets", repo_answer())
    app_twin(twin)
    assert twin.access(mode="read").accessible
    denied = twin.access(mode="write")
    assert (denied.accessible, denied.degraded) == (False, False)
    assert "contents:write" in denied.reason


def test_app_token_is_minted_once_and_reused(twin: Twin, api: FakeAPI) -> None:
    app_routes(api)
    api.on("GET", "/repos/octo/widgets", repo_answer())
    app_twin(twin)
    for _ in range(3):
        twin.access()
    assert api.count("GET", "/repos/octo/widgets/installation") == 1
    assert api.count("POST", f"/app/installations/{INSTALLATION}/access_tokens") == 1
    assert api.count("GET", "/repos/octo/widgets") == 3


def test_app_not_installed(twin: Twin, api: FakeAPI) -> None:
    api.on(
        "GET",
        "/repos/octo/widgets/installation",
        httpx.Response(404, json={"message": "Not Found"}),
    )
    result = app_twin(twin).access()
    assert (result.accessible, result.degraded) == (False, False)
    assert result.reason == "GitHub App is not installed on this repository"


def test_app_jwt_rejected(twin: Twin, api: FakeAPI) -> None:
    api.on(
        "GET",
        "/repos/octo/widgets/installation",
        httpx.Response(401, json={"message": "A JSON web token could not be decoded"}),
    )
    result = app_twin(twin).access()
    assert result.reason == "bad credentials (GitHub App JWT rejected)"
    with pytest.raises(GitHubAPIError) as caught:
        twin.token(repository="octo/widgets")
    assert caught.value.status_code == 401
    assert "Bearer" not in str(caught.value)


def test_generate_app_token_by_installation_writes_a_0600_cache(twin: Twin, api: FakeAPI) -> None:
    app_routes(api)
    token = app_twin(twin).token(INSTALLATION)
    assert token.token.startswith("ghs_")
    assert token.installation_id == INSTALLATION
    assert token.expires_in() == pytest.approx(3600, abs=5)
    assert stat.S_IMODE(twin.cache_path.stat().st_mode) == 0o600
    assert api.count("GET", "/repos/octo/widgets/installation") == 0


def test_token_is_refreshed_inside_the_margin(twin: Twin, api: FakeAPI) -> None:
    app_routes(api)
    app_twin(twin)
    first = twin.token(INSTALLATION)
    twin.clock.now += 3600 - 400  # 400 s left: still outside the 300 s margin
    assert twin.token(INSTALLATION) == first
    twin.clock.now += 200  # 200 s left: refresh
    assert twin.token(INSTALLATION) != first
    assert api.count("POST", f"/app/installations/{INSTALLATION}/access_tokens") == 2


def test_outage_falls_back_to_the_cached_token_until_it_expires(twin: Twin, api: FakeAPI) -> None:
    app_routes(api)
    app_twin(twin)
    cached = twin.token(repository="octo/widgets")
    api.on("POST", f"/app/installations/{INSTALLATION}/access_tokens", httpx.Response(503))
    twin.clock.now += 3600 - 100  # inside the refresh margin: a refresh is attempted
    assert twin.token(repository="octo/widgets") == cached
    assert twin.token(INSTALLATION) == cached
    twin.clock.now += 200  # expired
    with pytest.raises(TokenUnavailableError, match="no cached token"):
        twin.token(INSTALLATION)


def test_a_fresh_client_uses_the_cache_file_during_an_outage(
    twin: Twin, api: FakeAPI, tmp_path: Path
) -> None:
    app_routes(api)
    minted = app_twin(twin).token(repository="octo/widgets")
    api.on("GET", "/repos/octo/widgets/installation", httpx.Response(503))
    api.on("POST", f"/app/installations/{INSTALLATION}/access_tokens", httpx.Response(503))
    api.on("GET", "/repos/octo/widgets", repo_answer())
    restarted = Twin(twin.flavor, api, tmp_path)
    try:
        restarted.build(app_id=APP_ID, private_key=KEY, token_cache_path=twin.cache_path)
        restarted.clock.now += 3600 - 60  # inside the margin: it tries to refresh, and fails
        assert restarted.token(repository="octo/widgets").token == minted.token
        # a refresh by repository looks the installation up again (it may have moved)
        assert api.count("GET", "/repos/octo/widgets/installation") == 1 + 3
        # the failed refreshes count: 3 more attempts open the breaker (threshold 5), after
        # which the cached token is served without asking GitHub
        restarted.token(repository="octo/widgets")
        assert restarted.status().state == "open"
        calls = len(api.requests)
        assert restarted.token(repository="octo/widgets").token == minted.token
        assert len(api.requests) == calls
    finally:
        restarted.close()


def test_no_token_and_no_cache_during_an_outage(twin: Twin, api: FakeAPI) -> None:
    api.on("GET", "/repos/octo/widgets/installation", httpx.Response(500))
    app_twin(twin)
    with pytest.raises(TokenUnavailableError):
        twin.token(repository="octo/widgets")
    result = twin.access()
    assert (result.degraded, result.reason) == (True, UNAVAILABLE)


def test_rate_limited_minting_uses_the_cached_token(twin: Twin, api: FakeAPI) -> None:
    app_routes(api)
    app_twin(twin)
    cached = twin.token(INSTALLATION)
    api.on(
        "POST",
        f"/app/installations/{INSTALLATION}/access_tokens",
        rate_limited(403, x_ratelimit_remaining="0", x_ratelimit_reset=str(int(time.time()) + 60)),
    )
    twin.clock.now += 3600 - 100
    assert twin.token(INSTALLATION) == cached


# -- arguments --------------------------------------------------------------------------


def test_bad_urls_never_reach_github(twin: Twin, api: FakeAPI) -> None:
    twin.build(token=USER_TOKEN)
    for url in ("https://gitlab.com/octo/widgets", "octo/..", "octo/w;id", ""):
        with pytest.raises(ValueError):
            twin.access(url)
    assert api.requests == []


def test_argument_errors(twin: Twin) -> None:
    twin.build(token=USER_TOKEN)
    with pytest.raises(ValueError, match="access_mode"):
        twin.access(mode="admin")
    with pytest.raises(ValueError, match="GitHub App"):
        twin.token(INSTALLATION)


def test_app_argument_errors(twin: Twin) -> None:
    app_twin(twin)
    with pytest.raises(ValueError, match="either"):
        twin.token()
    with pytest.raises(ValueError, match="either"):
        twin.token(INSTALLATION, repository="octo/widgets")
    with pytest.raises(ValueError, match="positive"):
        twin.token(0)
    with pytest.raises(ValueError, match=r"github\.com"):
        twin.token(repository="https://evil.com/octo/widgets")


@pytest.mark.parametrize("flavor", [GitHubClient, AsyncGitHubClient])
def test_constructor_checks(flavor: type[Any]) -> None:
    with pytest.raises(ValueError, match="both app_id and private_key"):
        flavor(app_id=1, token_cache_path=None)
    with pytest.raises(ValueError, match="both app_id and private_key"):
        flavor(private_key=KEY, token_cache_path=None)
    with pytest.raises(ValueError, match="token"):
        flavor("ghp_abc\r\nX-Evil: 1", token_cache_path=None)
    with pytest.raises(ValueError, match="base_url"):
        flavor(base_url="ftp://api.github.com", token_cache_path=None)
    with pytest.raises(ValueError, match="credentials"):
        flavor(base_url="https://user:pw@api.github.com", token_cache_path=None)
    with pytest.raises(ValueError, match="web_host"):
        flavor(web_host="github.com/evil", token_cache_path=None)


@pytest.mark.parametrize("flavor", [GitHubClient, AsyncGitHubClient])
def test_repr_never_shows_credentials(flavor: type[Any]) -> None:
    assert USER_TOKEN not in repr(flavor(USER_TOKEN, token_cache_path=None))
    app = flavor(app_id=APP_ID, private_key=KEY, token_cache_path=None)
    assert repr(app).endswith("auth=app 4242>")


def test_api_errors_redact_tokens_in_messages(twin: Twin, api: FakeAPI) -> None:
    leaked = "ghs_" + "L3ak" * 10
    api.on(
        "POST",
        f"/app/installations/{INSTALLATION}/access_tokens",
        httpx.Response(422, json={"message": f"token {leaked} is odd"}),
    )
    app_twin(twin)
    with pytest.raises(GitHubAPIError) as caught:
        twin.token(INSTALLATION)
    assert leaked not in str(caught.value)
    assert caught.value.status_code == 422
    assert caught.value.request.headers["Authorization"] == "[redacted]"


# -- lifecycle --------------------------------------------------------------------------


def test_sync_client_closes_only_what_it_opened() -> None:
    with GitHubClient(token_cache_path=None) as owned:
        pass
    assert owned._http.is_closed
    mine = httpx.Client()
    with GitHubClient(http=mine, token_cache_path=None):
        pass
    assert not mine.is_closed
    mine.close()


async def test_async_client_closes_only_what_it_opened() -> None:
    async with AsyncGitHubClient(token_cache_path=None) as owned:
        pass
    assert owned._http.is_closed
    mine = httpx.AsyncClient()
    async with AsyncGitHubClient(http=mine, token_cache_path=None):
        pass
    assert not mine.is_closed
    await mine.aclose()


def test_default_http_client_has_timeouts() -> None:
    with GitHubClient(token_cache_path=None) as client:
        timeout = client._http.timeout
        assert timeout.connect == 5.0
        assert timeout.read == 10.0


# -- odd headers (issue 12, defect 7) ---------------------------------------------------


@pytest.mark.parametrize("header", ["retry-after", "x-ratelimit-reset"])
def test_a_header_digit_that_float_refuses_reads_as_no_header(
    twin: Twin, api: FakeAPI, header: str
) -> None:
    """``Retry-After: \\u00b2`` made test_repository_access raise ValueError before, and
    the 503 was not counted."""
    headers = {header: b"\xb2", "x-ratelimit-remaining": b"0"}
    api.on("GET", "/repos/octo/widgets", httpx.Response(503, headers=headers))
    result = twin.build(token=USER_TOKEN).access()
    assert (result.accessible, result.degraded, result.reason) == (False, True, UNAVAILABLE)
    assert twin.status().failures_total == 3  # every attempt counted
    limited = httpx.Response(403, headers=headers, json={"message": "API rate limit exceeded"})
    api.on("GET", "/repos/octo/widgets", limited)
    answer = twin.access()
    assert (answer.accessible, answer.degraded) == (False, True)
    assert answer.reason.startswith("GitHub API rate limit exceeded")
