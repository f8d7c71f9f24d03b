"""Writing restored files back to an SMB share (in place, or into another folder of a share): each file goes to
a temporary name in its folder and is renamed over the destination only once complete, so a failed restore
never leaves a half-written file where a good one stood; folders get their modification times back last."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import smbclient
from smbclient import _os as smb_os
from smbprotocol.exceptions import SMBException, SMBOSError

from orchestrator.plugin.errors import DobaasError, NotFound
from orchestrator.plugin.streams import TreeEntry, UnsupportedEntry
from plugins.shares.security import write_dacl
from plugins.shares.smbtree import SmbTree

# attributes a restore puts back; others (archive, compressed, encrypted, reparse …) belong to the server
RESTORABLE_ATTRIBUTES = 0x1 | 0x2 | 0x4  # read-only, hidden, system
FILE_ATTRIBUTE_NORMAL = 0x80
FILETIME_EPOCH = 116444736000000000  # 100-ns intervals between 1601-01-01 and 1970-01-01


def _filetime(ns: int) -> int:
    return ns // 100 + FILETIME_EPOCH


class SmbSink:
    """A TreeSink over a folder of an SMB share."""

    def __init__(self, url: str, username: str, password: str) -> None:
        self.tree = SmbTree(url, username, password)
        self.root = self.tree.root

    def connect(self) -> None:
        """Log on; a destination folder that does not exist yet is created (the share itself must exist)."""
        try:
            self.tree.connect()
        except NotFound:
            if not self.tree.base:
                raise
            try:
                smbclient.makedirs(self._path(""), exist_ok=True, **self.tree._kw())
            except (SMBOSError, SMBException) as e:
                raise DobaasError(f"{self.root} cannot be created: {e}") from None
            self.tree.connect()

    def close(self) -> None:
        self.tree.close()

    def _path(self, rel: str) -> str:
        return self.tree.unc(rel)

    def lexists(self, rel: str) -> tuple[bool, bool, int]:
        """(exists, is a folder, modification time ns)."""
        try:
            st = smbclient.stat(self._path(rel), **self.tree._kw())
        except SMBOSError as e:
            if e.errno == 2:
                return False, False, 0
            raise OSError(e.errno, e.strerror) from None
        except FileNotFoundError:
            return False, False, 0
        return True, bool(st.st_file_attributes & 0x10), st.st_mtime_ns

    def make_dir(self, rel: str) -> None:
        try:
            smbclient.makedirs(self._path(rel), exist_ok=True, **self.tree._kw())
        except (SMBOSError, SMBException) as e:
            raise OSError(f"folder cannot be created: {e}") from None

    def remove(self, rel: str) -> None:
        try:
            smbclient.remove(self._path(rel), **self.tree._kw())
        except (SMBOSError, SMBException) as e:
            raise OSError(f"cannot be removed: {e}") from None

    def make_special(self, rel: str, entry: TreeEntry, link_to: str | None) -> None:
        what = "a link" if entry["t"] in "lh" else "a special file"
        raise UnsupportedEntry(f"{what} cannot be restored to {self.root}")

    def write_file(self, rel: str, chunks: Iterator[bytes], entry: TreeEntry) -> int:
        """Write to a temporary name beside the destination, then rename over it (its metadata follows in
        ``set_meta``, after its streams: a read-only file takes no stream). Returns the bytes written."""
        folder = rel.rpartition("/")[0]
        tmp_rel = f"{folder}/.dobaas-restore-{secrets.token_hex(6)}" if folder else \
            f".dobaas-restore-{secrets.token_hex(6)}"
        tmp = self._path(tmp_rel)
        written = 0
        try:
            with smbclient.open_file(tmp, mode="wb", share_access=None, **self.tree._kw()) as f:
                for data in chunks:
                    f.write(data)
                    written += len(data)
            self._clear_readonly(rel)
            self._replace(tmp, rel)
        except BaseException as e:
            try:
                smbclient.remove(tmp, **self.tree._kw())
            except (OSError, SMBException):
                pass
            if isinstance(e, (SMBOSError, SMBException)):
                raise OSError(f"{e}") from None
            raise
        return written

    def write_stream(self, rel: str, name: str, chunks: Iterator[bytes]) -> int:
        """An alternate data stream of a file already written (``:Zone.Identifier:$DATA``)."""
        written = 0
        try:
            with smbclient.open_file(self._path(rel) + name, mode="wb", share_access="rwd", **self.tree._kw()) as f:
                for data in chunks:
                    f.write(data)
                    written += len(data)
        except (SMBOSError, SMBException) as e:
            raise OSError(f"stream {name} not restored: {e}") from None
        return written

    def _replace(self, tmp: str, rel: str) -> None:
        """Rename ``tmp`` over ``rel`` (FileRenameInformation, replace if exists). smbclient.replace first opens
        the destination for FILE_EXECUTE, which Samba refuses on files without an x bit: done directly here."""
        from smbclient._io import SMBFileTransaction, SMBRawIO
        from smbprotocol.file_info import FileRenameInformation
        from smbprotocol.open import CreateOptions, FilePipePrinterAccessMask

        target = "\\".join(p for p in (self.tree.base, rel) if p).replace("/", "\\")
        with SMBRawIO(tmp, mode="r", share_access="rwd", desired_access=FilePipePrinterAccessMask.DELETE,
                      create_options=CreateOptions.FILE_OPEN_REPARSE_POINT, **self.tree._kw()) as raw, \
                SMBFileTransaction(raw) as transaction:
            info = FileRenameInformation()
            info["replace_if_exists"] = True
            info["file_name"] = target
            smb_os.set_info(transaction, info)

    def _clear_readonly(self, rel: str) -> None:
        """A read-only destination cannot be replaced: drop the flag first (the restored one is set after)."""
        exists, _is_dir, _mt = self.lexists(rel)
        if exists:
            smb_os._set_basic_information(self._path(rel), file_attributes=FILE_ATTRIBUTE_NORMAL,
                                          **self.tree._kw())

    def set_meta(self, rel: str, entry: TreeEntry) -> None:
        """Permissions (the DACL), modification time and the read-only/hidden/system attributes."""
        if entry.get("sd"):
            write_dacl(self._path(rel), entry["sd"], self.tree._kw())
        attrs = entry.get("a", 0) & RESTORABLE_ATTRIBUTES
        if entry.get("t") == "d":
            attrs |= 0x10
        try:
            smb_os._set_basic_information(self._path(rel), last_write_time=_filetime(entry["mt"]) if "mt" in entry
                                          else 0, file_attributes=attrs or FILE_ATTRIBUTE_NORMAL, **self.tree._kw())
        except (SMBOSError, SMBException) as e:
            raise OSError(f"times and attributes not restored: {e}") from None
