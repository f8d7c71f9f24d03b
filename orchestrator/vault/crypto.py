"""Key material and authenticated encryption of vault objects.

Every encrypted object ("sealed blob") is ``key_no (1 byte) | nonce (12) | AES-256-GCM ciphertext | tag (16)``.
``key_no`` selects the data key from the master key's key ring, which is how key rotation works without
rewriting old data. Chunk names are keyed BLAKE3 hashes of the plaintext, so names leak nothing without the key.
"""

from __future__ import annotations

import base64
import mmap
import os
import threading
from dataclasses import dataclass

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from orchestrator.errors import IntegrityError

NONCE_LEN = 12
TAG_LEN = 16
OVERHEAD = 1 + NONCE_LEN + TAG_LEN
ID_LEN = 32
#: the block-map entry for an all-zero block (a hole); a keyed hash never equals it in practice
ZERO_ID = bytes(ID_LEN)

AAD_PACK_HEADER = b"dobaas-pack-header-v1"
AAD_INDEX = b"dobaas-index-v1"
AAD_SNAPSHOT = b"dobaas-snapshot-v1"
AAD_DAMAGE = b"dobaas-damage-v1"
AAD_KEY = b"dobaas-key-v1"


def b64e(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def b64d(s: str) -> bytes:
    return base64.b64decode(s.encode("ascii"), validate=True)


@dataclass
class MasterKey:
    """The vault's secrets. Wrapped (never stored in clear) by each key file."""

    vault_id: str
    id_key: bytes  # keyed BLAKE3 key for chunk ids
    mac_key: bytes  # authenticates the plain-text config
    data_keys: list[bytes]  # AES-256-GCM keys; the last one encrypts new objects

    @classmethod
    def generate(cls, vault_id: str) -> MasterKey:
        return cls(vault_id, os.urandom(32), os.urandom(32), [os.urandom(32)])

    def to_json(self) -> dict:
        return {
            "vault_id": self.vault_id,
            "id_key": b64e(self.id_key),
            "mac_key": b64e(self.mac_key),
            "data_keys": [b64e(k) for k in self.data_keys],
        }

    @classmethod
    def from_json(cls, d: dict) -> MasterKey:
        return cls(d["vault_id"], b64d(d["id_key"]), b64d(d["mac_key"]), [b64d(k) for k in d["data_keys"]])


class Cipher:
    """Seals and opens vault objects with the master key. Thread-safe."""

    def __init__(self, master: MasterKey) -> None:
        self.master = master
        self._aes = [AESGCM(k) for k in master.data_keys]
        self._current = len(self._aes) - 1
        self._id_key = master.id_key
        self._local = threading.local()

    def chunk_id(self, data: bytes | memoryview) -> bytes:
        return blake3.blake3(data, key=self._id_key).digest()

    def mac(self, data: bytes) -> bytes:
        return blake3.blake3(data, key=self.master.mac_key).digest()

    def seal(self, plain: bytes | memoryview, aad: bytes) -> bytes:
        out = bytearray(len(plain) + OVERHEAD)
        self.seal_into(out, 0, plain, aad)
        return bytes(out)

    def seal_into(self, buf: bytearray | mmap.mmap, pos: int, plain: bytes | memoryview, aad: bytes) -> int:
        """Write the sealed form of ``plain`` into ``buf`` at ``pos`` without extra copies; return the new end."""
        nonce = os.urandom(NONCE_LEN)
        end = pos + OVERHEAD + len(plain)
        buf[pos] = self._current
        buf[pos + 1 : pos + 1 + NONCE_LEN] = nonce
        view = memoryview(buf)
        self._aes[self._current].encrypt_into(nonce, plain, aad, view[pos + 1 + NONCE_LEN : end])
        return end

    def open(self, blob: bytes | memoryview, aad: bytes, what: str) -> bytes:
        """Authenticate and decrypt; raise IntegrityError naming ``what`` on any damage."""
        if len(blob) < OVERHEAD:
            raise IntegrityError(f"{what}: truncated ({len(blob)} bytes)")
        key_no = blob[0]
        if key_no >= len(self._aes):
            raise IntegrityError(f"{what}: unknown key number {key_no}")
        view = memoryview(blob)
        try:
            return self._aes[key_no].decrypt(view[1 : 1 + NONCE_LEN], view[1 + NONCE_LEN :], aad)
        except InvalidTag:
            raise IntegrityError(f"{what}: authentication failed (damaged or tampered)") from None


def content_hash(data: bytes | memoryview) -> str:
    """Unkeyed BLAKE3 of stored bytes: names packs, index and snapshot objects; lets verify spot bit rot."""
    return blake3.blake3(data).hexdigest()
