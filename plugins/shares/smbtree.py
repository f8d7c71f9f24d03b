"""Walk and read an SMB share through smbprotocol's ``smbclient`` (SMB 2/3, signing on)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

import smbclient
from smbprotocol.exceptions import SMBAuthenticationError, SMBException, SMBOSError, SMBResponseException

from orchestrator.plugin.errors import BadInput, DobaasError, NotFound
from orchestrator.plugin.streams import TreeEntry
from plugins.shares.security import read_sd

FILE_ATTRIBUTE_READONLY = 0x1
FILE_ATTRIBUTE_DIRECTORY = 0x10
FILE_ATTRIBUTE_REPARSE_POINT = 0x400
STATUS_LOGON_FAILURE = 0xC000006D
STATUS_BAD_NETWORK_NAME = 0xC00000CC
STATUS_OBJECT_NAME_NOT_FOUND = 0xC0000034
STATUS_OBJECT_PATH_NOT_FOUND = 0xC000003A
STATUS_NOT_FOUND = 0xC0000225  # what Samba answers for a share that does not exist
STATUS_ACCESS_DENIED = 0xC0000022


def parse_smb_url(url: str) -> tuple[str, int, str, str]:
    """smb://host[:port]/share[/dir…] -> (host, port, share, directory inside the share)."""
    u = urlsplit(url)
    if u.scheme != "smb" or not u.hostname:
        raise BadInput(f"{url}: expected smb://host[:port]/share[/path]")
    parts = [unquote(p) for p in u.path.split("/") if p]
    if not parts:
        raise BadInput(f"{url}: no share name")
    return u.hostname, u.port or 445, parts[0], "/".join(parts[1:])


