"""Restore files and directories from a snapshot's tree items, and record the restore for the audit trail."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from orchestrator.catalog.db import Catalog
from orchestrator.errors import NotFound, UsageError
from orchestrator.plugin.streams import TreeSink
from orchestrator.restore.local_sink import LocalSink
from orchestrator.restore.tree import TreeRestoreReport, path_under, restore_tree
from orchestrator.vault.repository import Vault
from orchestrator.vault.snapshot import Snapshot

OVERWRITE_MODES = ("never", "always", "if-newer")


@dataclass(kw_only=True)
class FilesRestoreResult(TreeRestoreReport):
    snapshot: str
    target: str
    status: str = "ok"

    def to_json(self) -> dict:
        return asdict(self)


def split_selection(snap: Snapshot, paths: list[str]) -> dict[str, list[str]]:
    """Map user paths (as shown by ls/find: absolute, or smb://…) to (tree item, relative paths)."""
    trees = [i for i in snap.items if i["type"] == "tree"]
    if not trees:
        raise UsageError(f"snapshot {snap.id[:12]} holds no files (items: {', '.join(i['name'] for i in snap.items)})")
    out: dict[str, list[str]] = {}
    for p in paths:
        p = p.rstrip("/") or "/"
        best = None
        for item in trees:
            root = item.get("root", item["name"]).rstrip("/") or "/"
            rel = path_under(p, root)
            if rel is None:
                continue
            if best is None or len(root) > len(best[0]):
                best = (root, item["name"], rel)
        if best is None:
            roots = ", ".join(i.get("root", i["name"]) for i in trees)
            raise NotFound(f"{p} is not under any directory of snapshot {snap.id[:12]} ({roots})")
        out.setdefault(best[1], []).append(best[2])
    return out


def is_remote(location: str) -> bool:
    """A share URL (smb://…) rather than a local path."""
    return "://" in location


def _open_sink(snap: Snapshot, url: str, options: dict):
    from orchestrator.plugin import registry

    plugin = registry.load(snap.meta.get("plugin", ""))
    try:
        return plugin.open_sink(snap.meta, url, options)
    except NotImplementedError as e:
        raise UsageError(f"{e}: restore to a --target directory") from None


def restore_files(vault: Vault, snap: Snapshot, paths: list[str], target: str | None, overwrite: str,
                  in_place: bool, catalog: Catalog | None, progress=None,
                  options: dict | None = None) -> FilesRestoreResult:
    """Restore into a local directory, a share (``--target smb://…``), or the original location (``in_place``;
    for a share through its plugin). ``options``: ``user`` / ``password_env`` for share destinations."""
    if overwrite not in OVERWRITE_MODES:
        raise UsageError(f"--overwrite must be one of {', '.join(OVERWRITE_MODES)}")
    selection = split_selection(snap, paths)
    items = {i["name"]: i for i in snap.items}
    if in_place and target:
        raise UsageError("give either --target DIR or --in-place, not both")
    if not in_place and not target:
        raise UsageError("say where to restore: --target DIR (or --in-place to write over the original location)")
    tgt = target or ""  # given unless in place (checked above)
    if not in_place and not is_remote(tgt):
        for name in selection:
            root = items[name].get("root", name)
            real_target = os.path.realpath(tgt)
            if root.startswith("/") and (real_target == os.path.realpath(root)
                                      or real_target.startswith(os.path.realpath(root) + "/")):
                raise UsageError(f"{target} is inside the original location {root}: use --in-place to restore "
                                 "over the original files, or choose another --target")
    target_shown = tgt if is_remote(tgt) else os.path.abspath(tgt)
    where = "(original location)" if in_place else target_shown
    res = FilesRestoreResult(snapshot=snap.id, target=where)
    read_meta = lambda cid: vault.read_chunk(cid, "listing")  # noqa: E731
    for name, rels in selection.items():
        item = items[name]
        root = item.get("root", name)
        dest: str
        if in_place:
            dest = root
        elif is_remote(tgt):
            dest = f"{tgt.rstrip('/')}/{root.rstrip('/').rsplit('/', 1)[-1]}" if len(selection) > 1 else tgt
        else:
            dest = os.path.join(tgt, os.path.basename(root.rstrip("/")) or "root") if len(selection) > 1 else tgt
        if in_place and not is_remote(dest) and not root.startswith("/"):
            raise UsageError(f"in-place restore to {root} is not supported; restore to a --target directory")
        sink: TreeSink = _open_sink(snap, dest, options or {}) if is_remote(dest) else LocalSink(dest)
        try:
            rep = restore_tree(vault.read_chunk, item, read_meta, sink, rels, overwrite, progress)
        finally:
            sink.close()
        res.merge(rep, root)
        if rep.files + rep.dirs + rep.links == 0 and not rep.skipped and not rep.errors:
            raise NotFound(f"nothing in snapshot {snap.id[:12]} matches {', '.join(rels)} under {root}")
    res.status = "failed" if res.errors and not (res.files or res.dirs) else ("partial" if res.errors else "ok")
    if res.damaged:
        res.status = "damaged"
    if catalog is not None:
        catalog.record_restore(snap.id, paths, res.target, overwrite, res.status, res.files, res.bytes,
                               {"skipped": res.skipped[:1000], "errors": res.errors[:1000]})
    return res
