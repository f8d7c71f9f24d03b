"""How we trust a vCenter or ESXi host: its certificate chains to a CA file we were given, or its certificate's
fingerprint equals the one pinned in the policy (ESXi's self-signed certificates), or, only when the policy says
``insecure: true``, not at all. The same rule guards the SOAP API and the datastore HTTP reads."""

from __future__ import annotations

import functools
import hashlib
import socket
import ssl
from dataclasses import dataclass

from orchestrator.plugin.errors import BadInput, DobaasError

_HASHES = {40: "sha1", 64: "sha256", 128: "sha512"}


def normalize_thumbprint(text: str) -> str:
    hexits = text.replace(":", "").replace(" ", "").lower()
    if len(hexits) not in _HASHES or any(c not in "0123456789abcdef" for c in hexits):
        raise BadInput(f"thumbprint {text!r}: give the SHA-256 (or SHA-1) fingerprint of the host's certificate, "
                       "hex digits with or without colons")
    return hexits


def fingerprint(der: bytes, length: int = 64) -> str:
    return hashlib.new(_HASHES[length], der).hexdigest()


def colon_hex(h: str) -> str:
    return ":".join(h[i : i + 2] for i in range(0, len(h), 2)).upper()


@dataclass(frozen=True)
class TlsTrust:
    ca_file: str | None = None
    thumbprint: str | None = None  # normalized hex
    insecure: bool = False

    def context(self) -> ssl.SSLContext:
        """The context for every connection; with a pinned thumbprint the chain is not checked (ESXi's
        certificate is self-signed), ``check_peer`` compares the fingerprint instead. Built once per trust
        (loading the system CA store costs tens of milliseconds)."""
        return _context(self.ca_file, bool(self.thumbprint or self.insecure))

    def check_peer(self, sock: ssl.SSLSocket, host: str) -> None:
        """After the handshake: a pinned thumbprint must match the certificate the host presented."""
        if not self.thumbprint:
            return
        der = sock.getpeercert(binary_form=True) or b""
        got = fingerprint(der, len(self.thumbprint))
        if got != self.thumbprint:
            raise DobaasError(f"{host} presented a certificate whose fingerprint is {colon_hex(got)}, not the pinned "
                              f"{colon_hex(self.thumbprint)}: refusing to send credentials (certificate replaced, "
                              "or someone in the middle)")


@functools.lru_cache(maxsize=8)
def _context(ca_file: str | None, unverified: bool) -> ssl.SSLContext:
    if ca_file:
        try:
            return ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as e:
            raise BadInput(f"ca_file {ca_file}: cannot be used as a CA bundle ({e})") from None
    if unverified:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context()


def server_fingerprint(host: str, port: int, timeout: float = 10.0) -> str:
    """The SHA-256 fingerprint of the certificate a host presents (to show in errors and docs, never trusted)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as raw, ctx.wrap_socket(raw) as s:
        return colon_hex(fingerprint(s.getpeercert(binary_form=True) or b""))
