"""What GitHub's answers mean: errors, access results and tokens (shared by both clients)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from distbreaker.classify import Verdict, for_status
from distbreaker.github._repositories import Repository
from distbreaker.github._tokens import AppToken, parse_timestamp, redact

AccessMode = Literal["read", "write"]
UNAVAILABLE = "GitHub API temporarily unavailable"


@dataclass(frozen=True, slots=True)
class RepositoryAccess:
    """The answer of ``test_repository_access``.

    ``degraded`` is true when GitHub could not be asked (outage, open breaker, rate limit):
    then ``accessible`` is false because nobody knows, not because access was denied.
    ``permissions`` is the repository's ``permissions`` object for user tokens, or the
    installation token's permission map for GitHub Apps.
    """

    accessible: bool
    reason: str
    degraded: bool
    repository: str
    permissions: dict[str, Any] = field(default_factory=dict)


class GitHubAPIError(httpx.HTTPStatusError):
    """GitHub answered with an error status; the message carries GitHub's own words.

    It is an ``httpx.HTTPStatusError``, so the default classifier reads its status, headers
    and body: 5xx count as an outage, rate limits hold the breaker open, other 4xx do not count.
    """

    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.github_message = redact(_message_of(response))[:300]
        self.verdict: Verdict = for_status(
            response.status_code, dict(response.headers), _text_of(response)
        )
        request = response.request
        # the request is kept on the error; error reporters serialise it, token and all
        if "Authorization" in request.headers:
            request.headers["Authorization"] = "[redacted]"
        super().__init__(
            f"GitHub API {request.method} {request.url.path}: HTTP {response.status_code}"
            + (f": {self.github_message}" if self.github_message else ""),
            request=request,
            response=response,
        )

    @property
    def rate_limited(self) -> bool:
        return self.verdict.rate_limited

    @property
    def retry_after(self) -> float | None:
        return self.verdict.retry_after


def _text_of(response: httpx.Response) -> str:
    try:
        return response.text[:2000]
    except httpx.ResponseNotRead:
        return ""


def _message_of(response: httpx.Response) -> str:
    try:
        body = json.loads(_text_of(response) or "null")
    except ValueError:
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return message if isinstance(message, str) else ""


def check_response(response: httpx.Response) -> httpx.Response:
    """Raise ``GitHubAPIError`` for answers that mean outage or rate limit; return the rest."""
    verdict = for_status(response.status_code, dict(response.headers), _text_of(response))
    if verdict.counts or verdict.rate_limited:
        raise GitHubAPIError(response)
    return response


def expect_success(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a 2xx answer; ``GitHubAPIError`` for any other status."""
    check_response(response)
    if not response.is_success:
        raise GitHubAPIError(response)
    body = response.json()
    if not isinstance(body, dict):
        raise ValueError(f"GitHub answered {response.request.url.path} with a non-object body")
    return body


# -- decisions on answers (no I/O) -----------------------------------------------------


def access_from_answer(
    repository: Repository,
    access_mode: AccessMode,
    response: httpx.Response,
    app_permissions: Mapping[str, str] | None,
) -> RepositoryAccess:
    """Turn GitHub's answer to ``GET /repos/{owner}/{repo}`` into a ``RepositoryAccess``."""
    name = repository.full_name
    status = response.status_code
    if status == 401:
        return RepositoryAccess(False, "bad credentials", False, name)
    if status == 404:
        return RepositoryAccess(False, "repository not found or no access", False, name)
    if status == 403:
        detail = redact(_message_of(response)) or "forbidden"
        return RepositoryAccess(False, f"access forbidden: {detail}", False, name)
    if not response.is_success:
        return RepositoryAccess(False, f"unexpected answer from GitHub: HTTP {status}", False, name)
    if app_permissions is not None:
        return _app_access(name, access_mode, dict(app_permissions))
    body = response.json()
    permissions = body.get("permissions") if isinstance(body, dict) else None
    return _user_access(name, access_mode, permissions if isinstance(permissions, dict) else {})


def _user_access(name: str, mode: AccessMode, permissions: dict[str, Any]) -> RepositoryAccess:
    if mode == "read":
        # Without a token GitHub sends no permissions: a 200 then means a public repository.
        granted = permissions.get("pull", True) is True
        missing = "token has no pull (read) permission"
    else:
        granted = permissions.get("push") is True
        missing = "token has no push (write) permission"
    reason = f"{mode} access granted" if granted else missing
    return RepositoryAccess(granted, reason, False, name, permissions)


def _app_access(name: str, mode: AccessMode, permissions: dict[str, Any]) -> RepositoryAccess:
    # An installation token's repository answer says push=false even with contents:write:
    # the permission map sent with the token is the truth.
    level = permissions.get("contents")
    granted = level in ("read", "write") if mode == "read" else level == "write"
    if granted:
        reason = f"{mode} access granted (GitHub App, contents: {level})"
    else:
        reason = f"GitHub App token has no contents:{mode} permission (contents: {level or 'none'})"
    return RepositoryAccess(granted, reason, False, name, permissions)


def degraded_access(repository: Repository, reason: str = UNAVAILABLE) -> RepositoryAccess:
    """The answer while GitHub cannot be asked."""
    return RepositoryAccess(False, reason, True, repository.full_name)


def rate_limited_access(repository: Repository, error: GitHubAPIError) -> RepositoryAccess:
    wait = error.retry_after
    when = "" if wait is None else f"; retry in {wait:.0f}s"
    return degraded_access(repository, f"GitHub API rate limit exceeded{when}")


def app_failure_access(repository: Repository, error: GitHubAPIError) -> RepositoryAccess:
    """The answer when minting an installation token for the repository was refused."""
    name = repository.full_name
    if error.status_code == 404:
        return RepositoryAccess(
            False, "GitHub App is not installed on this repository", False, name
        )
    if error.status_code == 401:
        return RepositoryAccess(False, "bad credentials (GitHub App JWT rejected)", False, name)
    return RepositoryAccess(False, f"GitHub App token refused: {error.github_message}", False, name)


def token_from_answer(body: Mapping[str, Any], installation_id: int) -> AppToken:
    """The ``AppToken`` in a ``POST /app/installations/{id}/access_tokens`` answer."""
    token = body.get("token")
    expires = body.get("expires_at")
    if not isinstance(token, str) or not token or not isinstance(expires, str):
        raise ValueError("GitHub's installation token answer lacks token or expires_at")
    permissions = body.get("permissions")
    return AppToken(
        token,
        parse_timestamp(expires),
        {str(k): str(v) for k, v in permissions.items()} if isinstance(permissions, dict) else {},
        installation_id,
    )


def installation_from_answer(body: Mapping[str, Any]) -> int:
    installation_id = body.get("id")
    if not isinstance(installation_id, int) or isinstance(installation_id, bool):
        raise ValueError("GitHub's installation answer has no numeric id")
    return installation_id
