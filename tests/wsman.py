"""A strict WS-Management double on loopback, for the Windows plugins (recipe: shared/notes/windows-and-oracle-
test-doubles.md). pywinrm talks to it unmodified over HTTPS:

- real NTLM authentication (pyspnego as the acceptor, users from a credentials file), per connection, as IIS/
  WinRM does it (401 + ``WWW-Authenticate: Negotiate``, then the token rounds);
- the shell protocol in full: Create, Command, Receive (output in several chunks, an operation-timeout fault
  when asked), Signal, Delete; anything else, or a shell or command it does not know, is a SOAP fault;
- only the exact scripts the plugins ship (by content, from their ``scripts/*.ps1``), invoked as
  ``powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand …`` with parameters
  their ``param()`` block declares; anything else is a SOAP fault. Each script's behaviour is a Python handler
  (the model of the product behind it): its result becomes ``ConvertTo-Json`` output as PowerShell 5.1 writes
  it; a ``ScriptFailure`` becomes an error record on stderr (CLIXML) and exit code 1.

What it does not model: the rest of WS-Management (enumerations, WMI over WS-Man), Kerberos, CredSSP, and the
real cmdlets — their behaviour is whatever the handlers do (docs/plugins/hyperv.md says so).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import re
import socket
import ssl
import struct
import tempfile
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

NS = {"s": "http://www.w3.org/2003/05/soap-envelope", "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
      "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd", "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"}
SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
ACTIONS = {"http://schemas.xmlsoap.org/ws/2004/09/transfer/Create": "create", f"{SHELL}/Command": "command",
           f"{SHELL}/Receive": "receive", f"{SHELL}/Signal": "signal",
           "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete": "delete"}
ARGS = ["-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-EncodedCommand"]
OPERATION_TIMEOUT = 2150858793
BOUNDARY = b"--Encrypted Boundary"
SEALED_TYPE = 'multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";boundary="Encrypted Boundary"'
CHUNK = 64 * 1024  # stdout bytes per Receive answer (the tests set a small one to have several rounds)


class ScriptFailure(Exception):
    """What a handler raises for a cmdlet error: PowerShell writes it to the error stream, exit code 1."""


Handler = Callable[[dict[str, Any]], Any]


@dataclass
class Command:
    script: str
    params: dict[str, Any]
    stdout: bytes = b""
    stderr: bytes = b""
    code: int = 0
    sent: int = 0
    timeouts_left: int = 0
    worker: threading.Thread | None = None

    def run(self, handler: Handler) -> None:
        """The model's handler, in the command's own thread; its result becomes the output."""
        try:
            self.stdout = ps_json(handler(self.params)).encode()
        except ScriptFailure as e:
            self.stderr, self.code = clixml_error(str(e)), 1
        except Exception as e:  # a bug of the model: visible in the test, not a hung connection
            self.stderr, self.code = clixml_error(f"model error: {e!r}"), 1


@dataclass
class Double:
    """The server's state, shared with the tests: what it was asked, and what it should do."""

    port: int = 0
    thumbprint: str = ""
    ca_file: str = ""
    key_file: str = ""
    handlers: dict[str, Handler] = field(default_factory=dict)
    scripts: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # text -> (name, declared params)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    shells: dict[str, dict[str, Command]] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    #: the next N Receive rounds answer the operation-timeout fault first (a long-running command)
    operation_timeouts: int = 0
    #: stdout bytes per Receive answer
    chunk: int = CHUNK
    #: seconds a Receive waits for a running command before the operation-timeout fault
    operation_timeout: float = 2.0
    #: plain HTTP: every message must be NTLM-sealed (WinRM's AllowUnencrypted=false), and answers are sealed
    sealed: bool = False
    sealed_messages: int = 0
    #: a script name whose run makes the server drop every connection (the host going down mid-capture)
    down_on: str | None = None
    down: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ship(self, scripts_dir: Path) -> None:
        """Accept the scripts of a plugin (exactly their text), with the parameters their param() declares."""
        for f in sorted(scripts_dir.glob("*.ps1")):
            text = f.read_text(encoding="utf-8").replace("\r\n", "\n").rstrip()
            m = re.search(r"param\s*\((.*?)\)\s*\n\s*\$ErrorActionPreference", text, re.S | re.I)
            declared = re.findall(r"\$([A-Za-z][A-Za-z0-9]*)", m.group(1)) if m else []
            self.scripts[text] = (f.name, declared)


