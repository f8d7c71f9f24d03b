"""Key files: the master key wrapped by a passphrase through scrypt (memory-hard).

A vault may hold several key files (``keys/<id>``), each wrapping the same master key: that is how a passphrase
is changed, and where a provider escrow wrapping (type ``escrow-x25519``, reserved in the format) will live.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from orchestrator.errors import IntegrityError, NotFound, WrongPassphrase
from orchestrator.vault.backend import Backend
from orchestrator.vault.crypto import AAD_KEY, MasterKey, b64d, b64e

DEFAULT_KDF_COST = 17  # scrypt N = 2**17, r=8, p=1: 128 MiB and about 0.5 s here
MIN_KDF_COST = 14


def _kek(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def wrap_master(master: MasterKey, passphrase: str, kdf_cost: int = DEFAULT_KDF_COST) -> dict:
    if not MIN_KDF_COST <= kdf_cost <= 22:
        raise ValueError(f"kdf cost must be between {MIN_KDF_COST} and 22")
    salt = os.urandom(16)
    n, r, p = 2**kdf_cost, 8, 1
    nonce = os.urandom(12)
    plain = json.dumps(master.to_json()).encode()
    wrapped = AESGCM(_kek(passphrase, salt, n, r, p)).encrypt(nonce, plain, AAD_KEY)
    return {
        "version": 1,
        "type": "passphrase",
        "created": datetime.now(UTC).isoformat(),
        "kdf": {"name": "scrypt", "n": n, "r": r, "p": p, "salt": b64e(salt)},
        "nonce": b64e(nonce),
        "wrapped": b64e(wrapped),
    }


def add_key_file(backend: Backend, master: MasterKey, passphrase: str, kdf_cost: int = DEFAULT_KDF_COST) -> str:
    name = "keys/" + secrets.token_hex(16)
    backend.put(name, json.dumps(wrap_master(master, passphrase, kdf_cost), indent=1).encode())
    return name


def unwrap_master(backend: Backend, passphrase: str) -> tuple[MasterKey, str]:
    """Try every passphrase key file; return the master key and the key file that opened it."""
    names = sorted(n for n, _ in backend.list("keys"))
    if not names:
        raise NotFound(f"vault at {backend.location} has no key files")
    for name in names:
        try:
            kf = json.loads(backend.get(name))
            if kf.get("type") != "passphrase":
                continue
            kdf = kf["kdf"]
            if kdf["name"] != "scrypt":
                continue
            kek = _kek(passphrase, b64d(kdf["salt"]), int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
            plain = AESGCM(kek).decrypt(b64d(kf["nonce"]), b64d(kf["wrapped"]), AAD_KEY)
        except InvalidTag:
            continue
        except (ValueError, KeyError, TypeError) as e:
            raise IntegrityError(f"key file {name} is damaged ({e})") from None
        return MasterKey.from_json(json.loads(plain)), name
    raise WrongPassphrase(f"wrong passphrase for vault at {backend.location}")
