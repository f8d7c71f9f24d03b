"""From a vault location (a path, ``file://…``, ``sftp://user@host:port/path`` or ``s3://bucket/prefix``) to a
backend."""

from __future__ import annotations

import os
from dataclasses import dataclass

from orchestrator.errors import BadInput, NotFound
from orchestrator.secret import read_secret
from orchestrator.units import parse_size
from orchestrator.vault.backend import Backend, ObjectMissing
from orchestrator.vault.backend.local import open_local


@dataclass
class RemoteAccess:
    """How to reach a remote vault: from a policy's ``remote:`` block, or DOBAAS_SFTP_* for commands."""

    known_hosts: str | None = None
    identity_file: str | None = None
    password: str | None = None
    bandwidth_limit: str | None = None  # "20MiB/s"
    s3: S3Access | None = None

    @classmethod
    def from_env(cls) -> RemoteAccess:
        password = os.environ.get("DOBAAS_SFTP_PASSWORD")
        if password is None:
            password = read_secret(None, os.environ.get("DOBAAS_SFTP_PASSWORD_FILE"), "DOBAAS_SFTP_PASSWORD_FILE",
                                   "password")
        return cls(os.environ.get("DOBAAS_SFTP_KNOWN_HOSTS"), os.environ.get("DOBAAS_SFTP_IDENTITY"), password,
                   os.environ.get("DOBAAS_BANDWIDTH_LIMIT"), S3Access.from_env())


@dataclass
class S3Access:
    """How to reach an s3:// vault: from a policy's ``remote:`` block, or the AWS_* / DOBAAS_S3_* variables."""

    endpoint: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    ca_file: str | None = None

    @classmethod
    def from_env(cls) -> S3Access:
        return cls(os.environ.get("DOBAAS_S3_ENDPOINT"),
                   os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION"),
                   os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY"),
                   os.environ.get("DOBAAS_S3_CA_FILE") or os.environ.get("AWS_CA_BUNDLE"))


def bandwidth(text: str | None) -> float | None:
    if not text:
        return None
    rate = parse_size(text, "bandwidth_limit")
    if rate <= 0:
        raise BadInput(f"bandwidth_limit {text!r} must be positive")
    return float(rate)


def open_backend(location: str, access: RemoteAccess | None = None, must_exist: bool = True,
                 provider: bool = False) -> Backend:
    """``provider``: opened with the provider's key for maintenance (on S3 it may delete and undelete)."""
    if location.startswith("s3://"):
        return _open_s3(location, access or RemoteAccess.from_env(), must_exist, provider)
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
        raise BadInput(f"vault {location!r}: only paths, file://, sftp:// and s3:// locations are supported")
    # a vault directory on a mount reached over a slow link
    return _throttled(open_local(location.removeprefix("file://"), must_exist), access)


def _throttled(backend: Backend, access: RemoteAccess | None) -> Backend:
    """``backend`` with its uploads kept under the access's bandwidth_limit, when one is set."""
    rate = bandwidth(access.bandwidth_limit) if access is not None else None
    if not rate:
        return backend
    from orchestrator.vault.backend.throttle import ThrottledBackend

    return ThrottledBackend(backend, rate)


def _open_s3(location: str, access: RemoteAccess, must_exist: bool, provider: bool) -> Backend:
    from orchestrator.vault.backend.s3 import S3Backend, S3Options

    a = access.s3 or S3Access.from_env()
    backend: Backend = S3Backend(location, S3Options(a.endpoint, a.region, a.access_key, a.secret_key, a.ca_file,
                                                     provider))
    if must_exist and not backend.exists("config"):
        try:
            backend.get("config")
        except ObjectMissing as e:
            backend.close()
            why = (": its objects were deleted by a client (delete markers); the provider restores them with "
                   "'dobaas vault undelete'") if "deleted by a client" in str(e) else \
                " (the provider creates it with 'dobaas vault init')"
            raise NotFound(f"no vault at {backend.location}{why}") from None
    return _throttled(backend, access)
