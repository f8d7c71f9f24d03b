"""The policy fields every Windows source has (a host reached over WinRM), shared by the Windows plugins so
each names and checks them alike (the share they write backups to: orchestrator.plugin.smb.BackupShareFields)."""

from __future__ import annotations

from typing import Any, Literal

from orchestrator.plugin.base import PasswordFields
from orchestrator.plugin.errors import BadInput, UsageError
from orchestrator.plugin.secret import read_secret
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


def restore_access(acc: dict, options: Any, what: str) -> WindowsAccess:
    """The WinRM access of a restore: the snapshot's recorded host and secret names (``acc``, from
    ``access_names``), overridden by the command's ``host``/``port``/``thumbprint``/``user``/``password_env``."""
    user = options.get("user") or acc.get("user")
    env = options.get("password_env") or acc.get("password_env")
    password = read_secret(env, None if options.get("password_env") else acc.get("password_file"), what, "password")
    if not user or password is None:
        raise UsageError(f"no credentials for {what}: give --user and --password-env")
    return WindowsAccess(options.get("host") or acc["host"], user, password,
                         port=options.get("port") or acc.get("port"), https=acc.get("https", True),
                         thumbprint=options.get("thumbprint") or acc.get("thumbprint"), ca_file=acc.get("ca_file"),
                         auth=acc.get("auth", "ntlm"))
