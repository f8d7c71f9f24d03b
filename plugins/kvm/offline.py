"""Shut-off domains: each disk image is exported read-only by a local qemu-nbd, with the dirty bitmap of the
previous snapshot's checkpoint when the image still has it (a consistent, unchanging disk: nothing runs).

No checkpoint can be created while a domain is off, so the snapshot keeps the previous checkpoint: its bitmap
keeps recording, and the next backup reads a superset of what changed (blocks already stored are not stored
again). A shut-off domain that never had a checkpoint is read in full (allocated areas only)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field

from orchestrator.plugin.errors import DobaasError
from plugins.kvm.domxml import Disk

START_TIMEOUT = 30.0


def image_bitmaps(path: str) -> dict[str, bool]:
    """{bitmap name: usable} of a qcow2 image (a bitmap flagged in-use was not saved cleanly: unusable)."""
    try:
        out = subprocess.run(["qemu-img", "info", "-U", "--output=json", path], capture_output=True, text=True,
                             check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise DobaasError(f"cannot inspect {path} with qemu-img: {getattr(e, 'stderr', '') or e}") from None
    data = json.loads(out).get("format-specific", {}).get("data", {})
    return {b["name"]: "in-use" not in b.get("flags", []) for b in data.get("bitmaps", [])}


@dataclass
class OfflineExport:
    disk: Disk
    work: str
    bitmap: str | None = None
    proc: subprocess.Popen | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def socket(self) -> str:
        return os.path.join(self.work, f"qemu-nbd-{self.disk.target}.sock")

    @property
    def uri(self) -> str:
        return f"nbd+unix:///{self.disk.target}?socket={self.socket}"

    @property
    def context(self) -> str | None:
        return f"qemu:dirty-bitmap:{self.bitmap}" if self.bitmap else None

    def start(self) -> None:
        if not self.disk.path or self.disk.kind not in ("file", "block"):
            raise DobaasError(f"disk {self.disk.target} ({self.disk.kind}) of a shut-off domain cannot be exported")
        try:
            os.unlink(self.socket)
        except FileNotFoundError:
            pass
        cmd = ["qemu-nbd", "--read-only", "--persistent", "--shared=4", "-f", self.disk.fmt, "-x", self.disk.target,
               "-k", self.socket]
        if self.bitmap:
            cmd += ["-B", self.bitmap]
        cmd.append(self.disk.path)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() if self.proc.stderr else "").strip()
                raise DobaasError(f"qemu-nbd could not export {self.disk.path}: {err} (is the domain starting?)")
            if time.monotonic() > deadline:
                self.stop()
                raise DobaasError(f"qemu-nbd did not export {self.disk.path} within {START_TIMEOUT:.0f} s")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.unlink(self.socket)
        except FileNotFoundError:
            pass
