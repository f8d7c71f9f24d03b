"""Destruction certificates: what was destroyed, where and when, signed with the provider's Ed25519 key so the
client (or an auditor) can check that nobody changed a figure afterwards. The JSON is the signed document (its
``certificate`` object, serialised canonically: sorted keys, no spaces, UTF-8); the PDF is its readable copy."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import BadInput, DobaasError, UsageError

ALGORITHM = "Ed25519"


def canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


def generate_key(path: str) -> str:
    """Write a new private key (PEM, mode 0600) to ``path`` and its public key to ``path.pub``; returns the key
    id. Refuses to overwrite a key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if os.path.exists(path) or os.path.exists(path + ".pub"):
        raise UsageError(f"{path} (or {path}.pub) exists: a signing key is never overwritten")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub = key.public_key()
    with open(path + ".pub", "wb") as f:
        f.write(pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_id(pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def load_private_key(path: str) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        with open(path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except FileNotFoundError:
        raise UsageError(f"signing key {path} not found (make one with `dobaas certificate keygen`)") from None
    except ValueError as e:
        raise BadInput(f"{path} is not a PEM private key: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BadInput(f"{path} is not an Ed25519 key")
    return key


def sign(body: dict, private_key_path: str) -> dict:
    """The signed certificate document."""
    from cryptography.hazmat.primitives import serialization

    key = load_private_key(private_key_path)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"certificate": body, "signature": {
        "algorithm": ALGORITHM, "key_id": key_id(raw), "public_key": base64.b64encode(raw).decode(),
        "value": base64.b64encode(key.sign(canonical(body))).decode()}}


@dataclass
class Verdict:
    valid: bool
    key_id: str
    #: the key is the one the caller trusts (--public-key), not only the one the document carries
    trusted_key: bool
    reason: str = ""


def verify(doc: dict, public_key_path: str | None = None) -> Verdict:
    """Check the signature over ``doc['certificate']``; with ``public_key_path``, also that it was made with
    that key (without it, anyone could re-sign a changed document with their own key)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        sig = doc["signature"]
        body = doc["certificate"]
        raw = base64.b64decode(sig["public_key"], validate=True)
        value = base64.b64decode(sig["value"], validate=True)
        if sig.get("algorithm") != ALGORITHM:
            return Verdict(False, "", False, f"unknown signature algorithm {sig.get('algorithm')!r}")
    except (KeyError, TypeError, ValueError) as e:
        return Verdict(False, "", False, f"not a signed certificate ({e})")
    trusted = False
    if public_key_path:
        with open(public_key_path, "rb") as f:
            pub = serialization.load_pem_public_key(f.read())
        if not isinstance(pub, Ed25519PublicKey):
            raise BadInput(f"{public_key_path} is not an Ed25519 public key")
        want = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if want != raw:
            return Verdict(False, key_id(raw), False, f"signed with key {key_id(raw)}, not with the key given "
                                                     f"({key_id(want)})")
        trusted = True
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(value, canonical(body))
    except (InvalidSignature, ValueError):
        return Verdict(False, key_id(raw), trusted, "the signature does not match the content: the certificate "
                                                   "was changed after it was signed")
    return Verdict(True, key_id(raw), trusted)


def load(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        raise UsageError(f"{path} not found") from None
    except ValueError as e:
        raise DobaasError(f"{path} is not JSON: {e}") from None
