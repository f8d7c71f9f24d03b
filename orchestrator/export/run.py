"""Export snapshots in standard formats into a folder: one sub-folder per snapshot, each file as its plugin
describes it (orchestrator.plugin.export), then MANIFEST.json, SHA256SUMS and the two read-me files.

Resumable: every finished part is recorded in ``.dobaas-export/state.json`` (written atomically) and a part is
written under a ``.partial`` name until it is complete, so a killed export run again with the same arguments
skips what is done and redoes only the part it was in."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from orchestrator import __version__
from orchestrator.errors import DobaasError, StorageFull, UsageError
from orchestrator.export.images import export_image
from orchestrator.export.readme import CORE_FORMATS, render
from orchestrator.export.tar import write_tar
from orchestrator.plugin import registry
from orchestrator.plugin.export import IMAGE_FORMATS, TREE_FORMATS, ExportPart, HowToRead, default_parts
from orchestrator.restore.local_sink import LocalSink
from orchestrator.restore.stream import restore_stream
from orchestrator.restore.tree import restore_tree
from orchestrator.vault.repository import Vault
from orchestrator.vault.snapshot import Snapshot
from orchestrator.vault.tree import printable

log = logging.getLogger(__name__)
STATE_DIR = ".dobaas-export"
DEADLINE_DAYS = 60  # the contract's time to hand a client's data back


@dataclass
class ExportReport:
    output: str
    snapshots: int = 0
    files: int = 0  # files in the manifest
    bytes: int = 0  # bytes of the exported files (the whole manifest)
    bytes_this_run: int = 0  # data read out of the vault by this run
    parts_resumed: int = 0  # parts an earlier, interrupted run had finished
    seconds: float = 0.0
    throughput_bytes_per_s: float = 0.0
    #: the 60-day obligation: every snapshot of the client(s) at the throughput measured by this run
    estimate: dict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def snapshot_bytes(snaps: list[Snapshot]) -> int:
    """What exporting ``snaps`` reads out of the vault: the size of every item (no dedup in plain formats)."""
    return sum(i.get("size", 0) for s in snaps for i in s.items)


def snapshot_folder(snap: Snapshot) -> str:
    """client/source[/unit]/YYYY-MM-DD_HHMMSS_ID8 (UTC): sorts by date within each source."""
    when = snap.datetime.astimezone(UTC).strftime("%Y-%m-%d_%H%M%S")
    parts = [p for p in snap.name.split("/") if p not in ("", ".", "..")]
    return "/".join([*parts, f"{when}_{snap.id[:8]}"])


def plan(snap: Snapshot, tree_format: str | None, image_format: str | None) -> list[ExportPart]:
    """The parts of one snapshot's export, as its plugin describes them, plus snapshot.json."""
    if tree_format and tree_format not in TREE_FORMATS:
        raise UsageError(f"unknown tree format {tree_format!r} ({', '.join(TREE_FORMATS)})")
    if image_format and image_format not in IMAGE_FORMATS:
        raise UsageError(f"unknown image format {image_format!r} ({', '.join(IMAGE_FORMATS)})")
    try:
        plugin = registry.load(snap.meta.get("plugin", ""))
        parts = plugin.export_parts(snap.meta, snap.items, tree_format or "tar",
                                    image_format or plugin.native_image_format)
    except UsageError:  # a plugin not installed here: the core's formats still read everything back
        parts = default_parts(snap.items, tree_format or "tar", image_format or "raw")
    doc = {"id": snap.id, **snap.to_json()}
    parts.append(ExportPart("snapshot.json", "document", format="snapshot",
                            content=json.dumps(doc, indent=2, ensure_ascii=False, default=str).encode()))
    for p in parts:
        if p.path.startswith("/") or ".." in p.path.split("/"):
            raise DobaasError(f"plugin {snap.meta.get('plugin')}: unsafe export path {p.path!r}")
    return parts


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class _Hashing:
    """A file written once, hashed as it is written (the manifest's SHA-256 without reading it back)."""

    def __init__(self, path: str) -> None:
        self.f = open(path, "wb")  # noqa: SIM115  (closed by close())
        self.h = hashlib.sha256()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.h.update(data)
        return self.f.write(data)

    def close(self) -> str:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        return self.h.hexdigest()


