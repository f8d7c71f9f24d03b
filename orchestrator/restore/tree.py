"""Restore the entries of a tree item into a sink: ONE loop for every destination (a local directory, a share
in place or into another folder). The loop decides what is restored (selection, unsafe paths, overwrite rules,
hard links, damage); the sink decides how bytes and metadata land (see TreeSink in orchestrator.plugin.streams).

A damaged or missing chunk costs the file it belongs to, never the rest of the tree: every intact entry is
restored, each damaged one is reported by path, and no temporary file is left behind."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from orchestrator.errors import DobaasError
from orchestrator.plugin.streams import TreeSink, UnsupportedEntry
from orchestrator.vault.snapshot import Item
from orchestrator.vault.tree import TreeEntry, iter_tree

ReadChunk = Callable[[bytes, str], bytes]


@dataclass
class TreeRestoreReport:
    files: int = 0
    dirs: int = 0
    links: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: files not restored because their data is damaged or missing in the vault (also in ``errors``)
    damaged: list[str] = field(default_factory=list)

    def merge(self, other: TreeRestoreReport, root: str) -> None:
        """Add another item's figures, naming its entries by ``root``."""
        self.files += other.files
        self.dirs += other.dirs
        self.links += other.links
        self.bytes += other.bytes
        self.skipped += [f"{root}/{s}" if s else root for s in other.skipped]
        self.errors += [f"{root}/{e}" for e in other.errors]
        self.damaged += [f"{root}/{d}" for d in other.damaged]


def path_under(path: str, root: str) -> str | None:
    """``path`` relative to a tree item's ``root`` ('' for the root itself), None when it is not below it."""
    path, root = path.rstrip("/") or "/", root.rstrip("/") or "/"
    if path == root:
        return ""
    prefix = root.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else None


def selected(path: str, selection: list[str] | None) -> bool:
    if not selection:
        return True
    return any(s == "" or path == s or path.startswith(s + "/") for s in selection)


def safe_rel(path: str) -> bool:
    """A path from a listing that stays below the destination (no absolute path, no '..', no empty part)."""
    parts = path.split("/")
    return not path.startswith("/") and ".." not in parts and "" not in parts[1:] if path else True


def should_replace(overwrite: str, backup_mtime_ns: int, existing_mtime_ns: int) -> bool:
    """Whether an existing file gives way to the restored one: ``always``, or ``if-newer`` when the backup's
    copy is newer; never with ``never``."""
    if overwrite == "always":
        return True
    if overwrite == "if-newer":
        return backup_mtime_ns > existing_mtime_ns
    return False


def content(read_chunk: ReadChunk, path: str, refs: list, progress: Callable[[int], None] | None) -> Iterator[bytes]:
    """A file's bytes, chunk by chunk, each authenticated (IntegrityError names the path and offset)."""
    offset = 0
    for hexid, length in refs:
        data = read_chunk(bytes.fromhex(hexid), f"{path} at offset {offset}")
        offset += length
        if progress:
            progress(length)
        yield data


def restore_tree(read_chunk: ReadChunk, item: Item, read_meta: Callable[[bytes], bytes], sink: TreeSink,
                 selection: list[str] | None = None, overwrite: str = "never",
                 progress: Callable[[int], None] | None = None) -> TreeRestoreReport:
    """Restore the selected entries of ``item`` into ``sink``; directories get their metadata last, deepest
    first, so their times stick."""
    rep = TreeRestoreReport()
    dirs: list[tuple[str, TreeEntry]] = []
    linked: dict[str, str] = {}  # original path of a multiply-linked file -> where it was restored
    contents: dict[str, list] = {}  # content of multiply-linked files, for links whose first path is not restored
    for e in iter_tree(item, read_meta):
        p = e["p"]
        if e["t"] == "f" and e.get("n", 1) > 1:
            contents[p] = e.get("c", [])
        if not selected(p, selection):
            continue
        if not safe_rel(p):
            rep.errors.append(f"{p}: unsafe path in the snapshot, not restored")
            continue
        try:
            _restore_entry(read_chunk, sink, e, overwrite, progress, rep, dirs, linked, contents)
        except DobaasError as err:  # damage in the vault: this file only
            rep.damaged.append(p)
            rep.errors.append(f"{p}: not restored, damaged in the vault: {err}")
        except UnsupportedEntry as err:
            rep.errors.append(f"{p}: {err}")
        except OSError as err:
            rep.errors.append(f"{p or '.'}: {err.strerror or err}")
    for p, e in reversed(dirs):
        try:
            sink.set_meta(p, e)
        except OSError as err:
            rep.errors.append(f"{p or '.'}: metadata not restored: {err.strerror or err}")
    return rep


def _restore_entry(read_chunk: ReadChunk, sink: TreeSink, e: TreeEntry, overwrite: str,
                   progress: Callable[[int], None] | None, rep: TreeRestoreReport, dirs: list[tuple[str, TreeEntry]],
                   linked: dict[str, str], contents: dict[str, list]) -> None:
    p, kind = e["p"], e["t"]
    exists, is_dir, mtime = sink.lexists(p) if p else (True, True, 0)
    if kind == "d":
        if exists and not is_dir:
            if overwrite == "never":
                rep.skipped.append(p)
                return
            sink.remove(p)
        sink.make_dir(p)
        dirs.append((p, e))
        rep.dirs += 1
        return
    if "e" in e:
        rep.errors.append(f"{p}: was not backed up ({e['e']})")
        return
    if exists and is_dir:
        rep.errors.append(f"{p}: a directory stands there, not replaced")
        return
    if exists and not should_replace(overwrite, e.get("mt", 0), mtime):
        rep.skipped.append(p)
        return
    if kind == "s":
        return  # sockets are recreated by the programs that listen on them
    if kind == "f" or (kind == "h" and e["l"] not in linked):
        refs = e.get("c") if kind == "f" else contents.get(e["l"], [])
        rep.bytes += sink.write_file(p, content(read_chunk, p, refs or [], progress), e)
        rep.files += 1
        linked[p if kind == "f" else e["l"]] = p
        for name, srefs in e.get("xs", {}).items():  # alternate data streams (share files)
            try:
                rep.bytes += sink.write_stream(p, name, content(read_chunk, f"{p} stream {name}", srefs, None))
            except OSError as err:
                rep.errors.append(f"{p}: stream {name} not restored: {err.strerror or err}")
        sink.set_meta(p, e)
        return
    sink.make_special(p, e, linked.get(e["l"]) if kind == "h" else None)
    rep.links += kind in "lh"
