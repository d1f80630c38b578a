"""Docker image references, checked against the distribution reference grammar.

The docker SDK passes any string to the daemon (``redis; rm -rf /`` included), so every
reference is parsed here first: ``[domain[:port]/]path[:tag][@digest]``, ASCII only, the
whole string (a trailing newline fails). Grammar: github.com/distribution/reference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME_MAX_LENGTH = 255
# Where a name without a registry host goes, and the other spellings of that registry.
DEFAULT_REGISTRY = "docker.io"
_DOCKER_HUB = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALPHANUMERIC}(?:{_SEPARATOR}{_ALPHANUMERIC})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_REFERENCE = re.compile(
    rf"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?",
    re.ASCII,
)
_IMAGE_ID = re.compile(r"[a-f0-9]{64}", re.ASCII)
# Algorithms the registries know, with their exact hex lengths (go-digest rejects others).
_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


@dataclass(frozen=True, slots=True)
class ImageReference:
    """A parsed reference: ``name`` is ``[domain/]path``; ``tag`` and ``digest`` may be absent."""

    name: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @property
    def pull_tag(self) -> str:
        """The daemon's ``tag`` parameter: the digest if any, else the tag, else ``latest``."""
        return self.digest or self.tag or "latest"

    @property
    def registry(self) -> str:
        """The registry a pull goes to, lowercase: ``host[:port]``, or ``docker.io``.

        As the daemon decides: the first path component is a registry host only when it
        has a ``.`` or a ``:``, is ``localhost``, or has an uppercase letter.
        """
        first, slash, _ = self.name.partition("/")
        is_host = "." in first or ":" in first or first == "localhost" or first != first.lower()
        if not slash or not is_host or first.lower() in _DOCKER_HUB:
            return DEFAULT_REGISTRY
        return first.lower()

    @property
    def pinned(self) -> str:
        """The reference a pull leaves in the local store: ``name@digest`` or ``name:tag``."""
        separator = "@" if self.digest else ":"
        return f"{self.name}{separator}{self.pull_tag}"


def parse_reference(reference: str) -> ImageReference:
    """Parse ``reference`` or raise ``ValueError`` saying why it is not a valid image reference."""
    if not isinstance(reference, str):
        raise TypeError(f"an image reference is a str, not {type(reference).__name__}")
    match = _REFERENCE.fullmatch(reference)
    if match is None:
        raise ValueError(
            f"invalid image reference {reference!r}: expected [registry/]name[:tag][@digest]"
            " with a lowercase ASCII name"
        )
    domain, path = match.group("domain"), match.group("path")
    name = f"{domain}/{path}" if domain else path
    if len(name) > NAME_MAX_LENGTH:
        raise ValueError(
            f"invalid image reference {reference[:40]!r}...: the name is {len(name)} characters,"
            f" at most {NAME_MAX_LENGTH} are allowed"
        )
    if _IMAGE_ID.fullmatch(name):
        raise ValueError(
            f"invalid image reference {reference!r}: a 64-hex-digit name is an image ID"
        )
    digest = match.group("digest")
    if digest is not None:
        _check_digest(reference, digest)
    return ImageReference(name, match.group("tag"), digest)


def _check_digest(reference: str, digest: str) -> None:
    algorithm, _, hex_digits = digest.partition(":")
    expected = _DIGEST_LENGTHS.get(algorithm)
    if expected is not None and len(hex_digits) != expected:
        raise ValueError(
            f"invalid image reference {reference!r}: a {algorithm} digest has"
            f" {expected} hex digits, not {len(hex_digits)}"
        )
    if expected is not None and hex_digits != hex_digits.lower():
        raise ValueError(f"invalid image reference {reference!r}: digest hex must be lowercase")
