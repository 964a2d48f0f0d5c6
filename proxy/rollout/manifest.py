"""Signed release manifests: may this candidate receive traffic at all?

A manifest is a JSON file from the model registry — ``model``, ``version``, ``artifact_sha256``,
``stage`` (``Staging``/``Approved``), ``security_decision`` (``PASS``), ``signed_by``, ``created_at`` —
with a detached Ed25519 signature over the file's exact bytes, base64, in ``<manifest>.sig``. The
verdict names the first thing that is wrong; the proxy routes, mirrors and forces nothing to a
candidate whose verdict is not ok.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

REQUIRED = ("model", "version", "artifact_sha256", "stage", "security_decision", "signed_by", "created_at")
STAGES = frozenset({"Staging", "Approved"})
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ManifestVerdict:
    ok: bool
    reason: str  # one sentence: what was checked, or what is wrong
    digest: str = ""  # sha256 of the manifest's bytes, recorded in the rollout state
    signer: str = ""  # the trusted key that verified it
    version: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reason": self.reason,
            "digest": self.digest,
            "signer": self.signer,
            "version": self.version,
        }


def verify(manifest: Path, trusted: dict[str, Ed25519PublicKey], *, expected_version: str) -> ManifestVerdict:
    """Check signature, trust, stage, security decision and version; never raises for a bad manifest."""
    try:
        data = manifest.read_bytes()
    except OSError as exc:
        return ManifestVerdict(ok=False, reason=f"manifest {manifest} cannot be read: {exc.strerror}")
    digest = hashlib.sha256(data).hexdigest()
    try:
        sig_file = manifest.with_name(manifest.name + ".sig")
        signature = base64.b64decode(sig_file.read_bytes().strip(), validate=True)
    except OSError:
        why = f"manifest {manifest.name} is unsigned: {manifest.name}.sig is missing"
        return ManifestVerdict(ok=False, reason=why, digest=digest)
    except (binascii.Error, ValueError):
        return ManifestVerdict(ok=False, reason=f"{manifest.name}.sig is not base64", digest=digest)
    signer = next((name for name, key in trusted.items() if _valid(key, signature, data)), "")
    if not signer:
        return ManifestVerdict(
            ok=False,
            digest=digest,
            reason=f"manifest {manifest.name}: signature does not verify with any trusted key "
            "(altered, or signed by an untrusted key)",
        )
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        why = f"manifest {manifest.name} is not JSON: {exc}"
        return ManifestVerdict(ok=False, reason=why, digest=digest, signer=signer)
    problem = _content_problem(doc, expected_version)
    if problem:
        return ManifestVerdict(
            ok=False, reason=f"manifest {manifest.name}: {problem}", digest=digest, signer=signer
        )
    return ManifestVerdict(
        ok=True,
        digest=digest,
        signer=signer,
        version=str(doc["version"]),
        reason=f"manifest {manifest.name} signed by {signer}: {doc['model']} {doc['version']}, "
        f"stage {doc['stage']}, security PASS",
    )


def _content_problem(doc: Any, expected_version: str) -> str:
    """What is wrong with a verified manifest's content, or ``""``."""
    missing = [k for k in REQUIRED if not isinstance(doc, dict) or k not in doc]
    if missing:
        return f"missing {', '.join(missing)}"
    if doc["stage"] not in STAGES:
        return f"stage is {doc['stage']!r}, not Staging or Approved"
    if doc["security_decision"] != "PASS":
        return f"security_decision is {doc['security_decision']!r}, not PASS"
    if not _SHA256.fullmatch(str(doc["artifact_sha256"])):
        return "artifact_sha256 is not 64 hex digits"
    if str(doc["version"]) != expected_version:
        return f"it is for version {doc['version']!r}, the candidate is {expected_version!r}"
    return ""


def _valid(key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


# -- the CLI's side: keys and signatures ------------------------------------------------------------------


def keygen(private_path: Path, public_path: Path) -> str:
    """Write a new Ed25519 key pair (private PEM, mode 0600; public PEM); returns the public key as base64."""
    key = Ed25519PrivateKey.generate()
    private_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    private_path.chmod(0o600)
    public = key.public_key()
    public_path.write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def sign(manifest: Path, private_key: Path) -> Path:
    """Sign the manifest's exact bytes; the signature goes to ``<manifest>.sig``."""
    key = serialization.load_pem_private_key(private_key.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{private_key} is not an Ed25519 private key")
    target = manifest.with_name(manifest.name + ".sig")
    target.write_bytes(base64.b64encode(key.sign(manifest.read_bytes())) + b"\n")
    return target
