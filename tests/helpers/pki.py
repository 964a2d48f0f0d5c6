"""Real certificates for the TLS tests: trustme CAs and leaves, written to files the way operators have them.

trustme issues the ordinary certificates; :func:`issue` signs the ones trustme cannot shape (URI
subjectAltNames, an exact subject) with a trustme CA's key through ``cryptography``.
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Files:
    cert: Path
    key: Path


def write_leaf(leaf: trustme.LeafCert, folder: Path, name: str) -> Files:
    folder.mkdir(parents=True, exist_ok=True)
    files = Files(cert=folder / f"{name}.crt", key=folder / f"{name}.key")
    leaf.cert_chain_pems[0].write_to_path(str(files.cert))
    for extra in leaf.cert_chain_pems[1:]:
        extra.write_to_path(str(files.cert), append=True)
    leaf.private_key_pem.write_to_path(str(files.key))
    return files


def write_ca(ca: trustme.CA, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def issue(
    ca: trustme.CA,
    folder: Path,
    name: str,
    *,
    common_name: str,
    dns: tuple[str, ...] = (),
    uris: tuple[str, ...] = (),
    organization: str | None = None,
) -> Files:
    """A client certificate signed by ``ca``: subject CN (and O), DNS and URI subjectAltNames."""
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.UniformResourceIdentifier(u) for u in uris]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    folder.mkdir(parents=True, exist_ok=True)
    files = Files(cert=folder / f"{name}.crt", key=folder / f"{name}.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


def fingerprint_pem(path: Path) -> str:
    """SHA-256 of the first certificate in a PEM file (the leaf)."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(path.read_text())).hexdigest()


def fingerprint_der(der: bytes | None) -> str:
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def client_context(trust: trustme.CA | Path | None = None, cert: Files | None = None) -> ssl.SSLContext:
    """A verifying client context: trusts ``trust`` only; presents ``cert`` when given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, checks host names, trusts nothing yet
    if trust is not None:
        ctx.load_verify_locations(cadata=_ca_text(trust))
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    return ctx


def _ca_text(trust: trustme.CA | Path) -> str:
    return trust.read_text() if isinstance(trust, Path) else trust.cert_pem.bytes().decode()
