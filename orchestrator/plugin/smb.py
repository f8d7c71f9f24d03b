"""Files on SMB shares for the Windows plugins: a Windows host's paths mapped to the shares that hold them
(``{"D:\\\\VMs": "smb://hv1/VMs"}``: Hyper-V's disks), and files opened, written and removed over SMB (VHDX files
read by libvhdi, backup files SQL Server writes to a share)."""

from __future__ import annotations

import ntpath
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, field_validator

from orchestrator.plugin.errors import BadInput, DobaasError, NotFound
from orchestrator.plugin.secret import read_secret


def host_to_url(path: str, storage: dict[str, str]) -> str:
    """The SMB URL of a host path, by the longest matching host directory (Windows paths: case-insensitive)."""
    norm = ntpath.normpath(path)
    best = None
    for host_dir, url in storage.items():
        d = ntpath.normpath(host_dir).rstrip("\\")
        inside = norm.lower() == d.lower() or norm.lower().startswith(d.lower() + "\\")
        if inside and (best is None or len(d) > len(best[0])):
            best = (d, url)
    if best is None:
        raise NotFound(f"{path} is under no directory of the source's storage map ({', '.join(storage) or 'empty'}): "
                       "add the share that holds it")
    rest = norm[len(best[0]) :].lstrip("\\").replace("\\", "/")
    return best[1].rstrip("/") + ("/" + rest if rest else "")


def url_to_host(url: str, storage: dict[str, str]) -> str:
    """The host path of a share URL (the inverse of host_to_url), for files the restore writes."""
    for host_dir, base in storage.items():
        b = base.rstrip("/")
        if url == b or url.startswith(b + "/"):
            rest = url[len(b) :].lstrip("/").replace("/", "\\")
            return ntpath.join(ntpath.normpath(host_dir), rest) if rest else ntpath.normpath(host_dir)
    raise NotFound(f"{url} is in no share of the storage map")


class LazySmbFile:
    """A file of a share opened at its first read (a ByteStream's reader): of the many files a backup folder
    holds, only the one being stored is open."""

    def __init__(self, files: SmbFiles, url: str) -> None:
        self.files, self.url = files, url
        self.f: Any = None

    def readinto(self, b: Any) -> int:
        if self.f is None:
            self.f = self.files.open_read(self.url)
        n = self.f.readinto(b)
        if not n:
            self.f.close()
        return n or 0


