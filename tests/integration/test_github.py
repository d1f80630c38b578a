"""GitHub clients against a fake GitHub on loopback (real sockets) and a real Redis.

Each "worker" is a client with its own Redis connection, operation and HTTP pool, sharing
only the breaker's keys (a unique ``key_prefix`` per test). Sleeps between retries are
recorded, not slept; HTTP timeouts are 0.3 s.
"""

from __future__ import annotations

import stat
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

import distbreaker
from distbreaker import BreakerConfig, TokenUnavailableError
from distbreaker.github import (
    UNAVAILABLE,
    AsyncGitHubClient,
    GitHubClient,
    create_async_github_operation,
    create_github_operation,
)
from tests.integration.fake_github import FakeGitHub, Installation

pytestmark = pytest.mark.integration

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
APP_ID = 4242
INSTALLATION = 31
USER_TOKEN = "ghp_" + "W0rk3r" * 6
TIMEOUT = 0.3


class Clock:
    """Epoch seconds the test may move forward (for the breaker's scripts and the tokens)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    github = FakeGitHub(app_id=APP_ID, public_key=KEY.public_key(), hang_seconds=3.0)
    github.user_tokens[USER_TOKEN] = {
        "octo/widgets": {"admin": False, "push": True, "pull": True},
        "octo/docs": {"admin": False, "push": False, "pull": True},
    }
    github.installations[INSTALLATION] = Installation(
        INSTALLATION, {"octo/widgets"}, {"contents": "write", "metadata": "read"}
    )
    with github:
        yield github


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"gh-{uuid.uuid4().hex[:10]}"
    yield name
    cleaner = distbreaker.connect(redis_url, timeout=2.0)
    keys = list(cleaner.scan_iter(match=f"{name}:*"))
    if keys:
        cleaner.delete(*keys)
    cleaner.close()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def worker(
    redis_url: str, prefix: str, fake: FakeGitHub, sleeps: list[float], tmp_path: Path
) -> Iterator[Callable[..., GitHubClient]]:
    """Build workers: each one its own Redis connection, operation and HTTP pool."""
    made: list[tuple[GitHubClient, Any]] = []

    def build(clock: Callable[[], float] | None = None, **kwargs: Any) -> GitHubClient:
        redis = distbreaker.connect(redis_url)
        operation = create_github_operation(
            redis,
            config=BreakerConfig(failure_threshold=5, reset_timeout=120, key_prefix=prefix),
            clock=clock,
            sleep=sleeps.append,
        )
        kwargs.setdefault("token_cache_path", tmp_path / "token-cache")
        client = GitHubClient(
            operation=operation,
            base_url=fake.url,
            http=httpx.Client(timeout=TIMEOUT),
            clock=clock,
            **kwargs,
        )
        made.append((client, redis))
        return client

    yield build
    for client, redis in made:
        client._http.close()
        client.close()
        redis.close()


def test_answers_like_github(worker: Callable[..., GitHubClient], fake: FakeGitHub) -> None:
    client = worker(token=USER_TOKEN)
    assert client.test_repository_access("https://github.com/octo/widgets", "write").accessible
    docs = client.test_repository_access("git@github.com:octo/docs.git", "write")
    assert (docs.accessible, docs.degraded) == (False, False)
    assert client.test_repository_access("octo/docs").accessible
    missing = client.test_repository_access("octo/secret")
    assert missing.reason == "repository not found or no access"
    assert fake.requests == 4
    assert fake.last_headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert fake.last_headers["Accept"] == "application/vnd.github+json"


def test_bad_credentials(worker: Callable[..., GitHubClient]) -> None:
    result = worker(token="ghp_" + "N0tValid" * 5).test_repository_access("octo/widgets")
    assert (result.accessible, result.degraded, result.reason) == (False, False, "bad credentials")


@pytest.mark.parametrize("mode", ["error", "reset", "hang"])
def test_retries_then_degraded(
    worker: Callable[..., GitHubClient], fake: FakeGitHub, sleeps: list[float], mode: str
) -> None:
    fake.mode = mode
    client = worker(token=USER_TOKEN)
    started = time.monotonic()
    result = client.test_repository_access("octo/widgets")
    elapsed = time.monotonic() - started
    assert (result.accessible, result.degraded, result.reason) == (False, True, UNAVAILABLE)
    assert fake.requests == 3
    assert [round(s) for s in sleeps] == [2, 4]  # 2 s base delay, doubled, ±10 % jitter
    assert elapsed < 3 * TIMEOUT + 1.0  # a hang costs the client timeout per attempt, no more


def test_breaker_opens_and_holds_every_worker(
    worker: Callable[..., GitHubClient], fake: FakeGitHub
) -> None:
    clock = Clock()
    first, second = worker(clock, token=USER_TOKEN), worker(clock, token=USER_TOKEN)
    fake.mode = "error"
    first.test_repository_access("octo/widgets")  # three failed attempts
    first.test_repository_access("octo/widgets")  # two more: the fifth opens the breaker
    assert fake.requests == 5
    for _ in range(10):
        assert first.test_repository_access("octo/widgets").degraded
        assert second.test_repository_access("octo/widgets").degraded
    assert fake.requests == 5  # nobody reached GitHub while the breaker was open

    status = second.operation.status()  # type: ignore[union-attr]
    assert (status.state, status.store_ok) == ("open", True)

    fake.mode = "ok"
    clock.offset += 121  # past reset_timeout: one probe is let through and closes it
    assert second.test_repository_access("octo/widgets").accessible
    assert first.test_repository_access("octo/widgets").accessible
    assert fake.requests == 7


@pytest.mark.parametrize(
    ("mode", "wait"), [("primary_rate_limit", 600), ("secondary_rate_limit", 90)]
)
def test_rate_limits_hold_the_fleet_without_retry(
    worker: Callable[..., GitHubClient],
    fake: FakeGitHub,
    sleeps: list[float],
    mode: str,
    wait: float,
) -> None:
    fake.mode = mode
    first, second = worker(token=USER_TOKEN), worker(token=USER_TOKEN)
    result = first.test_repository_access("octo/widgets")
    assert (result.accessible, result.degraded) == (False, True)
    assert result.reason.startswith("GitHub API rate limit exceeded; retry in")
    assert fake.requests == 1
    assert sleeps == []
    assert second.test_repository_access("octo/widgets").reason == UNAVAILABLE
    assert fake.requests == 1
    status = second.operation.status()  # type: ignore[union-attr]
    assert status.state == "open"
    assert status.time_until_reset == pytest.approx(wait, abs=3)
    assert status.failure_count == 0  # GitHub is healthy: nothing counted


def test_app_token_flow_end_to_end(
    worker: Callable[..., GitHubClient], fake: FakeGitHub, tmp_path: Path
) -> None:
    client = worker(app_id=APP_ID, private_key=KEY)
    result = client.test_repository_access("ssh://git@github.com/octo/widgets.git", "write")
    assert result.accessible, result.reason
    assert result.permissions == {"contents": "write", "metadata": "read"}
    assert fake.jwts_accepted == 2  # installation lookup + token exchange
    assert fake.jwts_rejected == 0
    assert len(fake.issued) == 1

    cache = tmp_path / "token-cache"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    (issued,) = fake.issued
    assert issued in cache.read_text()

    assert client.test_repository_access("octo/widgets").accessible
    assert len(fake.issued) == 1  # the cached token was reused
    not_installed = client.test_repository_access("octo/docs")
    assert not_installed.reason == "GitHub App is not installed on this repository"


def test_a_key_github_does_not_know_is_rejected(
    worker: Callable[..., GitHubClient], fake: FakeGitHub
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    result = worker(app_id=APP_ID, private_key=stranger).test_repository_access("octo/widgets")
    assert result.reason == "bad credentials (GitHub App JWT rejected)"
    assert fake.jwts_rejected == 1
    assert fake.issued == {}


def test_cached_token_serves_while_the_api_is_down(
    worker: Callable[..., GitHubClient], fake: FakeGitHub, tmp_path: Path
) -> None:
    minted = worker(app_id=APP_ID, private_key=KEY).generate_app_token(repository="octo/widgets")
    fake.mode = "error"
    clock = Clock()
    clock.offset = 3600 - 120  # two minutes left: due for a refresh, which fails
    restarted = worker(clock, app_id=APP_ID, private_key=KEY)
    served = restarted.generate_app_token(repository="octo/widgets")
    assert served.token == minted.token
    assert served.token in fake.issued
    assert stat.S_IMODE((tmp_path / "token-cache").stat().st_mode) == 0o600
    clock.offset = 3600 + 1  # expired: nothing left to serve
    with pytest.raises(TokenUnavailableError):
        restarted.generate_app_token(repository="octo/widgets")


async def test_async_and_sync_workers_share_one_breaker(
    redis_url: str,
    prefix: str,
    fake: FakeGitHub,
    worker: Callable[..., GitHubClient],
    tmp_path: Path,
) -> None:
    recorded: list[float] = []

    async def sleep(seconds: float) -> None:
        recorded.append(seconds)

    redis = distbreaker.connect_async(redis_url)
    operation = create_async_github_operation(
        redis,
        config=BreakerConfig(failure_threshold=5, reset_timeout=120, key_prefix=prefix),
        sleep=sleep,
    )
    fake.mode = "reset"
    async with AsyncGitHubClient(
        USER_TOKEN,
        operation=operation,
        base_url=fake.url,
        http=httpx.AsyncClient(timeout=TIMEOUT),
        token_cache_path=tmp_path / "cache",
    ) as client:
        for _ in range(2):
            result = await client.test_repository_access("octo/widgets")
            assert (result.degraded, result.reason) == (True, UNAVAILABLE)
        assert fake.requests == 5
        status = await operation.status()
        assert status.state == "open"
        await client._http.aclose()
    sync_worker = worker(token=USER_TOKEN)
    assert sync_worker.test_repository_access("octo/widgets").degraded
    assert fake.requests == 5
    await redis.aclose()
