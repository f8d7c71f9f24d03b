"""A WinRM channel to one Windows host, driven from the Linux machine that runs dobaas (no agent on the host).

Security: HTTPS with the server certificate pinned by its SHA-256 fingerprint (checked before the credentials
are sent, and on every connection) or checked against a CA file; plain HTTP only with NTLM message encryption
(pywinrm seals every message). Authentication: NTLM (default) or Kerberos when configured. Each call opens a
shell, runs one shipped script with -EncodedCommand, reads its output (several Receive rounds; operation
timeouts are retried by pywinrm), and closes the shell. Read-only scripts are retried on transient faults.

Errors are one sentence each: host unreachable, WinRM not listening (disabled), credentials rejected,
certificate mismatch, script failed (with PowerShell's own message)."""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import ssl
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Literal

from orchestrator.errors import BadInput, DobaasError, WrongPassphrase
from orchestrator.plugin.windows.psjson import parse
from orchestrator.plugin.windows.scripts import POWERSHELL, Script, Value, command_line

log = logging.getLogger(__name__)

TRANSIENT_HTTP = {500, 502, 503, 504}


class RemoteScriptError(DobaasError):
    """A script ran and failed on the Windows host: PowerShell's own message."""

    def __init__(self, script: str, host: str, message: str, code: int) -> None:
        super().__init__(f"{host}: {script} failed (exit {code}): {message}")
        self.script, self.message, self.code = script, message, code


@dataclass(frozen=True)
class WindowsAccess:
    """How to reach and log on to a Windows host (from a policy source, or a restore's options)."""

    host: str
    user: str
    password: str
    port: int | None = None  # default 5986 (https) or 5985 (http)
    https: bool = True
    thumbprint: str | None = None  # SHA-256 of the certificate (hex, colons allowed)
    ca_file: str | None = None
    auth: Literal["ntlm", "kerberos"] = "ntlm"
    operation_timeout: int = 20  # seconds the host may take before answering "no output yet" (WS-Man)
    read_timeout: int = 30
    retries: int = 3  # for read-only scripts, on transient faults

    @property
    def endpoint(self) -> str:
        port = self.port or (5986 if self.https else 5985)
        return f"{'https' if self.https else 'http'}://{self.host}:{port}/wsman"


def normalize_thumbprint(text: str) -> str:
    t = re.sub(r"[\s:]", "", text).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", t):
        raise BadInput(f"thumbprint {text!r}: expected the certificate's SHA-256 fingerprint (64 hex digits)")
    return t