class SmbFiles:
    """SMB access to the host's storage with one set of credentials."""

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password
        self._sessions: set[tuple[str, int]] = set()

    def unc(self, url: str) -> tuple[str, dict[str, Any]]:
        u = urlsplit(url)
        if u.scheme != "smb" or not u.hostname or not u.path.strip("/"):
            raise BadInput(f"{url!r} is not smb://host[:port]/share/path")
        port = u.port or 445
        key = (u.hostname, port)
        if key not in self._sessions:
            import smbclient
            from smbprotocol.exceptions import LogonFailure, SMBAuthenticationError

            try:
                smbclient.register_session(u.hostname, username=self.user, password=self.password, port=port)
            except (SMBAuthenticationError, LogonFailure):
                raise DobaasError(f"{u.hostname}:{port}: the storage credentials of {self.user} were "
                                  "rejected") from None
            except (OSError, ValueError) as e:
                raise DobaasError(f"{u.hostname}:{port}: SMB storage unreachable ({e})") from None
            self._sessions.add(key)
        return "\\\\" + u.hostname + "\\" + unquote(u.path).strip("/").replace("/", "\\"), {"port": port}

    def open_read(self, url: str) -> Any:
        import smbclient

        path, kw = self.unc(url)
        try:
            return smbclient.open_file(path, mode="rb", share_access="rwd", buffering=0, **kw)
        except OSError as e:
            raise NotFound(f"{url}: cannot be opened over SMB ({e})") from None

    def open_write(self, url: str) -> Any:
        import smbclient

        path, kw = self.unc(url)
        return smbclient.open_file(path, mode="xb", **kw)

    def makedirs(self, url: str) -> None:
        import smbclient

        path, kw = self.unc(url)
        smbclient.makedirs(path, exist_ok=True, **kw)

    def remove(self, url: str) -> None:
        import smbclient

        path, kw = self.unc(url)
        smbclient.remove(path, **kw)

    def walk(self, url: str) -> list[tuple[str, int]]:
        """(path relative to ``url`` with '/', size) of every file below the folder ``url``, sorted."""
        import smbclient

        path, kw = self.unc(url)
        out = []
        for dirpath, _dirs, files in smbclient.walk(path, **kw):
            for f in files:
                full = f"{dirpath}\\{f}"
                rel = full[len(path):].lstrip("\\").replace("\\", "/")
                out.append((rel, int(smbclient.stat(full, **kw).st_size)))
        return sorted(out)

    def remove_tree(self, url: str) -> None:
        """Delete the folder ``url`` and everything below it (nothing when it is not there)."""
        import smbclient

        path, kw = self.unc(url)
        if not smbclient.path.exists(path, **kw):
            return
        for dirpath, dirs, files in list(smbclient.walk(path, topdown=False, **kw)):
            for f in files:
                smbclient.remove(f"{dirpath}\\{f}", **kw)
            for d in dirs:
                smbclient.rmdir(f"{dirpath}\\{d}", **kw)
        smbclient.rmdir(path, **kw)

    def exists(self, url: str) -> bool:
        import smbclient

        path, kw = self.unc(url)
        return bool(smbclient.path.exists(path, **kw))

    def close(self) -> None:
        import smbclient

        for host, port in self._sessions:
            try:
                smbclient.delete_session(host, port=port)
            except Exception:
                pass
        self._sessions.clear()


class BackupShareFields(BaseModel):
    """Where a Windows product writes a backup (its UNC ``share_path``) and how dobaas reads the same place
    (``share``, smb://…), with the share's credentials when they are not the source's own."""

    share: str
    share_path: str
    share_user: str | None = None
    share_password_env: str | None = None
    share_password_file: str | None = None

    @field_validator("share")
    @classmethod
    def _smb(cls, v: str) -> str:
        if not v.startswith("smb://"):
            raise ValueError(f"{v!r} is not an smb:// URL")
        return v.rstrip("/")

    @field_validator("share_path")
    @classmethod
    def _unc(cls, v: str) -> str:
        if not v.startswith("\\\\"):
            raise ValueError(f"{v!r} is not a UNC path (\\\\server\\share)")
        return v.rstrip("\\")

    def share_names(self) -> dict:
        """How to reach the share again at restore time: names of secrets, never secrets."""
        return {"share": self.share, "share_path": self.share_path, "share_user": self.share_user,
                "share_password_env": self.share_password_env, "share_password_file": self.share_password_file}

    def share_files(self, user: str, password: str | None, what: str) -> SmbFiles:
        pw = read_secret(self.share_password_env, self.share_password_file, what, "share_password") \
            if (self.share_password_env or self.share_password_file) else password
        return SmbFiles(self.share_user or user, pw or "")


def restore_share(meta: dict, options: dict, user: str, password: str | None) -> tuple[SmbFiles, str, str]:
    """The share a restore writes a product's backup files to, for the Windows server to read them: the files
    connection, its smb:// URL and its UNC path, from the command's ``share``/``share_path``/``share_user``/
    ``share_password_env``, else the snapshot's (``share_names``), else the WinRM account."""
    env = options.get("share_password_env") or meta.get("share_password_env")
    file = None if options.get("share_password_env") else meta.get("share_password_file")
    pw = read_secret(env, file, "restore", "share_password") if env or file else password
    files = SmbFiles(options.get("share_user") or meta.get("share_user") or user, pw or "")
    return files, options.get("share") or meta["share"], options.get("share_path") or meta["share_path"]
