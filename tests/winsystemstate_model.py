"""A model Windows host for the winsystemstate plugin, behind the WS-Man double: the handler of
Start-DobaasSystemStateBackup.ps1 writes what `wbadmin start systemstatebackup -backupTarget:\\\\server\\share`
writes — a WindowsImageBackup\\<COMPUTER> tree with a real VHDX (made by qemu-img, data written by qemu-io), the
backup's XML descriptions and catalog files — into the real Samba share, and fails as the script reports
wbadmin's failures (feature missing, access denied, a VSS writer failed: its state and last error)."""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass, field

from tests.wsman import ScriptFailure


@dataclass
class SystemStateHost:
    share_dir: str  # the Samba share's directory here
    share_unc: str  # how the host names the share: \\server\share
    computer: str = "DC01"
    feature: bool = True
    access_denied: bool = False
    failing_writer: tuple[str, str, str] | None = None  # (writer, state, last error)
    generation: int = 0
    written: dict[str, bytes] = field(default_factory=dict)  # relative path -> content, of the last backup

    def handlers(self) -> dict:
        return {"Start-DobaasSystemStateBackup.ps1": self.backup}

    def backup(self, p: dict) -> dict:
        target = p["Target"]
        if not target.lower().startswith(self.share_unc.lower() + "\\"):
            raise ScriptFailure(f"wbadmin failed (exit 1): ERROR - The specified backup location could not be "
                                f"found or is not a supported backup storage location. ({target})")
        if not self.feature:
            raise ScriptFailure("wbadmin.exe was not found: install the Windows Server Backup feature "
                                "(Install-WindowsFeature Windows-Server-Backup)")
        if self.access_denied:
            raise ScriptFailure("wbadmin failed (exit 5): ERROR - Access is denied.")
        if self.failing_writer:
            w, state, err = self.failing_writer
            raise ScriptFailure("wbadmin failed (exit 1): ERROR - Volume Shadow Copy Service operation failed. "
                                f"VSS writers: {w}: {state}, last error: {err}")
        self.generation += 1
        root = os.path.join(self.share_dir, *target[len(self.share_unc) + 1 :].split("\\"))
        base = os.path.join(root, "WindowsImageBackup", self.computer)
        stamp = f"Backup 2026-12-02 10{self.generation:02d}00"
        guid = "{" + str(uuid.UUID(int=42)) + "}"
        vhdx = os.path.join(base, stamp, f"{guid}.vhdx")
        os.makedirs(os.path.dirname(vhdx), exist_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx", vhdx, "64M"], check=True)
        # the system volume's content: the same most nights, a little more each time
        for i in range(self.generation + 2):
            subprocess.run(["qemu-io", "-f", "vhdx", "-c", f"write -P {0x41 + i} {i * 4}M 1M", vhdx], check=True,
                           capture_output=True)
        docs = {
            f"{stamp}/BackupSpecs.xml": f'<BackupSpecs Version="1"><SystemState>true</SystemState>'
                                        f"<Computer>{self.computer}</Computer></BackupSpecs>",
            f"{stamp}/{guid}_Components.xml": "<Components><Writer Name=\"NTDS\"/><Writer Name=\"Registry Writer\"/>"
                                               "</Components>",
            f"{stamp}/{guid}_RegistryExcludes.xml": "<RegistryExcludes/>",
            "Catalog/BackupGlobalCatalog": f"catalog {self.generation}",
            "Catalog/GlobalCatalog": f"global catalog {self.generation}",
            "MediaId": "{" + str(uuid.UUID(int=7)) + "}",
        }
        for rel, text in docs.items():
            path = os.path.join(base, *rel.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-16") as f:
                f.write(text)
        self.written = {}
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                full = os.path.join(dirpath, f)
                os.chmod(full, 0o666)
                with open(full, "rb") as fh:
                    self.written[os.path.relpath(full, root).replace(os.sep, "/")] = fh.read()
        for dirpath, dirs, _files in os.walk(root):
            for d in dirs:
                os.chmod(os.path.join(dirpath, d), 0o777)
        return {"Computer": self.computer, "Version": f"12/02/2026-10:{self.generation:02d}",
                "Output": "The backup operation successfully completed."}
