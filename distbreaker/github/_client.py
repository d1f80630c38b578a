"""``GitHubClient`` and ``AsyncGitHubClient``: the same decisions, sync and async I/O."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import httpx

from distbreaker.classify import classify
from distbreaker.config import BreakerConfig, host_breaker_name
from distbreaker.errors import CircuitOpenError, TokenUnavailableError
from distbreaker.github._answers import (
    AccessMode,
    GitHubAPIError,
    RepositoryAccess,
    access_from_answer,
    app_failure_access,
    check_response,
    degraded_access,
    expect_success,
    installation_from_answer,
    rate_limited_access,
    token_from_answer,
)
from distbreaker.github._repositories import WEB_HOST, Repository, parse_repository
from distbreaker.github._tokens import AppToken, TokenCache, app_jwt, load_private_key, redact
from distbreaker.operation import (
    AsyncNetworkOperation,
    NetworkOperation,
    create_async_network_operation,
    create_network_operation,
)
from distbreaker.status import BreakerStatus

logger = logging.getLogger("distbreaker.github")

T = TypeVar("T")
Clock = Callable[[], float]


def _version() -> str:
    try:
        return importlib.metadata.version("distbreaker")
    except importlib.metadata.PackageNotFoundError:
        return "0"


BREAKER_NAME = "github"
DEFAULT_BASE_URL = "https://api.github.com"
DEFAULT_API_HOST = "api.github.com"
API_VERSION = "2022-11-28"
USER_AGENT = f"distbreaker/{_version()}"
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
DEFAULT_TOKEN_CACHE_PATH = ".github-token-cache"  # noqa: S105 - a file name, not a secret
# Mint a new installation token when the cached one has less than this left (they live 1 h).
TOKEN_REFRESH_MARGIN = 300.0


# -- operations ------------------------------------------------------------------------


class Operation(Protocol):
    """What ``GitHubClient`` needs of a ``NetworkOperation``."""

    def execute(self, operation: Callable[[], T], fallback: Callable[[], T] | None = None) -> T: ...

    def status(self) -> BreakerStatus: ...


class AsyncOperation(Protocol):
    """What ``AsyncGitHubClient`` needs of an ``AsyncNetworkOperation``."""

    async def execute(
        self,
        operation: Callable[[], Awaitable[T]],
        fallback: Callable[[], T | Awaitable[T]] | None = None,
    ) -> T: ...

    async def status(self) -> BreakerStatus: ...


def github_breaker_name(base_url: str = DEFAULT_BASE_URL) -> str:
    """The default breaker of one GitHub API: ``github`` for api.github.com, else
    ``github:host[:port]`` (``github:ghe.example.com``, ``github:127.0.0.1:8080``), so an
    outage of one GitHub never refuses calls to another. ``ValueError`` for a bad URL."""
    url = httpx.URL(_check_base_url(base_url))
    host = url.raw_host.decode("ascii")
    if host.lower() == DEFAULT_API_HOST and url.port is None:
        return BREAKER_NAME
    return host_breaker_name(BREAKER_NAME, host, url.port)


def create_github_operation(
    redis: Any,
    *,
    base_url: str = DEFAULT_BASE_URL,
    config: BreakerConfig | None = None,
    clock: Clock | None = None,
    sleep: Callable[[float], None] | None = None,
) -> NetworkOperation:
    """The fleet-wide operation of one GitHub API (``github_breaker_name(base_url)``):
    threshold 5, reset 120 s, 3 attempts, 2 s base.

    ``config`` replaces the breaker settings (e.g. another ``key_prefix``); ``clock`` and
    ``sleep`` are for tests.
    """
    return create_network_operation(
        github_breaker_name(base_url),
        redis,
        circuit_threshold=5,
        circuit_reset_timeout=120,
        max_retries=3,
        base_delay=2.0,
        config=config,
        clock=clock,
        sleep=sleep,
    )


def create_async_github_operation(
    redis: Any,
    *,
    base_url: str = DEFAULT_BASE_URL,
    config: BreakerConfig | None = None,
    clock: Clock | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> AsyncNetworkOperation:
    """The ``asyncio`` twin of ``create_github_operation`` over a ``redis.asyncio`` client."""
    return create_async_network_operation(
        github_breaker_name(base_url),
        redis,
        circuit_threshold=5,
        circuit_reset_timeout=120,
        max_retries=3,
        base_delay=2.0,
        config=config,
        clock=clock,
        sleep=sleep,
    )


# -- the clients -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None = None


class _GitHubBase:
    """Everything the twins share: arguments, requests, the token cache, the answers."""

    def __init__(
        self,
        token: str | None,
        app_id: int | str | None,
        private_key: Any,
        base_url: str,
        token_cache_path: str | os.PathLike[str] | None,
        web_host: str,
        clock: Clock | None,
    ) -> None:
        if token is not None and (not isinstance(token, str) or not _printable(token)):
            raise ValueError(
                "token must be a non-empty string without spaces or control characters"
            )
        if (app_id is None) != (private_key is None):
            raise ValueError("a GitHub App needs both app_id and private_key")
        if not WEB_HOST.fullmatch(web_host):
            raise ValueError(f"web_host must be a host name such as 'github.com', not {web_host!r}")
        self._token = token
        self.app_id = app_id
        self._private_key = None if private_key is None else load_private_key(private_key)
        self.base_url = _check_base_url(base_url)
        self.web_host = web_host.lower()
        self._clock: Clock = clock or time.time
        self.token_cache = TokenCache(token_cache_path)
        self._degraded = False

    # -- requests ---------------------------------------------------------------------

    def _headers(self, bearer: str | None) -> dict[str, str]:
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": USER_AGENT,
        }
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        return headers

    def _repository_request(self, repository: Repository, bearer: str | None) -> _Request:
        path = f"/repos/{repository.owner}/{repository.name}"
        return _Request("GET", path, self._headers(bearer))

    def _installation_request(self, repository: Repository, app_jwt: str) -> _Request:
        path = f"/repos/{repository.owner}/{repository.name}/installation"
        return _Request("GET", path, self._headers(app_jwt))

    def _exchange_request(self, installation_id: int, app_jwt: str) -> _Request:
        path = f"/app/installations/{installation_id}/access_tokens"
        return _Request("POST", path, self._headers(app_jwt), {})

    def _url(self, request: _Request) -> str:
        return self.base_url + request.path

    # -- App tokens -------------------------------------------------------------------

    @property
    def uses_app(self) -> bool:
        return self._private_key is not None

    def _app_jwt(self) -> str:
        if self.app_id is None or self._private_key is None:
            raise ValueError("generating App tokens needs app_id and private_key")
        return app_jwt(self.app_id, self._private_key, self._clock())

    def _token_target(
        self, installation_id: int | None, repository: str | None
    ) -> tuple[int | None, Repository | None]:
        if not self.uses_app:
            raise ValueError("generate_app_token needs a GitHub App: pass app_id and private_key")
        if (installation_id is None) == (repository is None):
            raise ValueError("pass either installation_id or repository")
        if installation_id is not None:
            if isinstance(installation_id, bool) or not isinstance(installation_id, int):
                raise ValueError("installation_id must be a positive integer")
            if installation_id <= 0:
                raise ValueError("installation_id must be a positive integer")
            return installation_id, None
        assert repository is not None
        return None, parse_repository(repository, self.web_host)

    def _scope(self) -> str:
        return f"{self.base_url} app={self.app_id}"

    def _installation_key(self, repository: Repository) -> str:
        return f"{self._scope()} repo={repository.full_name.lower()}"

    def _token_key(self, installation_id: int) -> str:
        return f"{self._scope()} installation={installation_id}"

    def _known_installation(
        self, installation_id: int | None, repository: Repository | None
    ) -> int | None:
        if installation_id is not None or repository is None:
            return installation_id
        return self.token_cache.installation(self._installation_key(repository))

    def _cached_token(
        self, installation_id: int | None, repository: Repository | None, margin: float
    ) -> AppToken | None:
        known = self._known_installation(installation_id, repository)
        if known is None:
            return None
        return self.token_cache.token(self._token_key(known), self._clock(), margin)

    def _fallback_token(
        self, installation_id: int | None, repository: Repository | None, cause: Exception
    ) -> AppToken:
        """The cached token while it is unexpired, else ``TokenUnavailableError``."""
        cached = self._cached_token(installation_id, repository, margin=0.0)
        if cached is not None:
            self._note_unavailable(cause, "using cached installation tokens while they last")
            return cached
        target = f"repository {repository}" if repository else f"installation {installation_id}"
        raise TokenUnavailableError(
            f"no GitHub App token for {target}: the API is unavailable ({describe(cause)}) "
            "and no cached token is still valid"
        ) from cause

    def _remember_token(self, token: AppToken, repository: Repository | None) -> AppToken:
        assert token.installation_id is not None
        self._answered()
        installation_key = None if repository is None else self._installation_key(repository)
        self.token_cache.save(
            self._token_key(token.installation_id), token, installation_key, self._clock()
        )
        return token

    # -- outcomes ---------------------------------------------------------------------

    def _answered(self) -> None:
        if self._degraded:
            self._degraded = False
            logger.warning("GitHub API answers again")

    def _access_after_error(
        self, repository: Repository, error: Exception
    ) -> RepositoryAccess | None:
        """The degraded answer when ``error`` means GitHub cannot be asked; else ``None``."""
        if isinstance(error, GitHubAPIError) and error.rate_limited:
            self._note_unavailable(error, "access checks report degraded results")
            return rate_limited_access(repository, error)
        if cannot_ask(error):
            return self._unavailable(repository, error)
        return None

    def _unavailable(self, repository: Repository, cause: Exception) -> RepositoryAccess:
        self._note_unavailable(cause, "access checks report degraded results")
        return degraded_access(repository)

    def _note_unavailable(self, cause: Exception, consequence: str) -> None:
        """Log once per outage, not once per call."""
        if not self._degraded:
            self._degraded = True
            logger.warning("GitHub API unavailable (%s): %s", describe(cause), consequence)

    def __repr__(self) -> str:
        auth = f"app {self.app_id}" if self.uses_app else ("token" if self._token else "anonymous")
        return f"<{type(self).__name__} {self.base_url} auth={auth}>"


def cannot_ask(error: BaseException) -> bool:
    """GitHub cannot be asked now: the breaker refused, an outage, or a rate limit.

    These get the fallbacks (degraded answers, cached tokens); every other error is an
    answer or a bug and propagates.
    """
    if isinstance(error, CircuitOpenError):
        return True
    verdict = classify(error)
    return verdict.counts or verdict.rate_limited


def describe(error: BaseException) -> str:
    """One line about an error, with any token masked."""
    return redact(f"{type(error).__name__}: {error}")[:200]


def _printable(token: str) -> bool:
    return bool(token) and token.isascii() and token.isprintable() and " " not in token


def _check_base_url(base_url: str) -> str:
    url = httpx.URL(base_url)
    if url.scheme not in ("http", "https") or not url.host or url.query or url.fragment:
        raise ValueError(f"base_url must be an http(s) URL without query, not {base_url!r}")
    if url.userinfo:
        raise ValueError("base_url must not carry credentials")
    return base_url.rstrip("/")


def _check_mode(access_mode: str) -> AccessMode:
    if access_mode == "read":
        return "read"
    if access_mode == "write":
        return "write"
    raise ValueError(f"access_mode must be 'read' or 'write', not {access_mode!r}")


def _new_http(http_client: type[httpx.Client] | type[httpx.AsyncClient]) -> Any:
    return http_client(timeout=DEFAULT_TIMEOUT, follow_redirects=True)


class GitHubClient(_GitHubBase):
    """GitHub's REST API through the shared breaker of its API host.

    Authenticates with ``token`` (a personal or installation token) or as a GitHub App
    (``app_id`` + ``private_key``). With ``redis`` and no ``operation``, calls go through
    the fleet-wide breaker of ``base_url``'s host (``github`` for api.github.com, else
    ``github:host[:port]``: ``create_github_operation``); with neither there is
    nothing to share, so each request is one attempt without retries, and outages still
    give the degraded answers. ``http`` is an ``httpx.Client`` to use (not closed here).
    ``clock`` (epoch seconds) is for tests.
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        app_id: int | str | None = None,
        private_key: Any = None,
        redis: Any = None,
        operation: Operation | None = None,
        base_url: str = DEFAULT_BASE_URL,
        token_cache_path: str | os.PathLike[str] | None = DEFAULT_TOKEN_CACHE_PATH,
        http: httpx.Client | None = None,
        web_host: str = "github.com",
        clock: Clock | None = None,
    ) -> None:
        super().__init__(token, app_id, private_key, base_url, token_cache_path, web_host, clock)
        if operation is None and redis is not None:
            operation = create_github_operation(redis, base_url=self.base_url)
        self.operation = operation
        self._owns_http = http is None
        self._http: httpx.Client = http if http is not None else _new_http(httpx.Client)
        self._mint_lock = threading.Lock()

    def test_repository_access(
        self, url: str, access_mode: AccessMode = "read"
    ) -> RepositoryAccess:
        """Can this client read (or write) the repository? See ``RepositoryAccess``.

        ``ValueError`` for a URL that names no repository, before any request.
        """
        repository = parse_repository(url, self.web_host)
        mode = _check_mode(access_mode)
        bearer, app_permissions = self._token, None
        if self.uses_app:
            try:
                token = self.generate_app_token(repository=repository.full_name)
            except GitHubAPIError as error:
                return app_failure_access(repository, error)
            except TokenUnavailableError as error:
                return self._unavailable(repository, error)
            bearer, app_permissions = token.token, token.permissions
        request = self._repository_request(repository, bearer)
        try:
            response = self._guarded(lambda: self._send(request))
        except Exception as error:
            degraded = self._access_after_error(repository, error)
            if degraded is None:
                raise
            return degraded
        self._answered()
        return access_from_answer(repository, mode, response, app_permissions)

    def generate_app_token(
        self, installation_id: int | None = None, *, repository: str | None = None
    ) -> AppToken:
        """An installation token for the App, from the cache while it has 5 min left.

        Give the ``installation_id`` or a ``repository`` the App is installed on. While
        GitHub is unavailable, the cached token is returned until it expires; after that,
        ``TokenUnavailableError``. GitHub's refusals (bad JWT, not installed) raise
        ``GitHubAPIError``.
        """
        installation, target = self._token_target(installation_id, repository)
        fresh = self._cached_token(installation, target, TOKEN_REFRESH_MARGIN)
        if fresh is not None:
            return fresh
        with self._mint_lock:  # one mint per client at a time; the others use its token
            fresh = self._cached_token(installation, target, TOKEN_REFRESH_MARGIN)
            if fresh is not None:
                return fresh
            try:
                return self._guarded(lambda: self._mint(installation, target))
            except Exception as error:
                if not cannot_ask(error):
                    raise
                return self._fallback_token(installation, target, error)

    def close(self) -> None:
        """Close the HTTP connections if this client opened them."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- I/O ----------------------------------------------------------------------------

    def _mint(self, installation_id: int | None, repository: Repository | None) -> AppToken:
        signed = self._app_jwt()
        if installation_id is None:
            assert repository is not None
            answer = self._send(self._installation_request(repository, signed))
            installation_id = installation_from_answer(expect_success(answer))
        answer = self._send(self._exchange_request(installation_id, signed))
        token = token_from_answer(expect_success(answer), installation_id)
        return self._remember_token(token, repository)

    def _send(self, request: _Request) -> httpx.Response:
        response = self._http.request(
            request.method, self._url(request), headers=request.headers, json=request.body
        )
        return check_response(response)

    def _guarded(self, call: Callable[[], T]) -> T:
        """Retried through the shared breaker; a single attempt without an operation."""
        if self.operation is None:
            return call()
        return self.operation.execute(call)


class AsyncGitHubClient(_GitHubBase):
    """The ``asyncio`` twin of :class:`GitHubClient` (``redis`` is a ``redis.asyncio`` client,
    ``http`` an ``httpx.AsyncClient``, ``operation`` an ``AsyncNetworkOperation``).

    The token cache file is small and written once an hour, so it is written inline.
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        app_id: int | str | None = None,
        private_key: Any = None,
        redis: Any = None,
        operation: AsyncOperation | None = None,
        base_url: str = DEFAULT_BASE_URL,
        token_cache_path: str | os.PathLike[str] | None = DEFAULT_TOKEN_CACHE_PATH,
        http: httpx.AsyncClient | None = None,
        web_host: str = "github.com",
        clock: Clock | None = None,
    ) -> None:
        super().__init__(token, app_id, private_key, base_url, token_cache_path, web_host, clock)
        if operation is None and redis is not None:
            operation = create_async_github_operation(redis, base_url=self.base_url)
        self.operation = operation
        self._owns_http = http is None
        self._http: httpx.AsyncClient = http if http is not None else _new_http(httpx.AsyncClient)
        self._mint_lock = asyncio.Lock()

    async def test_repository_access(
        self, url: str, access_mode: AccessMode = "read"
    ) -> RepositoryAccess:
        """Can this client read (or write) the repository? See ``RepositoryAccess``."""
        repository = parse_repository(url, self.web_host)
        mode = _check_mode(access_mode)
        bearer, app_permissions = self._token, None
        if self.uses_app:
            try:
                token = await self.generate_app_token(repository=repository.full_name)
            except GitHubAPIError as error:
                return app_failure_access(repository, error)
            except TokenUnavailableError as error:
                return self._unavailable(repository, error)
            bearer, app_permissions = token.token, token.permissions
        request = self._repository_request(repository, bearer)
        try:
            response = await self._guarded(lambda: self._send(request))
        except Exception as error:
            degraded = self._access_after_error(repository, error)
            if degraded is None:
                raise
            return degraded
        self._answered()
        return access_from_answer(repository, mode, response, app_permissions)

    async def generate_app_token(
        self, installation_id: int | None = None, *, repository: str | None = None
    ) -> AppToken:
        """An installation token for the App; see ``GitHubClient.generate_app_token``."""
        installation, target = self._token_target(installation_id, repository)
        fresh = self._cached_token(installation, target, TOKEN_REFRESH_MARGIN)
        if fresh is not None:
            return fresh
        async with self._mint_lock:
            fresh = self._cached_token(installation, target, TOKEN_REFRESH_MARGIN)
            if fresh is not None:
                return fresh
            try:
                return await self._guarded(lambda: self._mint(installation, target))
            except Exception as error:
                if not cannot_ask(error):
                    raise
                return self._fallback_token(installation, target, error)

    async def aclose(self) -> None:
        """Close the HTTP connections if this client opened them."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- I/O ----------------------------------------------------------------------------

    async def _mint(self, installation_id: int | None, repository: Repository | None) -> AppToken:
        signed = self._app_jwt()
        if installation_id is None:
            assert repository is not None
            answer = await self._send(self._installation_request(repository, signed))
            installation_id = installation_from_answer(expect_success(answer))
        answer = await self._send(self._exchange_request(installation_id, signed))
        token = token_from_answer(expect_success(answer), installation_id)
        return self._remember_token(token, repository)

    async def _send(self, request: _Request) -> httpx.Response:
        response = await self._http.request(
            request.method, self._url(request), headers=request.headers, json=request.body
        )
        return check_response(response)

    async def _guarded(self, call: Callable[[], Awaitable[T]]) -> T:
        """Retried through the shared breaker; a single attempt without an operation."""
        if self.operation is None:
            return await call()
        return await self.operation.execute(call)
