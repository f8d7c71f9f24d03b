"""From a vault location (a path, ``file://…`` or ``sftp://user@host:port/path``) to a backend."""

from __future__ import annotations

import os
from dataclasses import dataclass

from orchestrator.errors import BadInput, NotFound
from orchestrator.secret import read_secret
from orchestrator.units import parse_size
from orchestrator.vault.backend import Backend
from orchestrator.vault.backend.local import open_local


@dataclass
class RemoteAccess:
    """How to reach a remote vault: from a policy's ``remote:`` block, or DOBAAS_SFTP_* for commands."""

    known_hosts: str | None = None
    identity_file: str | None = None
    password: str | None = None
    bandwidth_limit: str | None = None  # "20MiB/s"

    @classmethod
    def from_env(cls) -> RemoteAccess:
        password = os.environ.get("DOBAAS_SFTP_PASSWORD")
        if password is None:
            password = read_secret(None, os.environ.get("DOBAAS_SFTP_PASSWORD_FILE"), "DOBAAS_SFTP_PASSWORD_FILE",
                                   "password")
        return cls(os.environ.get("DOBAAS_SFTP_KNOWN_HOSTS"), os.environ.get("DOBAAS_SFTP_IDENTITY"), password,
                   os.environ.get("DOBAAS_BANDWIDTH_LIMIT"))


def bandwidth(text: str | None) -> float | None:
    if not text:
        return None
    rate = parse_size(text, "bandwidth_limit")
    if rate <= 0:
        raise BadInput(f"bandwidth_limit {text!r} must be positive")
    return float(rate)


def open_backend(location: str, access: RemoteAccess | None = None, must_exist: bool = True) -> Backend:
    if location.startswith("sftp://"):
        from orchestrator.vault.backend.sftp import SftpBackend, SftpOptions

        a = access or RemoteAccess.from_env()
        known = a.known_hosts or os.path.expanduser("~/.ssh/known_hosts")
        backend = SftpBackend(location, SftpOptions(known, a.identity_file, a.password, bandwidth(a.bandwidth_limit)))
        if must_exist and not backend.exists("config"):
            backend.close()
            raise NotFound(f"no vault at {backend.location} (the provider creates it with 'dobaas vault init')")
        return backend
    if "://" in location and not location.startswith("file://"):
        raise BadInput(f"vault {location!r}: only paths, file:// and sftp:// locations are supported")
    local = open_local(location.removeprefix("file://"), must_exist)
    rate = bandwidth(access.bandwidth_limit) if access is not None else None
    if rate:  # a vault directory on a mount reached over a slow link
        from orchestrator.vault.backend.throttle import ThrottledBackend

        return ThrottledBackend(local, rate)
    return local
