"""GitHub through a shared breaker per API host: repository access checks and App tokens.

The breaker is ``github`` for api.github.com and ``github:host[:port]`` for any other
``base_url`` (``github_breaker_name``): an outage of one GitHub never refuses another.

``GitHubClient`` and ``AsyncGitHubClient`` are twins over httpx: every decision (parsing
repository URLs, building requests, reading answers, the token cache) is shared code, and
the twins only send requests. Each request runs through a ``NetworkOperation`` (fallback <-
retry <- breaker <- call), so an outage seen by one worker pauses the whole fleet.

Outages (transport errors, timeouts, 5xx but 501/505) count and are retried; answers such
as 401, 403 or 404 are results, not failures; rate limits (403/429 with
``x-ratelimit-remaining: 0``, or ``retry-after``) are never retried and hold the breaker open
for the whole fleet until GitHub's reset time. Tokens never appear in reprs, logs or error
messages (``redact``).

Parts: ``_repositories`` (URL parsing), ``_tokens`` (AppToken, JWT, the 0600 token cache,
redaction), ``_answers`` (what GitHub's answers mean), ``_client`` (the twins).
"""

from distbreaker.errors import TokenUnavailableError, missing_extra

try:
    import cryptography as _cryptography  # noqa: F401
    import httpx as _httpx  # noqa: F401
    import jwt as _jwt  # noqa: F401
except ImportError as error:
    raise missing_extra("github", "distbreaker.github") from error

from distbreaker.github._answers import (
    UNAVAILABLE,
    AccessMode,
    GitHubAPIError,
    RepositoryAccess,
)
from distbreaker.github._client import (
    API_VERSION,
    BREAKER_NAME,
    TOKEN_REFRESH_MARGIN,
    AsyncGitHubClient,
    AsyncOperation,
    GitHubClient,
    Operation,
    create_async_github_operation,
    create_github_operation,
    github_breaker_name,
)
from distbreaker.github._repositories import Repository, parse_repository
from distbreaker.github._tokens import AppToken, TokenCache, app_jwt, redact

__all__ = [
    "API_VERSION",
    "BREAKER_NAME",
    "TOKEN_REFRESH_MARGIN",
    "UNAVAILABLE",
    "AccessMode",
    "AppToken",
    "AsyncGitHubClient",
    "AsyncOperation",
    "GitHubAPIError",
    "GitHubClient",
    "Operation",
    "Repository",
    "RepositoryAccess",
    "TokenCache",
    "TokenUnavailableError",
    "app_jwt",
    "create_async_github_operation",
    "create_github_operation",
    "github_breaker_name",
    "parse_repository",
    "redact",
]
