"""`dobaas mount`: the read-only view served over FUSE (mfusepy over Debian's libfuse3), and with
``filesystems`` the partitions of each disk image mounted read-only inside it (``NAME.img.d/pN``).

FUSE runs in a thread; the main thread holds the signal handlers (installed before libfuse starts, so libfuse
leaves them alone), and on SIGINT/SIGTERM/SIGHUP unmounts the partitions first, then the view itself."""

from __future__ import annotations

import errno
import logging
import os
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from orchestrator.errors import DobaasError, UsageError
from orchestrator.mount.partitions import mount_partition, partitions, unmount
from orchestrator.mount.tree import Node, SnapshotView, entries, folder, lookup

log = logging.getLogger(__name__)
PARTITIONS_SUFFIX = ".d"  # vda.img -> vda.img.d/p1, p2, …


def _fuse() -> Any:
    try:
        import mfusepy
    except (ImportError, OSError) as e:  # mfusepy loads libfuse when imported
        raise UsageError(f"dobaas mount needs FUSE 3 (Debian: apt install fuse3): {e}") from None
    return mfusepy


def make_ops(view: SnapshotView, root: Node) -> Any:
    """The FUSE operations over ``root``: read-only, every read authenticated (damage is EIO and logged)."""
    mfusepy = _fuse()

    base: Any = mfusepy.Operations

    class ReadOnly(base):
        use_ns = True

        def _node(self, path: str) -> Node:
            node = lookup(root, path)
            if node is None:
                raise mfusepy.FuseOSError(errno.ENOENT)
            return node

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            n = self._node(path)
            return {"st_mode": n.mode, "st_size": n.size, "st_nlink": n.nlink, "st_uid": n.uid, "st_gid": n.gid,
                    "st_mtime": n.mtime_ns, "st_atime": n.mtime_ns, "st_ctime": n.mtime_ns, "st_rdev": n.rdev,
                    "st_blocks": (n.size + 511) // 512}

        def readdir(self, path: str, fh: int) -> list[str]:
            children = entries(self._node(path))
            if children is None:
                raise mfusepy.FuseOSError(errno.ENOTDIR)
            return [".", "..", *children]

        def readlink(self, path: str) -> str:
            n = self._node(path)
            if not stat.S_ISLNK(n.mode):
                raise mfusepy.FuseOSError(errno.EINVAL)
            return n.link

        def open(self, path: str, flags: int) -> int:
            n = self._node(path)
            if flags & os.O_ACCMODE != os.O_RDONLY:
                raise mfusepy.FuseOSError(errno.EROFS)
            if not stat.S_ISREG(n.mode):
                raise mfusepy.FuseOSError(errno.EACCES)
            return 0

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            n = self._node(path)
            try:
                return view.read(n, offset, size, path)
            except DobaasError as e:
                log.error("read of %s at %d: %s", path, offset, e)
                raise mfusepy.FuseOSError(errno.EIO) from None

        def listxattr(self, path: str) -> list[str]:
            return list(self._node(path).xattrs)

        def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
            value = self._node(path).xattrs.get(name)
            if value is None:
                raise mfusepy.FuseOSError(errno.ENODATA)
            return value

        def statfs(self, path: str) -> dict[str, int]:
            return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}

    return ReadOnly()


def image_files(root: Node, prefix: str = "") -> Iterator[tuple[str, Node]]:
    """(path, node) of every disk image already in the view (snapshot folders opened on the way)."""
    for name, child in sorted((entries(root) or {}).items()):
        path = f"{prefix}/{name}"
        if child.image is not None:
            yield path, child
        elif child.is_dir:
            yield from image_files(child, path)


def serve(view: SnapshotView, root: Node, mountpoint: str, filesystems: bool,
          on_ready: Callable[[list[str]], None] | None = None, stop: threading.Event | None = None) -> list[str]:
    """Serve ``root`` on ``mountpoint`` until a signal (or ``stop``); returns the partitions that were mounted."""
    mountpoint = os.path.abspath(mountpoint)  # libfuse changes the working directory
    if not os.path.isdir(mountpoint):
        raise UsageError(f"mount point {mountpoint} is not a directory")
    if os.path.ismount(mountpoint) or os.listdir(mountpoint):
        raise UsageError(f"mount point {mountpoint} is not empty or already a mount point")
    mfusepy = _fuse()
    images = list(image_files(root)) if filesystems else []
    if filesystems and not images:
        raise UsageError("--filesystems: the snapshot holds no disk image")
    for path, _ in images:  # the folders the partitions are mounted on, before FUSE starts
        parent = lookup(root, os.path.dirname(path))
        assert parent is not None and parent.children is not None
        parent.children[os.path.basename(path) + PARTITIONS_SUFFIX] = folder()
    stop = stop or threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)} \
        if threading.current_thread() is threading.main_thread() else {}
    failed: list[BaseException] = []

    def run() -> None:
        try:
            mfusepy.FUSE(make_ops(view, root), mountpoint, foreground=True, ro=True, nothreads=False,
                         fsname="dobaas", subtype="dobaas", default_permissions=True,
                         allow_other=os.geteuid() == 0, max_threads=8)
        except BaseException as e:
            failed.append(e)
        finally:
            stop.set()

    thread = threading.Thread(target=run, name="fuse", daemon=True)
    thread.start()
    mounted: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mountpoint):
            if failed or not thread.is_alive() or time.monotonic() > deadline:
                raise DobaasError(f"FUSE could not mount {mountpoint}: {failed[0] if failed else 'timed out'}")
            time.sleep(0.02)
        for path, _ in images:
            image = mountpoint + path
            for part in partitions(image):
                if not part.fstype:
                    continue
                target = f"{image}{PARTITIONS_SUFFIX}/p{part.number}"
                node = lookup(root, path + PARTITIONS_SUFFIX)
                assert node is not None and node.children is not None
                node.children[f"p{part.number}"] = folder()
                try:
                    mount_partition(image, part, target)
                    mounted.append(target)
                except DobaasError as e:
                    log.warning("%s", e)
        if on_ready:
            on_ready(mounted)
        stop.wait()
    finally:
        for target in reversed(mounted):
            unmount(target)
        if os.path.ismount(mountpoint):
            subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True)
            if os.path.ismount(mountpoint):
                subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True)
        thread.join(10)
        for s, h in previous.items():
            signal.signal(s, h)
    return mounted


def clean_up(mountpoint: str) -> list[str]:
    """After a mount whose process was killed: unmount what is below ``mountpoint``, deepest first, then the
    view. Returns what was unmounted."""
    real = os.path.realpath(mountpoint)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    below = sorted({p for p in points if p == real or p.startswith(real + "/")}, key=len, reverse=True)
    for p in below:
        if p == real:
            subprocess.run(["fusermount3", "-u", "-z", p], capture_output=True)
            if os.path.ismount(p):
                subprocess.run(["umount", "-l", p], capture_output=True)
        else:
            unmount(p)
    return below
