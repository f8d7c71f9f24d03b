"""Pull-mode backup of a running domain: a libvirt backup job exports each disk over NBD as it was at the
instant the job began (QEMU copies old blocks to a scratch file before the guest overwrites them) and creates
the next checkpoint at that same instant."""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from orchestrator.plugin.errors import DobaasError
from plugins.kvm import checkpoints, workdir
from plugins.kvm.connection import libvirt_module
from plugins.kvm.domxml import Disk

log = logging.getLogger(__name__)


@dataclass
class LiveJob:
    dom: Any
    disks: list[Disk]
    work: str  # per-domain directory (socket, scratch files)
    nbd_tcp: tuple[str, int] | None = None  # (host, port) for remote hypervisors; else a unix socket
    #: filled by begin()
    checkpoint: str = ""
    modes: dict[str, str] = field(default_factory=dict)  # target -> "incremental" | "full"
    consistency: str = "crash-consistent"
    warnings: list[str] = field(default_factory=list)
    started: bool = False
    consistency_note: str = ""

    @property
    def socket(self) -> str:
        return os.path.join(self.work, "nbd.sock")

    def export_uri(self, target: str) -> str:
        if self.nbd_tcp:
            return f"nbd://{self.nbd_tcp[0]}:{self.nbd_tcp[1]}/{target}"
        return f"nbd+unix:///{target}?socket={self.socket}"

    def clear_stale_job(self) -> None:
        """A backup job left by a dobaas run that died is aborted; a live run's job, or another tool's, is not."""
        libvirt = libvirt_module()
        try:
            job_xml = self.dom.backupGetXMLDesc(0)
        except libvirt.libvirtError:
            return  # no backup job
        owner = workdir.owner_pid(self.work)
        if owner and owner != os.getpid() and workdir.alive(owner):
            raise DobaasError(f"domain {self.dom.name()}: a backup is already running (dobaas pid {owner})")
        if self.work not in job_xml:
            raise DobaasError(f"domain {self.dom.name()} has a backup job started by another tool; "
                              "end it first (virsh domjobabort)")
        self.dom.abortJob()
        self.warnings.append("a backup job left by an earlier interrupted run was found and aborted")

    def begin(self, lineage: str, base: str | None, base_disks: set[str], quiesce: bool) -> None:
        """Start the job: incremental from checkpoint ``base`` for the disks it tracks, full for the others."""
        libvirt = libvirt_module()
        self.clear_stale_job()
        workdir.claim(self.work)
        tracked = {d.target: d.fmt == "qcow2" for d in self.disks}
        for d in self.disks:
            if not tracked[d.target]:
                self.warnings.append(f"disk {d.target} is {d.fmt}: no dirty bitmap possible, read in full")
        self.checkpoint = checkpoints.new_name(lineage)
        for attempt in (1, 2):
            self.modes = {d.target: "incremental" if base and d.target in base_disks and tracked[d.target]
                          else "full" for d in self.disks}
            frozen = self._freeze() if quiesce else False
            try:
                self.dom.backupBegin(self._backup_xml(base), checkpoints.xml(self.checkpoint, tracked), 0)
                break
            except libvirt.libvirtError as e:
                msg = e.get_error_message()
                broken = e.get_error_code() in (getattr(libvirt, "VIR_ERR_CHECKPOINT_INCONSISTENT", 109),
                                                getattr(libvirt, "VIR_ERR_NO_DOMAIN_CHECKPOINT", 102))
                if attempt == 1 and base and broken:
                    # the bitmap behind the checkpoint is missing or broken: never a wrong incremental
                    self.warnings.append(f"checkpoint {base} is unusable ({msg}): full capture")
                    checkpoints.delete(self.dom, [self.checkpoint])
                    base = None
                    continue
                raise DobaasError(f"domain {self.dom.name()}: the backup job could not start: {msg}") from None
            finally:
                if frozen:
                    self._thaw()
        self.started = True
        self.consistency = "filesystem-consistent (guest agent freeze)" if frozen else "crash-consistent"
        if self.consistency_note and not frozen:
            self.consistency += f" ({self.consistency_note})"

    def _backup_xml(self, base: str | None) -> str:
        root = ET.Element("domainbackup", {"mode": "pull"})
        server = {"transport": "tcp", "name": self.nbd_tcp[0], "port": str(self.nbd_tcp[1])} if self.nbd_tcp \
            else {"transport": "unix", "socket": self.socket}
        ET.SubElement(root, "server", server)
        disks = ET.SubElement(root, "disks")
        for d in self.disks:
            attrs = {"name": d.target, "backup": "yes", "type": "file", "backupmode": self.modes[d.target]}
            if self.modes[d.target] == "incremental":
                attrs["incremental"] = base or ""
            el = ET.SubElement(disks, "disk", attrs)
            ET.SubElement(el, "scratch", {"file": os.path.join(self.work, f"scratch-{d.target}.qcow2")})
        return ET.tostring(root, encoding="unicode")

    def _freeze(self) -> bool:
        libvirt = libvirt_module()
        if "org.qemu.guest_agent.0" not in self.dom.XMLDesc(0):
            self.consistency_note = "no guest agent channel configured"
            return False
        try:
            self.dom.fsFreeze(None, 0)
            return True
        except libvirt.libvirtError as e:
            w = f"guest filesystems not frozen ({e.get_error_message()}): crash-consistent"
            if w not in self.warnings:
                self.warnings.append(w)
            return False

    def _thaw(self) -> None:
        libvirt = libvirt_module()
        try:
            self.dom.fsThaw(None, 0)
        except libvirt.libvirtError as e:
            log.error("domain %s: thaw failed: %s", self.dom.name(), e.get_error_message())

    def end(self) -> None:
        """End the job (QEMU removes the scratch files) and give up the directory."""
        libvirt = libvirt_module()
        if self.started:
            try:
                self.dom.abortJob()
            except libvirt.libvirtError as e:
                log.warning("domain %s: ending the backup job: %s", self.dom.name(), e.get_error_message())
        workdir.release(self.work)
