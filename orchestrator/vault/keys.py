"""Key files: the master key wrapped by a passphrase through Argon2id (memory-hard; scrypt is read too).

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
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from orchestrator.errors import IntegrityError, NotFound, WrongPassphrase
from orchestrator.vault.backend import Backend
from orchestrator.vault.crypto import AAD_KEY, MasterKey, b64d, b64e

#: log2 of Argon2id memory in KiB: 16 = 64 MiB, with t=1 and p=1 (OWASP's recommended Argon2id shape, above its
#: 46 MiB minimum). About 0.09 s on the 2-core reference machine: every command pays it once.
DEFAULT_KDF_COST = 16
MIN_KDF_COST = 12  # 4 MiB: for tests only
MAX_KDF_COST = 22
ARGON2_ITERATIONS = 1
ARGON2_LANES = 1


def _kek(passphrase: str, kdf: dict) -> bytes:
    secret, salt = passphrase.encode("utf-8"), b64d(kdf["salt"])
    if kdf["name"] == "argon2id":
        return Argon2id(salt=salt, length=32, iterations=int(kdf["t"]), lanes=int(kdf["p"]),
                        memory_cost=int(kdf["m"])).derive(secret)
    if kdf["name"] == "scrypt":
        return Scrypt(salt=salt, length=32, n=int(kdf["n"]), r=int(kdf["r"]), p=int(kdf["p"])).derive(secret)
    raise ValueError(f"unknown kdf {kdf['name']!r}")


def wrap_master(master: MasterKey, passphrase: str, kdf_cost: int = DEFAULT_KDF_COST) -> dict:
    if not MIN_KDF_COST <= kdf_cost <= MAX_KDF_COST:
        raise ValueError(f"kdf cost must be between {MIN_KDF_COST} and {MAX_KDF_COST}")
    kdf = {"name": "argon2id", "m": 2**kdf_cost, "t": ARGON2_ITERATIONS, "p": ARGON2_LANES,
           "salt": b64e(os.urandom(16))}
    nonce = os.urandom(12)
    plain = json.dumps(master.to_json()).encode()
    wrapped = AESGCM(_kek(passphrase, kdf)).encrypt(nonce, plain, AAD_KEY)
    return {
        "version": 1,
        "type": "passphrase",
        "created": datetime.now(UTC).isoformat(),
        "kdf": kdf,
        "nonce": b64e(nonce),
        "wrapped": b64e(wrapped),
    }


def add_key_file(backend: Backend, master: MasterKey, passphrase: str, kdf_cost: int = DEFAULT_KDF_COST) -> str:
    name = "keys/" + secrets.token_hex(16)
    backend.put(name, json.dumps(wrap_master(master, passphrase, kdf_cost), indent=1).encode())
    return name


def unwrap_master(backend: Backend, passphrase: str, vault_id: str) -> tuple[MasterKey, str]:
    """Try every passphrase key file; return the master key of this vault and the key file that opened it.
    Key files of another vault id (left by an init that crashed before writing its config) are skipped."""
    names = sorted(n for n, _ in backend.list("keys"))
    if not names:
        raise NotFound(f"vault at {backend.location} has no key files")
    for name in names:
        try:
            kf = json.loads(backend.get(name))
            if kf.get("type") != "passphrase":
                continue
            kek = _kek(passphrase, kf["kdf"])
            plain = AESGCM(kek).decrypt(b64d(kf["nonce"]), b64d(kf["wrapped"]), AAD_KEY)
        except InvalidTag:
            continue
        except (ValueError, KeyError, TypeError) as e:
            raise IntegrityError(f"key file {name} is damaged ({e})") from None
        master = MasterKey.from_json(json.loads(plain))
        if master.vault_id == vault_id:
            return master, name
    raise WrongPassphrase(f"wrong passphrase for vault at {backend.location}")