def _literal(text: str, pos: int) -> tuple[Any, int]:
    """One PowerShell literal as the channel writes them: 'str' ('' inside), integers, $true/$false/$null,
    @('a','b')."""
    if text.startswith("'", pos):
        out, i = [], pos + 1
        while True:
            j = text.index("'", i)
            out.append(text[i:j])
            if text.startswith("''", j):
                out.append("'")
                i = j + 2
                continue
            return "".join(out), j + 1
    for word, value in (("$true", True), ("$false", False), ("$null", None)):
        if text.startswith(word, pos):
            return value, pos + len(word)
    if text.startswith("@(", pos):
        items, i = [], pos + 2
        while not text.startswith(")", i):
            v, i = _literal(text, i)
            items.append(v)
            if text.startswith(",", i):
                i += 1
        return items, i + 1
    m = re.compile(r"-?\d+").match(text, pos)
    if m:
        return int(m.group()), m.end()
    raise ValueError(f"not a literal at {text[pos:pos + 20]!r}")


def decode_invocation(double: Double, encoded: str) -> tuple[str, dict[str, Any]]:
    """The script name and parameters of an -EncodedCommand, or ValueError for anything not shipped."""
    text = base64.b64decode(encoded).decode("utf-16-le")
    m = re.fullmatch(r"& \{\n(?P<body>.*)\n\}(?P<args>.*)", text, re.S)
    if not m or m.group("body") not in double.scripts:
        raise ValueError("the command is not a script this double was taught")
    name, declared = double.scripts[m.group("body")]
    params: dict[str, Any] = {}
    args, pos = m.group("args"), 0
    while pos < len(args):
        pm = re.compile(r" -([A-Za-z][A-Za-z0-9]*) ").match(args, pos)
        if not pm or pm.group(1) not in declared:
            raise ValueError(f"{name}: unexpected parameter text {args[pos:pos + 30]!r}")
        value, pos = _literal(args, pm.end())
        params[pm.group(1)] = value
    return name, params


def ps_json(value: Any) -> str:
    """ConvertTo-Json as Windows PowerShell 5.1 writes it: datetimes as \\/Date(ms)\\/, CRLF at the end."""
    def conv(v: Any) -> Any:
        if isinstance(v, dt.datetime):
            return f"/Date({int(v.timestamp() * 1000)})/"
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [conv(x) for x in v]
        return v
    return json.dumps(conv(value), indent=4).replace("/Date(", "\\/Date(").replace(")/", ")\\/") + "\r\n"


def clixml_error(message: str) -> bytes:
    esc = message.replace("\r", "_x000D_").replace("\n", "_x000A_")
    return ("#< CLIXML\r\n<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\">"
            f"<S S=\"Error\">{esc}_x000D__x000A_</S></Objs>").encode()


def _envelope(action: str, body: str, relates_to: str) -> bytes:
    return (f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}" xmlns:w="{NS["w"]}" xmlns:rsp="{NS["rsp"]}">'
            f"<s:Header><a:Action>{action}</a:Action><a:MessageID>uuid:{uuid.uuid4()}</a:MessageID>"
            f"<a:RelatesTo>{relates_to}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>").encode()


