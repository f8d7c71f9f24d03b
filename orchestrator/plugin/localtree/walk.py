"""Walk a local directory tree in path order with full metadata (lstat, owner names, xattrs and POSIX ACLs)."""

from __future__ import annotations

import base64
import errno
import fnmatch
import grp
import io
import os
import pwd
import stat
import struct
from collections.abc import Callable, Container, Iterable, Iterator
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the walker process imports nothing but the standard library and this
    from orchestrator.plugin.streams import TreeEntry, WalkItem

_TYPES = {stat.S_IFREG: "f", stat.S_IFDIR: "d", stat.S_IFLNK: "l", stat.S_IFCHR: "c", stat.S_IFBLK: "b",
          stat.S_IFIFO: "p", stat.S_IFSOCK: "s"}


@cache
def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@cache
def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def stat_entry(rel: str, st: os.stat_result) -> TreeEntry:
    e: TreeEntry = {
        "p": rel, "t": _TYPES.get(stat.S_IFMT(st.st_mode), "f"), "m": stat.S_IMODE(st.st_mode), "u": st.st_uid,
        "g": st.st_gid, "U": _user(st.st_uid), "G": _group(st.st_gid), "mt": st.st_mtime_ns, "ct": st.st_ctime_ns}
    if e["t"] == "f":
        e["s"], e["i"], e["dv"], e["n"] = st.st_size, st.st_ino, st.st_dev, st.st_nlink
    elif e["t"] in "cb":
        e["rd"] = st.st_rdev
    return e


_FILE_SIG = struct.Struct("<cIIIqqqQQ")  # type, mode, uid, gid, mtime, ctime, size, inode, links
_OTHER_SIG = struct.Struct("<cIIIqq")  # type, mode, uid, gid, mtime, ctime


