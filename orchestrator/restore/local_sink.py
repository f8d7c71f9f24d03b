"""A local directory as a restore destination, worked through directory descriptors: every path component is
opened with O_NOFOLLOW below the destination, files are created under a random temporary name with O_EXCL,
their owner, mode, extended attributes and times are set on the open descriptor, and only then are they renamed
into place. A symlink planted in the destination, or a directory swapped for one while we restore, is never
followed; a failure never leaves a half-written file, nor a temporary one."""

from __future__ import annotations

import base64
import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator

from orchestrator.plugin.streams import UnsupportedEntry
from orchestrator.vault.tree import TreeEntry

TMP_PREFIX = ".dobaas-restore-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ZEROS = bytes(64 * 1024)


class LocalSink:
    """A TreeSink over a local directory (created when missing)."""

    def __init__(self, target: str) -> None:
        os.makedirs(target, exist_ok=True)
        self.root = os.path.abspath(target)
        self.is_root = os.geteuid() == 0
        self._root_fd = os.open(self.root, _DIR_FLAGS)
        self._cached: tuple[str, int] | None = None  # the last parent opened: entries come in path order

    def close(self) -> None:
        self._drop_cache()
        os.close(self._root_fd)

    # ---- directories ------------------------------------------------------------------------------------
    def _drop_cache(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def _dir_fd(self, folder: str, create: bool = True) -> int:
        """A descriptor of ``folder`` (relative), every component opened without following symlinks; missing
        ones are created. Owned by the sink (do not close)."""
        if not folder:
            return self._root_fd
        if self._cached is not None and self._cached[0] == folder:
            return self._cached[1]
        self._drop_cache()
        fd = os.dup(self._root_fd)
        try:
            for part in folder.split("/"):
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise OSError(e.errno, f"{part} in the destination is not a directory (a symbolic link?); "
                                               "not following it") from None
                    raise
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        self._cached = (folder, fd)
        return fd

    @staticmethod
    def _split(rel: str) -> tuple[str, str]:
        folder, _, name = rel.rpartition("/")
        return folder, name

    def lexists(self, rel: str) -> tuple[bool, bool, int]:
        folder, name = self._split(rel)
        try:
            st = os.stat(name, dir_fd=self._dir_fd(folder, create=False), follow_symlinks=False)
        except FileNotFoundError:  # the entry, or a folder above it, is not there yet
            return False, False, 0
        return True, stat.S_ISDIR(st.st_mode), st.st_mtime_ns

    def make_dir(self, rel: str) -> None:
        if rel:
            self._dir_fd(rel)

    def remove(self, rel: str) -> None:
        folder, name = self._split(rel)
        os.unlink(name, dir_fd=self._dir_fd(folder))

    # ---- files ------------------------------------------------------------------------------------------
    def write_file(self, rel: str, chunks: Iterator[bytes], entry: TreeEntry) -> int:
        folder, name = self._split(rel)
        pfd = self._dir_fd(folder)
        tmp = TMP_PREFIX + secrets.token_hex(6)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd)
        written = 0
        try:
            try:
                for data in chunks:
                    _write_sparse(fd, data)
                    written += len(data)
                os.ftruncate(fd, written)
                self._meta_fd(fd, entry)
            finally:
                os.close(fd)
            self._put_in_place(pfd, tmp, name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=pfd)
            raise
        return written

    def write_stream(self, rel: str, name: str, chunks: Iterator[bytes]) -> int:
        """An alternate data stream of a share file, kept the way Samba's streams_xattr keeps streams
        (``user.DosStream.<name>:$DATA``), so a folder served by Samba shows it again."""
        data = b"".join(chunks)
        folder, fname = self._split(rel)
        fd = os.open(fname, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dir_fd(folder))
        try:
            os.setxattr(fd, "user.DosStream." + name.lstrip(":"), data)
        except OSError as e:
            raise OSError(e.errno, f"{len(data)} bytes not restored here ({e.strerror}); restore to the share to "
                                   "get it back") from None
        finally:
            os.close(fd)
        return len(data)

    def make_special(self, rel: str, entry: TreeEntry, link_to: str | None) -> None:
        """Symbolic links, hard links (to ``link_to``, restored earlier), FIFOs and device files."""
        folder, name = self._split(rel)
        kind = entry["t"]
        src_fd = None
        if kind == "h":  # the link's source directory first: opening the destination's may close a cached one
            assert link_to is not None
            src_fd = os.dup(self._dir_fd(self._split(link_to)[0], create=False))
        pfd = self._dir_fd(folder)
        tmp = TMP_PREFIX + secrets.token_hex(6)
        try:
            if kind == "l":
                os.symlink(entry["l"], tmp, dir_fd=pfd)
                if self.is_root and "u" in entry:
                    os.chown(tmp, entry["u"], entry["g"], dir_fd=pfd, follow_symlinks=False)
                if "mt" in entry:
                    os.utime(tmp, ns=(entry["mt"], entry["mt"]), dir_fd=pfd, follow_symlinks=False)
            elif kind == "h":
                assert link_to is not None and src_fd is not None
                os.link(self._split(link_to)[1], tmp, src_dir_fd=src_fd, dst_dir_fd=pfd, follow_symlinks=False)
            elif kind in "cbp":
                mode = {"c": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[kind]
                if mode != stat.S_IFIFO and not self.is_root:
                    raise UnsupportedEntry("device files need root")
                os.mknod(tmp, mode | 0o600, entry.get("rd", 0), dir_fd=pfd)
                # a FIFO or device opened O_PATH: its metadata is set without opening (or blocking on) it
                fd = os.open(tmp, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
                try:
                    self._meta_path_fd(fd, entry)
                finally:
                    os.close(fd)
            else:
                raise UnsupportedEntry(f"unknown entry type {kind!r}")
            self._put_in_place(pfd, tmp, name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=pfd)
            raise
        finally:
            if src_fd is not None:
                os.close(src_fd)

    def _put_in_place(self, pfd: int, tmp: str, name: str) -> None:
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EISDIR, "a directory stands there, not replaced")
        os.replace(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)

    # ---- metadata ---------------------------------------------------------------------------------------
    def _meta_fd(self, fd: int, e: TreeEntry) -> None:
        """Owner, mode, extended attributes and times, on an open descriptor (never a path)."""
        if self.is_root and "u" in e:
            os.fchown(fd, e["u"], e["g"])
        if "m" in e:
            os.fchmod(fd, e["m"] & 0o7777)
        for name, b64 in e.get("x", {}).items():
            try:
                os.setxattr(fd, name, base64.b64decode(b64))
            except OSError as err:
                if not (name.startswith("trusted.") or name.startswith("security.")) or self.is_root:
                    raise OSError(err.errno, f"extended attribute {name}: {err.strerror}") from None
        if "mt" in e:
            os.utime(fd, ns=(e["mt"], e["mt"]))

    def _meta_path_fd(self, fd: int, e: TreeEntry) -> None:
        """The same through an O_PATH descriptor (special files): /proc/self/fd names exactly that inode."""
        via = f"/proc/self/fd/{fd}"
        if self.is_root and "u" in e:
            os.chown(via, e["u"], e["g"])
        if "m" in e:
            os.chmod(via, e["m"] & 0o7777)
        if "mt" in e:
            os.utime(via, ns=(e["mt"], e["mt"]))

    def set_meta(self, rel: str, entry: TreeEntry) -> None:
        """A directory's metadata, through a descriptor opened without following links (a file's was set in
        ``write_file``)."""
        if entry["t"] != "d":
            return
        if rel:
            folder, name = self._split(rel)
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=self._dir_fd(folder, create=False))
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise OSError(e.errno, "no longer a directory (a symbolic link?); not following it") from None
                raise
        else:
            fd = os.dup(self._root_fd)
        try:
            self._meta_fd(fd, entry)
        finally:
            os.close(fd)


def _write_sparse(fd: int, data: bytes, window: int = 64 * 1024) -> None:
    """Write ``data`` at the current offset, seeking over all-zero 64 KiB windows so holes stay holes."""
    view = memoryview(data)
    for off in range(0, len(data), window):
        end = min(off + window, len(data))
        if data.startswith(_ZEROS[: end - off], off):
            os.lseek(fd, end - off, os.SEEK_CUR)
        else:
            os.write(fd, view[off:end])
