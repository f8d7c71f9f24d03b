"""Logging in to vCenter or an ESXi host with pyvmomi, with errors a technician can act on (host unreachable,
certificate not trusted — with the fingerprint to check and pin —, wrong credentials)."""

from __future__ import annotations

import atexit
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from orchestrator.plugin.errors import BadInput, DobaasError
from plugins.vmware.tls import TlsTrust, server_fingerprint

CONNECT_TIMEOUT = 30.0
REUSE_FOR = 300.0  # a session idle longer than this is not reused (vCenter expires idle sessions after 30 min)


def pyvmomi() -> tuple[Any, Any]:
    try:
        from pyVmomi import vim, vmodl
    except ImportError:
        raise BadInput("the vmware plugin needs pyvmomi (pip install 'dobaas[vmware]')") from None
    return vim, vmodl


def split_host(host: str) -> tuple[str, int]:
    """``vc.example.com``, ``vc.example.com:8443`` or ``[::1]:443``."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, int(rest.lstrip(":") or 443)
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        return name, int(port)
    return host, 443


@dataclass
class Session:
    """A logged-in API session: the service content, and the cookie the datastore HTTP interface needs."""

    si: Any
    host: str
    port: int
    trust: TlsTrust
    user: str

    @property
    def content(self) -> Any:
        return self.si.RetrieveContent()

    @property
    def cookie(self) -> str:
        """``vmware_soap_session=...`` for /folder requests (the same session, no second login)."""
        raw = getattr(self.si._stub, "cookie", "") or ""
        return raw.split(";", 1)[0].strip()

    def alive(self) -> bool:
        try:
            return self.si.content.sessionManager.currentSession is not None
        except Exception:  # a broken connection or an expired session: not reusable
            return False

    def close(self) -> None:
        try:
            self.si.content.sessionManager.Logout()
        except Exception:  # the session may already be gone; nothing to clean up then
            pass


def _preflight(host: str, port: int, trust: TlsTrust) -> None:
    """Reach the host and check its certificate before pyvmomi sends the password."""
    try:
        raw = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except OSError as e:
        raise DobaasError(f"cannot reach {host}:{port} ({e.strerror or e}): is it the vCenter or ESXi address, "
                          "and is port 443 open from this machine?") from None
    try:
        with trust.context().wrap_socket(raw, server_hostname=host) as s:
            trust.check_peer(s, f"{host}:{port}")
    except ssl.SSLCertVerificationError as e:
        try:
            fp = server_fingerprint(host, port)
        except OSError:
            fp = "unknown"
        raise DobaasError(
            f"the certificate of {host}:{port} is not trusted ({e.verify_message}). Its SHA-256 fingerprint is "
            f"{fp}: check it on the host (ESXi console, or vCenter's certificate manager), then pin it with "
            "`thumbprint:` in the policy, or give the signing CA with `ca_file:`") from None
    except ssl.SSLError as e:
        raise DobaasError(f"TLS with {host}:{port} failed: {e.reason or e}") from None
    finally:
        raw.close()


def connect(host: str, user: str, password: str | None, trust: TlsTrust) -> Session:
    vim, _vmodl = pyvmomi()
    from pyVim.connect import SmartConnect

    if not password:
        raise BadInput(f"no password for {user}@{host}: set password_env or password_file in the source")
    name, port = split_host(host)
    _preflight(name, port, trust)
    try:
        si = SmartConnect(host=name, port=port, user=user, pwd=password, sslContext=trust.context(),
                          thumbprint=trust.thumbprint, connectionPoolTimeout=-1,
                          httpConnectionTimeout=int(CONNECT_TIMEOUT))
    except vim.fault.InvalidLogin:
        raise DobaasError(f"{name}:{port} refused the login of {user!r}: wrong user name or password") from None
    except vim.fault.NoPermission as e:
        raise DobaasError(f"{user!r} may not log in to {name}:{port} ({e.msg})") from None
    except (OSError, ssl.SSLError) as e:
        raise DobaasError(f"cannot open a vSphere API session with {name}:{port}: {e}") from None
    except Exception as e:  # pyvmomi's own exceptions (thumbprint mismatch, unexpected answers)
        if "thumbprint" in type(e).__name__.lower():
            raise DobaasError(f"{name}:{port}: certificate fingerprint changed during login ({e})") from None
        raise DobaasError(f"{name}:{port}: vSphere API login failed: {e}") from None
    return Session(si, name, port, trust, user)


_idle: dict[tuple, tuple[Session, float]] = {}
_idle_lock = threading.Lock()


@contextmanager
def session(host: str, user: str, password: str | None, trust: TlsTrust) -> Iterator[Session]:
    """A logged-in session, reused within one process (listing a policy's VMs, then backing each up, costs one
    login, not one per VM); each user of it has it alone, and it is logged out at exit."""
    key = (host, user, password, trust)
    with _idle_lock:
        cached = _idle.pop(key, None)
    s = None
    if cached:
        if time.monotonic() - cached[1] < REUSE_FOR and cached[0].alive():
            s = cached[0]
        else:
            cached[0].close()
    if s is None:
        s = connect(host, user, password, trust)
    try:
        yield s
    finally:
        with _idle_lock:
            if key in _idle:
                s.close()
            else:
                _idle[key] = (s, time.monotonic())


@atexit.register
def logout_all() -> None:
    """Log out of the sessions kept for reuse (the plugin's end_run; atexit too, for anything else)."""
    with _idle_lock:
        idle = list(_idle.values())
        _idle.clear()
    for s, _t in idle:
        s.close()