class _State:
    """Finished parts, kept across runs of the same export."""

    def __init__(self, output: str) -> None:
        self.path = os.path.join(output, STATE_DIR, "state.json")
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.parts: dict[str, list[dict]] = {}
        if os.path.exists(self.path):
            with open(self.path) as f:
                self.parts = json.load(f).get("parts", {})

    def done(self, key: str, root: str) -> bool:
        entries = self.parts.get(key)
        return entries is not None and all(
            os.path.isfile(os.path.join(root, e["path"])) and os.path.getsize(os.path.join(root, e["path"]))
            == e["size"] for e in entries)

    def record(self, key: str, entries: list[dict]) -> None:
        self.parts[key] = entries
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"version": 1, "parts": self.parts}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def export_snapshots(vault: Vault, snaps: list[Snapshot], output: str, tree_format: str | None = None,
                     image_format: str | None = None, progress: Callable[[int], None] | None = None,
                     all_bytes: int | None = None) -> ExportReport:
    """Export ``snaps`` into ``output``; ``all_bytes``: the size of everything the client has (for the
    60-day estimate; default: these snapshots)."""
    t0 = time.monotonic()
    os.makedirs(output, exist_ok=True)
    rep = ExportReport(output=os.path.abspath(output), snapshots=len(snaps))
    state = _State(output)
    zero_ids: dict[int, str] = {}

    def is_zero(hexid: str, length: int) -> bool:
        if length not in zero_ids:
            zero_ids[length] = vault.cipher.chunk_id(bytes(length)).hex()
        return zero_ids[length] == hexid

    plans = [(s, plan(s, tree_format, image_format)) for s in snaps]
    for snap, parts in plans:
        folder = snapshot_folder(snap)
        items = {i["name"]: i for i in snap.items}
        for part in parts:
            key = f"{folder}/{part.path}"
            if state.done(key, output):
                rep.parts_resumed += 1
                if progress and part.item:
                    progress(items[part.item].get("size", 0))
                continue
            dest = os.path.join(output, key)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            what = f"snapshot {snap.id[:12]} ({snap.name}) {part.item or part.path}"
            log.info("export %s -> %s", what, key)
            try:
                written, digest = _write_part(vault, snap, part, items, dest, is_zero, progress, what, rep)
            except OSError as e:
                cls = StorageFull if e.errno == errno.ENOSPC else DobaasError
                raise cls(f"export of {what} to {dest} failed: {e.strerror or e}; free the space or fix the cause "
                          "and run the same command again: it resumes") from None
            rep.bytes_this_run += written
            entries = [{"path": os.path.relpath(f, output), "size": os.path.getsize(f),
                        "sha256": digest if digest and f == dest else _sha256(f),
                        "snapshot": snap.id, "source": snap.name, "time": snap.time, "format": part.format,
                        "kind": part.kind, **({"item": part.item} if part.item else {})}
                       for f in _files_of(dest)]
            state.record(key, entries)
    _finish(output, plans, state, rep)
    rep.seconds = round(time.monotonic() - t0, 3)
    moved = max(rep.bytes_this_run, 1)
    rep.throughput_bytes_per_s = round(moved / max(rep.seconds, 1e-3), 1)
    total = all_bytes if all_bytes is not None else snapshot_bytes(snaps)
    if rep.bytes_this_run:
        secs = total / rep.throughput_bytes_per_s
        rep.estimate = {"bytes": total, "seconds": round(secs), "days": round(secs / 86400, 2),
                        "within_days": DEADLINE_DAYS, "fits": secs < DEADLINE_DAYS * 86400}
    return rep


def _files_of(dest: str) -> list[str]:
    if os.path.isdir(dest) and not os.path.islink(dest):
        return sorted(os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs
                      if os.path.isfile(os.path.join(d, f)) and not os.path.islink(os.path.join(d, f)))
    return [dest]


