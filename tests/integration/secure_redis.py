"""Private ``redis-server`` processes for the TLS and ACL tests, and throwaway certificates.

ACL users and TLS settings are server-wide, so these tests never use the session's shared
Redis: each module starts its own servers on free loopback ports and stops them after.
"""

from __future__ import annotations

import datetime
import ipaddress
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from distbreaker.testing import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
ACL_SECTION = "## Least privilege: TLS and Redis ACL roles"
EXAMPLE_PREFIX = "payments"


@dataclass(frozen=True, slots=True)
class Certificates:
    """PEM files: a CA, a server and a client certificate it signed, and an unrelated CA."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path


def make_certificates(directory: Path) -> Certificates:
    """A throwaway CA with a server certificate for 127.0.0.1/localhost and a client one."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        return path

    def write_cert(cert: x509.Certificate, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def authority(common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(common))
            .issuer_name(name(common))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def leaf(
        common: str,
        usage: list[x509.ObjectIdentifier],
        ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(common))
            .issuer_name(ca[1].subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .sign(ca[0], hashes.SHA256())
        )
        return key, cert

    ca = authority("distbreaker test CA")
    # cluster nodes connect to each other with their server certificate: it serves both ends
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    server = leaf("redis", both, ca)
    client = leaf("worker", [ExtendedKeyUsageOID.CLIENT_AUTH], ca)
    other = authority("some other CA")
    return Certificates(
        ca_cert=write_cert(ca[1], directory / "ca.crt"),
        server_cert=write_cert(server[1], directory / "redis.crt"),
        server_key=write_key(server[0], directory / "redis.key"),
        client_cert=write_cert(client[1], directory / "client.crt"),
        client_key=write_key(client[0], directory / "client.key"),
        other_ca_cert=write_cert(other[1], directory / "other-ca.crt"),
    )


class PrivateRedis:
    """One ``redis-server`` of this test module, with its own arguments."""

    def __init__(self, args: Sequence[str], port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.port = port or free_port()
        # replication writes an RDB file even with --save "": keep it out of the work tree
        self.directory = tempfile.mkdtemp(prefix="distbreaker-redis-")
        self.process = subprocess.Popen(
            [
                binary,
                "--dir",
                self.directory,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait(self, client: Callable[[], redis.Redis], timeout: float = 15.0) -> PrivateRedis:
        """Return once ``client()`` gets an answer to PING (or fail the test)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited")
            try:
                connection = client()
                try:
                    connection.ping()
                finally:
                    connection.close()
                return self
            except (redis.RedisError, OSError) as error:
                last = error
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer: {last}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """``condition()``'s first truthy value, polled until ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def readme_acl_commands() -> dict[str, list[str]]:
    """The README's ``ACL SETUSER`` lines by role (worker, observer, operator), split into
    arguments, exactly as written there."""
    text = README.read_text(encoding="utf-8")
    section = text.split(ACL_SECTION, 1)[1].split("\n## ", 1)[0]
    roles: dict[str, list[str]] = {}
    for line in section.splitlines():
        if not line.startswith("ACL SETUSER "):
            continue
        words = shlex.split(line)
        user = words[2]
        roles[user.rsplit("-", 1)[1]] = words
    assert set(roles) == {"worker", "observer", "operator"}, roles.keys()
    return roles


def create_role_users(
    admin: redis.Redis, passwords: dict[str, str], prefix: str = EXAMPLE_PREFIX
) -> dict[str, str]:
    """The README's three users, for ``prefix`` (the README's is "payments"), with the given
    passwords; their user names by role."""
    names: dict[str, str] = {}
    for role, words in readme_acl_commands().items():
        line = [w.replace(EXAMPLE_PREFIX, prefix) for w in words]
        line = [f">{passwords[role]}" if w.startswith(">") else w for w in line]
        admin.execute_command(*line)
        names[role] = line[2]
    return names
