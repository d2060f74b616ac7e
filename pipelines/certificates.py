"""Certificates for the SF1411 service's embedded default (sf1411-sf2610.md "Transport"): a
throw-away CA, a server certificate for 127.0.0.1/localhost and one client certificate, made with
`cryptography`. Production brings its own (PENSIONSTRAEK_SERVICE_CERT/KEY/CLIENT_CA); the tests
make theirs here too (tests/tls.py), so there is one way to make a certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class KeyPair:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def write(self, cert_path: Path, key_path: Path) -> None:
        cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        # The key is readable by its owner only, whatever the umask.
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(
                self.key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pensionstraek"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str, days: int = 365) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(key, cert)


def make_cert(ca: KeyPair, common_name: str, *, server: bool, days: int = 365) -> KeyPair:
    """A leaf signed by `ca`: a server certificate (SAN 127.0.0.1, localhost) or a client one."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return KeyPair(key, builder.sign(ca.key, hashes.SHA256()))


@dataclass(frozen=True)
class ServiceCertificates:
    """The files the service and one client need."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def embedded_certificates(folder: Path) -> ServiceCertificates:
    """The embedded default under `folder` (./var/service): made once, kept afterwards."""
    files = ServiceCertificates(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
    )
    if all(p.exists() for p in vars(files).values()):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    ca = make_ca("pensionstraek SF1411 demo CA")
    ca_key = folder / "ca.key"
    ca.write(files.ca, ca_key)
    ca_key.unlink()  # a throw-away CA: nothing more is ever signed with it
    make_cert(ca, "localhost", server=True).write(files.server_cert, files.server_key)
    make_cert(ca, "demo-klient", server=False).write(files.client_cert, files.client_key)
    return files
