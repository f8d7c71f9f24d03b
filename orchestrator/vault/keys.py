"""Key files: the master key wrapped by a passphrase through Argon2id (memory-hard; scrypt is read too).

A vault may hold several key files (``keys/<id>``), each wrapping the same master key: that is how a passphrase
is changed, and where a provider escrow wrapping (type ``escrow-x25519``, reserved in the format) will live.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
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


#: key-encryption keys derived in this process, by (passphrase digest, KDF parameters with their salt): the
#: daemon opens the same vaults run after run, and a derivation costs ~0.1 s of CPU and 64 MiB each time. The
#: process holds the passphrases themselves already; a command holds one or two entries.
_derived: dict[tuple[bytes, str], bytes] = {}
_derived_lock = threading.Lock()
DERIVED_KEPT = 64


def _kek(passphrase: str, kdf: dict) -> bytes:
    # surrogateescape: a passphrase that is not UTF-8 (typed in a Latin-1 terminal) derives from its bytes
    secret = passphrase.encode("utf-8", "surrogateescape")
    memo = (hashlib.sha256(secret).digest(), json.dumps(kdf, sort_keys=True))
    with _derived_lock:
        kek = _derived.get(memo)
    if kek is None:
        kek = _derive(secret, kdf)
        with _derived_lock:
            if len(_derived) >= DERIVED_KEPT:
                _derived.pop(next(iter(_derived)))  # the oldest
            _derived[memo] = kek
    return kek


def _derive(secret: bytes, kdf: dict) -> bytes:
    salt = b64d(kdf["salt"])
    if kdf["name"] == "argon2id":
        m, t, p = int(kdf["m"]), int(kdf["t"]), int(kdf["p"])
        if not (2**MIN_KDF_COST <= m <= 2**MAX_KDF_COST and 1 <= t <= 16 and 1 <= p <= 16):
            raise ValueError(f"argon2id parameters out of bounds (m={m}, t={t}, p={p})")  # would exhaust memory
        return Argon2id(salt=salt, length=32, iterations=t, lanes=p, memory_cost=m).derive(secret)
    if kdf["name"] == "scrypt":
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
        if not (2 <= n <= 2**20 and 1 <= r <= 32 and 1 <= p <= 16):
            raise ValueError(f"scrypt parameters out of bounds (n={n}, r={r}, p={p})")
        return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(secret)
    raise ValueError(f"unknown kdf {kdf['name']!r}")


def _checksum(kf: dict) -> str:
    """An unkeyed checksum of a key file's fields: tells damage to the file from a wrong passphrase (both make
    the unwrapping fail). It protects against accidents, not attackers: the AEAD does that."""
    body = json.dumps({k: v for k, v in kf.items() if k != "check"}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def wrap_master(master: MasterKey, passphrase: str, kdf_cost: int = DEFAULT_KDF_COST) -> dict:
    if not MIN_KDF_COST <= kdf_cost <= MAX_KDF_COST:
        raise ValueError(f"kdf cost must be between {MIN_KDF_COST} and {MAX_KDF_COST}")
    kdf = {"name": "argon2id", "m": 2**kdf_cost, "t": ARGON2_ITERATIONS, "p": ARGON2_LANES,
           "salt": b64e(os.urandom(16))}
    nonce = os.urandom(12)
    plain = json.dumps(master.to_json()).encode()
    wrapped = AESGCM(_kek(passphrase, kdf)).encrypt(nonce, plain, AAD_KEY)
    kf = {
        "version": 1,
        "type": "passphrase",
        "created": datetime.now(UTC).isoformat(),
        "kdf": kdf,
        "nonce": b64e(nonce),
        "wrapped": b64e(wrapped),
    }
    kf["check"] = _checksum(kf)
    return kf


def add_key_file(backend: Backend, master: MasterKey, passphrase: str, kdf_cost: int = DEFAULT_KDF_COST) -> str:
    name = "keys/" + secrets.token_hex(16)
    backend.put(name, json.dumps(wrap_master(master, passphrase, kdf_cost), indent=1).encode())
    return name


def list_key_files(backend: Backend) -> list[dict]:
    """Every key file: its name, type, creation time and KDF (never anything secret); unreadable ones marked."""
    out = []
    for name, _size in sorted(backend.list("keys")):
        try:
            kf = json.loads(backend.get(name))
            out.append({"name": name, "type": kf.get("type"), "created": kf.get("created"),
                        "kdf": {k: v for k, v in (kf.get("kdf") or {}).items() if k != "salt"}})
        except (ValueError, AttributeError) as e:
            out.append({"name": name, "type": None, "created": None, "kdf": None, "damaged": str(e)})
    return out


def unwrap_master(backend: Backend, passphrase: str, vault_id: str) -> tuple[MasterKey, str]:
    """Try every passphrase key file; return the master key of this vault and the key file that opened it.
    Key files of another vault id (left by an init that crashed before writing its config) are skipped."""
    names = sorted(n for n, _ in backend.list("keys"))
    if not names:
        raise NotFound(f"vault at {backend.location} has no key files")
    damaged: list[str] = []
    tried = 0
    for name in names:
        try:
            kf = json.loads(backend.get(name))
            if not isinstance(kf, dict):
                raise ValueError("not a JSON object")
            if kf.get("type") != "passphrase":
                continue
            if "check" in kf and kf["check"] != _checksum(kf):
                raise ValueError("its checksum does not match")
            tried += 1
            kek = _kek(passphrase, kf["kdf"])
            plain = AESGCM(kek).decrypt(b64d(kf["nonce"]), b64d(kf["wrapped"]), AAD_KEY)
            master = MasterKey.from_json(json.loads(plain))
        except InvalidTag:
            continue
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # another key file may still open it
            damaged.append(f"key file {name} is damaged ({e})")
            continue
        if master.vault_id == vault_id:
            return master, name
    if damaged and not tried:
        raise IntegrityError(f"vault at {backend.location}: {'; '.join(damaged)}; put back the copy of the key "
                             "file kept apart from the vault")
    extra = f" ({'; '.join(damaged)})" if damaged else ""
    raise WrongPassphrase(f"wrong passphrase for vault at {backend.location}{extra}")