class WinRmChannel:
    def __init__(self, access: WindowsAccess) -> None:
        if access.https and not (access.thumbprint or access.ca_file):
            raise BadInput(f"{access.host}: give the WinRM certificate's thumbprint (SHA-256) or a ca_file")
        self.access = access
        self.pin = normalize_thumbprint(access.thumbprint) if access.thumbprint else None
        self._checked = False
        self._proto: Any = None  # one authenticated connection for all the calls of a run

    # ---- connection checks ------------------------------------------------------------------------------
    def _check_certificate(self) -> None:
        """Before any credential leaves: the server's certificate is the pinned one (or chains to the CA)."""
        if not self.access.https or self._checked:
            return
        a = self.access
        port = a.port or 5986
        ctx = ssl.create_default_context(cafile=a.ca_file) if a.ca_file else ssl._create_unverified_context()
        if a.ca_file:
            ctx.check_hostname = False  # hosts are often reached by IP; the CA file is the trust anchor
        try:
            with socket.create_connection((a.host, port), timeout=a.read_timeout) as raw, \
                    ctx.wrap_socket(raw, server_hostname=a.host) as tls:
                der = tls.getpeercert(binary_form=True)
        except ssl.SSLCertVerificationError as e:
            raise DobaasError(f"{a.host}:{port}: the WinRM certificate is not trusted by {a.ca_file} "
                              f"({e.verify_message})") from None
        except ConnectionRefusedError:
            raise DobaasError(f"{a.host}:{port}: WinRM is not listening over HTTPS (is it enabled? "
                              "'winrm quickconfig -transport:https' on the host)") from None
        except OSError as e:
            raise DobaasError(f"{a.host}:{port}: host unreachable ({e.strerror or e})") from None
        got = hashlib.sha256(der or b"").hexdigest()
        if self.pin and got != self.pin:
            raise DobaasError(f"{a.host}:{port}: certificate mismatch: the host presents {_colons(got)}, the policy "
                              f"pins {_colons(self.pin)}; nothing was sent")
        self._checked = True

    def _protocol(self) -> Any:
        import requests
        from winrm.protocol import Protocol

        a = self.access
        p = Protocol(a.endpoint, transport=a.auth, username=a.user, password=a.password,
                     server_cert_validation="validate" if a.ca_file else "ignore",
                     ca_trust_path=a.ca_file or "legacy_requests",
                     message_encryption="auto" if a.https else "always",
                     operation_timeout_sec=a.operation_timeout, read_timeout_sec=a.read_timeout)
        transport = p.transport
        build = transport.build_session
        pin = self.pin

        def build_pinned() -> requests.Session:
            fresh = transport.session is None
            session = build()
            if fresh and pin:  # every connection of this session checks the certificate again
                from requests.adapters import HTTPAdapter

                class Pinned(HTTPAdapter):
                    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
                        kwargs["assert_fingerprint"] = pin
                        super().init_poolmanager(*args, **kwargs)

                session.mount("https://", Pinned())
            return session

        transport.build_session = build_pinned  # type: ignore[method-assign,unused-ignore]  # wrap pywinrm's session factory
        return p

    # ---- running scripts --------------------------------------------------------------------------------
    def run(self, script: Script, params: dict[str, Value] | None = None, idempotent: bool = False) -> Any:
        """Run a shipped script; its JSON answer, parsed. Only ``idempotent`` (read-only) scripts are retried."""
        args = command_line(script, params or {})
        tries = self.access.retries if idempotent else 1
        log.debug("%s: running %s %s", self.access.host, script.name, sorted((params or {}).keys()))
        for attempt in range(1, tries + 1):
            try:
                out, err, code = self._execute(args)
                break
            except _Transient as e:
                if attempt == tries:
                    raise DobaasError(f"{self.access.host}: {script.name}: {e} (after {tries} attempt(s))") from None
                log.warning("%s: %s: %s; retrying (%d/%d)", self.access.host, script.name, e, attempt, tries)
                time.sleep(min(2**attempt, 10))
        if code != 0:
            raise RemoteScriptError(script.name, self.access.host, _clixml_text(err) or f"exit code {code}", code)
        return parse(out.decode("utf-8", "replace"), f"{self.access.host}: {script.name}")

    def _execute(self, args: list[str]) -> tuple[bytes, bytes, int]:
        import requests
        from winrm.exceptions import InvalidCredentialsError, WinRMError, WinRMTransportError

        self._check_certificate()
        a = self.access
        try:
            return self._exchange(args)
        except InvalidCredentialsError:
            raise WrongPassphrase(f"{a.host}: the credentials of {a.user} were rejected (check the user, its "
                                  "password and that it may log on over WinRM)") from None
        except requests.exceptions.SSLError as e:
            if "fingerprint" in str(e).lower():
                raise DobaasError(f"{a.host}: certificate mismatch on a new connection ({e})") from None
            raise DobaasError(f"{a.host}: TLS failed: {e}") from None
        except requests.exceptions.ConnectionError as e:
            if "refused" in str(e).lower():
                raise DobaasError(f"{a.endpoint}: WinRM is not listening (is it enabled on the host?)") from None
            raise _Transient(f"connection failed ({_short(e)})") from None
        except requests.exceptions.Timeout:
            raise _Transient(f"no answer within {a.read_timeout} s") from None
        except WinRMTransportError as e:
            if e.code in TRANSIENT_HTTP:
                raise _Transient(f"HTTP {e.code}") from None
            raise DobaasError(f"{a.endpoint}: WinRM answered HTTP {e.code}: {_short(e.response_text)}") from None
        except WinRMError as e:
            raise DobaasError(f"{a.endpoint}: WinRM fault: {_short(e)}") from None

    def _exchange(self, args: list[str]) -> tuple[bytes, bytes, int]:
        """One shell, one command, its output, the shell closed; on the channel's one authenticated connection
        (NTLM authenticates a connection: one handshake for all the calls of a run)."""
        if self._proto is None:
            self._proto = self._protocol()
        p = self._proto
        try:
            shell = p.open_shell(codepage=65001)
            try:
                command = p.run_command(shell, POWERSHELL, args)
                try:
                    out, err, code = p.get_command_output(shell, command)
                finally:
                    p.cleanup_command(shell, command)
            finally:
                p.close_shell(shell)
        except BaseException:
            self._proto = None  # a failed exchange: the next call starts on a fresh connection
            raise
        return out, err, code


class _Transient(Exception):
    """A fault worth another try (connection reset, 503, no answer)."""


def _short(e: object) -> str:
    return re.sub(r"\s+", " ", str(e))[:300]


def _colons(hexdigest: str) -> str:
    return ":".join(hexdigest[i : i + 2] for i in range(0, len(hexdigest), 2)).upper()


def _clixml_text(err: bytes) -> str:
    """PowerShell's error stream over WinRM is CLIXML (``#< CLIXML`` then <Objs>): the error lines as text."""
    text = err.decode("utf-8", "replace")
    if not text.startswith("#< CLIXML"):
        return text.strip()
    lines = []
    try:
        root = ET.fromstring(text.split("\n", 1)[1])
    except (ET.ParseError, IndexError):
        return text.strip()
    for node in root.iter():
        if node.tag.endswith("}S") and node.get("S") == "Error" and node.text:
            lines.append(re.sub(r"_x([0-9A-Fa-f]{4})_", lambda m: chr(int(m.group(1), 16)), node.text))
    return "".join(lines).strip() or text.strip()
