"""A local certificate authority and a loopback server certificate for the HTTPS listener.

The SageMaker SDK reaches STS through an ``https://`` URL it builds itself; the HTTPS listener
answers it, and ``opensage env`` points ``AWS_CA_BUNDLE`` at a bundle that holds the public CAs and
this one, so nothing else a shell does over TLS changes.
"""

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


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_cert: Path
    cert: Path
    key: Path
    bundle: Path


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "OpenSage"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def _default_bundle(source: str = "") -> bytes:
    """The CAs clients trusted before: ``source`` (e.g. a previous AWS_CA_BUNDLE), else botocore's own."""
    from botocore.httpsession import where

    for candidate in (source, where()):
        if candidate:
            try:
                return Path(candidate).read_bytes()
            except OSError:
                continue
    return b""


def _issue_ca(
    files: TlsFiles, ca_key_path: Path, now: dt.datetime, source: str
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("OpenSage local CA"))
        .issuer_name(_name("OpenSage local CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(
        ca_key_path,
        ca_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        0o600,
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    _write(files.ca_cert, ca_pem)
    _write(files.bundle, _default_bundle(source) + b"\n" + ca_pem)
    return ca_cert, ca_key


def _load_ca(files: TlsFiles, ca_key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def ensure_tls(
    directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1"), bundle_source: str = ""
) -> TlsFiles:
    """Create (once) the CA and bundle; (re-)issue the server certificate when ``hosts`` change."""
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        directory / "ca.pem", directory / "server.pem", directory / "server-key.pem", directory / "ca-bundle.pem"
    )
    ca_key_path = directory / "ca-key.pem"
    hosts_path = directory / "server-hosts.txt"
    wanted = "\n".join(hosts) + "\n"
    now = dt.datetime.now(dt.UTC)
    if files.ca_cert.exists() and ca_key_path.exists() and files.bundle.exists():
        ca_cert, ca_key = _load_ca(files, ca_key_path)
    else:
        ca_cert, ca_key = _issue_ca(files, ca_key_path, now, bundle_source)
    if files.cert.exists() and files.key.exists() and hosts_path.exists() and hosts_path.read_text() == wanted:
        return files
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("OpenSage local server"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(
        files.key,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        0o600,
    )
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    _write(hosts_path, wanted.encode())
    return files
