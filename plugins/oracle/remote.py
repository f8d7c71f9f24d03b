"""The database host over SSH (paramiko): commands with Oracle's environment set, files read and written over
SFTP. The host key must be in the policy's known_hosts: an unknown or changed key is refused, never learned."""

from __future__ import annotations

import shlex
import stat
from collections.abc import Iterator
from typing import Any

from orchestrator.plugin.errors import DobaasError

CHUNK = 1 << 20


class Host:
    def __init__(self, host: str, port: int, user: str, identity_file: str, known_hosts: str) -> None:
        import paramiko

        self.where = f"{user}@{host}:{port}"
        self.client = paramiko.SSHClient()
        try:
            self.client.load_host_keys(known_hosts)
        except OSError as e:
            raise DobaasError(f"known_hosts {known_hosts}: {e.strerror}") from None
        self.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            self.client.connect(host, port=port, username=user, key_filename=identity_file, look_for_keys=False,
                                allow_agent=False, timeout=20, banner_timeout=20, auth_timeout=20)
        except paramiko.BadHostKeyException:
            raise DobaasError(f"{self.where}: the host key does not match {known_hosts}: refusing to connect (the "
                              "server was reinstalled, or someone is in the middle); check the key with the "
                              "host's administrator, then update known_hosts") from None
        except paramiko.AuthenticationException:
            raise DobaasError(f"{self.where}: the key {identity_file} was refused (is its public key in the "
                              f"user's authorized_keys?)") from None
        except paramiko.SSHException as e:
            raise DobaasError(f"{self.where}: {e} (known_hosts: {known_hosts}); refusing an unknown host") from None
        except (TimeoutError, OSError) as e:
            raise DobaasError(f"{self.where}: cannot connect: {e}") from None
        self._sftp: Any = None

    @property
    def sftp(self) -> Any:
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    def run(self, command: str, stdin: str = "", env: dict[str, str] | None = None) -> tuple[int, str, str]:
        """Run ``command`` through the login shell with ``env`` exported; returns (exit status, stdout, stderr)."""
        prefix = "".join(f"export {k}={shlex.quote(v)}; " for k, v in (env or {}).items())
        chan_in, chan_out, chan_err = self.client.exec_command(prefix + command, timeout=24 * 3600)
        if stdin:
            chan_in.write(stdin)
        chan_in.channel.shutdown_write()
        out = chan_out.read().decode("utf-8", "replace")
        err = chan_err.read().decode("utf-8", "replace")
        return chan_out.channel.recv_exit_status(), out, err

    def check(self, command: str, what: str) -> str:
        rc, out, err = self.run(command)
        if rc:
            raise DobaasError(f"{self.where}: {what} failed: {(err or out).strip()}")
        return out

    def reader(self, path: str) -> Any:
        """A remote file opened for reading (``readinto`` / ``read``), prefetching ahead."""
        f = self.sftp.open(path, "rb")
        f.prefetch()
        return f

    def write_from(self, path: str, chunks: Iterator[bytes]) -> int:
        n = 0
        with self.sftp.open(path, "wb") as f:
            f.set_pipelined(True)
            for c in chunks:
                f.write(c)
                n += len(c)
        return n

    def listdir(self, path: str) -> list[tuple[str, int]]:
        return [(a.filename, a.st_size or 0) for a in self.sftp.listdir_attr(path)
                if stat.S_ISREG(a.st_mode or 0)]

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        self.client.close()
