"""Keys, sealing, config authentication: the cryptographic layer of the vault format."""

from __future__ import annotations

import json
import os

import pytest

from orchestrator.errors import IntegrityError, NotFound, UsageError, WrongPassphrase
from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.crypto import OVERHEAD, Cipher, MasterKey
from orchestrator.vault.repository import Vault
from tests.conftest import PASS

pytestmark = pytest.mark.vault


def test_seal_roundtrip_and_tamper_detection() -> None:
    c = Cipher(MasterKey.generate("v"))
    sealed = c.seal(b"hello world", b"aad")
    assert len(sealed) == 11 + OVERHEAD
    assert c.open(sealed, b"aad", "x") == b"hello world"
    for i in range(len(sealed)):
        bad = bytearray(sealed)
        bad[i] ^= 0x01
        with pytest.raises(IntegrityError):
            c.open(bytes(bad), b"aad", "x")
    with pytest.raises(IntegrityError, match="authentication failed"):
        c.open(sealed, b"other aad", "x")  # a blob moved to another name is refused


def test_nonces_differ_and_chunk_ids_are_keyed() -> None:
    c1, c2 = Cipher(MasterKey.generate("a")), Cipher(MasterKey.generate("b"))
    assert c1.seal(b"x", b"") != c1.seal(b"x", b"")
    assert c1.chunk_id(b"same") == c1.chunk_id(b"same")
    assert c1.chunk_id(b"same") != c2.chunk_id(b"same")  # tenants never share chunk names


def test_wrong_passphrase_is_refused(vault: Vault) -> None:
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        Vault.open(LocalBackend(vault.backend.location), "not it")
    assert Vault.open(LocalBackend(vault.backend.location), PASS).config.id == vault.config.id


def test_second_passphrase_opens_same_vault(vault: Vault) -> None:
    vault.add_passphrase("another one", kdf_cost=12)
    v2 = Vault.open(LocalBackend(vault.backend.location), "another one")
    assert v2.cipher.chunk_id(b"x") == vault.cipher.chunk_id(b"x")


def test_a_process_derives_each_key_once(vault: Vault, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon opens the same vaults run after run: the key derivation (Argon2id) runs once per passphrase and
    key file in a process; a wrong passphrase is still refused, and a new key file derives afresh."""
    from orchestrator.vault import keys

    calls = []
    real = keys._derive
    monkeypatch.setattr(keys, "_derive", lambda secret, kdf: calls.append(kdf["salt"]) or real(secret, kdf))
    monkeypatch.setattr(keys, "_derived", {})
    where = vault.backend.location
    for _ in range(3):
        assert Vault.open(LocalBackend(where), PASS).cipher.chunk_id(b"x") == vault.cipher.chunk_id(b"x")
    assert len(calls) == 1
    with pytest.raises(WrongPassphrase):
        Vault.open(LocalBackend(where), "not it")
    assert len(calls) == 2
    vault.add_passphrase("another one", kdf_cost=12)
    calls.clear()
    Vault.open(LocalBackend(where), "another one")
    Vault.open(LocalBackend(where), "another one")
    assert len(set(calls)) == len(calls) and len(calls) <= 2  # each key file's salt derived at most once


def test_key_file_stores_no_secret_in_clear(vault: Vault) -> None:
    raw = b"".join(vault.backend.get(n) for n, _ in vault.backend.list("keys"))
    master = vault.cipher.master
    for secret in (master.id_key, *master.data_keys):
        assert secret not in raw
    kf = json.loads(raw)
    assert kf["kdf"]["name"] == "argon2id" and kf["type"] == "passphrase"


def test_config_tampering_is_detected(vault: Vault) -> None:
    path = f"{vault.backend.location}/config"
    with open(path) as f:
        doc = json.load(f)
    doc["location"] = "US"
    os.chmod(path, 0o644)
    with open(path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(IntegrityError, match="altered"):
        Vault.open(LocalBackend(vault.backend.location), PASS)


def test_missing_vault_and_double_init(tmp_path, vault: Vault) -> None:
    with pytest.raises(NotFound):
        Vault.open(LocalBackend(str(tmp_path / "nothing")), PASS)
    with pytest.raises(UsageError, match="already exists"):
        Vault.create(LocalBackend(vault.backend.location), PASS, kdf_cost=12)


def test_init_interrupted_before_config_can_be_redone(tmp_path) -> None:
    backend = LocalBackend(str(tmp_path / "v"))
    from orchestrator.vault.keys import add_key_file

    add_key_file(backend, MasterKey.generate("crashed-init"), PASS, kdf_cost=12)  # what a crashed init leaves
    vault = Vault.create(backend, PASS, kdf_cost=12)
    assert Vault.open(LocalBackend(str(tmp_path / "v")), PASS).config.id == vault.config.id
