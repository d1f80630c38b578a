"""GitHub App tokens: what they look like (and how to hide them), signing, and the cache.

Nothing here talks to GitHub: the clients mint tokens and hand them to ``TokenCache``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

logger = logging.getLogger("distbreaker.github")

# GitHub rejects App JWTs that expire more than 10 minutes out; backdate for clock drift.
JWT_BACKDATE = 60
JWT_LIFETIME = 540

_SECRET = re.compile(
    r"(?:gh[oprsu]_|github_pat_)[A-Za-z0-9._]{16,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
    # classic personal access and OAuth tokens: 40 hex digits, no prefix (a commit id looks
    # the same and is masked too: better than echoing a token)
    r"|(?<![0-9A-Fa-f])[0-9A-Fa-f]{40}(?![0-9A-Fa-f])",
    re.ASCII,
)


def redact(text: str) -> str:
    """``text`` with GitHub tokens (``ghs_``, ``ghp_``, ``github_pat_``, classic 40-hex …)
    and JWTs masked."""
    return _SECRET.sub(lambda match: match.group(0)[:4] + "…[redacted]", text)


@dataclass(frozen=True, slots=True)
class AppToken:
    """A GitHub App installation token; its ``repr`` never shows the token."""

    token: str = field(repr=False)
    expires_at: datetime
    permissions: dict[str, str] = field(default_factory=dict)
    installation_id: int | None = None

    def expires_in(self, now: float | None = None) -> float:
        """Seconds until the token expires (negative once it has)."""
        return self.expires_at.timestamp() - (time.time() if now is None else now)

    def __repr__(self) -> str:
        return (
            f"AppToken(token={redact(self.token)!r}, expires_at={self.expires_at.isoformat()!r}, "
            f"installation_id={self.installation_id!r})"
        )


def parse_timestamp(text: str) -> datetime:
    """GitHub's ``YYYY-MM-DDTHH:MM:SSZ`` as an aware UTC datetime."""
    when = datetime.fromisoformat(text)
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


# -- App credentials -------------------------------------------------------------------


def load_private_key(private_key: str | bytes | os.PathLike[str] | rsa.RSAPrivateKey) -> Any:
    """An RSA private key from PEM text or bytes, a ``pathlib.Path``, or a loaded key."""
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key
    if isinstance(private_key, os.PathLike):
        data = Path(private_key).read_bytes()
    elif isinstance(private_key, str):
        if "-----BEGIN" not in private_key:
            raise ValueError("private_key must be PEM text; pass a pathlib.Path to read a file")
        data = private_key.encode()
    else:
        data = private_key
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # never chain: the cause may quote the key material
        raise ValueError("private_key is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("GitHub App private keys are RSA keys")
    return key


def app_jwt(app_id: int | str, private_key: Any, now: float) -> str:
    """An RS256 JWT for a GitHub App: ``iat`` = now - 60 s, ``exp`` = now + 9 min."""
    issued = int(now)
    claims = {"iat": issued - JWT_BACKDATE, "exp": issued + JWT_LIFETIME, "iss": str(app_id)}
    return jwt.encode(claims, private_key, algorithm="RS256")


# -- the token cache -------------------------------------------------------------------


class TokenCache:
    """Installation tokens and installation ids, in memory and in a 0600 JSON file.

    The file (``path``; ``None`` keeps everything in memory) is re-read on a miss, so
    worker processes that share it share tokens; it is replaced atomically on every write.
    A file that cannot be read or written is logged and ignored: the cache is an aid.
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else Path(path)
        self._tokens: dict[str, AppToken] = {}
        self._installations: dict[str, int] = {}
        self._lock = threading.Lock()

    def token(self, key: str, now: float, margin: float = 0.0) -> AppToken | None:
        """The cached token under ``key`` if it has more than ``margin`` seconds left."""
        for reload in (False, True):
            if reload:
                self._load()
            with self._lock:
                token = self._tokens.get(key)
            if token is not None and token.expires_in(now) > margin:
                return token
        return None

    def installation(self, key: str) -> int | None:
        with self._lock:
            found = self._installations.get(key)
        if found is None:
            self._load()
            with self._lock:
                found = self._installations.get(key)
        return found

    def save(self, key: str, token: AppToken, installation_key: str | None, now: float) -> None:
        """Remember ``token`` (and which installation serves a repository), then write.

        The file's read-merge-write runs under an exclusive ``flock`` on a lock file beside
        it, so processes writing at once never lose each other's tokens.
        """
        with self._file_lock():
            self._load()
            with self._lock:
                self._tokens[key] = token
                if installation_key is not None and token.installation_id is not None:
                    self._installations[installation_key] = token.installation_id
                expired = [k for k, t in self._tokens.items() if t.expires_in(now) <= 0]
                for stale in expired:
                    del self._tokens[stale]
                document = self._document()
            self._write(document)

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """``flock`` on ``.NAME.lock`` (0600) beside the cache; without one (no file, a lock
        that cannot be opened) the update goes on unlocked: the cache is an aid."""
        if self.path is None:
            yield
            return
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            descriptor = os.open(lock_path, flags, 0o600)
        except OSError as error:
            logger.warning("cannot lock GitHub token cache %s: %s", self.path, type(error).__name__)
            yield
            return
        try:
            # each call opens its own descriptor: threads of one process exclude each other
            # as processes do (flock locks belong to the open file, not to the process)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # releases the lock

    def _document(self) -> bytes:
        tokens = {
            key: {
                "token": token.token,
                "expires_at": token.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "permissions": token.permissions,
                "installation_id": token.installation_id,
            }
            for key, token in self._tokens.items()
        }
        document = {"version": 1, "tokens": tokens, "installations": self._installations}
        return json.dumps(document, indent=1, sort_keys=True).encode()

    def _load(self) -> None:
        if self.path is None:
            return
        try:
            document = json.loads(self.path.read_bytes())
            tokens = {
                str(key): AppToken(
                    str(entry["token"]),
                    parse_timestamp(str(entry["expires_at"])),
                    {str(k): str(v) for k, v in dict(entry.get("permissions") or {}).items()},
                    _optional_int(entry.get("installation_id")),
                )
                for key, entry in dict(document.get("tokens") or {}).items()
            }
            installations = {
                str(k): int(v) for k, v in dict(document.get("installations") or {}).items()
            }
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
            logger.warning(
                "GitHub token cache %s is unreadable (%s); ignoring it",
                self.path,
                type(error).__name__,
            )
            return
        with self._lock:
            for key, token in tokens.items():
                known = self._tokens.get(key)
                if known is None or known.expires_at < token.expires_at:
                    self._tokens[key] = token
            for key, value in installations.items():
                self._installations.setdefault(key, value)

    def _write(self, data: bytes) -> None:
        if self.path is None:
            return
        try:
            write_private_file(self.path, data)
        except OSError as error:
            logger.warning(
                "cannot write GitHub token cache %s: %s", self.path, type(error).__name__
            )


def write_private_file(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``, readable by this user only (0600).

    The temporary file is created in the same directory (so ``os.replace`` is atomic) with
    mode 0600 from the start: the secret is never readable by others, not even briefly.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)  # the umask cannot widen it, but be exact
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _optional_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError("installation_id must be an integer")
    return int(value)
