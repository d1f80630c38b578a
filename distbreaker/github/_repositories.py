"""Repository names and the URLs that may name them: parsed strictly, before any request."""

from __future__ import annotations

import re
from dataclasses import dataclass

from distbreaker.github._tokens import redact

_OWNER = r"(?P<owner>[A-Za-z0-9][A-Za-z0-9-]{0,38})"
_NAME = r"(?P<name>[A-Za-z0-9._-]{1,100}?)(?:\.git)?"
WEB_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(:[0-9]{1,5})?", re.ASCII)
_MAX_URL_LENGTH = 512
# Any user part but ssh's "git@": a bare token (https://TOKEN@github.com/...) is one too.
_CREDENTIALS = re.compile(r"://(?!git@)[^/@]*@")


@dataclass(frozen=True, slots=True)
class Repository:
    """A repository named by its owner and name."""

    owner: str
    name: str

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    def __str__(self) -> str:
        return self.full_name


def parse_repository(url: str, web_host: str = "github.com") -> Repository:
    """The repository a URL names, or ``ValueError`` for anything that is not one.

    Accepts ``https://HOST/owner/repo(.git)(/)``, ``git@HOST:owner/repo(.git)``,
    ``ssh://git@HOST/owner/repo(.git)`` and ``owner/repo``, with ``HOST`` = ``web_host``.
    Everything else (other hosts, credentials, ports, extra path parts, ``..``, query
    strings, whitespace, shell metacharacters) is refused before any request.
    """
    if not isinstance(url, str) or not url:
        raise ValueError("repository must be a non-empty string such as 'owner/repo'")
    if len(url) > _MAX_URL_LENGTH:
        raise ValueError(f"repository URL is longer than {_MAX_URL_LENGTH} characters")
    host = re.escape(web_host)
    forms = (
        rf"https://{host}/{_OWNER}/{_NAME}/?",
        rf"git@{host}:{_OWNER}/{_NAME}",
        rf"ssh://git@{host}/{_OWNER}/{_NAME}",
        rf"{_OWNER}/{_NAME}",
    )
    for form in forms:
        match = re.fullmatch(form, url, re.ASCII | re.IGNORECASE)
        if match and match.group("name") not in (".", ".."):
            return Repository(match.group("owner"), match.group("name"))
    shown = "<URL with credentials>" if _CREDENTIALS.search(url) else redact(url[:100])
    raise ValueError(
        f"not a {web_host} repository: {shown!r}; expected https://{web_host}/owner/repo, "
        f"git@{web_host}:owner/repo.git, ssh://git@{web_host}/owner/repo.git or owner/repo"
    )