def _write_part(vault: Vault, snap: Snapshot, part: ExportPart, items: dict, dest: str,
                is_zero: Callable[[str, int], bool], progress: Callable[[int], None] | None, what: str,
                rep: ExportReport) -> tuple[int, str | None]:
    """Write one part under its final name (complete or not at all); returns the bytes taken from the vault and
    the file's SHA-256 when it was hashed while written."""
    tmp = dest + ".partial"
    if part.kind == "document":
        out = _Hashing(tmp)
        out.write(part.content or b"")
        digest = out.close()
        os.replace(tmp, dest)
        return 0, digest
    item = items[part.item or ""]
    if part.kind == "image":
        export_image(vault, item, part.format, dest, progress, what)
        return int(item["size"]), None
    if part.kind == "stream":
        out = _Hashing(tmp)
        restore_stream(vault, item, out, what)
        digest = out.close()
        os.replace(tmp, dest)
        if progress:
            progress(int(item["size"]))
        return int(item["size"]), digest
    read_meta = lambda cid: vault.read_chunk(cid, f"{what} listing")  # noqa: E731
    if part.format == "dir":
        for leftover in (dest, tmp):
            if os.path.isdir(leftover):
                shutil.rmtree(leftover)
        sink = LocalSink(tmp)
        try:
            tr = restore_tree(vault.read_chunk, item, read_meta, sink, None, "always", progress)
        finally:
            sink.close()
        os.replace(tmp, dest)
        rep.damaged += [f"{what}: {d}" for d in tr.damaged]
        rep.skipped += [f"{what}: {e}" for e in tr.errors if not any(e.startswith(d) for d in tr.damaged)]
        return tr.bytes, None
    out = _Hashing(tmp)
    try:
        st = write_tar(vault.read_chunk, item, read_meta, out, is_zero, progress,
                       os.path.basename(dest)[: -len(".tar")] or "root")
    finally:
        digest = out.close()
    os.replace(tmp, dest)
    rep.damaged += [f"{what}: {d}" for d in st.damaged]
    rep.skipped += [f"{what}: {s}" for s in st.skipped]
    return st.bytes, digest


def _sum_line(entry: dict) -> str:
    """A line `sha256sum -c` reads; names with a newline or a backslash escaped as GNU coreutils does."""
    path = entry["path"]
    if "\n" in path or "\\" in path:
        return "\\" + entry["sha256"] + "  " + path.replace("\\", "\\\\").replace("\n", "\\n") + "\n"
    return f"{entry['sha256']}  {path}\n"


def _readable(entry: dict) -> dict:
    """A manifest entry whose path is not UTF-8 (a Latin-1 name kept as it was): shown with \\xNN escapes, and its
    exact bytes in ``path_base64``."""
    try:
        entry["path"].encode()
        return entry
    except UnicodeEncodeError:
        raw = entry["path"].encode("utf-8", "surrogateescape")
        return {**entry, "path": printable(entry["path"]), "path_base64": base64.b64encode(raw).decode()}


def _finish(output: str, plans: list[tuple[Snapshot, list[ExportPart]]], state: _State, rep: ExportReport) -> None:
    """MANIFEST.json, SHA256SUMS, LISEZMOI.txt and README.txt for everything the folder holds."""
    entries = [e for entries in state.parts.values() for e in entries]
    entries.sort(key=lambda e: e["path"])
    rep.files, rep.bytes = len(entries), sum(e["size"] for e in entries)
    clients = sorted({s.name.split("/")[0] for s, _ in plans})
    now = datetime.now(UTC).isoformat(timespec="seconds")
    manifest = {"format": "dobaas-export", "version": 1, "made": now, "by": f"dobaas {__version__}",
                "host": socket.gethostname(), "clients": clients, "files": [_readable(e) for e in entries]}
    sections: dict[str, tuple[HowToRead, list[str]]] = {}
    for snap, parts in plans:
        for p in parts:
            how = p.how or CORE_FORMATS.get(p.format) or CORE_FORMATS["stored"]
            sections.setdefault(p.format, (how, []))[1].append(f"{snapshot_folder(snap)}/{p.path}")
    docs = {
        "MANIFEST.json": json.dumps(manifest, indent=1, ensure_ascii=False).encode(),
        "SHA256SUMS": "".join(_sum_line(e) for e in entries).encode("utf-8", "surrogateescape"),
        "LISEZMOI.txt": render("fr", ", ".join(clients), now, sections).encode(),
        "README.txt": render("en", ", ".join(clients), now, sections).encode(),
    }
    for name, data in docs.items():
        tmp = os.path.join(output, name + ".partial")
        out = _Hashing(tmp)
        out.write(data)
        out.close()
        os.replace(tmp, os.path.join(output, name))