def _fault(reason: str, code: int = 2150858778) -> bytes:
    return (f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}" xmlns:w="{NS["w"]}"><s:Header/><s:Body>'
            f"<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>w:InvalidParameter</s:Value>"
            f"</s:Subcode></s:Code><s:Reason><s:Text xml:lang=\"en-US\">{reason}</s:Text></s:Reason>"
            f'<s:Detail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" '
            f'Code="{code}" Machine="hv1"><f:Message>{reason}</f:Message></f:WSManFault></s:Detail>'
            "</s:Fault></s:Body></s:Envelope>").encode()


def _make_handler(double: Double) -> type[BaseHTTPRequestHandler]:
    class WsmanHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: NTLM authenticates the connection

        def log_message(self, fmt: str, *args: Any) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            # headers and body go out as two writes: without this, Nagle's algorithm and the client's delayed
            # ACK add 40 ms to every answer (HTTP.sys, WinRM's server, writes each response at once)
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.ntlm: Any = None
            self.authenticated = False

        def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            headers = {"Content-Type": "application/soap+xml;charset=UTF-8", **(headers or {})}
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            if double.down:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not self.authenticated:
                self._authenticate()
                if not self.authenticated:
                    return
            if double.sealed:
                if not body:  # pywinrm's first, empty message: it only sets the security context up
                    self._send(200)
                    return
                if not self.headers.get("Content-Type", "").startswith("multipart/encrypted"):
                    double.faults.append("unencrypted message refused")
                    self._send(500, _fault("The WinRM client cannot process the request: unencrypted traffic is "
                                           "disabled (AllowUnencrypted = false)."))
                    return
                body = self._unseal(body)
            try:
                answer, code = self._dispatch(body), 200
            except _Fault as f:
                double.faults.append(str(f))
                answer, code = _fault(str(f), f.code), 500
            if double.sealed:
                self._send(code, self._seal(answer), {"Content-Type": SEALED_TYPE})
            else:
                self._send(code, answer)

        def _unseal(self, body: bytes) -> bytes:
            parts = [p for p in body.split(BOUNDARY + b"\r\n") if p]
            out = b""
            for header, payload in zip(parts[::2], parts[1::2], strict=True):
                length = int(header.split(b"Length=")[1].strip())
                payload = payload.removesuffix(BOUNDARY + b"--\r\n")
                data = payload.removeprefix(b"\tContent-Type: application/octet-stream\r\n")
                (sig_len,) = struct.unpack("<i", data[:4])
                plain = self.ntlm.unwrap_winrm(data[4 : 4 + sig_len], data[4 + sig_len :])
                if len(plain) != length:
                    raise _Fault("the sealed message's length does not match")
                out += plain
            double.sealed_messages += 1
            return out

        def _seal(self, message: bytes) -> bytes:
            w = self.ntlm.wrap_winrm(message)
            return (BOUNDARY + b"\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n"
                    b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=" + str(len(message)).encode()
                    + b"\r\n" + BOUNDARY + b"\r\n\tContent-Type: application/octet-stream\r\n"
                    + struct.pack("<i", len(w.header)) + w.header + w.data + BOUNDARY + b"--\r\n")

        def _authenticate(self) -> None:
            import spnego

            header = self.headers.get("Authorization", "")
            if not header.startswith("Negotiate "):
                self._send(401, headers={"WWW-Authenticate": "Negotiate"})
                return
            token = base64.b64decode(header.split(" ", 1)[1])
            if self.ntlm is None:
                self.ntlm = spnego.server(protocol="ntlm")
            try:
                out = self.ntlm.step(token)
            except Exception:
                self.ntlm = None
                self._send(401, headers={"WWW-Authenticate": "Negotiate"})
                return
            if self.ntlm.complete:
                self.authenticated = True
                return
            self._send(401, headers={"WWW-Authenticate": "Negotiate " + base64.b64encode(out or b"").decode()})

        def _dispatch(self, body: bytes) -> bytes:
            try:
                root = ET.fromstring(body)
            except ET.ParseError:
                raise _Fault("the request is not XML") from None
            action = (root.findtext("s:Header/a:Action", "", NS) or "").strip()
            msg_id = root.findtext("s:Header/a:MessageID", "", NS) or ""
            op = ACTIONS.get(action)
            if op is None:
                raise _Fault(f"action {action!r} is not supported by this double")
            shell_id = next((s.text for s in root.iterfind("s:Header/w:SelectorSet/w:Selector", NS)
                             if s.get("Name") == "ShellId"), None)
            if op == "create":
                sid = str(uuid.uuid4()).upper()
                with double.lock:
                    double.shells[sid] = {}
                return _envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse",
                                 "<w:ResourceCreated><a:Address>https://hv1:5986/wsman</a:Address>"
                                 "<a:ReferenceParameters><w:ResourceURI>http://schemas.microsoft.com/wbem/wsman/1/"
                                 f'windows/shell/cmd</w:ResourceURI><w:SelectorSet><w:Selector Name="ShellId">{sid}'
                                 "</w:Selector></w:SelectorSet></a:ReferenceParameters></w:ResourceCreated>"
                                 f"<rsp:Shell><rsp:ShellId>{sid}</rsp:ShellId></rsp:Shell>", msg_id)
            if shell_id not in double.shells:
                raise _Fault(f"shell {shell_id} does not exist", 2150858843)
            commands = double.shells[shell_id]
            if op == "delete":
                with double.lock:
                    del double.shells[shell_id]
                return _envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse", "", msg_id)
            if op == "command":
                return self._command(root, commands, msg_id)
            node = root.find(f"s:Body/rsp:{'Receive/rsp:DesiredStream' if op == 'receive' else 'Signal'}", NS)
            cid = node.get("CommandId") if node is not None else None
            if cid not in commands:
                raise _Fault(f"command {cid} does not exist in shell {shell_id}", 2150858843)
            if op == "signal":
                del commands[cid]
                return _envelope(f"{SHELL}/SignalResponse", "<rsp:SignalResponse/>", msg_id)
            return self._receive(commands[cid], cid, msg_id)

        def _command(self, root: ET.Element, commands: dict[str, Command], msg_id: str) -> bytes:
            exe = (root.findtext("s:Body/rsp:CommandLine/rsp:Command", "", NS) or "").strip()
            args = (root.findtext("s:Body/rsp:CommandLine/rsp:Arguments", "", NS) or "").split()
            if exe != "powershell.exe" or args[:-1] != ARGS or len(args) != len(ARGS) + 1:
                raise _Fault(f"command line {exe} {' '.join(args)[:80]} is not one this double was taught")
            try:
                name, params = decode_invocation(double, args[-1])
            except (ValueError, UnicodeDecodeError) as e:
                raise _Fault(str(e)) from None
            with double.lock:
                double.calls.append((name, params))
                timeouts, double.operation_timeouts = double.operation_timeouts, 0
            if double.down_on == name:
                double.down = True
                self.close_connection = True
                self.connection.shutdown(2)
                raise _Fault("unreachable")
            cmd = Command(name, params, timeouts_left=timeouts)
            handler = double.handlers.get(name)
            if handler is None:
                raise _Fault(f"{name} has no handler in this double")
            cmd.worker = threading.Thread(target=cmd.run, args=(handler,), daemon=True, name=f"wsman-{name}")
            cmd.worker.start()
            cid = str(uuid.uuid4()).upper()
            commands[cid] = cmd
            return _envelope(f"{SHELL}/CommandResponse", f"<rsp:CommandResponse><rsp:CommandId>{cid}"
                             "</rsp:CommandId></rsp:CommandResponse>", msg_id)

        def _receive(self, cmd: Command, cid: str, msg_id: str) -> bytes:
            # a command still running after the operation timeout answers the WS-Man timeout fault, as WinRM does
            # (the client asks again): scripts that wait for the client, like Exchange's backup session, need it
            if cmd.worker is not None:
                cmd.worker.join(double.operation_timeout)
                if cmd.worker.is_alive():
                    raise _Fault("The WS-Management service cannot complete the operation within the time "
                                 "specified in OperationTimeout.", OPERATION_TIMEOUT)
            if cmd.timeouts_left:
                cmd.timeouts_left -= 1
                raise _Fault("The WS-Management service cannot complete the operation within the time specified "
                             "in OperationTimeout.", OPERATION_TIMEOUT)
            piece = cmd.stdout[cmd.sent : cmd.sent + double.chunk]
            cmd.sent += len(piece)
            done = cmd.sent >= len(cmd.stdout)
            streams = f'<rsp:Stream Name="stdout" CommandId="{cid}">{base64.b64encode(piece).decode()}</rsp:Stream>'
            if done and cmd.stderr:
                streams += (f'<rsp:Stream Name="stderr" CommandId="{cid}">'
                            f"{base64.b64encode(cmd.stderr).decode()}</rsp:Stream>")
            state = (f'<rsp:CommandState CommandId="{cid}" State="{SHELL}/CommandState/Done">'
                     f"<rsp:ExitCode>{cmd.code}</rsp:ExitCode></rsp:CommandState>") if done else \
                f'<rsp:CommandState CommandId="{cid}" State="{SHELL}/CommandState/Running"/>'
            return _envelope(f"{SHELL}/ReceiveResponse", f"<rsp:ReceiveResponse>{streams}{state}"
                             "</rsp:ReceiveResponse>", msg_id)

    return WsmanHandler


