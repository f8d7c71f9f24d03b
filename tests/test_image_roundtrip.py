"""Round trips of random images through full and incremental backups (hypothesis), byte for byte."""

from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.backup.image import backup_image_file
from orchestrator.cbt.extents import blocks_touched
from orchestrator.restore.image import restore_image
from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.repository import Vault
from orchestrator.vault.verify import verify_vault
from tests.conftest import PASS, mixed_bytes

pytestmark = pytest.mark.cbt
BS = 4096

write_st = st.tuples(st.floats(0, 1), st.integers(1, 3 * BS + 17), st.sampled_from(["random", "zero", "same"]))
round_st = st.tuples(st.lists(write_st, max_size=6), st.sampled_from([None, None, None, "grow", "shrink"]))


def _restore(vault: Vault, sid: str, out: str) -> bytes:
    if os.path.exists(out):
        os.unlink(out)
    restore_image(vault, vault.read_snapshot(sid).items[0], out)
    with open(out, "rb") as f:
        return f.read()


@settings(max_examples=35, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(1, 24 * BS + 123), seed=st.integers(0, 2**16), rounds=st.lists(round_st, min_size=1,
       max_size=3), use_extents=st.booleans())
def test_incremental_forever_roundtrip(size: int, seed: int, rounds: list, use_extents: bool) -> None:
    import random

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as d:
        vault = Vault.create(LocalBackend(f"{d}/v"), PASS, kdf_cost=12, block_size=BS, pack_size=32 * 1024)
        img = f"{d}/disk.img"
        data = bytearray(mixed_bytes(size, seed))
        with open(img, "wb") as f:
            f.write(data)
        versions = [(backup_image_file(vault, img, "disk")["id"], bytes(data))]
        for writes, resize in rounds:
            extents = []
            for frac, length, kind in writes:
                off = min(int(frac * len(data)), max(0, len(data) - 1))
                length = min(length, len(data) - off)
                if length <= 0:
                    continue
                chunk = {"random": rng.randbytes(length), "zero": bytes(length), "same": bytes(data[off:off + length])}
                data[off : off + length] = chunk[kind]
                extents.append((off, length))
            old_size = len(data)
            if resize == "grow":
                data += rng.randbytes(rng.randrange(1, 2 * BS))
            elif resize == "shrink" and len(data) > 1:
                del data[rng.randrange(1, len(data)) :]
            with open(img, "wb") as f:
                f.write(data)
            res = backup_image_file(vault, img, "disk", extents=extents if use_extents else None)
            if use_extents:
                assert res["mode"] == "incremental"
                if resize is None:  # exactly the blocks the extents touch are read, nothing else
                    touched = blocks_touched(extents, BS)
                    expected = sum(min(BS, old_size - b * BS) for b in touched)
                    assert res["bytes_read"] == expected
            else:
                assert res["bytes_read"] == len(data)
            versions.append((res["id"], bytes(data)))
        for sid, content in versions:  # every snapshot stays complete on its own
            assert _restore(vault, sid, f"{d}/out") == content
        rep = verify_vault(Vault.open(LocalBackend(f"{d}/v"), PASS))
        assert rep.ok, rep.damage


def test_holes_are_not_stored_and_restore_is_sparse(vault: Vault, write_image, tmp_path) -> None:
    img = write_image(b"\0" * (64 * BS) + b"data" + b"\0" * (64 * BS))
    res = backup_image_file(vault, str(img), "sparse")
    assert res["zero_blocks"] == 128
    assert res["chunks_new"] == 2  # one data block and one map piece
    out = tmp_path / "out.img"
    restore_image(vault, vault.read_snapshot(res["id"]).items[0], str(out))
    assert out.read_bytes() == img.read_bytes()
    assert os.stat(out).st_blocks * 512 < 64 * BS  # holes stayed holes


def test_unchanged_image_dedups_to_nothing(vault: Vault, write_image) -> None:
    img = write_image(mixed_bytes(50 * BS, 3))
    first = backup_image_file(vault, str(img), "d")
    again = backup_image_file(vault, str(img), "d")
    assert again["mode"] == "dedup-full" and again["chunks_new"] == 0
    assert again["bytes_stored"] < 2048 < first["bytes_stored"]  # only the new manifest


def test_extents_without_parent_fall_back_to_full_with_warning(vault: Vault, write_image) -> None:
    img = write_image(mixed_bytes(10 * BS, 4))
    res = backup_image_file(vault, str(img), "new", extents=[(0, 10)])
    assert res["mode"] == "full" and res["bytes_read"] == 10 * BS
    assert any("no previous snapshot" in w for w in res["warnings"])


def test_different_names_chain_separately(vault: Vault, write_image) -> None:
    a = write_image(mixed_bytes(8 * BS, 5), "a.img")
    b = write_image(mixed_bytes(8 * BS, 6), "b.img")
    first_a = backup_image_file(vault, str(a), "a")["id"]
    backup_image_file(vault, str(b), "b")
    res = backup_image_file(vault, str(a), "a", extents=[])
    assert res["mode"] == "incremental" and res["bytes_read"] == 0
    assert vault.read_snapshot(res["id"]).parent == first_a  # chained on a, not on the newer b


def test_sparse_file_holes_are_skipped_without_reading(vault: Vault, tmp_path) -> None:
    img = tmp_path / "sparse.img"
    with open(img, "wb") as f:
        f.truncate(1024 * BS)
        f.seek(100 * BS + 10)
        f.write(os.urandom(3 * BS))
        f.seek(900 * BS)
        f.write(b"tail data")
    res = backup_image_file(vault, str(img), "sparse")
    assert res["bytes_read"] < 64 * BS  # only the allocated extents (file system granularity) were read
    assert res["zero_blocks"] >= 1024 - 6
    out = tmp_path / "out.img"
    restore_image(vault, vault.read_snapshot(res["id"]).items[0], str(out))
    assert out.read_bytes() == img.read_bytes()


@given(st.lists(st.sampled_from(["zero", "tail0", "head0", "rand"]), max_size=40))
def test_count_holes_is_exact_even_when_ids_touch_zero_bytes(kinds: list[str]) -> None:
    from orchestrator.cbt.image import count_holes

    ids = {"zero": bytes(32), "tail0": b"\x07" * 20 + bytes(12), "head0": bytes(12) + b"\x07" * 20,
           "rand": os.urandom(31) + b"\x01"}
    assert count_holes(bytearray(b"".join(ids[k] for k in kinds))) == kinds.count("zero")
