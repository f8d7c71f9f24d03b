"""SFTP over the system's OpenSSH client: paramiko speaks the SFTP protocol on the stdin/stdout of
``ssh -s sftp``, and ssh does the encryption in its own process (C, on another core). Host keys are checked by
ssh itself against our known_hosts file only (StrictHostKeyChecking=yes), with no user configuration read."""

from __future__ import annotations

import os
import shlex
from typing import Any

from orchestrator.errors import DobaasError

CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr"


def open_sftp(host: str, port: int, user: str, identity: str, known_hosts: str, timeout: float) -> Any:
    import paramiko
    from paramiko.proxy import ProxyCommand

    class SshPipe(ProxyCommand):
        def get_name(self) -> str:
            return f"ssh {user}@{host}:{port}"

        def recv(self, size: int) -> bytes:
            # one blocking read: b"" when ssh has exited (paramiko then raises EOFError); ProxyCommand's own recv
            # would spin forever on a closed pipe. A dead link is detected by ssh (ServerAliveInterval).
            assert self.process.stdout is not None
            return os.read(self.process.stdout.fileno(), size)

        def close(self) -> None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(5)
                except Exception:
                    self.process.kill()

    cmd = ["ssh", "-F", "/dev/null", "-p", str(port), "-i", identity, "-o", "IdentitiesOnly=yes",
           "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
           "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(timeout)}",
           "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", "-o", f"Ciphers={CIPHERS}",
           "-e", "none", "-s", f"{user}@{host}", "sftp"]
    pipe = SshPipe(shlex.join(cmd))
    try:
        return paramiko.SFTPClient(pipe)  # type: ignore[arg-type]  # paramiko takes any socket-like object
    except (EOFError, paramiko.SSHException, OSError) as e:
        err = ""
        try:
            pipe.process.wait(5)
            err = pipe.process.stderr.read().decode(errors="replace") if pipe.process.stderr else ""
        except Exception:
            pass
        pipe.close()
        raise _explain(err, host, port, user, known_hosts, e) from None


def _explain(err: str, host: str, port: int, user: str, known_hosts: str, e: Exception) -> DobaasError:
    where = f"{host}:{port}"
    if "IDENTIFICATION HAS CHANGED" in err or ("key for" in err and "has changed" in err):
        return DobaasError(f"the host key of {where} has CHANGED since it was recorded in {known_hosts}: refusing "
                           "to connect (a different server, or an attack); check with the provider before updating "
                           "known_hosts")
    if "Host key verification failed" in err or ("No " in err and "host key is known" in err):
        return DobaasError(f"the host key of {where} is not in {known_hosts}: refusing an unknown server (add the "
                           "provider's published key)")
    if "Permission denied" in err:
        return DobaasError(f"{user}@{where} refused our key or password")
    last = [x for x in err.strip().splitlines() if x.strip()]
    return DobaasError(f"cannot open an SFTP session to {user}@{where}: {last[-1] if last else e}")