class _Fault(Exception):
    def __init__(self, reason: str, code: int = 2150858778) -> None:
        super().__init__(reason)
        self.code = code


def _certificate(directory: str) -> tuple[str, str, str]:
    """A self-signed certificate for 127.0.0.1 (key file, cert file, SHA-256 of the DER)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hv1.acme.local")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("hv1.acme.local"), x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_file, cert_file = os.path.join(directory, "key.pem"), os.path.join(directory, "cert.pem")
    Path(key_file).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    Path(cert_file).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file, hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def start(users: dict[str, str], scripts_dirs: list[Path], tls: bool = True,
          certificate: tuple[str, str, str] | None = None) -> tuple[Double, Callable[[], None]]:
    """Start the double on a free loopback port; ``users``: {'ACME\\\\backup': password}. Without ``tls``, plain
    HTTP where every message must be NTLM-sealed. ``certificate``: another double's (key, cert, thumbprint), for
    several hosts trusted alike. Returns it and a stop."""
    work = tempfile.mkdtemp(prefix="dobaas-wsman-")
    creds = os.path.join(work, "ntlm-users")
    with open(creds, "w") as f:
        for user, pw in users.items():
            domain, _, name = user.rpartition("\\")
            f.write(f"{domain}:{name}:{pw}\n")
    os.environ["NTLM_USER_FILE"] = creds  # pyspnego's acceptor reads its users there
    key_file, cert_file, thumb = certificate or _certificate(work)
    double = Double(thumbprint=thumb, ca_file=cert_file, key_file=key_file, sealed=not tls)
    for d in scripts_dirs:
        double.ship(d)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(double))
    server.daemon_threads = True
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_file, key_file)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    double.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="wsman-double")
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return double, stop


def unparsable_scripts(scripts_dir: Path) -> list[str]:
    """The shipped scripts of a plugin that tree-sitter-powershell does not parse, or that do not stop on the
    first error and answer in JSON as every shipped script must (empty: all good)."""
    import tree_sitter_powershell
    from tree_sitter import Language, Parser

    parser = Parser(Language(tree_sitter_powershell.language()))
    assert parser.parse(b"param( [string]$x\nif (").root_node.has_error  # the check can fail
    bad = []
    for f in sorted(scripts_dir.glob("*.ps1")):
        text = f.read_text()
        if parser.parse(f.read_bytes()).root_node.has_error or "$ErrorActionPreference = 'Stop'" not in text \
                or "ConvertTo-Json" not in text:
            bad.append(f.name)
    return bad
