"""App JWTs, private keys, redaction and the 0600 token cache (no network)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import stat
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from distbreaker.github import AppToken, TokenCache, app_jwt, redact
from distbreaker.github._tokens import load_private_key, parse_timestamp, write_private_file

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = KEY.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
).decode()
NOW = 1_790_000_000.0


def token_expiring(at: float, value: str = "ghs_" + "T0k3n" * 8) -> AppToken:
    return AppToken(value, datetime.fromtimestamp(at, UTC), {"contents": "read"}, 7)


# -- JWT and keys ----------------------------------------------------------------------


def test_app_jwt_is_rs256_backdated_and_short_lived() -> None:
    signed = app_jwt(4242, KEY, NOW)
    assert jwt.get_unverified_header(signed)["alg"] == "RS256"
    claims = jwt.decode(
        signed, KEY.public_key(), algorithms=["RS256"], options={"verify_exp": False}
    )
    assert claims["iss"] == "4242"
    assert claims["iat"] == NOW - 60
    assert claims["exp"] <= NOW + 600
    assert claims["exp"] > NOW


def test_app_jwt_with_a_client_id_issuer() -> None:
    claims = jwt.decode(
        app_jwt("Iv23liABC", KEY, NOW),
        KEY.public_key(),
        algorithms=["RS256"],
        options={"verify_exp": False},
    )
    assert claims["iss"] == "Iv23liABC"


@pytest.mark.parametrize("form", ["text", "bytes", "path", "key"])
def test_private_key_forms(form: str, tmp_path: Path) -> None:
    path = tmp_path / "app.pem"
    path.write_text(PEM)
    forms: dict[str, str | bytes | Path | rsa.RSAPrivateKey] = {
        "text": PEM,
        "bytes": PEM.encode(),
        "path": path,
        "key": KEY,
    }
    given = forms[form]
    loaded = load_private_key(given)
    assert loaded.private_numbers() == KEY.private_numbers()


def test_bad_private_keys_are_value_errors_that_quote_nothing() -> None:
    broken = PEM.replace("A", "B", 40)
    with pytest.raises(ValueError, match="not an unencrypted PEM") as caught:
        load_private_key(broken)
    assert caught.value.__cause__ is None
    assert "MII" not in str(caught.value)
    with pytest.raises(ValueError, match=r"pathlib\.Path"):
        load_private_key("/etc/app.pem")
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="RSA"):
        load_private_key(ec_pem)


# -- redaction -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [
        "ghs_" + "a1B2c3" * 6,
        "ghs_" + "x" * 100 + "." + "y" * 400,  # 2026 tokens: ~520 characters, with dots
        "ghp_" + "Z9" * 18,
        "gho_" + "Z9" * 18,
        "github_pat_11ABCDEFG0" + "_abc" * 20,
        app_jwt(1, KEY, NOW),
    ],
)
def test_redact_masks_tokens_and_jwts(secret: str) -> None:
    text = f"Authorization: Bearer {secret} (request 42)"
    masked = redact(text)
    assert secret not in masked
    assert secret[8:30] not in masked
    assert masked.startswith("Authorization: Bearer ")
    assert masked.endswith("(request 42)")


def test_redact_leaves_ordinary_text() -> None:
    text = "repository octo/widgets not found (ghs_ prefix alone, eyJ too)"
    assert redact(text) == text


def test_app_token_repr_hides_the_token() -> None:
    token = token_expiring(NOW + 3600)
    assert token.token not in repr(token)
    assert token.token[4:] not in str(token)
    assert "expires_at=" in repr(token)


def test_app_token_expires_in() -> None:
    assert token_expiring(NOW + 90).expires_in(NOW) == pytest.approx(90)
    assert token_expiring(NOW - 1).expires_in(NOW) == pytest.approx(-1)


def test_parse_timestamp_is_utc() -> None:
    parsed = parse_timestamp("2026-11-29T07:00:00Z")
    assert parsed.tzinfo is not None
    assert parsed == datetime(2026, 11, 29, 7, 0, tzinfo=UTC)
    assert parse_timestamp("2026-11-29T07:00:00") == parsed


# -- the cache file --------------------------------------------------------------------


def test_cache_file_is_written_with_mode_0600_even_under_a_lax_umask(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    old = os.umask(0)
    try:
        TokenCache(path).save("k", token_expiring(NOW + 3600), None, NOW)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # no temporary file left; the lock file stays (removing it would race another writer)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cache.lock", "cache"]
    assert stat.S_IMODE((tmp_path / ".cache.lock").stat().st_mode) == 0o600


def test_write_replaces_atomically_and_tightens_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    path.write_text("old")
    path.chmod(0o644)
    write_private_file(path, b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "cache"
    target.mkdir()  # os.replace of a file onto a directory fails
    with pytest.raises(OSError):
        write_private_file(target, b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]


def test_another_process_reads_what_one_wrote(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    token = token_expiring(NOW + 3600)
    TokenCache(path).save("k", token, "repo-key", NOW)
    other = TokenCache(path)
    assert other.token("k", NOW) == token
    assert other.installation("repo-key") == 7
    assert other.token("k", NOW, margin=3601) is None


def test_expired_tokens_are_dropped_on_write(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    cache = TokenCache(path)
    cache.save("old", token_expiring(NOW + 10), None, NOW)
    cache.save("new", token_expiring(NOW + 3600), None, NOW + 20)
    assert set(json.loads(path.read_text())["tokens"]) == {"new"}


def test_the_newer_token_wins_when_merging(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    first, second = TokenCache(path), TokenCache(path)
    first.save("k", token_expiring(NOW + 1000, "ghs_" + "1" * 40), None, NOW)
    second.save("k", token_expiring(NOW + 3000, "ghs_" + "2" * 40), None, NOW)
    assert first.token("k", NOW, margin=2000) is not None


def test_a_corrupt_cache_is_ignored_and_logged_without_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cache"
    path.write_text('{"tokens": {"k": {"token": "ghs_secretsecretsecretsecret"')
    with caplog.at_level(logging.WARNING, logger="distbreaker.github"):
        assert TokenCache(path).token("k", NOW) is None
    assert "unreadable" in caplog.text
    assert "secret" not in caplog.text


def test_an_unwritable_cache_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = TokenCache(tmp_path / "missing-dir" / "cache")
    token = token_expiring(NOW + 3600)
    with caplog.at_level(logging.WARNING, logger="distbreaker.github"):
        cache.save("k", token, None, NOW)
    assert cache.token("k", NOW) == token  # still served from memory
    assert "cannot write" in caplog.text
    assert token.token not in caplog.text


def test_memory_only_cache(tmp_path: Path) -> None:
    cache = TokenCache(None)
    cache.save("k", token_expiring(time.time() + 3600), "r", time.time())
    assert cache.token("k", time.time()) is not None
    assert list(tmp_path.iterdir()) == []


# -- two processes writing at once (issue 12, defect 8) ---------------------------------

TOKENS_PER_WRITER = 200


def _write_tokens(path: str, writer: int, start: Any) -> None:
    start.wait(30)
    cache = TokenCache(path)
    for n in range(TOKENS_PER_WRITER):
        token = token_expiring(time.time() + 3600, f"ghs_{writer:02d}{n:06d}" + "x" * 30)
        cache.save(f"writer{writer}:{n}", token, f"octo/repo-{writer}-{n}", time.time())


def test_two_processes_writing_the_cache_lose_no_token(tmp_path: Path) -> None:
    """Before: a read-modify-write without a lock lost about 1 % of the tokens (4 of 400)."""
    path = tmp_path / "token-cache"
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    writers = [
        context.Process(target=_write_tokens, args=(str(path), writer, start))
        for writer in range(2)
    ]
    for process in writers:
        process.start()
    start.set()
    for process in writers:
        process.join(120)
        assert process.exitcode == 0
    document = json.loads(path.read_bytes())
    assert len(document["tokens"]) == 2 * TOKENS_PER_WRITER
    assert len(document["installations"]) == 2 * TOKENS_PER_WRITER
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