def _ns(dt: datetime) -> int:
    """FILETIME as datetime (microseconds) -> integer nanoseconds since the epoch."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1_000_000) * 1000


class _ReadErrors(io.RawIOBase):
    """Turns SMB read errors that are not OSErrors (byte-range locks) into OSErrors the core understands."""

    def __init__(self, inner: BinaryIO, path: str) -> None:
        self.inner, self.path = inner, path

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        try:
            return self.inner.readinto(b)  # type: ignore[attr-defined]  # smbclient files are raw
        except SMBResponseException as e:
            raise OSError(f"{self.path}: {e.message}") from None
        except SMBException as e:
            raise OSError(f"{self.path}: {e}") from None

    def close(self) -> None:
        try:
            self.inner.close()
        except SMBException as e:
            raise OSError(f"{self.path}: closing failed: {e}") from None
        finally:
            super().close()


class SmbTree:
    """A TreeSource over an SMB share."""

    #: one SMB connection carries the whole walk: reads run inline in the walking thread, since concurrent
    #: requests on it run out of SMB credits (a 1 MiB read costs 16)
    max_workers = 0

    def __init__(self, url: str, username: str, password: str, exclude: list[str] | None = None) -> None:
        self.host, self.port, self.share, self.base = parse_smb_url(url)
        self.root = f"smb://{self.host}{'' if self.port == 445 else f':{self.port}'}/{self.share}" + (
            f"/{self.base}" if self.base else "")
        self.username, self.password = username, password
        self.exclude = exclude or []
        self.cache: dict = {}

    def unc(self, rel: str) -> str:
        parts = [p for p in (self.base, rel) if p]
        return f"\\\\{self.host}\\{self.share}" + "".join("\\" + p.replace("/", "\\") for p in parts)

    def connect(self) -> None:
        try:
            smbclient.register_session(self.host, username=self.username, password=self.password, port=self.port,
                                       connection_cache=self.cache, connection_timeout=15)
            smbclient.stat(self.unc(""), port=self.port, connection_cache=self.cache)
        except SMBAuthenticationError:
            raise DobaasError(f"cannot log on to {self.root} as {self.username}: wrong user name or password") from None
        except SMBResponseException as e:
            if e.status == STATUS_LOGON_FAILURE:
                raise DobaasError(f"cannot log on to {self.root} as {self.username}: wrong user name or password") \
                    from None
            raise DobaasError(f"{self.root}: {e.message}") from None
        except SMBOSError as e:
            if e.ntstatus == STATUS_LOGON_FAILURE:
                raise DobaasError(f"cannot log on to {self.root} as {self.username}: wrong user name or password") \
                    from None
            if e.ntstatus in (STATUS_BAD_NETWORK_NAME, STATUS_OBJECT_NAME_NOT_FOUND, STATUS_OBJECT_PATH_NOT_FOUND,
                              STATUS_NOT_FOUND):
                raise NotFound(f"{self.root} does not exist on the server") from None
            raise DobaasError(f"{self.root}: {e.strerror}") from None
        except (ValueError, SMBException) as e:
            raise DobaasError(f"cannot connect to {self.host}:{self.port} ({e})") from None

    def close(self) -> None:
        smbclient.reset_connection_cache(fail_on_error=False, connection_cache=self.cache)

    def _kw(self) -> dict:
        return {"port": self.port, "connection_cache": self.cache}

    def _excluded(self, name: str, rel: str) -> bool:
        import fnmatch

        return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(rel, p) for p in self.exclude)

    @staticmethod
    def signature(e: TreeEntry) -> tuple:
        """What must be equal for an entry to be reused from the parent snapshot without asking the server
        anything more (its security descriptor included: changing permissions updates the change time)."""
        return (e["t"], e.get("mt"), e.get("ct"), e.get("s"), e.get("i"), e.get("a"))

    def walk(self, previous: Callable[[str], tuple | None] | None = None) -> Iterator[TreeEntry | str]:
        """Entries from the directory listings; an entry whose signature equals the parent snapshot's is
        yielded as its path alone (reused as is), others get their security descriptor read."""
        st = smbclient.stat(self.unc(""), **self._kw())
        root: TreeEntry = {"p": "", "t": "d", "m": 0o755, "mt": st.st_mtime_ns // 1000 * 1000,
                           "a": st.st_file_attributes}
        sd = read_sd(self.unc(""), self._kw())
        if sd:
            root["sd"] = sd
        yield root
        yield from self._walk("", previous)

    def _walk(self, rel: str, previous: Callable[[str], tuple | None] | None) -> Iterator[TreeEntry | str]:
        try:
            items = sorted(smbclient.scandir(self.unc(rel), **self._kw()), key=lambda d: d.name)
        except OSError as e:
            yield {"p": rel or ".", "t": "f", "e": f"folder cannot be listed: {getattr(e, 'strerror', e)}"}
            return
        for d in items:
            child = f"{rel}/{d.name}" if rel else d.name
            if self._excluded(d.name, child):
                continue
            info = d.smb_info
            attrs = info.file_attributes
            is_dir = bool(attrs & FILE_ATTRIBUTE_DIRECTORY)
            entry: TreeEntry = {"p": child, "t": "d" if is_dir else "f",
                       "m": (0o755 if is_dir else (0o444 if attrs & FILE_ATTRIBUTE_READONLY else 0o644)),
                       "mt": _ns(info.last_write_time), "ct": _ns(info.change_time), "a": attrs}
            if not is_dir:
                entry["s"], entry["i"] = info.end_of_file, info.file_id
            if previous is not None and previous(child) == self.signature(entry):
                yield child
            else:
                sd = read_sd(self.unc(child), self._kw())
                if sd:
                    entry["sd"] = sd
                if not is_dir:
                    names = self._streams(child)
                    if names:
                        entry["xn"] = names
                yield entry
            if is_dir and not attrs & FILE_ATTRIBUTE_REPARSE_POINT:
                yield from self._walk(child, previous)

    def _streams(self, rel: str) -> list[str]:
        """Named data streams of a file (``:Zone.Identifier:$DATA``…); none when the server has no streams."""
        try:
            found = smbclient.liststreams(self.unc(rel), **self._kw())
        except (OSError, SMBException):
            return []
        return sorted(s.name for s in found if s.name != "::$DATA" and s.name.endswith(":$DATA"))

    def open_stream(self, entry: TreeEntry, name: str) -> io.BufferedReader:
        path = self.unc(entry["p"]) + name
        try:
            f = smbclient.open_file(path, mode="rb", share_access="rwd", **self._kw())
        except SMBOSError as e:
            raise OSError(e.errno, e.strerror) from None
        return io.BufferedReader(_ReadErrors(f, path), buffer_size=1024 * 1024)

    def open(self, entry: TreeEntry) -> io.BufferedReader:
        path = self.unc(entry["p"])
        try:
            f = smbclient.open_file(path, mode="rb", share_access="rwd", **self._kw())
        except SMBOSError as e:
            raise OSError(e.errno, e.strerror) from None
        return io.BufferedReader(_ReadErrors(f, path), buffer_size=1024 * 1024)

    def restat(self, entry: TreeEntry) -> tuple[int, int] | None:
        try:
            st = smbclient.stat(self.unc(entry["p"]), **self._kw())
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns // 1000 * 1000

