"""`dobaas restore files SNAP --item vda --partition 2 /etc/hosts --target DIR`: files copied out of a filesystem
inside a disk image snapshot, without restoring the disk. The image is served over FUSE in a private folder,
the partition mounted read-only on a loop device, the paths copied with ``cp -a`` (owners, modes, times, links,
xattrs and ACLs), and everything unmounted, whatever happens."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading

from orchestrator.errors import DobaasError, NotFound, UsageError
from orchestrator.mount.partitions import choose, mount_partition, partitions, unmount
from orchestrator.mount.serve import serve
from orchestrator.mount.tree import SnapshotView, folder, lookup
from orchestrator.plugin.export import item_file_name
from orchestrator.restore.files import FilesRestoreResult
from orchestrator.vault.repository import Vault
from orchestrator.vault.snapshot import Snapshot

#: cp's options per --overwrite mode: -n keeps existing files, -u replaces only older ones
_CP_MODE = {"never": ["-n"], "always": [], "if-newer": ["-u"]}


def image_item(snap: Snapshot, item: str | None) -> str:
    images = [i["name"] for i in snap.items if i["type"] == "image"]
    if item is None and len(images) == 1:
        return images[0]
    if item not in images:
        raise UsageError(f"snapshot {snap.id[:12]} has image items: {', '.join(images) or 'none'}; choose one "
                         "with --item")
    return item


def restore_from_image(vault: Vault, snap: Snapshot, item: str | None, partition: int | None, paths: list[str],
                       target: str, overwrite: str) -> FilesRestoreResult:
    """Copy ``paths`` (absolute within the filesystem) out of a partition of an image item into ``target``,
    keeping their paths below it (``/etc/hosts`` -> ``TARGET/etc/hosts``)."""
    name = image_item(snap, item)
    target = os.path.abspath(target)  # before FUSE starts: libfuse changes the working directory
    view = SnapshotView(vault)
    node = lookup(folder(children=view.snapshot_children(snap)), item_file_name(name) + ".img")
    assert node is not None and node.image is not None
    res = FilesRestoreResult(snapshot=snap.id, target=target)
    what = f"snapshot {snap.id[:12]} item {name}"
    rels = []
    for p in paths:
        rel = os.path.normpath("/" + p).lstrip("/")
        if not rel:
            raise UsageError("give the paths to restore within the filesystem, e.g. /etc/hosts (or / for all)")
        rels.append(rel)
    os.makedirs(target, exist_ok=True)
    stop = threading.Event()

    def copy(_: list[str]) -> None:
        try:
            image = os.path.join(view_dir, "disk.img")
            part = choose(partitions(image), partition, what)
            mount_partition(image, part, fs_dir)
            try:
                for rel in rels:
                    src = os.path.join(fs_dir, rel)
                    if not os.path.lexists(src):
                        raise NotFound(f"/{rel} is not in partition {part.number} ({part.fstype}) of {what}")
                    _count(src, res)
                    p = subprocess.run(["cp", "-a", "--parents", *_CP_MODE[overwrite], "--", rel,
                                        target], cwd=fs_dir, capture_output=True, text=True)
                    if p.returncode:
                        res.errors += [line for line in p.stderr.splitlines() if line.strip()]
            finally:
                unmount(fs_dir)
        finally:
            stop.set()

    with tempfile.TemporaryDirectory(prefix="dobaas-image-") as tmp:
        view_dir, fs_dir = os.path.join(tmp, "view"), os.path.join(tmp, "fs")
        os.mkdir(view_dir)
        os.mkdir(fs_dir)
        serve(view, folder(children={"disk.img": node}), view_dir, False, copy, stop)
    res.status = "partial" if res.errors else "ok"
    if res.errors and not res.files and not res.dirs:
        res.status = "failed"
    return res


def _count(src: str, res: FilesRestoreResult) -> None:
    """What a copy of ``src`` brings, for the report."""
    todo = [src]
    while todo:
        p = todo.pop()
        if os.path.islink(p):
            res.links += 1
        elif os.path.isdir(p):
            res.dirs += 1
            try:
                todo += [os.path.join(p, c) for c in os.listdir(p)]
            except OSError as e:
                raise DobaasError(f"{p}: {e.strerror}") from None
        else:
            res.files += 1
            res.bytes += os.lstat(p).st_size
