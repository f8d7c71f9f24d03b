"""Opening libvirt and finding domains, with errors a technician can act on."""

from __future__ import annotations

import fnmatch
from typing import Any
from urllib.parse import urlparse

from orchestrator.plugin.errors import BadInput, DobaasError, NotFound


def libvirt_module() -> Any:
    try:
        import libvirt
    except ImportError:
        raise BadInput("the kvm plugin needs libvirt-python (pip install 'dobaas[kvm]', with libvirt-dev "
                       "and pkg-config installed)") from None
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors come back as exceptions, not stderr
    return libvirt


def connect(uri: str) -> Any:
    libvirt = libvirt_module()
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise DobaasError(f"cannot connect to libvirt at {uri}: {e.get_error_message()} "
                          "(is libvirtd running, and may this user use it?)") from None


def is_remote(uri: str) -> bool:
    """qemu+ssh://host/system and the like: NBD must then go over TCP, and qemu-nbd cannot be run locally."""
    host = urlparse(uri).hostname
    return bool(host) and host not in ("localhost", "127.0.0.1", "::1")


def match_domains(conn: Any, patterns: list[str], uri: str) -> list[str]:
    """Domain names matching the patterns (names or globs), sorted. A plain name that matches nothing is an
    error (a VM renamed or deleted must not silently drop out of the backups)."""
    names = sorted(d.name() for d in conn.listAllDomains(0))
    out: set[str] = set()
    for pat in patterns:
        hits = fnmatch.filter(names, pat)
        if not hits and not any(ch in pat for ch in "*?["):
            known = ", ".join(names[:20]) or "none"
            raise NotFound(f"domain {pat!r} not found on {uri} (domains there: {known})")
        out.update(hits)
    if not out:
        raise NotFound(f"no domain on {uri} matches {', '.join(patterns)}")
    return sorted(out)


def lookup(conn: Any, name: str, uri: str) -> Any:
    libvirt = libvirt_module()
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError:
        raise NotFound(f"domain {name!r} not found on {uri}") from None
