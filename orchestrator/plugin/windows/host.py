"""The policy fields every Windows source has (a host reached over WinRM) and the share a Windows host writes its
backups to, shared by the Windows plugins so each names and checks them alike."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, field_validator

from orchestrator.plugin.base import PasswordFields
from orchestrator.plugin.errors import BadInput
from orchestrator.plugin.secret import read_secret
from orchestrator.plugin.smb import SmbFiles
from orchestrator.plugin.windows.channel import WindowsAccess


class WindowsHostFields(PasswordFields):
    host: str
    port: int | None = None
    user: str
    https: bool = True
    auth: Literal["ntlm", "kerberos"] = "ntlm"  # kerberos needs pywinrm's kerberos extra and a ticket
    thumbprint: str | None = None
    ca_file: str | None = None

    def access(self) -> WindowsAccess:
        password = self.password()
        if password is None:
            raise BadInput(f"source {getattr(self, 'name', '?')}: give password_env or password_file for {self.user}")
        return WindowsAccess(self.host, self.user, password, port=self.port, https=self.https,
                             thumbprint=self.thumbprint, ca_file=self.ca_file, auth=self.auth)

    def access_names(self) -> dict:
        """How to reach the host again at restore time: names of secrets, never secrets."""
        return {"host": self.host, "port": self.port, "https": self.https, "auth": self.auth,
                "thumbprint": self.thumbprint, "ca_file": self.ca_file, "user": self.user,
                "password_env": self.password_env, "password_file": self.password_file}


class BackupShareFields(BaseModel):
    """Where the Windows host writes a backup (its UNC ``share_path``) and how dobaas reads the same place
    (``share``, smb://…), with the share's credentials when they are not the WinRM ones."""

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