def stat_signature(st: os.stat_result) -> bytes:
    """What must be equal for an entry to be exactly as the parent snapshot recorded it. ctime changes with any
    content, owner, mode, link or xattr change and cannot be set by users, so with size, mtime and inode it is
    the classic (restic, borg) basis for not re-reading a file. Packed bytes: 100,000 of them load from the
    listing cache and compare faster than tuples of integers."""
    t = _TYPES.get(stat.S_IFMT(st.st_mode), "f")
    if t == "f":
        return _FILE_SIG.pack(b"f", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ctime_ns,
                              st.st_size, st.st_ino, st.st_nlink)
    return _OTHER_SIG.pack(t.encode(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns,
                           st.st_ctime_ns)


def entry_signature(e: dict) -> bytes | None:
    """``stat_signature`` of the lstat result an entry was made from (None when the entry lacks a field)."""
    try:
        if e["t"] == "f":
            return _FILE_SIG.pack(b"f", e["m"], e["u"], e["g"], e["mt"], e["ct"], e["s"], e["i"], e["n"])
        return _OTHER_SIG.pack(e["t"].encode(), e["m"], e["u"], e["g"], e["mt"], e["ct"])
    except (KeyError, struct.error):
        return None


def read_xattrs(path: str) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for n in names:
        try:
            out[n] = base64.b64encode(os.getxattr(path, n, follow_symlinks=False)).decode()
        except OSError:
            continue
    return out


class LocalTree:
    """A TreeSource over one local directory."""

    def __init__(self, root: str, exclude: list[str] | None = None, one_file_system: bool = False,
                 display_root: str | None = None) -> None:
        self.path = os.path.abspath(root)
        #: what users see and what the snapshot records ("system-info" for generated trees)
        self.root = display_root or self.path
        self.exclude = exclude or []
        self.one_file_system = one_file_system
        #: files are opened by path under it, so reader processes may read them (orchestrator.cbt.read_procs)
        self.reader_root = self.path

    def _excluded(self, name: str, rel: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pat) or fnmatch.fnmatchcase(rel, pat) for pat in self.exclude)

    #: the signature this source compares to decide that an entry is unchanged (see stat_signature)
    signature = staticmethod(lambda e: entry_signature(e))

    def walk(self, previous: Callable[[str], bytes | None] | None = None, skip: Container[str] = (),
             only: str | None = None) -> Iterator[TreeEntry | str]:
        """Depth-first in name order with an explicit stack (one generator level: this runs per entry).
        ``skip``: directories (relative paths) that are given but not entered; ``only``: just what is under
        this one (not itself), nothing when it is not a directory that the walk would enter. The two halves of
        a walk split between two processes (``child``)."""
        try:
            st = os.lstat(self.path)
        except OSError as e:
            raise OSError(e.errno, f"{self.path}: {e.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(f"{self.path} is not a directory")
        root_dev = st.st_dev
        exclude, one_fs, lstat, is_dir = self.exclude, self.one_file_system, os.lstat, stat.S_ISDIR
        if only is not None:
            start = f"{self.path}/{only}"
            try:
                st = lstat(start)
            except OSError:
                return
            if not is_dir(st.st_mode) or (one_fs and st.st_dev != root_dev):
                return
            names, error = self._list(start)
            if error:
                return  # told with the directory's own entry, by the other half
            stack = [(only, start, iter(names))]
        else:
            names, error = self._list(self.path)
            entry = self._entry("", self.path, st, previous)
            if error:
                entry = self._with_error(entry, "", self.path, st, error)
            yield entry
            stack = [("", self.path, iter(names))]
        while stack:
            rel, path, it = stack[-1]
            name = next(it, None)
            if name is None:
                stack.pop()
                continue
            child_rel = f"{rel}/{name}" if rel else name
            if exclude and self._excluded(name, child_rel):
                continue
            child = f"{path}/{name}"
            try:
                st = lstat(child)
            except OSError as err:
                yield {"p": child_rel, "t": "f", "e": f"cannot be examined: {err.strerror}"}
                continue
            item: TreeEntry | str | None = None
            if previous is not None:
                old = previous(child_rel)
                item = child_rel if old is not None and old == stat_signature(st) else None
            if item is None:
                item = self._entry(child_rel, child, st, None)
            if is_dir(st.st_mode) and not (one_fs and st.st_dev != root_dev):
                names, error = self._list(child)
                if error:
                    item = self._with_error(item, child_rel, child, st, error)
                yield item
                if child_rel not in skip:
                    stack.append((child_rel, child, iter(names)))
            else:
                yield item

    def walk_delta(self, paths: list[str], signatures: list) -> Iterable[WalkItem] | None:
        """``walk`` in a child process, against the parent listing: the lstat calls of 100,000 unchanged files
        then cost the backup process nothing (see orchestrator.plugin.localtree.delta)."""
        from orchestrator.plugin.localtree.delta import spawn_walk

        return spawn_walk(self, paths, signatures)

    def _with_error(self, e: TreeEntry | str, rel: str, path: str, st: os.stat_result, error: str) -> TreeEntry:
        full = self._entry(rel, path, st, None) if isinstance(e, str) else e
        assert not isinstance(full, str)  # without ``previous`` the entry is always made in full
        full["e"] = error
        return full

    @staticmethod
    def _entry(rel: str, path: str, st: os.stat_result,
               previous: Callable[[str], bytes | None] | None) -> TreeEntry | str:
        """The entry for ``rel``, or just ``rel`` when the parent snapshot has it exactly like this."""
        if previous is not None:
            old = previous(rel)
            if old is not None and old == stat_signature(st):
                return rel
        e = stat_entry(rel, st)
        if e["t"] == "l":
            try:
                e["l"] = os.readlink(path)
            except OSError as err:
                e["e"] = f"link cannot be read: {err.strerror}"
        x = read_xattrs(path)
        if x:
            e["x"] = x
        return e

    @staticmethod
    def _list(path: str) -> tuple[list[str], str | None]:
        try:
            names = os.listdir(path)
        except OSError as e:
            return [], f"directory cannot be listed: {e.strerror}"
        names.sort()
        return names, None

    def open(self, entry: TreeEntry) -> io.RawIOBase:
        return open_regular(os.path.join(self.path, entry["p"]))

    def restat(self, entry: TreeEntry) -> tuple[int, int] | None:
        try:
            st = os.lstat(os.path.join(self.path, entry["p"]))
        except FileNotFoundError:
            return None
        return st.st_size, st.st_mtime_ns


def open_regular(path: str) -> io.RawIOBase:
    """Open a file that the walk saw as regular. O_NONBLOCK and a type check on the open descriptor: a file
    replaced by a FIFO (or a device) between the walk and the read must neither hang the backup (opening a
    FIFO without a writer blocks) nor be read; O_NOATIME: a backup should not touch access times (allowed for
    the owner and root)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_NOATIME)
    except PermissionError:
        fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "no longer a regular file (replaced while the backup ran)", path)
        # O_NONBLOCK stays: it does not apply to regular files' reads (two fcntl calls per file saved)
    except BaseException:
        os.close(fd)
        raise
    return io.FileIO(fd, "rb")
