"""The vault: opens a backend with a passphrase and gives typed access to its objects.

Object layout (see docs/vault-format.md): ``config``, ``keys/<id>``, ``data/<hh>/<hash>`` packs,
``index/<hash>``, ``snapshots/<hash>``, ``locks/<id>``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial

from orchestrator.errors import BadInput, IntegrityError, NotFound, UsageError
from orchestrator.vault.backend import AlreadyExists, Backend, ObjectMissing
from orchestrator.vault.config import FORMAT_NAME, FORMAT_VERSION, VaultConfig
from orchestrator.vault.crypto import Cipher, MasterKey
from orchestrator.vault.damage import PREFIX as DAMAGE_PREFIX
from orchestrator.vault.damage import load_records
from orchestrator.vault.diskindex import DiskTable, build_table, memory_limit, open_table, table_dir, table_lock
from orchestrator.vault.index import Index, decode_index_raw, encode_index
from orchestrator.vault.keys import DEFAULT_KDF_COST, add_key_file, unwrap_master
from orchestrator.vault.locks import VaultLock
from orchestrator.vault.pack import ENTRY, ChunkDecoder, PackEntry, pack_path, parse_header
from orchestrator.vault.snapshot import Snapshot, decode_snapshot, encode_snapshot
from orchestrator.vault.snapshot_names import SnapshotNames

log = logging.getLogger(__name__)

HEADER_PROBE = 64 * 1024


#: the vault's directories (packs spread over 256 by their name's first byte)
LAYOUT = ["keys", "index", "snapshots", "locks", DAMAGE_PREFIX, *(f"data/{i:02x}" for i in range(256))]


class Vault:
    def __init__(self, backend: Backend, config: VaultConfig, cipher: Cipher, key_name: str) -> None:
        self.backend = backend
        self.config = config
        self.cipher = cipher
        self.key_name = key_name
        self.decoder = ChunkDecoder(cipher)
        self._index: Index | None = None
        self._index_lock = threading.Lock()  # one load at a time: a backup loads it on a thread (BackupSession)

    # ---- creation and opening -------------------------------------------------------------------------
    @classmethod
    def create(
        cls, backend: Backend, passphrase: str, *, kdf_cost: int = DEFAULT_KDF_COST, **config: object
    ) -> Vault:
        if backend.exists("config"):
            raise UsageError(f"a vault already exists at {backend.location}")
        if not passphrase:
            raise BadInput("the passphrase must not be empty")
        cfg = VaultConfig(**config)  # type: ignore[arg-type]
        if cfg.block_size < 4096 or cfg.block_size & (cfg.block_size - 1) or cfg.block_size > 16 * 1024 * 1024:
            raise BadInput("block size must be a power of two between 4 KiB and 16 MiB")
        master = MasterKey.generate(cfg.id)
        cipher = Cipher(master)
        make_layout = getattr(backend, "make_layout", None)
        if make_layout is not None:  # every directory up front: append-only SFTP clients cannot create them
            make_layout(LAYOUT)
        key_name = add_key_file(backend, master, passphrase, kdf_cost)
        doc = asdict(cfg)
        doc["mac"] = cipher.mac(cfg.canonical()).hex()
        backend.put("config", json.dumps(doc, indent=1).encode())  # written last: marks the vault as complete
        return cls(backend, cfg, cipher, key_name)

    @classmethod
    def open(cls, backend: Backend, passphrase: str) -> Vault:
        try:
            doc = json.loads(backend.get("config"))
        except ObjectMissing:
            raise NotFound(f"no vault at {backend.location}") from None
        except ValueError:
            raise IntegrityError(f"vault config at {backend.location} is damaged (not JSON)") from None
        if doc.get("format") != FORMAT_NAME:
            raise NotFound(f"{backend.location} is not a Do'BaaS vault")
        if doc.get("version") != FORMAT_VERSION:
            raise UsageError(f"vault format version {doc.get('version')} is not supported by this dobaas")
        cfg = VaultConfig.from_json(doc)
        t0 = time.monotonic()
        master, key_name = unwrap_master(backend, passphrase, cfg.id)
        log.debug("vault %s: opened with %s (key derivation %.3f s)", backend.location, key_name,
                  time.monotonic() - t0)
        cipher = Cipher(master)
        if master.vault_id != cfg.id or cipher.mac(cfg.canonical()).hex() != doc.get("mac"):
            raise IntegrityError(f"vault config at {backend.location} was altered (its MAC does not match)")
        return cls(backend, cfg, cipher, key_name)

    def add_passphrase(self, passphrase: str, kdf_cost: int = DEFAULT_KDF_COST) -> str:
        return add_key_file(self.backend, self.cipher.master, passphrase, kdf_cost)

    def lock(self, kind: str, purpose: str, wait: float = 0.0) -> VaultLock:
        return VaultLock(self.backend, kind, purpose).acquire(wait)

    # ---- index ------------------------------------------------------------------------------------------
    def forget_index(self) -> None:
        """Drop the loaded index: the next ``load_index`` reads the vault's index objects again."""
        with self._index_lock:
            self._index = None

    def load_index(self, refresh: bool = False) -> Index:
        with self._index_lock:
            if self._index is not None and not refresh:
                return self._index
            return self._load_index()

    def _load_index(self) -> Index:
        t0 = time.monotonic()
        idx = Index()
        names = dict(self.backend.list("index"))
        table = self._index_table(names, idx)
        if table is not None:
            idx.use_table(table)
        for name in names:
            if name in idx.objects or name in idx.damaged:
                continue  # in the local table, or already found not to decode while building it
            tables = self._decode_index_object(name, idx)
            if tables is None:
                continue
            for pack, table_bytes in tables:
                idx.add_pack_raw(pack, table_bytes)
            idx.objects.add(name)
        if idx.damaged:
            self.index_from_headers(idx)
        idx.apply_damage(load_records(self.backend, self.cipher))
        self._index = idx
        log.debug("index: %d object(s), %d pack(s), %d chunk(s) loaded in %.3f s", len(idx.objects), len(idx.packs),
                  len(idx.chunks), time.monotonic() - t0)
        return idx

    def _decode_index_object(self, name: str, idx: Index) -> list[tuple[str, memoryview]] | None:
        try:
            return decode_index_raw(self.cipher, name, self.backend.get(name))
        except (IntegrityError, ObjectMissing) as e:
            # an upload cut short on append-only storage, or damage: what it described is read from the
            # packs' own headers, so no chunk is lost with it; verify and maintenance report it
            log.warning("index object %s does not decode (%s): reading pack headers instead", name[:24], e)
            idx.damaged[name] = str(e)
            return None

    def _index_table(self, names: dict[str, int], idx: Index) -> DiskTable | None:
        """The local sorted table of a large vault's index (diskindex), built or rebuilt when needed; None for a
        vault small enough to index in memory."""
        limit = memory_limit()
        directory = table_dir(self.config.id)
        if not os.path.exists(directory) and sum(names.values()) // ENTRY.size <= limit:
            return None  # a vault indexed in memory: no table, no lock
        with table_lock(directory):  # one process builds; the others wait, then open what it built
            table = open_table(directory)
            if table is not None and not table.objects <= names.keys():
                table.close()  # objects were consolidated away: the table describes packs that may be gone
                table = None
            new = sum(size for name, size in names.items() if table is None or name not in table.objects)
            if new // ENTRY.size > (limit if table is None else limit // 4):
                if table is not None:
                    table.close()
                build_table(directory, ((name, partial(self._decode_index_object, name, idx)) for name in names))
                table = open_table(directory)
            return table

    def load_index_adopting(self) -> Index:
        """The index for a writer: packs an interrupted run left unindexed are adopted first, so their chunks
        are reused rather than sent again."""
        index = self.load_index()
        self.adopt_unindexed_packs(index)
        return index

    def index_from_headers(self, index: Index) -> None:
        """Index, in memory, every pack that no readable index object describes, from the pack's own header
        (packs are self-describing); packs whose header does not parse are listed in ``index.unreadable``."""
        added = False
        for pack, size in self.pack_names().items():
            if pack in index.packs:
                continue
            try:
                entries = self.read_pack_header(pack, size)
            except (IntegrityError, ObjectMissing) as e:
                index.unreadable[pack] = str(e)
                continue
            index.from_headers[pack] = entries
            index.add_pack(pack, entries)
            added = True
        if added and index.damage_records:
            index.apply_damage(index.damage_records)  # a pack read here may hold a recorded damaged copy

    def pack_names(self) -> dict[str, int]:
        """Hash -> size of every complete pack object."""
        return {name.rsplit("/", 1)[-1]: size for name, size in self.backend.list("data")}

    def read_pack_header(self, pack: str, size: int) -> list[PackEntry]:
        what = f"pack {pack[:12]}"
        probe = min(size, HEADER_PROBE)
        tail = self.backend.get_range(pack_path(pack), size - probe, probe)
        if len(tail) >= 4:
            hlen = int.from_bytes(tail[-4:], "little")
            if hlen + 4 > probe and hlen + 4 <= size:
                tail = self.backend.get_range(pack_path(pack), size - hlen - 4, hlen + 4)
        return parse_header(self.cipher, tail, size, what)

    def adopt_unindexed_packs(self, index: Index) -> int:
        """Write an index object for the packs no readable index object describes (a killed backup stored them
        but never indexed them, or their index object is damaged), so their chunks are reused and later
        readers need not read their headers."""
        known = set(index.from_headers)
        self.index_from_headers(index)
        adopted = dict(index.from_headers)
        if adopted:
            name, _sealed = self.put_sealed("index", lambda: encode_index(self.cipher, adopted))
            index.objects.add(name)
            index.from_headers.clear()
            log.info("indexed %d pack(s) from their own headers (%d new: left by an interrupted backup)",
                     len(adopted), len(set(adopted) - known))
        return len(adopted)

    # ---- chunks -----------------------------------------------------------------------------------------
    def read_chunk(self, cid: bytes, what: str = "chunk") -> bytes:
        index = self.load_index()
        loc = index.get(cid)
        if loc is None:
            if cid in index.quarantined:
                raise IntegrityError(f"{what}: chunk {cid.hex()[:12]} is damaged ({index.quarantined[cid]}); the "
                                     "next backup of the same data stores it again")
            raise IntegrityError(f"{what}: chunk {cid.hex()[:12]} is missing from the vault")
        try:
            blob = self.backend.get_range(pack_path(loc.pack), loc.offset, loc.length)
        except ObjectMissing:
            raise IntegrityError(f"{what}: pack {loc.pack[:12]} is missing from the vault") from None
        if len(blob) != loc.length:
            raise IntegrityError(f"{what}: pack {loc.pack[:12]} is truncated")
        return self.decoder.decode(blob, loc.entry(cid), f"{what} (chunk {cid.hex()[:12]})")

    # ---- snapshots --------------------------------------------------------------------------------------
    def snapshot_ids(self) -> list[str]:
        return [name.rsplit("/", 1)[-1] for name, _ in self.backend.list("snapshots")]

    def read_snapshot(self, sid: str) -> Snapshot:
        try:
            sealed = self.backend.get(f"snapshots/{sid}")
        except ObjectMissing:
            raise NotFound(f"snapshot {sid[:12]} not found") from None
        return decode_snapshot(self.cipher, sid, sealed)

    def list_snapshots(self) -> tuple[list[Snapshot], list[tuple[str, str]]]:
        """All readable snapshots oldest first, and (id, error) for damaged manifests."""
        good, bad = [], []
        for sid in self.snapshot_ids():
            try:
                good.append(self.read_snapshot(sid))
            except (IntegrityError, NotFound) as e:
                bad.append((sid, str(e)))
        good.sort(key=lambda s: (s.time, s.id))
        return good, bad

    def resolve(self, prefix: str) -> Snapshot:
        prefix = prefix.strip().lower()
        if not prefix:
            raise UsageError("empty snapshot id")
        matches = [sid for sid in self.snapshot_ids() if sid.startswith(prefix)]
        if not matches:
            raise NotFound(f"no snapshot with id {prefix} in the vault at {self.backend.location}")
        if len(matches) > 1:
            raise UsageError(f"snapshot id {prefix} is ambiguous ({len(matches)} matches); give more characters")
        return self.read_snapshot(matches[0])

    def latest(self, name: str) -> Snapshot | None:
        """The newest readable snapshot named ``name``: one listing, the manifests not seen before (their name
        and time are then kept on local disk: ``SnapshotNames``) and the newest of ``name``'s. A damaged
        manifest is passed over, as ``list_snapshots`` does."""
        cache = SnapshotNames(self.config.id, self.cipher.master.mac_key)
        known = cache.load()
        ids = self.snapshot_ids()
        read: dict[str, Snapshot] = {}
        for sid in ids:
            if sid not in known:
                try:
                    read[sid] = snap = self.read_snapshot(sid)
                except (IntegrityError, NotFound):
                    continue  # damaged (or just removed): never a parent, never recorded
                known[sid] = (snap.name, snap.time)
        present = set(ids)
        if read or len(known) != len(present & known.keys()):
            cache.store({sid: v for sid, v in known.items() if sid in present})
        for _time, sid in sorted(((known[sid][1], sid) for sid in present & known.keys()
                                  if known[sid][0] == name), reverse=True):
            try:
                return read[sid] if sid in read else self.read_snapshot(sid)
            except (IntegrityError, NotFound):
                continue
        return None

    def write_snapshot(self, snap: Snapshot) -> int:
        """Publish a snapshot (sets ``snap.id``); return the manifest's stored size."""

        def seal() -> tuple[str, bytes]:
            sid, sealed = encode_snapshot(self.cipher, snap)
            return f"snapshots/{sid}", sealed

        name, sealed = self.put_sealed("snapshot manifest", seal)
        snap.id = name.removeprefix("snapshots/")
        return len(sealed)

    def put_sealed(self, what: str, seal: Callable[[], tuple[str, bytes]]) -> tuple[str, bytes]:
        """Store an object named by the hash of its sealed content. On append-only storage an upload cut short
        leaves a partial object that keeps the name; sealing again (a fresh nonce) gives the object a new name."""
        for attempt in (1, 2, 3):
            name, sealed = seal()
            try:
                self.backend.put(name, sealed)
                return name, sealed
            except AlreadyExists:
                if attempt == 3:
                    raise IntegrityError(f"{what} {name[:24]} cannot be written: the name stays taken") from None
        raise AssertionError("unreachable")
